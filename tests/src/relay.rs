//! The coordinator's relaying between enclaves, for tests and benchmarks: a key generation's
//! three rounds, a share repair's four and a refresh's three (attested by the coordinator key
//! given), and the three rounds of signing a plan or a Batch with chosen signers. What
//! each participant receives is everyone else's message, as PROTOCOL.md has it; each round goes
//! to every participant at once, and the next starts when all answered.

use std::{collections::BTreeMap, future::Future};

use futures::future::{join_all, try_join_all};

use bitcoin::{
    key::Keypair,
    secp256k1::{Message, Secp256k1},
    Transaction,
};
use scanner::coordinate::enclave_client::EnclaveClient;
use schema::{
    batch::{Batch, SignedBatch},
    ids::{KeyGenId, Participant, ThresholdParams},
    keys::KeyPair,
    messages::{
        coordinator::Attestation,
        key_gen::{
            refresh_attestation_message, refresh_confirm_message, repair_attestation_message,
            CoordinatorMessage, ProcessorMessage, ShareRepair,
        },
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

/// The coordinator's BIP340 attestation of `digest`.
pub fn attest(coordinator: &Keypair, digest: [u8; 32]) -> Attestation {
    let signature =
        Secp256k1::new().sign_schnorr_no_aux_rand(&Message::from_digest(digest), coordinator);
    Attestation(signature.serialize())
}

/// Relays a repair of `repair.repaired`'s share by `repair.helpers` (all in `parties`),
/// attested by `coordinator`: the repaired party's fresh key, the helpers' parts, their
/// answers, and the repaired party's `Repaired`, which is returned.
///
/// # Errors
/// A party failed or answered out of protocol.
pub async fn repair<P: KeyGenParty>(
    parties: &mut BTreeMap<Participant, P>,
    id: KeyGenId,
    repair: &ShareRepair,
    coordinator: &Keypair,
) -> Result<ProcessorMessage, HarnessError> {
    let party = |parties: &mut BTreeMap<Participant, P>, i: Participant| {
        parties
            .remove(&i)
            .ok_or_else(|| failed(format!("no party {i}")))
    };
    let mut repaired = party(parties, repair.repaired)?;
    let answer = repaired
        .handle(CoordinatorMessage::RepairBegin {
            id,
            repair: repair.clone(),
        })
        .await;
    let (fresh_key, signature) = match answer {
        Ok(ProcessorMessage::RepairKey {
            fresh_key,
            signature,
            ..
        }) => (fresh_key, signature),
        other => {
            parties.insert(repair.repaired, repaired);
            return Err(failed(format!("expected a fresh key, got {other:?}")));
        }
    };
    let attestation = attest(
        coordinator,
        repair_attestation_message(id, repair, &fresh_key),
    );
    let result = help(parties, id, repair, (&fresh_key, signature), attestation).await;
    let answer = match result {
        Ok(answers) => {
            repaired
                .handle(CoordinatorMessage::RepairAnswers {
                    id,
                    answers,
                    attestation,
                })
                .await
        }
        Err(error) => Err(error),
    };
    parties.insert(repair.repaired, repaired);
    answer
}

/// The helpers' two rounds of a repair: their answers for the repaired party.
async fn help<P: KeyGenParty>(
    parties: &mut BTreeMap<Participant, P>,
    id: KeyGenId,
    repair: &ShareRepair,
    (fresh_key, fresh_key_signature): (&[u8], [u8; 64]),
    attestation: Attestation,
) -> Result<ParticipantMap, HarnessError> {
    let answers = every(helpers(parties, repair).map(|(i, party)| {
        let message = CoordinatorMessage::RepairHelp {
            id,
            repair: repair.clone(),
            fresh_key: fresh_key.to_vec(),
            fresh_key_signature,
            attestation,
        };
        async move { Ok::<_, HarnessError>((*i, party.handle(message).await?)) }
    }))
    .await?;
    let mut parts: BTreeMap<Participant, ParticipantMap> = BTreeMap::new();
    for (i, answer) in answers {
        let ProcessorMessage::RepairParts { parts: sent, .. } = answer else {
            return Err(failed(format!("expected repair parts, got {answer:?}")));
        };
        for (to, blob) in sent {
            parts.entry(to).or_default().insert(i, blob);
        }
    }
    let answers = every(helpers(parties, repair).map(|(i, party)| {
        let message = CoordinatorMessage::RepairParts {
            id,
            parts: parts.remove(i).unwrap_or_default(),
        };
        async move { Ok::<_, HarnessError>((*i, party.handle(message).await?)) }
    }))
    .await?;
    let mut collected = ParticipantMap::new();
    for (i, answer) in answers {
        let ProcessorMessage::RepairAnswer { answer, .. } = answer else {
            return Err(failed(format!("expected a repair answer, got {answer:?}")));
        };
        collected.insert(i, answer);
    }
    Ok(collected)
}

/// The parties helping `repair`.
fn helpers<'a, P>(
    parties: &'a mut BTreeMap<Participant, P>,
    repair: &'a ShareRepair,
) -> impl Iterator<Item = (&'a Participant, &'a mut P)> {
    parties
        .iter_mut()
        .filter(|(i, _)| repair.helpers.contains(i))
}

/// Relays a refresh of `pair`, whose verification shares have digest `shares`, among every
/// party (whose registered identities are `identities`, in order), attested by `coordinator`: the fresh keys, the deals, then, once every party reported
/// the same refreshed verification shares, the confirmation with every party's signature.
/// Returns each party's last message (`RefreshConfirmed`).
///
/// # Errors
/// A party failed or answered out of protocol, or the parties refreshed to different shares
/// (then nothing is confirmed).
pub async fn refresh<P: KeyGenParty>(
    parties: &mut BTreeMap<Participant, P>,
    id: KeyGenId,
    (pair, shares): (KeyPair, [u8; 32]),
    identities: &[[u8; 32]],
    coordinator: &Keypair,
) -> Result<BTreeMap<Participant, ProcessorMessage>, HarnessError> {
    let (digest, signatures) =
        refresh_deals(parties, id, (pair, shares), identities, coordinator).await?;
    confirm_refresh(
        parties,
        id,
        (pair, digest),
        identities,
        &signatures,
        coordinator,
    )
    .await
}

/// Sends each party `message(party)`, all at once; returns each one's answer.
async fn round<P: KeyGenParty>(
    parties: &mut BTreeMap<Participant, P>,
    message: impl Fn(Participant) -> CoordinatorMessage,
) -> Result<Vec<(Participant, ProcessorMessage)>, HarnessError> {
    every(parties.iter_mut().map(|(i, party)| {
        let message = message(*i);
        async move { Ok::<_, HarnessError>((*i, party.handle(message).await?)) }
    }))
    .await
}

/// Every answer of a round, each party's handled to the end (a refusal by one does not cut
/// the others' short, as a coordinator sends a round to everyone), or the first error.
async fn every<T>(
    answers: impl Iterator<Item = impl Future<Output = Result<T, HarnessError>>>,
) -> Result<Vec<T>, HarnessError> {
    join_all(answers).await.into_iter().collect()
}

/// A refresh's first three rounds: every party's fresh keys, its deals, and its refreshed
/// shares; returns the digest all of them reported and each one's signature of it.
///
/// # Errors
/// A party failed or answered out of protocol, or the parties refreshed to different shares.
pub async fn refresh_deals<P: KeyGenParty>(
    parties: &mut BTreeMap<Participant, P>,
    id: KeyGenId,
    (pair, shares): (KeyPair, [u8; 32]),
    identities: &[[u8; 32]],
    coordinator: &Keypair,
) -> Result<([u8; 32], ParticipantMap), HarnessError> {
    let attestation = attest(
        coordinator,
        refresh_attestation_message(id, &pair, &shares, identities),
    );
    let mut keys = ParticipantMap::new();
    let begin = |_| CoordinatorMessage::RefreshBegin {
        id,
        pair,
        shares,
        identities: identities.to_vec(),
        attestation,
    };
    for (i, answer) in round(parties, begin).await? {
        let ProcessorMessage::RefreshKey { key, .. } = answer else {
            return Err(failed(format!("expected a refresh key, got {answer:?}")));
        };
        keys.insert(i, key);
    }
    let mut deals: BTreeMap<Participant, ParticipantMap> = BTreeMap::new();
    let exchange = |i| CoordinatorMessage::RefreshKeys {
        id,
        keys: others(&keys, i),
    };
    for (i, answer) in round(parties, exchange).await? {
        let ProcessorMessage::RefreshDeal { deals: sent, .. } = answer else {
            return Err(failed(format!("expected a refresh deal, got {answer:?}")));
        };
        for (to, blob) in sent {
            deals.entry(to).or_default().insert(i, blob);
        }
    }
    let deliver = |i| CoordinatorMessage::RefreshDeals {
        id,
        deals: deals.get(&i).cloned().unwrap_or_default(),
    };
    let mut digests = Vec::new();
    let mut signatures = ParticipantMap::new();
    for (i, answer) in round(parties, deliver).await? {
        let ProcessorMessage::Refreshed {
            digest, signature, ..
        } = answer
        else {
            return Err(failed(format!("expected Refreshed, got {answer:?}")));
        };
        digests.push(digest);
        signatures.insert(i, signature.to_vec());
    }
    Ok((same(digests)?, signatures))
}

/// A refresh's last round: the coordinator's attested confirmation that every party holds the
/// shares of `digest`, with every party's signature of it. Returns each `RefreshConfirmed`.
///
/// # Errors
/// A party failed or answered out of protocol.
pub async fn confirm_refresh<P: KeyGenParty>(
    parties: &mut BTreeMap<Participant, P>,
    id: KeyGenId,
    (pair, digest): (KeyPair, [u8; 32]),
    identities: &[[u8; 32]],
    signatures: &ParticipantMap,
    coordinator: &Keypair,
) -> Result<BTreeMap<Participant, ProcessorMessage>, HarnessError> {
    let attestation = attest(
        coordinator,
        refresh_confirm_message(id, &pair, &digest, identities),
    );
    let confirm = |_| CoordinatorMessage::RefreshConfirm {
        id,
        pair,
        digest,
        signatures: signatures.clone(),
        identities: identities.to_vec(),
        attestation,
    };
    Ok(round(parties, confirm).await?.into_iter().collect())
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
