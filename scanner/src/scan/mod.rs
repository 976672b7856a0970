//! Scanning: every finalized block (`CONFIRMATIONS` deep, the block itself counted), in order,
//! for every key from its activation block on; each block's parent checked against the block
//! stored below it, so a reorganization below finality halts scanning with the state intact;
//! our outputs recorded, the block's Batches built under the next batch ids (for any block
//! holding our outputs), and plans' eventualities settled. Everything one block causes commits
//! in one write with the scan position, so a crash anywhere leaves a block either fully
//! scanned or not at all.
//!
//! The decisions are `block::scan_block`, a pure function of a read view and the block;
//! `Scanner` is the adapter around it: it fetches blocks from the `Network`, applies the
//! changes through a `ScanStore` (RocksDB, or memory in tests and the simulation), then counts
//! and logs.

pub mod batches;
pub mod block;
pub mod eventuality;
pub mod metrics;
pub mod outputs;

use std::collections::BTreeMap;

use schema::{
    batch::Batch,
    hashes::PlanId,
    ids::NetworkId,
    keys::{KeyPair, NetworkKey},
    plan::OutputKind,
};
use thiserror::Error;

use crate::{
    chain::{BlockView, Network, NetworkError},
    scan::eventuality::{Eventuality, Outcome},
    scan::metrics::ScannerMetrics,
    scan::outputs::{hex_id, ReceivedOutput},
    store::db::{Db, DbError, ScannedKey},
    store::{ProcessorChanges, ProcessorStore, ScanChanges, ScanStore},
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

/// The scanner of one network, its state in `S`.
pub struct Scanner<N: Network, S: ScanStore = Db> {
    network: N,
    network_id: NetworkId,
    store: S,
    confirmations: u64,
    metrics: ScannerMetrics,
    typings: BTreeMap<NetworkKey, N::Typing>,
}

impl<N: Network, S: ScanStore> Scanner<N, S> {
    /// A scanner of `network` with state in `store`; a block is final with `confirmations`
    /// blocks on top, itself included (at least 1).
    pub fn new(
        network: N,
        network_id: NetworkId,
        store: S,
        confirmations: u64,
        metrics: ScannerMetrics,
    ) -> Self {
        Scanner {
            network,
            network_id,
            store,
            confirmations: confirmations.max(1),
            metrics,
            typings: BTreeMap::new(),
        }
    }

    /// The state.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Gives the state back (a crash in the simulation: everything else is lost).
    pub fn into_store(self) -> S {
        self.store
    }

    /// The network.
    pub fn network(&self) -> &N {
        &self.network
    }

    /// The network's id in Serai (what Batches and validator sets name).
    pub fn network_id(&self) -> NetworkId {
        self.network_id
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
        if self.store.keys()?.iter().any(|scanned| scanned.key == key) {
            return Ok(());
        }
        Ok(self.store.apply(&ScanChanges {
            keys: vec![ScannedKey {
                key,
                activation,
                next: activation,
            }],
            ..ScanChanges::default()
        })?)
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
        if self.network.block(finalized)?.time() < time {
            return Ok(None);
        }
        let (mut low, mut high) = (0, finalized);
        while low < high {
            let middle = low + (high - low) / 2;
            if self.network.block(middle)?.time() >= time {
                high = middle;
            } else {
                low = middle + 1;
            }
        }
        Ok(Some(low))
    }

    /// How a plan registered now already ended, if a scanned transaction spent one of its
    /// inputs (the plan's transaction can be final before this processor made the plan, when it
    /// was down while its peers signed).
    ///
    /// # Errors
    /// The database failed.
    pub fn settled(&self, eventuality: &Eventuality) -> Result<Option<Outcome>, ScanError> {
        for input in &eventuality.inputs {
            if let Some(spend) = self.store.spent_by(input)? {
                return Ok(eventuality.check(&spend.transaction));
            }
        }
        Ok(None)
    }

    /// Watches for a plan's transaction.
    ///
    /// # Errors
    /// The database failed.
    pub fn register_eventuality(&self, eventuality: &Eventuality) -> Result<(), ScanError> {
        Ok(self.store.apply(&ScanChanges {
            eventualities: vec![eventuality.clone()],
            ..ScanChanges::default()
        })?)
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
        // The blocks to scan, fetched ahead (final ones only), with the height the next is at.
        let mut ahead = None;
        loop {
            let keys = self.store.keys()?;
            let Some(height) = keys.iter().map(|key| key.next).min() else {
                return Ok(progress);
            };
            if height > finalized || progress.scanned >= blocks {
                return Ok(progress);
            }
            if ahead.as_ref().is_some_and(|(next, _)| *next != height) {
                ahead = None;
            }
            let (next, fetched) = ahead.get_or_insert_with(|| {
                let last = finalized
                    .min(height.saturating_add(blocks.saturating_sub(progress.scanned + 1)));
                (height, self.network.blocks(height, last))
            });
            let block = fetched
                .next()
                .unwrap_or(Err(NetworkError::NoBlock(height)))
                .inspect_err(|error| self.count_error(error))?;
            *next += 1;
            self.scan_block(&block, &keys, &mut progress)?;
        }
    }

    /// Scans one block through `block::scan_block`, applies its changes, then reports.
    fn scan_block(
        &mut self,
        block: &N::Block,
        keys: &[ScannedKey],
        progress: &mut Progress,
    ) -> Result<(), ScanError> {
        let here: Vec<ScannedKey> = keys
            .iter()
            .filter(|key| key.next == block.height())
            .copied()
            .collect();
        for key in &here {
            if !self.typings.contains_key(&key.key) {
                let typing = self.network.typing(&key.key)?;
                self.typings.insert(key.key, typing);
            }
        }
        let typed: Vec<(ScannedKey, &N::Typing)> = here
            .iter()
            .filter_map(|key| Some((*key, self.typings.get(&key.key)?)))
            .collect();
        let scan = match block::scan_block(&self.store, self.network_id, block, &typed) {
            Ok(scan) => scan,
            Err(error @ ScanError::ReorgBelowFinality { .. }) => {
                self.metrics.reorg_halts.inc();
                self.metrics.halted.set(1);
                tracing::error!(%error, "scanning halted");
                return Err(error);
            }
            Err(error) => {
                if let ScanError::Network(error) = &error {
                    // The block is not valid chain data (an impossible amount on our output).
                    self.count_error(error);
                }
                return Err(error);
            }
        };
        self.metrics.halted.set(0);
        self.store.apply(&scan.changes)?;

        // Committed: now report.
        self.metrics.blocks_scanned.inc();
        for key in &scan.keys {
            self.metrics
                .scanned_height
                .with_label_values(&[&key.key.to_string()])
                .set(i64::try_from(block.height()).unwrap_or(i64::MAX));
        }
        for output in &scan.received.outputs {
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
            .inc_by(scan.received.dust);
        self.metrics
            .instructions_rejected
            .with_label_values(&["missing"])
            .inc_by(scan.received.missing_instructions);
        self.metrics
            .instructions_rejected
            .with_label_values(&["invalid"])
            .inc_by(scan.received.invalid_instructions);
        self.metrics
            .instructions_rejected
            .with_label_values(&["refunded"])
            .inc_by(scan.received.refunds);
        for (plan, outcome) in &scan.outcomes {
            match outcome {
                Outcome::Completed { plan: member, tx } => {
                    self.metrics
                        .eventualities
                        .with_label_values(&["completed"])
                        .inc();
                    tracing::info!(plan = %hex::encode(plan.as_bytes()), member = %hex::encode(member.as_bytes()), txid = %hex_id(&tx.0), "plan completed");
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
        for batch in scan.changes.batches {
            self.metrics.batches_built.inc();
            tracing::info!(
                batch = batch.id.0,
                height = block.height(),
                instructions = batch.instructions.len(),
                "batch built"
            );
            progress.batches.push(batch);
        }
        progress.outcomes.extend(scan.outcomes);
        progress.scanned += 1;
        Ok(())
    }
}

/// What the coordinator's messages change in scanning, staged into the changes each message
/// commits with its "handled" marker.
impl<N: Network, S: ProcessorStore> Scanner<N, S> {
    /// Starts scanning for a confirmed key pair's network key from `activation` (included), in
    /// `changes`. A key already scanned keeps its position.
    ///
    /// # Errors
    /// The database failed.
    pub fn add_key_in(
        &self,
        changes: &mut ProcessorChanges,
        pair: &KeyPair,
        activation: u64,
    ) -> Result<(), ScanError> {
        if !self
            .store
            .keys()?
            .iter()
            .any(|scanned| scanned.key == pair.network_key)
        {
            changes.scan.keys.push(ScannedKey {
                key: pair.network_key,
                activation,
                next: activation,
            });
        }
        Ok(())
    }

    /// Serai acknowledged every block up to `height` for `key`: `key`'s outputs in the blocks
    /// acknowledged now (above its last acknowledged height) are returned once, to hand to its
    /// scheduler. Each key has its own acknowledged height, so that the outputs of a key whose
    /// Serai blocks come later (an old key's change during a rotation) wait for them rather
    /// than pass unscheduled. The new height goes into `changes`, so the caller commits it with
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
        changes: &mut ProcessorChanges,
    ) -> Result<Option<Vec<ReceivedOutput>>, ScanError> {
        let keys = self.store.keys()?;
        if keys.iter().any(|key| key.next <= height) {
            return Ok(None);
        }
        // A key's outputs start at its activation block: its first acknowledgement reads from
        // there, not through every output stored before it.
        let activation = keys
            .iter()
            .find(|scanned| scanned.key == *key)
            .map_or(0, |scanned| scanned.activation);
        let from = match self.store.acknowledged(key)? {
            Some(acknowledged) if acknowledged >= height => return Ok(Some(Vec::new())),
            Some(acknowledged) => acknowledged.saturating_add(1),
            None => activation,
        };
        changes.acknowledged.push((*key, height));
        Ok(Some(
            self.store
                .outputs(from, height)?
                .into_iter()
                .map(|(_, output)| output)
                .filter(|output| output.key == *key)
                .collect(),
        ))
    }
}
