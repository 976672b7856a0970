//! The coordinator's relaying between enclaves, for tests and benchmarks: a key generation's
//! three rounds, and the three rounds of signing a plan or a Batch with chosen signers. What
//! each participant receives is everyone else's message, as PROTOCOL.md has it; each round goes
//! to every participant at once, and the next starts when all answered.

use std::{collections::BTreeMap, future::Future};

use futures::future::try_join_all;

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

/// Relays a whole t-of-n key generation (n = the number of parties), each round sent to every
/// party at once. `corrupt` flips the last
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
    let answers = try_join_all(parties.iter_mut().map(|(i, party)| async move {
        let params = ThresholdParams::new(t, n, *i).map_err(failed)?;
        let answer = party
            .handle(CoordinatorMessage::GenerateKey { id, params })
            .await?;
        Ok::<_, HarnessError>((*i, answer))
    }))
    .await?;
    let mut commitments = ParticipantMap::new();
    for (i, answer) in answers {
        match answer {
            ProcessorMessage::Commitments { commitments: c, .. } => {
                commitments.insert(i, c);
            }
            other => return Err(failed(format!("expected commitments, got {other:?}"))),
        }
    }
    let answers = try_join_all(parties.iter_mut().map(|(i, party)| {
        let message = CoordinatorMessage::Commitments {
            id,
            commitments: others(&commitments, *i),
        };
        async move { Ok::<_, HarnessError>((*i, party.handle(message).await?)) }
    }))
    .await?;
    let mut shares: BTreeMap<Participant, ParticipantMap> = BTreeMap::new();
    for (i, answer) in answers {
        let sent = match answer {
            ProcessorMessage::Shares { shares, .. } => shares,
            other => return Err(failed(format!("expected shares, got {other:?}"))),
        };
        for (to, mut blob) in sent {
            if corrupt == Some((i, to)) {
                if let Some(last) = blob.last_mut() {
                    *last ^= 1;
                }
            }
            shares.entry(to).or_default().insert(i, blob);
        }
    }
    let answers = try_join_all(parties.iter_mut().map(|(i, party)| {
        let message = CoordinatorMessage::Shares {
            id,
            shares: shares.remove(i).unwrap_or_default(),
        };
        async move { Ok::<_, HarnessError>((*i, party.handle(message).await?)) }
    }))
    .await?;
    Ok(answers.into_iter().collect())
}

fn same<T: PartialEq>(mut results: Vec<T>) -> Result<T, HarnessError> {
    if results.windows(2).any(|pair| pair.first() != pair.get(1)) {
        return Err(failed("signers released different results"));
    }
    results.pop().ok_or_else(|| failed("no signers"))
}

/// The three signing rounds with `signers`, each round sent to every signer at once (as a
/// coordinator does) with everyone's messages but their own, so that the enclaves work
/// concurrently; every signer must release the same result.
async fn three_rounds<T: PartialEq>(
    signers: &[Participant],
    preprocess: impl AsyncFn(Participant) -> Result<Vec<u8>, HarnessError>,
    share: impl AsyncFn(Participant, ParticipantMap) -> Result<Vec<u8>, HarnessError>,
    complete: impl AsyncFn(Participant, ParticipantMap) -> Result<T, HarnessError>,
) -> Result<T, HarnessError> {
    let preprocesses: ParticipantMap = signers
        .iter()
        .copied()
        .zip(try_join_all(signers.iter().map(|signer| preprocess(*signer))).await?)
        .collect();
    let shares: ParticipantMap = signers
        .iter()
        .copied()
        .zip(
            try_join_all(
                signers
                    .iter()
                    .map(|signer| share(*signer, others(&preprocesses, *signer))),
            )
            .await?,
        )
        .collect();
    same(
        try_join_all(
            signers
                .iter()
                .map(|signer| complete(*signer, others(&shares, *signer))),
        )
        .await?,
    )
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
