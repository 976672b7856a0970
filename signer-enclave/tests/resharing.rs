//! Repair and refresh of key shares, as pure steps relayed by the test as the coordinator
//! would relay them, on both curves: a lost share comes back exactly, a changed value is
//! refused, a refresh keeps the group key and moves every share, and shares from before a
//! refresh do not combine with shares after it.

// Test code: a failed unwrap is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unwrap_in_result
)]

mod common;

use std::collections::{BTreeMap, HashMap};

use ciphersuite::{
    group::{ff::Field, GroupEncoding},
    Ciphersuite, Ristretto,
};
use modular_frost::{curve::Secp256k1, Participant, ThresholdKeys};
use rand_core::OsRng;
use signer_enclave::{
    local_key_gen::generate_keys,
    polynomial::lagrange,
    share_refresh::{self, Peers, Received, RefreshError},
    share_repair::{self, Answer, Repair, RepairError},
};

const SESSION: [u8; 32] = [3; 32];

fn p(i: u16) -> Participant {
    Participant::new(i).unwrap()
}

/// Both keys of a 3-of-4 key generation, per participant.
fn keys() -> (
    BTreeMap<Participant, ThresholdKeys<Ristretto>>,
    BTreeMap<Participant, ThresholdKeys<Secp256k1>>,
) {
    let generated = generate_keys(3, 4, &mut OsRng).unwrap();
    let batch = generated
        .iter()
        .map(|(i, keys)| (p(i.get()), keys.batch.clone()))
        .collect();
    let network = generated
        .into_iter()
        .map(|(i, keys)| (p(i.get()), keys.network))
        .collect();
    (batch, network)
}

/// What the relay may do to the one value it carries from helper 3 to helper 4.
#[derive(Clone, Copy)]
enum Relay {
    Faithful,
    AddsOne,
}

/// Runs a repair of `repaired` by `helpers`: each step through the keys each holds.
fn repair<C: Ciphersuite>(
    all: &BTreeMap<Participant, ThresholdKeys<C>>,
    repaired: u16,
    helpers: &[u16],
    relay: Relay,
) -> Result<ThresholdKeys<C>, RepairError> {
    let repair = Repair::new(p(repaired), helpers.iter().map(|&i| p(i)).collect())?;
    let ephemeral = C::F::random(&mut OsRng);
    let fresh_key = C::generator() * ephemeral;
    let mut kept = BTreeMap::new();
    let mut parts: BTreeMap<Participant, BTreeMap<Participant, C::F>> = BTreeMap::new();
    for &helper in repair.helpers() {
        let (keep, sent) = share_repair::split(&all[&helper], &repair, &SESSION, &mut OsRng)?;
        kept.insert(helper, keep);
        for (to, mut part) in sent {
            if matches!(relay, Relay::AddsOne) && helper == p(3) && to == p(4) {
                part += C::F::ONE;
            }
            parts.entry(to).or_default().insert(helper, part);
        }
    }
    let mut answers = BTreeMap::new();
    for &helper in repair.helpers() {
        let masked = share_repair::gather(
            &all[&helper],
            &repair,
            &SESSION,
            kept.remove(&helper).unwrap(),
            &parts[&helper],
            fresh_key,
        )?;
        let keys = &all[&helper];
        let verification_shares = (1..=keys.params().n())
            .map(|m| keys.original_verification_share(p(m)))
            .collect();
        answers.insert(
            helper,
            Answer {
                masked,
                verification_shares,
            },
        );
    }
    let group_key = all[&p(1)].group_key();
    share_repair::recover(&ephemeral, &repair, &SESSION, group_key, &answers)
}

fn a_lost_share_comes_back_exactly<C: Ciphersuite>(all: &BTreeMap<Participant, ThresholdKeys<C>>) {
    let repaired = repair(all, 2, &[1, 3, 4], Relay::Faithful).unwrap();
    let lost = &all[&p(2)];
    assert_eq!(repaired.serialize(), lost.serialize());
    // Any t helpers will do; the repaired participant can help repair another.
    let mut with_repaired = all.clone();
    with_repaired.insert(p(2), repaired);
    let again = repair(&with_repaired, 4, &[3, 2, 1], Relay::Faithful).unwrap();
    assert_eq!(again.serialize(), all[&p(4)].serialize());
}

fn a_changed_value_is_refused<C: Ciphersuite>(all: &BTreeMap<Participant, ThresholdKeys<C>>) {
    assert_eq!(
        repair(all, 2, &[1, 3, 4], Relay::AddsOne).unwrap_err(),
        RepairError::Mismatch
    );
}

#[test]
fn a_lost_share_is_repaired_by_three_peers_on_both_curves() {
    let (batch, network) = keys();
    a_lost_share_comes_back_exactly(&batch);
    a_lost_share_comes_back_exactly(&network);
    a_changed_value_is_refused(&batch);
    a_changed_value_is_refused(&network);
}

#[test]
fn a_repair_takes_exactly_t_distinct_helpers_never_the_repaired() {
    let (_, network) = keys();
    for (helpers, why) in [
        (&[1, 3][..], "2 helpers for a key of threshold 3"),
        (&[1, 3, 4, 4][..], "a helper is named twice"),
        (&[1, 2, 3][..], "cannot help repair itself"),
        (&[1, 3, 5][..], "participant 5 of a key of 4"),
    ] {
        let error = repair(&network, 2, helpers, Relay::Faithful).unwrap_err();
        assert!(error.to_string().contains(why), "{helpers:?}: {error}");
    }
    // A helper asked to split for a repair it is not in refuses.
    let outsider = Repair::new(p(2), vec![p(1), p(3), p(4)]).unwrap();
    let error = share_repair::split(&network[&p(2)], &outsider, &SESSION, &mut OsRng)
        .err()
        .unwrap();
    assert!(error.to_string().contains("not a helper"), "{error}");
}

#[test]
fn invented_or_differing_verification_shares_are_refused() {
    let (_, network) = keys();
    let repair = Repair::new(p(2), vec![p(1), p(3), p(4)]).unwrap();
    let group_key = network[&p(1)].group_key();
    let answer = |keys: &ThresholdKeys<Secp256k1>| Answer::<Secp256k1> {
        masked: <Secp256k1 as Ciphersuite>::F::ONE,
        verification_shares: (1..=4)
            .map(|m| keys.original_verification_share(p(m)))
            .collect(),
    };
    let honest: BTreeMap<_, _> = [1, 3, 4]
        .into_iter()
        .map(|i| (p(i), answer(&network[&p(i)])))
        .collect();
    let ephemeral = <Secp256k1 as Ciphersuite>::F::ONE;
    let mut differing = honest.clone();
    differing.get_mut(&p(4)).unwrap().verification_shares[0] += Secp256k1::generator();
    assert_eq!(
        share_repair::recover(&ephemeral, &repair, &SESSION, group_key, &differing).unwrap_err(),
        RepairError::SharesDiffer
    );
    let mut invented = honest.clone();
    for answer in invented.values_mut() {
        answer.verification_shares[3] += Secp256k1::generator();
    }
    assert_eq!(
        share_repair::recover(&ephemeral, &repair, &SESSION, group_key, &invented).unwrap_err(),
        RepairError::NotTheKey
    );
    let other_key = group_key + Secp256k1::generator();
    assert_eq!(
        share_repair::recover(&ephemeral, &repair, &SESSION, other_key, &honest).unwrap_err(),
        RepairError::NotTheKey
    );
    let mut missing = honest;
    missing.remove(&p(3));
    assert!(matches!(
        share_repair::recover(&ephemeral, &repair, &SESSION, group_key, &missing),
        Err(RepairError::Messages(_))
    ));
}

/// Every participant's fresh key for a refresh, and each one's view of the others'.
fn fresh_keys<C: Ciphersuite>(
    all: &BTreeMap<Participant, ThresholdKeys<C>>,
) -> (BTreeMap<Participant, C::F>, BTreeMap<Participant, Peers<C>>) {
    let secrets: BTreeMap<Participant, C::F> =
        all.keys().map(|&i| (i, C::F::random(&mut OsRng))).collect();
    let peers = all
        .keys()
        .map(|&i| {
            let others = secrets
                .iter()
                .filter(|(j, _)| **j != i)
                .map(|(j, secret)| (*j, C::generator() * secret))
                .collect();
            (i, others)
        })
        .collect();
    (secrets, peers)
}

/// Runs a refresh among everyone; `tamper` may change what the relay carries.
fn refresh<C: Ciphersuite>(
    all: &BTreeMap<Participant, ThresholdKeys<C>>,
    tamper: impl Fn(Participant, Participant, &mut Received<C>),
) -> Result<BTreeMap<Participant, ThresholdKeys<C>>, RefreshError> {
    let (fresh, peers) = fresh_keys(all);
    let mut kept = BTreeMap::new();
    let mut received: BTreeMap<Participant, BTreeMap<Participant, Received<C>>> = BTreeMap::new();
    for (&i, keys) in all {
        let (keep, dealt) =
            share_refresh::deal(keys, &SESSION, &fresh[&i], &peers[&i], &mut OsRng)?;
        kept.insert(i, keep);
        for (to, masked) in dealt.masked {
            let mut message = Received {
                commitments: dealt.commitments.clone(),
                masked,
            };
            tamper(i, to, &mut message);
            received.entry(to).or_default().insert(i, message);
        }
    }
    all.iter()
        .map(|(&i, keys)| {
            let refreshed = share_refresh::apply(
                keys,
                &SESSION,
                kept.remove(&i).unwrap(),
                &fresh[&i],
                &peers[&i],
                &received[&i],
            )?;
            Ok((i, refreshed))
        })
        .collect()
}

/// `Σ λ_i·V_i` over `signers`, each share taken from the keys named for it.
fn interpolated<C: Ciphersuite>(signers: &[(u16, &ThresholdKeys<C>)]) -> C::G {
    let set: Vec<Participant> = signers.iter().map(|(i, _)| p(*i)).collect();
    signers
        .iter()
        .map(|(i, keys)| {
            C::generator() * (lagrange::<C::F>(p(*i), &set, 0) * **keys.original_secret_share())
        })
        .sum()
}

fn a_refresh_moves_every_share_and_keeps_the_key<C: Ciphersuite>(
    before: &BTreeMap<Participant, ThresholdKeys<C>>,
) -> BTreeMap<Participant, ThresholdKeys<C>> {
    let after = refresh(before, |_, _, _| {}).unwrap();
    for (i, keys) in &after {
        let old = &before[i];
        assert_eq!(keys.group_key(), old.group_key());
        assert_eq!(keys.params(), old.params());
        assert_ne!(
            **keys.original_secret_share(),
            **old.original_secret_share()
        );
        assert_ne!(
            keys.original_verification_share(*i).to_bytes().as_ref(),
            old.original_verification_share(*i).to_bytes().as_ref()
        );
    }
    let group_key = before[&p(1)].group_key();
    assert_eq!(
        interpolated(&[(1, &after[&p(1)]), (2, &after[&p(2)]), (4, &after[&p(4)])]),
        group_key
    );
    // A share stolen before the refresh does not combine with two after it.
    assert_ne!(
        interpolated(&[(1, &before[&p(1)]), (2, &after[&p(2)]), (4, &after[&p(4)])]),
        group_key
    );
    after
}

/// Whether `signers`, each with the keys given for it, produce a signature together.
fn sign(signers: &HashMap<Participant, ThresholdKeys<Secp256k1>>) -> bool {
    common::frost_bip340_sign(signers, &[9; 32]).is_some()
}

#[test]
fn a_refresh_keeps_the_group_keys_and_old_shares_stop_combining() {
    let (batch, network) = keys();
    a_refresh_moves_every_share_and_keeps_the_key(&batch);
    let after = a_refresh_moves_every_share_and_keeps_the_key(&network);
    let signers = |from: &[(u16, &BTreeMap<Participant, ThresholdKeys<Secp256k1>>)]| {
        from.iter()
            .map(|(i, keys)| (p(*i), keys[&p(*i)].clone()))
            .collect::<HashMap<_, _>>()
    };
    assert!(sign(&signers(&[
        (1, &network),
        (2, &network),
        (3, &network)
    ])));
    assert!(sign(&signers(&[(1, &after), (2, &after), (4, &after)])));
    assert!(!sign(&signers(&[(1, &network), (2, &after), (4, &after)])));
    // A refreshed share is repaired like any other.
    let repaired = repair(&after, 3, &[1, 2, 4], Relay::Faithful).unwrap();
    assert_eq!(repaired.serialize(), after[&p(3)].serialize());
}

#[test]
fn a_dealer_whose_value_does_not_fit_its_commitments_is_blamed() {
    let (_, network) = keys();
    let error = refresh(&network, |from, to, message| {
        if from == p(3) && to == p(1) {
            message.masked += <Secp256k1 as Ciphersuite>::F::ONE;
        }
    })
    .unwrap_err();
    assert_eq!(error, RefreshError::Blame(p(3)));
    let error = refresh(&network, |from, _, message| {
        if from == p(2) {
            message.commitments.pop();
        }
    })
    .unwrap_err();
    assert_eq!(error, RefreshError::Blame(p(2)));
    // One participant's deal missing: no one applies a partial refresh.
    let (fresh, peers) = fresh_keys(&network);
    let (kept, _) = share_refresh::deal(
        &network[&p(1)],
        &SESSION,
        &fresh[&p(1)],
        &peers[&p(1)],
        &mut OsRng,
    )
    .unwrap();
    assert!(matches!(
        share_refresh::apply(
            &network[&p(1)],
            &SESSION,
            kept,
            &fresh[&p(1)],
            &peers[&p(1)],
            &BTreeMap::new()
        ),
        Err(RefreshError::Contributions(_))
    ));
    // A fresh key missing: nothing is dealt.
    let mut short = peers[&p(1)].clone();
    short.remove(&p(2));
    assert!(matches!(
        share_refresh::deal(&network[&p(1)], &SESSION, &fresh[&p(1)], &short, &mut OsRng),
        Err(RefreshError::Contributions(_))
    ));
}

/// Every enclave's refresh sessions driven in process, as the coordinator relays them: a
/// step repeated after its answer gets the same answer, a step out of order is refused, and a
/// confirmation is taken only with every participant's signature.
#[test]
fn refresh_sessions_repeat_answers_refuse_disorder_and_need_every_signature() {
    use schema::{
        ids::{Attempt, KeyGenId, NetworkId, Participant as Index, Session, ValidatorSet},
        messages::ParticipantMap,
    };
    use signer_enclave::{
        enclave::pair_of,
        identity::Identity,
        resharing::{everyone_refreshed, verification_digest, Refreshed, ReshareError, Resharing},
    };

    let keys = generate_keys(3, 4, &mut OsRng).unwrap();
    let pair = pair_of(&keys[&Index::new(1).unwrap()]).unwrap();
    let shares = verification_digest(&keys[&Index::new(1).unwrap()]);
    let id = KeyGenId {
        set: ValidatorSet {
            session: Session(0),
            network: NetworkId::Bitcoin,
        },
        attempt: Attempt(1),
    };
    let others = |map: &ParticipantMap, me: Index| -> ParticipantMap {
        map.iter()
            .filter(|(i, _)| **i != me)
            .map(|(i, v)| (*i, v.clone()))
            .collect()
    };
    let mut sessions: BTreeMap<Index, Resharing> =
        keys.keys().map(|i| (*i, Resharing::default())).collect();
    let identity: BTreeMap<Index, Identity> = keys
        .keys()
        .map(|i| (*i, Identity::generate(&mut OsRng)))
        .collect();
    let identities: Vec<[u8; 32]> = identity
        .values()
        .map(|identity| identity.public().serialize())
        .collect();

    // Deals before fresh keys: no such step yet.
    let first = Index::new(1).unwrap();
    let early = sessions.get_mut(&first).unwrap().deal(
        id,
        &ParticipantMap::new(),
        &keys[&first],
        &mut OsRng,
    );
    assert_eq!(early.unwrap_err(), ReshareError::UnknownAttempt(id));

    // Identities not one per participant, or another's at our index: refused.
    let mut swapped = identities.clone();
    swapped.swap(0, 1);
    for wrong in [&identities[..3], &swapped[..]] {
        let refused = sessions.get_mut(&first).unwrap().begin_refresh(
            id,
            (pair, shares),
            wrong,
            (&keys[&first], &identity[&first]),
            &mut OsRng,
        );
        assert_eq!(refused.unwrap_err(), ReshareError::Identities);
    }
    let mut fresh = ParticipantMap::new();
    for (i, session) in &mut sessions {
        let key = session
            .begin_refresh(
                id,
                (pair, shares),
                &identities,
                (&keys[i], &identity[i]),
                &mut OsRng,
            )
            .unwrap();
        fresh.insert(*i, key);
    }
    // A participant's fresh key with another's signature is refused, naming it.
    let mut forged = others(&fresh, first);
    let two = Index::new(2).unwrap();
    let swapped = [&forged[&two][..65], &fresh[&first][65..]].concat();
    forged.insert(two, swapped);
    let refused = sessions
        .get_mut(&first)
        .unwrap()
        .deal(id, &forged, &keys[&first], &mut OsRng);
    assert_eq!(refused.unwrap_err(), ReshareError::IdentitySignature(two));

    let mut deals: BTreeMap<Index, ParticipantMap> = BTreeMap::new();
    let mut dealt = BTreeMap::new();
    for (i, session) in &mut sessions {
        let sent = session
            .deal(id, &others(&fresh, *i), &keys[i], &mut OsRng)
            .unwrap();
        dealt.insert(*i, sent.clone());
        for (to, blob) in sent {
            deals.entry(to).or_default().insert(*i, blob);
        }
    }
    let mut signatures = ParticipantMap::new();
    let mut digests = Vec::new();
    for (i, session) in &mut sessions {
        let Refreshed::New {
            digest, signature, ..
        } = session
            .refresh(id, &deals[i], &keys[i], &identity[i])
            .unwrap()
        else {
            panic!("new shares expected");
        };
        session.mark_refreshed(id, &deals[i], digest, signature);
        digests.push(digest);
        signatures.insert(*i, signature.to_vec());
    }
    digests.dedup();
    assert_eq!(digests.len(), 1);
    let digest = digests[0];

    // Asked again once answered: the same deals, the same digest and signature.
    let session = sessions.get_mut(&first).unwrap();
    let again = session
        .deal(id, &others(&fresh, first), &keys[&first], &mut OsRng)
        .unwrap();
    assert_eq!(again, dealt[&first]);
    let Refreshed::Again { digest: same, .. } = session
        .refresh(id, &deals[&first], &keys[&first], &identity[&first])
        .unwrap()
    else {
        panic!("the same answer expected");
    };
    assert_eq!(same, digest);

    // The confirmation's signatures: all four check out; one missing or one over another
    // digest does not.
    let old = (&keys[&first], &identity[&first]);
    everyone_refreshed(old, &identities, (id, &pair, &digest), &signatures).unwrap();
    let mut missing = signatures.clone();
    missing.remove(&two);
    assert!(matches!(
        everyone_refreshed(old, &identities, (id, &pair, &digest), &missing),
        Err(ReshareError::Malformed(_))
    ));
    assert_eq!(
        everyone_refreshed(old, &identities, (id, &pair, &[9; 32]), &signatures).unwrap_err(),
        ReshareError::IdentitySignature(first)
    );
}

/// The bound on repair sessions, and attempts: a fifth set beyond four repairs in progress is
/// refused, a repeated begin gets the same fresh key, an older attempt is refused, a newer one
/// replaces the session.
#[test]
fn repair_sessions_are_bounded_and_attempts_only_increase() {
    use schema::{
        ids::{Attempt, KeyGenId, NetworkId, Participant as Index, Session, ValidatorSet},
        messages::key_gen::ShareRepair,
    };
    use signer_enclave::{
        enclave::pair_of,
        identity::Identity,
        resharing::{ReshareError, Resharing, MAX_RESHARE_SESSIONS},
    };

    let keys = generate_keys(3, 4, &mut OsRng).unwrap();
    let identity = Identity::generate(&mut OsRng);
    let repair = ShareRepair {
        pair: pair_of(&keys[&Index::new(1).unwrap()]).unwrap(),
        repaired: Index::new(2).unwrap(),
        helpers: [1, 3, 4]
            .into_iter()
            .map(|i| Index::new(i).unwrap())
            .collect(),
        participants: 4,
        identity: identity.public().serialize(),
        shares: [0; 32],
    };
    let id = |session: u32, attempt: u32| KeyGenId {
        set: ValidatorSet {
            session: Session(session),
            network: NetworkId::Bitcoin,
        },
        attempt: Attempt(attempt),
    };
    let mut sessions = Resharing::default();
    let begin = |sessions: &mut Resharing, id| {
        sessions.begin_repair(id, repair.clone(), &identity, &mut OsRng)
    };
    let bound = u32::try_from(MAX_RESHARE_SESSIONS).unwrap();
    for session in 0..bound {
        begin(&mut sessions, id(session, 5)).unwrap();
    }
    assert_eq!(
        begin(&mut sessions, id(bound, 0)).unwrap_err(),
        ReshareError::TooManySessions(MAX_RESHARE_SESSIONS)
    );
    let (first, _) = begin(&mut sessions, id(0, 5)).unwrap();
    let (again, _) = begin(&mut sessions, id(0, 5)).unwrap();
    assert_eq!(first, again);
    assert_eq!(
        begin(&mut sessions, id(0, 4)).unwrap_err(),
        ReshareError::StaleAttempt {
            id: id(0, 4),
            started: 5
        }
    );
    let (newer, _) = begin(&mut sessions, id(0, 6)).unwrap();
    assert_ne!(newer, first);
    assert_eq!(sessions.in_progress(), MAX_RESHARE_SESSIONS);
}
