//! A whole t-of-n key generation among n in-process `KeyGen`s, relayed as the coordinator
//! relays it: for tests and fuzz seeds only (the `testing` feature).

use std::collections::BTreeMap;

use rand_core::{CryptoRng, RngCore};
use schema::{
    ids::{Attempt, KeyGenId, NetworkId, Participant, Session, ThresholdParams, ValidatorSet},
    messages::{
        key_gen::{CoordinatorMessage, ProcessorMessage},
        ParticipantMap,
    },
};

use crate::key_gen::{GeneratedKeys, KeyGen};

/// Every participant's keys from one key generation of session 0 on Bitcoin, drawing every
/// secret from `rng` (a seeded one gives the same keys each time); `None` if a round did not go
/// as the protocol says.
pub fn generate_keys<R: RngCore + CryptoRng>(
    t: u16,
    n: u16,
    rng: &mut R,
) -> Option<BTreeMap<Participant, GeneratedKeys>> {
    relay(t, n, rng).map(|(keys, _)| keys)
}

/// What each participant was sent, in order.
pub type Received = BTreeMap<Participant, Vec<CoordinatorMessage>>;

/// `generate_keys`, with every message the coordinator relayed to each participant.
pub fn relay<R: RngCore + CryptoRng>(
    t: u16,
    n: u16,
    rng: &mut R,
) -> Option<(BTreeMap<Participant, GeneratedKeys>, Received)> {
    let mut received = Received::new();
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
    let mut round = |i: Participant, enclave: &mut KeyGen, message: CoordinatorMessage| {
        received.entry(i).or_default().push(message.clone());
        let (mut messages, keys) = enclave.handle(message, rng).ok()?;
        (messages.len() == 1).then(|| (messages.remove(0), keys))
    };
    let mut commitments = ParticipantMap::new();
    for (i, enclave) in &mut enclaves {
        let params = ThresholdParams::new(t, n, *i).ok()?;
        let message = CoordinatorMessage::GenerateKey { id, params };
        let ProcessorMessage::Commitments { commitments: c, .. } = round(*i, enclave, message)?.0
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
        let ProcessorMessage::Shares { shares: sent, .. } = round(*i, enclave, message)?.0 else {
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
        keys.insert(*i, round(*i, enclave, message)?.1?);
    }
    Some((keys, received))
}
