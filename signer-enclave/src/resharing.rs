//! The repair and refresh sessions of this enclave's key pairs (`share_repair`,
//! `share_refresh`), both keys of a pair side by side, with the blobs the coordinator relays
//! and what each step keeps for the next. "Reshare" here never changes the threshold or the
//! set: a repair gives one participant its share back, a refresh moves every share.
//!
//! Sessions live in memory, keyed by validator set: a newer attempt for a set replaces the one
//! in progress, an older one is refused, and at most `MAX_RESHARE_SESSIONS` sets of each kind
//! are kept (a finished session makes room for a new set; one in progress never does). A
//! restart forgets them: the coordinator starts a new attempt, and fresh keys and polynomials
//! are never reused within one. A step asked again with the same input gives the same answer;
//! with another input it is refused. (After a restart the enclave answers a refresh's deals
//! from the pending shares it recorded, whatever deals come: they were spent.)
//!
//! Blobs (Ristretto values first, then secp256k1; scalars 32 bytes, points 32 and 33):
//! - fresh key: Ristretto point || secp256k1 point (`KEY_POINTS_BYTES`)
//! - repair part: both masked parts (`KEY_SCALARS_BYTES`)
//! - repair answer: both masked sums || n (u16 LE) || n Ristretto verification shares ||
//!   n secp256k1 verification shares
//! - refresh key: fresh key || its holder's identity's BIP340 signature over it (64)
//! - refresh deal: both masked values || k (u16 LE) || k Ristretto commitments || k secp256k1
//!   commitments

use std::collections::{BTreeMap, HashMap};

use bitcoin::{
    hashes::{sha256, Hash, HashEngine},
    key::XOnlyPublicKey,
    secp256k1::{schnorr, Message, Secp256k1},
};
use ciphersuite::{
    group::{ff::PrimeField, Group, GroupEncoding},
    Ciphersuite, Ristretto,
};
use modular_frost::{
    curve::Secp256k1 as Secp256k1Curve, Participant as FrostParticipant, ThresholdKeys,
};
use rand_core::{CryptoRng, RngCore};
use schema::{
    ids::{KeyGenId, Participant, ThresholdParams, ValidatorSet},
    keys::KeyPair,
    limits::{KEY_POINTS_BYTES, KEY_SCALARS_BYTES},
    messages::{
        key_gen::{
            refresh_attestation_message, refresh_key_message, refreshed_message,
            repair_attestation_message, repair_fresh_key_message, ShareRepair,
        },
        ParticipantMap,
    },
    protocol::accepts_set_shape,
};
use thiserror::Error;
use zeroize::Zeroizing;

use crate::{
    identity::Identity,
    key_gen::GeneratedKeys,
    polynomial::participants,
    share_refresh::{self, Peers, RefreshError},
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
    /// As many sets have a session of this kind in progress as are allowed at once.
    #[error("{0} sessions of this kind are in progress already")]
    TooManySessions(usize),
    /// A step asked again with other contents than the first time.
    #[error("{0:?}: asked again with other contents")]
    ConflictingRepeat(KeyGenId),
    /// A blob does not parse.
    #[error("{0} does not parse")]
    Malformed(String),
    /// The repair names another enclave's identity.
    #[error("the repair names another enclave's identity")]
    NotThisEnclave,
    /// The repaired enclave's fresh keys are not signed by the identity the repair names.
    #[error("the repaired enclave's fresh keys are not signed by its identity")]
    FreshKeyUnsigned,
    /// A participant's refresh key or `Refreshed` is not signed by its identity.
    #[error("participant {0}'s signature does not verify under its registered identity")]
    IdentitySignature(Participant),
    /// The refresh's identities are not one per participant, ours at our index.
    #[error("the refresh's identities are not one per participant with ours at our index")]
    Identities,
    /// The refresh or repair is of other verification shares than this enclave holds.
    #[error(
        "other verification shares than this enclave holds are named (an enclave left behind \
         by a refresh is repaired into the named ones)"
    )]
    OtherShares,
    /// The set's shape is not one the protocol accepts.
    #[error("the repair's set shape is refused: {0}")]
    Shape(String),
    /// The repair does not fit or does not check out.
    #[error(transparent)]
    Repair(#[from] RepairError),
    /// The refresh does not fit or does not check out.
    #[error(transparent)]
    Refresh(#[from] RefreshError),
}

type BatchScalar = <Ristretto as Ciphersuite>::F;
type NetworkScalar = <Secp256k1Curve as Ciphersuite>::F;

/// Fresh secrets on both curves, and their public keys as one blob.
struct Fresh {
    batch: Zeroizing<BatchScalar>,
    network: Zeroizing<NetworkScalar>,
    public: Vec<u8>,
}

impl Fresh {
    fn draw<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        let batch = Zeroizing::new(<Ristretto as Ciphersuite>::random_nonzero_F(&mut *rng));
        let network = Zeroizing::new(<Secp256k1Curve as Ciphersuite>::random_nonzero_F(&mut *rng));
        let public = [
            point_bytes(Ristretto::generator() * *batch),
            point_bytes(Secp256k1Curve::generator() * *network),
        ]
        .concat();
        Fresh {
            batch,
            network,
            public,
        }
    }
}

/// The repaired side: our fresh keys' secrets, until the answers come.
struct Repairing {
    id: KeyGenId,
    repair: ShareRepair,
    fresh: Fresh,
}

/// A helper's side.
struct Helping {
    id: KeyGenId,
    repair: ShareRepair,
    fresh_key: Vec<u8>,
    kept: Option<(
        share_repair::Kept<Ristretto>,
        share_repair::Kept<Secp256k1Curve>,
    )>,
    parts: ParticipantMap,
    answered: Option<(ParticipantMap, Vec<u8>)>,
}

/// What a participant of a refresh dealt, once the others' fresh keys came.
struct Dealing {
    keys: ParticipantMap,
    peers: (Peers<Ristretto>, Peers<Secp256k1Curve>),
    kept: (
        share_refresh::Kept<Ristretto>,
        share_refresh::Kept<Secp256k1Curve>,
    ),
    deals: ParticipantMap,
}

/// A participant's side of a refresh.
struct Refreshing {
    id: KeyGenId,
    pair: KeyPair,
    shares: [u8; 32],
    identities: Vec<[u8; 32]>,
    fresh: Fresh,
    key: Vec<u8>,
    dealing: Option<Dealing>,
    answered: Option<Answered>,
}

/// What a refresh's `Refreshed` said, once its new shares were recorded, and what it dealt.
#[derive(Clone)]
struct Answered {
    keys: ParticipantMap,
    dealt: ParticipantMap,
    deals: ParticipantMap,
    digest: [u8; 32],
    signature: [u8; 64],
}

/// What a refresh's deals gave.
pub enum Refreshed {
    /// New keys, to seal and record as pending (then `mark_refreshed`), with the digest of
    /// their verification shares and our identity's signature over it.
    New {
        /// The refreshed keys.
        keys: GeneratedKeys,
        /// `verification_digest` of them.
        digest: [u8; 32],
        /// Our identity's signature over `refreshed_message`.
        signature: [u8; 64],
    },
    /// The same deals again, after the new shares were recorded: the same answer.
    Again {
        /// The digest reported.
        digest: [u8; 32],
        /// The signature reported.
        signature: [u8; 64],
    },
}

/// Every repair and refresh session of this enclave.
#[derive(Default)]
pub struct Resharing {
    repairing: HashMap<ValidatorSet, Repairing>,
    /// Repairs of our share that completed since the start, for a repeated last step.
    repaired: HashMap<ValidatorSet, (KeyGenId, KeyPair)>,
    helping: HashMap<ValidatorSet, Helping>,
    refreshing: HashMap<ValidatorSet, Refreshing>,
}

impl Resharing {
    /// Sessions in progress (not finished), of every kind.
    pub fn in_progress(&self) -> usize {
        self.repairing.len()
            + self
                .helping
                .values()
                .filter(|session| session.answered.is_none())
                .count()
            + self
                .refreshing
                .values()
                .filter(|session| session.answered.is_none())
                .count()
    }

    /// Begins the repair of our own share: our fresh keys and our identity's signature over
    /// them, for the coordinator to attest.
    ///
    /// # Errors
    /// The repair names another identity, a shape the protocol refuses, a helper twice or us
    /// as a helper; the attempt is stale or began with another repair; or too many sets are
    /// being repaired.
    pub fn begin_repair<R: RngCore + CryptoRng>(
        &mut self,
        id: KeyGenId,
        repair: ShareRepair,
        identity: &Identity,
        rng: &mut R,
    ) -> Result<(Vec<u8>, [u8; 64]), ReshareError> {
        if repair.identity != identity.public().serialize() {
            return Err(ReshareError::NotThisEnclave);
        }
        if let Some(session) = self.repairing.get(&id.set).filter(|s| s.id == id) {
            return if session.repair == repair {
                let fresh_key = session.fresh.public.clone();
                let signature = identity.sign(repair_fresh_key_message(id, &repair, &fresh_key));
                Ok((fresh_key, signature))
            } else {
                Err(ReshareError::ConflictingRepeat(id))
            };
        }
        admit(&mut self.repairing, id, |s| s.id, |_| false)?;
        shape(&repair)?;
        frost_repair(&repair)?;
        let fresh = Fresh::draw(rng);
        let fresh_key = fresh.public.clone();
        let signature = identity.sign(repair_fresh_key_message(id, &repair, &fresh_key));
        self.repairing
            .insert(id.set, Repairing { id, repair, fresh });
        Ok((fresh_key, signature))
    }

    /// The repair of our own share in progress under `id`, and our fresh keys: what its
    /// attestation must cover.
    pub fn own_repair(&self, id: KeyGenId) -> Option<(&ShareRepair, &[u8])> {
        self.repairing
            .get(&id.set)
            .filter(|session| session.id == id)
            .map(|session| (&session.repair, session.fresh.public.as_slice()))
    }

    /// The pair a repair of our share under `id` gave us, if it completed since the start.
    pub fn repaired(&self, id: KeyGenId) -> Option<KeyPair> {
        self.repaired
            .get(&id.set)
            .filter(|(done, _)| *done == id)
            .map(|(_, pair)| *pair)
    }

    /// Step 1 as a helper (the caller checked the attestation): checks the fresh keys are
    /// signed by the identity the repair names, then our masked parts for the other helpers.
    ///
    /// # Errors
    /// The fresh key does not parse or is not signed, the repair does not fit `keys`, the
    /// attempt is stale or repeated with other contents, or too many sets are being helped.
    pub fn help<R: RngCore + CryptoRng>(
        &mut self,
        id: KeyGenId,
        repair: &ShareRepair,
        fresh_key: &[u8],
        fresh_key_signature: &[u8; 64],
        keys: &GeneratedKeys,
        rng: &mut R,
    ) -> Result<ParticipantMap, ReshareError> {
        if let Some(session) = self.helping.get(&id.set).filter(|s| s.id == id) {
            return if session.repair == *repair && session.fresh_key == fresh_key {
                Ok(session.parts.clone())
            } else {
                Err(ReshareError::ConflictingRepeat(id))
            };
        }
        admit(&mut self.helping, id, |s| s.id, |s| s.answered.is_some())?;
        let message = repair_fresh_key_message(id, repair, fresh_key);
        if !signed_by(&repair.identity, message, fresh_key_signature) {
            return Err(ReshareError::FreshKeyUnsigned);
        }
        points(fresh_key, 1)?;
        if verification_digest(keys) != repair.shares {
            return Err(ReshareError::OtherShares);
        }
        if repair.participants != keys.network.params().n() {
            return Err(RepairError::Participants(format!(
                "a repair of a set of {} for a key of {}",
                repair.participants,
                keys.network.params().n()
            ))
            .into());
        }
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
            network.insert(
                frost_participant(*from)?,
                reader.scalar::<Secp256k1Curve>()?,
            );
            reader.done()?;
        }
        let frost = frost_repair(&session.repair)?;
        let fresh = points(&session.fresh_key, 1)?;
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
            fresh.batch[0],
        )
        .and_then(|masked_batch| {
            share_repair::gather(
                &keys.network,
                &frost,
                &repair_id,
                kept_network,
                &network,
                fresh.network[0],
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
        let mut answer =
            Vec::with_capacity(KEY_SCALARS_BYTES + 2 + usize::from(n) * KEY_POINTS_BYTES);
        answer.extend_from_slice(&scalar_bytes(masked_batch));
        answer.extend_from_slice(&scalar_bytes(masked_network));
        answer.extend_from_slice(&n.to_le_bytes());
        for m in participants(n) {
            answer.extend_from_slice(&point_bytes(keys.batch.original_verification_share(m)));
        }
        for m in participants(n) {
            answer.extend_from_slice(&point_bytes(keys.network.original_verification_share(m)));
        }
        session.answered = Some((parts.clone(), answer.clone()));
        Ok(answer)
    }

    /// Step 3 as the repaired participant (the caller checked the attestation): our keys. A
    /// failed check ends the session (the fresh keys are used for one outcome); a success keeps
    /// it until `mark_repaired`, so that a failed seal or write is simply asked again.
    ///
    /// # Errors
    /// No session under `id`, an answer does not parse, or the repair does not check out.
    pub fn recover(
        &mut self,
        id: KeyGenId,
        answers: &ParticipantMap,
    ) -> Result<GeneratedKeys, ReshareError> {
        let recovered = self.recover_keys(id, answers);
        if recovered.is_err() && self.own_repair(id).is_some() {
            // A check of this attempt failed: its fresh secrets are spent.
            self.repairing.remove(&id.set);
        }
        recovered
    }

    fn recover_keys(
        &self,
        id: KeyGenId,
        answers: &ParticipantMap,
    ) -> Result<GeneratedKeys, ReshareError> {
        let session = self
            .repairing
            .get(&id.set)
            .filter(|session| session.id == id)
            .ok_or(ReshareError::UnknownAttempt(id))?;
        let n = session.repair.participants;
        let mut batch = BTreeMap::new();
        let mut network = BTreeMap::new();
        for (from, blob) in answers {
            let what = || format!("participant {from}'s repair answer");
            let mut reader = Reader::new(blob, what);
            let masked_batch = reader.scalar::<Ristretto>()?;
            let masked_network = reader.scalar::<Secp256k1Curve>()?;
            if reader.u16()? != n {
                return Err(reader.malformed());
            }
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
        let repair_id = repair_session(id, &session.repair, &session.fresh.public);
        let keys = GeneratedKeys {
            batch: share_repair::recover(
                &*session.fresh.batch,
                &frost,
                &repair_id,
                group.batch[0],
                &batch,
            )?,
            network: share_repair::recover(
                &*session.fresh.network,
                &frost,
                &repair_id,
                group.network[0],
                &network,
            )?,
        };
        // The helpers' verification shares must be the sharing the coordinator attested.
        if verification_digest(&keys) != session.repair.shares {
            return Err(ReshareError::OtherShares);
        }
        Ok(keys)
    }

    /// Remembers that the repair under `id` gave us `pair` (once its share is recorded), and
    /// drops its fresh secrets.
    pub fn mark_repaired(&mut self, id: KeyGenId, pair: KeyPair) {
        self.repairing.remove(&id.set);
        self.repaired.insert(id.set, (id, pair));
    }

    /// Step 1 of a refresh (the caller checked the attestation): our fresh keys, signed by our
    /// identity.
    ///
    /// # Errors
    /// We hold other shares than `shares`, `identities` are not one per participant with ours
    /// at our index, the key's threshold is 1, the attempt is stale or repeated for another
    /// pair, or too many sets are refreshing.
    pub fn begin_refresh<R: RngCore + CryptoRng>(
        &mut self,
        id: KeyGenId,
        (pair, shares): (KeyPair, [u8; 32]),
        identities: &[[u8; 32]],
        (keys, identity): (&GeneratedKeys, &Identity),
        rng: &mut R,
    ) -> Result<Vec<u8>, ReshareError> {
        if let Some(session) = self.refreshing.get(&id.set).filter(|s| s.id == id) {
            return if session.pair == pair
                && session.shares == shares
                && session.identities == identities
            {
                Ok(session.key.clone())
            } else {
                Err(ReshareError::ConflictingRepeat(id))
            };
        }
        if verification_digest(keys) != shares {
            return Err(ReshareError::OtherShares);
        }
        identities_fit(keys, identities, identity)?;
        if keys.network.params().t() < 2 {
            return Err(RefreshError::ThresholdOne.into());
        }
        admit(&mut self.refreshing, id, |s| s.id, |s| s.answered.is_some())?;
        let fresh = Fresh::draw(rng);
        let signature = identity.sign(refresh_key_message(id, &pair, &shares, &fresh.public));
        let key = [fresh.public.as_slice(), &signature].concat();
        self.refreshing.insert(
            id.set,
            Refreshing {
                id,
                pair,
                shares,
                identities: identities.to_vec(),
                fresh,
                key: key.clone(),
                dealing: None,
                answered: None,
            },
        );
        Ok(key)
    }

    /// The key pair a refresh under `id` refreshes.
    pub fn refreshing_pair(&self, id: KeyGenId) -> Option<KeyPair> {
        self.refreshing
            .get(&id.set)
            .filter(|session| session.id == id)
            .map(|session| session.pair)
    }

    /// Step 2 of a refresh: checks every other participant's fresh keys are signed by its
    /// registered identity, then our deal for each.
    ///
    /// # Errors
    /// No session under `id`, a key does not parse or is not signed by its holder's identity,
    /// the keys are not every other participant's, or they were sent before with other
    /// contents.
    pub fn deal<R: RngCore + CryptoRng>(
        &mut self,
        id: KeyGenId,
        received: &ParticipantMap,
        keys: &GeneratedKeys,
        rng: &mut R,
    ) -> Result<ParticipantMap, ReshareError> {
        let session = self
            .refreshing
            .get_mut(&id.set)
            .filter(|session| session.id == id)
            .ok_or(ReshareError::UnknownAttempt(id))?;
        let dealt = match (&session.dealing, &session.answered) {
            (Some(dealing), _) => Some((&dealing.keys, &dealing.deals)),
            (None, Some(answered)) => Some((&answered.keys, &answered.dealt)),
            (None, None) => None,
        };
        if let Some((keys_then, deals)) = dealt {
            return if keys_then == received {
                Ok(deals.clone())
            } else {
                Err(ReshareError::ConflictingRepeat(id))
            };
        }
        let mut peers = (Peers::<Ristretto>::new(), Peers::<Secp256k1Curve>::new());
        for (from, blob) in received {
            let participant = frost_participant(*from)?;
            let (fresh_key, signature) =
                blob.split_at_checked(KEY_POINTS_BYTES).ok_or_else(|| {
                    ReshareError::Malformed(format!("participant {from}'s refresh key"))
                })?;
            let message = refresh_key_message(id, &session.pair, &session.shares, fresh_key);
            let holder = identity_of(&session.identities, participant)?;
            if !signed_by(holder, message, signature) {
                return Err(ReshareError::IdentitySignature(*from));
            }
            let fresh = points(fresh_key, 1)?;
            peers.0.insert(participant, fresh.batch[0]);
            peers.1.insert(participant, fresh.network[0]);
        }
        let refresh_id = refresh_session(session);
        let (kept_batch, batch) = share_refresh::deal(
            &keys.batch,
            &refresh_id,
            &session.fresh.batch,
            &peers.0,
            rng,
        )?;
        let (kept_network, network) = share_refresh::deal(
            &keys.network,
            &refresh_id,
            &session.fresh.network,
            &peers.1,
            rng,
        )?;
        let degree = u16::try_from(batch.commitments.len())
            .map_err(|_| ReshareError::Malformed("the deal".into()))?;
        let mut deals = ParticipantMap::new();
        for (to, batch_value) in &batch.masked {
            let network_value = network
                .masked
                .get(to)
                .ok_or_else(|| ReshareError::Malformed("the deal".into()))?;
            let mut blob =
                Vec::with_capacity(KEY_SCALARS_BYTES + 2 + usize::from(degree) * KEY_POINTS_BYTES);
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
        session.dealing = Some(Dealing {
            keys: received.clone(),
            peers,
            kept: (kept_batch, kept_network),
            deals: deals.clone(),
        });
        Ok(deals)
    }

    /// Step 3 of a refresh: our refreshed keys, the digest of their verification shares, and
    /// our identity's signature over it. Nothing is marked answered here: the caller records
    /// the new shares, then calls `mark_refreshed`, so a failed write is simply asked again.
    ///
    /// # Errors
    /// No session under `id` or no deal of ours yet, a deal does not parse or does not fit its
    /// commitments (the session ends: the attempt cannot go on), or the deals were sent
    /// before with other contents.
    pub fn refresh(
        &mut self,
        id: KeyGenId,
        deals: &ParticipantMap,
        keys: &GeneratedKeys,
        identity: &Identity,
    ) -> Result<Refreshed, ReshareError> {
        let session = self
            .refreshing
            .get(&id.set)
            .filter(|session| session.id == id)
            .ok_or(ReshareError::UnknownAttempt(id))?;
        if let Some(answered) = &session.answered {
            return if answered.deals == *deals {
                Ok(Refreshed::Again {
                    digest: answered.digest,
                    signature: answered.signature,
                })
            } else {
                Err(ReshareError::ConflictingRepeat(id))
            };
        }
        let dealing = session
            .dealing
            .as_ref()
            .ok_or(ReshareError::UnknownAttempt(id))?;
        let mut batch = BTreeMap::new();
        let mut network = BTreeMap::new();
        for (from, blob) in deals {
            let mut reader = Reader::new(blob, || format!("participant {from}'s refresh deal"));
            let masked_batch = reader.scalar::<Ristretto>()?;
            let masked_network = reader.scalar::<Secp256k1Curve>()?;
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
        let refresh_id = refresh_session(session);
        let refreshed = share_refresh::apply(
            &keys.batch,
            &refresh_id,
            dealing.kept.0.clone(),
            &session.fresh.batch,
            &dealing.peers.0,
            &batch,
        )
        .and_then(|batch| {
            share_refresh::apply(
                &keys.network,
                &refresh_id,
                dealing.kept.1.clone(),
                &session.fresh.network,
                &dealing.peers.1,
                &network,
            )
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
        let signature = identity.sign(refreshed_message(id, &session.pair, &digest));
        Ok(Refreshed::New {
            keys: refreshed,
            digest,
            signature,
        })
    }

    /// Records that the refresh under `id` answered `digest` and `signature` to `deals`, its
    /// new shares recorded: the same deals again get the same answer.
    pub fn mark_refreshed(
        &mut self,
        id: KeyGenId,
        deals: &ParticipantMap,
        digest: [u8; 32],
        signature: [u8; 64],
    ) {
        if let Some(session) = self.refreshing.get_mut(&id.set).filter(|s| s.id == id) {
            // What was kept of our own polynomial is no longer needed: dropped (zeroized).
            if let Some(dealing) = session.dealing.take() {
                session.answered = Some(Answered {
                    keys: dealing.keys,
                    dealt: dealing.deals,
                    deals: deals.clone(),
                    digest,
                    signature,
                });
            }
        }
    }
}

/// Whether every participant of `keys` signed `refreshed_message(id, pair, digest)` with its
/// registered identity (in `identities`, ours at our index), as `signatures` has it: what a
/// participant checks before it switches to refreshed shares, so that none switches unless all
/// hold them.
///
/// # Errors
/// The identities do not fit, the signatures are not one from each participant, or one does
/// not verify (naming it).
pub fn everyone_refreshed(
    (keys, identity): (&GeneratedKeys, &Identity),
    identities: &[[u8; 32]],
    (id, pair, digest): (KeyGenId, &KeyPair, &[u8; 32]),
    signatures: &ParticipantMap,
) -> Result<(), ReshareError> {
    identities_fit(keys, identities, identity)?;
    let n = keys.network.params().n();
    let expected: Vec<u16> = (1..=n).collect();
    if !signatures.keys().map(|p| p.get()).eq(expected) {
        return Err(ReshareError::Malformed(format!(
            "the confirmation's signatures are from {:?}, not all {n}",
            signatures.keys().map(|p| p.get()).collect::<Vec<_>>()
        )));
    }
    let message = refreshed_message(id, pair, digest);
    for (participant, signature) in signatures {
        let holder = identity_of(identities, frost_participant(*participant)?)?;
        if !signed_by(holder, message, signature) {
            return Err(ReshareError::IdentitySignature(*participant));
        }
    }
    Ok(())
}

/// That `identities` hold one identity per participant of `keys`, ours at our index.
fn identities_fit(
    keys: &GeneratedKeys,
    identities: &[[u8; 32]],
    identity: &Identity,
) -> Result<(), ReshareError> {
    let params = keys.network.params();
    let ours = usize::from(u16::from(params.i())) - 1;
    if identities.len() != usize::from(params.n())
        || identities.get(ours) != Some(&identity.public().serialize())
    {
        return Err(ReshareError::Identities);
    }
    Ok(())
}

/// The registered identity of `participant` (1-based) in `identities`.
fn identity_of(
    identities: &[[u8; 32]],
    participant: FrostParticipant,
) -> Result<&[u8; 32], ReshareError> {
    identities
        .get(usize::from(u16::from(participant)) - 1)
        .ok_or(ReshareError::Identities)
}

/// Whether `signature` is the BIP340 signature of the x-only key `identity` over `message`.
fn signed_by(identity: &[u8; 32], message: [u8; 32], signature: &[u8]) -> bool {
    XOnlyPublicKey::from_slice(identity)
        .ok()
        .zip(schnorr::Signature::from_slice(signature).ok())
        .is_some_and(|(identity, signature)| {
            Secp256k1::verification_only()
                .verify_schnorr(&signature, &Message::from_digest(message), &identity)
                .is_ok()
        })
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
    for m in participants(params.n()) {
        engine.input(keys.original_verification_share(m).to_bytes().as_ref());
    }
}

/// Makes room for a session of `id`'s set: a finished session of the set gives way to any
/// other attempt (a replayed older one then fails its own checks: the shares it names have
/// moved on); one in progress only to a later attempt. A new set beyond the bound takes the
/// place of a finished session, or is refused.
fn admit<S>(
    sessions: &mut HashMap<ValidatorSet, S>,
    id: KeyGenId,
    id_of: impl Fn(&S) -> KeyGenId,
    finished: impl Fn(&S) -> bool,
) -> Result<(), ReshareError> {
    if let Some(session) = sessions.get(&id.set) {
        let started = id_of(session).attempt;
        return if id.attempt <= started && !finished(session) {
            Err(ReshareError::StaleAttempt {
                id,
                started: started.0,
            })
        } else {
            Ok(())
        };
    }
    if sessions.len() >= MAX_RESHARE_SESSIONS {
        let done = sessions
            .iter()
            .find(|(_, session)| finished(session))
            .map(|(set, _)| *set);
        match done {
            Some(set) => {
                sessions.remove(&set);
            }
            None => return Err(ReshareError::TooManySessions(sessions.len())),
        }
    }
    Ok(())
}

/// That the repair's set is of a shape the protocol accepts (`t` = the helpers, `n` = the
/// participants), so that a repaired enclave never holds a key it would not have generated.
fn shape(repair: &ShareRepair) -> Result<(), ReshareError> {
    let t = u16::try_from(repair.helpers.len())
        .map_err(|_| ReshareError::Shape("too many helpers".into()))?;
    let params = ThresholdParams::new(t, repair.participants, repair.repaired)
        .map_err(|error| ReshareError::Shape(error.to_string()))?;
    accepts_set_shape(params).map_err(|error| ReshareError::Shape(error.to_string()))
}

/// The 32 bytes every mask of a repair is bound to: its attestation message, which names the
/// set, the attempt, the pair, who is repaired, by whom, and the fresh keys.
fn repair_session(id: KeyGenId, repair: &ShareRepair, fresh_key: &[u8]) -> [u8; 32] {
    let mut engine = sha256::HashEngine::default();
    engine.input(b"serai-processor/share-repair-session/v1");
    engine.input(&repair_attestation_message(id, repair, fresh_key));
    sha256::Hash::from_engine(engine).to_byte_array()
}

/// The 32 bytes every mask of a refresh is bound to: its attestation message, which names the
/// verification shares it refreshes and every participant's identity.
fn refresh_session(session: &Refreshing) -> [u8; 32] {
    let mut engine = sha256::HashEngine::default();
    engine.input(b"serai-processor/share-refresh-session/v1");
    engine.input(&refresh_attestation_message(
        session.id,
        &session.pair,
        &session.shares,
        &session.identities,
    ));
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
    network: Vec<<Secp256k1Curve as Ciphersuite>::G>,
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
        if self.bytes.len() < usize::from(count) * KEY_POINTS_BYTES {
            return Err(self.malformed());
        }
        let batch = (0..count)
            .map(|_| self.point::<Ristretto>())
            .collect::<Result<_, _>>()?;
        let network = (0..count)
            .map(|_| self.point::<Secp256k1Curve>())
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
