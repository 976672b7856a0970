//! Scanning: every finalized block (`CONFIRMATIONS` deep, the block itself counted), in order,
//! for every key from its activation block on; each block's parent checked against the block
//! stored below it, so a reorganization below finality halts scanning with the state intact;
//! our outputs recorded, the block's Batches built under the next batch ids (for any block
//! holding our outputs), and plans' eventualities settled. Everything one block causes commits in one write batch with the scan
//! position, so a crash anywhere leaves a block either fully scanned or not at all.

use std::collections::{BTreeMap, BTreeSet};

use rocksdb::WriteBatch;
use schema::{
    batch::Batch,
    hashes::PlanId,
    ids::NetworkId,
    keys::{KeyPair, NetworkKey},
    messages::{sign, ProcessorMessage},
    plan::OutputKind,
    protocol::EMPTY_BATCH_INTERVAL,
};
use thiserror::Error;

use crate::{
    batch::batches_for,
    db::{Db, DbError, ScannedKey},
    eventuality::{Eventuality, Outcome},
    metrics::ScannerMetrics,
    network::{ChainBlock, Network, NetworkError},
    outputs::{hex_id, receive, ReceivedOutput},
};

/// Scanning stopped.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ScanError {
    /// The node failed; scanning resumes where it stopped on the next tick.
    #[error(transparent)]
    Network(#[from] NetworkError),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// A finalized block was replaced: the chain reorganized deeper than `CONFIRMATIONS`.
    /// Scanning stays halted, nothing is changed, an operator must look.
    #[error(
        "reorganization below finality at height {height}: expected {expected}, the node has {found}"
    )]
    ReorgBelowFinality {
        /// Where the chains differ.
        height: u64,
        /// The hash we finalized there.
        expected: String,
        /// The hash the node has now.
        found: String,
    },
}

/// What one tick did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// The node's tip.
    pub latest: u64,
    /// The highest finalized block, if any block is final yet.
    pub finalized: Option<u64>,
    /// Blocks scanned.
    pub scanned: u64,
    /// Batches built, in id order.
    pub batches: Vec<Batch>,
    /// Eventualities settled.
    pub outcomes: Vec<(PlanId, Outcome)>,
}

/// The scanner of one network.
pub struct Scanner<N: Network> {
    network: N,
    network_id: NetworkId,
    db: Db,
    confirmations: u64,
    metrics: ScannerMetrics,
    typings: BTreeMap<NetworkKey, N::Typing>,
}

impl<N: Network> Scanner<N> {
    /// A scanner of `network` with state in `db`; a block is final with `confirmations`
    /// blocks on top, itself included (at least 1).
    pub fn new(
        network: N,
        network_id: NetworkId,
        db: Db,
        confirmations: u64,
        metrics: ScannerMetrics,
    ) -> Self {
        Scanner {
            network,
            network_id,
            db,
            confirmations: confirmations.max(1),
            metrics,
            typings: BTreeMap::new(),
        }
    }

    /// The state.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The network.
    pub fn network(&self) -> &N {
        &self.network
    }

    /// The metrics.
    pub fn metrics(&self) -> &ScannerMetrics {
        &self.metrics
    }

    /// Starts scanning for `key` from `activation` (included). Adding a key again changes
    /// nothing.
    ///
    /// # Errors
    /// The database failed.
    pub fn add_key(&self, key: NetworkKey, activation: u64) -> Result<(), ScanError> {
        if self.db.keys()?.iter().any(|scanned| scanned.key == key) {
            return Ok(());
        }
        let mut batch = WriteBatch::default();
        self.db.put_key(
            &mut batch,
            &ScannedKey {
                key,
                activation,
                next: activation,
            },
        )?;
        Ok(self.db.commit(batch)?)
    }

    /// The height of the first finalized block whose time is at least `time` (the activation
    /// block of a network's first key), found by bisection over the finalized chain, so every
    /// validator following the same chain finds the same block; `None` while no finalized block
    /// is that late.
    ///
    /// # Errors
    /// The node failed.
    pub fn first_final_block_at(&self, time: u64) -> Result<Option<u64>, ScanError> {
        let latest = self.network.latest_height()?;
        let Some(finalized) = self.finalized(latest)? else {
            return Ok(None);
        };
        if self.network.block(finalized)?.time < time {
            return Ok(None);
        }
        let (mut low, mut high) = (0, finalized);
        while low < high {
            let middle = low + (high - low) / 2;
            if self.network.block(middle)?.time >= time {
                high = middle;
            } else {
                low = middle + 1;
            }
        }
        Ok(Some(low))
    }

    /// Starts scanning for a confirmed key pair's network key from `activation` (included),
    /// and records its batch key, in `batch`. A key already scanned keeps its position.
    ///
    /// # Errors
    /// The database failed.
    pub fn add_key_in(
        &self,
        batch: &mut WriteBatch,
        pair: &KeyPair,
        activation: u64,
    ) -> Result<(), ScanError> {
        if !self
            .db
            .keys()?
            .iter()
            .any(|scanned| scanned.key == pair.network_key)
        {
            self.db.put_key(
                batch,
                &ScannedKey {
                    key: pair.network_key,
                    activation,
                    next: activation,
                },
            )?;
        }
        self.db.put_batch_key(batch, &pair.batch_key)?;
        Ok(())
    }

    /// Serai acknowledged every block up to `height` for `key`: `key`'s outputs in the blocks
    /// acknowledged now (above its last acknowledged height) are returned once, to hand to its
    /// scheduler. Each key has its own acknowledged height, so that the outputs of a key whose
    /// Serai blocks come later (an old key's change during a rotation) wait for them rather
    /// than pass unscheduled. The new height goes into `batch`, so the caller commits it with
    /// whatever it does with the outputs. Acknowledging a height at or below the last is normal
    /// and returns nothing; `None` means `height` is not scanned yet for every key, and the
    /// caller waits.
    ///
    /// # Errors
    /// The database failed.
    pub fn acknowledge(
        &self,
        key: &NetworkKey,
        height: u64,
        batch: &mut WriteBatch,
    ) -> Result<Option<Vec<ReceivedOutput>>, ScanError> {
        let keys = self.db.keys()?;
        if keys.iter().any(|key| key.next <= height) {
            return Ok(None);
        }
        // A key's outputs start at its activation block: its first acknowledgement reads from
        // there, not through every output stored before it.
        let activation = keys
            .iter()
            .find(|scanned| scanned.key == *key)
            .map_or(0, |scanned| scanned.activation);
        let from = match self.db.acknowledged(key)? {
            Some(acknowledged) if acknowledged >= height => return Ok(Some(Vec::new())),
            Some(acknowledged) => acknowledged.saturating_add(1),
            None => activation,
        };
        self.db.put_acknowledged(batch, key, height)?;
        Ok(Some(
            self.db
                .outputs(from, height)?
                .into_iter()
                .map(|(_, output)| output)
                .filter(|output| output.key == *key)
                .collect(),
        ))
    }

    /// How a plan registered now already ended, if a scanned transaction spent one of its
    /// inputs (the plan's transaction can be final before this processor made the plan, when it
    /// was down while its peers signed).
    ///
    /// # Errors
    /// The database failed.
    pub fn settled(&self, eventuality: &Eventuality) -> Result<Option<Outcome>, ScanError> {
        for input in &eventuality.inputs {
            if let Some(transaction) = self.db.spent_by(input)? {
                return Ok(eventuality.check(&transaction));
            }
        }
        Ok(None)
    }

    /// Watches for a plan's transaction.
    ///
    /// # Errors
    /// The database failed.
    pub fn register_eventuality(&self, eventuality: &Eventuality) -> Result<(), ScanError> {
        let mut batch = WriteBatch::default();
        self.db.put_eventuality(&mut batch, eventuality)?;
        Ok(self.db.commit(batch)?)
    }

    /// The highest finalized height when the tip is at `latest`, if any block is final. A
    /// height the arithmetic cannot hold is the node's error, not a panic.
    fn finalized(&self, latest: u64) -> Result<Option<u64>, ScanError> {
        let count = latest
            .checked_add(1)
            .ok_or_else(|| NetworkError::Invalid(format!("block height {latest}")))
            .inspect_err(|error| self.count_error(error))?;
        Ok(count.checked_sub(self.confirmations))
    }

    fn count_error(&self, error: &NetworkError) {
        let kind = match error {
            NetworkError::Node(_) => "node",
            NetworkError::NoBlock(_) => "no_block",
            NetworkError::Invalid(_) => "invalid",
            NetworkError::Refused(_) => "refused",
        };
        self.metrics.rpc_errors.with_label_values(&[kind]).inc();
    }

    /// Scans every finalized block not scanned yet.
    ///
    /// # Errors
    /// The node or the database failed (the next tick resumes), or the chain reorganized below
    /// finality (scanning stays halted).
    pub fn tick(&mut self) -> Result<Progress, ScanError> {
        self.tick_at_most(u64::MAX)
    }

    /// Scans at most `blocks` finalized blocks not scanned yet, so that a caller catching up
    /// on a backlog goes on with its other work between ticks.
    ///
    /// # Errors
    /// As `tick`.
    pub fn tick_at_most(&mut self, blocks: u64) -> Result<Progress, ScanError> {
        let latest = self.network.latest_height().inspect_err(|error| {
            self.count_error(error);
        })?;
        self.metrics
            .node_height
            .set(i64::try_from(latest).unwrap_or(i64::MAX));
        let mut progress = Progress {
            latest,
            ..Progress::default()
        };
        let Some(finalized) = self.finalized(latest)? else {
            return Ok(progress);
        };
        progress.finalized = Some(finalized);
        self.metrics
            .finalized_height
            .set(i64::try_from(finalized).unwrap_or(i64::MAX));
        loop {
            let keys = self.db.keys()?;
            let Some(height) = keys.iter().map(|key| key.next).min() else {
                return Ok(progress);
            };
            if height > finalized || progress.scanned >= blocks {
                return Ok(progress);
            }
            let block = self.network.block(height).inspect_err(|error| {
                self.count_error(error);
            })?;
            self.scan_block(&block, &keys, &mut progress)?;
        }
    }

    fn check_continuity(&self, block: &ChainBlock) -> Result<bool, ScanError> {
        let halt = |height: u64, expected: &[u8; 32], found: &[u8; 32]| {
            self.metrics.reorg_halts.inc();
            self.metrics.halted.set(1);
            let error = ScanError::ReorgBelowFinality {
                height,
                expected: hex_id(expected),
                found: hex_id(found),
            };
            tracing::error!(%error, "scanning halted");
            error
        };
        if let Some(parent_height) = block.height.checked_sub(1) {
            if let Some(parent) = self.db.block_hash(parent_height)? {
                if parent != block.parent {
                    return Err(halt(parent_height, &parent, &block.parent));
                }
            }
        }
        match self.db.block_hash(block.height)? {
            Some(stored) if stored != block.hash => Err(halt(block.height, &stored, &block.hash)),
            Some(_) => Ok(false),
            None => Ok(true),
        }
    }

    fn scan_block(
        &mut self,
        block: &ChainBlock,
        keys: &[ScannedKey],
        progress: &mut Progress,
    ) -> Result<(), ScanError> {
        let first_visit = self.check_continuity(block)?;
        self.metrics.halted.set(0);
        let here: Vec<ScannedKey> = keys
            .iter()
            .filter(|key| key.next == block.height)
            .copied()
            .collect();
        for key in &here {
            if !self.typings.contains_key(&key.key) {
                let typing = self.network.typing(&key.key)?;
                self.typings.insert(key.key, typing);
            }
        }
        let typings: Vec<(NetworkKey, &N::Typing)> = here
            .iter()
            .filter_map(|key| Some((key.key, self.typings.get(&key.key)?)))
            .collect();
        let received = receive(block, &typings);

        let mut write = WriteBatch::default();
        self.db
            .put_block_hash(&mut write, block.height, &block.hash)?;
        for output in &received.outputs {
            self.db.put_output(&mut write, block.height, output)?;
        }
        // Every `EMPTY_BATCH_INTERVAL`th height is reported, decided on the block's first visit:
        // a rule of the chain alone, so that every validator gives the same blocks Batches
        // whenever it started or restarted.
        let due = first_visit && block.height % EMPTY_BATCH_INTERVAL == 0;
        let batches = batches_for(
            self.network_id,
            self.db.next_batch_id()?,
            block.hash,
            &received.outputs,
            due,
        );
        for batch in &batches {
            self.db.put_batch(&mut write, batch)?;
        }
        for key in &here {
            self.db.put_key(
                &mut write,
                &ScannedKey {
                    next: block.height.saturating_add(1),
                    ..*key
                },
            )?;
        }
        let mut outcomes = Vec::new();
        let mut completed = Vec::new();
        if first_visit {
            let mut settled = BTreeSet::new();
            for transaction in &block.transactions {
                for input in &transaction.inputs {
                    if self.db.is_ours(input)? {
                        self.db.put_spend(&mut write, input, transaction)?;
                    }
                    let Some(eventuality) = self.db.eventuality_spending(input)? else {
                        continue;
                    };
                    if !settled.insert(eventuality.plan) {
                        continue;
                    }
                    if let Some(outcome) = eventuality.check(transaction) {
                        self.db.put_outcome(&mut write, &eventuality, outcome)?;
                        if let Outcome::Completed(tx) = outcome {
                            // The coordinator hears of it from the outbox, committed with the
                            // scan, whoever published the transaction.
                            completed.push(ProcessorMessage::Sign(
                                sign::ProcessorMessage::Completed {
                                    key: eventuality.key,
                                    id: eventuality.plan,
                                    tx,
                                },
                            ));
                        }
                        outcomes.push((eventuality.plan, outcome));
                    }
                }
            }
        }
        if !completed.is_empty() {
            self.db.put_outbox(&mut write, completed)?;
        }
        self.db.commit(write)?;

        // Committed: now report.
        self.metrics.blocks_scanned.inc();
        for key in &here {
            self.metrics
                .scanned_height
                .with_label_values(&[&key.key.to_string()])
                .set(i64::try_from(block.height).unwrap_or(i64::MAX));
        }
        for output in &received.outputs {
            let kind = match output.kind {
                OutputKind::External => "external",
                OutputKind::Branch => "branch",
                OutputKind::Change => "change",
            };
            self.metrics.outputs.with_label_values(&[kind]).inc();
        }
        self.metrics
            .outputs_ignored
            .with_label_values(&["dust"])
            .inc_by(received.dust);
        self.metrics
            .instructions_rejected
            .with_label_values(&["missing"])
            .inc_by(received.missing_instructions);
        self.metrics
            .instructions_rejected
            .with_label_values(&["invalid"])
            .inc_by(received.invalid_instructions);
        for (plan, outcome) in &outcomes {
            match outcome {
                Outcome::Completed(transaction) => {
                    self.metrics
                        .eventualities
                        .with_label_values(&["completed"])
                        .inc();
                    tracing::info!(plan = %hex::encode(plan.as_bytes()), txid = %hex_id(&transaction.0), "plan completed");
                }
                Outcome::Conflict(transaction) => {
                    self.metrics
                        .eventualities
                        .with_label_values(&["conflict"])
                        .inc();
                    tracing::error!(plan = %hex::encode(plan.as_bytes()), txid = %hex_id(&transaction.0), "a transaction spends a planned input but is not the plan's");
                }
            }
        }
        for batch in batches {
            self.metrics.batches_built.inc();
            tracing::info!(
                batch = batch.id.0,
                height = block.height,
                instructions = batch.instructions.len(),
                "batch built"
            );
            progress.batches.push(batch);
        }
        progress.outcomes.extend(outcomes);
        progress.scanned += 1;
        Ok(())
    }
}
