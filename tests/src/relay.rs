//! The coordinator's relaying between enclaves, for tests and benchmarks: a key generation's
//! three rounds, and the three rounds of signing a plan or a Batch with chosen signers. What
//! each participant receives is everyone else's message, as PROTOCOL.md has it.

use std::{collections::BTreeMap, future::Future};

use bitcoin::Transaction;
use scanner::coordinate::enclave_client::EnclaveClient;
use schema::{
    batch::{Batch, SignedBatch},
    ids::{KeyGenId, Participant, ThresholdParams},
    keys::KeyPair,
    messages::{
        key_gen::{CoordinatorMessage, ProcessorMessage},
        ParticipantMap,
    },
    plan::Plan,
    sign_id::{BatchSignId, PlanSignId},
};

use crate::HarnessError;

/// A participant in a key generation: an enclave over RPC, or anything else a test plays.
pub trait KeyGenParty {
    /// Handles one coordinator message, answering with exactly one message.
    fn handle(
        &mut self,
        message: CoordinatorMessage,
    ) -> impl Future<Output = Result<ProcessorMessage, HarnessError>>;
}

impl KeyGenParty for EnclaveClient {
    async fn handle(
        &mut self,
        message: CoordinatorMessage,
    ) -> Result<ProcessorMessage, HarnessError> {
        let mut messages = self.key_gen(&message).await.map_err(failed)?;
        match messages.len() {
            1 => Ok(messages.remove(0)),
            n => Err(HarnessError::Failed(format!("{n} key-gen answers, not 1"))),
        }
    }
}

fn failed(error: impl std::fmt::Display) -> HarnessError {
    HarnessError::Failed(error.to_string())
}

/// The key pair a key generation's last message announces, if it is `GeneratedKeyPair`.
pub fn generated_pair(message: &ProcessorMessage) -> Option<KeyPair> {
    match message {
        ProcessorMessage::GeneratedKeyPair {
            batch_key,
            network_key,
            ..
        } => Some(KeyPair {
            batch_key: *batch_key,
            network_key: *network_key,
        }),
        _ => None,
    }
}

/// Everyone's message but `me`'s.
pub fn others(map: &ParticipantMap, me: Participant) -> ParticipantMap {
    map.iter()
        .filter(|(participant, _)| **participant != me)
        .map(|(participant, blob)| (*participant, blob.clone()))
        .collect()
}

/// Relays a whole t-of-n key generation (n = the number of parties). `corrupt` flips the last
/// byte of the share one participant sends another, to provoke blame. Returns each
/// participant's last message (`GeneratedKeyPair`, or `Blame`).
///
/// # Errors
/// A participant failed or answered out of protocol.
pub async fn key_gen<P: KeyGenParty>(
    parties: &mut BTreeMap<Participant, P>,
    id: KeyGenId,
    t: u16,
    corrupt: Option<(Participant, Participant)>,
) -> Result<BTreeMap<Participant, ProcessorMessage>, HarnessError> {
    let n = u16::try_from(parties.len()).map_err(failed)?;
    let mut commitments = ParticipantMap::new();
    for (i, party) in parties.iter_mut() {
        let params = ThresholdParams::new(t, n, *i).map_err(failed)?;
        match party
            .handle(CoordinatorMessage::GenerateKey { id, params })
            .await?
        {
            ProcessorMessage::Commitments { commitments: c, .. } => {
                commitments.insert(*i, c);
            }
            other => return Err(failed(format!("expected commitments, got {other:?}"))),
        }
    }
    let mut shares: BTreeMap<Participant, ParticipantMap> = BTreeMap::new();
    for (i, party) in parties.iter_mut() {
        let message = CoordinatorMessage::Commitments {
            id,
            commitments: others(&commitments, *i),
        };
        let sent = match party.handle(message).await? {
            ProcessorMessage::Shares { shares, .. } => shares,
            other => return Err(failed(format!("expected shares, got {other:?}"))),
        };
        for (to, mut blob) in sent {
            if corrupt == Some((*i, to)) {
                if let Some(last) = blob.last_mut() {
                    *last ^= 1;
                }
            }
            shares.entry(to).or_default().insert(*i, blob);
        }
    }
    let mut last = BTreeMap::new();
    for (i, party) in parties.iter_mut() {
        let message = CoordinatorMessage::Shares {
            id,
            shares: shares.remove(i).unwrap_or_default(),
        };
        last.insert(*i, party.handle(message).await?);
    }
    Ok(last)
}

fn same<T: PartialEq>(mut results: Vec<T>) -> Result<T, HarnessError> {
    if results.windows(2).any(|pair| pair.first() != pair.get(1)) {
        return Err(failed("signers released different results"));
    }
    results.pop().ok_or_else(|| failed("no signers"))
}

/// The three signing rounds with `signers`, each round's messages relayed to every signer but
/// their author; every signer must release the same result.
async fn three_rounds<T: PartialEq>(
    signers: &[Participant],
    preprocess: impl AsyncFn(Participant) -> Result<Vec<u8>, HarnessError>,
    share: impl AsyncFn(Participant, ParticipantMap) -> Result<Vec<u8>, HarnessError>,
    complete: impl AsyncFn(Participant, ParticipantMap) -> Result<T, HarnessError>,
) -> Result<T, HarnessError> {
    let mut preprocesses = ParticipantMap::new();
    for signer in signers {
        preprocesses.insert(*signer, preprocess(*signer).await?);
    }
    let mut shares = ParticipantMap::new();
    for signer in signers {
        let share = share(*signer, others(&preprocesses, *signer)).await;
        shares.insert(*signer, share?);
    }
    let mut results = Vec::new();
    for signer in signers {
        let result = complete(*signer, others(&shares, *signer)).await;
        results.push(result?);
    }
    same(results)
}

fn client(
    clients: &BTreeMap<Participant, EnclaveClient>,
    signer: Participant,
) -> Result<&EnclaveClient, HarnessError> {
    clients
        .get(&signer)
        .ok_or_else(|| failed(format!("no client for {signer:?}")))
}

/// Signs a plan attempt with `signers`; every signer must release the same transaction.
///
/// # Errors
/// An enclave refused or failed.
pub async fn sign_plan(
    clients: &BTreeMap<Participant, EnclaveClient>,
    signers: &[Participant],
    id: PlanSignId,
    plan: &Plan,
) -> Result<Transaction, HarnessError> {
    three_rounds(
        signers,
        async |signer| {
            client(clients, signer)?
                .preprocess_plan(&id, plan)
                .await
                .map_err(failed)
        },
        async |signer, map| {
            client(clients, signer)?
                .share_plan(&id, &map)
                .await
                .map_err(failed)
        },
        async |signer, map| {
            client(clients, signer)?
                .complete_plan(&id, &map)
                .await
                .map_err(failed)
        },
    )
    .await
}

/// Signs a Batch attempt with `signers`; every signer must release the same signed Batch.
///
/// # Errors
/// An enclave refused or failed.
pub async fn sign_batch(
    clients: &BTreeMap<Participant, EnclaveClient>,
    signers: &[Participant],
    id: BatchSignId,
    batch: &Batch,
) -> Result<SignedBatch, HarnessError> {
    three_rounds(
        signers,
        async |signer| {
            client(clients, signer)?
                .preprocess_batch(&id, batch)
                .await
                .map_err(failed)
        },
        async |signer, map| {
            client(clients, signer)?
                .share_batch(&id, &map)
                .await
                .map_err(failed)
        },
        async |signer, map| {
            client(clients, signer)?
                .complete_batch(&id, &map)
                .await
                .map_err(failed)
        },
    )
    .await
}
