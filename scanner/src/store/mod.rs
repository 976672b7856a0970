//! Where scanning keeps its state, as traits: what a block's scan reads (`ScanView`) and the
//! one atomic write of everything it changes (`ScanStore::apply` of a `ScanChanges`). The
//! scanning core (`scan::block`) is a pure function from a view and a block to the changes;
//! the store applies them all or none. Two implementations hold to the same behaviour, checked
//! by one conformance suite (`scanner/tests/store_conformance.rs`): RocksDB (`db::Db`, through
//! `rocks`) for the node, and memory (`memory::MemoryStore`) for fast tests and the simulation.

pub mod memory;
mod rocks;

use schema::{
    batch::Batch,
    hashes::PlanId,
    ids::BatchId,
    messages::{ProcessorEnvelope, ProcessorMessage},
    plan::OutputId,
};

use crate::{
    db::{DbError, ScannedKey},
    eventuality::{Eventuality, Outcome},
    network::ChainTransaction,
    outputs::ReceivedOutput,
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

    /// Whether the output was received by one of our keys.
    ///
    /// # Errors
    /// As `keys`.
    fn is_ours(&self, output: &OutputId) -> Result<bool, DbError>;

    /// The transaction that spent one of our outputs, if one was scanned (its id, inputs and
    /// outputs; not its data).
    ///
    /// # Errors
    /// As `keys`.
    fn spent_by(&self, output: &OutputId) -> Result<Option<ChainTransaction>, DbError>;

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
    pub spends: Vec<(Vec<OutputId>, ChainTransaction)>,
    /// Eventualities to watch.
    pub eventualities: Vec<Eventuality>,
    /// Eventualities settled (after those registered above), closed with their outcome.
    pub outcomes: Vec<(Eventuality, Outcome)>,
    /// Messages for the coordinator, numbered after those already queued.
    pub outbox: Vec<ProcessorMessage>,
}

impl ScanChanges {
    /// Whether applying it would change nothing.
    pub fn is_empty(&self) -> bool {
        *self == ScanChanges::default()
    }
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
    fn delivered(&self, id: schema::ids::MessageId) -> Result<(), DbError>;
}
