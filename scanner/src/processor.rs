//! The processor: the scanner, the enclave and the coordinator link in one loop. Each step
//! delivers the outbox, scans the finalized blocks, starts signing new Batches, then handles
//! the coordinator's messages strictly in id order: each message's effects, the outbound
//! messages it causes and its "handled" marker commit in one write batch, and only then is it
//! acked. A message whose enclave call could not be made (enclave down) is not marked handled
//! and is tried again; a refusal is logged, counted and the message is skipped without harm.
//!
//! Handled: key generation (forwarded to the enclave); `ConfirmKeyPair` (enclave confirmation,
//! scanning from the activation block; a later key starts a rotation, `rotation`); the Batch
//! signing rounds (`BatchPreprocess` when a Batch is built, under the batch key of its block,
//! `BatchShare`, `Update`); `SubstrateBlock`, for every key we hold (plans stuck for
//! `STUCK_AFTER_BLOCKS` replaced at a higher fee, acknowledged blocks' outputs and the burns
//! to the active key's scheduler, a replaced key's outputs forwarded to the active key and the
//! key retired once drained, plans and their eventualities persisted, one `SubstrateBlockAck`
//! per key queued, all in one commit, before any signing); `PlansAcknowledged` (to the enclave, then a
//! preprocess per plan); the transaction signing rounds, publication (repeated every step until
//! the plan's eventuality settles) and `Completed`; a peer's `Completed`, checked on our node. A
//! message about a network block not finalized and scanned yet waits: it is neither handled
//! nor acked, and comes again.

use std::{collections::BTreeMap, time::Duration};

use bitcoin::hashes::Hash;
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec};
use schema::{
    amount::Amount,
    batch::Batch,
    burn::payment_for_burn,
    generated::signer_capnp::RefusalReason,
    hashes::{PlanId, TransactionId},
    ids::{Attempt, BatchId, MessageId, SeraiBlockNumber, ValidatorSet},
    instruction::OutInstructionWithBalance,
    keys::{BatchKey, KeyPair, NetworkKey},
    limits::MAX_REPLACEMENTS_PER_BLOCK,
    messages::{
        coordinator::{
            CoordinatorMessage as Coordinator, ProcessorMessage as CoordinatorOut,
            SubstrateBlockAck,
        },
        sign::{CoordinatorMessage as Sign, ProcessorMessage as SignOut},
        substrate::{
            CoordinatorMessage as Substrate, ProcessorMessage as SubstrateOut, SubstrateContext,
        },
        CoordinatorEnvelope, CoordinatorMessage, ProcessorMessage,
    },
    plan::{OutputKind, Payment, Plan, PlanInput},
    protocol::{is_stuck, plan_fee_rate},
    refusal::label as signer_refusal_label,
    sign_id::{BatchSignId, BatchSignTarget, PlanSignId},
    taproot::KeyScripts,
    transaction::FeeRate,
};
use thiserror::Error;

use crate::{
    chain::bitcoin_core::{chain_transaction, eventuality_of, family_member},
    chain::{Network, NetworkError},
    coordinate::enclave_client::EnclaveError,
    coordinate::link::LinkError,
    coordinate::parts::{Clock, CoordinatorLink, EnclaveCalls, NodeParts, Parts},
    rotation::{Confirmed, RotationError, Stage},
    scan::eventuality::{Member, Outcome},
    scan::outputs::hex_id,
    scan::{ScanError, Scanner},
    schedule::{
        bump::{self, Held},
        DropReason, Limits, Scheduler, SchedulerError,
    },
    store::db::{DbError, Unsettled},
    store::{InFlight, ProcessorChanges, ProcessorStore, ScanStore, ScanView, Spend},
};

/// A processor step stopped.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ProcessorError {
    /// The coordinator link failed: reconnect and resume.
    #[error(transparent)]
    Link(#[from] LinkError),
    /// The enclave could not be reached: reconnect and resume (the message is not handled).
    #[error("enclave unavailable: {0}")]
    Enclave(EnclaveError),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// Scanning failed.
    #[error(transparent)]
    Scan(#[from] ScanError),
    /// The node failed.
    #[error(transparent)]
    Network(#[from] NetworkError),
    /// The scheduler failed on a Serai block (a defect: it never fails on outside data). The
    /// link halts with the block not handled, so that none of its outputs or burns is lost;
    /// every validator fails alike, and the release that fixes it handles the block.
    #[error("the scheduler failed on Serai block {block}: {error}; halting")]
    Scheduler {
        /// The Serai block.
        block: u64,
        /// What failed.
        error: SchedulerError,
    },
    /// The coordinator sent a message id more than one past the last handled: a message is
    /// missing from its queue (deleted in storage). Signatures cannot show a message that is not
    /// there; consecutive ids do. The link halts instead of going on without it.
    #[error("coordinator sent message {got} after {handled} was handled: messages are missing from its queue; halting")]
    Gap {
        /// The last id handled.
        handled: u64,
        /// The id received.
        got: u64,
    },
    /// The coordinator sent a message id at or below one already handled: its queue was reset
    /// or rewound. The link halts instead of handling anything twice.
    #[error("coordinator sent message {got} after {handled} was handled: queue rewound; halting")]
    Rewound {
        /// The last id handled.
        handled: u64,
        /// The id received.
        got: u64,
    },
}

impl ProcessorError {
    /// Whether the coordinator link halts (until an operator restarts the processor) rather
    /// than reconnects.
    pub fn halts_link(&self) -> bool {
        matches!(
            self,
            ProcessorError::Rewound { .. }
                | ProcessorError::Gap { .. }
                | ProcessorError::Scheduler { .. }
                | ProcessorError::Link(LinkError::Forged(_))
        )
    }
}

/// Blocks scanned per step at most: a backlog after downtime is caught up over several steps,
/// so that the coordinator's messages, Batch signing and publishing go on meanwhile.
pub const BLOCKS_PER_STEP: u64 = 100;

/// Serai times are seconds since the epoch; one of 11 digits or more (after the year 2286) is
/// a time in the wrong unit (milliseconds have 13 digits), never a real activation time.
pub const LATEST_PLAUSIBLE_SERAI_TIME: u64 = 9_999_999_999;

/// The processor of one validator, over its parts (`NodeParts` in the node).
pub struct Processor<P: Parts = NodeParts> {
    scanner: Scanner<P::Chain, P::Store>,
    /// Where burns' addresses must be.
    address_network: bitcoin::Network,
    enclave: P::Enclave,
    link: P::Link,
    clock: P::Clock,
    metrics: ProcessorMetrics,
    /// The message at the head of the queue that waits for a network block, and since when.
    waiting: Option<(MessageId, Duration)>,
}

/// The processor's own metrics, registered once per process (a processor is rebuilt on every
/// reconnection).
#[derive(Clone)]
pub struct ProcessorMetrics {
    /// `processor_messages_total{kind,outcome}`: coordinator messages by kind and outcome.
    pub messages: IntCounterVec,
    /// `processor_outbox_depth`: messages waiting for the coordinator.
    pub outbox_depth: IntGauge,
    /// `processor_message_waiting_seconds`: how long the next coordinator message has waited
    /// for a network block to be scanned (0 when none waits).
    pub message_waiting_seconds: IntGauge,
    /// `processor_link_halted`: 1 when the coordinator link halted (its queue went backwards, a
    /// queued message's signature failed, or the scheduler failed on a Serai block).
    pub link_halted: IntGauge,
    /// `processor_plans_refused_total{reason}`: plans the enclave refused to preprocess for a
    /// reason that cannot change.
    pub plans_refused: IntCounterVec,
    /// `processor_oldest_unsettled_blocks`: blocks since the oldest signed, unsettled
    /// transaction was signed (0 when none).
    pub oldest_unsettled_blocks: IntGauge,
    /// `processor_batches_waiting`: Batches built but not preprocessed because the enclave's
    /// window of new Batch ids is full, until Serai includes a later Batch (0 when none wait).
    pub batches_waiting: IntGauge,
    /// `processor_plans_stuck`: plan families of the last Serai block's keys that were stuck at
    /// least once and have not landed (replaced or not).
    pub plans_stuck: IntGauge,
    /// `processor_plans_held{reason}`: stuck families the last Serai block could not replace,
    /// by why (`bump::Held`).
    pub plans_held: IntGaugeVec,
    /// `processor_plan_replacements_total`: replacements made for stuck plans.
    pub plan_replacements: IntCounter,
    /// `processor_plan_children_total`: children (CPFP) made for stuck plans no replacement
    /// could bump.
    pub plan_children: IntCounter,
    /// `processor_plans_conflicted_total`: plan families whose inputs a transaction we did not
    /// sign spent, their payments owed again.
    pub plans_conflicted: IntCounter,
    /// `processor_plans_forwarded_total`: forwarding plans made, moving a replaced key's
    /// outputs to the active key.
    pub plans_forwarded: IntCounter,
    /// `processor_refunds_total`: deposits whose instruction Serai cannot take, queued to be
    /// paid back to the origin they name.
    pub refunds: IntCounter,
    /// `processor_refunded_sats_total`: their value (each refund bears its fee share).
    pub refunded_sats: IntCounter,
    /// `processor_key_stage{key}`: each confirmed key's stage (0 active, 1 forwarding, 2
    /// retired), by its network key in hex.
    pub key_stage: IntGaugeVec,
    /// `scheduler_payments_dropped_total{reason}`: payments that will not be made.
    pub payments_dropped: IntCounterVec,
    /// `scheduler_payments_waiting`: payments queued, for funds or for lower fees, or waiting
    /// in a branch.
    pub payments_waiting: IntGauge,
    /// `scheduler_operating_costs_sats`: operating costs carried (negative: a surplus).
    pub operating_costs: IntGauge,
    /// `scheduler_outstanding_sats`: what the scheduler still owes (queued, grouped and funded
    /// payments, at their current amounts).
    pub outstanding: IntGauge,
}

impl ProcessorMetrics {
    /// Registers them in `registry`.
    ///
    /// # Errors
    /// They are already registered there.
    pub fn new(registry: &prometheus::Registry) -> Result<Self, prometheus::Error> {
        let counters = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(prometheus::Opts::new(name, help), labels)
        };
        let metrics = ProcessorMetrics {
            messages: counters(
                "processor_messages_total",
                "Coordinator messages handled, by kind and outcome.",
                &["kind", "outcome"],
            )?,
            outbox_depth: IntGauge::new(
                "processor_outbox_depth",
                "Outbound messages not yet delivered to the coordinator.",
            )?,
            message_waiting_seconds: IntGauge::new(
                "processor_message_waiting_seconds",
                "How long the next coordinator message has waited for a network block.",
            )?,
            link_halted: IntGauge::new(
                "processor_link_halted",
                "1 when the coordinator link halted: its queue went backwards, a message's signature failed, or the scheduler failed.",
            )?,
            plans_refused: counters(
                "processor_plans_refused_total",
                "Plans the enclave refused to preprocess, by reason.",
                &["reason"],
            )?,
            oldest_unsettled_blocks: IntGauge::new(
                "processor_oldest_unsettled_blocks",
                "Blocks since the oldest signed, unsettled transaction was signed.",
            )?,
            batches_waiting: IntGauge::new(
                "processor_batches_waiting",
                "Batches waiting for the enclave's window of new Batch ids (a later Batch included).",
            )?,
            plans_stuck: IntGauge::new(
                "processor_plans_stuck",
                "Plan families stuck at least once (not confirmed within STUCK_AFTER_BLOCKS) and not landed.",
            )?,
            plans_held: IntGaugeVec::new(
                prometheus::Opts::new(
                    "processor_plans_held",
                    "Stuck plan families the last Serai block could not replace, by reason.",
                ),
                &["reason"],
            )?,
            plan_replacements: IntCounter::new(
                "processor_plan_replacements_total",
                "Replacements made for stuck plans (fee bumps).",
            )?,
            plan_children: IntCounter::new(
                "processor_plan_children_total",
                "Children made to pay for stuck plans that cannot be replaced (CPFP).",
            )?,
            plans_conflicted: IntCounter::new(
                "processor_plans_conflicted_total",
                "Plan families spent by a transaction we did not sign, their payments owed again.",
            )?,
            plans_forwarded: IntCounter::new(
                "processor_plans_forwarded_total",
                "Forwarding plans made, moving a replaced key's outputs to the active key.",
            )?,
            refunds: IntCounter::new(
                "processor_refunds_total",
                "Deposits with an instruction Serai cannot take, queued to be paid back to their origin.",
            )?,
            refunded_sats: IntCounter::new(
                "processor_refunded_sats_total",
                "The value of the deposits queued to be refunded.",
            )?,
            key_stage: IntGaugeVec::new(
                prometheus::Opts::new(
                    "processor_key_stage",
                    "Each confirmed key's stage: 0 active, 1 forwarding, 2 retired.",
                ),
                &["key"],
            )?,
            payments_dropped: counters(
                "scheduler_payments_dropped_total",
                "Payments that will not be made, their value kept, by reason.",
                &["reason"],
            )?,
            payments_waiting: IntGauge::new(
                "scheduler_payments_waiting",
                "Payments waiting for funds or lower fees, queued or in a branch.",
            )?,
            outstanding: IntGauge::new(
                "scheduler_outstanding_sats",
                "What the scheduler still owes: queued, grouped and funded payments.",
            )?,
            operating_costs: IntGauge::new(
                "scheduler_operating_costs_sats",
                "Operating costs carried, not yet recovered from payments (negative: surplus).",
            )?,
        };
        registry.register(Box::new(metrics.messages.clone()))?;
        registry.register(Box::new(metrics.outbox_depth.clone()))?;
        registry.register(Box::new(metrics.message_waiting_seconds.clone()))?;
        registry.register(Box::new(metrics.link_halted.clone()))?;
        registry.register(Box::new(metrics.plans_refused.clone()))?;
        registry.register(Box::new(metrics.oldest_unsettled_blocks.clone()))?;
        registry.register(Box::new(metrics.batches_waiting.clone()))?;
        registry.register(Box::new(metrics.plans_stuck.clone()))?;
        registry.register(Box::new(metrics.plans_held.clone()))?;
        registry.register(Box::new(metrics.plan_replacements.clone()))?;
        registry.register(Box::new(metrics.plans_conflicted.clone()))?;
        registry.register(Box::new(metrics.plan_children.clone()))?;
        registry.register(Box::new(metrics.plans_forwarded.clone()))?;
        registry.register(Box::new(metrics.key_stage.clone()))?;
        registry.register(Box::new(metrics.refunds.clone()))?;
        registry.register(Box::new(metrics.refunded_sats.clone()))?;
        registry.register(Box::new(metrics.payments_dropped.clone()))?;
        registry.register(Box::new(metrics.payments_waiting.clone()))?;
        registry.register(Box::new(metrics.operating_costs.clone()))?;
        registry.register(Box::new(metrics.outstanding.clone()))?;
        Ok(metrics)
    }

    /// Sets each confirmed key's stage gauge from the store.
    ///
    /// # Errors
    /// The store failed.
    pub fn observe_keys<S: ProcessorStore>(&self, store: &S) -> Result<(), DbError> {
        for confirmed in store.rotation()?.keys() {
            self.key_stage
                .with_label_values(&[&hex::encode(confirmed.pair.network_key.to_bytes())])
                .set(i64::from(confirmed.stage.code()));
        }
        Ok(())
    }

    /// Sets the outbox gauge from the store, also while the coordinator is away.
    ///
    /// # Errors
    /// The store failed.
    pub fn observe_outbox<S: ProcessorStore>(&self, store: &S) -> Result<(), DbError> {
        self.outbox_depth
            .set(i64::try_from(store.outbox_len()?).unwrap_or(i64::MAX));
        Ok(())
    }
}

/// Whether an enclave refusal may pass: the HSM or the enclave's database failed, and the
/// same request can succeed later. The message is then retried, never skipped.
pub fn refusal_may_pass(reason: RefusalReason) -> bool {
    matches!(
        reason,
        RefusalReason::CustodyUnavailable | RefusalReason::HistoryUnavailable
    )
}

/// What judging the plans in flight at a Serai block proposes.
#[derive(Default)]
struct Bumps {
    /// Replacements of stuck plans, for the acknowledgement.
    replacements: Vec<Plan>,
    /// Children paying for stuck plans (CPFP), for the acknowledgement and the scheduler.
    children: Vec<Plan>,
    /// Children whose parent a conflict took back: they never confirm.
    void: Vec<Plan>,
    /// `Completed` of replacements whose family this node saw settled already, sent after
    /// the acknowledgement that names them.
    completed: Vec<ProcessorMessage>,
    /// Families that landed by a conflict.
    conflicted: Vec<Conflicted>,
    /// Families stuck at least once and not landed.
    stuck: i64,
    /// Stuck families not bumped, by why.
    held: BTreeMap<&'static str, i64>,
}

/// What a key does with a Serai block.
#[derive(Clone, Copy)]
enum Role<'a> {
    /// The active key: pays the burns.
    Pays(&'a [OutInstructionWithBalance]),
    /// A replaced key: forwards to the active key once it owes nothing.
    Forwards(NetworkKey),
}

/// One key's part of a Serai block.
struct KeyScheduled {
    /// The ids of the plans made (replacements, children, then the scheduler's).
    plans: Vec<PlanId>,
    /// `Completed` of plans this node saw settled already, sent after the acknowledgement.
    completed: Vec<ProcessorMessage>,
    /// Whether the key, a replaced one, holds, owes and has in flight nothing now (always
    /// `false` for the active key, which never retires).
    drained: bool,
}

/// The schedulers' gauges, summed over the keys of a Serai block.
#[derive(Default)]
struct Totals {
    waiting: usize,
    carried: i64,
    outstanding: u64,
    stuck: i64,
    held: BTreeMap<&'static str, i64>,
}

impl Totals {
    fn add(&mut self, scheduler: &Scheduler) {
        self.waiting += scheduler.queue().len()
            + scheduler
                .branches()
                .iter()
                .map(|group| group.payments.len())
                .sum::<usize>()
            + scheduler
                .funded()
                .iter()
                .map(|funded| funded.payments.len())
                .sum::<usize>();
        self.carried = self.carried.saturating_add(scheduler.carried().0);
        self.outstanding = self
            .outstanding
            .saturating_add(scheduler.outstanding().to_sat());
    }

    fn bumped(&mut self, bumps: &Bumps) {
        self.stuck = self.stuck.saturating_add(bumps.stuck);
        for (reason, count) in &bumps.held {
            *self.held.entry(reason).or_default() += count;
        }
    }

    fn observe(&self, metrics: &ProcessorMetrics) {
        metrics
            .payments_waiting
            .set(i64::try_from(self.waiting).unwrap_or(i64::MAX));
        metrics.operating_costs.set(self.carried);
        metrics
            .outstanding
            .set(i64::try_from(self.outstanding).unwrap_or(i64::MAX));
        metrics.plans_stuck.set(self.stuck);
        for reason in Held::ALL {
            metrics
                .plans_held
                .with_label_values(&[reason.label()])
                .set(self.held.get(reason.label()).copied().unwrap_or(0));
        }
    }
}

/// How a stuck family is bumped.
enum Bump {
    /// By a replacement (RBF).
    Replacement(Plan),
    /// By a child paying for it (CPFP).
    Child(Plan),
}

/// A plan family spent by a transaction we did not sign, for the scheduler to take back.
struct Conflicted {
    /// The family's original plan.
    plan: Plan,
    /// What the conflicting transaction paid to our change and branch addresses.
    recovered: Amount,
}

/// What handling one message produced.
enum Handled {
    /// Effects in the batch, messages to send.
    Done(Vec<ProcessorMessage>),
    /// Refused or not applicable: skipped without harm.
    Skipped(&'static str),
    /// Needs a network block not finalized and scanned yet: not handled, comes again.
    Wait,
}

fn kind(message: &CoordinatorMessage) -> &'static str {
    match message {
        CoordinatorMessage::KeyGen(_) => "key_gen",
        CoordinatorMessage::Sign(_) => "sign",
        CoordinatorMessage::Coordinator(_) => "coordinator",
        CoordinatorMessage::Substrate(_) => "substrate",
    }
}

impl<P: Parts> Processor<P> {
    /// A processor over a scanner, an enclave connection, a coordinator link and a clock.
    pub fn new(
        scanner: Scanner<P::Chain, P::Store>,
        address_network: bitcoin::Network,
        enclave: P::Enclave,
        link: P::Link,
        clock: P::Clock,
        metrics: ProcessorMetrics,
    ) -> Self {
        metrics.link_halted.set(0);
        Processor {
            scanner,
            address_network,
            enclave,
            link,
            clock,
            metrics,
            waiting: None,
        }
    }

    /// The scanner.
    pub fn scanner(&self) -> &Scanner<P::Chain, P::Store> {
        &self.scanner
    }

    /// Gives the scanner back (when a connection is lost, to keep scanning alone).
    pub fn into_scanner(self) -> Scanner<P::Chain, P::Store> {
        self.scanner
    }

    /// One step: deliver, scan, sign new Batches, handle what the coordinator sent (waiting up
    /// to `wait` for it).
    ///
    /// # Errors
    /// See `ProcessorError`; every error leaves the state consistent, to resume from.
    pub async fn step(&mut self, wait: Duration) -> Result<(), ProcessorError> {
        self.deliver().await?;
        match self.scanner.tick_at_most(BLOCKS_PER_STEP) {
            Ok(_) | Err(ScanError::ReorgBelowFinality { .. }) => {}
            Err(error) => tracing::warn!(%error, "scan failed; retrying"),
        }
        self.sign_new_batches().await?;
        self.metrics.observe_keys(self.scanner.store())?;
        self.publish_unsettled();
        self.deliver().await?;
        let handled = self.scanner.store().last_handled()?;
        let inbound = match self.link.next(handled, wait).await {
            Ok(inbound) => inbound,
            Err(error) => {
                if matches!(error, LinkError::Forged(_)) {
                    self.metrics.link_halted.set(1);
                }
                return Err(error.into());
            }
        };
        for inbound in inbound {
            let handled = self.scanner.store().last_handled()?;
            if inbound.id <= handled {
                self.metrics.link_halted.set(1);
                return Err(ProcessorError::Rewound {
                    handled: handled.0,
                    got: inbound.id.0,
                });
            }
            if inbound.id.0 != handled.0.saturating_add(1) {
                self.metrics.link_halted.set(1);
                return Err(ProcessorError::Gap {
                    handled: handled.0,
                    got: inbound.id.0,
                });
            }
            let message = match inbound.message {
                Ok(message) => message,
                Err(error) => {
                    tracing::error!(id = inbound.id.0, %error, "malformed coordinator message skipped");
                    self.skip(inbound.id, "malformed").await?;
                    continue;
                }
            };
            let envelope = CoordinatorEnvelope {
                id: inbound.id,
                message,
            };
            if !self.handle(envelope).await? {
                break;
            }
        }
        self.deliver().await
    }

    /// Sends every queued outbound message, in order, deleting each once delivered.
    async fn deliver(&self) -> Result<(), ProcessorError> {
        let outbox = self.scanner.store().outbox()?;
        let mut waiting = i64::try_from(outbox.len()).unwrap_or(i64::MAX);
        self.metrics.outbox_depth.set(waiting);
        for envelope in outbox {
            self.link.send(&envelope).await?;
            self.scanner.store().delivered(envelope.id)?;
            waiting -= 1;
            self.metrics.outbox_depth.set(waiting);
        }
        Ok(())
    }

    /// Publishes every signed transaction whose plan has not settled; failures are logged and
    /// the next step tries again. How long the oldest has waited is a gauge.
    fn publish_unsettled(&self) {
        let unsettled = match self.scanner.store().unsettled() {
            Ok(unsettled) => unsettled,
            Err(error) => {
                tracing::warn!(%error, "cannot read signed transactions");
                return;
            }
        };
        let latest = u64::try_from(self.scanner.metrics().node_height.get()).unwrap_or(0);
        let oldest = unsettled
            .iter()
            .map(|entry| latest.saturating_sub(entry.signed_at))
            .max()
            .unwrap_or(0);
        self.metrics
            .oldest_unsettled_blocks
            .set(i64::try_from(oldest).unwrap_or(i64::MAX));
        let mut publishing = self.latest_of_families(unsettled);
        // Oldest first: a child paying for a stuck transaction was signed after it, and a
        // node refuses the child until it holds the parent.
        publishing.sort_by_key(|entry| entry.signed_at);
        for entry in publishing {
            if let Err(error) = self.scanner.network().publish(&entry.transaction) {
                tracing::warn!(plan = %hex::encode(entry.plan.as_bytes()), %error, "publishing failed; will retry");
            }
        }
    }

    /// Of the signed transactions of each plan family, the one at the highest fee rate: a
    /// mempool holding it refuses the others, so only it is republished.
    fn latest_of_families(&self, unsettled: Vec<Unsettled>) -> Vec<Unsettled> {
        let mut latest: BTreeMap<PlanId, (FeeRate, Unsettled)> = BTreeMap::new();
        for entry in unsettled {
            let (family, rate) = match self.scanner.store().plan(&entry.plan) {
                Ok(Some(plan)) => (plan.family(), plan.fee_rate),
                _ => (entry.plan, FeeRate(0)),
            };
            match latest.get(&family) {
                Some((kept, _)) if *kept >= rate => {}
                _ => {
                    latest.insert(family, (rate, entry));
                }
            }
        }
        latest.into_values().map(|(_, entry)| entry).collect()
    }

    /// Marks a message handled without effects (it cannot be acted on) and acks it.
    async fn skip(&self, id: MessageId, why: &str) -> Result<(), ProcessorError> {
        self.scanner.store().commit_changes(&ProcessorChanges {
            handled: Some(id),
            ..ProcessorChanges::default()
        })?;
        self.metrics
            .messages
            .with_label_values(&["unknown", why])
            .inc();
        self.link.ack(id).await?;
        Ok(())
    }

    /// Handles one message; `false` when it must wait (then nothing after it is handled now).
    async fn handle(&mut self, envelope: CoordinatorEnvelope) -> Result<bool, ProcessorError> {
        let kind = kind(&envelope.message);
        let mut changes = ProcessorChanges::default();
        let handled = self.apply(envelope.message, &mut changes).await?;
        let outcome = match handled {
            Handled::Done(out) => {
                changes.scan.outbox.extend(out);
                "handled"
            }
            Handled::Skipped(why) => why,
            Handled::Wait => {
                self.metrics
                    .messages
                    .with_label_values(&[kind, "waiting"])
                    .inc();
                let now = self.clock.now();
                let since = match self.waiting {
                    Some((id, since)) if id == envelope.id => since,
                    _ => {
                        self.waiting = Some((envelope.id, now));
                        now
                    }
                };
                self.metrics
                    .message_waiting_seconds
                    .set(i64::try_from(now.saturating_sub(since).as_secs()).unwrap_or(i64::MAX));
                return Ok(false);
            }
        };
        changes.handled = Some(envelope.id);
        self.scanner.store().commit_changes(&changes)?;
        self.waiting = None;
        self.metrics.message_waiting_seconds.set(0);
        self.metrics
            .messages
            .with_label_values(&[kind, outcome])
            .inc();
        self.link.ack(envelope.id).await?;
        Ok(true)
    }

    /// A refusal for a reason that cannot change skips the message. One that may pass (the
    /// HSM or the enclave's database failing), or the enclave being unreachable, stops the
    /// step: the message is not handled, and is tried again.
    fn refused(&self, error: EnclaveError, what: &str) -> Result<Handled, ProcessorError> {
        match error {
            EnclaveError::Refused { reason, detail } if !refusal_may_pass(reason) => {
                tracing::warn!(?reason, %detail, what, "enclave refused; message skipped");
                Ok(Handled::Skipped("refused"))
            }
            other => Err(ProcessorError::Enclave(other)),
        }
    }

    /// Whether `key` is a confirmed network key our enclave holds.
    fn holds(&self, key: &NetworkKey) -> Result<bool, ProcessorError> {
        Ok(self.scanner.store().rotation()?.held(key).is_some())
    }

    /// Whether `key` is the batch key of one of our confirmed key pairs.
    fn holds_batch_key(&self, key: &BatchKey) -> Result<bool, ProcessorError> {
        Ok(self.scanner.store().rotation()?.holds_batch_key(key))
    }

    /// Skips a message about network key `key`, which we do not hold: another set's key
    /// confirmed to us (we left with a rotation; expected, counted as `not_held`), or a key we
    /// never heard of (`not_ours`).
    fn not_held(&self, key: &NetworkKey, what: &str) -> Result<Handled, ProcessorError> {
        if self.scanner.store().rotation()?.get(key).is_some() {
            tracing::debug!(what, "coordinator message for another set's key; skipped");
            return Ok(Handled::Skipped("not_held"));
        }
        Ok(self.not_ours(what))
    }

    /// As `not_held`, for a batch key.
    fn batch_key_not_held(&self, key: &BatchKey, what: &str) -> Result<Handled, ProcessorError> {
        let rotation = self.scanner.store().rotation()?;
        if rotation
            .keys()
            .iter()
            .any(|confirmed| confirmed.pair.batch_key == *key)
        {
            tracing::debug!(
                what,
                "coordinator message for another set's batch key; skipped"
            );
            return Ok(Handled::Skipped("not_held"));
        }
        Ok(self.not_ours(what))
    }

    /// Skips a message about a key we do not hold: logged and counted, nothing else changes.
    fn not_ours(&self, what: &str) -> Handled {
        tracing::error!(
            what,
            "coordinator message for a key this validator does not hold; refused"
        );
        Handled::Skipped("unknown_key")
    }

    async fn apply(
        &mut self,
        message: CoordinatorMessage,
        changes: &mut ProcessorChanges,
    ) -> Result<Handled, ProcessorError> {
        match message {
            CoordinatorMessage::KeyGen(message) => match self.enclave.key_gen(&message).await {
                Ok(out) => Ok(Handled::Done(
                    out.into_iter().map(ProcessorMessage::KeyGen).collect(),
                )),
                Err(error) => self.refused(error, "key generation"),
            },
            CoordinatorMessage::Substrate(Substrate::ConfirmKeyPair {
                context,
                set,
                key_pair,
            }) => self.confirm_key_pair(context, set, key_pair, changes).await,
            CoordinatorMessage::Coordinator(Coordinator::BatchPreprocesses {
                id,
                preprocesses,
            }) => {
                if !self.holds_batch_key(&id.key)? {
                    return self.batch_key_not_held(&id.key, "batch preprocesses");
                }
                match self.enclave.share_batch(&id, &preprocesses).await {
                    Ok(share) => Ok(Handled::Done(vec![ProcessorMessage::Coordinator(
                        CoordinatorOut::BatchShare { id, share },
                    )])),
                    Err(error) => self.refused(error, "batch share"),
                }
            }
            CoordinatorMessage::Coordinator(Coordinator::BatchShares { id, shares }) => {
                if !self.holds_batch_key(&id.key)? {
                    return self.batch_key_not_held(&id.key, "batch shares");
                }
                match self.enclave.complete_batch(&id, &shares).await {
                    Ok(signed) => Ok(Handled::Done(vec![ProcessorMessage::Substrate(
                        SubstrateOut::Update { batch: signed },
                    )])),
                    Err(error) => self.refused(error, "batch completion"),
                }
            }
            CoordinatorMessage::Coordinator(Coordinator::BatchReattempt { id }) => {
                if !self.holds_batch_key(&id.key)? {
                    return self.batch_key_not_held(&id.key, "batch reattempt");
                }
                let Some(to_sign) = self
                    .scanner
                    .store()
                    .batch(id.id.batch)?
                    .filter(|batch| batch.network == id.id.network)
                else {
                    return Ok(Handled::Skipped("unknown_batch"));
                };
                if id.id.batch.0 >= self.scanner.store().next_batch_to_sign()? {
                    // Not preprocessed yet: it waits for the enclave's window, and its first
                    // preprocess takes this attempt.
                    changes.batch_attempts.push((id.id.batch, Some(id.attempt)));
                    return Ok(Handled::Done(Vec::new()));
                }
                match self.preprocess_batch(id, &to_sign).await {
                    Ok(message) => Ok(Handled::Done(vec![message])),
                    Err(error) => self.refused(error, "batch reattempt"),
                }
            }
            CoordinatorMessage::Substrate(Substrate::BatchIncluded {
                batch: included,
                attestation,
            }) => match self.enclave.batch_included(&included, &attestation).await {
                Ok(()) => Ok(Handled::Done(Vec::new())),
                Err(error) => self.refused(error, "batch included"),
            },
            CoordinatorMessage::Substrate(Substrate::SubstrateBlock {
                context,
                block,
                key,
                burns,
            }) => self.substrate_block(context, block, key, &burns, changes),
            CoordinatorMessage::Coordinator(Coordinator::PlansAcknowledged(acknowledged)) => {
                if !self.holds(&acknowledged.key)? {
                    return self.not_held(&acknowledged.key, "plans acknowledged");
                }
                if let Err(error) = self.enclave.acknowledge_plans(&acknowledged).await {
                    return self.refused(error, "plans acknowledged");
                }
                let mut out = Vec::new();
                for plan in &acknowledged.plans {
                    let id = PlanSignId {
                        key: acknowledged.key,
                        id: *plan,
                        attempt: Attempt(0),
                    };
                    if let Some(message) = self.preprocess_plan(id).await? {
                        out.push(message);
                    }
                }
                Ok(Handled::Done(out))
            }
            CoordinatorMessage::Sign(Sign::Preprocesses { id, preprocesses }) => {
                if !self.holds(&id.key)? {
                    return self.not_held(&id.key, "plan preprocesses");
                }
                match self.enclave.share_plan(&id, &preprocesses).await {
                    Ok(share) => Ok(Handled::Done(vec![ProcessorMessage::Sign(
                        SignOut::Share { id, share },
                    )])),
                    Err(error) => self.refused(error, "plan share"),
                }
            }
            CoordinatorMessage::Sign(Sign::Shares { id, shares }) => {
                if !self.holds(&id.key)? {
                    return self.not_held(&id.key, "plan shares");
                }
                let transaction = match self.enclave.complete_plan(&id, &shares).await {
                    Ok(transaction) => transaction,
                    Err(error) => return self.refused(error, "plan completion"),
                };
                let bytes = bitcoin::consensus::serialize(&transaction);
                let height = self.scanner.network().latest_height()?;
                // The store leaves it out if the plan settled meanwhile (a peer's transaction
                // was final first): nothing is left to publish then.
                changes.signed.push(Unsettled {
                    plan: id.id,
                    signed_at: height,
                    transaction: bytes.clone(),
                });
                if let Err(error) = self.scanner.network().publish(&bytes) {
                    tracing::warn!(%error, "publishing failed; will retry");
                }
                let txid = TransactionId(transaction.compute_txid().to_byte_array());
                tracing::info!(plan = %hex::encode(id.id.as_bytes()), txid = %hex_id(&txid.0), "plan signed and published");
                Ok(Handled::Done(vec![ProcessorMessage::Sign(
                    SignOut::Completed {
                        key: id.key,
                        id: id.id,
                        tx: txid,
                    },
                )]))
            }
            CoordinatorMessage::Sign(Sign::Reattempt { id }) => {
                if !self.holds(&id.key)? {
                    return self.not_held(&id.key, "plan reattempt");
                }
                match self.preprocess_plan(id).await? {
                    Some(message) => Ok(Handled::Done(vec![message])),
                    None => Ok(Handled::Skipped("refused")),
                }
            }
            CoordinatorMessage::Sign(Sign::Completed { key, id, tx }) => {
                if !self.holds(&key)? {
                    return self.not_held(&key, "completed");
                }
                self.peer_completed(id, tx)
            }
        }
    }

    /// Confirms a key pair in the enclave and starts scanning for it from its activation block.
    /// For a network's first key: the context's block when Serai names one, else the first
    /// finalized block at or after the Serai block's time, waited for while no finalized block
    /// is that late. For a later key (a rotation): the block after the context's (whose Batch,
    /// the last Serai included, the replaced key signed), and the replaced key forwards from
    /// now on; Batches of blocks from the activation block on that were already started under
    /// the replaced batch key start again under the new one. A pair of a set this validator is
    /// not in (its enclave generated nothing for the set: it leaves with this rotation) is
    /// recorded as not held. A set of another network, a session not after the newest key's,
    /// or a pair reusing a confirmed half is refused (`rotation_refused`), as is a time in the
    /// wrong unit: no block would ever be that late. A time merely ahead is waited for, not
    /// refused: this machine's clock may be the wrong one, and a refusal would lose the key
    /// for good (the waiting message's gauge alerts meanwhile).
    async fn confirm_key_pair(
        &mut self,
        context: SubstrateContext,
        set: ValidatorSet,
        key_pair: KeyPair,
        changes: &mut ProcessorChanges,
    ) -> Result<Handled, ProcessorError> {
        if set.network != self.scanner.network_id() {
            tracing::error!(network = ?set.network, "ConfirmKeyPair for another network's set; refused");
            return Ok(Handled::Skipped("rotation_refused"));
        }
        let mut rotation = self.scanner.store().rotation()?;
        let rotating = rotation.active().is_some();
        let activation = match context.latest_finalized_block() {
            Some(block) => self
                .scanner
                .network()
                .height_of(block.0)?
                .map(|height| height.saturating_add(u64::from(rotating))),
            None => {
                let time = context.serai_time.0;
                if time > LATEST_PLAUSIBLE_SERAI_TIME {
                    tracing::error!(time, "ConfirmKeyPair's Serai time is not in seconds (milliseconds?); refused, the key is not activated");
                    return Ok(Handled::Skipped("activation_time_unit"));
                }
                self.scanner.first_final_block_at(time)?
            }
        };
        let Some(activation) = activation else {
            return Ok(Handled::Wait);
        };
        let refused = |error: RotationError| {
            tracing::error!(%error, "ConfirmKeyPair the key rotation cannot take; refused");
            Ok(Handled::Skipped("rotation_refused"))
        };
        // Checked before the enclave is asked (which says whether it holds the pair).
        let confirmed = match rotation.admits(key_pair, set.session, activation) {
            Ok(confirmed) => confirmed,
            Err(error) => return refused(error),
        };
        let held = match self.enclave.confirm_key_pair(set, &key_pair).await {
            Ok(()) => true,
            // A set this validator is not in (it leaves with this rotation): the new key is
            // recorded as not held, and the key it holds forwards to it.
            Err(EnclaveError::Refused {
                reason: RefusalReason::NotInSet,
                ..
            }) if rotating => {
                tracing::warn!(
                    session = set.session.0,
                    "confirmed key pair of a set this validator is not in: recorded as not held; the held key forwards to it"
                );
                false
            }
            Err(error) => return self.refused(error, "confirm key pair"),
        };
        if confirmed == Confirmed::Known {
            return Ok(Handled::Done(Vec::new()));
        }
        if let Err(error) = rotation.confirm(key_pair, set.session, activation, held) {
            return refused(error);
        }
        self.scanner.add_key_in(changes, &key_pair, activation)?;
        if rotating && held {
            changes.next_batch_to_sign = self.restart_batches_from(activation)?;
        }
        changes.rotation = Some(rotation);
        tracing::info!(activation, rotating, held, "key pair confirmed");
        Ok(Handled::Done(Vec::new()))
    }

    /// The id signing must restart at for the batch key activated at `activation`: the first
    /// Batch of a block from `activation` on whose signing started already (under the replaced
    /// batch key), if any did.
    fn restart_batches_from(&self, activation: u64) -> Result<Option<u32>, ProcessorError> {
        let store = self.scanner.store();
        let mut restart = None;
        let mut id = store.next_batch_to_sign()?;
        while let Some(previous) = id.checked_sub(1) {
            let Some(batch) = store.batch(BatchId(previous))? else {
                break;
            };
            match self.scanner.network().height_of(batch.block.0)? {
                Some(height) if height >= activation => {
                    restart = Some(previous);
                    id = previous;
                }
                _ => break,
            }
        }
        Ok(restart)
    }

    /// A peer says `tx` fulfils plan `plan`: checked on our node against the plan's family (a
    /// plan and its replacements settle together, so a completion names every member with the
    /// transaction of whichever confirmed). The scan settles the family when the transaction is
    /// final either way.
    fn peer_completed(&self, plan: PlanId, tx: TransactionId) -> Result<Handled, ProcessorError> {
        let store = self.scanner.store();
        let Some(plan_content) = store.plan(&plan)? else {
            return Ok(Handled::Skipped("unknown_plan"));
        };
        let family = plan_content.family();
        // Settled here too by that transaction: a member's, or a conflict that ended the
        // family's signing.
        if let Some(Outcome::Completed { tx: settled, .. } | Outcome::Conflict(settled)) =
            store.outcome(&family)?
        {
            if settled == tx {
                return Ok(Handled::Done(Vec::new()));
            }
        }
        let Some(bytes) = self.scanner.network().transaction(&tx)? else {
            tracing::warn!(txid = %hex_id(&tx.0), "a peer's completion names a transaction our node does not know");
            return Ok(Handled::Skipped("unknown_transaction"));
        };
        let transaction: bitcoin::Transaction = bitcoin::consensus::deserialize(&bytes)
            .map_err(|error| NetworkError::Invalid(error.to_string()))?;
        let seen = chain_transaction(&transaction)?;
        let open = match plan_content.inputs.first() {
            Some(input) => store
                .eventuality_spending(&input.id)?
                .filter(|open| open.plan == family),
            None => None,
        };
        let eventuality = match open {
            Some(open) => open,
            None => eventuality_of(&plan_content)?,
        };
        match eventuality.check(&seen) {
            Some(Outcome::Completed { .. }) => Ok(Handled::Done(Vec::new())),
            // It spends the family's inputs without paying it: the family's signing is over
            // all the same; our scan counts the conflict when it is final.
            Some(Outcome::Conflict(_)) => {
                tracing::warn!(plan = %hex::encode(plan.as_bytes()), txid = %hex_id(&tx.0), "a peer reports a conflicting spend of the plan's inputs");
                Ok(Handled::Done(Vec::new()))
            }
            None => {
                tracing::error!(plan = %hex::encode(plan.as_bytes()), txid = %hex_id(&tx.0), "a peer's completion does not fulfil the plan");
                Ok(Handled::Skipped("false_completion"))
            }
        }
    }

    /// Acknowledges the blocks up to the context's for every confirmed key, schedules their
    /// outputs, the burns (on the active key) and the forwarding of replaced keys, retires
    /// drained ones, and records the plans (with their eventualities) and one
    /// `SubstrateBlockAck` per key (a key retired at an earlier Serai block: only when it made
    /// plans).
    ///
    /// A Serai block naming a key never confirmed to us, or numbered at or below the last
    /// handled one (re-sent under a new message id), is refused: its burns are never scheduled
    /// twice.
    fn substrate_block(
        &self,
        context: SubstrateContext,
        block: SeraiBlockNumber,
        key: NetworkKey,
        burns: &[OutInstructionWithBalance],
        changes: &mut ProcessorChanges,
    ) -> Result<Handled, ProcessorError> {
        let mut rotation = self.scanner.store().rotation()?;
        if rotation.get(&key).is_none() {
            return Ok(self.not_ours("Serai block"));
        }
        if let Some(last) = self.scanner.store().last_serai_block()? {
            if block <= last {
                tracing::error!(
                    block = block.0,
                    last = last.0,
                    "Serai block at or below the last handled one; refused, nothing scheduled"
                );
                return Ok(Handled::Skipped("stale_serai_block"));
            }
        }
        let acknowledged = match context.latest_finalized_block() {
            None => None,
            Some(hash) => {
                let Some(height) = self.scanner.network().height_of(hash.0)? else {
                    return Ok(Handled::Wait);
                };
                let median = self.scanner.network().fee_rate_of(hash.0)?;
                Some((height, plan_fee_rate(median)))
            }
        };
        let Some(active) = rotation.active().map(|active| active.pair.network_key) else {
            return Ok(self.not_ours("Serai block"));
        };
        let mut out = Vec::new();
        let mut completed = Vec::new();
        let mut totals = Totals::default();
        // A key this validator does not hold is another set's to schedule and sign.
        for confirmed in rotation
            .keys()
            .to_vec()
            .into_iter()
            .filter(|confirmed| confirmed.held)
        {
            let network_key = confirmed.pair.network_key;
            let role = if network_key == active {
                Role::Pays(burns)
            } else {
                Role::Forwards(active)
            };
            let Some(scheduled) =
                self.schedule_key(network_key, role, acknowledged, block, changes, &mut totals)?
            else {
                return Ok(Handled::Wait);
            };
            if let Some((now, _)) = acknowledged {
                if rotation.retire_if_done(&network_key, scheduled.drained, now) {
                    tracing::info!(key = %hex::encode(network_key.to_bytes()), block = block.0, "key retired: drained and forwarded");
                    changes.rotation = Some(rotation.clone());
                }
            }
            // The Serai block that retires a key still gets its (empty) acknowledgement.
            if confirmed.stage != Stage::Retired || !scheduled.plans.is_empty() {
                out.push(ProcessorMessage::Coordinator(
                    CoordinatorOut::SubstrateBlockAck(SubstrateBlockAck {
                        block,
                        key: network_key,
                        plans: scheduled.plans,
                    }),
                ));
            }
            completed.extend(scheduled.completed);
        }
        changes.last_serai_block = Some(block);
        totals.observe(&self.metrics);
        out.extend(completed);
        Ok(Handled::Done(out))
    }

    /// The scheduler failed on a Serai block: the link halts (`ProcessorError::Scheduler`).
    fn scheduler_failed(&self, block: SeraiBlockNumber, error: SchedulerError) -> ProcessorError {
        self.metrics.link_halted.set(1);
        ProcessorError::Scheduler {
            block: block.0,
            error,
        }
    }

    /// Schedules one key's part of a Serai block: acknowledges its outputs up to the block
    /// `acknowledged` names (with the fee rate plans are made at), judges its plans in flight,
    /// and runs its scheduler, which pays the burns (the active key) or forwards once it owes
    /// nothing (a replaced key). `None` when a block is not scanned yet for every key.
    fn schedule_key(
        &self,
        key: NetworkKey,
        role: Role<'_>,
        acknowledged: Option<(u64, FeeRate)>,
        block: SeraiBlockNumber,
        changes: &mut ProcessorChanges,
        totals: &mut Totals,
    ) -> Result<Option<KeyScheduled>, ProcessorError> {
        let (outputs, fee_rate, now) = match acknowledged {
            None => (Vec::new(), plan_fee_rate(None), None),
            Some((height, fee_rate)) => {
                let Some(outputs) = self.scanner.acknowledge(&key, height, changes)? else {
                    return Ok(None);
                };
                (outputs, fee_rate, Some(height))
            }
        };
        // Plans made now are in flight from the network block acknowledged last.
        let made_at = match now {
            Some(now) => now,
            None => self.scanner.store().acknowledged(&key)?.unwrap_or(0),
        };
        let bumps = match now {
            Some(now) => self.bump_stuck(&key, now, fee_rate, changes)?,
            None => Bumps::default(),
        };
        totals.bumped(&bumps);
        let Bumps {
            replacements,
            children,
            void,
            completed: replaced_completed,
            conflicted,
            ..
        } = bumps;
        // Deposits whose instruction Serai cannot take go back to the origin they name, paid
        // like any payment (bearing their fee share) by the key that received them.
        let refunds: Vec<Payment> = outputs
            .iter()
            .filter(|output| output.kind == OutputKind::External)
            .filter_map(|output| {
                Some(Payment {
                    address: output.refund.clone()?,
                    data: None,
                    amount: output.amount,
                })
            })
            .collect();
        let inputs: Vec<PlanInput> = outputs
            .into_iter()
            .map(|output| PlanInput {
                id: output.id,
                kind: output.kind,
                amount: output.amount,
            })
            .collect();
        let mut scheduler = self.scanner.store().scheduler(&key)?.map_or_else(
            || Scheduler::new(key, Limits::BITCOIN),
            |stored| stored.under(Limits::BITCOIN),
        );
        for refund in &refunds {
            tracing::info!(
                amount = refund.amount.to_sat(),
                address = %hex::encode(refund.address.script().as_bytes()),
                "deposit with an instruction Serai cannot take: refunded to its origin"
            );
        }
        self.metrics
            .refunds
            .inc_by(u64::try_from(refunds.len()).unwrap_or(u64::MAX));
        self.metrics.refunded_sats.inc_by(
            refunds
                .iter()
                .map(|refund| refund.amount.to_sat())
                .sum::<u64>(),
        );
        let mut payments = Vec::new();
        if let Role::Pays(burns) = role {
            for burn in burns {
                match payment_for_burn(burn, self.address_network) {
                    Ok(payment) => payments.push(payment),
                    Err(error) => {
                        tracing::warn!(%error, amount = burn.amount.to_sat(), "burn to an address we cannot pay; dropped, its value kept");
                        scheduler.keep(burn.amount);
                        self.metrics
                            .payments_dropped
                            .with_label_values(&["unpayable_address"])
                            .inc();
                    }
                }
            }
        }
        payments.extend(refunds);
        let scheduled = match void
            .iter()
            .try_for_each(|child| scheduler.child_void(child))
            .and_then(|()| {
                conflicted
                    .into_iter()
                    .try_for_each(|taken| scheduler.conflicted(&taken.plan, taken.recovered))
            })
            .and_then(|()| {
                children
                    .iter()
                    .try_for_each(|child| scheduler.pays_for(child))
            })
            .and_then(|()| scheduler.schedule(inputs, payments, fee_rate))
            .and_then(|mut scheduled| match role {
                Role::Pays(_) => Ok(scheduled),
                Role::Forwards(to) => scheduler
                    .forward(to, fee_rate, &mut scheduled)
                    .map(|()| scheduled),
            }) {
            Ok(scheduled) => scheduled,
            Err(error) => return Err(self.scheduler_failed(block, error)),
        };
        for dropped in &scheduled.dropped {
            let reason = match dropped.reason {
                DropReason::BelowDust => "below_dust",
                DropReason::Unpayable => "unpayable",
            };
            tracing::warn!(
                reason,
                amount = dropped.payment.amount.to_sat(),
                address = %hex::encode(dropped.payment.address.script().as_bytes()),
                "payment dropped; its value stays with the validators"
            );
            self.metrics
                .payments_dropped
                .with_label_values(&[reason])
                .inc();
        }
        totals.add(&scheduler);
        let mut completed = replaced_completed;
        for plan in &scheduled.plans {
            changes.plans.push(plan.clone());
            changes.in_flight.push(InFlight {
                family: plan.id(),
                key,
                latest: plan.id(),
                made_at,
                since: made_at,
                child: None,
            });
            let eventuality = eventuality_of(plan)?;
            match self.scanner.settled(&eventuality)? {
                None => changes.scan.eventualities.push(eventuality),
                Some(outcome) => {
                    changes.scan.outcomes.push((eventuality, outcome));
                    if let Outcome::Completed { plan, tx } = outcome {
                        completed.push(ProcessorMessage::Sign(SignOut::Completed {
                            key,
                            id: plan,
                            tx,
                        }));
                    }
                }
            }
        }
        let forwarded = scheduled
            .plans
            .iter()
            .filter(|plan| plan.change != Some(key))
            .count();
        let plans: Vec<PlanId> = replacements
            .iter()
            .chain(&children)
            .chain(&scheduled.plans)
            .map(Plan::id)
            .collect();
        tracing::info!(
            block = block.0,
            key = %hex::encode(key.to_bytes()),
            plans = plans.len(),
            replacements = replacements.len(),
            children = children.len(),
            forwarded,
            fee_rate = fee_rate.0,
            "Serai block handled"
        );
        self.metrics
            .plans_forwarded
            .inc_by(u64::try_from(forwarded).unwrap_or(u64::MAX));
        // Only a replaced key may retire: the active key is not judged (its pool may be large,
        // and judging it builds the plans forwarding it).
        let mut drained = matches!(role, Role::Forwards(_)) && plans.is_empty();
        if drained {
            for flight in self.scanner.store().in_flight()? {
                drained &= flight.key != key || changes.landed.contains(&flight.family);
            }
        }
        let drained = drained
            && scheduler
                .is_drained()
                .map_err(|error| self.scheduler_failed(block, error))?;
        changes.schedulers.push(scheduler);
        Ok(Some(KeyScheduled {
            plans,
            completed,
            drained,
        }))
    }

    /// Judges every plan family of `key` in flight when a Serai block acknowledges network
    /// block `now`: one whose inputs a transaction spent by then has landed and leaves the
    /// flight (a conflict voids its child, if it had one); one stuck (`protocol::is_stuck`
    /// since its latest member or its child was made) gets a replacement at the market rate
    /// (`bump::replacement`), in flight from `now` and watched for with its family, or, when
    /// no replacement can bump it, one child paying for it (`bump::child`, CPFP), in flight as
    /// a family of its own; or it is held, logged with the reason when it first is. Only
    /// Serai-block state and spends up to `now` are read, so every validator makes the same
    /// replacements and children.
    fn bump_stuck(
        &self,
        key: &NetworkKey,
        now: u64,
        market: FeeRate,
        changes: &mut ProcessorChanges,
    ) -> Result<Bumps, ProcessorError> {
        let store = self.scanner.store();
        // The network block the previous Serai block judged the flight at.
        let before = store.acknowledged(key)?;
        let mut bumps = Bumps::default();
        let mut open = Vec::new();
        for flight in store.in_flight()? {
            if flight.key != *key {
                continue;
            }
            // A family is recorded with its latest member in one commit, and every plan
            // spends something.
            let latest = store
                .plan(&flight.latest)?
                .filter(|plan| !plan.inputs.is_empty())
                .ok_or(DbError::Damaged("plans"))?;
            match self.spent_by_then(&latest, now)? {
                Some(spend) => self.landed(&flight, &spend, changes, &mut bumps)?,
                None => open.push((flight, latest)),
            }
        }
        let (mut stuck, mut deferred) = (0_i64, 0_u64);
        let mut held: BTreeMap<&'static str, i64> = BTreeMap::new();
        for (flight, latest) in open {
            if bumps.void.iter().any(|child| child.id() == flight.family) {
                continue;
            }
            if is_stuck(flight.made_at, now) {
                stuck += 1;
            }
            if !is_stuck(flight.since, now) {
                continue;
            }
            if bumps.replacements.len() + bumps.children.len() >= MAX_REPLACEMENTS_PER_BLOCK {
                deferred += 1;
                continue;
            }
            let family = hex::encode(flight.family.as_bytes());
            let caps = &Limits::BITCOIN.caps;
            let bumped = match flight.child {
                Some(_) => Err(Held::ChildPays),
                None => match bump::replacement(&latest, market, caps) {
                    Ok(plan) => Ok(Bump::Replacement(plan)),
                    // Nothing but the one member can confirm, so its change is certain.
                    Err(Held::FundsBranch | Held::NoRate) if latest.replaces.is_none() => {
                        bump::child(&latest, market, caps).map(Bump::Child)
                    }
                    Err(reason) => Err(reason),
                },
            };
            match bumped {
                Ok(Bump::Replacement(plan)) => {
                    self.watch_replacement(&flight, &latest, &plan, changes, &mut bumps)?;
                    tracing::warn!(
                        %family,
                        from = latest.fee_rate.0,
                        to = plan.fee_rate.0,
                        replacement = %hex::encode(plan.id().as_bytes()),
                        "stuck plan replaced at a higher fee rate"
                    );
                    self.metrics.plan_replacements.inc();
                    changes.in_flight.push(InFlight {
                        latest: plan.id(),
                        since: now,
                        ..flight
                    });
                    changes.plans.push(plan.clone());
                    bumps.replacements.push(plan);
                }
                Ok(Bump::Child(child)) => {
                    tracing::warn!(
                        %family,
                        fee_rate = latest.fee_rate.0,
                        child_fee_rate = child.fee_rate.0,
                        child = %hex::encode(child.id().as_bytes()),
                        "stuck plan cannot be replaced; a child pays for it"
                    );
                    self.metrics.plan_children.inc();
                    changes.scan.eventualities.push(eventuality_of(&child)?);
                    changes.in_flight.push(InFlight {
                        family: child.id(),
                        key: *key,
                        latest: child.id(),
                        made_at: now,
                        since: now,
                        child: None,
                    });
                    changes.in_flight.push(InFlight {
                        since: now,
                        child: Some(child.id()),
                        ..flight
                    });
                    changes.plans.push(child.clone());
                    bumps.children.push(child);
                }
                Err(reason) => {
                    *held.entry(reason.label()).or_default() += 1;
                    if before.is_some_and(|before| is_stuck(flight.since, before)) {
                        tracing::debug!(%family, reason = reason.label(), "stuck plan still held");
                    } else {
                        tracing::error!(
                            %family,
                            reason = reason.label(),
                            fee_rate = latest.fee_rate.0,
                            "stuck plan cannot be replaced nor paid for; it waits"
                        );
                    }
                }
            }
        }
        if deferred > 0 {
            tracing::warn!(
                deferred,
                "more stuck plans than one Serai block bumps; the rest wait for the next"
            );
        }
        bumps.stuck = stuck;
        bumps.held = held;
        Ok(bumps)
    }

    /// A family whose inputs `spend` spent by the Serai block's network block leaves the
    /// flight. Whether it was conflicted is judged from the plan and the spend alone, not from
    /// the scan's outcome: a node whose scan ran ahead may have seen a replacement's
    /// transaction before it knew the replacement. A conflicted family is taken back, and its
    /// child, which can never confirm, is settled by the conflict and undone.
    fn landed(
        &self,
        flight: &InFlight,
        spend: &Spend,
        changes: &mut ProcessorChanges,
        bumps: &mut Bumps,
    ) -> Result<(), ProcessorError> {
        let store = self.scanner.store();
        changes.landed.push(flight.family);
        let original = store
            .plan(&flight.family)?
            .ok_or(DbError::Damaged("plans"))?;
        if family_member(&original, &spend.transaction)?.is_some() {
            return Ok(());
        }
        let tx = spend.transaction.id;
        let recovered = self.recovered(&flight.key, spend)?;
        tracing::error!(
            family = %hex::encode(flight.family.as_bytes()),
            txid = %hex_id(&tx.0),
            recovered = recovered.to_sat(),
            "a transaction we did not sign spent a plan's inputs; its payments are owed again"
        );
        self.metrics.plans_conflicted.inc();
        bumps.conflicted.push(Conflicted {
            plan: original,
            recovered,
        });
        if let Some(child) = flight.child {
            let child = store.plan(&child)?.ok_or(DbError::Damaged("plans"))?;
            changes.landed.push(child.id());
            let first = child.inputs.first().ok_or(DbError::Damaged("plans"))?;
            if let Some(eventuality) = store
                .eventuality_spending(&first.id)?
                .filter(|open| open.plan == child.id())
            {
                changes
                    .scan
                    .outcomes
                    .push((eventuality, Outcome::Conflict(tx)));
            }
            bumps
                .completed
                .push(ProcessorMessage::Sign(SignOut::Completed {
                    key: flight.key,
                    id: child.id(),
                    tx,
                }));
            bumps.void.push(child);
        }
        Ok(())
    }

    /// Adds a replacement to its family's eventuality. On a node whose scan ran ahead of the
    /// Serai block and already settled the family, there is nothing to watch: a family
    /// completed or conflicted has the replacement reported completed with the transaction
    /// that settled it (after the acknowledgement naming it); a conflict is taken back when a
    /// Serai block reaches its height.
    fn watch_replacement(
        &self,
        flight: &InFlight,
        latest: &Plan,
        replacement: &Plan,
        changes: &mut ProcessorChanges,
        bumps: &mut Bumps,
    ) -> Result<(), ProcessorError> {
        let store = self.scanner.store();
        let first = latest.inputs.first().ok_or(DbError::Damaged("plans"))?;
        if let Some(mut eventuality) = store
            .eventuality_spending(&first.id)?
            .filter(|open| open.plan == flight.family)
        {
            eventuality.add_replacement(Member {
                plan: replacement.id(),
                outputs: eventuality_of(replacement)?.outputs,
            });
            changes.scan.eventualities.push(eventuality);
            return Ok(());
        }
        match store.outcome(&flight.family)? {
            Some(Outcome::Completed { tx, .. } | Outcome::Conflict(tx)) => {
                bumps
                    .completed
                    .push(ProcessorMessage::Sign(SignOut::Completed {
                        key: flight.key,
                        id: replacement.id(),
                        tx,
                    }));
                Ok(())
            }
            // A family in flight is watched or settled: neither is a damaged store.
            None => Err(DbError::Damaged("eventualities").into()),
        }
    }

    /// The transaction in a block up to `now` that spent one of `plan`'s inputs, if any.
    fn spent_by_then(&self, plan: &Plan, now: u64) -> Result<Option<Spend>, ProcessorError> {
        for input in &plan.inputs {
            if let Some(spend) = self.scanner.store().spent_by(&input.id)? {
                if spend.height <= now {
                    return Ok(Some(spend));
                }
            }
        }
        Ok(None)
    }

    /// What a conflicting transaction paid to `key`'s change and branch addresses: value that
    /// comes back to the scheduler as outputs (one to the deposit address is a deposit).
    fn recovered(&self, key: &NetworkKey, spend: &Spend) -> Result<Amount, ProcessorError> {
        let scripts =
            KeyScripts::derive(key).map_err(|error| NetworkError::Invalid(error.to_string()))?;
        let mut recovered = Amount::ZERO;
        for output in &spend.transaction.outputs {
            if matches!(
                scripts.kind_of(bitcoin::Script::from_bytes(&output.script)),
                Some(OutputKind::Change | OutputKind::Branch)
            ) {
                recovered = recovered.checked_add(output.amount).unwrap_or(recovered);
            }
        }
        Ok(recovered)
    }

    /// This attempt's preprocess of a recorded plan; `None` (logged) when refused or unknown.
    async fn preprocess_plan(
        &self,
        id: PlanSignId,
    ) -> Result<Option<ProcessorMessage>, ProcessorError> {
        let Some(plan) = self.scanner.store().plan(&id.id)? else {
            tracing::warn!(plan = %hex::encode(id.id.as_bytes()), "no such plan; not signed");
            return Ok(None);
        };
        match self.enclave.preprocess_plan(&id, &plan).await {
            Ok(preprocess) => Ok(Some(ProcessorMessage::Sign(SignOut::Preprocess {
                id,
                preprocess,
            }))),
            Err(EnclaveError::Refused { reason, detail }) if !refusal_may_pass(reason) => {
                // Never silent: a plan refused for good strands its inputs and payments.
                tracing::error!(
                    reason = signer_refusal_label(reason),
                    %detail,
                    plan = %hex::encode(id.id.as_bytes()),
                    attempt = id.attempt.0,
                    "the enclave refused to preprocess a plan"
                );
                self.metrics
                    .plans_refused
                    .with_label_values(&[signer_refusal_label(reason)])
                    .inc();
                Ok(None)
            }
            Err(other) => Err(ProcessorError::Enclave(other)),
        }
    }

    async fn preprocess_batch(
        &self,
        id: BatchSignId,
        batch: &Batch,
    ) -> Result<ProcessorMessage, EnclaveError> {
        let preprocess = self.enclave.preprocess_batch(&id, batch).await?;
        Ok(ProcessorMessage::Coordinator(
            CoordinatorOut::BatchPreprocess {
                id,
                block: batch.block,
                batch_id: batch.id,
                preprocess,
            },
        ))
    }

    /// Starts signing every Batch built since the last step, with attempt 0, each with its
    /// outbound preprocess and the new watermark in one commit.
    async fn sign_new_batches(&mut self) -> Result<(), ProcessorError> {
        let rotation = self.scanner.store().rotation()?;
        if rotation.active().is_none() {
            return Ok(());
        }
        let next = self.scanner.store().next_batch_to_sign()?;
        for batch in self.scanner.store().batches_from(BatchId(next))? {
            // Built from a finalized block, which stays on the node's chain.
            let Some(height) = self.scanner.network().height_of(batch.block.0)? else {
                return Ok(());
            };
            let Some(signing) = rotation.signing_batches_at(height) else {
                return Ok(());
            };
            if !signing.held {
                // Another set's Batch (this validator left with a rotation): not ours to sign.
                self.scanner.store().commit_changes(&ProcessorChanges {
                    next_batch_to_sign: Some(batch.id.0.saturating_add(1)),
                    ..ProcessorChanges::default()
                })?;
                continue;
            }
            let batch_key = signing.pair.batch_key;
            let id = BatchSignId {
                key: batch_key,
                id: BatchSignTarget {
                    network: batch.network,
                    batch: batch.id,
                },
                attempt: self.scanner.store().batch_attempt(batch.id)?,
            };
            let mut changes = ProcessorChanges {
                batch_attempts: vec![(batch.id, None)],
                next_batch_to_sign: Some(batch.id.0.saturating_add(1)),
                ..ProcessorChanges::default()
            };
            match self.preprocess_batch(id, &batch).await {
                Ok(message) => changes.scan.outbox.push(message),
                Err(EnclaveError::Refused {
                    reason: RefusalReason::BatchAhead,
                    ..
                }) => {
                    // The enclave's window is full until Serai includes a later Batch (the
                    // coordinator's `BatchIncluded` moves it): this one and those after wait.
                    let waiting = self.scanner.store().batches_from(batch.id)?.len();
                    self.metrics
                        .batches_waiting
                        .set(i64::try_from(waiting).unwrap_or(i64::MAX));
                    return Ok(());
                }
                Err(EnclaveError::Refused { reason, detail }) if !refusal_may_pass(reason) => {
                    tracing::error!(?reason, %detail, batch = batch.id.0, "enclave refused to preprocess a Batch");
                }
                Err(other) => return Err(ProcessorError::Enclave(other)),
            }
            self.scanner.store().commit_changes(&changes)?;
        }
        self.metrics.batches_waiting.set(0);
        Ok(())
    }
}
