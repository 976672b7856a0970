//! The enclave's request handling, one method per `Signer` call, on decoded requests: key
//! generation that seals and records completed keys before reporting them, confirmation that
//! makes a key pair usable, acknowledgements checked against the coordinator key, and signing
//! that persists every approval before a preprocess leaves. The RPC adapter (`rpc`) only
//! decodes and encodes around these methods.
//!
//! Every refusal is a `Refused` with the `RefusalReason` the scanner sees, logged and counted
//! in `signer_enclave_refusals_total{reason}`.

use std::time::Instant;

use bitcoin::{
    consensus,
    hashes::{sha256, Hash},
    key::XOnlyPublicKey,
};
use ciphersuite::group::GroupEncoding;
use rand_core::OsRng;
use schema::{
    batch::{Batch, SignedBatch},
    error::DecodeError,
    generated::signer_capnp::RefusalReason,
    ids::{Attempt, KeyGenId, NetworkId, ValidatorSet},
    keys::{BatchKey, KeyPair, NetworkKey},
    messages::{
        coordinator::{Attestation, PlansAcknowledged},
        key_gen::{
            self, refresh_attestation_message, refresh_confirm_message, refreshed_message,
            repair_attestation_message,
        },
        ParticipantMap,
    },
    plan::Plan,
    protocol::{accepts_set_shape, FeeCaps},
    refusal::label,
    sign_id::{BatchSignId, PlanSignId},
};
use thiserror::Error;

use crate::{
    audit::{Entry, Event},
    batch_signing::BatchSigning,
    custody::Seal,
    db::{DbError, EnclaveDb, KeyStatus, PendingRefresh},
    identity::{Identity, IdentityError},
    key_gen::{GeneratedKeys, KeyGen, KeyGenError},
    key_store::{self, KeyStoreError, SealedKeys},
    metrics::Metrics,
    plan_signing::{PlanSigning, SigningError},
    policy::{self, Decision, Refusal},
    resharing::{everyone_refreshed, verification_digest, Refreshed, ReshareError, Resharing},
};

/// The one network this enclave signs for.
pub const NETWORK: NetworkId = NetworkId::Bitcoin;

/// A refused request: the reason code the caller sees and a detail for its logs (never secret).
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("refused ({}): {detail}", label(*reason))]
pub struct Refused {
    /// The reason code.
    pub reason: RefusalReason,
    /// What exactly was wrong.
    pub detail: String,
}

impl Refused {
    fn new(reason: RefusalReason, detail: impl Into<String>) -> Self {
        Refused {
            reason,
            detail: detail.into(),
        }
    }
}

/// The enclave cannot start.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StartError {
    /// `provision` was never run on this database.
    #[error("no coordinator key recorded: run `signer-enclave provision` first")]
    NotProvisioned,
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// A confirmed key pair could not be unsealed.
    #[error("confirmed key pair cannot be unsealed: {0}")]
    Keys(#[from] KeyStoreError),
    /// Unsealed keys are not the pair recorded.
    #[error("unsealed keys do not match their recorded key pair")]
    KeysDiffer,
    /// The enclave's identity cannot be made or unsealed.
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

/// What `status` reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// Confirmed key pairs, ready to sign.
    pub keys: Vec<KeyPair>,
    /// Key generations in progress.
    pub pending_key_gens: u32,
    /// Plan ids acknowledged so far.
    pub acknowledged_plans: u64,
}

/// A confirmed key pair, unsealed.
struct Active {
    pair: KeyPair,
    keys: GeneratedKeys,
}

/// Everything the enclave holds while it runs.
pub struct Enclave {
    db: EnclaveDb,
    custody: Box<dyn Seal>,
    coordinator: XOnlyPublicKey,
    metrics: Metrics,
    key_gen: KeyGen,
    resharing: Resharing,
    identity: Identity,
    active: Vec<Active>,
    plans: PlanSigning,
    batches: BatchSigning,
    /// Evictions already counted in the metrics: (plan, batch).
    evictions_counted: (u64, u64),
}

impl Enclave {
    /// Opens a provisioned enclave: reads the coordinator key and unseals every confirmed key
    /// pair, checking each share against its verification share and the recorded group keys.
    ///
    /// # Errors
    /// Not provisioned, or a confirmed key pair cannot be restored.
    pub fn open(
        db: EnclaveDb,
        custody: Box<dyn Seal>,
        metrics: Metrics,
    ) -> Result<Self, StartError> {
        let coordinator = db.coordinator_key()?.ok_or(StartError::NotProvisioned)?;
        let identity = Identity::load_or_create(&db, custody.as_ref(), &mut OsRng)?;
        let mut enclave = Enclave {
            db,
            custody,
            coordinator,
            metrics,
            key_gen: KeyGen::default(),
            resharing: Resharing::default(),
            identity,
            active: Vec::new(),
            plans: PlanSigning::default(),
            batches: BatchSigning::default(),
            evictions_counted: (0, 0),
        };
        for record in enclave.db.key_records()? {
            if record.status == KeyStatus::Confirmed {
                let keys = enclave.unseal(&record.sealed)?;
                enclave.activate(record.pair, keys)?;
            }
        }
        enclave.observe_pending_refreshes();
        Ok(enclave)
    }

    /// The confirmed keys, key generations in progress and acknowledged plan count.
    ///
    /// # Errors
    /// The database cannot be read.
    pub fn status(&self) -> Result<Status, Refused> {
        let acknowledged_plans = self
            .db
            .acknowledged_count()
            .map_err(|error| self.refused(RefusalReason::HistoryUnavailable, error.to_string()))?;
        Ok(Status {
            keys: self.active.iter().map(|active| active.pair).collect(),
            pending_key_gens: u32::try_from(self.key_gen.in_progress()).unwrap_or(u32::MAX),
            acknowledged_plans,
        })
    }

    /// Handles one key generation message. A completed key pair is sealed and recorded before
    /// `GeneratedKeyPair` is returned, so what the coordinator hears of exists at rest.
    ///
    /// # Errors
    /// The message is for another network or an attempt not in progress, or sealing failed.
    pub fn key_gen(
        &mut self,
        message: key_gen::CoordinatorMessage,
    ) -> Result<Vec<key_gen::ProcessorMessage>, Refused> {
        let set = message.id().set;
        if set.network != NETWORK {
            return Err(self.refused(
                RefusalReason::WrongNetwork,
                format!("this enclave signs for {NETWORK:?}, not {:?}", set.network),
            ));
        }
        match message {
            key_gen::CoordinatorMessage::GenerateKey { .. }
            | key_gen::CoordinatorMessage::Commitments { .. }
            | key_gen::CoordinatorMessage::Shares { .. } => self.generate(message),
            reshare => self.reshare(reshare).map(|message| vec![message]),
        }
    }

    /// One message of a key generation.
    fn generate(
        &mut self,
        message: key_gen::CoordinatorMessage,
    ) -> Result<Vec<key_gen::ProcessorMessage>, Refused> {
        let set = message.id().set;
        if let key_gen::CoordinatorMessage::GenerateKey { params, .. } = &message {
            if let Err(error) = accepts_set_shape(*params) {
                return Err(self.refused(RefusalReason::SetShapeRefused, error.to_string()));
            }
        }
        let (messages, keys) = self.key_gen.handle(message, &mut OsRng).map_err(|error| {
            let reason = match error {
                KeyGenError::UnknownAttempt(_) | KeyGenError::WrongRound(_) => {
                    RefusalReason::UnknownAttempt
                }
                KeyGenError::StaleAttempt { .. } => RefusalReason::StaleAttempt,
                KeyGenError::TooManySessions(_) => RefusalReason::TooManySessions,
                _ => RefusalReason::Malformed,
            };
            self.refused(reason, error.to_string())
        })?;
        if messages
            .iter()
            .any(|m| matches!(m, key_gen::ProcessorMessage::Blame { .. }))
        {
            self.metrics.dkg_runs.with_label_values(&["blamed"]).inc();
        }
        if let Some(keys) = keys {
            self.record_generated(set, &keys)?;
            self.metrics
                .dkg_runs
                .with_label_values(&["completed"])
                .inc();
        }
        self.observe_sessions();
        Ok(messages)
    }

    /// One message of a share repair or refresh (see `resharing`). Every session begins under
    /// the coordinator's attestation (a helper's `RepairHelp`, everyone's `RefreshBegin`), its
    /// later steps belong to that session, and the steps that install shares are attested
    /// again; new shares are sealed and recorded before they are reported, and a refresh's
    /// replace the old only on an attested confirmation carrying every participant's identity
    /// signature that it holds the same.
    fn reshare(
        &mut self,
        message: key_gen::CoordinatorMessage,
    ) -> Result<key_gen::ProcessorMessage, Refused> {
        use key_gen::{CoordinatorMessage as In, ProcessorMessage as Out};
        let (step, out) = match message {
            In::RepairBegin { id, repair } => {
                // A share of the named sharing is not replaced; one of another (a refresh this
                // enclave missed) is what a repair is for.
                let held = active_keys(&self.active, &repair.pair).map(verification_digest);
                if held == Some(repair.shares) {
                    return Err(self.refused(
                        RefusalReason::ReshareFailed,
                        "this enclave holds its share of the pair: nothing to repair",
                    ));
                }
                let (fresh_key, signature) = self
                    .resharing
                    .begin_repair(id, repair, &self.identity, &mut OsRng)
                    .map_err(|error| self.reshare_refused(&error))?;
                (
                    "repair_begin",
                    Out::RepairKey {
                        id,
                        fresh_key,
                        signature,
                    },
                )
            }
            In::RepairHelp {
                id,
                repair,
                fresh_key,
                fresh_key_signature,
                attestation,
            } => {
                let message = repair_attestation_message(id, &repair, &fresh_key);
                self.attested(message, &attestation)?;
                let keys =
                    active_keys(&self.active, &repair.pair).ok_or_else(|| self.unknown_pair())?;
                let parts = self
                    .resharing
                    .help(
                        id,
                        &repair,
                        &fresh_key,
                        &fresh_key_signature,
                        keys,
                        &mut OsRng,
                    )
                    .map_err(|error| self.reshare_refused(&error))?;
                ("repair_help", Out::RepairParts { id, parts })
            }
            In::RepairParts { id, parts } => {
                let pair = self
                    .resharing
                    .helping_pair(id)
                    .ok_or_else(|| self.reshare_refused(&ReshareError::UnknownAttempt(id)))?;
                let keys = active_keys(&self.active, &pair).ok_or_else(|| self.unknown_pair())?;
                let answer = self
                    .resharing
                    .gather(id, &parts, keys)
                    .map_err(|error| self.reshare_refused(&error))?;
                ("repair_answer", Out::RepairAnswer { id, answer })
            }
            In::RepairAnswers {
                id,
                answers,
                attestation,
            } => {
                if let Some(pair) = self.resharing.repaired(id) {
                    // Asked again once done (the answer was lost): the same answer.
                    return Ok(Out::Repaired { id, pair });
                }
                let (repair, fresh_key) = self
                    .resharing
                    .own_repair(id)
                    .map(|(repair, key)| (repair.clone(), key.to_vec()))
                    .ok_or_else(|| self.reshare_refused(&ReshareError::UnknownAttempt(id)))?;
                self.attested(
                    repair_attestation_message(id, &repair, &fresh_key),
                    &attestation,
                )?;
                let keys = self
                    .resharing
                    .recover(id, &answers)
                    .map_err(|error| self.reshare_refused(&error))?;
                let pair = repair.pair;
                if pair_of(&keys) != Some(pair) {
                    return Err(self.refused(
                        RefusalReason::ReshareFailed,
                        StartError::KeysDiffer.to_string(),
                    ));
                }
                let sealed = self.seal(&keys)?;
                self.db
                    .record_repaired(id.set, pair, sealed)
                    .map_err(|error| self.history_refused(&error))?;
                self.replace(pair, keys);
                self.resharing.mark_repaired(id, pair);
                ("repaired", Out::Repaired { id, pair })
            }
            In::RefreshBegin {
                id,
                pair,
                shares,
                identities,
                attestation,
            } => {
                let message = refresh_attestation_message(id, &pair, &shares, &identities);
                self.attested(message, &attestation)?;
                // A refresh pending from this attempt or a later one stays: its deal reached
                // the others, and a replayed older attempt must not overwrite it.
                let pending = self
                    .db
                    .pending_refresh(id.set, &pair)
                    .map_err(|error| self.history_refused(&error))?;
                if let Some(pending) = pending.filter(|p| p.attempt >= id.attempt.0) {
                    return Err(self.reshare_refused(&ReshareError::StaleAttempt {
                        id,
                        started: pending.attempt,
                    }));
                }
                let keys = active_keys(&self.active, &pair).ok_or_else(|| self.unknown_pair())?;
                let key = self
                    .resharing
                    .begin_refresh(
                        id,
                        (pair, shares),
                        &identities,
                        (keys, &self.identity),
                        &mut OsRng,
                    )
                    .map_err(|error| self.reshare_refused(&error))?;
                ("refresh_key", Out::RefreshKey { id, key })
            }
            In::RefreshKeys { id, keys: received } => {
                let pair = self
                    .resharing
                    .refreshing_pair(id)
                    .ok_or_else(|| self.reshare_refused(&ReshareError::UnknownAttempt(id)))?;
                let keys = active_keys(&self.active, &pair).ok_or_else(|| self.unknown_pair())?;
                let deals = self
                    .resharing
                    .deal(id, &received, keys, &mut OsRng)
                    .map_err(|error| self.reshare_refused(&error))?;
                ("refresh_deal", Out::RefreshDeal { id, deals })
            }
            In::RefreshDeals { id, deals } => {
                let (pair, digest, signature) = self.refreshed(id, &deals)?;
                (
                    "refreshed",
                    Out::Refreshed {
                        id,
                        pair,
                        digest,
                        signature,
                    },
                )
            }
            In::RefreshConfirm {
                id,
                pair,
                digest,
                signatures,
                identities,
                attestation,
            } => {
                let message = refresh_confirm_message(id, &pair, &digest, &identities);
                self.attested(message, &attestation)?;
                let epoch = self.confirm_refresh(id, (pair, digest), &identities, &signatures)?;
                (
                    "refresh_confirmed",
                    Out::RefreshConfirmed { id, pair, epoch },
                )
            }
            In::GenerateKey { id, .. } | In::Commitments { id, .. } | In::Shares { id, .. } => {
                return Err(self.reshare_refused(&ReshareError::UnknownAttempt(id)));
            }
        };
        self.metrics.reshare_steps.with_label_values(&[step]).inc();
        self.observe_sessions();
        self.observe_pending_refreshes();
        Ok(out)
    }

    /// The refreshed shares of the refresh under `id`, from the others' deals: sealed and
    /// recorded as pending before the answer leaves. Without a session (the enclave restarted
    /// after recording them) the pending refresh of that attempt answers.
    fn refreshed(
        &mut self,
        id: KeyGenId,
        deals: &ParticipantMap,
    ) -> Result<(KeyPair, [u8; 32], [u8; 64]), Refused> {
        let Some(pair) = self.resharing.refreshing_pair(id) else {
            let pending = self
                .db
                .pending_refreshes()
                .map_err(|error| self.history_refused(&error))?
                .into_iter()
                .find(|(record, pending)| record.set == id.set && pending.attempt == id.attempt.0);
            let (record, pending) =
                pending.ok_or_else(|| self.reshare_refused(&ReshareError::UnknownAttempt(id)))?;
            let signature =
                self.identity
                    .sign(refreshed_message(id, &record.pair, &pending.digest));
            return Ok((record.pair, pending.digest, signature));
        };
        let keys = active_keys(&self.active, &pair).ok_or_else(|| self.unknown_pair())?;
        let refreshed = self
            .resharing
            .refresh(id, deals, keys, &self.identity)
            .map_err(|error| self.reshare_refused(&error))?;
        match refreshed {
            Refreshed::New {
                keys,
                digest,
                signature,
            } => {
                let pending = PendingRefresh {
                    attempt: id.attempt.0,
                    digest,
                    sealed: self.seal(&keys)?,
                };
                self.db
                    .record_refresh(id.set, &pair, &pending)
                    .map_err(|error| self.history_refused(&error))?;
                self.resharing.mark_refreshed(id, deals, digest, signature);
                Ok((pair, digest, signature))
            }
            Refreshed::Again { digest, signature } => Ok((pair, digest, signature)),
        }
    }

    /// Switches `pair` to the refreshed shares of `digest`, pending from attempt `id`, once
    /// every participant's identity signed that it holds them; returns the epoch. Confirming
    /// the shares already in use again changes nothing.
    fn confirm_refresh(
        &mut self,
        id: KeyGenId,
        (pair, digest): (KeyPair, [u8; 32]),
        identities: &[[u8; 32]],
        signatures: &ParticipantMap,
    ) -> Result<u32, Refused> {
        let current = active_keys(&self.active, &pair).ok_or_else(|| self.unknown_pair())?;
        if verification_digest(current) == digest {
            return self
                .db
                .generated(id.set, &pair)
                .map(|record| record.epoch)
                .map_err(|error| self.history_refused(&error));
        }
        everyone_refreshed(
            (current, &self.identity),
            identities,
            (id, &pair, &digest),
            signatures,
        )
        .map_err(|error| self.reshare_refused(&error))?;
        let pending = self
            .db
            .pending_refresh(id.set, &pair)
            .map_err(|error| self.history_refused(&error))?
            .filter(|pending| pending.attempt == id.attempt.0 && pending.digest == digest)
            .ok_or_else(|| {
                self.refused(
                    RefusalReason::UnknownAttempt,
                    format!("no refresh of {id:?} is pending with these verification shares"),
                )
            })?;
        let keys = self
            .unseal(&pending.sealed)
            .map_err(|error| self.refused(RefusalReason::CustodyUnavailable, error.to_string()))?;
        if pair_of(&keys) != Some(pair) || verification_digest(&keys) != digest {
            // Never a passing fault: the pending record is not what was refreshed.
            return Err(self.refused(
                RefusalReason::ReshareFailed,
                StartError::KeysDiffer.to_string(),
            ));
        }
        let epoch = self
            .db
            .confirm_refresh(id.set, &pair, &pending)
            .map_err(|error| self.history_refused(&error))?;
        self.replace(pair, keys);
        Ok(epoch)
    }

    /// Makes a generated key pair the one signing for its set.
    ///
    /// # Errors
    /// No key pair of the set was generated here (`NotInSet`: a set this validator is not in),
    /// the set's generated pairs do not include `pair` (`UnknownKey`), or it cannot be unsealed.
    ///
    /// The pair is recorded as confirmed only once its shares were unsealed and checked, so an
    /// HSM that fails here leaves it generated, and the same confirmation succeeds later.
    pub fn confirm_key_pair(&mut self, set: ValidatorSet, pair: KeyPair) -> Result<(), Refused> {
        let history = |enclave: &Self, error: DbError| match error {
            DbError::NoSuchKeyPair => match enclave.db.in_set(set) {
                Ok(false) => enclave.refused(
                    RefusalReason::NotInSet,
                    "no key pair of the set was generated here",
                ),
                Ok(true) => enclave.refused(RefusalReason::UnknownKey, error.to_string()),
                Err(error) => enclave.refused(RefusalReason::HistoryUnavailable, error.to_string()),
            },
            _ => enclave.refused(RefusalReason::HistoryUnavailable, error.to_string()),
        };
        let record = self
            .db
            .generated(set, &pair)
            .map_err(|error| history(self, error))?;
        if self.active.iter().any(|active| active.pair == pair) {
            return self
                .db
                .confirm(set, &pair)
                .map(|_| ())
                .map_err(|error| history(self, error));
        }
        let keys = self
            .unseal(&record.sealed)
            .map_err(|error| self.refused(RefusalReason::CustodyUnavailable, error.to_string()))?;
        if pair_of(&keys) != Some(pair) {
            return Err(self.refused(
                RefusalReason::CustodyUnavailable,
                StartError::KeysDiffer.to_string(),
            ));
        }
        self.db
            .confirm(set, &pair)
            .map_err(|error| history(self, error))?;
        self.activate(pair, keys)
            .map_err(|error| self.refused(RefusalReason::CustodyUnavailable, error.to_string()))
    }

    /// Records an acknowledgement whose attestation verifies under the coordinator key, for a
    /// key this enclave holds.
    ///
    /// # Errors
    /// The attestation does not verify, the key is not ours, or the database failed.
    pub fn acknowledge_plans(&mut self, acknowledged: &PlansAcknowledged) -> Result<(), Refused> {
        if let Decision::Refuse(refusal) =
            policy::acknowledgement(acknowledged, NETWORK, &self.coordinator)
        {
            return Err(self.policy_refused(refusal));
        }
        self.network_keys(&acknowledged.key)?;
        self.db
            .record_acknowledgement(acknowledged)
            .map_err(|error| self.refused(RefusalReason::HistoryUnavailable, error.to_string()))
    }

    /// Preprocesses a plan signing attempt, if the policy approves; the approval is durable
    /// before the preprocess is returned.
    ///
    /// # Errors
    /// The policy refuses, the key is not ours, or the approval cannot be recorded.
    pub fn preprocess_plan(&mut self, id: PlanSignId, plan: &Plan) -> Result<Vec<u8>, Refused> {
        self.network_keys(&id.key)?;
        let approval = match policy::plan_preprocess(&self.db, FeeCaps::PROTOCOL, &id, plan) {
            Decision::Approve(approval) => approval,
            // The plan hashed to its id before this refusal: the same plan, asked again.
            Decision::Refuse(Refusal::AttemptAlreadyPreprocessed) => {
                return self
                    .plans
                    .preprocessed(&id)
                    .ok_or_else(|| self.policy_refused(Refusal::AttemptAlreadyPreprocessed));
            }
            Decision::Refuse(refusal) => return Err(self.policy_refused(refusal)),
        };
        self.db
            .record_plan_approval(&approval)
            .map_err(|error| self.refused(RefusalReason::HistoryUnavailable, error.to_string()))?;
        let keys = self.network_keys(&id.key)?.network.clone();
        let preprocess = self
            .plans
            .preprocess(approval, plan, &keys, &mut OsRng)
            .map_err(|error| self.signing_refused(&error))?;
        self.round("plan", "preprocess");
        self.observe_sessions();
        Ok(preprocess)
    }

    /// Signs a preprocessed plan attempt's sighashes, given the other signers' preprocesses.
    ///
    /// # Errors
    /// No such attempt at this step, or a participant's preprocess is invalid.
    pub fn share_plan(
        &mut self,
        id: &PlanSignId,
        preprocesses: &ParticipantMap,
    ) -> Result<Vec<u8>, Refused> {
        let share = self
            .plans
            .share(id, preprocesses)
            .map_err(|error| self.signing_refused(&error))?;
        self.audit_release(
            Event::PlanShared,
            id.id.as_bytes(),
            id.attempt,
            &id.key.to_bytes(),
            String::new(),
        )?;
        self.round("plan", "share");
        Ok(share)
    }

    /// Aggregates the other signers' shares into the signed transaction (consensus bytes),
    /// every signature verified first.
    ///
    /// # Errors
    /// No such attempt at this step, or the shares do not make valid signatures.
    pub fn complete_plan(
        &mut self,
        id: &PlanSignId,
        shares: &ParticipantMap,
    ) -> Result<Vec<u8>, Refused> {
        let transaction = self
            .plans
            .complete(id, shares)
            .map_err(|error| self.signing_refused(&error))?;
        self.audit_release(
            Event::PlanSigned,
            id.id.as_bytes(),
            id.attempt,
            &id.key.to_bytes(),
            format!("txid {}", transaction.compute_txid()),
        )?;
        self.round("plan", "complete");
        Ok(consensus::serialize(&transaction))
    }

    /// Preprocesses a batch signing attempt, if the policy approves; the approval is durable
    /// before the preprocess is returned.
    ///
    /// # Errors
    /// The policy refuses, the key is not ours, or the approval cannot be recorded.
    pub fn preprocess_batch(&mut self, id: BatchSignId, batch: Batch) -> Result<Vec<u8>, Refused> {
        self.batch_keys(&id.key)?;
        let approval = match policy::batch_preprocess(&self.db, NETWORK, &id, &batch) {
            Decision::Approve(approval) => approval,
            Decision::Refuse(Refusal::AttemptAlreadyPreprocessed) => {
                return self
                    .batches
                    .preprocessed(&id, &batch)
                    .ok_or_else(|| self.policy_refused(Refusal::AttemptAlreadyPreprocessed));
            }
            Decision::Refuse(refusal) => return Err(self.policy_refused(refusal)),
        };
        self.db
            .record_batch_approval(&approval)
            .map_err(|error| self.refused(RefusalReason::HistoryUnavailable, error.to_string()))?;
        let keys = self.batch_keys(&id.key)?.batch.clone();
        let preprocess = self
            .batches
            .preprocess(&approval, batch, &keys, &mut OsRng)
            .map_err(|error| self.signing_refused(&error))?;
        self.round("batch", "preprocess");
        self.observe_sessions();
        Ok(preprocess)
    }

    /// Signs a preprocessed batch attempt, given the other signers' preprocesses.
    ///
    /// # Errors
    /// No such attempt at this step, or a participant's preprocess is invalid.
    pub fn share_batch(
        &mut self,
        id: &BatchSignId,
        preprocesses: &ParticipantMap,
    ) -> Result<Vec<u8>, Refused> {
        let share = self
            .batches
            .share(id, preprocesses)
            .map_err(|error| self.signing_refused(&error))?;
        self.audit_release(
            Event::BatchShared,
            &id.id.batch.0.to_le_bytes(),
            id.attempt,
            id.key.as_bytes(),
            String::new(),
        )?;
        self.round("batch", "share");
        Ok(share)
    }

    /// Aggregates the other signers' shares into the signed Batch, verified first.
    ///
    /// # Errors
    /// No such attempt at this step, or the shares do not make a valid signature.
    pub fn complete_batch(
        &mut self,
        id: &BatchSignId,
        shares: &ParticipantMap,
    ) -> Result<SignedBatch, Refused> {
        let signed = self
            .batches
            .complete(id, shares)
            .map_err(|error| self.signing_refused(&error))?;
        self.audit_release(
            Event::BatchSigned,
            &id.id.batch.0.to_le_bytes(),
            id.attempt,
            id.key.as_bytes(),
            String::new(),
        )?;
        self.round("batch", "complete");
        Ok(signed)
    }

    /// Takes a Batch Serai included, as the coordinator attests: the window of new Batch ids
    /// moves past it, so that Batches this enclave did not sign (another subset signed them,
    /// or junk from a compromised scanner held their ids here) stop holding the window back.
    /// One at or below the last one included changes nothing (and writes nothing).
    ///
    /// # Errors
    /// Another network's Batch, an attestation that does not verify, or the database failed.
    pub fn batch_included(
        &mut self,
        signed: &SignedBatch,
        attestation: &Attestation,
    ) -> Result<(), Refused> {
        let batch = &signed.batch;
        if let Decision::Refuse(refusal) =
            policy::inclusion(batch, attestation, NETWORK, &self.coordinator)
        {
            return Err(self.policy_refused(refusal));
        }
        let floor = self
            .db
            .batch_floor_id(batch.network)
            .map_err(|error| self.refused(RefusalReason::HistoryUnavailable, error.to_string()))?;
        if batch.id < floor {
            return Ok(());
        }
        self.db
            .record_batch_included(
                batch.network,
                batch.id,
                Entry {
                    event: Event::BatchIncluded,
                    subject: batch.id.0.to_le_bytes().to_vec(),
                    attempt: 0,
                    key: Vec::new(),
                    detail: format!("message {}", sha256::Hash::hash(&batch.message())),
                },
            )
            .map_err(|error| self.refused(RefusalReason::HistoryUnavailable, error.to_string()))
    }

    fn record_generated(&mut self, set: ValidatorSet, keys: &GeneratedKeys) -> Result<(), Refused> {
        let pair = pair_of(keys).ok_or_else(|| {
            self.refused(RefusalReason::Malformed, "generated keys do not encode")
        })?;
        let sealed = self.seal(keys)?;
        self.db
            .record_generated(set, pair, sealed)
            .map_err(|error| match error {
                DbError::TooManyPairs => {
                    self.refused(RefusalReason::TooManySessions, error.to_string())
                }
                _ => self.refused(RefusalReason::HistoryUnavailable, error.to_string()),
            })
    }

    fn seal(&self, keys: &GeneratedKeys) -> Result<SealedKeys, Refused> {
        let started = Instant::now();
        let sealed = key_store::seal(self.custody.as_ref(), keys);
        self.hsm("seal", started, sealed.is_ok());
        sealed.map_err(|error| self.refused(RefusalReason::CustodyUnavailable, error.to_string()))
    }

    /// Makes `keys` the shares `pair` signs with, in place of any held.
    fn replace(&mut self, pair: KeyPair, keys: GeneratedKeys) {
        match self.active.iter_mut().find(|active| active.pair == pair) {
            Some(active) => active.keys = keys,
            None => {
                self.active.push(Active { pair, keys });
                self.metrics
                    .confirmed_keys
                    .set(i64::try_from(self.active.len()).unwrap_or(i64::MAX));
            }
        }
    }

    fn attested(&self, digest: [u8; 32], attestation: &Attestation) -> Result<(), Refused> {
        match policy::attested(digest, attestation, &self.coordinator) {
            Decision::Approve(()) => Ok(()),
            Decision::Refuse(refusal) => Err(self.policy_refused(refusal)),
        }
    }

    fn unknown_pair(&self) -> Refused {
        self.refused(RefusalReason::UnknownKey, "no confirmed key pair matches")
    }

    fn history_refused(&self, error: &DbError) -> Refused {
        match error {
            DbError::NoSuchKeyPair => self.refused(RefusalReason::UnknownKey, error.to_string()),
            _ => self.refused(RefusalReason::HistoryUnavailable, error.to_string()),
        }
    }

    fn reshare_refused(&self, error: &ReshareError) -> Refused {
        let reason = match error {
            ReshareError::UnknownAttempt(_) => RefusalReason::UnknownAttempt,
            ReshareError::StaleAttempt { .. } => RefusalReason::StaleAttempt,
            ReshareError::TooManySessions(_) => RefusalReason::TooManySessions,
            ReshareError::ConflictingRepeat(_) => RefusalReason::ConflictingRepeat,
            ReshareError::Malformed(_) => RefusalReason::Malformed,
            _ => RefusalReason::ReshareFailed,
        };
        self.refused(reason, error.to_string())
    }

    fn unseal(&self, sealed: &SealedKeys) -> Result<GeneratedKeys, KeyStoreError> {
        let started = Instant::now();
        let keys = key_store::unseal(self.custody.as_ref(), sealed);
        self.hsm("unseal", started, keys.is_ok());
        keys
    }

    fn activate(&mut self, pair: KeyPair, keys: GeneratedKeys) -> Result<(), StartError> {
        if pair_of(&keys) != Some(pair) {
            return Err(StartError::KeysDiffer);
        }
        self.active.push(Active { pair, keys });
        self.metrics
            .confirmed_keys
            .set(i64::try_from(self.active.len()).unwrap_or(i64::MAX));
        Ok(())
    }

    fn network_keys(&self, key: &NetworkKey) -> Result<&GeneratedKeys, Refused> {
        self.active
            .iter()
            .find(|active| active.pair.network_key == *key)
            .map(|active| &active.keys)
            .ok_or_else(|| self.refused(RefusalReason::UnknownKey, "no confirmed network key"))
    }

    fn batch_keys(&self, key: &BatchKey) -> Result<&GeneratedKeys, Refused> {
        self.active
            .iter()
            .find(|active| active.pair.batch_key == *key)
            .map(|active| &active.keys)
            .ok_or_else(|| self.refused(RefusalReason::UnknownKey, "no confirmed batch key"))
    }

    /// Sets the pending-refreshes gauge from the database (left as it was if it cannot be
    /// read: the read's error is the database's alert).
    fn observe_pending_refreshes(&self) {
        match self.db.pending_refreshes() {
            Ok(pending) => {
                self.metrics
                    .refreshes_pending
                    .set(i64::try_from(pending.len()).unwrap_or(i64::MAX));
            }
            Err(error) => tracing::error!(%error, "pending refreshes cannot be read"),
        }
    }

    /// Sets the open-sessions gauges and counts evictions since the last look.
    fn observe_sessions(&mut self) {
        let open = &self.metrics.open_sessions;
        open.with_label_values(&["plan"])
            .set(i64::try_from(self.plans.open()).unwrap_or(i64::MAX));
        open.with_label_values(&["batch"])
            .set(i64::try_from(self.batches.open()).unwrap_or(i64::MAX));
        open.with_label_values(&["key_gen"])
            .set(i64::try_from(self.key_gen.in_progress()).unwrap_or(i64::MAX));
        open.with_label_values(&["reshare"])
            .set(i64::try_from(self.resharing.in_progress()).unwrap_or(i64::MAX));
        let evicted = (self.plans.evicted(), self.batches.evicted());
        let evictions = &self.metrics.sessions_evicted;
        evictions
            .with_label_values(&["plan"])
            .inc_by(evicted.0.saturating_sub(self.evictions_counted.0));
        evictions
            .with_label_values(&["batch"])
            .inc_by(evicted.1.saturating_sub(self.evictions_counted.1));
        self.evictions_counted = evicted;
    }

    fn round(&self, kind: &str, step: &str) {
        self.metrics
            .signing_rounds
            .with_label_values(&[kind, step])
            .inc();
    }

    fn hsm(&self, operation: &str, started: Instant, ok: bool) {
        self.metrics
            .hsm_seconds
            .with_label_values(&[operation])
            .observe(started.elapsed().as_secs_f64());
        if !ok {
            self.metrics
                .hsm_errors
                .with_label_values(&[operation])
                .inc();
        }
    }

    /// Refuses a request that did not decode: logged and counted like every refusal.
    pub fn malformed(&self, error: &DecodeError) -> Refused {
        self.refused(RefusalReason::Malformed, error.to_string())
    }

    /// Records a share or signature in the audit trail, synced, before it leaves; refuses (and
    /// nothing leaves) when it cannot be recorded.
    fn audit_release(
        &self,
        event: Event,
        subject: &[u8],
        attempt: Attempt,
        key: &[u8],
        detail: String,
    ) -> Result<(), Refused> {
        let entry = Entry {
            event,
            subject: subject.to_vec(),
            attempt: attempt.0,
            key: key.to_vec(),
            detail,
        };
        self.db
            .audit(entry, true)
            .map_err(|error| self.refused(RefusalReason::HistoryUnavailable, error.to_string()))
    }

    /// Logs, counts and records a refusal in the audit trail.
    fn refused(&self, reason: RefusalReason, detail: impl Into<String>) -> Refused {
        let refused = Refused::new(reason, detail);
        let mut entry = Entry::new(Event::Refused, Vec::new());
        entry.detail = format!("{}: {}", label(reason), refused.detail);
        if let Err(error) = self.db.audit(entry, false) {
            tracing::error!(%error, "a refusal could not be recorded in the audit trail");
        }
        tracing::warn!(reason = label(reason), detail = %refused.detail, "refused");
        self.metrics
            .refusals
            .with_label_values(&[label(reason)])
            .inc();
        refused
    }

    fn policy_refused(&self, refusal: Refusal) -> Refused {
        let reason = match &refusal {
            Refusal::AttestationInvalid => RefusalReason::AttestationInvalid,
            Refusal::PlanIdMismatch { .. } => RefusalReason::PlanIdMismatch,
            Refusal::PlanNotAcknowledged(_) => RefusalReason::PlanNotAcknowledged,
            Refusal::AttemptAlreadyPreprocessed => RefusalReason::AttemptAlreadyPreprocessed,
            Refusal::FeeRateTooHigh { .. } => RefusalReason::FeeRateTooHigh,
            Refusal::FeeShareTooHigh { .. } => RefusalReason::FeeShareTooHigh,
            Refusal::InputAlreadySigned { .. } => RefusalReason::InputAlreadySigned,
            Refusal::ReplacementMismatch { .. } => RefusalReason::ReplacementMismatch,
            Refusal::ReplacementUnderbids { .. } => RefusalReason::ReplacementUnderbids,
            Refusal::ReplacementDropsPayment => RefusalReason::ReplacementDropsPayment,
            Refusal::Unbuildable(_) => RefusalReason::Unbuildable,
            Refusal::BatchMismatch => RefusalReason::BatchMismatch,
            Refusal::BatchIdReused(_) => RefusalReason::BatchIdReused,
            Refusal::WrongNetwork(_) => RefusalReason::WrongNetwork,
            Refusal::BatchOutOfOrder { .. } => RefusalReason::BatchOutOfOrder,
            Refusal::BatchAhead { .. } => RefusalReason::BatchAhead,
            Refusal::HistoryUnavailable(_) => RefusalReason::HistoryUnavailable,
        };
        self.refused(reason, format!("{refusal:?}"))
    }

    fn signing_refused(&self, error: &SigningError) -> Refused {
        let reason = match error {
            SigningError::UnknownSession | SigningError::WrongStep => RefusalReason::UnknownAttempt,
            SigningError::ConflictingRepeat => RefusalReason::ConflictingRepeat,
            SigningError::Keys(_) => RefusalReason::UnknownKey,
            _ => RefusalReason::Malformed,
        };
        self.refused(reason, error.to_string())
    }
}

/// The shares held for exactly `pair` (both group keys), if confirmed here.
fn active_keys<'a>(active: &'a [Active], pair: &KeyPair) -> Option<&'a GeneratedKeys> {
    active
        .iter()
        .find(|active| active.pair == *pair)
        .map(|active| &active.keys)
}

/// The group keys of generated keys, as the coordinator sees them.
pub fn pair_of(keys: &GeneratedKeys) -> Option<KeyPair> {
    Some(KeyPair {
        batch_key: BatchKey::from_slice(keys.batch.group_key().to_bytes().as_ref()).ok()?,
        network_key: NetworkKey::from_slice(keys.network.group_key().to_bytes().as_ref()).ok()?,
    })
}
