//! The scheduler: which of our outputs pay which payments (PROTOCOL.md section 5). Pure and
//! deterministic: every validator feeding it the same outputs, payments and fee rates gets
//! the same plans with the same ids. It does no I/O; `scheduler_state` and `db` persist its state.
//!
//! One scheduler per key. Each call to `schedule`:
//!
//! 1. matches new Branch outputs to the branch groups waiting for them (by exact amount, oldest
//!    group first); a matched output funds a plan for its group, with the difference between
//!    the group's sum and the output's amount (the fee share the parent transaction took)
//!    spread over the group's payments. Every other output joins the pool;
//! 2. queues new payments (dropping those below `DUST`);
//! 3. sorts the pool by value, highest first, and cuts it into chunks of `max_inputs`. The
//!    first chunk pays queued payments in FIFO order while its value covers them; further
//!    chunks of more than one output are aggregated into one change output each;
//! 4. fits each plan's payments into `max_outputs` (one slot fewer, for change): the first
//!    payments are paid directly and the excess is split into as few branch groups as can each
//!    be paid by one transaction, each paid by the parent through one output to our Branch
//!    address for the group's sum, and later from that output (groups too large for that
//!    branch again);
//! 5. builds each plan's transaction at the fee rate, to learn what its branch outputs will
//!    carry, which payments fall below dust (dropped, reported), and whether the plan yields a
//!    transaction at all (if not, its inputs return to the pool and its branch groups'
//!    payments to the front of the queue).

use std::collections::VecDeque;

use schema::{
    amount::Amount,
    keys::NetworkKey,
    plan::{OutputKind, Payment, PaymentAddress, Plan, PlanInput},
    protocol::DUST,
    taproot::{DerivedKey, KeyDerivationError},
    transaction::{build, BuildError, Built, FeeRate, PaymentOutcome},
};
use thiserror::Error;

/// The transaction size limits plans are cut to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most inputs per transaction.
    pub max_inputs: usize,
    /// Most outputs per transaction, change included. At least 3, so that branching divides.
    pub max_outputs: usize,
}

impl Limits {
    /// Bitcoin's limits: 520 key-path inputs and 520 outputs weigh about 210,000 WU, well
    /// under Bitcoin Core's standard 400,000.
    pub const BITCOIN: Limits = Limits {
        max_inputs: 520,
        max_outputs: 520,
    };
}

/// One of our outputs, as the scanner found it.
pub type Output = PlanInput;

/// Payments paid later from one branch output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BranchGroup {
    /// The amount the branch output carries (the group's sum less its share of the parent's
    /// fee): the output matching it exactly funds the group.
    pub expected: Amount,
    /// The group's payments, at their amounts before this branch's fee.
    pub payments: Vec<Payment>,
}

/// A payment that will not be made, and why. Its value stays with us.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DroppedPayment {
    /// The payment as it was when dropped.
    pub payment: Payment,
}

/// What one call to `schedule` produced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scheduled {
    /// The plans to sign, in creation order.
    pub plans: Vec<Plan>,
    /// Payments dropped because they fell below `DUST`.
    pub dropped: Vec<DroppedPayment>,
}

/// The scheduler could not plan. Never caused by outside data alone: it means the key is
/// unusable or the scheduler's own arithmetic broke, and scheduling must stop loudly.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SchedulerError {
    /// The key's branch address could not be derived.
    #[error(transparent)]
    Key(#[from] KeyDerivationError),
    /// The builder refused a plan the scheduler made.
    #[error("built an unbuildable plan: {0}")]
    Build(#[from] BuildError),
    /// The branch script is not a payable address (it always is).
    #[error("branch address is not payable")]
    BranchAddress,
}

/// The scheduler's whole state, for one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scheduler {
    key: NetworkKey,
    limits: Limits,
    pool: Vec<Output>,
    queue: VecDeque<Payment>,
    branches: Vec<BranchGroup>,
}

/// A plan being made: its payments and which of them fund which branch group.
struct Draft {
    inputs: Vec<Output>,
    payments: Vec<Payment>,
    /// For each payment, the group it funds (a branch payment) or `None` (a user payment).
    groups: Vec<Option<Vec<Payment>>>,
}

impl Scheduler {
    /// An empty scheduler.
    pub fn new(key: NetworkKey, limits: Limits) -> Self {
        Scheduler {
            key,
            limits,
            pool: Vec::new(),
            queue: VecDeque::new(),
            branches: Vec::new(),
        }
    }

    /// A scheduler with the given state, as `scheduler_db` reads it back.
    pub fn from_parts(
        key: NetworkKey,
        limits: Limits,
        pool: Vec<Output>,
        queue: VecDeque<Payment>,
        branches: Vec<BranchGroup>,
    ) -> Self {
        Scheduler {
            key,
            limits,
            pool,
            queue,
            branches,
        }
    }

    /// The key this scheduler spends from.
    pub fn key(&self) -> &NetworkKey {
        &self.key
    }

    /// The limits plans are cut to.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Outputs not yet spent by any plan.
    pub fn pool(&self) -> &[Output] {
        &self.pool
    }

    /// Payments waiting for funds, oldest first.
    pub fn queue(&self) -> &VecDeque<Payment> {
        &self.queue
    }

    /// Branch groups waiting for their branch outputs, oldest first.
    pub fn branches(&self) -> &[BranchGroup] {
        &self.branches
    }

    /// Takes new outputs and payments and makes every plan that can be made now.
    ///
    /// # Errors
    /// See `SchedulerError`; the state is unchanged when an error is returned.
    pub fn schedule(
        &mut self,
        outputs: Vec<Output>,
        payments: Vec<Payment>,
        fee_rate: FeeRate,
    ) -> Result<Scheduled, SchedulerError> {
        let mut next = self.clone();
        let scheduled = next.schedule_in_place(outputs, payments, fee_rate)?;
        *self = next;
        Ok(scheduled)
    }

    fn schedule_in_place(
        &mut self,
        outputs: Vec<Output>,
        payments: Vec<Payment>,
        fee_rate: FeeRate,
    ) -> Result<Scheduled, SchedulerError> {
        let mut scheduled = Scheduled::default();
        let mut drafts = Vec::new();

        for output in outputs {
            let matched = (output.kind == OutputKind::Branch)
                .then(|| {
                    self.branches
                        .iter()
                        .position(|group| group.expected == output.amount)
                })
                .flatten();
            match matched {
                Some(index) => {
                    let group = self.branches.remove(index);
                    let (payments, dropped) = amortize(group, output.amount);
                    scheduled.dropped.extend(dropped);
                    drafts.push(self.fit(vec![output], payments)?);
                }
                None => self.pool.push(output),
            }
        }

        for payment in payments {
            if payment.amount < DUST {
                scheduled.dropped.push(DroppedPayment { payment });
            } else {
                self.queue.push_back(payment);
            }
        }

        self.pool
            .sort_by(|a, b| b.amount.cmp(&a.amount).then(a.id.cmp(&b.id)));
        let pool = std::mem::take(&mut self.pool);
        let mut chunks = pool.chunks(self.limits.max_inputs.max(1));
        if let Some(first) = chunks.next() {
            let value = total(first.iter().map(|output| output.amount));
            let mut covered = Amount::ZERO;
            let mut paying = Vec::new();
            while let Some(payment) = self.queue.front() {
                match covered.checked_add(payment.amount) {
                    Some(sum) if sum <= value => {
                        covered = sum;
                        if let Some(payment) = self.queue.pop_front() {
                            paying.push(payment);
                        }
                    }
                    _ => break,
                }
            }
            if paying.is_empty() {
                self.pool.extend_from_slice(first);
            } else {
                drafts.push(self.fit(first.to_vec(), paying)?);
            }
        }
        for chunk in chunks {
            if chunk.len() > 1 {
                drafts.push(self.fit(chunk.to_vec(), Vec::new())?);
            } else {
                self.pool.extend_from_slice(chunk);
            }
        }

        for draft in drafts {
            self.finish(draft, fee_rate, &mut scheduled)?;
        }
        Ok(scheduled)
    }

    /// Fits payments into one transaction's outputs, moving the excess into branch payments.
    fn fit(&self, inputs: Vec<Output>, payments: Vec<Payment>) -> Result<Draft, SchedulerError> {
        // One slot is kept for change.
        let slots = self.limits.max_outputs.saturating_sub(1).max(2);
        if payments.len() <= slots {
            let groups = vec![None; payments.len()];
            return Ok(Draft {
                inputs,
                payments,
                groups,
            });
        }
        let branch = self.branch_address()?;
        let mut draft = Draft {
            inputs,
            payments: Vec::with_capacity(slots),
            groups: Vec::with_capacity(slots),
        };
        // As few branch outputs as can carry the excess (each group fits one transaction when
        // it can), the other slots paying the first payments directly: with `slots` outputs, `g`
        // branch outputs leave `slots - g` direct payments and must carry the other
        // `n - slots + g`, at most `slots` each. When even `slots` groups would be larger than
        // that, every slot is a branch and the groups branch again.
        let excess = payments.len() - slots;
        let branches = excess.div_ceil(slots - 1).min(slots);
        let direct = slots - branches;
        let grouped = payments.len() - direct;
        // Groups of sizes differing by at most one, larger ones first; a group of one is paid
        // directly.
        let base = grouped / branches;
        let larger = grouped % branches;
        let mut rest = payments.into_iter();
        for payment in rest.by_ref().take(direct) {
            draft.payments.push(payment);
            draft.groups.push(None);
        }
        for index in 0..branches {
            let size = base + usize::from(index < larger);
            let group: Vec<Payment> = rest.by_ref().take(size).collect();
            match <[Payment; 1]>::try_from(group) {
                Ok([payment]) => {
                    draft.payments.push(payment);
                    draft.groups.push(None);
                }
                Err(group) => {
                    if group.is_empty() {
                        continue;
                    }
                    draft.payments.push(Payment {
                        address: branch.clone(),
                        data: None,
                        amount: total(group.iter().map(|payment| payment.amount)),
                    });
                    draft.groups.push(Some(group));
                }
            }
        }
        Ok(draft)
    }

    /// Builds a draft's transaction and records its outcome.
    fn finish(
        &mut self,
        draft: Draft,
        fee_rate: FeeRate,
        scheduled: &mut Scheduled,
    ) -> Result<(), SchedulerError> {
        let plan = Plan {
            key: self.key,
            inputs: draft.inputs,
            payments: draft.payments,
            change: Some(self.key),
            fee_rate,
        };
        let outcomes = match build(&plan)? {
            Built::Transaction(built) => built.payments,
            Built::NoTransaction { payments } => {
                // Nothing can be built: the inputs stay ours, branch groups are released.
                self.pool.extend(plan.inputs.iter().copied());
                let mut released = Vec::new();
                for ((payment, group), _) in
                    plan.payments.into_iter().zip(draft.groups).zip(payments)
                {
                    match group {
                        Some(group) => released.extend(group),
                        None => scheduled.dropped.push(DroppedPayment { payment }),
                    }
                }
                for payment in released.into_iter().rev() {
                    self.queue.push_front(payment);
                }
                return Ok(());
            }
        };
        let mut released = Vec::new();
        for ((payment, group), outcome) in plan.payments.iter().zip(draft.groups).zip(outcomes) {
            match (group, outcome) {
                (Some(payments), PaymentOutcome::Paid { amount, .. }) => {
                    self.branches.push(BranchGroup {
                        expected: amount,
                        payments,
                    });
                }
                (Some(payments), PaymentOutcome::Dropped) => released.extend(payments),
                (None, PaymentOutcome::Dropped) => scheduled.dropped.push(DroppedPayment {
                    payment: payment.clone(),
                }),
                (None, PaymentOutcome::Paid { .. }) => {}
            }
        }
        for payment in released.into_iter().rev() {
            self.queue.push_front(payment);
        }
        scheduled.plans.push(plan);
        Ok(())
    }

    fn branch_address(&self) -> Result<PaymentAddress, SchedulerError> {
        let script = DerivedKey::derive(&self.key, OutputKind::Branch)?.script_pubkey();
        PaymentAddress::new(script).map_err(|_| SchedulerError::BranchAddress)
    }
}

/// Spreads the difference between a group's sum and its branch output's amount over the
/// group's payments (evenly, the remainder to the first), dropping those that fall below
/// `DUST`.
fn amortize(group: BranchGroup, received: Amount) -> (Vec<Payment>, Vec<DroppedPayment>) {
    let sum = total(group.payments.iter().map(|payment| payment.amount));
    let difference = sum.checked_sub(received).unwrap_or(Amount::ZERO).to_sat();
    let count = u64::try_from(group.payments.len())
        .unwrap_or(u64::MAX)
        .max(1);
    let share = difference / count;
    let remainder = difference % count;
    let mut kept = Vec::new();
    let mut dropped = Vec::new();
    for (index, mut payment) in group.payments.into_iter().enumerate() {
        let cut = if index == 0 { share + remainder } else { share };
        match payment.amount.to_sat().checked_sub(cut) {
            Some(sats) if sats >= DUST.to_sat() => {
                payment.amount = Amount::from_sat(sats).unwrap_or(Amount::ZERO);
                kept.push(payment);
            }
            _ => dropped.push(DroppedPayment { payment }),
        }
    }
    (kept, dropped)
}

/// The sum of amounts of outputs or of payments that fit in them: bounded by the money supply
/// (every output exists on chain, and payments are only grouped while outputs cover them), so
/// the saturation never takes effect.
fn total(amounts: impl Iterator<Item = Amount>) -> Amount {
    amounts.fold(Amount::ZERO, |sum, amount| {
        sum.checked_add(amount).unwrap_or(sum)
    })
}
