//! The enclave's own RocksDB: the non-secret policy state (acknowledged plan ids, preprocess
//! markers, inputs signed into plans, batches signed), read by the policy through
//! `PolicyHistory` and written in one synced write batch per approval, before anything the
//! approval allows leaves the enclave. It holds no key material.
//!
//! Column families and their keys:
//! - `acknowledged`: network key (33) || plan id (32)
//! - `signed_inputs`: txid (32) || vout (u32 LE) -> plan id (32)
//! - `plan_markers`: network key (33) || plan id (32) || attempt (u32 LE)
//! - `batch_markers`: batch key (32) || network (1) || batch id (u32 LE) || attempt (u32 LE)
//! - `batches`: network (1) || batch id (u32 LE) -> hash of the signed batch message (32)

use std::path::Path;

use rocksdb::{ColumnFamilyDescriptor, Options, WriteBatch, WriteOptions, DB};
use schema::{
    hashes::PlanId,
    ids::{BatchId, NetworkId},
    keys::NetworkKey,
    messages::coordinator::PlansAcknowledged,
    plan::OutputId,
    sign_id::{BatchSignId, PlanSignId, SignIdPart},
};
use thiserror::Error;

use crate::policy::{BatchApproval, HistoryError, PlanApproval, PolicyHistory};

const ACKNOWLEDGED: &str = "acknowledged";
const SIGNED_INPUTS: &str = "signed_inputs";
const PLAN_MARKERS: &str = "plan_markers";
const BATCH_MARKERS: &str = "batch_markers";
const BATCHES: &str = "batches";
const COLUMN_FAMILIES: [&str; 5] = [
    ACKNOWLEDGED,
    SIGNED_INPUTS,
    PLAN_MARKERS,
    BATCH_MARKERS,
    BATCHES,
];

/// A policy database operation failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PolicyDbError {
    /// RocksDB failed.
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    /// A column family is missing from an opened database.
    #[error("column family {0} missing")]
    MissingColumnFamily(&'static str),
    /// A stored value has the wrong size: the database is damaged.
    #[error("damaged value in {0}")]
    Damaged(&'static str),
}

/// The enclave's policy database.
pub struct PolicyDb {
    db: DB,
}

impl PolicyDb {
    /// Opens (creating if missing) the database in `path`.
    ///
    /// # Errors
    /// RocksDB cannot open the directory.
    pub fn open(path: &Path) -> Result<Self, PolicyDbError> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        let families = COLUMN_FAMILIES
            .iter()
            .map(|name| ColumnFamilyDescriptor::new(*name, Options::default()));
        Ok(PolicyDb {
            db: DB::open_cf_descriptors(&options, path, families)?,
        })
    }

    /// Records every plan id of a verified acknowledgement, in one synced write.
    ///
    /// # Errors
    /// RocksDB failed; nothing was recorded.
    pub fn record_acknowledgement(
        &self,
        acknowledged: &PlansAcknowledged,
    ) -> Result<(), PolicyDbError> {
        let cf = self.cf(ACKNOWLEDGED)?;
        let mut batch = WriteBatch::default();
        for plan in &acknowledged.plans {
            batch.put_cf(cf, acknowledged_key(&acknowledged.key, plan), []);
        }
        self.commit(batch)
    }

    /// Records a plan approval (its attempt marker and its inputs) in one synced write. Call
    /// before the preprocess leaves the enclave.
    ///
    /// # Errors
    /// RocksDB failed; nothing was recorded, and the preprocess must not leave.
    pub fn record_plan_approval(&self, approval: &PlanApproval) -> Result<(), PolicyDbError> {
        let mut batch = WriteBatch::default();
        batch.put_cf(
            self.cf(PLAN_MARKERS)?,
            plan_marker_key(&approval.marker),
            [],
        );
        let inputs = self.cf(SIGNED_INPUTS)?;
        for input in &approval.inputs {
            batch.put_cf(inputs, input_key(input), approval.marker.id.as_bytes());
        }
        self.commit(batch)
    }

    /// Records a batch approval (its attempt marker and the message signed under its id) in
    /// one synced write. Call before the preprocess leaves the enclave.
    ///
    /// # Errors
    /// RocksDB failed; nothing was recorded, and the preprocess must not leave.
    pub fn record_batch_approval(&self, approval: &BatchApproval) -> Result<(), PolicyDbError> {
        let mut batch = WriteBatch::default();
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
        self.commit(batch)
    }

    fn commit(&self, batch: WriteBatch) -> Result<(), PolicyDbError> {
        let mut options = WriteOptions::default();
        options.set_sync(true);
        Ok(self.db.write_opt(batch, &options)?)
    }

    fn cf(&self, name: &'static str) -> Result<&rocksdb::ColumnFamily, PolicyDbError> {
        self.db
            .cf_handle(name)
            .ok_or(PolicyDbError::MissingColumnFamily(name))
    }

    fn get(&self, name: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>, PolicyDbError> {
        Ok(self.db.get_cf(self.cf(name)?, key)?)
    }

    fn get_32(&self, name: &'static str, key: &[u8]) -> Result<Option<[u8; 32]>, PolicyDbError> {
        self.get(name, key)?
            .map(|value| {
                <[u8; 32]>::try_from(value.as_slice()).map_err(|_| PolicyDbError::Damaged(name))
            })
            .transpose()
    }
}

fn history<T>(result: Result<T, PolicyDbError>) -> Result<T, HistoryError> {
    result.map_err(|error| HistoryError(error.to_string()))
}

impl PolicyHistory for PolicyDb {
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
}

fn acknowledged_key(key: &NetworkKey, plan: &PlanId) -> Vec<u8> {
    [&key.to_bytes()[..], plan.as_bytes()].concat()
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
