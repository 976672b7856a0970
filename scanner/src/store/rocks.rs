//! The RocksDB store: `Db` read through `ScanView` and `ProcessorStore`, and each
//! `ScanChanges` or `ProcessorChanges` staged into one `WriteBatch` and committed with a synced
//! WAL: all of it or none.

use rocksdb::WriteBatch;
use schema::{
    batch::Batch,
    hashes::PlanId,
    ids::{Attempt, BatchId, MessageId, SeraiBlockNumber},
    keys::NetworkKey,
    messages::ProcessorEnvelope,
    plan::{OutputId, Plan},
};

use super::{InFlight, ProcessorChanges, ProcessorStore, ScanChanges, ScanStore, ScanView, Spend};
use crate::{
    rotation::Rotation,
    scan::eventuality::{Eventuality, Outcome},
    scan::outputs::ReceivedOutput,
    schedule::Scheduler,
    store::db::{Db, DbError, ScannedKey, Unsettled},
};

impl Db {
    /// Adds `changes` to `write`, in the order `ScanStore::apply` defines: eventualities are
    /// registered before outcomes close them. One call per write batch: the outbox's next id
    /// is read from the database, not from the batch.
    ///
    /// # Errors
    /// A record does not encode, or RocksDB failed reading the outbox's next id.
    pub(crate) fn stage(
        &self,
        write: &mut WriteBatch,
        changes: &ScanChanges,
    ) -> Result<(), DbError> {
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
        for (outputs, spend) in &changes.spends {
            for output in outputs {
                self.put_spend(write, output, spend)?;
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

    /// Adds `changes` to `write`, in the order `ProcessorStore::commit_changes` defines: signed
    /// transactions of plans not settled yet first, then scanning's share (whose outcomes
    /// delete a settled plan's signed transaction), then the rest. One call per write batch:
    /// the outbox's next id is read from the database, not from the batch.
    ///
    /// # Errors
    /// As `stage`.
    fn stage_processor(
        &self,
        write: &mut WriteBatch,
        changes: &ProcessorChanges,
    ) -> Result<(), DbError> {
        for signed in &changes.signed {
            let family = self
                .plan(&signed.plan)?
                .map_or(signed.plan, |plan| plan.family());
            if self.outcome(&family)?.is_none() {
                self.put_signed(write, &signed.plan, signed.signed_at, &signed.transaction)?;
            }
        }
        self.stage(write, &changes.scan)?;
        if let Some(id) = changes.handled {
            self.put_handled(write, id)?;
        }
        if let Some(rotation) = &changes.rotation {
            self.put_rotation(write, rotation)?;
        }
        if let Some(next) = changes.next_batch_to_sign {
            self.put_next_batch_to_sign(write, next)?;
        }
        for (id, attempt) in &changes.batch_attempts {
            match attempt {
                Some(attempt) => self.put_batch_attempt(write, *id, *attempt)?,
                None => self.delete_batch_attempt(write, *id)?,
            }
        }
        for (key, height) in &changes.acknowledged {
            self.put_acknowledged(write, key, *height)?;
        }
        for scheduler in &changes.schedulers {
            self.put_scheduler(write, scheduler)?;
        }
        if let Some(block) = changes.last_serai_block {
            self.put_last_serai_block(write, block)?;
        }
        for plan in &changes.plans {
            self.put_plan(write, plan)?;
        }
        for flight in &changes.in_flight {
            self.put_in_flight(write, flight)?;
        }
        for family in &changes.landed {
            self.delete_in_flight(write, family)?;
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

    fn watches(&self, output: &OutputId) -> Result<bool, DbError> {
        Ok(Db::watches(self, output))
    }

    fn is_ours(&self, output: &OutputId) -> Result<bool, DbError> {
        Db::is_ours(self, output)
    }

    fn spent_by(&self, output: &OutputId) -> Result<Option<Spend>, DbError> {
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

impl ProcessorStore for Db {
    fn last_handled(&self) -> Result<MessageId, DbError> {
        Db::last_handled(self)
    }

    fn outbox_len(&self) -> Result<usize, DbError> {
        Db::outbox_len(self)
    }

    fn rotation(&self) -> Result<Rotation, DbError> {
        Db::rotation(self)
    }

    fn next_batch_to_sign(&self) -> Result<u32, DbError> {
        Db::next_batch_to_sign(self)
    }

    fn batch_attempt(&self, id: BatchId) -> Result<Attempt, DbError> {
        Db::batch_attempt(self, id)
    }

    fn batch(&self, id: BatchId) -> Result<Option<Batch>, DbError> {
        Db::batch(self, id)
    }

    fn acknowledged(&self, key: &NetworkKey) -> Result<Option<u64>, DbError> {
        Db::acknowledged(self, key)
    }

    fn scheduler(&self, key: &NetworkKey) -> Result<Option<Scheduler>, DbError> {
        Db::scheduler(self, key)
    }

    fn last_serai_block(&self) -> Result<Option<SeraiBlockNumber>, DbError> {
        Db::last_serai_block(self)
    }

    fn plan(&self, id: &PlanId) -> Result<Option<Plan>, DbError> {
        Db::plan(self, id)
    }

    fn unsettled(&self) -> Result<Vec<Unsettled>, DbError> {
        Db::unsettled(self)
    }

    fn in_flight(&self) -> Result<Vec<InFlight>, DbError> {
        Db::in_flight(self)
    }

    fn commit_changes(&self, changes: &ProcessorChanges) -> Result<(), DbError> {
        let mut write = WriteBatch::default();
        self.stage_processor(&mut write, changes)?;
        self.commit(write)
    }
}
