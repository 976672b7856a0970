//! A whole t-of-n key generation among n in-process `KeyGen`s, relayed as the coordinator
//! relays it: for tests and fuzz seeds only (the `testing` feature).

use std::collections::BTreeMap;

use rand_core::OsRng;
use schema::{
    ids::{Attempt, KeyGenId, NetworkId, Participant, Session, ThresholdParams, ValidatorSet},
    messages::{
        key_gen::{CoordinatorMessage, ProcessorMessage},
        ParticipantMap,
    },
};

use crate::key_gen::{GeneratedKeys, KeyGen};

/// Every participant's keys from one key generation of session 0 on Bitcoin; `None` if a
/// round did not go as the protocol says.
pub fn generate_keys(t: u16, n: u16) -> Option<BTreeMap<Participant, GeneratedKeys>> {
    let id = KeyGenId {
        set: ValidatorSet {
            session: Session(0),
            network: NetworkId::Bitcoin,
        },
        attempt: Attempt(0),
    };
    let mut enclaves = BTreeMap::new();
    for i in 1..=n {
        enclaves.insert(Participant::new(i).ok()?, KeyGen::default());
    }
    let round = |enclave: &mut KeyGen, message| {
        let (mut messages, keys) = enclave.handle(message, &mut OsRng).ok()?;
        (messages.len() == 1).then(|| (messages.remove(0), keys))
    };
    let mut commitments = ParticipantMap::new();
    for (i, enclave) in &mut enclaves {
        let params = ThresholdParams::new(t, n, *i).ok()?;
        let message = CoordinatorMessage::GenerateKey { id, params };
        let ProcessorMessage::Commitments { commitments: c, .. } = round(enclave, message)?.0
        else {
            return None;
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
        let ProcessorMessage::Shares { shares: sent, .. } = round(enclave, message)?.0 else {
            return None;
        };
        for (to, blob) in sent {
            shares.entry(to).or_default().insert(*i, blob);
        }
    }
    let mut keys = BTreeMap::new();
    for (i, enclave) in &mut enclaves {
        let message = CoordinatorMessage::Shares {
            id,
            shares: shares.remove(i)?,
        };
        keys.insert(*i, round(enclave, message)?.1?);
    }
    Some(keys)
}
