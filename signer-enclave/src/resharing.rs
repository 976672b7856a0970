//! The repair and refresh sessions of this enclave's key pairs (`share_repair`,
//! `share_refresh`), both keys of a pair side by side, with the blobs the coordinator relays
//! and what each step keeps for the next.
//!
//! Sessions live in memory, keyed by validator set: a newer attempt for a set replaces the one
//! in progress, an older one is refused, at most `MAX_RESHARE_SESSIONS` sets of each kind run
//! at once, and a restart forgets them (the coordinator starts a new attempt; the fresh keys of
//! a repair and the polynomials of a refresh are never reused). A step asked again with the
//! same input gives the same answer; with another input it is refused.
//!
//! Blobs (Ristretto values first, then secp256k1; scalars 32 bytes, points 32 and 33):
//! - fresh key: Ristretto point || secp256k1 point
//! - repair part: both masked parts
//! - repair answer: both masked sums || n (u16 LE) || n Ristretto verification shares ||
//!   n secp256k1 verification shares
//! - refresh deal: both masked values || k (u16 LE) || k Ristretto commitments || k secp256k1
//!   commitments

use std::collections::{BTreeMap, HashMap};

use bitcoin::hashes::{sha256, Hash, HashEngine};
use ciphersuite::{
    group::{ff::PrimeField, Group, GroupEncoding},
    Ciphersuite, Ristretto,
};
use modular_frost::{curve::Secp256k1, Participant as FrostParticipant, ThresholdKeys};
use rand_core::{CryptoRng, RngCore};
use schema::{
    ids::{KeyGenId, Participant, ValidatorSet},
    keys::KeyPair,
    messages::{
        key_gen::{refresh_attestation_message, repair_attestation_message, ShareRepair},
        ParticipantMap,
    },
};
use thiserror::Error;
use zeroize::Zeroizing;

use crate::{
    key_gen::GeneratedKeys,
    share_refresh::{self, RefreshError},
    share_repair::{self, Answer, Repair, RepairError},
};

/// Most validator sets with a session of one kind (repairing, helping, refreshing) at once.
pub const MAX_RESHARE_SESSIONS: usize = 4;

/// A repair or refresh step that cannot be taken.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReshareError {
    /// No session of this kind is in progress for the attempt.
    #[error("no repair or refresh in progress for {0:?}")]
    UnknownAttempt(KeyGenId),
    /// An attempt at or below the one in progress for the set.
    #[error("{id:?}: attempt {started} is in progress already")]
    StaleAttempt {
        /// The attempt asked.
        id: KeyGenId,
        /// The attempt in progress.
        started: u32,
    },
    /// As many sets have a session of this kind as are allowed at once.
    #[error("{0} sessions of this kind are in progress already")]
    TooManySessions(usize),
    /// A step asked again with other contents than the first time.
    #[error("{0:?}: asked again with other contents")]
    ConflictingRepeat(KeyGenId),
    /// A blob does not parse.
    #[error("{0} does not parse")]
    Malformed(String),
    /// The repair does not fit or does not check out.
    #[error(transparent)]
    Repair(#[from] RepairError),
    /// The refresh does not fit or does not check out.
    #[error(transparent)]
    Refresh(#[from] RefreshError),
}

type BatchScalar = <Ristretto as Ciphersuite>::F;
type NetworkScalar = <Secp256k1 as Ciphersuite>::F;

/// The repaired side: our fresh keys' secrets, until the answers come.
struct Repairing {
    id: KeyGenId,
    repair: ShareRepair,
    batch: Zeroizing<BatchScalar>,
    network: Zeroizing<NetworkScalar>,
    fresh_key: Vec<u8>,
}

/// A helper's side.
struct Helping {
    id: KeyGenId,
    repair: ShareRepair,
    fresh_key: Vec<u8>,
    kept: Option<(share_repair::Kept<Ristretto>, share_repair::Kept<Secp256k1>)>,
    parts: ParticipantMap,
    answered: Option<(ParticipantMap, Vec<u8>)>,
}

/// A participant's side of a refresh.
struct Refreshing {
    id: KeyGenId,
    pair: KeyPair,
    kept: Option<(
        share_refresh::Kept<Ristretto>,
        share_refresh::Kept<Secp256k1>,
    )>,
    deals: ParticipantMap,
    answered: Option<(ParticipantMap, [u8; 32])>,
}

/// What a refresh's deals gave.
pub enum Refreshed {
    /// New keys, to seal and record as pending, with the digest of their verification shares.
    New(GeneratedKeys, [u8; 32]),
    /// The same deals again: the digest already reported.
    Again([u8; 32]),
}

/// Every repair and refresh session of this enclave.
#[derive(Default)]
pub struct Resharing {
    repairing: HashMap<ValidatorSet, Repairing>,
    helping: HashMap<ValidatorSet, Helping>,
    refreshing: HashMap<ValidatorSet, Refreshing>,
}

impl Resharing {
    /// Sessions in progress, of every kind.
    pub fn in_progress(&self) -> usize {
        self.repairing.len() + self.helping.len() + self.refreshing.len()
    }

    /// Begins the repair of our own share: our fresh keys, for the coordinator to attest.
    ///
    /// # Errors
    /// The repair names a helper twice or us as a helper, the attempt is stale, the same
    /// attempt began with another repair, or too many sets are being repaired.
    pub fn begin_repair<R: RngCore + CryptoRng>(
        &mut self,
        id: KeyGenId,
        repair: ShareRepair,
        rng: &mut R,
    ) -> Result<Vec<u8>, ReshareError> {
        if let Some(session) = self.repairing.get(&id.set) {
            if session.id == id {
                return if session.repair == repair {
                    Ok(session.fresh_key.clone())
                } else {
                    Err(ReshareError::ConflictingRepeat(id))
                };
            }
        }
        admit(&self.repairing, id, |s| s.id)?;
        frost_repair(&repair)?;
        let batch = Zeroizing::new(<Ristretto as Ciphersuite>::random_nonzero_F(&mut *rng));
        let network = Zeroizing::new(<Secp256k1 as Ciphersuite>::random_nonzero_F(&mut *rng));
        let fresh_key = [
            point_bytes(Ristretto::generator() * *batch),
            point_bytes(Secp256k1::generator() * *network),
        ]
        .concat();
        self.repairing.insert(
            id.set,
            Repairing {
                id,
                repair,
                batch,
                network,
                fresh_key: fresh_key.clone(),
            },
        );
        Ok(fresh_key)
    }

    /// The repair of our own share in progress under `id`, and our fresh keys: what its
    /// attestation must cover.
    pub fn own_repair(&self, id: KeyGenId) -> Option<(&ShareRepair, &[u8])> {
        self.repairing
            .get(&id.set)
            .filter(|session| session.id == id)
            .map(|session| (&session.repair, session.fresh_key.as_slice()))
    }

    /// Step 1 as a helper (the caller checked the attestation): our masked parts for the
    /// other helpers.
    ///
    /// # Errors
    /// The fresh key does not parse, the repair does not fit `keys`, the attempt is stale or
    /// repeated with other contents, or too many sets are being helped.
    pub fn help<R: RngCore + CryptoRng>(
        &mut self,
        id: KeyGenId,
        repair: &ShareRepair,
        fresh_key: &[u8],
        keys: &GeneratedKeys,
        rng: &mut R,
    ) -> Result<ParticipantMap, ReshareError> {
        if let Some(session) = self.helping.get(&id.set) {
            if session.id == id {
                return if session.repair == *repair && session.fresh_key == fresh_key {
                    Ok(session.parts.clone())
                } else {
                    Err(ReshareError::ConflictingRepeat(id))
                };
            }
        }
        admit(&self.helping, id, |s| s.id)?;
        points(fresh_key, 1)?;
        let frost = frost_repair(repair)?;
        let session = repair_session(id, repair, fresh_key);
        let (kept_batch, batch) = share_repair::split(&keys.batch, &frost, &session, rng)?;
        let (kept_network, network) = share_repair::split(&keys.network, &frost, &session, rng)?;
        let mut parts = ParticipantMap::new();
        for (to, batch_part) in batch {
            let network_part = network
                .get(&to)
                .ok_or_else(|| ReshareError::Malformed("the split".into()))?;
            parts.insert(
                schema_participant(to)?,
                [scalar_bytes(batch_part), scalar_bytes(*network_part)].concat(),
            );
        }
        self.helping.insert(
            id.set,
            Helping {
                id,
                repair: repair.clone(),
                fresh_key: fresh_key.to_vec(),
                kept: Some((kept_batch, kept_network)),
                parts: parts.clone(),
                answered: None,
            },
        );
        Ok(parts)
    }

    /// The key pair a helper's session under `id` repairs.
    pub fn helping_pair(&self, id: KeyGenId) -> Option<KeyPair> {
        self.helping
            .get(&id.set)
            .filter(|session| session.id == id)
            .map(|session| session.repair.pair)
    }

    /// Step 2 as a helper: our answer for the repaired participant.
    ///
    /// # Errors
    /// No session under `id`, a part does not parse, the parts are not one from each other
    /// helper, or they were sent before with other contents.
    pub fn gather(
        &mut self,
        id: KeyGenId,
        parts: &ParticipantMap,
        keys: &GeneratedKeys,
    ) -> Result<Vec<u8>, ReshareError> {
        let session = self
            .helping
            .get_mut(&id.set)
            .filter(|session| session.id == id)
            .ok_or(ReshareError::UnknownAttempt(id))?;
        if let Some((received, answer)) = &session.answered {
            return if received == parts {
                Ok(answer.clone())
            } else {
                Err(ReshareError::ConflictingRepeat(id))
            };
        }
        let mut batch = BTreeMap::new();
        let mut network = BTreeMap::new();
        for (from, blob) in parts {
            let mut reader = Reader::new(blob, || format!("participant {from}'s repair part"));
            batch.insert(frost_participant(*from)?, reader.scalar::<Ristretto>()?);
            network.insert(frost_participant(*from)?, reader.scalar::<Secp256k1>()?);
            reader.done()?;
        }
        let frost = frost_repair(&session.repair)?;
        let fresh = points(&session.fresh_key, 1)?;
        let (fresh_batch, fresh_network) = (fresh.batch[0], fresh.network[0]);
        let repair_id = repair_session(id, &session.repair, &session.fresh_key);
        let (kept_batch, kept_network) = session
            .kept
            .take()
            .ok_or(ReshareError::UnknownAttempt(id))?;
        let gathered = share_repair::gather(
            &keys.batch,
            &frost,
            &repair_id,
            kept_batch,
            &batch,
            fresh_batch,
        )
        .and_then(|masked_batch| {
            share_repair::gather(
                &keys.network,
                &frost,
                &repair_id,
                kept_network,
                &network,
                fresh_network,
            )
            .map(|masked_network| (masked_batch, masked_network))
        });
        let (masked_batch, masked_network) = match gathered {
            Ok(masked) => masked,
            Err(error) => {
                // The parts kept are spent: this attempt cannot go on.
                self.helping.remove(&id.set);
                return Err(error.into());
            }
        };
        let n = keys.batch.params().n();
        let mut answer = Vec::with_capacity(66 + usize::from(n) * 65);
        answer.extend_from_slice(&scalar_bytes(masked_batch));
        answer.extend_from_slice(&scalar_bytes(masked_network));
        answer.extend_from_slice(&n.to_le_bytes());
        for m in (1..=n).filter_map(FrostParticipant::new) {
            answer.extend_from_slice(&point_bytes(keys.batch.original_verification_share(m)));
        }
        for m in (1..=n).filter_map(FrostParticipant::new) {
            answer.extend_from_slice(&point_bytes(keys.network.original_verification_share(m)));
        }
        session.answered = Some((parts.clone(), answer.clone()));
        Ok(answer)
    }

    /// Step 3 as the repaired participant (the caller checked the attestation): our keys.
    /// The session ends whatever the outcome: the fresh keys are used once.
    ///
    /// # Errors
    /// No session under `id`, an answer does not parse, or the repair does not check out.
    pub fn recover(
        &mut self,
        id: KeyGenId,
        answers: &ParticipantMap,
    ) -> Result<GeneratedKeys, ReshareError> {
        if self.own_repair(id).is_none() {
            return Err(ReshareError::UnknownAttempt(id));
        }
        let session = self
            .repairing
            .remove(&id.set)
            .ok_or(ReshareError::UnknownAttempt(id))?;
        let mut batch = BTreeMap::new();
        let mut network = BTreeMap::new();
        for (from, blob) in answers {
            let what = || format!("participant {from}'s repair answer");
            let mut reader = Reader::new(blob, what);
            let masked_batch = reader.scalar::<Ristretto>()?;
            let masked_network = reader.scalar::<Secp256k1>()?;
            let n = reader.u16()?;
            let shares = reader.points(n)?;
            reader.done()?;
            let participant = frost_participant(*from)?;
            batch.insert(
                participant,
                Answer {
                    masked: masked_batch,
                    verification_shares: shares.batch,
                },
            );
            network.insert(
                participant,
                Answer {
                    masked: masked_network,
                    verification_shares: shares.network,
                },
            );
        }
        let group = points(&pair_bytes(&session.repair.pair), 1)?;
        let frost = frost_repair(&session.repair)?;
        let repair_id = repair_session(id, &session.repair, &session.fresh_key);
        Ok(GeneratedKeys {
            batch: share_repair::recover(
                &*session.batch,
                &frost,
                &repair_id,
                group.batch[0],
                &batch,
            )?,
            network: share_repair::recover(
                &*session.network,
                &frost,
                &repair_id,
                group.network[0],
                &network,
            )?,
        })
    }

    /// Step 1 of a refresh (the caller checked the attestation): our deal for every other
    /// participant.
    ///
    /// # Errors
    /// The key's threshold is 1, the attempt is stale or repeated for another pair, or too
    /// many sets are refreshing.
    pub fn deal<R: RngCore + CryptoRng>(
        &mut self,
        id: KeyGenId,
        pair: KeyPair,
        keys: &GeneratedKeys,
        rng: &mut R,
    ) -> Result<ParticipantMap, ReshareError> {
        if let Some(session) = self.refreshing.get(&id.set) {
            if session.id == id {
                return if session.pair == pair {
                    Ok(session.deals.clone())
                } else {
                    Err(ReshareError::ConflictingRepeat(id))
                };
            }
        }
        admit(&self.refreshing, id, |s| s.id)?;
        let session = refresh_session(id, &pair, keys);
        let (kept_batch, batch) = share_refresh::deal(&keys.batch, &session, rng)?;
        let (kept_network, network) = share_refresh::deal(&keys.network, &session, rng)?;
        let degree = u16::try_from(batch.commitments.len())
            .map_err(|_| ReshareError::Malformed("the deal".into()))?;
        let mut deals = ParticipantMap::new();
        for (to, batch_value) in &batch.masked {
            let network_value = network
                .masked
                .get(to)
                .ok_or_else(|| ReshareError::Malformed("the deal".into()))?;
            let mut blob = Vec::with_capacity(66 + usize::from(degree) * 65);
            blob.extend_from_slice(&scalar_bytes(*batch_value));
            blob.extend_from_slice(&scalar_bytes(*network_value));
            blob.extend_from_slice(&degree.to_le_bytes());
            for commitment in &batch.commitments {
                blob.extend_from_slice(&point_bytes(*commitment));
            }
            for commitment in &network.commitments {
                blob.extend_from_slice(&point_bytes(*commitment));
            }
            deals.insert(schema_participant(*to)?, blob);
        }
        self.refreshing.insert(
            id.set,
            Refreshing {
                id,
                pair,
                kept: Some((kept_batch, kept_network)),
                deals: deals.clone(),
                answered: None,
            },
        );
        Ok(deals)
    }

    /// The key pair a refresh under `id` refreshes.
    pub fn refreshing_pair(&self, id: KeyGenId) -> Option<KeyPair> {
        self.refreshing
            .get(&id.set)
            .filter(|session| session.id == id)
            .map(|session| session.pair)
    }

    /// Step 2 of a refresh: our refreshed keys and the digest of their verification shares.
    ///
    /// # Errors
    /// No session under `id`, a deal does not parse or does not fit its commitments (the
    /// session ends: a deal that does not fit is blamed, and the attempt cannot go on), or the
    /// deals were sent before with other contents.
    pub fn refresh(
        &mut self,
        id: KeyGenId,
        deals: &ParticipantMap,
        keys: &GeneratedKeys,
    ) -> Result<Refreshed, ReshareError> {
        let session = self
            .refreshing
            .get_mut(&id.set)
            .filter(|session| session.id == id)
            .ok_or(ReshareError::UnknownAttempt(id))?;
        if let Some((received, digest)) = &session.answered {
            return if received == deals {
                Ok(Refreshed::Again(*digest))
            } else {
                Err(ReshareError::ConflictingRepeat(id))
            };
        }
        let mut batch = BTreeMap::new();
        let mut network = BTreeMap::new();
        for (from, blob) in deals {
            let mut reader = Reader::new(blob, || format!("participant {from}'s refresh deal"));
            let masked_batch = reader.scalar::<Ristretto>()?;
            let masked_network = reader.scalar::<Secp256k1>()?;
            let degree = reader.u16()?;
            let commitments = reader.points(degree)?;
            reader.done()?;
            let participant = frost_participant(*from)?;
            batch.insert(
                participant,
                share_refresh::Received {
                    commitments: commitments.batch,
                    masked: masked_batch,
                },
            );
            network.insert(
                participant,
                share_refresh::Received {
                    commitments: commitments.network,
                    masked: masked_network,
                },
            );
        }
        let refresh_id = refresh_session(id, &session.pair, keys);
        let (kept_batch, kept_network) = session
            .kept
            .take()
            .ok_or(ReshareError::UnknownAttempt(id))?;
        let refreshed = share_refresh::apply(&keys.batch, &refresh_id, kept_batch, &batch)
            .and_then(|batch| {
                share_refresh::apply(&keys.network, &refresh_id, kept_network, &network)
                    .map(|network| GeneratedKeys { batch, network })
            });
        let refreshed = match refreshed {
            Ok(refreshed) => refreshed,
            Err(error) => {
                self.refreshing.remove(&id.set);
                return Err(error.into());
            }
        };
        let digest = verification_digest(&refreshed);
        session.answered = Some((deals.clone(), digest));
        Ok(Refreshed::New(refreshed, digest))
    }
}

/// The digest of both keys' verification shares, every participant's in order: equal at every
/// participant holding shares of one sharing, and changed by every refresh.
pub fn verification_digest(keys: &GeneratedKeys) -> [u8; 32] {
    let mut engine = sha256::HashEngine::default();
    engine.input(b"serai-processor/verification-shares/v1");
    digest_shares(&mut engine, &keys.batch);
    digest_shares(&mut engine, &keys.network);
    sha256::Hash::from_engine(engine).to_byte_array()
}

fn digest_shares<C: Ciphersuite>(engine: &mut sha256::HashEngine, keys: &ThresholdKeys<C>) {
    let params = keys.params();
    engine.input(&params.t().to_le_bytes());
    engine.input(&params.n().to_le_bytes());
    for m in (1..=params.n()).filter_map(FrostParticipant::new) {
        engine.input(keys.original_verification_share(m).to_bytes().as_ref());
    }
}

/// Refuses a new attempt for a set at or below the one in progress, or a new set beyond the
/// bound (a newer attempt for a set in progress replaces it).
fn admit<S>(
    sessions: &HashMap<ValidatorSet, S>,
    id: KeyGenId,
    id_of: impl Fn(&S) -> KeyGenId,
) -> Result<(), ReshareError> {
    match sessions.get(&id.set) {
        Some(session) if id.attempt <= id_of(session).attempt => Err(ReshareError::StaleAttempt {
            id,
            started: id_of(session).attempt.0,
        }),
        Some(_) => Ok(()),
        None if sessions.len() >= MAX_RESHARE_SESSIONS => {
            Err(ReshareError::TooManySessions(sessions.len()))
        }
        None => Ok(()),
    }
}

/// The 32 bytes every mask of a repair is bound to: its attestation message, which names the
/// set, the attempt, the pair, who is repaired, by whom, and the fresh keys.
fn repair_session(id: KeyGenId, repair: &ShareRepair, fresh_key: &[u8]) -> [u8; 32] {
    let mut engine = sha256::HashEngine::default();
    engine.input(b"serai-processor/share-repair-session/v1");
    engine.input(&repair_attestation_message(id, repair, fresh_key));
    sha256::Hash::from_engine(engine).to_byte_array()
}

/// The 32 bytes every mask of a refresh is bound to: its attestation message and the
/// verification shares it refreshes (so each refresh of a key masks under new bytes).
fn refresh_session(id: KeyGenId, pair: &KeyPair, keys: &GeneratedKeys) -> [u8; 32] {
    let mut engine = sha256::HashEngine::default();
    engine.input(b"serai-processor/share-refresh-session/v1");
    engine.input(&refresh_attestation_message(id, pair));
    engine.input(&verification_digest(keys));
    sha256::Hash::from_engine(engine).to_byte_array()
}

fn frost_repair(repair: &ShareRepair) -> Result<Repair, ReshareError> {
    let helpers = repair
        .helpers
        .iter()
        .map(|helper| frost_participant(*helper))
        .collect::<Result<_, _>>()?;
    Ok(Repair::new(frost_participant(repair.repaired)?, helpers)?)
}

fn frost_participant(participant: Participant) -> Result<FrostParticipant, ReshareError> {
    FrostParticipant::new(participant.get())
        .ok_or_else(|| ReshareError::Malformed(format!("participant {participant}")))
}

fn schema_participant(participant: FrostParticipant) -> Result<Participant, ReshareError> {
    Participant::new(u16::from(participant))
        .map_err(|_| ReshareError::Malformed("a participant index".into()))
}

fn scalar_bytes<F: PrimeField>(scalar: F) -> Vec<u8> {
    scalar.to_repr().as_ref().to_vec()
}

fn point_bytes<G: GroupEncoding>(point: G) -> Vec<u8> {
    point.to_bytes().as_ref().to_vec()
}

fn pair_bytes(pair: &KeyPair) -> Vec<u8> {
    [&pair.batch_key.0[..], &pair.network_key.to_bytes()].concat()
}

/// Points of both curves, side by side.
struct Points {
    batch: Vec<<Ristretto as Ciphersuite>::G>,
    network: Vec<<Secp256k1 as Ciphersuite>::G>,
}

/// `count` Ristretto points then `count` secp256k1 points, using every byte.
fn points(bytes: &[u8], count: u16) -> Result<Points, ReshareError> {
    let mut reader = Reader::new(bytes, || "a key".to_string());
    let read = reader.points(count)?;
    reader.done()?;
    Ok(read)
}

/// Reads one blob, naming it in every error.
struct Reader<'a, W: Fn() -> String> {
    bytes: &'a [u8],
    what: W,
}

impl<'a, W: Fn() -> String> Reader<'a, W> {
    fn new(bytes: &'a [u8], what: W) -> Self {
        Reader { bytes, what }
    }

    fn malformed(&self) -> ReshareError {
        ReshareError::Malformed((self.what)())
    }

    fn scalar<C: Ciphersuite>(&mut self) -> Result<C::F, ReshareError> {
        C::read_F(&mut self.bytes).map_err(|_| self.malformed())
    }

    fn point<C: Ciphersuite>(&mut self) -> Result<C::G, ReshareError> {
        let point = C::read_G(&mut self.bytes).map_err(|_| self.malformed())?;
        if bool::from(point.is_identity()) {
            return Err(self.malformed());
        }
        Ok(point)
    }

    fn u16(&mut self) -> Result<u16, ReshareError> {
        let (value, rest) = self
            .bytes
            .split_first_chunk::<2>()
            .ok_or_else(|| self.malformed())?;
        self.bytes = rest;
        Ok(u16::from_le_bytes(*value))
    }

    /// `count` points of each curve; `count` is bounded by what the bytes can hold before
    /// anything is allocated.
    fn points(&mut self, count: u16) -> Result<Points, ReshareError> {
        if self.bytes.len() < usize::from(count) * 65 {
            return Err(self.malformed());
        }
        let batch = (0..count)
            .map(|_| self.point::<Ristretto>())
            .collect::<Result<_, _>>()?;
        let network = (0..count)
            .map(|_| self.point::<Secp256k1>())
            .collect::<Result<_, _>>()?;
        Ok(Points { batch, network })
    }

    fn done(&self) -> Result<(), ReshareError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(self.malformed())
        }
    }
}
