//! Where scanning keeps its state, as traits: what a block's scan reads (`ScanView`) and the
//! one atomic write of everything it changes (`ScanStore::apply` of a `ScanChanges`). The
//! scanning core (`scan::block`) is a pure function from a view and a block to the changes;
//! the store applies them all or none. Two implementations hold to the same behaviour, checked
//! by one conformance suite (`scanner/tests/store_conformance.rs`): RocksDB (`db::Db`, through
//! `rocks`) for the node, and memory (`memory::MemoryStore`) for fast tests and the simulation.
//!
//! The processor's state around scanning (messages handled, the Batch signing watermark, the
//! schedulers, plans and their signed transactions) is `ProcessorStore`: everything one
//! coordinator message causes is one `ProcessorChanges`, committed with its "handled" marker.

pub mod db;
pub mod memory;
pub mod records;
mod rocks;

use schema::{
    batch::Batch,
    hashes::PlanId,
    ids::{Attempt, BatchId, MessageId, SeraiBlockNumber},
    keys::NetworkKey,
    messages::{ProcessorEnvelope, ProcessorMessage},
    plan::{OutputId, Plan},
};

use crate::{
    chain::ChainTransaction,
    rotation::Rotation,
    scan::eventuality::{Eventuality, Outcome},
    scan::outputs::ReceivedOutput,
    schedule::Scheduler,
    store::db::{DbError, ScannedKey, Unsettled},
};

/// What scanning reads of its state.
pub trait ScanView {
    /// Every key being scanned, by key bytes.
    ///
    /// # Errors
    /// The store failed or a record is damaged.
    fn keys(&self) -> Result<Vec<ScannedKey>, DbError>;

    /// The hash of the finalized block scanned at `height`.
    ///
    /// # Errors
    /// As `keys`.
    fn block_hash(&self, height: u64) -> Result<Option<[u8; 32]>, DbError>;

    /// The id the next Batch built gets.
    ///
    /// # Errors
    /// As `keys`.
    fn next_batch_id(&self) -> Result<BatchId, DbError>;

    /// Whether `output` may be one of ours or an open eventuality's input: never `false` for
    /// one that is, and cheap, for scanning asks it of every input of every transaction and
    /// reads the exact answers (`is_ours`, `eventuality_spending`) only on `true`.
    ///
    /// # Errors
    /// As `keys`.
    fn watches(&self, output: &OutputId) -> Result<bool, DbError>;

    /// Whether the output was received by one of our keys.
    ///
    /// # Errors
    /// As `keys`.
    fn is_ours(&self, output: &OutputId) -> Result<bool, DbError>;

    /// The transaction that spent one of our outputs, if one was scanned (its id, inputs and
    /// outputs; not its data), with its block's height.
    ///
    /// # Errors
    /// As `keys`.
    fn spent_by(&self, output: &OutputId) -> Result<Option<Spend>, DbError>;

    /// Every output received in blocks `from..=to`, by height, then transaction id, then
    /// output index.
    ///
    /// # Errors
    /// As `keys`.
    fn outputs(&self, from: u64, to: u64) -> Result<Vec<(u64, ReceivedOutput)>, DbError>;

    /// The Batches built with ids from `first` on, by id.
    ///
    /// # Errors
    /// As `keys`.
    fn batches_from(&self, first: BatchId) -> Result<Vec<Batch>, DbError>;

    /// The open eventuality spending `input`, if any.
    ///
    /// # Errors
    /// As `keys`.
    fn eventuality_spending(&self, input: &OutputId) -> Result<Option<Eventuality>, DbError>;

    /// How a plan's eventuality ended, if it did.
    ///
    /// # Errors
    /// As `keys`.
    fn outcome(&self, plan: &PlanId) -> Result<Option<Outcome>, DbError>;

    /// The outbound messages not yet delivered, in id order.
    ///
    /// # Errors
    /// As `keys`.
    fn outbox(&self) -> Result<Vec<ProcessorEnvelope>, DbError>;
}

/// Everything one input to scanning changes (a block scanned, a key added, an eventuality
/// registered), applied at once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanChanges {
    /// The finalized block scanned: its height and hash.
    pub block: Option<(u64, [u8; 32])>,
    /// Keys added or moved on.
    pub keys: Vec<ScannedKey>,
    /// Outputs received, with their block's height.
    pub outputs: Vec<(u64, ReceivedOutput)>,
    /// Batches built; the next batch id moves past the last.
    pub batches: Vec<Batch>,
    /// The transactions spending our outputs, each with the outputs of ours it spends.
    pub spends: Vec<(Vec<OutputId>, Spend)>,
    /// Eventualities to watch.
    pub eventualities: Vec<Eventuality>,
    /// Eventualities settled (after those registered above), closed with their outcome.
    pub outcomes: Vec<(Eventuality, Outcome)>,
    /// Messages for the coordinator, numbered after those already queued.
    pub outbox: Vec<ProcessorMessage>,
}

/// Scanning's state: read, and changed one `ScanChanges` at a time.
pub trait ScanStore: ScanView {
    /// Applies `changes` atomically and durably: after a crash, all of them or none.
    ///
    /// # Errors
    /// The store failed; nothing was applied.
    fn apply(&self, changes: &ScanChanges) -> Result<(), DbError>;

    /// Delivered: removes an outbound message.
    ///
    /// # Errors
    /// The store failed; nothing was removed.
    fn delivered(&self, id: MessageId) -> Result<(), DbError>;
}

/// Everything one coordinator message (or one started Batch signing) changes, committed at
/// once with the record that it was handled.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessorChanges {
    /// Scanning's share: keys added, eventualities registered or settled, messages queued.
    pub scan: ScanChanges,
    /// The coordinator message handled.
    pub handled: Option<MessageId>,
    /// The network's confirmed keys, when a key was confirmed or moved on a stage.
    pub rotation: Option<Rotation>,
    /// The first Batch whose signing has not started, moved on.
    pub next_batch_to_sign: Option<u32>,
    /// The attempt asked for a Batch not preprocessed yet (`None`: forgotten, once it is).
    pub batch_attempts: Vec<(BatchId, Option<Attempt>)>,
    /// The highest block acknowledged for a key.
    pub acknowledged: Vec<(NetworkKey, u64)>,
    /// Schedulers' new states.
    pub schedulers: Vec<Scheduler>,
    /// The Serai block handled.
    pub last_serai_block: Option<SeraiBlockNumber>,
    /// Plans made.
    pub plans: Vec<Plan>,
    /// Signed transactions to publish until their plans settle (left out for a plan whose
    /// family settled already).
    pub signed: Vec<Unsettled>,
    /// Plan families put in flight, or whose latest member changed.
    pub in_flight: Vec<InFlight>,
    /// Plan families no longer in flight (an input spent by a Serai block's network block).
    pub landed: Vec<PlanId>,
}

/// The transaction that spent one of our outputs, and the height of its block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spend {
    /// The block's height.
    pub height: u64,
    /// The transaction (id, inputs and outputs; not its data).
    pub transaction: ChainTransaction,
}

/// A plan family in flight: made for a Serai block, and none of its inputs spent as of the
/// network block of a later Serai block. Kept by the Serai blocks alone (never by scanning,
/// which runs ahead of them differently on every validator), so that every validator judges a
/// family stuck at the same Serai block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InFlight {
    /// The family's original plan.
    pub family: PlanId,
    /// The key it spends from.
    pub key: NetworkKey,
    /// The latest member: the original, or its latest replacement.
    pub latest: PlanId,
    /// The network block of the Serai block that made the original.
    pub made_at: u64,
    /// The network block of the Serai block that made the latest member (or the child).
    pub since: u64,
    /// The child paying for the family (CPFP), if one was made: a family gets one, and is not
    /// replaced after it (a replacement would evict the child).
    pub child: Option<PlanId>,
}

/// The processor's state: scanning's, and what the coordinator's messages change.
pub trait ProcessorStore: ScanStore {
    /// The id of the last coordinator message handled (0: none yet).
    ///
    /// # Errors
    /// The store failed or a record is damaged.
    fn last_handled(&self) -> Result<MessageId, DbError>;

    /// How many outbound messages wait for the coordinator.
    ///
    /// # Errors
    /// As `last_handled`.
    fn outbox_len(&self) -> Result<usize, DbError>;

    /// The network's confirmed keys and their stages (none before the first is confirmed).
    ///
    /// # Errors
    /// As `last_handled`.
    fn rotation(&self) -> Result<Rotation, DbError>;

    /// The id of the first Batch whose signing has not been started.
    ///
    /// # Errors
    /// As `last_handled`.
    fn next_batch_to_sign(&self) -> Result<u32, DbError>;

    /// The attempt a re-attempt asked for a Batch not preprocessed yet; 0 when none was.
    ///
    /// # Errors
    /// As `last_handled`.
    fn batch_attempt(&self, id: BatchId) -> Result<Attempt, DbError>;

    /// The Batch with id `id`, if it was built.
    ///
    /// # Errors
    /// As `last_handled`.
    fn batch(&self, id: BatchId) -> Result<Option<Batch>, DbError>;

    /// The highest block Serai acknowledged for `key`, if any.
    ///
    /// # Errors
    /// As `last_handled`.
    fn acknowledged(&self, key: &NetworkKey) -> Result<Option<u64>, DbError>;

    /// The stored scheduler of `key`, if one was stored.
    ///
    /// # Errors
    /// As `last_handled`.
    fn scheduler(&self, key: &NetworkKey) -> Result<Option<Scheduler>, DbError>;

    /// The last Serai block handled, if any.
    ///
    /// # Errors
    /// As `last_handled`.
    fn last_serai_block(&self) -> Result<Option<SeraiBlockNumber>, DbError>;

    /// A recorded plan.
    ///
    /// # Errors
    /// As `last_handled`.
    fn plan(&self, id: &PlanId) -> Result<Option<Plan>, DbError>;

    /// Signed transactions whose plans have not settled, by plan id.
    ///
    /// # Errors
    /// As `last_handled`.
    fn unsettled(&self) -> Result<Vec<Unsettled>, DbError>;

    /// Every plan family in flight, by its original's id.
    ///
    /// # Errors
    /// As `last_handled`.
    fn in_flight(&self) -> Result<Vec<InFlight>, DbError>;

    /// Commits `changes` atomically and durably. A signed transaction is kept only for a plan
    /// whose family has not settled, before or in this commit: it is recorded first, then scanning's
    /// share (whose outcomes delete the signed transactions of the plans they settle), then
    /// the rest.
    ///
    /// # Errors
    /// The store failed; nothing was committed.
    fn commit_changes(&self, changes: &ProcessorChanges) -> Result<(), DbError>;
}
