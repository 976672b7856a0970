//! The scanner node's RocksDB: one database, a column family per concept. Every state change
//! caused by one input is written in one `WriteBatch` with the record that the input was
//! handled, with a synced WAL, so a crash leaves either all of it or none.
//!
//! Column families so far: `scheduler` (one scheduler state per key, by the key's bytes).

use std::path::Path;

use rocksdb::{ColumnFamilyDescriptor, Options, WriteBatch, WriteOptions, DB};
use schema::keys::NetworkKey;
use thiserror::Error;

use crate::{
    scheduler::Scheduler,
    scheduler_state::{self, StateError},
};

/// The scheduler states, by network key.
const CF_SCHEDULER: &str = "scheduler";

const COLUMN_FAMILIES: [&str; 1] = [CF_SCHEDULER];

/// A database operation failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum DbError {
    /// RocksDB failed (I/O, corruption, a lock held by another process).
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    /// A column family is missing from an opened database.
    #[error("column family {0} missing")]
    MissingColumnFamily(&'static str),
    /// A stored scheduler state does not decode.
    #[error("stored scheduler state: {0}")]
    State(#[from] StateError),
}

/// The scanner node's database.
pub struct Db {
    db: DB,
}

impl Db {
    /// Opens (creating if missing) the database in `path`.
    ///
    /// # Errors
    /// RocksDB cannot open the directory (missing permissions, held by another process).
    pub fn open(path: &Path) -> Result<Self, DbError> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        let families = COLUMN_FAMILIES
            .iter()
            .map(|name| ColumnFamilyDescriptor::new(*name, Options::default()));
        Ok(Db {
            db: DB::open_cf_descriptors(&options, path, families)?,
        })
    }

    /// Commits a batch durably (the WAL is synced before this returns).
    ///
    /// # Errors
    /// RocksDB failed; nothing of the batch was applied.
    pub fn commit(&self, batch: WriteBatch) -> Result<(), DbError> {
        let mut options = WriteOptions::default();
        options.set_sync(true);
        Ok(self.db.write_opt(batch, &options)?)
    }

    /// The stored scheduler of `key`, if one was stored.
    ///
    /// # Errors
    /// RocksDB failed, or the stored state is damaged.
    pub fn scheduler(&self, key: &NetworkKey) -> Result<Option<Scheduler>, DbError> {
        let cf = self.cf(CF_SCHEDULER)?;
        match self.db.get_cf(cf, key.to_bytes())? {
            Some(bytes) => Ok(Some(scheduler_state::decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Adds the scheduler's state to `batch`, replacing the stored one.
    ///
    /// # Errors
    /// The column family is missing.
    pub fn put_scheduler(
        &self,
        batch: &mut WriteBatch,
        scheduler: &Scheduler,
    ) -> Result<(), DbError> {
        let cf = self.cf(CF_SCHEDULER)?;
        batch.put_cf(
            cf,
            scheduler.key().to_bytes(),
            scheduler_state::encode(scheduler),
        );
        Ok(())
    }

    fn cf(&self, name: &'static str) -> Result<&rocksdb::ColumnFamily, DbError> {
        self.db
            .cf_handle(name)
            .ok_or(DbError::MissingColumnFamily(name))
    }
}
