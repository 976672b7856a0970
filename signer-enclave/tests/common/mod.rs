//! Helpers shared by the enclave's integration tests.

use std::collections::BTreeMap;

use rand_core::OsRng;
use schema::{
    ids::{Attempt, KeyGenId, NetworkId, Participant, Session, ThresholdParams, ValidatorSet},
    messages::{
        key_gen::{CoordinatorMessage, ProcessorMessage},
        ParticipantMap,
    },
};
use signer_enclave::key_gen::{GeneratedKeys, KeyGen};

/// Runs a whole t-of-n key generation among n `KeyGen`s, relaying as the coordinator does.
pub fn generate_keys(t: u16, n: u16) -> BTreeMap<Participant, GeneratedKeys> {
    let id = KeyGenId {
        set: ValidatorSet {
            session: Session(0),
            network: NetworkId::Bitcoin,
        },
        attempt: Attempt(0),
    };
    let participants: Vec<Participant> = (1..=n).map(|i| Participant::new(i).unwrap()).collect();
    let mut enclaves: BTreeMap<Participant, KeyGen> = participants
        .iter()
        .map(|p| (*p, KeyGen::default()))
        .collect();
    let one = |messages: (Vec<ProcessorMessage>, Option<GeneratedKeys>)| {
        let (mut messages, keys) = messages;
        assert_eq!(messages.len(), 1);
        (messages.remove(0), keys)
    };
    let mut commitments = ParticipantMap::new();
    for (i, enclave) in &mut enclaves {
        let params = ThresholdParams::new(t, n, *i).unwrap();
        let message = CoordinatorMessage::GenerateKey { id, params };
        let ProcessorMessage::Commitments { commitments: c, .. } =
            one(enclave.handle(message, &mut OsRng).unwrap()).0
        else {
            panic!("no commitments");
        };
        commitments.insert(*i, c);
    }
    let mut shares: BTreeMap<Participant, ParticipantMap> = BTreeMap::new();
    for (i, enclave) in &mut enclaves {
        let mut others = commitments.clone();
        others.remove(i);
        let message = CoordinatorMessage::Commitments {
            id,
            commitments: others,
        };
        let ProcessorMessage::Shares { shares: sent, .. } =
            one(enclave.handle(message, &mut OsRng).unwrap()).0
        else {
            panic!("no shares");
        };
        for (to, blob) in sent {
            shares.entry(to).or_default().insert(*i, blob);
        }
    }
    enclaves
        .iter_mut()
        .map(|(i, enclave)| {
            let message = CoordinatorMessage::Shares {
                id,
                shares: shares.remove(i).unwrap(),
            };
            (
                *i,
                one(enclave.handle(message, &mut OsRng).unwrap()).1.unwrap(),
            )
        })
        .collect()
}
