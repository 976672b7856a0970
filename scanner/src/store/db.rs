//! The scanner node's RocksDB: one database, a column family per concept. Every state change
//! caused by one input is written in one `WriteBatch` with the record that the input was
//! handled, with a synced WAL, so a crash leaves either all of it or none.
//!
//! Column families, by concept:
//! - `scheduler`: one scheduler state per key, by the key's bytes;
//! - `keys`: network key (33) -> activation height (u64 BE) || next height to scan (u64 BE);
//! - `blocks`: height (u64 BE) -> hash (32) of every finalized block scanned;
//! - `outputs`: height (u64 BE) || txid (32) || vout (u32 BE) -> `ReceivedOutput`;
//! - `batches`: batch id (u32 BE) -> the Batch (Cap'n Proto, `schema::wire`);
//! - `eventualities`: family (original plan) id -> `Eventuality` (the original's transaction
//!   and every replacement's outputs); `eventuality_inputs`: output id -> family id;
//! - `completions`: family (original plan) id -> outcome (`records::encode_outcome`);
//! - `ours`: output id -> nothing, for every output received;
//! - `spends`: output id (ours) -> the height and transaction that spent it (id, inputs,
//!   outputs), so a plan registered after its transaction was scanned still settles, and a
//!   Serai block judges a family by the spends up to its own network block;
//! - `in_flight`: family id -> `InFlight` (`records::encode_flight`), kept by Serai blocks;
//! - `plans`: plan id -> the Plan (Cap'n Proto);
//! - `signed`: plan id -> the node's height when it was signed (u64 BE) || its signed
//!   transaction (consensus bytes), republished until its family settles, then deleted;
//! - `outbox`: message id (u64 BE) -> `ProcessorEnvelope` (Cap'n Proto), until delivered;
//! - `meta`: `format` (u32 BE, `FORMAT`), `next_batch_id` (u32 BE), `acknowledged/` || key
//!   (u64 BE, per key: the last block whose outputs went to its scheduler), `last_handled`
//!   (u64 BE, the last coordinator message handled), `next_outbox_id` (u64 BE), `rotation`
//!   (`Rotation::encode`: the confirmed key pairs and their stages), `next_batch_to_sign` (u32 BE), `last_serai_block` (u64
//!   BE, the last Serai block handled), `batch_attempt/` || batch id (u32 BE) -> attempt
//!   (u32 BE): a re-attempt asked for a Batch still waiting for the enclave's window.
//!
//! What a processor step reads does not grow with history: Batches are read from the signing
//! watermark on, and a plan's signed transaction is deleted once its eventuality settles, a
//! delivered message once delivered, a family in flight once it landed. The column families a
//! step or a Serai block iterates (`signed`, `outbox`, `in_flight`) are compacted every
//! `TIDY_AFTER` deletions (and at open), so that iterating them does not wade through the
//! deleted entries' tombstones.

use std::{
    collections::HashSet,
    path::Path,
    sync::atomic::{AtomicU64, Ordering},
    sync::{PoisonError, RwLock},
};

use foldhash::fast::RandomState;
use rocksdb::{ColumnFamilyDescriptor, IteratorMode, Options, WriteBatch, WriteOptions, DB};
use schema::{
    batch::Batch,
    hashes::{PlanId, TransactionId},
    ids::{Attempt, BatchId, MessageId, SeraiBlockNumber},
    keys::NetworkKey,
    messages::{ProcessorEnvelope, ProcessorMessage},
    plan::{OutputId, Plan},
    wire,
};
use thiserror::Error;

use crate::{
    rotation::Rotation,
    scan::eventuality::{Eventuality, Outcome},
    scan::outputs::ReceivedOutput,
    schedule::state::{self as scheduler_state, StateError},
    schedule::Scheduler,
    store::records::{
        decode_eventuality, decode_flight, decode_outcome, decode_output, decode_spend,
        encode_eventuality, encode_flight, encode_outcome, encode_output, encode_spend,
    },
    store::{InFlight, Spend},
};

/// The scheduler states, by network key.
const CF_SCHEDULER: &str = "scheduler";
const CF_KEYS: &str = "keys";
const CF_BLOCKS: &str = "blocks";
const CF_OUTPUTS: &str = "outputs";
const CF_BATCHES: &str = "batches";
const CF_EVENTUALITIES: &str = "eventualities";
const CF_EVENTUALITY_INPUTS: &str = "eventuality_inputs";
const CF_COMPLETIONS: &str = "completions";
const CF_OUTBOX: &str = "outbox";
const CF_PLANS: &str = "plans";
const CF_OURS: &str = "ours";
const CF_SPENDS: &str = "spends";
const CF_SIGNED: &str = "signed";
const CF_IN_FLIGHT: &str = "in_flight";
const CF_META: &str = "meta";
const LAST_HANDLED: &[u8] = b"last_handled";
const FORMAT_NAME: &[u8] = b"format";

/// The format of what this build stores. A database of another format (or of data from before
/// formats were recorded) is refused at open, never misread; a change to any stored encoding
/// changes it (and comes with a migration when deployed databases must be kept).
pub const FORMAT: u32 = 3;
const ROTATION: &[u8] = b"rotation";
const NEXT_BATCH_TO_SIGN: &[u8] = b"next_batch_to_sign";
const NEXT_OUTBOX_ID: &[u8] = b"next_outbox_id";
const NEXT_BATCH_ID: &[u8] = b"next_batch_id";
const ACKNOWLEDGED: &[u8] = b"acknowledged/";
const LAST_SERAI_BLOCK: &[u8] = b"last_serai_block";

const COLUMN_FAMILIES: [&str; 15] = [
    CF_IN_FLIGHT,
    CF_OURS,
    CF_SPENDS,
    CF_OUTBOX,
    CF_PLANS,
    CF_SIGNED,
    CF_SCHEDULER,
    CF_KEYS,
    CF_BLOCKS,
    CF_OUTPUTS,
    CF_BATCHES,
    CF_EVENTUALITIES,
    CF_EVENTUALITY_INPUTS,
    CF_COMPLETIONS,
    CF_META,
];

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
    /// A stored value does not decode: the database is damaged.
    #[error("damaged value in {0}")]
    Damaged(&'static str),
    /// A Batch does not encode.
    #[error("batch: {0}")]
    Batch(#[from] schema::error::EncodeError),
    /// The memory store was told to fail its writes from some point on: a simulated crash
    /// between two commits.
    #[error("the store crashed (simulated); nothing of this write was applied")]
    Crashed,
    /// The database holds data in another format than this build's (`None`: from before
    /// formats were recorded). Nothing was changed; an older build's state is not read as if it
    /// were this one's.
    #[error("database format {found:?}, this build reads format {expected}; nothing was changed")]
    Format {
        /// The format recorded, if any.
        found: Option<u32>,
        /// `FORMAT`.
        expected: u32,
    },
}

/// A signed transaction whose plan has not settled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsettled {
    /// The plan.
    pub plan: PlanId,
    /// The node's height when it was signed.
    pub signed_at: u64,
    /// The transaction (consensus bytes).
    pub transaction: Vec<u8>,
}

/// A key being scanned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScannedKey {
    /// The key.
    pub key: NetworkKey,
    /// The first block scanned for it.
    pub activation: u64,
    /// The next block to scan for it.
    pub next: u64,
}

fn batch_attempt_name(id: BatchId) -> Vec<u8> {
    [&b"batch_attempt/"[..], &id.0.to_be_bytes()].concat()
}

/// The name of `key`'s acknowledged height in `meta`: each key's outputs go to its own
/// scheduler when a Serai block for that key acknowledges them, never to another's.
fn acknowledged_name(key: &NetworkKey) -> Vec<u8> {
    let mut name = ACKNOWLEDGED.to_vec();
    name.extend_from_slice(&key.to_bytes());
    name
}

/// The scanner node's database.
pub struct Db {
    db: DB,
    /// Deletions from `signed` and `outbox` since they were last compacted.
    deletions: AtomicU64,
    /// A fingerprint of every output in `ours` and every input of an eventuality: scanning
    /// asks of each input of every transaction whether it spends one of those, and almost none
    /// does, so the answer "no" comes from memory (about 10 bytes per output ever received)
    /// and only a match reads RocksDB. A fingerprint is added when its record is staged and
    /// never removed, so a stale one (a write that failed, a settled eventuality) only costs
    /// that read.
    watched: RwLock<HashSet<u64, RandomState>>,
}

/// An output's fingerprint in the `watched` index, from its key in `ours` and
/// `eventuality_inputs` (`OutputId::to_bytes`): 64 bits of its transaction id (a hash) mixed
/// with its index.
fn fingerprint(key: &[u8; 36]) -> u64 {
    let mut head = [0; 8];
    let mut vout = [0; 4];
    head.copy_from_slice(&key[..8]);
    vout.copy_from_slice(&key[32..]);
    u64::from_le_bytes(head) ^ u64::from(u32::from_le_bytes(vout)).rotate_left(32)
}

/// Deletions from the column families a step iterates after which they are compacted: a
/// compaction of what is left (a few entries) takes about a millisecond; iterating over ten
/// thousand tombstones took 0.6 ms on every step.
const TIDY_AFTER: u64 = 1_000;

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
        let db = Db {
            db: DB::open_cf_descriptors(&options, path, families)?,
            deletions: AtomicU64::new(0),
            watched: RwLock::new(HashSet::default()),
        };
        db.check_format()?;
        db.tidy()?;
        db.index_watched()?;
        Ok(db)
    }

    /// Records `FORMAT` in a new database; refuses one holding another format, or data but no
    /// format.
    fn check_format(&self) -> Result<(), DbError> {
        let meta = self.cf(CF_META)?;
        let found = match self.db.get_cf(meta, FORMAT_NAME)? {
            Some(value) => Some(
                <[u8; 4]>::try_from(value.as_slice())
                    .map(u32::from_be_bytes)
                    .map_err(|_| DbError::Damaged(CF_META))?,
            ),
            None => None,
        };
        match found {
            Some(FORMAT) => Ok(()),
            None if self.is_empty()? => {
                let mut batch = WriteBatch::default();
                batch.put_cf(meta, FORMAT_NAME, FORMAT.to_be_bytes());
                self.commit(batch)
            }
            found => Err(DbError::Format {
                found,
                expected: FORMAT,
            }),
        }
    }

    fn is_empty(&self) -> Result<bool, DbError> {
        for name in COLUMN_FAMILIES {
            if let Some(entry) = self
                .db
                .iterator_cf(self.cf(name)?, IteratorMode::Start)
                .next()
            {
                entry?;
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Fills the `watched` index from the column families it covers.
    fn index_watched(&self) -> Result<(), DbError> {
        let mut index = HashSet::default();
        for name in [CF_OURS, CF_EVENTUALITY_INPUTS] {
            for entry in self.db.iterator_cf(self.cf(name)?, IteratorMode::Start) {
                let (key, _) = entry?;
                let key = <&[u8; 36]>::try_from(&*key).map_err(|_| DbError::Damaged(name))?;
                index.insert(fingerprint(key));
            }
        }
        *self.watched.write().unwrap_or_else(PoisonError::into_inner) = index;
        Ok(())
    }

    fn watch(&self, output: &OutputId) {
        self.watched
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(fingerprint(&output.to_bytes()));
    }

    /// Whether `output` may be one of ours or an eventuality's input: never `false` for one
    /// that is, rarely `true` for one that is not. Answered from memory.
    pub fn watches(&self, output: &OutputId) -> bool {
        self.watched
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&fingerprint(&output.to_bytes()))
    }

    /// Compacts the column families a step iterates, dropping deleted entries' tombstones.
    fn tidy(&self) -> Result<(), DbError> {
        for name in [CF_SIGNED, CF_OUTBOX, CF_IN_FLIGHT] {
            self.db
                .compact_range_cf(self.cf(name)?, None::<&[u8]>, None::<&[u8]>);
        }
        self.deletions.store(0, Ordering::Relaxed);
        Ok(())
    }

    fn deleted(&self, count: u64) {
        self.deletions.fetch_add(count, Ordering::Relaxed);
    }

    /// Commits a batch durably (the WAL is synced before this returns).
    ///
    /// # Errors
    /// RocksDB failed; nothing of the batch was applied.
    pub fn commit(&self, batch: WriteBatch) -> Result<(), DbError> {
        let mut options = WriteOptions::default();
        options.set_sync(true);
        self.db.write_opt(batch, &options)?;
        if self.deletions.load(Ordering::Relaxed) >= TIDY_AFTER {
            self.tidy()?;
        }
        Ok(())
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

    /// Every key being scanned.
    ///
    /// # Errors
    /// RocksDB failed or a record is damaged.
    pub fn keys(&self) -> Result<Vec<ScannedKey>, DbError> {
        self.db
            .iterator_cf(self.cf(CF_KEYS)?, IteratorMode::Start)
            .map(|entry| {
                let (key, value) = entry?;
                let key = NetworkKey::from_slice(&key).map_err(|_| DbError::Damaged(CF_KEYS))?;
                let (activation, next) = value
                    .split_first_chunk::<8>()
                    .and_then(|(activation, rest)| Some((*activation, *rest.first_chunk::<8>()?)))
                    .ok_or(DbError::Damaged(CF_KEYS))?;
                Ok(ScannedKey {
                    key,
                    activation: u64::from_be_bytes(activation),
                    next: u64::from_be_bytes(next),
                })
            })
            .collect()
    }

    /// Adds (or moves) a key's scan position to `batch`.
    ///
    /// # Errors
    /// The column family is missing.
    pub fn put_key(&self, batch: &mut WriteBatch, key: &ScannedKey) -> Result<(), DbError> {
        let value = [key.activation.to_be_bytes(), key.next.to_be_bytes()].concat();
        batch.put_cf(self.cf(CF_KEYS)?, key.key.to_bytes(), value);
        Ok(())
    }

    /// The hash of the finalized block scanned at `height`.
    ///
    /// # Errors
    /// RocksDB failed or the record is damaged.
    pub fn block_hash(&self, height: u64) -> Result<Option<[u8; 32]>, DbError> {
        self.db
            .get_cf(self.cf(CF_BLOCKS)?, height.to_be_bytes())?
            .map(|value| {
                <[u8; 32]>::try_from(value.as_slice()).map_err(|_| DbError::Damaged(CF_BLOCKS))
            })
            .transpose()
    }

    /// Records a scanned block's hash in `batch`.
    ///
    /// # Errors
    /// The column family is missing.
    pub fn put_block_hash(
        &self,
        batch: &mut WriteBatch,
        height: u64,
        hash: &[u8; 32],
    ) -> Result<(), DbError> {
        batch.put_cf(self.cf(CF_BLOCKS)?, height.to_be_bytes(), hash);
        Ok(())
    }

    /// Records a received output in `batch`.
    ///
    /// # Errors
    /// The column family is missing.
    pub fn put_output(
        &self,
        batch: &mut WriteBatch,
        height: u64,
        output: &ReceivedOutput,
    ) -> Result<(), DbError> {
        let key = [
            &height.to_be_bytes()[..],
            &output.id.txid.0,
            &output.id.vout.to_be_bytes(),
        ]
        .concat();
        batch.put_cf(self.cf(CF_OUTPUTS)?, key, encode_output(output));
        batch.put_cf(self.cf(CF_OURS)?, output.id.to_bytes(), []);
        self.watch(&output.id);
        Ok(())
    }

    /// Whether the output was received by one of our keys.
    ///
    /// # Errors
    /// RocksDB failed.
    pub fn is_ours(&self, output: &OutputId) -> Result<bool, DbError> {
        Ok(self
            .db
            .get_pinned_cf(self.cf(CF_OURS)?, output.to_bytes())?
            .is_some())
    }

    /// Records the transaction spending one of our outputs, in `batch`.
    ///
    /// # Errors
    /// The column family is missing.
    pub fn put_spend(
        &self,
        batch: &mut WriteBatch,
        output: &OutputId,
        spend: &Spend,
    ) -> Result<(), DbError> {
        batch.put_cf(self.cf(CF_SPENDS)?, output.to_bytes(), encode_spend(spend));
        Ok(())
    }

    /// The transaction that spent one of our outputs, if one was scanned.
    ///
    /// # Errors
    /// RocksDB failed or the record is damaged.
    pub fn spent_by(&self, output: &OutputId) -> Result<Option<Spend>, DbError> {
        let Some(value) = self.db.get_cf(self.cf(CF_SPENDS)?, output.to_bytes())? else {
            return Ok(None);
        };
        decode_spend(&value)
            .map(Some)
            .ok_or(DbError::Damaged(CF_SPENDS))
    }

    /// Puts a plan family in flight, or moves it on, in `batch`.
    ///
    /// # Errors
    /// The column family is missing.
    pub fn put_in_flight(&self, batch: &mut WriteBatch, flight: &InFlight) -> Result<(), DbError> {
        batch.put_cf(
            self.cf(CF_IN_FLIGHT)?,
            flight.family.as_bytes(),
            encode_flight(flight),
        );
        Ok(())
    }

    /// Takes a plan family out of flight, in `batch`.
    ///
    /// # Errors
    /// The column family is missing.
    pub fn delete_in_flight(&self, batch: &mut WriteBatch, family: &PlanId) -> Result<(), DbError> {
        batch.delete_cf(self.cf(CF_IN_FLIGHT)?, family.as_bytes());
        self.deleted(1);
        Ok(())
    }

    /// Every plan family in flight, by its original's id.
    ///
    /// # Errors
    /// RocksDB failed or a record is damaged.
    pub fn in_flight(&self) -> Result<Vec<InFlight>, DbError> {
        self.db
            .iterator_cf(self.cf(CF_IN_FLIGHT)?, IteratorMode::Start)
            .map(|entry| {
                let (key, value) = entry?;
                let family =
                    <[u8; 32]>::try_from(&*key).map_err(|_| DbError::Damaged(CF_IN_FLIGHT))?;
                decode_flight(PlanId(family), &value).ok_or(DbError::Damaged(CF_IN_FLIGHT))
            })
            .collect()
    }

    /// Every output received in blocks `from..=to`, in order.
    ///
    /// # Errors
    /// RocksDB failed or a record is damaged.
    pub fn outputs(&self, from: u64, to: u64) -> Result<Vec<(u64, ReceivedOutput)>, DbError> {
        let mut found = Vec::new();
        let start = from.to_be_bytes();
        for entry in self.db.iterator_cf(
            self.cf(CF_OUTPUTS)?,
            IteratorMode::From(&start, rocksdb::Direction::Forward),
        ) {
            let (key, value) = entry?;
            let height = key
                .first_chunk::<8>()
                .map(|height| u64::from_be_bytes(*height))
                .ok_or(DbError::Damaged(CF_OUTPUTS))?;
            if height > to {
                break;
            }
            let txid = key
                .get(8..40)
                .and_then(|txid| <[u8; 32]>::try_from(txid).ok())
                .ok_or(DbError::Damaged(CF_OUTPUTS))?;
            let vout = key
                .get(40..44)
                .and_then(|vout| <[u8; 4]>::try_from(vout).ok())
                .ok_or(DbError::Damaged(CF_OUTPUTS))?;
            let id = OutputId {
                txid: TransactionId(txid),
                vout: u32::from_be_bytes(vout),
            };
            found.push((
                height,
                decode_output(id, &value).ok_or(DbError::Damaged(CF_OUTPUTS))?,
            ));
        }
        Ok(found)
    }

    /// The next batch id.
    ///
    /// # Errors
    /// RocksDB failed or the record is damaged.
    pub fn next_batch_id(&self) -> Result<BatchId, DbError> {
        match self.db.get_cf(self.cf(CF_META)?, NEXT_BATCH_ID)? {
            None => Ok(BatchId(0)),
            Some(value) => <[u8; 4]>::try_from(value.as_slice())
                .map(|id| BatchId(u32::from_be_bytes(id)))
                .map_err(|_| DbError::Damaged(CF_META)),
        }
    }

    /// Records a Batch and advances the batch id, in `batch`.
    ///
    /// # Errors
    /// The Batch does not encode, or a column family is missing.
    pub fn put_batch(&self, write: &mut WriteBatch, batch: &Batch) -> Result<(), DbError> {
        write.put_cf(
            self.cf(CF_BATCHES)?,
            batch.id.0.to_be_bytes(),
            wire::encode(batch)?,
        );
        write.put_cf(
            self.cf(CF_META)?,
            NEXT_BATCH_ID,
            batch.id.0.saturating_add(1).to_be_bytes(),
        );
        Ok(())
    }

    /// The highest block Serai acknowledged for `key` (whose outputs went to its scheduler),
    /// if any.
    ///
    /// # Errors
    /// RocksDB failed or the record is damaged.
    pub fn acknowledged(&self, key: &NetworkKey) -> Result<Option<u64>, DbError> {
        self.meta_u64(&acknowledged_name(key))
    }

    /// Records the highest block Serai acknowledged for `key`, in `batch`.
    ///
    /// # Errors
    /// The column family is missing.
    pub fn put_acknowledged(
        &self,
        batch: &mut WriteBatch,
        key: &NetworkKey,
        height: u64,
    ) -> Result<(), DbError> {
        batch.put_cf(
            self.cf(CF_META)?,
            acknowledged_name(key),
            height.to_be_bytes(),
        );
        Ok(())
    }

    fn meta_u64(&self, name: &[u8]) -> Result<Option<u64>, DbError> {
        self.db
            .get_cf(self.cf(CF_META)?, name)?
            .map(|value| {
                <[u8; 8]>::try_from(value.as_slice())
                    .map(u64::from_be_bytes)
                    .map_err(|_| DbError::Damaged(CF_META))
            })
            .transpose()
    }

    /// Records a plan, in `batch`.
    ///
    /// # Errors
    /// The plan does not encode, or the column family is missing.
    pub fn put_plan(&self, batch: &mut WriteBatch, plan: &Plan) -> Result<(), DbError> {
        batch.put_cf(
            self.cf(CF_PLANS)?,
            plan.id().as_bytes(),
            wire::encode(plan)?,
        );
        Ok(())
    }

    /// A recorded plan.
    ///
    /// # Errors
    /// RocksDB failed or the record is damaged.
    pub fn plan(&self, id: &PlanId) -> Result<Option<Plan>, DbError> {
        let Some(value) = self.db.get_cf(self.cf(CF_PLANS)?, id.as_bytes())? else {
            return Ok(None);
        };
        wire::decode(&value)
            .map(Some)
            .map_err(|_| DbError::Damaged(CF_PLANS))
    }

    /// Records a plan's signed transaction, to publish until it settles, in `batch`, with the
    /// node's height when it was signed. The caller leaves out a settled plan's transaction
    /// that arrives late.
    ///
    /// # Errors
    /// The column family is missing.
    pub fn put_signed(
        &self,
        batch: &mut WriteBatch,
        plan: &PlanId,
        height: u64,
        transaction: &[u8],
    ) -> Result<(), DbError> {
        let value = [&height.to_be_bytes()[..], transaction].concat();
        batch.put_cf(self.cf(CF_SIGNED)?, plan.as_bytes(), value);
        Ok(())
    }

    /// Signed transactions whose plans have not settled: the plan, the node's height when it
    /// was signed, and the transaction.
    ///
    /// # Errors
    /// RocksDB failed or a record is damaged.
    pub fn unsettled(&self) -> Result<Vec<Unsettled>, DbError> {
        self.db
            .iterator_cf(self.cf(CF_SIGNED)?, IteratorMode::Start)
            .map(|entry| {
                let (key, value) = entry?;
                let plan =
                    PlanId(<[u8; 32]>::try_from(&*key).map_err(|_| DbError::Damaged(CF_SIGNED))?);
                let (height, transaction) = value
                    .split_first_chunk::<8>()
                    .ok_or(DbError::Damaged(CF_SIGNED))?;
                Ok(Unsettled {
                    plan,
                    signed_at: u64::from_be_bytes(*height),
                    transaction: transaction.to_vec(),
                })
            })
            .collect()
    }

    /// The last Serai block handled, if any.
    ///
    /// # Errors
    /// RocksDB failed or the record is damaged.
    pub fn last_serai_block(&self) -> Result<Option<SeraiBlockNumber>, DbError> {
        Ok(self.meta_u64(LAST_SERAI_BLOCK)?.map(SeraiBlockNumber))
    }

    /// Records the last Serai block handled, in `batch`.
    ///
    /// # Errors
    /// The column family is missing.
    pub fn put_last_serai_block(
        &self,
        batch: &mut WriteBatch,
        block: SeraiBlockNumber,
    ) -> Result<(), DbError> {
        batch.put_cf(self.cf(CF_META)?, LAST_SERAI_BLOCK, block.0.to_be_bytes());
        Ok(())
    }

    /// The network's confirmed keys and their stages (none before the first is confirmed).
    ///
    /// # Errors
    /// RocksDB failed or the record is damaged.
    pub fn rotation(&self) -> Result<Rotation, DbError> {
        match self.db.get_cf(self.cf(CF_META)?, ROTATION)? {
            None => Ok(Rotation::default()),
            Some(value) => Rotation::decode(&value).ok_or(DbError::Damaged(CF_META)),
        }
    }

    /// Records the confirmed keys and their stages, in `batch`.
    ///
    /// # Errors
    /// The column family is missing.
    pub fn put_rotation(&self, batch: &mut WriteBatch, rotation: &Rotation) -> Result<(), DbError> {
        batch.put_cf(self.cf(CF_META)?, ROTATION, rotation.encode());
        Ok(())
    }

    /// The id of the first Batch whose signing has not been started.
    ///
    /// # Errors
    /// RocksDB failed or the record is damaged.
    pub fn next_batch_to_sign(&self) -> Result<u32, DbError> {
        match self.db.get_cf(self.cf(CF_META)?, NEXT_BATCH_TO_SIGN)? {
            None => Ok(0),
            Some(value) => <[u8; 4]>::try_from(value.as_slice())
                .map(u32::from_be_bytes)
                .map_err(|_| DbError::Damaged(CF_META)),
        }
    }

    /// Moves the signing watermark, in `batch`.
    ///
    /// # Errors
    /// The column family is missing.
    pub fn put_next_batch_to_sign(&self, batch: &mut WriteBatch, id: u32) -> Result<(), DbError> {
        batch.put_cf(self.cf(CF_META)?, NEXT_BATCH_TO_SIGN, id.to_be_bytes());
        Ok(())
    }

    /// The attempt a `BatchReattempt` asked for a Batch not preprocessed yet (waiting for the
    /// enclave's window), which its first preprocess then uses; 0 when none was asked.
    ///
    /// # Errors
    /// RocksDB failed or the record is damaged.
    pub fn batch_attempt(&self, id: BatchId) -> Result<Attempt, DbError> {
        match self.db.get_cf(self.cf(CF_META)?, batch_attempt_name(id))? {
            None => Ok(Attempt(0)),
            Some(value) => <[u8; 4]>::try_from(value.as_slice())
                .map(|attempt| Attempt(u32::from_be_bytes(attempt)))
                .map_err(|_| DbError::Damaged(CF_META)),
        }
    }

    /// Records the attempt asked for a Batch not preprocessed yet, in `batch`.
    ///
    /// # Errors
    /// The column family is missing.
    pub fn put_batch_attempt(
        &self,
        batch: &mut WriteBatch,
        id: BatchId,
        attempt: Attempt,
    ) -> Result<(), DbError> {
        batch.put_cf(
            self.cf(CF_META)?,
            batch_attempt_name(id),
            attempt.0.to_be_bytes(),
        );
        Ok(())
    }

    /// Forgets the attempt recorded for a Batch (once it is preprocessed), in `batch`.
    ///
    /// # Errors
    /// The column family is missing.
    pub fn delete_batch_attempt(&self, batch: &mut WriteBatch, id: BatchId) -> Result<(), DbError> {
        batch.delete_cf(self.cf(CF_META)?, batch_attempt_name(id));
        Ok(())
    }

    /// The id of the last coordinator message handled (0: none yet).
    ///
    /// # Errors
    /// RocksDB failed or the record is damaged.
    pub fn last_handled(&self) -> Result<MessageId, DbError> {
        Ok(MessageId(self.meta_u64(LAST_HANDLED)?.unwrap_or(0)))
    }

    /// Marks a coordinator message handled, in the batch holding its effects.
    ///
    /// # Errors
    /// The column family is missing.
    pub fn put_handled(&self, batch: &mut WriteBatch, id: MessageId) -> Result<(), DbError> {
        batch.put_cf(self.cf(CF_META)?, LAST_HANDLED, id.0.to_be_bytes());
        Ok(())
    }

    /// Queues outbound messages in `batch`, numbered after those already queued.
    ///
    /// # Errors
    /// A message does not encode, or RocksDB failed.
    pub fn put_outbox(
        &self,
        batch: &mut WriteBatch,
        messages: impl IntoIterator<Item = ProcessorMessage>,
    ) -> Result<(), DbError> {
        let mut next = self.meta_u64(NEXT_OUTBOX_ID)?.unwrap_or(1);
        let outbox = self.cf(CF_OUTBOX)?;
        for message in messages {
            let envelope = ProcessorEnvelope {
                id: MessageId(next),
                message,
            };
            batch.put_cf(outbox, next.to_be_bytes(), wire::encode(&envelope)?);
            next += 1;
        }
        batch.put_cf(self.cf(CF_META)?, NEXT_OUTBOX_ID, next.to_be_bytes());
        Ok(())
    }

    /// The outbound messages not yet delivered, in id order.
    ///
    /// # Errors
    /// RocksDB failed or a record is damaged.
    pub fn outbox(&self) -> Result<Vec<ProcessorEnvelope>, DbError> {
        self.db
            .iterator_cf(self.cf(CF_OUTBOX)?, IteratorMode::Start)
            .map(|entry| {
                let (_, value) = entry?;
                wire::decode(&value).map_err(|_| DbError::Damaged(CF_OUTBOX))
            })
            .collect()
    }

    /// Deletes a delivered outbound message.
    ///
    /// # Errors
    /// RocksDB failed.
    pub fn delivered(&self, id: MessageId) -> Result<(), DbError> {
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.cf(CF_OUTBOX)?, id.0.to_be_bytes());
        self.deleted(1);
        self.commit(batch)
    }

    /// Every Batch built, by id.
    ///
    /// # Errors
    /// RocksDB failed or a record is damaged.
    pub fn batches(&self) -> Result<Vec<Batch>, DbError> {
        self.batches_from(BatchId(0))
    }

    /// The Batches built with ids from `first` on, by id.
    ///
    /// # Errors
    /// RocksDB failed or a record is damaged.
    pub fn batches_from(&self, first: BatchId) -> Result<Vec<Batch>, DbError> {
        let start = first.0.to_be_bytes();
        self.db
            .iterator_cf(
                self.cf(CF_BATCHES)?,
                IteratorMode::From(&start, rocksdb::Direction::Forward),
            )
            .map(|entry| {
                let (_, value) = entry?;
                wire::decode(&value).map_err(|_| DbError::Damaged(CF_BATCHES))
            })
            .collect()
    }

    /// The Batch with id `id`, if it was built.
    ///
    /// # Errors
    /// RocksDB failed or the record is damaged.
    pub fn batch(&self, id: BatchId) -> Result<Option<Batch>, DbError> {
        self.db
            .get_cf(self.cf(CF_BATCHES)?, id.0.to_be_bytes())?
            .map(|value| wire::decode(&value).map_err(|_| DbError::Damaged(CF_BATCHES)))
            .transpose()
    }

    /// How many outbound messages wait for the coordinator (keys only, nothing decoded).
    ///
    /// # Errors
    /// RocksDB failed.
    pub fn outbox_len(&self) -> Result<usize, DbError> {
        let mut count = 0;
        let mut iterator = self.db.raw_iterator_cf(self.cf(CF_OUTBOX)?);
        iterator.seek_to_first();
        while iterator.valid() {
            count += 1;
            iterator.next();
        }
        iterator.status()?;
        Ok(count)
    }

    /// Registers a plan's eventuality in `batch`.
    ///
    /// # Errors
    /// A column family is missing.
    pub fn put_eventuality(
        &self,
        batch: &mut WriteBatch,
        eventuality: &Eventuality,
    ) -> Result<(), DbError> {
        batch.put_cf(
            self.cf(CF_EVENTUALITIES)?,
            eventuality.plan.as_bytes(),
            encode_eventuality(eventuality),
        );
        let inputs = self.cf(CF_EVENTUALITY_INPUTS)?;
        for input in &eventuality.inputs {
            batch.put_cf(inputs, input.to_bytes(), eventuality.plan.as_bytes());
            self.watch(input);
        }
        Ok(())
    }

    /// The open eventuality spending `input`, if any.
    ///
    /// # Errors
    /// RocksDB failed or a record is damaged.
    pub fn eventuality_spending(&self, input: &OutputId) -> Result<Option<Eventuality>, DbError> {
        let Some(plan) = self
            .db
            .get_cf(self.cf(CF_EVENTUALITY_INPUTS)?, input.to_bytes())?
        else {
            return Ok(None);
        };
        let Some(value) = self.db.get_cf(self.cf(CF_EVENTUALITIES)?, &plan)? else {
            return Ok(None);
        };
        let plan = <[u8; 32]>::try_from(plan.as_slice())
            .map_err(|_| DbError::Damaged(CF_EVENTUALITY_INPUTS))?;
        decode_eventuality(PlanId(plan), &value)
            .map(Some)
            .ok_or(DbError::Damaged(CF_EVENTUALITIES))
    }

    /// Closes an eventuality with its outcome, in `batch`.
    ///
    /// # Errors
    /// A column family is missing.
    pub fn put_outcome(
        &self,
        batch: &mut WriteBatch,
        eventuality: &Eventuality,
        outcome: Outcome,
    ) -> Result<(), DbError> {
        batch.put_cf(
            self.cf(CF_COMPLETIONS)?,
            eventuality.plan.as_bytes(),
            encode_outcome(&outcome),
        );
        batch.delete_cf(self.cf(CF_EVENTUALITIES)?, eventuality.plan.as_bytes());
        // Settled: nothing of the family to publish any more.
        let signed = self.cf(CF_SIGNED)?;
        for plan in eventuality.plans() {
            batch.delete_cf(signed, plan.as_bytes());
            self.deleted(1);
        }
        let inputs = self.cf(CF_EVENTUALITY_INPUTS)?;
        for input in &eventuality.inputs {
            batch.delete_cf(inputs, input.to_bytes());
        }
        Ok(())
    }

    /// How a plan's eventuality ended, if it did.
    ///
    /// # Errors
    /// RocksDB failed or the record is damaged.
    pub fn outcome(&self, plan: &PlanId) -> Result<Option<Outcome>, DbError> {
        let Some(value) = self.db.get_cf(self.cf(CF_COMPLETIONS)?, plan.as_bytes())? else {
            return Ok(None);
        };
        decode_outcome(&value)
            .map(Some)
            .ok_or(DbError::Damaged(CF_COMPLETIONS))
    }

    fn cf(&self, name: &'static str) -> Result<&rocksdb::ColumnFamily, DbError> {
        self.db
            .cf_handle(name)
            .ok_or(DbError::MissingColumnFamily(name))
    }
}
