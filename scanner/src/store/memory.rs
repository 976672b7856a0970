//! Scanning's state in memory: the twin of the RocksDB store for fast tests and the
//! simulation. `apply` changes everything under one lock, so a reader sees all of a
//! `ScanChanges` or none; dropping the store is losing the disk, and a crash is dropping
//! everything but the store.

use std::{
    collections::BTreeMap,
    sync::{Mutex, MutexGuard, PoisonError},
};

use schema::{
    batch::Batch,
    hashes::PlanId,
    ids::{Attempt, BatchId, MessageId, SeraiBlockNumber},
    keys::NetworkKey,
    messages::ProcessorEnvelope,
    plan::{OutputId, Plan},
    wire,
};

use super::{InFlight, ProcessorChanges, ProcessorStore, ScanChanges, ScanStore, ScanView, Spend};
use crate::{
    chain::ChainTransaction,
    rotation::Rotation,
    scan::eventuality::{Eventuality, Outcome},
    scan::outputs::ReceivedOutput,
    schedule::state as scheduler_state,
    schedule::Scheduler,
    store::db::{DbError, ScannedKey, Unsettled},
};

/// Where an output sits in `outputs`: by height, then transaction id, then index, the order
/// the RocksDB store's keys sort in.
type OutputPlace = (u64, [u8; 32], u32);

#[derive(Debug, Default)]
struct State {
    keys: BTreeMap<[u8; 33], ScannedKey>,
    blocks: BTreeMap<u64, [u8; 32]>,
    outputs: BTreeMap<OutputPlace, ReceivedOutput>,
    ours: BTreeMap<OutputId, ()>,
    spends: BTreeMap<OutputId, Spend>,
    batches: BTreeMap<u32, Batch>,
    next_batch_id: u32,
    eventualities: BTreeMap<PlanId, Eventuality>,
    eventuality_inputs: BTreeMap<OutputId, PlanId>,
    outcomes: BTreeMap<PlanId, Outcome>,
    outbox: BTreeMap<u64, ProcessorEnvelope>,
    next_outbox_id: u64,
    last_handled: u64,
    rotation: Rotation,
    next_batch_to_sign: u32,
    batch_attempts: BTreeMap<u32, Attempt>,
    acknowledged: BTreeMap<[u8; 33], u64>,
    /// Schedulers in their stored byte form, as RocksDB holds them, so the codec is exercised.
    schedulers: BTreeMap<[u8; 33], Vec<u8>>,
    last_serai_block: Option<SeraiBlockNumber>,
    plans: BTreeMap<PlanId, Plan>,
    signed: BTreeMap<PlanId, Unsettled>,
    in_flight: BTreeMap<PlanId, InFlight>,
}

/// Scanning's state in memory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
    /// Writes left before every write fails (`None`: never), to crash a processor between two
    /// of its commits.
    writes_left: Mutex<Option<u64>>,
}

fn key_bytes(key: &NetworkKey) -> [u8; 33] {
    key.to_bytes()
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryStore::default()
    }

    /// From now on, `writes` more writes succeed, then every write fails with
    /// `DbError::Crashed` applying nothing (`None`: writes succeed again). The simulation
    /// crashes a processor this way in the middle of a step, between any two of its commits.
    pub fn fail_after_writes(&self, writes: Option<u64>) {
        *self
            .writes_left
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = writes;
    }

    /// Whether this write may go ahead, counting it.
    fn write_allowed(&self) -> Result<(), DbError> {
        let mut left = self
            .writes_left
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match left.as_mut() {
            None => Ok(()),
            Some(0) => Err(DbError::Crashed),
            Some(count) => {
                *count -= 1;
                Ok(())
            }
        }
    }

    /// The state. A poisoned lock is taken over: `State::apply` has no step that can panic,
    /// so no holder can have left the state half-changed.
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Refuses what the RocksDB store could not encode (a Batch, plan or message over its size
/// limit), before anything is applied, as RocksDB's commit would fail.
fn encodable(scan: &ScanChanges, plans: &[Plan]) -> Result<(), DbError> {
    for batch in &scan.batches {
        wire::encode(batch)?;
    }
    for plan in plans {
        wire::encode(plan)?;
    }
    for message in &scan.outbox {
        wire::encode(&ProcessorEnvelope {
            id: MessageId(0),
            message: message.clone(),
        })?;
    }
    Ok(())
}

impl State {
    fn apply(&mut self, changes: &ScanChanges) {
        if let Some((height, hash)) = changes.block {
            self.blocks.insert(height, hash);
        }
        for key in &changes.keys {
            self.keys.insert(key_bytes(&key.key), *key);
        }
        for (height, output) in &changes.outputs {
            self.outputs
                .insert((*height, output.id.txid.0, output.id.vout), output.clone());
            self.ours.insert(output.id, ());
        }
        for batch in &changes.batches {
            self.batches.insert(batch.id.0, batch.clone());
            self.next_batch_id = batch.id.0.saturating_add(1);
        }
        for (outputs, spend) in &changes.spends {
            // Kept as the RocksDB store keeps it: id, inputs and outputs, not the data.
            let kept = Spend {
                height: spend.height,
                transaction: ChainTransaction {
                    data: None,
                    ..spend.transaction.clone()
                },
            };
            for output in outputs {
                self.spends.insert(*output, kept.clone());
            }
        }
        for eventuality in &changes.eventualities {
            self.eventualities
                .insert(eventuality.plan, eventuality.clone());
            for input in &eventuality.inputs {
                self.eventuality_inputs.insert(*input, eventuality.plan);
            }
        }
        for (eventuality, outcome) in &changes.outcomes {
            self.outcomes.insert(eventuality.plan, *outcome);
            self.eventualities.remove(&eventuality.plan);
            // Settled: nothing of the family to publish any more.
            for plan in eventuality.plans() {
                self.signed.remove(&plan);
            }
            for input in &eventuality.inputs {
                self.eventuality_inputs.remove(input);
            }
        }
        if !changes.outbox.is_empty() {
            let mut next = self.next_outbox_id.max(1);
            for message in &changes.outbox {
                self.outbox.insert(
                    next,
                    ProcessorEnvelope {
                        id: MessageId(next),
                        message: message.clone(),
                    },
                );
                next += 1;
            }
            self.next_outbox_id = next;
        }
    }

    fn commit(&mut self, changes: &ProcessorChanges) {
        for signed in &changes.signed {
            let family = self
                .plans
                .get(&signed.plan)
                .map_or(signed.plan, Plan::family);
            if !self.outcomes.contains_key(&family) {
                self.signed.insert(signed.plan, signed.clone());
            }
        }
        self.apply(&changes.scan);
        if let Some(id) = changes.handled {
            self.last_handled = id.0;
        }
        if let Some(rotation) = &changes.rotation {
            self.rotation = rotation.clone();
        }
        if let Some(next) = changes.next_batch_to_sign {
            self.next_batch_to_sign = next;
        }
        for (id, attempt) in &changes.batch_attempts {
            match attempt {
                Some(attempt) => self.batch_attempts.insert(id.0, *attempt),
                None => self.batch_attempts.remove(&id.0),
            };
        }
        for (key, height) in &changes.acknowledged {
            self.acknowledged.insert(key_bytes(key), *height);
        }
        for scheduler in &changes.schedulers {
            self.schedulers.insert(
                key_bytes(scheduler.key()),
                scheduler_state::encode(scheduler),
            );
        }
        if let Some(block) = changes.last_serai_block {
            self.last_serai_block = Some(block);
        }
        for plan in &changes.plans {
            self.plans.insert(plan.id(), plan.clone());
        }
        for flight in &changes.in_flight {
            self.in_flight.insert(flight.family, *flight);
        }
        for family in &changes.landed {
            self.in_flight.remove(family);
        }
    }
}

impl ScanView for MemoryStore {
    fn keys(&self) -> Result<Vec<ScannedKey>, DbError> {
        Ok(self.state().keys.values().copied().collect())
    }

    fn block_hash(&self, height: u64) -> Result<Option<[u8; 32]>, DbError> {
        Ok(self.state().blocks.get(&height).copied())
    }

    fn next_batch_id(&self) -> Result<BatchId, DbError> {
        Ok(BatchId(self.state().next_batch_id))
    }

    fn watches(&self, output: &OutputId) -> Result<bool, DbError> {
        let state = self.state();
        Ok(state.ours.contains_key(output) || state.eventuality_inputs.contains_key(output))
    }

    fn is_ours(&self, output: &OutputId) -> Result<bool, DbError> {
        Ok(self.state().ours.contains_key(output))
    }

    fn spent_by(&self, output: &OutputId) -> Result<Option<Spend>, DbError> {
        Ok(self.state().spends.get(output).cloned())
    }

    fn outputs(&self, from: u64, to: u64) -> Result<Vec<(u64, ReceivedOutput)>, DbError> {
        if from > to {
            return Ok(Vec::new());
        }
        Ok(self
            .state()
            .outputs
            .range((from, [0; 32], 0)..=(to, [0xff; 32], u32::MAX))
            .map(|((height, _, _), output)| (*height, output.clone()))
            .collect())
    }

    fn batches_from(&self, first: BatchId) -> Result<Vec<Batch>, DbError> {
        Ok(self
            .state()
            .batches
            .range(first.0..)
            .map(|(_, batch)| batch.clone())
            .collect())
    }

    fn eventuality_spending(&self, input: &OutputId) -> Result<Option<Eventuality>, DbError> {
        let state = self.state();
        Ok(state
            .eventuality_inputs
            .get(input)
            .and_then(|plan| state.eventualities.get(plan))
            .cloned())
    }

    fn outcome(&self, plan: &PlanId) -> Result<Option<Outcome>, DbError> {
        Ok(self.state().outcomes.get(plan).copied())
    }

    fn outbox(&self) -> Result<Vec<ProcessorEnvelope>, DbError> {
        Ok(self.state().outbox.values().cloned().collect())
    }
}

impl ScanStore for MemoryStore {
    fn apply(&self, changes: &ScanChanges) -> Result<(), DbError> {
        encodable(changes, &[])?;
        self.write_allowed()?;
        self.state().apply(changes);
        Ok(())
    }

    fn delivered(&self, id: MessageId) -> Result<(), DbError> {
        self.write_allowed()?;
        self.state().outbox.remove(&id.0);
        Ok(())
    }
}

impl ProcessorStore for MemoryStore {
    fn last_handled(&self) -> Result<MessageId, DbError> {
        Ok(MessageId(self.state().last_handled))
    }

    fn outbox_len(&self) -> Result<usize, DbError> {
        Ok(self.state().outbox.len())
    }

    fn rotation(&self) -> Result<Rotation, DbError> {
        Ok(self.state().rotation.clone())
    }

    fn next_batch_to_sign(&self) -> Result<u32, DbError> {
        Ok(self.state().next_batch_to_sign)
    }

    fn batch_attempt(&self, id: BatchId) -> Result<Attempt, DbError> {
        Ok(self
            .state()
            .batch_attempts
            .get(&id.0)
            .copied()
            .unwrap_or(Attempt(0)))
    }

    fn batch(&self, id: BatchId) -> Result<Option<Batch>, DbError> {
        Ok(self.state().batches.get(&id.0).cloned())
    }

    fn acknowledged(&self, key: &NetworkKey) -> Result<Option<u64>, DbError> {
        Ok(self.state().acknowledged.get(&key_bytes(key)).copied())
    }

    fn scheduler(&self, key: &NetworkKey) -> Result<Option<Scheduler>, DbError> {
        match self.state().schedulers.get(&key_bytes(key)) {
            Some(bytes) => Ok(Some(scheduler_state::decode(bytes)?)),
            None => Ok(None),
        }
    }

    fn last_serai_block(&self) -> Result<Option<SeraiBlockNumber>, DbError> {
        Ok(self.state().last_serai_block)
    }

    fn plan(&self, id: &PlanId) -> Result<Option<Plan>, DbError> {
        Ok(self.state().plans.get(id).cloned())
    }

    fn unsettled(&self) -> Result<Vec<Unsettled>, DbError> {
        Ok(self.state().signed.values().cloned().collect())
    }

    fn in_flight(&self) -> Result<Vec<InFlight>, DbError> {
        Ok(self.state().in_flight.values().copied().collect())
    }

    fn commit_changes(&self, changes: &ProcessorChanges) -> Result<(), DbError> {
        encodable(&changes.scan, &changes.plans)?;
        self.write_allowed()?;
        self.state().commit(changes);
        Ok(())
    }
}
