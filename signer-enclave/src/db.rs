//! The enclave's own RocksDB: the policy state (acknowledged plan ids, preprocess markers,
//! inputs signed into plans, batches signed), read by the policy through `PolicyHistory` and
//! written in one synced write batch per approval, before anything the approval allows leaves
//! the enclave; the key pairs it generated, their shares only ever sealed by `custody`; and the
//! coordinator key fixed at provisioning. Nothing here is secret in the clear.
//!
//! Column families and their keys:
//! - `key_pairs`: session (u32 LE) || network (1) || network key (33) -> `KeyRecord`: every
//!   completed pair of a set, candidate or confirmed, at most `MAX_SET_PAIRS` (records
//!   written before candidates were kept have the set alone as their key)
//! - `refreshing`: as `key_pairs` -> `PendingRefresh`: a refresh's sealed new shares, until
//!   the coordinator confirms every participant holds the same (then they replace the record in
//!   `key_pairs`, in the same write that deletes this one)
//! - `retired_key_pairs`: as `key_pairs`, the records sealed under a sealing key that was
//!   replaced (`provision --new-sealing-key`), kept but never read by the enclave
//! - `settings`: setting name -> value (the coordinator key: 32-byte x-only key; `identity`:
//!   the enclave's identity key, sealed)
//! - `acknowledged`: network key (33) || plan id (32)
//! - `signed_inputs`: txid (32) || vout (u32 LE) -> the plan family's id (32): the plan's own
//!   id, or for a replacement the original's it replaces
//! - `plan_markers`: network key (33) || plan id (32) || attempt (u32 LE)
//! - `batch_markers`: batch key (32) || network (1) || batch id (u32 LE) || attempt (u32 LE)
//! - `batches`: network (1) || batch id (u32 LE) -> hash of the signed batch message (32)
//! - `settings`, `next_batch/<network code>`: the id of the next Batch to sign (u32 LE)
//! - `settings`, `batch_floor/<network code>`: one past the highest Batch id Serai is attested
//!   to have included (u32 LE), where the window of new Batch ids starts
//! - `audit`: record number (u64 BE) -> the record's bytes || its hash (32) (see `audit`);
//!   `settings`, `audit_head`: the next record's number (u64 LE) || the last hash (32). An
//!   approval's record is in the approval's own write.

use std::{
    path::Path,
    time::{SystemTime, UNIX_EPOCH},
};

use bitcoin::key::XOnlyPublicKey;
use rocksdb::{ColumnFamilyDescriptor, IteratorMode, Options, WriteBatch, WriteOptions, DB};
use schema::{
    hashes::PlanId,
    ids::{BatchId, NetworkId, Session, ValidatorSet},
    keys::{BatchKey, KeyPair, NetworkKey},
    messages::coordinator::PlansAcknowledged,
    plan::OutputId,
    sign_id::{BatchSignId, PlanSignId, SignIdPart},
};
use thiserror::Error;

use crate::{
    audit::{self, AuditError, Entry, Event, Head, Record},
    key_store::SealedKeys,
    policy::{BatchApproval, HistoryError, PlanApproval, PolicyHistory},
};

const ACKNOWLEDGED: &str = "acknowledged";
const SIGNED_INPUTS: &str = "signed_inputs";
const PLAN_MARKERS: &str = "plan_markers";
const BATCH_MARKERS: &str = "batch_markers";
const BATCHES: &str = "batches";
const KEY_PAIRS: &str = "key_pairs";
const RETIRED_KEY_PAIRS: &str = "retired_key_pairs";
const REFRESHING: &str = "refreshing";
const SETTINGS: &str = "settings";
const COORDINATOR_KEY: &[u8] = b"coordinator_key";
const IDENTITY: &[u8] = b"identity";
const AUDIT: &str = "audit";
const AUDIT_HEAD: &[u8] = b"audit_head";

/// Most key pairs recorded for one set. Every completed key generation of a set is kept (the
/// pair the chain votes on must survive stray runs and confirmations), so a scanner running
/// generations alone could otherwise fill the disk; each is a few kilobytes sealed.
pub const MAX_SET_PAIRS: usize = 16;
const COLUMN_FAMILIES: [&str; 10] = [
    AUDIT,
    KEY_PAIRS,
    RETIRED_KEY_PAIRS,
    REFRESHING,
    SETTINGS,
    ACKNOWLEDGED,
    SIGNED_INPUTS,
    PLAN_MARKERS,
    BATCH_MARKERS,
    BATCHES,
];

/// An enclave database operation failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum DbError {
    /// RocksDB failed.
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    /// A column family is missing from an opened database.
    #[error("column family {0} missing")]
    MissingColumnFamily(&'static str),
    /// A stored value does not have the length its column family gives it.
    #[error("damaged value in {0}")]
    Damaged(&'static str),
    /// The enclave was provisioned for another coordinator key.
    #[error("already provisioned with another coordinator key")]
    CoordinatorKeyDiffers,
    /// No key generation of this set awaits confirmation of this key pair.
    #[error("no generated key pair of this set matches")]
    NoSuchKeyPair,
    /// The set has as many recorded pairs as are kept.
    #[error("the set has {MAX_SET_PAIRS} key pairs recorded already")]
    TooManyPairs,
    /// The audit trail does not verify.
    #[error("audit trail: {0}")]
    Audit(#[from] AuditError),
}

/// Whether a generated key pair was voted in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyStatus {
    /// Generated and sealed; waiting for `ConfirmKeyPair`.
    Generated,
    /// Confirmed: the pair signs.
    Confirmed,
}

/// One set's key pair at rest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRecord {
    /// The validator set the pair belongs to.
    pub set: ValidatorSet,
    /// Whether it signs yet.
    pub status: KeyStatus,
    /// The group keys.
    pub pair: KeyPair,
    /// The shares, sealed.
    pub sealed: SealedKeys,
    /// How many refreshes the shares went through here since they were generated or repaired.
    pub epoch: u32,
}

/// A refresh's new shares, sealed, waiting for the coordinator's confirmation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingRefresh {
    /// The refresh's attempt.
    pub attempt: u32,
    /// The digest of the refreshed verification shares (`resharing::verification_digest`).
    pub digest: [u8; 32],
    /// The new shares, sealed.
    pub sealed: SealedKeys,
}

/// The enclave's database.
pub struct EnclaveDb {
    db: DB,
}

impl EnclaveDb {
    /// Opens (creating if missing) the database in `path`.
    ///
    /// # Errors
    /// RocksDB cannot open the directory.
    pub fn open(path: &Path) -> Result<Self, DbError> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        let families = COLUMN_FAMILIES
            .iter()
            .map(|name| ColumnFamilyDescriptor::new(*name, Options::default()));
        Ok(EnclaveDb {
            db: DB::open_cf_descriptors(&options, path, families)?,
        })
    }

    /// Opens the database of a running enclave for reading only (for `status`).
    ///
    /// # Errors
    /// RocksDB cannot open the directory, or it is not an enclave database.
    pub fn open_read_only(path: &Path) -> Result<Self, DbError> {
        // Only the families the database has: one an older build made lacks the newer ones
        // (read as empty), and a read-only open cannot add them.
        let existing = DB::list_cf(&Options::default(), path)?;
        let families = COLUMN_FAMILIES
            .iter()
            .filter(|name| existing.iter().any(|present| present == *name))
            .map(|name| ColumnFamilyDescriptor::new(*name, Options::default()));
        Ok(EnclaveDb {
            db: DB::open_cf_descriptors_read_only(&Options::default(), path, families, false)?,
        })
    }

    /// Records every plan id of a verified acknowledgement, in one synced write.
    ///
    /// # Errors
    /// RocksDB failed; nothing was recorded.
    pub fn record_acknowledgement(&self, acknowledged: &PlansAcknowledged) -> Result<(), DbError> {
        let cf = self.cf(ACKNOWLEDGED)?;
        let mut batch = WriteBatch::default();
        for plan in &acknowledged.plans {
            batch.put_cf(cf, acknowledged_key(&acknowledged.key, plan), []);
        }
        let mut entry = Entry::new(Event::PlansAcknowledged, acknowledged.block.0.to_le_bytes());
        entry.key = acknowledged.key.to_bytes().to_vec();
        entry.detail = format!("{} plans", acknowledged.plans.len());
        self.audited(&mut batch, entry)?;
        self.commit(batch)
    }

    /// Appends `entry` to the audit trail, synced before this returns (for what leaves the
    /// enclave: shares and signatures); `sync: false` for refusals, which are written before
    /// the answer but need not survive a power loss.
    ///
    /// # Errors
    /// RocksDB failed.
    pub fn audit(&self, entry: Entry, sync: bool) -> Result<(), DbError> {
        let mut batch = WriteBatch::default();
        self.audited(&mut batch, entry)?;
        if sync {
            self.commit(batch)
        } else {
            Ok(self.db.write(batch)?)
        }
    }

    /// Adds `entry`, numbered and chained after the head, to `batch`, with the new head.
    fn audited(&self, batch: &mut WriteBatch, entry: Entry) -> Result<(), DbError> {
        let head = self.audit_head()?;
        let record = Record {
            seq: head.next,
            time: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |since| since.as_secs()),
            entry,
        };
        let hash = record.hash(&head.hash);
        batch.put_cf(
            self.cf(AUDIT)?,
            record.seq.to_be_bytes(),
            [&record.encode()[..], &hash].concat(),
        );
        let next = record.seq.saturating_add(1);
        batch.put_cf(
            self.cf(SETTINGS)?,
            AUDIT_HEAD,
            [&next.to_le_bytes()[..], &hash].concat(),
        );
        Ok(())
    }

    /// Where the audit trail ends.
    ///
    /// # Errors
    /// RocksDB failed or the head is damaged.
    pub fn audit_head(&self) -> Result<Head, DbError> {
        let Some(value) = self.get(SETTINGS, AUDIT_HEAD)? else {
            return Ok(Head::default());
        };
        let (next, hash) = value
            .split_first_chunk::<8>()
            .and_then(|(next, hash)| Some((*next, <[u8; 32]>::try_from(hash).ok()?)))
            .ok_or(DbError::Damaged(SETTINGS))?;
        Ok(Head {
            next: u64::from_le_bytes(next),
            hash,
        })
    }

    /// Every record of the audit trail, verified against its chain and head.
    ///
    /// # Errors
    /// RocksDB failed, or the trail was edited, truncated or damaged (`DbError::Audit`).
    pub fn audit_records(&self) -> Result<Vec<Record>, DbError> {
        let mut stored = Vec::new();
        for entry in self.db.iterator_cf(self.cf(AUDIT)?, IteratorMode::Start) {
            let (_, value) = entry?;
            let split = value.len().saturating_sub(32);
            let (bytes, hash) = value.split_at(split);
            let hash = <[u8; 32]>::try_from(hash).unwrap_or([0; 32]);
            stored.push((bytes.to_vec(), hash));
        }
        Ok(audit::verify(stored, self.audit_head()?)?)
    }

    /// Records a plan approval (its attempt marker and its inputs) in one synced write. Call
    /// before the preprocess leaves the enclave.
    ///
    /// # Errors
    /// RocksDB failed; nothing was recorded, and the preprocess must not leave.
    pub fn record_plan_approval(&self, approval: &PlanApproval) -> Result<(), DbError> {
        let mut batch = WriteBatch::default();
        self.audited(
            &mut batch,
            Entry {
                event: Event::PlanApproved,
                subject: approval.marker.id.as_bytes().to_vec(),
                attempt: approval.marker.attempt.0,
                key: approval.marker.key.to_bytes().to_vec(),
                detail: format!(
                    "{} inputs, fee {} sat",
                    approval.inputs.len(),
                    approval.built.fee.to_sat()
                ),
            },
        )?;
        batch.put_cf(
            self.cf(PLAN_MARKERS)?,
            plan_marker_key(&approval.marker),
            [],
        );
        let inputs = self.cf(SIGNED_INPUTS)?;
        for input in &approval.inputs {
            batch.put_cf(inputs, input_key(input), approval.family.as_bytes());
        }
        self.commit(batch)
    }

    /// Records a batch approval (its attempt marker and the message signed under its id) in
    /// one synced write. Call before the preprocess leaves the enclave.
    ///
    /// # Errors
    /// RocksDB failed; nothing was recorded, and the preprocess must not leave.
    pub fn record_batch_approval(&self, approval: &BatchApproval) -> Result<(), DbError> {
        let mut batch = WriteBatch::default();
        self.audited(
            &mut batch,
            Entry {
                event: Event::BatchApproved,
                subject: approval.marker.id.batch.0.to_le_bytes().to_vec(),
                attempt: approval.marker.attempt.0,
                key: approval.marker.key.0.to_vec(),
                detail: format!("message {}", hex::encode(approval.message_hash)),
            },
        )?;
        batch.put_cf(
            self.cf(BATCH_MARKERS)?,
            batch_marker_key(&approval.marker),
            [],
        );
        batch.put_cf(
            self.cf(BATCHES)?,
            batch_key(approval.marker.id.network, approval.marker.id.batch),
            approval.message_hash,
        );
        let network = approval.marker.id.network;
        let next = approval.marker.id.batch.0.saturating_add(1);
        if next > self.next_batch_id(network)?.0 {
            batch.put_cf(
                self.cf(SETTINGS)?,
                next_batch_setting(network),
                next.to_le_bytes(),
            );
        }
        self.commit(batch)
    }

    fn next_batch_id(&self, network: NetworkId) -> Result<BatchId, DbError> {
        self.batch_setting(&next_batch_setting(network))
    }

    /// One past the highest Batch id of `network` Serai is attested to have included (0 before
    /// any).
    ///
    /// # Errors
    /// The database failed or the record is damaged.
    pub fn batch_floor_id(&self, network: NetworkId) -> Result<BatchId, DbError> {
        self.batch_setting(&batch_floor_setting(network))
    }

    fn batch_setting(&self, name: &[u8]) -> Result<BatchId, DbError> {
        match self.get(SETTINGS, name)? {
            None => Ok(BatchId(0)),
            Some(value) => <[u8; 4]>::try_from(value.as_slice())
                .map(|id| BatchId(u32::from_le_bytes(id)))
                .map_err(|_| DbError::Damaged(SETTINGS)),
        }
    }

    /// Records, with `entry` in the audit trail, that Serai included Batch `batch` of
    /// `network`: the window of new Batch ids starts past it (never moves back). Synced.
    ///
    /// # Errors
    /// The database failed; nothing was recorded.
    pub fn record_batch_included(
        &self,
        network: NetworkId,
        batch: BatchId,
        entry: Entry,
    ) -> Result<(), DbError> {
        let mut write = WriteBatch::default();
        self.audited(&mut write, entry)?;
        let floor = batch.0.saturating_add(1);
        if floor > self.batch_floor_id(network)?.0 {
            write.put_cf(
                self.cf(SETTINGS)?,
                batch_floor_setting(network),
                floor.to_le_bytes(),
            );
        }
        self.commit(write)
    }

    /// Fixes the coordinator key attestations must verify under. Idempotent; a different key
    /// is refused, since acknowledgements already recorded were checked under the first.
    ///
    /// # Errors
    /// Another key is recorded, or the database failed.
    pub fn set_coordinator_key(&self, key: &XOnlyPublicKey) -> Result<(), DbError> {
        match self.coordinator_key()? {
            Some(recorded) if recorded == *key => Ok(()),
            Some(_) => Err(DbError::CoordinatorKeyDiffers),
            None => {
                let mut batch = WriteBatch::default();
                batch.put_cf(self.cf(SETTINGS)?, COORDINATOR_KEY, key.serialize());
                self.commit(batch)
            }
        }
    }

    /// The coordinator key fixed at provisioning, if provisioned.
    ///
    /// # Errors
    /// The database failed or holds a damaged key.
    pub fn coordinator_key(&self) -> Result<Option<XOnlyPublicKey>, DbError> {
        self.get(SETTINGS, COORDINATOR_KEY)?
            .map(|bytes| XOnlyPublicKey::from_slice(&bytes).map_err(|_| DbError::Damaged(SETTINGS)))
            .transpose()
    }

    /// Records a completed key generation as a candidate pair of its set, beside any other
    /// candidate (a replayed older attempt, or a run the scanner played alone, must not lose
    /// the pair the chain will vote on). A pair already recorded is left as it is.
    ///
    /// # Errors
    /// The set has `MAX_SET_PAIRS` pairs already, or the database failed.
    pub fn record_generated(
        &self,
        set: ValidatorSet,
        pair: KeyPair,
        sealed: SealedKeys,
    ) -> Result<(), DbError> {
        let records = self.set_records(set)?;
        if records.iter().any(|(_, record)| record.pair == pair) {
            return Ok(());
        }
        if records.len() >= MAX_SET_PAIRS {
            return Err(DbError::TooManyPairs);
        }
        let record = KeyRecord {
            set,
            status: KeyStatus::Generated,
            pair,
            sealed,
            epoch: 0,
        };
        let mut batch = WriteBatch::default();
        batch.put_cf(
            self.cf(KEY_PAIRS)?,
            candidate_key(set, &pair),
            encode_record(&record),
        );
        let mut entry = Entry::new(Event::KeyGenerated, set_key(set));
        entry.key = pair.network_key.to_bytes().to_vec();
        self.audited(&mut batch, entry)?;
        self.commit(batch)
    }

    /// Confirms the set's candidate `pair`. Confirming again is a no-op. The set's other pairs
    /// are kept: a confirmation is asked by the scanner, unauthenticated, and one for a pair
    /// the chain did not vote on (a run a compromised scanner played alone) must not destroy
    /// the pair it did; that one can still be confirmed.
    ///
    /// # Errors
    /// The set has no candidate equal to `pair`, or the database failed.
    pub fn confirm(&self, set: ValidatorSet, pair: &KeyPair) -> Result<KeyRecord, DbError> {
        let records = self.set_records(set)?;
        let (key, mut record) = records
            .iter()
            .find(|(_, record)| record.pair == *pair)
            .cloned()
            .ok_or(DbError::NoSuchKeyPair)?;
        if record.status == KeyStatus::Confirmed {
            return Ok(record);
        }
        record.status = KeyStatus::Confirmed;
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(KEY_PAIRS)?, key, encode_record(&record));
        let mut entry = Entry::new(Event::KeyConfirmed, set_key(set));
        entry.key = pair.network_key.to_bytes().to_vec();
        self.audited(&mut batch, entry)?;
        self.commit(batch)?;
        Ok(record)
    }

    /// Records a repaired share of `pair` as confirmed (the pair was confirmed before the
    /// share was lost, and the repair was attested), over any record of the pair there was,
    /// with a record in the audit trail, in one synced write.
    ///
    /// # Errors
    /// The database failed; nothing was written.
    pub fn record_repaired(
        &self,
        set: ValidatorSet,
        pair: KeyPair,
        sealed: SealedKeys,
    ) -> Result<(), DbError> {
        let record = KeyRecord {
            set,
            status: KeyStatus::Confirmed,
            pair,
            sealed,
            epoch: 0,
        };
        let key = self.record_key(set, &pair)?;
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(KEY_PAIRS)?, key, encode_record(&record));
        batch.delete_cf(self.cf(REFRESHING)?, candidate_key(set, &pair));
        let mut entry = Entry::new(Event::KeyRepaired, set_key(set));
        entry.key = pair.network_key.to_bytes().to_vec();
        self.audited(&mut batch, entry)?;
        self.commit(batch)
    }

    /// Records a refresh's new shares of `pair`, sealed, as pending (over an older pending
    /// one), with a record in the audit trail, in one synced write.
    ///
    /// # Errors
    /// The pair is not confirmed here, or the database failed.
    pub fn record_refresh(
        &self,
        set: ValidatorSet,
        pair: &KeyPair,
        pending: &PendingRefresh,
    ) -> Result<(), DbError> {
        let record = self.generated(set, pair)?;
        if record.status != KeyStatus::Confirmed {
            return Err(DbError::NoSuchKeyPair);
        }
        let mut batch = WriteBatch::default();
        batch.put_cf(
            self.cf(REFRESHING)?,
            candidate_key(set, pair),
            encode_pending(pending),
        );
        let mut entry = Entry::new(Event::KeyRefreshed, set_key(set));
        entry.key = pair.network_key.to_bytes().to_vec();
        entry.attempt = pending.attempt;
        entry.detail = format!("verification shares {}", hex::encode(pending.digest));
        self.audited(&mut batch, entry)?;
        self.commit(batch)
    }

    /// The pending refresh of `pair`, if there is one.
    ///
    /// # Errors
    /// The database failed or the record is damaged.
    pub fn pending_refresh(
        &self,
        set: ValidatorSet,
        pair: &KeyPair,
    ) -> Result<Option<PendingRefresh>, DbError> {
        if self.db.cf_handle(REFRESHING).is_none() {
            return Ok(None);
        }
        self.get(REFRESHING, &candidate_key(set, pair))?
            .map(|value| decode_pending(pair, &value).ok_or(DbError::Damaged(REFRESHING)))
            .transpose()
    }

    /// Every pending refresh, with its set and pair.
    ///
    /// # Errors
    /// The database failed or a record is damaged.
    pub fn pending_refreshes(&self) -> Result<Vec<(KeyRecord, PendingRefresh)>, DbError> {
        let mut found = Vec::new();
        // A database only read, made by a build before refreshes, has none.
        let Some(refreshing) = self.db.cf_handle(REFRESHING) else {
            return Ok(found);
        };
        for entry in self.db.iterator_cf(refreshing, IteratorMode::Start) {
            let (key, value) = entry?;
            let damaged = || DbError::Damaged(REFRESHING);
            let (set_bytes, network_key) = key.split_at_checked(5).ok_or_else(damaged)?;
            let set = decode_set(set_bytes).ok_or_else(damaged)?;
            let record = self
                .set_records(set)?
                .into_iter()
                .map(|(_, record)| record)
                .find(|record| record.pair.network_key.to_bytes().as_slice() == network_key)
                .ok_or_else(damaged)?;
            let pending = decode_pending(&record.pair, &value).ok_or_else(damaged)?;
            found.push((record, pending));
        }
        Ok(found)
    }

    /// Makes the pending refresh of `pair` the shares it signs with: the record takes the new
    /// sealed shares and the next epoch, and the pending one is deleted, with a record in the
    /// audit trail, in one synced write. Returns the new epoch.
    ///
    /// # Errors
    /// No such confirmed pair or pending refresh, or the database failed; nothing was written.
    pub fn confirm_refresh(
        &self,
        set: ValidatorSet,
        pair: &KeyPair,
        pending: &PendingRefresh,
    ) -> Result<u32, DbError> {
        let mut record = self.generated(set, pair)?;
        if record.status != KeyStatus::Confirmed
            || self.pending_refresh(set, pair)?.as_ref() != Some(pending)
        {
            return Err(DbError::NoSuchKeyPair);
        }
        record.sealed = pending.sealed.clone();
        record.epoch = record.epoch.saturating_add(1);
        let key = self.record_key(set, pair)?;
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(KEY_PAIRS)?, key, encode_record(&record));
        batch.delete_cf(self.cf(REFRESHING)?, candidate_key(set, pair));
        let mut entry = Entry::new(Event::RefreshConfirmed, set_key(set));
        entry.key = pair.network_key.to_bytes().to_vec();
        entry.attempt = pending.attempt;
        entry.detail = format!("epoch {}", record.epoch);
        self.audited(&mut batch, entry)?;
        self.commit(batch)?;
        Ok(record.epoch)
    }

    /// The enclave's identity key, sealed, if one was made.
    ///
    /// # Errors
    /// The database failed.
    pub fn identity(&self) -> Result<Option<Vec<u8>>, DbError> {
        self.get(SETTINGS, IDENTITY)
    }

    /// Records the enclave's identity key, sealed, with a record in the audit trail.
    ///
    /// # Errors
    /// The database failed; nothing was written.
    pub fn record_identity(&self, sealed: &[u8]) -> Result<(), DbError> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(SETTINGS)?, IDENTITY, sealed);
        self.audited(&mut batch, Entry::new(Event::IdentityCreated, Vec::new()))?;
        self.commit(batch)
    }

    /// The recorded pair `pair` of `set`, a candidate or confirmed.
    ///
    /// # Errors
    /// No such pair was generated for the set (`NoSuchKeyPair`), or the database failed.
    pub fn generated(&self, set: ValidatorSet, pair: &KeyPair) -> Result<KeyRecord, DbError> {
        self.set_records(set)?
            .into_iter()
            .map(|(_, record)| record)
            .find(|record| record.pair == *pair)
            .ok_or(DbError::NoSuchKeyPair)
    }

    /// Whether any key pair of `set` was generated here (this validator is in the set).
    ///
    /// # Errors
    /// RocksDB failed or a record is damaged.
    pub fn in_set(&self, set: ValidatorSet) -> Result<bool, DbError> {
        Ok(!self.set_records(set)?.is_empty())
    }

    /// The database key `pair`'s record of `set` is under: where it is (a record older builds
    /// wrote is keyed by the set alone), or where a new one goes.
    fn record_key(&self, set: ValidatorSet, pair: &KeyPair) -> Result<Vec<u8>, DbError> {
        Ok(self
            .set_records(set)?
            .into_iter()
            .find(|(_, record)| record.pair == *pair)
            .map_or_else(|| candidate_key(set, pair), |(key, _)| key))
    }

    /// Every record of `set`, with its database key.
    fn set_records(&self, set: ValidatorSet) -> Result<Vec<(Vec<u8>, KeyRecord)>, DbError> {
        let prefix = set_key(set);
        let mut found = Vec::new();
        for entry in self.db.iterator_cf(
            self.cf(KEY_PAIRS)?,
            IteratorMode::From(&prefix, rocksdb::Direction::Forward),
        ) {
            let (key, value) = entry?;
            if !key.starts_with(&prefix) {
                break;
            }
            let record = decode_record(&key, &value).ok_or(DbError::Damaged(KEY_PAIRS))?;
            found.push((key.to_vec(), record));
        }
        Ok(found)
    }

    /// Every key pair at rest, confirmed or not.
    ///
    /// # Errors
    /// The database failed or holds a damaged record.
    pub fn key_records(&self) -> Result<Vec<KeyRecord>, DbError> {
        self.db
            .iterator_cf(self.cf(KEY_PAIRS)?, IteratorMode::Start)
            .map(|entry| {
                let (key, value) = entry?;
                decode_record(&key, &value).ok_or(DbError::Damaged(KEY_PAIRS))
            })
            .collect()
    }

    /// Moves every key record to `retired_key_pairs`, and deletes the pending refreshes and
    /// the identity, with a record in the audit trail, in one synced write; returns how many
    /// key records. After a new sealing key, what was sealed under the old one cannot be
    /// unsealed, and the enclave (which unseals every confirmed pair and its identity at
    /// start) must start without them; the pairs are kept, never read again, in case the old
    /// token is found.
    ///
    /// # Errors
    /// The database failed; nothing was moved.
    pub fn retire_key_records(&self) -> Result<usize, DbError> {
        let (from, to) = (self.cf(KEY_PAIRS)?, self.cf(RETIRED_KEY_PAIRS)?);
        let mut batch = WriteBatch::default();
        let mut count = 0usize;
        for entry in self.db.iterator_cf(from, IteratorMode::Start) {
            let (key, value) = entry?;
            batch.put_cf(to, &key, value);
            batch.delete_cf(from, key);
            count += 1;
        }
        // A refresh sealed under the old key can never be confirmed: it goes with them; so does
        // the identity, which a new one replaces at the next start.
        let refreshing = self.cf(REFRESHING)?;
        let mut pending = 0usize;
        for entry in self.db.iterator_cf(refreshing, IteratorMode::Start) {
            batch.delete_cf(refreshing, entry?.0);
            pending += 1;
        }
        let identity = self.identity()?.is_some();
        batch.delete_cf(self.cf(SETTINGS)?, IDENTITY);
        if count == 0 && pending == 0 && !identity {
            return Ok(0);
        }
        let mut entry = Entry::new(Event::KeysRetired, Vec::new());
        entry.detail = format!(
            "{count} key pair(s) and {pending} pending refresh(es) sealed under the previous \
             sealing key{}",
            if identity {
                ", and the enclave identity"
            } else {
                ""
            }
        );
        self.audited(&mut batch, entry)?;
        self.commit(batch)?;
        Ok(count)
    }

    /// Writes `resealed` (key records read by `key_records`, their shares sealed anew under
    /// another token's key) over the records they were read from, `pending` (refreshes read
    /// by `pending_refreshes`, resealed the same way) over theirs and the identity resealed,
    /// with a record in the audit trail, in one synced write; returns how many key records. A crash leaves every pair sealed under
    /// the old key or every pair under the new one, never a mix.
    ///
    /// # Errors
    /// The database failed; nothing was written.
    pub fn reseal_key_records(
        &self,
        resealed: &[KeyRecord],
        pending: &[(KeyRecord, PendingRefresh)],
        identity: Option<&[u8]>,
    ) -> Result<usize, DbError> {
        if resealed.is_empty() && identity.is_none() {
            return Ok(0);
        }
        let mut batch = WriteBatch::default();
        if let Some(identity) = identity {
            batch.put_cf(self.cf(SETTINGS)?, IDENTITY, identity);
        }
        for record in resealed {
            batch.put_cf(
                self.cf(KEY_PAIRS)?,
                self.record_key(record.set, &record.pair)?,
                encode_record(record),
            );
        }
        for (record, refresh) in pending {
            batch.put_cf(
                self.cf(REFRESHING)?,
                candidate_key(record.set, &record.pair),
                encode_pending(refresh),
            );
        }
        let mut entry = Entry::new(Event::KeysResealed, Vec::new());
        entry.detail = format!(
            "{} key pair(s) sealed under another token's sealing key",
            resealed.len()
        );
        self.audited(&mut batch, entry)?;
        self.commit(batch)?;
        Ok(resealed.len())
    }

    /// How many plan ids were ever acknowledged.
    ///
    /// # Errors
    /// The database failed.
    pub fn acknowledged_count(&self) -> Result<u64, DbError> {
        let mut count = 0u64;
        for entry in self
            .db
            .iterator_cf(self.cf(ACKNOWLEDGED)?, IteratorMode::Start)
        {
            entry?;
            count += 1;
        }
        Ok(count)
    }

    fn commit(&self, batch: WriteBatch) -> Result<(), DbError> {
        let mut options = WriteOptions::default();
        options.set_sync(true);
        Ok(self.db.write_opt(batch, &options)?)
    }

    fn cf(&self, name: &'static str) -> Result<&rocksdb::ColumnFamily, DbError> {
        self.db
            .cf_handle(name)
            .ok_or(DbError::MissingColumnFamily(name))
    }

    fn get(&self, name: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>, DbError> {
        Ok(self.db.get_cf(self.cf(name)?, key)?)
    }

    fn get_32(&self, name: &'static str, key: &[u8]) -> Result<Option<[u8; 32]>, DbError> {
        self.get(name, key)?
            .map(|value| <[u8; 32]>::try_from(value.as_slice()).map_err(|_| DbError::Damaged(name)))
            .transpose()
    }
}

fn history<T>(result: Result<T, DbError>) -> Result<T, HistoryError> {
    result.map_err(|error| HistoryError(error.to_string()))
}

impl PolicyHistory for EnclaveDb {
    fn acknowledged(&self, key: &NetworkKey, plan: &PlanId) -> Result<bool, HistoryError> {
        history(
            self.get(ACKNOWLEDGED, &acknowledged_key(key, plan))
                .map(|v| v.is_some()),
        )
    }

    fn input_signed_into(&self, input: &OutputId) -> Result<Option<PlanId>, HistoryError> {
        history(
            self.get_32(SIGNED_INPUTS, &input_key(input))
                .map(|v| v.map(PlanId)),
        )
    }

    fn plan_attempt_preprocessed(&self, id: &PlanSignId) -> Result<bool, HistoryError> {
        history(
            self.get(PLAN_MARKERS, &plan_marker_key(id))
                .map(|v| v.is_some()),
        )
    }

    fn batch_attempt_preprocessed(&self, id: &BatchSignId) -> Result<bool, HistoryError> {
        history(
            self.get(BATCH_MARKERS, &batch_marker_key(id))
                .map(|v| v.is_some()),
        )
    }

    fn batch_signed(
        &self,
        network: NetworkId,
        batch: BatchId,
    ) -> Result<Option<[u8; 32]>, HistoryError> {
        history(self.get_32(BATCHES, &batch_key(network, batch)))
    }

    fn next_batch(&self, network: NetworkId) -> Result<BatchId, HistoryError> {
        history(self.next_batch_id(network))
    }

    fn batch_floor(&self, network: NetworkId) -> Result<BatchId, HistoryError> {
        history(self.batch_floor_id(network))
    }
}

fn next_batch_setting(network: NetworkId) -> Vec<u8> {
    [&b"next_batch/"[..], &[network.code()]].concat()
}

fn batch_floor_setting(network: NetworkId) -> Vec<u8> {
    [&b"batch_floor/"[..], &[network.code()]].concat()
}

fn acknowledged_key(key: &NetworkKey, plan: &PlanId) -> Vec<u8> {
    [&key.to_bytes()[..], plan.as_bytes()].concat()
}

fn set_key(set: ValidatorSet) -> [u8; 5] {
    let [a, b, c, d] = set.session.0.to_le_bytes();
    [a, b, c, d, set.network.code()]
}

/// The key a candidate pair of `set` is stored under.
pub fn candidate_key(set: ValidatorSet, pair: &KeyPair) -> Vec<u8> {
    [&set_key(set)[..], &pair.network_key.to_bytes()].concat()
}

/// `status (1) || [epoch (u32 LE)] || batch key (32) || network key (33) || len (u32 LE) ||
/// sealed batch keys || sealed network keys`; the key id is the network key. Status 0 and 1
/// (generated, confirmed) carry no epoch (it is 0: every record before refreshes existed);
/// 2 and 3 are the same with the epoch.
pub fn encode_record(record: &KeyRecord) -> Vec<u8> {
    let status = match record.status {
        KeyStatus::Generated => 0u8,
        KeyStatus::Confirmed => 1u8,
    };
    let (status, epoch) = match record.epoch {
        0 => (status, Vec::new()),
        epoch => (status + 2, epoch.to_le_bytes().to_vec()),
    };
    let len = u32::try_from(record.sealed.batch.len()).unwrap_or(u32::MAX);
    [
        &[status][..],
        &epoch,
        &record.pair.batch_key.0,
        &record.pair.network_key.to_bytes(),
        &len.to_le_bytes(),
        &record.sealed.batch,
        &record.sealed.network,
    ]
    .concat()
}

/// Reads a key record back from its key (`set (5) || network key (33)`, or the set alone as
/// older builds wrote) and value; `None` for bytes `encode_record` did not write.
pub fn decode_record(key: &[u8], value: &[u8]) -> Option<KeyRecord> {
    let (set, keyed_by) = key.split_at_checked(5)?;
    let set = decode_set(set)?;
    let (status, rest) = value.split_first()?;
    let (status, epoch, rest) = match status {
        0 => (KeyStatus::Generated, 0, rest),
        1 => (KeyStatus::Confirmed, 0, rest),
        2 | 3 => {
            let (epoch, rest) = rest.split_first_chunk::<4>()?;
            // Epoch 0 is written with status 0 or 1: any other spelling is not ours.
            if *epoch == [0; 4] {
                return None;
            }
            let status = if *status == 2 {
                KeyStatus::Generated
            } else {
                KeyStatus::Confirmed
            };
            (status, u32::from_le_bytes(*epoch), rest)
        }
        _ => return None,
    };
    let (batch_key, rest) = rest.split_first_chunk::<32>()?;
    let (network_key, rest) = rest.split_first_chunk::<33>()?;
    // A candidate is stored under its own network key: a record under another is damaged.
    if !keyed_by.is_empty() && keyed_by != network_key {
        return None;
    }
    let (len, rest) = rest.split_first_chunk::<4>()?;
    let len = usize::try_from(u32::from_le_bytes(*len)).ok()?;
    if rest.len() < len {
        return None;
    }
    let (batch, network) = rest.split_at(len);
    Some(KeyRecord {
        set,
        status,
        epoch,
        pair: KeyPair {
            batch_key: BatchKey(*batch_key),
            network_key: NetworkKey::from_slice(network_key).ok()?,
        },
        sealed: SealedKeys {
            key_id: network_key.to_vec(),
            batch: batch.to_vec(),
            network: network.to_vec(),
        },
    })
}

/// `attempt (u32 LE) || digest (32) || len (u32 LE) || sealed batch keys || sealed network
/// keys`.
fn encode_pending(pending: &PendingRefresh) -> Vec<u8> {
    let len = u32::try_from(pending.sealed.batch.len()).unwrap_or(u32::MAX);
    [
        &pending.attempt.to_le_bytes()[..],
        &pending.digest,
        &len.to_le_bytes(),
        &pending.sealed.batch,
        &pending.sealed.network,
    ]
    .concat()
}

fn decode_pending(pair: &KeyPair, value: &[u8]) -> Option<PendingRefresh> {
    let (attempt, rest) = value.split_first_chunk::<4>()?;
    let (digest, rest) = rest.split_first_chunk::<32>()?;
    let (len, rest) = rest.split_first_chunk::<4>()?;
    let len = usize::try_from(u32::from_le_bytes(*len)).ok()?;
    if rest.len() < len {
        return None;
    }
    let (batch, network) = rest.split_at(len);
    Some(PendingRefresh {
        attempt: u32::from_le_bytes(*attempt),
        digest: *digest,
        sealed: SealedKeys {
            key_id: pair.network_key.to_bytes().to_vec(),
            batch: batch.to_vec(),
            network: network.to_vec(),
        },
    })
}

fn decode_set(bytes: &[u8]) -> Option<ValidatorSet> {
    let &[a, b, c, d, network] = bytes else {
        return None;
    };
    Some(ValidatorSet {
        session: Session(u32::from_le_bytes([a, b, c, d])),
        network: NetworkId::from_code(network).ok()?,
    })
}

fn input_key(input: &OutputId) -> [u8; 36] {
    input.to_bytes()
}

fn plan_marker_key(id: &PlanSignId) -> Vec<u8> {
    [
        &id.key.to_bytes()[..],
        id.id.as_bytes(),
        &id.attempt.0.to_le_bytes(),
    ]
    .concat()
}

fn batch_marker_key(id: &BatchSignId) -> Vec<u8> {
    [
        id.key.as_bytes(),
        &id.id.to_part_bytes()[..],
        &id.attempt.0.to_le_bytes(),
    ]
    .concat()
}

fn batch_key(network: NetworkId, batch: BatchId) -> [u8; 5] {
    let [a, b, c, d] = batch.0.to_le_bytes();
    [network.code(), a, b, c, d]
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use proptest::prelude::*;
    use schema::strategies::{key_pair, validator_set};

    use super::*;

    proptest! {
        /// A key record reads back from its own key, and from the set alone as older builds
        /// keyed it; under another candidate's key it is damaged, not read as that candidate.
        #[test]
        fn a_key_record_reads_back_only_under_its_own_key(
            set in validator_set(),
            pair in key_pair(),
            other in key_pair(),
            sealed in proptest::collection::vec(any::<u8>(), 0..64),
            epoch in prop_oneof![Just(0u32), any::<u32>()],
        ) {
            prop_assume!(pair.network_key != other.network_key);
            let record = KeyRecord {
                set,
                status: KeyStatus::Generated,
                pair,
                epoch,
                sealed: SealedKeys {
                    key_id: pair.network_key.to_bytes().to_vec(),
                    batch: sealed.clone(),
                    network: sealed,
                },
            };
            let value = encode_record(&record);
            prop_assert_eq!(decode_record(&candidate_key(set, &pair), &value), Some(record.clone()));
            prop_assert_eq!(decode_record(&set_key(set), &value), Some(record));
            prop_assert_eq!(decode_record(&candidate_key(set, &other), &value), None);
            // Epoch 0 spelled with an epoch field does not read (it would re-encode otherwise).
            if epoch == 0 {
                let spelled = [&[value[0] + 2][..], &[0; 4], &value[1..]].concat();
                prop_assert_eq!(decode_record(&candidate_key(set, &pair), &spelled), None);
            }
        }
    }

    const SET: ValidatorSet = ValidatorSet {
        session: Session(0),
        network: NetworkId::Bitcoin,
    };

    /// A key pair whose network key is secp256k1's generator.
    fn pair() -> KeyPair {
        KeyPair {
            batch_key: BatchKey([4; 32]),
            network_key: NetworkKey::from_slice(
                &hex::decode("0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798")
                    .unwrap(),
            )
            .unwrap(),
        }
    }

    fn sealed(pair: &KeyPair, byte: u8) -> SealedKeys {
        SealedKeys {
            key_id: pair.network_key.to_bytes().to_vec(),
            batch: vec![byte; 40],
            network: vec![byte; 41],
        }
    }

    /// A refresh waits beside its key record until confirmed; confirming it replaces the
    /// record's shares and moves the epoch in one write, only once; a new sealing key drops
    /// a pending refresh with the records it belonged to.
    #[test]
    fn a_pending_refresh_replaces_the_record_once_and_goes_with_a_sealing_key() {
        let dir = tempfile::tempdir().unwrap();
        let db = EnclaveDb::open(dir.path()).unwrap();
        let set = ValidatorSet {
            session: Session(3),
            network: NetworkId::Bitcoin,
        };
        let pair = pair();
        let pending = PendingRefresh {
            attempt: 2,
            digest: [9; 32],
            sealed: sealed(&pair, 2),
        };
        db.record_generated(set, pair, sealed(&pair, 1)).unwrap();
        // Only a confirmed pair is refreshed.
        assert!(matches!(
            db.record_refresh(set, &pair, &pending),
            Err(DbError::NoSuchKeyPair)
        ));
        db.confirm(set, &pair).unwrap();
        db.record_refresh(set, &pair, &pending).unwrap();
        assert_eq!(
            db.pending_refresh(set, &pair).unwrap(),
            Some(pending.clone())
        );
        assert_eq!(db.pending_refreshes().unwrap().len(), 1);
        assert_eq!(db.generated(set, &pair).unwrap().sealed, sealed(&pair, 1));

        assert_eq!(db.confirm_refresh(set, &pair, &pending).unwrap(), 1);
        let record = db.generated(set, &pair).unwrap();
        assert_eq!((record.epoch, record.sealed), (1, sealed(&pair, 2)));
        assert_eq!(db.pending_refresh(set, &pair).unwrap(), None);
        assert!(matches!(
            db.confirm_refresh(set, &pair, &pending),
            Err(DbError::NoSuchKeyPair)
        ));

        db.record_refresh(set, &pair, &pending).unwrap();
        assert_eq!(db.retire_key_records().unwrap(), 1);
        assert!(db.pending_refreshes().unwrap().is_empty());
    }

    /// A record older builds keyed by the set alone is refreshed, resealed and repaired in
    /// place: never a second record of the pair beside it (the enclave would load both, and
    /// the older first).
    #[test]
    fn a_record_keyed_by_its_set_alone_is_changed_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let db = EnclaveDb::open(dir.path()).unwrap();
        let set = ValidatorSet {
            session: Session(1),
            network: NetworkId::Bitcoin,
        };
        let pair = pair();
        let record = KeyRecord {
            set,
            status: KeyStatus::Confirmed,
            pair,
            sealed: sealed(&pair, 1),
            epoch: 0,
        };
        db.db
            .put_cf(
                db.cf(KEY_PAIRS).unwrap(),
                set_key(set),
                encode_record(&record),
            )
            .unwrap();
        let pending = PendingRefresh {
            attempt: 1,
            digest: [3; 32],
            sealed: sealed(&pair, 2),
        };
        db.record_refresh(set, &pair, &pending).unwrap();
        db.confirm_refresh(set, &pair, &pending).unwrap();
        let records = db.key_records().unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(
            (records[0].epoch, &records[0].sealed),
            (1, &sealed(&pair, 2))
        );

        let mut resealed = records[0].clone();
        resealed.sealed = sealed(&pair, 3);
        db.reseal_key_records(&[resealed], &[], None).unwrap();
        db.record_repaired(set, pair, sealed(&pair, 4)).unwrap();
        let records = db.key_records().unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].sealed, sealed(&pair, 4));
    }

    /// A database an older build made (without the families added since) is read by
    /// `status` and `audit` as it is: the missing families read as empty.
    #[test]
    fn a_database_without_the_newer_families_opens_read_only() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut options = Options::default();
            options.create_if_missing(true);
            options.create_missing_column_families(true);
            let older = COLUMN_FAMILIES.iter().filter(|name| **name != REFRESHING);
            DB::open_cf(&options, dir.path(), older).unwrap();
        }
        let db = EnclaveDb::open_read_only(dir.path()).unwrap();
        assert!(db.pending_refreshes().unwrap().is_empty());
        assert_eq!(db.pending_refresh(SET, &pair()).unwrap(), None);
        assert!(db.key_records().unwrap().is_empty());
    }
}
