//! The RocksDB store: `Db` read through `ScanView`, and `ScanChanges` staged into one
//! `WriteBatch`, so a caller handling a coordinator message can commit them with its own
//! effects and its "handled" marker.

use rocksdb::WriteBatch;
use schema::{
    batch::Batch,
    hashes::PlanId,
    ids::{BatchId, MessageId},
    messages::ProcessorEnvelope,
    plan::OutputId,
};

use super::{ScanChanges, ScanStore, ScanView};
use crate::{
    db::{Db, DbError, ScannedKey},
    eventuality::{Eventuality, Outcome},
    network::ChainTransaction,
    outputs::ReceivedOutput,
};

impl Db {
    /// Adds `changes` to `write`, in the order `ScanStore::apply` defines: eventualities are
    /// registered before outcomes close them.
    ///
    /// # Errors
    /// A record does not encode, or RocksDB failed reading the outbox's next id.
    pub fn stage(&self, write: &mut WriteBatch, changes: &ScanChanges) -> Result<(), DbError> {
        if let Some((height, hash)) = &changes.block {
            self.put_block_hash(write, *height, hash)?;
        }
        for key in &changes.keys {
            self.put_key(write, key)?;
        }
        for (height, output) in &changes.outputs {
            self.put_output(write, *height, output)?;
        }
        for batch in &changes.batches {
            self.put_batch(write, batch)?;
        }
        for (outputs, transaction) in &changes.spends {
            for output in outputs {
                self.put_spend(write, output, transaction)?;
            }
        }
        for eventuality in &changes.eventualities {
            self.put_eventuality(write, eventuality)?;
        }
        for (eventuality, outcome) in &changes.outcomes {
            self.put_outcome(write, eventuality, *outcome)?;
        }
        if !changes.outbox.is_empty() {
            self.put_outbox(write, changes.outbox.iter().cloned())?;
        }
        Ok(())
    }
}

impl ScanView for Db {
    fn keys(&self) -> Result<Vec<ScannedKey>, DbError> {
        Db::keys(self)
    }

    fn block_hash(&self, height: u64) -> Result<Option<[u8; 32]>, DbError> {
        Db::block_hash(self, height)
    }

    fn next_batch_id(&self) -> Result<BatchId, DbError> {
        Db::next_batch_id(self)
    }

    fn is_ours(&self, output: &OutputId) -> Result<bool, DbError> {
        Db::is_ours(self, output)
    }

    fn spent_by(&self, output: &OutputId) -> Result<Option<ChainTransaction>, DbError> {
        Db::spent_by(self, output)
    }

    fn outputs(&self, from: u64, to: u64) -> Result<Vec<(u64, ReceivedOutput)>, DbError> {
        Db::outputs(self, from, to)
    }

    fn batches_from(&self, first: BatchId) -> Result<Vec<Batch>, DbError> {
        Db::batches_from(self, first)
    }

    fn eventuality_spending(&self, input: &OutputId) -> Result<Option<Eventuality>, DbError> {
        Db::eventuality_spending(self, input)
    }

    fn outcome(&self, plan: &PlanId) -> Result<Option<Outcome>, DbError> {
        Db::outcome(self, plan)
    }

    fn outbox(&self) -> Result<Vec<ProcessorEnvelope>, DbError> {
        Db::outbox(self)
    }
}

impl ScanStore for Db {
    fn apply(&self, changes: &ScanChanges) -> Result<(), DbError> {
        let mut write = WriteBatch::default();
        self.stage(&mut write, changes)?;
        self.commit(write)
    }

    fn delivered(&self, id: MessageId) -> Result<(), DbError> {
        Db::delivered(self, id)
    }
}
