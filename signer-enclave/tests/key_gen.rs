//! Key generation among four enclaves' `KeyGen`s, every message relayed in its encoded form
//! the way the coordinator would: all agree on both group keys; a participant sending bad
//! commitments or a bad share is blamed by the others; a new attempt replaces the old.

// Test code: a failed unwrap is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unwrap_in_result
)]

mod common;

use std::collections::BTreeMap;

use ciphersuite::group::GroupEncoding;
use rand_core::OsRng;
use schema::{
    ids::{Attempt, KeyGenId, NetworkId, Participant, Session, ThresholdParams, ValidatorSet},
    messages::{
        key_gen::{CoordinatorMessage, ProcessorMessage},
        ParticipantMap,
    },
    wire::{decode, encode},
};
use signer_enclave::key_gen::{GeneratedKeys, KeyGen, KeyGenError};

const N: u16 = 4;

fn p(i: u16) -> Participant {
    Participant::new(i).unwrap()
}

fn id(attempt: u32) -> KeyGenId {
    KeyGenId {
        set: ValidatorSet {
            session: Session(0),
            network: NetworkId::Bitcoin,
        },
        attempt: Attempt(attempt),
    }
}

/// Delivers a coordinator message through its wire encoding.
fn deliver(
    key_gen: &mut KeyGen,
    message: CoordinatorMessage,
) -> Result<(Vec<ProcessorMessage>, Option<GeneratedKeys>), KeyGenError> {
    let message: CoordinatorMessage = decode(&encode(&message).unwrap()).unwrap();
    key_gen.handle(message, &mut OsRng)
}

fn only(messages: Vec<ProcessorMessage>) -> ProcessorMessage {
    assert_eq!(messages.len(), 1);
    decode(&encode(&messages.into_iter().next().unwrap()).unwrap()).unwrap()
}

/// Round 1 for everyone: each participant's commitments blob.
fn start(machines: &mut BTreeMap<Participant, KeyGen>, attempt: u32) -> ParticipantMap {
    let mut commitments = ParticipantMap::new();
    for (i, key_gen) in machines.iter_mut() {
        let params = ThresholdParams::new(3, N, *i).unwrap();
        let message = CoordinatorMessage::GenerateKey {
            id: id(attempt),
            params,
        };
        match only(deliver(key_gen, message).unwrap().0) {
            ProcessorMessage::Commitments { commitments: c, .. } => {
                commitments.insert(*i, c);
            }
            other => panic!("{other:?}"),
        }
    }
    commitments
}

/// Round 2 for everyone: shares[to][from].
fn share(
    machines: &mut BTreeMap<Participant, KeyGen>,
    commitments: &ParticipantMap,
    attempt: u32,
) -> BTreeMap<Participant, ParticipantMap> {
    let mut shares: BTreeMap<Participant, ParticipantMap> = BTreeMap::new();
    for (i, key_gen) in machines.iter_mut() {
        let message = CoordinatorMessage::Commitments {
            id: id(attempt),
            commitments: common::others(commitments, *i),
        };
        match only(deliver(key_gen, message).unwrap().0) {
            ProcessorMessage::Shares { shares: sent, .. } => {
                assert_eq!(sent.len(), usize::from(N - 1));
                for (to, blob) in sent {
                    shares.entry(to).or_default().insert(*i, blob);
                }
            }
            other => panic!("{other:?}"),
        }
    }
    shares
}

fn enclaves() -> BTreeMap<Participant, KeyGen> {
    (1..=N).map(|i| (p(i), KeyGen::default())).collect()
}

#[test]
fn four_enclaves_generate_the_same_key_pair() {
    let mut machines = enclaves();
    let commitments = start(&mut machines, 0);
    let mut shares = share(&mut machines, &commitments, 0);
    let mut pairs = Vec::new();
    for (i, key_gen) in machines.iter_mut() {
        let message = CoordinatorMessage::Shares {
            id: id(0),
            shares: shares.remove(i).unwrap(),
        };
        let (messages, keys) = deliver(key_gen, message).unwrap();
        let keys = keys.unwrap();
        match only(messages) {
            ProcessorMessage::GeneratedKeyPair {
                batch_key,
                network_key,
                ..
            } => {
                assert_eq!(
                    &batch_key.as_bytes()[..],
                    &keys.batch.group_key().to_bytes()[..]
                );
                assert_eq!(
                    &network_key.to_bytes()[..],
                    &keys.network.group_key().to_bytes()[..]
                );
                assert_eq!(u16::from(keys.network.params().i()), i.get());
                pairs.push((batch_key, network_key));
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(pairs.windows(2).all(|w| w[0] == w[1]));
    // The attempt is finished: a late message for it is an error, not a crash.
    let late = CoordinatorMessage::Shares {
        id: id(0),
        shares: ParticipantMap::new(),
    };
    assert_eq!(
        deliver(machines.get_mut(&p(1)).unwrap(), late).err(),
        Some(KeyGenError::UnknownAttempt(id(0)))
    );
}

#[test]
fn a_participant_with_bad_commitments_is_blamed() {
    let mut machines = enclaves();
    let mut commitments = start(&mut machines, 0);
    // Participant 2's network commitments get one flipped byte in a coefficient commitment.
    let blob = commitments.get_mut(&p(2)).unwrap();
    let last = blob.len() - 40;
    blob[last] ^= 0x01;
    for i in [1, 3, 4] {
        let message = CoordinatorMessage::Commitments {
            id: id(0),
            commitments: common::others(&commitments, p(i)),
        };
        match only(
            deliver(machines.get_mut(&p(i)).unwrap(), message)
                .unwrap()
                .0,
        ) {
            ProcessorMessage::Blame { participant, .. } => assert_eq!(participant, p(2)),
            other => panic!("participant {i}: {other:?}"),
        }
    }
    // Garbage is blamed the same way.
    let mut garbage = commitments.clone();
    garbage.insert(p(3), vec![1, 2, 3]);
    let mut fresh = enclaves();
    start(&mut fresh, 0);
    let message = CoordinatorMessage::Commitments {
        id: id(0),
        commitments: common::others(&garbage, p(1)),
    };
    match only(deliver(fresh.get_mut(&p(1)).unwrap(), message).unwrap().0) {
        ProcessorMessage::Blame { participant, .. } => {
            assert!(participant == p(2) || participant == p(3))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_participant_with_a_bad_share_is_blamed() {
    let mut machines = enclaves();
    let commitments = start(&mut machines, 0);
    let mut shares = share(&mut machines, &commitments, 0);
    // The share participant 3 sent to participant 1, corrupted in its network part.
    let blob = shares.get_mut(&p(1)).unwrap().get_mut(&p(3)).unwrap();
    let at = blob.len() - 1;
    blob[at] ^= 0x01;
    let message = CoordinatorMessage::Shares {
        id: id(0),
        shares: shares.remove(&p(1)).unwrap(),
    };
    let (messages, keys) = deliver(machines.get_mut(&p(1)).unwrap(), message).unwrap();
    assert!(keys.is_none(), "no keys from a failed generation");
    match only(messages) {
        ProcessorMessage::Blame { participant, .. } => assert_eq!(participant, p(3)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_new_attempt_replaces_the_old_and_messages_out_of_order_are_errors() {
    let mut machines = enclaves();
    let commitments = start(&mut machines, 0);
    let key_gen = machines.get_mut(&p(1)).unwrap();
    // Shares before commitments.
    let early = CoordinatorMessage::Shares {
        id: id(0),
        shares: ParticipantMap::new(),
    };
    assert_eq!(
        deliver(key_gen, early).err(),
        Some(KeyGenError::WrongRound(id(0)))
    );
    // Attempt 1 replaces attempt 0.
    let params = ThresholdParams::new(3, N, p(1)).unwrap();
    deliver(
        key_gen,
        CoordinatorMessage::GenerateKey { id: id(1), params },
    )
    .unwrap();
    let old = CoordinatorMessage::Commitments {
        id: id(0),
        commitments: common::others(&commitments, p(1)),
    };
    assert_eq!(
        deliver(key_gen, old).err(),
        Some(KeyGenError::UnknownAttempt(id(0)))
    );
    // Too few participants' commitments is the coordinator's fault, not a participant's.
    let short = CoordinatorMessage::Commitments {
        id: id(1),
        commitments: common::others(&commitments, p(1))
            .into_iter()
            .take(2)
            .collect(),
    };
    assert!(matches!(
        deliver(key_gen, short),
        Err(KeyGenError::Participants { .. })
    ));
}

#[test]
fn the_largest_sets_commitments_fit_one_blob() {
    // The commitments of a threshold of every key share a set may have (both keys, one blob)
    // stay within the wire's key generation blob limit, through the wire.
    let n = u16::try_from(schema::limits::MAX_PARTICIPANTS).unwrap();
    let mut key_gen = KeyGen::default();
    let message = CoordinatorMessage::GenerateKey {
        id: id(0),
        params: ThresholdParams::new(n, n, p(1)).unwrap(),
    };
    match only(deliver(&mut key_gen, message).unwrap().0) {
        ProcessorMessage::Commitments { commitments, .. } => {
            assert!(
                commitments.len() <= schema::limits::MAX_KEY_GEN_BLOB_LEN,
                "{} bytes",
                commitments.len()
            );
            // And the blob grows with the threshold, so this is the largest.
            assert!(commitments.len() > 9_000, "{} bytes", commitments.len());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_sets_whose_started_attempts_are_remembered_are_bounded() {
    use signer_enclave::key_gen::MAX_REMEMBERED_SETS;
    let mut key_gen = KeyGen::default();
    let params = ThresholdParams::new(3, N, p(1)).unwrap();
    let at = |session: u32, attempt: u32| KeyGenId {
        set: ValidatorSet {
            session: Session(session),
            network: NetworkId::Bitcoin,
        },
        attempt: Attempt(attempt),
    };
    // A scanner starts generations for ever new sets and abandons each (garbage commitments
    // end an attempt): only the newest sets' attempts are remembered.
    let sets = u32::try_from(MAX_REMEMBERED_SETS).unwrap() + 1;
    for session in 0..sets {
        deliver(
            &mut key_gen,
            CoordinatorMessage::GenerateKey {
                id: at(session, 5),
                params,
            },
        )
        .unwrap();
        let abandon = CoordinatorMessage::Commitments {
            id: at(session, 5),
            commitments: ParticipantMap::new(),
        };
        assert!(deliver(&mut key_gen, abandon).is_err());
    }
    assert_eq!(
        deliver(
            &mut key_gen,
            CoordinatorMessage::GenerateKey {
                id: at(sets - 1, 1),
                params
            }
        )
        .err(),
        Some(KeyGenError::StaleAttempt {
            id: at(sets - 1, 1),
            started: 5
        })
    );
    // The lowest session's was forgotten.
    assert!(deliver(
        &mut key_gen,
        CoordinatorMessage::GenerateKey {
            id: at(0, 1),
            params
        }
    )
    .is_ok());
}
