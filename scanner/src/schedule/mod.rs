//! The scheduler: which of our outputs pay which payments (PROTOCOL.md section 5). Pure and
//! deterministic: every validator feeding it the same outputs, payments and fee rates gets
//! the same plans with the same ids. It does no I/O; `schedule::state` and the stores persist its
//! state.
//!
//! It makes only plans every enclave signs: each plan's transaction is built here with the
//! builder the enclaves use and checked against the protocol's fee caps (`FeeCaps::check`, the
//! enclaves' own check) before it is made; what would cross them waits for lower fees.
//!
//! One scheduler per key. Each call to `schedule`:
//!
//! 1. drops new outputs a child (CPFP, `pays_for`) already spent; matches new Branch outputs to
//!    the branch groups waiting for them (by exact amount, oldest group first); a matched output
//!    is *funded*: the difference between the group's sum and the output's amount (the fee
//!    share the parent transaction took) is spread over the group's payments. Every other
//!    output joins the pool;
//! 2. queues new payments (dropping those below `DUST`);
//! 3. makes the child plan of every funded branch whose transaction is within the caps at this
//!    fee rate, and pays every payment in it (oldest first; the others wait);
//! 4. pays queued payments in FIFO order while the largest `max_inputs` outputs cover them,
//!    spending the fewest largest outputs that cover them (one more when the change would be
//!    below dust), or, when that plan's fee is above its share cap, the fewest more outputs
//!    worth spending that bring it within; payments too small for their fee share at this
//!    rate wait (dropped only when even the lowest rate from the fewest outputs cannot pay
//!    them), and the newest payments wait while no plan is within the share cap. Payments beyond one
//!    transaction's outputs go into branch groups, each paid later from one branch output;
//! 5. aggregates the pool beyond its largest `max_inputs` outputs, in chunks, keeping only
//!    outputs worth spending at this fee rate (their input's fee within the share cap), as long
//!    as the chunk's transaction stays within the caps.
//!
//! At most `MAX_SCHEDULED_PER_BLOCK` plans come out of one call; what is left waits for the next.
//!
//! **Operating costs.** Fees no user payment bears (aggregations, a branch output's share of
//! its parent's fee until its children are charged, change too small to keep, a CPFP child's
//! fee) are carried as
//! operating costs and recovered from later payments: each paid payment is charged at most its
//! own fee share again, never below `DUST`. The value of dropped payments stays with us and
//! offsets them, so the carried balance can be negative (a surplus). The books balance at every
//! step: `deposits − (burns − outstanding) = holdings + carried`, where `outstanding` is what
//! the queue, the branch groups and the funded branches still owe, at their current amounts.

pub mod bump;
pub mod state;

use std::collections::VecDeque;

use schema::{
    amount::Amount,
    keys::NetworkKey,
    limits::MAX_SCHEDULED_PER_BLOCK,
    plan::{OutputId, OutputKind, Payment, PaymentAddress, Plan, PlanInput},
    protocol::{FeeCaps, DUST, MAX_INPUTS, MAX_OUTPUTS, MIN_FEE_RATE},
    taproot::{DerivedKey, KeyDerivationError},
    transaction::{build, BuildError, Built, BuiltTransaction, FeeRate, PaymentOutcome},
};
use thiserror::Error;

/// The limits plans are cut to and the caps their fees stay under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most inputs per transaction.
    pub max_inputs: usize,
    /// Most outputs per transaction, change included. At least 3, so that branching divides.
    pub max_outputs: usize,
    /// The fee caps every plan's transaction stays under.
    pub caps: FeeCaps,
}

impl Limits {
    /// Bitcoin's protocol parameters.
    pub const BITCOIN: Limits = Limits {
        max_inputs: MAX_INPUTS,
        max_outputs: MAX_OUTPUTS,
        caps: FeeCaps::PROTOCOL,
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

/// A branch output that arrived, with the payments it is for (their amounts already reduced
/// by the branch's fee share), waiting for a fee rate at which its transaction is signable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FundedBranch {
    /// The branch output.
    pub output: Output,
    /// What it pays.
    pub payments: Vec<Payment>,
}

/// Operating costs carried: fees paid that no payment bore yet, in satoshis. Negative when the
/// value of dropped payments exceeded them (a surplus).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Carried(pub i64);

impl Carried {
    fn add(&mut self, amount: Amount) {
        self.0 = self.0.saturating_add(signed(amount));
    }

    fn sub(&mut self, amount: Amount) {
        self.0 = self.0.saturating_sub(signed(amount));
    }

    /// What is still to recover, if anything.
    fn owed(self) -> Amount {
        u64::try_from(self.0)
            .ok()
            .and_then(|sats| Amount::from_sat(sats).ok())
            .unwrap_or(Amount::ZERO)
    }
}

/// Amounts are at most 21M BTC, far within `i64`.
fn signed(amount: Amount) -> i64 {
    i64::try_from(amount.to_sat()).unwrap_or(i64::MAX)
}

/// Why a payment will not be made. Its value stays with us.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Below `DUST` as it arrived.
    BelowDust,
    /// Too small to carry its share of any transaction's fee even at the lowest fee rate.
    Unpayable,
}

/// A payment that will not be made, and why. Its value stays with us.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DroppedPayment {
    /// The payment as it was when dropped.
    pub payment: Payment,
    /// Why.
    pub reason: DropReason,
}

/// What one call to `schedule` produced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scheduled {
    /// The plans to sign, in creation order.
    pub plans: Vec<Plan>,
    /// Payments dropped.
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
    /// Charging operating costs changed a transaction's fee or dropped a payment (it never
    /// does: amounts do not change a transaction's size).
    #[error("charging operating costs changed the transaction")]
    Charge,
    /// A plan taken back yields no transaction (every plan made does).
    #[error("a plan taken back yields no transaction")]
    NoTransaction,
}

/// The fee of a child (CPFP), which no payment bears.
fn child_fee(child: &Plan) -> Result<Amount, SchedulerError> {
    match build(child)? {
        Built::Transaction(built) => Ok(built.fee),
        Built::NoTransaction { .. } => Err(SchedulerError::NoTransaction),
    }
}

/// The scheduler's whole state, for one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scheduler {
    key: NetworkKey,
    limits: Limits,
    pool: Vec<Output>,
    queue: VecDeque<Payment>,
    branches: Vec<BranchGroup>,
    funded: Vec<FundedBranch>,
    carried: Carried,
    /// Outputs a child (CPFP) spent before they were acknowledged: when one arrives, it does
    /// not join the pool.
    claimed: Vec<OutputId>,
}

/// A plan's payments: each a user payment or the branch payment of a group.
#[derive(Clone)]
struct Draft {
    payments: Vec<Payment>,
    /// For each payment, the group it funds (a branch payment) or `None` (a user payment).
    groups: Vec<Option<Vec<Payment>>>,
}

/// The state one `schedule` call works on.
struct Call<'a> {
    fee_rate: FeeRate,
    scheduled: &'a mut Scheduled,
}

impl Call<'_> {
    fn full(&self) -> bool {
        self.scheduled.plans.len() >= MAX_SCHEDULED_PER_BLOCK
    }
}

/// What became of an attempt to pay payments from the pool.
enum Attempt {
    /// A plan every enclave signs.
    Signable(Box<(Signable, Draft)>),
    /// The fee crosses a cap whatever outputs pay it.
    OverCaps,
    /// Some payments are too small for their fee share (`true` for each).
    Drops(Vec<bool>),
    /// No transaction exists: every payment is too small.
    NoTransaction,
}

/// A plan that passed every check, with its transaction.
struct Signable {
    plan: Plan,
    built: BuiltTransaction,
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
            funded: Vec::new(),
            carried: Carried::default(),
            claimed: Vec::new(),
        }
    }

    /// A scheduler with the given state, as `scheduler_state` reads it back.
    pub fn from_parts(
        key: NetworkKey,
        limits: Limits,
        pool: Vec<Output>,
        queue: VecDeque<Payment>,
        branches: Vec<BranchGroup>,
        funded: Vec<FundedBranch>,
        carried: Carried,
    ) -> Self {
        Scheduler {
            key,
            limits,
            pool,
            queue,
            branches,
            funded,
            carried,
            claimed: Vec::new(),
        }
    }

    /// The same state, with `claimed` outputs spent by children before they arrived.
    #[must_use]
    pub fn claiming(self, claimed: Vec<OutputId>) -> Self {
        Scheduler { claimed, ..self }
    }

    /// The same state, planning under `limits` from now on: the protocol's limits of the
    /// running build, never those a stored state was saved with (the enclaves check this
    /// build's caps).
    #[must_use]
    pub fn under(self, limits: Limits) -> Self {
        Scheduler { limits, ..self }
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

    /// Payments waiting for funds or for lower fees, oldest first.
    pub fn queue(&self) -> &VecDeque<Payment> {
        &self.queue
    }

    /// Branch groups waiting for their branch outputs, oldest first.
    pub fn branches(&self) -> &[BranchGroup] {
        &self.branches
    }

    /// Branch outputs that arrived and wait for lower fees to pay their groups, oldest first.
    pub fn funded(&self) -> &[FundedBranch] {
        &self.funded
    }

    /// Operating costs not yet recovered (negative: a surplus).
    pub fn carried(&self) -> Carried {
        self.carried
    }

    /// Outputs spent by children (CPFP) before they were acknowledged, oldest first.
    pub fn claimed(&self) -> &[OutputId] {
        &self.claimed
    }

    /// Takes a child (CPFP) made for a stuck plan: the parent's change it spends will not join
    /// the pool when it arrives (the child's change comes instead), and its fee, which no
    /// payment bears, is carried as an operating cost.
    ///
    /// # Errors
    /// The child does not build.
    pub fn pays_for(&mut self, child: &Plan) -> Result<(), SchedulerError> {
        let fee = child_fee(child)?;
        self.carried.add(fee);
        self.claimed
            .extend(child.inputs.iter().map(|input| input.id));
        Ok(())
    }

    /// Undoes `pays_for` for a child whose parent never confirms (a conflict spent the parent's
    /// inputs): the change it was to spend never comes, nor does its own.
    ///
    /// # Errors
    /// The child does not build.
    pub fn child_void(&mut self, child: &Plan) -> Result<(), SchedulerError> {
        let fee = child_fee(child)?;
        self.carried.sub(fee);
        self.claimed
            .retain(|claimed| child.inputs.iter().all(|input| input.id != *claimed));
        Ok(())
    }

    /// Records a burn that cannot become a payment (its address is not one we can pay): its
    /// value stays with us, a surplus in the books like a dropped payment's.
    pub fn keep(&mut self, amount: Amount) {
        self.carried.sub(amount);
    }

    /// What the scheduler still owes: every queued payment, every branch group's payments and
    /// every funded branch's payments, at their current amounts.
    pub fn outstanding(&self) -> Amount {
        total(
            self.queue
                .iter()
                .chain(self.branches.iter().flat_map(|group| &group.payments))
                .chain(self.funded.iter().flat_map(|funded| &funded.payments))
                .map(|payment| payment.amount),
        )
    }

    /// Takes back a plan whose inputs a transaction we did not sign spent (a conflict: a key
    /// compromised, or a defect): its user payments go back to the front of the queue at the
    /// plan's amounts, and the payments of the branch groups it was to fund with them; the
    /// change and branch outputs it was to return never come. Inputs the conflict left
    /// unspent stay out of the pool: the enclaves signed them into this plan's family and sign
    /// them into no other. What is lost is carried as an operating cost: the payments owed
    /// again and the outputs not returned, less `recovered`, what the conflicting transaction
    /// paid to our change and branch addresses (those outputs arrive later like any). The
    /// books still balance.
    ///
    /// # Errors
    /// The plan does not build (it was built when it was made).
    pub fn conflicted(&mut self, plan: &Plan, recovered: Amount) -> Result<(), SchedulerError> {
        let built = match build(plan)? {
            Built::Transaction(built) => built,
            Built::NoTransaction { .. } => return Err(SchedulerError::NoTransaction),
        };
        let branch = self.branch_address()?;
        let mut owed_again = Vec::new();
        let mut returned = built.change.map_or(Amount::ZERO, |(_, amount)| amount);
        for (payment, outcome) in plan.payments.iter().zip(&built.payments) {
            match outcome {
                PaymentOutcome::Paid { amount, .. } if payment.address == branch => {
                    returned = returned.checked_add(*amount).unwrap_or(returned);
                    if let Some(index) = self
                        .branches
                        .iter()
                        .position(|group| group.expected == *amount)
                    {
                        owed_again.extend(self.branches.remove(index).payments);
                    }
                }
                PaymentOutcome::Paid { .. } => {
                    self.carried.add(payment.amount);
                    owed_again.push(payment.clone());
                }
                PaymentOutcome::Dropped => {}
            }
        }
        self.carried.add(returned);
        self.carried.sub(recovered);
        for payment in owed_again.into_iter().rev() {
            self.queue.push_front(payment);
        }
        Ok(())
    }

    /// Takes new outputs and payments and makes every plan that can be signed now.
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
        let mut scheduled = Scheduled::default();
        next.schedule_in_place(
            outputs,
            payments,
            &mut Call {
                fee_rate,
                scheduled: &mut scheduled,
            },
        )?;
        *self = next;
        Ok(scheduled)
    }

    fn schedule_in_place(
        &mut self,
        outputs: Vec<Output>,
        payments: Vec<Payment>,
        call: &mut Call<'_>,
    ) -> Result<(), SchedulerError> {
        for output in outputs {
            if let Some(index) = self
                .claimed
                .iter()
                .position(|claimed| *claimed == output.id)
            {
                self.claimed.remove(index);
                continue;
            }
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
                    let payments = self.amortize(group, output.amount, call);
                    self.funded.push(FundedBranch { output, payments });
                }
                None => self.pool.push(output),
            }
        }
        for payment in payments {
            if payment.amount < DUST {
                self.drop_payment(payment, DropReason::BelowDust, call);
            } else {
                self.queue.push_back(payment);
            }
        }
        self.pay_funded_branches(call)?;
        self.pool
            .sort_by(|a, b| b.amount.cmp(&a.amount).then(a.id.cmp(&b.id)));
        self.pay_queue(call)?;
        self.aggregate(call)
    }

    /// Records a dropped payment: its value stays with us and offsets operating costs.
    fn drop_payment(&mut self, payment: Payment, reason: DropReason, call: &mut Call<'_>) {
        self.carried.sub(payment.amount);
        call.scheduled
            .dropped
            .push(DroppedPayment { payment, reason });
    }

    /// Spreads the difference between a group's sum and its branch output's amount (the
    /// branch's share of its parent's fee) over the group's payments, evenly with the remainder
    /// to the first; a payment that would fall below `DUST` is dropped and the difference spread
    /// over the others again. The difference was carried as an operating cost since the parent
    /// was made; what the kept payments bear of it is recovered. The kept payments never sum to
    /// more than the branch output.
    fn amortize(
        &mut self,
        group: BranchGroup,
        received: Amount,
        call: &mut Call<'_>,
    ) -> Vec<Payment> {
        let sum = total(group.payments.iter().map(|payment| payment.amount));
        let difference = sum.checked_sub(received).unwrap_or(Amount::ZERO).to_sat();
        let mut kept = group.payments;
        loop {
            let cuts = split(difference, kept.len());
            let (stay, fall): (Vec<_>, Vec<_>) =
                kept.into_iter().zip(cuts).partition(|(payment, cut)| {
                    payment.amount.to_sat().checked_sub(*cut) >= Some(DUST.to_sat())
                });
            if fall.is_empty() {
                let mut amortized = Vec::with_capacity(stay.len());
                for (mut payment, cut) in stay {
                    let cut = Amount::from_sat(cut).unwrap_or(Amount::ZERO);
                    self.carried.sub(cut);
                    payment.amount = payment.amount.checked_sub(cut).unwrap_or(Amount::ZERO);
                    amortized.push(payment);
                }
                return amortized;
            }
            for (payment, _) in fall {
                self.drop_payment(payment, DropReason::Unpayable, call);
            }
            kept = stay.into_iter().map(|(payment, _)| payment).collect();
        }
    }

    /// Makes the child plan of every funded branch that is signable now, oldest first.
    fn pay_funded_branches(&mut self, call: &mut Call<'_>) -> Result<(), SchedulerError> {
        let funded = std::mem::take(&mut self.funded);
        for branch in funded {
            if call.full() {
                self.funded.push(branch);
                continue;
            }
            // Payments that cannot be paid even at the lowest fee rate never will be; the
            // others are paid together, once the fee rate lets every one of them be paid.
            let at_minimum = self
                .try_payments(&[branch.output], &branch.payments, MIN_FEE_RATE)?
                .unwrap_or_else(|| vec![true; branch.payments.len()]);
            let mut payments = Vec::new();
            for (payment, hopeless) in branch.payments.into_iter().zip(at_minimum) {
                if hopeless {
                    self.drop_payment(payment, DropReason::Unpayable, call);
                } else {
                    payments.push(payment);
                }
            }
            if payments.is_empty() {
                // Nothing left to pay from it: the output is ours like any other.
                self.pool.push(branch.output);
                continue;
            }
            let draft = self.fit(payments.clone())?;
            if let Some(signable) = self.signable(vec![branch.output], &draft, call.fee_rate)? {
                self.commit(signable, draft, Amount::ZERO, call);
                continue;
            }
            // A dropped payment's value may be left over as change too small to keep, which
            // would go to the miners and can cross the share cap at any fee rate: with one more
            // input (our smallest output) it is kept as change instead.
            let smallest = self
                .pool
                .iter()
                .enumerate()
                .min_by(|(_, a), (_, b)| a.amount.cmp(&b.amount).then(a.id.cmp(&b.id)))
                .map(|(index, output)| (index, *output));
            if let Some((index, extra)) = smallest {
                let inputs = vec![branch.output, extra];
                if let Some(signable) = self.signable(inputs, &draft, call.fee_rate)? {
                    self.pool.remove(index);
                    self.commit(signable, draft, Amount::ZERO, call);
                    continue;
                }
            }
            self.funded.push(FundedBranch {
                output: branch.output,
                payments,
            });
        }
        Ok(())
    }

    /// For each payment, whether it would be dropped (below dust after its fee share) in a
    /// transaction spending `inputs` at `fee_rate`; `None` when no transaction can be built.
    fn try_payments(
        &self,
        inputs: &[Output],
        payments: &[Payment],
        fee_rate: FeeRate,
    ) -> Result<Option<Vec<bool>>, SchedulerError> {
        let draft = self.fit(payments.to_vec())?;
        let plan = self.plan(inputs.to_vec(), &draft, fee_rate);
        Ok(match build(&plan)? {
            Built::Transaction(built) => Some(user_drops(&draft, &built.payments, payments.len())),
            Built::NoTransaction { .. } => None,
        })
    }

    /// Pays queued payments from the pool (sorted, largest first).
    fn pay_queue(&mut self, call: &mut Call<'_>) -> Result<(), SchedulerError> {
        if call.full() || self.queue.is_empty() {
            return Ok(());
        }
        let top = self.pool.len().min(self.limits.max_inputs);
        let value = total(self.pool.iter().take(top).map(|output| output.amount));
        // The oldest payments the largest outputs cover, in FIFO order.
        let mut covered = Amount::ZERO;
        let mut selected = 0;
        for payment in &self.queue {
            match covered.checked_add(payment.amount) {
                Some(sum) if sum <= value => {
                    covered = sum;
                    selected += 1;
                }
                _ => break,
            }
        }
        // Each with its place in the queue, so that those that wait keep it.
        let mut paying: Vec<(usize, Payment)> = self.queue.drain(..selected).enumerate().collect();
        let mut waiting: Vec<(usize, Payment)> = Vec::new();
        let mut unpayable: Vec<Payment> = Vec::new();
        // Payments too small for their fee share at this rate wait for lower fees, unless even
        // the lowest rate could not pay them. Each round removes at least one payment.
        let mut made = None;
        while !paying.is_empty() {
            let payments: Vec<Payment> =
                paying.iter().map(|(_, payment)| payment.clone()).collect();
            match self.payment_plan(&payments, top, call.fee_rate)? {
                Attempt::Signable(signable) => {
                    made = Some(*signable);
                    break;
                }
                Attempt::OverCaps => {
                    // The newest payments wait: the most of the oldest that make a signable
                    // plan, by bisection (a handful of builds, however many payments).
                    let (mut good, mut bad) = (0, paying.len());
                    while bad - good > 1 {
                        let middle = good + (bad - good) / 2;
                        match self.payment_plan(&payments[..middle], top, call.fee_rate)? {
                            Attempt::Signable(signable) => {
                                good = middle;
                                made = Some(*signable);
                            }
                            _ => bad = middle,
                        }
                    }
                    waiting.extend(paying.drain(good..));
                    if good == 0 {
                        made = None;
                    }
                    break;
                }
                Attempt::Drops(dropped) => {
                    // Never payable: dropped even at the lowest rate from the fewest outputs.
                    let fewest = self.inputs_for(&payments, top);
                    let at_minimum = self
                        .try_payments(&fewest, &payments, MIN_FEE_RATE)?
                        .unwrap_or_else(|| vec![true; payments.len()]);
                    let mut kept = Vec::new();
                    for ((entry, now), never) in paying.into_iter().zip(dropped).zip(at_minimum) {
                        match (now, never) {
                            (false, _) => kept.push(entry),
                            (true, true) => unpayable.push(entry.1),
                            (true, false) => waiting.push(entry),
                        }
                    }
                    paying = kept;
                }
                Attempt::NoTransaction => {
                    waiting.append(&mut paying);
                }
            }
        }
        // Waiting payments go back in front of those not selected, in their original order.
        waiting.sort_by_key(|(place, _)| *place);
        for (_, payment) in waiting.into_iter().rev() {
            self.queue.push_front(payment);
        }
        for payment in unpayable {
            self.drop_payment(payment, DropReason::Unpayable, call);
        }
        if let Some((signable, draft)) = made {
            let spent = signable.plan.inputs.len();
            let signable = self.charge(signable, &draft)?;
            let charged = total(draft.payments.iter().zip(&signable.plan.payments).map(
                |(before, after)| {
                    before
                        .amount
                        .checked_sub(after.amount)
                        .unwrap_or(Amount::ZERO)
                },
            ));
            self.pool.drain(..spent);
            self.commit(signable, draft, charged, call);
        }
        Ok(())
    }

    /// The plan paying `payments` from the largest `top` outputs at `fee_rate`: spending the
    /// fewest outputs that cover them or, when that crosses the share cap, the fewest more of
    /// the outputs worth spending at this rate that bring it within (each lowers the fee's
    /// share of the inputs, and adds to the fee the payments bear).
    fn payment_plan(
        &self,
        payments: &[Payment],
        top: usize,
        fee_rate: FeeRate,
    ) -> Result<Attempt, SchedulerError> {
        let draft = self.fit(payments.to_vec())?;
        let fewest = self.inputs_for(payments, top).len();
        let worth = self
            .pool
            .iter()
            .take(top)
            .take_while(|output| self.worth_spending(output.amount, fee_rate))
            .count();
        let attempt = |count: usize| -> Result<Attempt, SchedulerError> {
            let inputs: Vec<Output> = self.pool.iter().take(count).copied().collect();
            let plan = self.plan(inputs, &draft, fee_rate);
            let built = match build(&plan)? {
                Built::Transaction(built) => built,
                Built::NoTransaction { .. } => return Ok(Attempt::NoTransaction),
            };
            if self.limits.caps.check(fee_rate, &built).is_err() {
                return Ok(Attempt::OverCaps);
            }
            let dropped = user_drops(&draft, &built.payments, payments.len());
            if dropped.iter().any(|dropped| *dropped) {
                return Ok(Attempt::Drops(dropped));
            }
            Ok(Attempt::Signable(Box::new((
                Signable { plan, built },
                draft.clone(),
            ))))
        };
        let first = attempt(fewest)?;
        if !matches!(first, Attempt::OverCaps) || worth <= fewest {
            return Ok(first);
        }
        // Outputs worth spending lower the fee's share as they are added (all but a step where
        // change appears, which adds an output's fee): bisect for the fewest within the caps (a
        // handful of builds, however many outputs). Where that step breaks monotony the plan
        // found may not be the smallest; it is within the caps all the same, and the same on
        // every validator.
        let last = attempt(worth)?;
        if matches!(last, Attempt::OverCaps) {
            return Ok(last);
        }
        let (mut over, mut within, mut found) = (fewest, worth, last);
        while within - over > 1 {
            let middle = over + (within - over) / 2;
            match attempt(middle)? {
                Attempt::OverCaps => over = middle,
                outcome => {
                    within = middle;
                    found = outcome;
                }
            }
        }
        Ok(found)
    }

    /// The fewest of the largest `top` pool outputs whose value covers `payments`, plus one
    /// more when what is left over would be change too small to keep.
    fn inputs_for(&self, payments: &[Payment], top: usize) -> Vec<Output> {
        let needed = total(payments.iter().map(|payment| payment.amount));
        let mut value = Amount::ZERO;
        let mut count = 0;
        for output in self.pool.iter().take(top) {
            if value >= needed {
                break;
            }
            value = value.checked_add(output.amount).unwrap_or(value);
            count += 1;
        }
        let left = value.checked_sub(needed).unwrap_or(Amount::ZERO);
        if left > Amount::ZERO && left < DUST && count < top {
            count += 1;
        }
        self.pool.iter().take(count).copied().collect()
    }

    /// Charges carried operating costs to the plan's user payments: each at most its own fee
    /// share again, never below `DUST`, in payment order until the costs are recovered.
    fn charge(&self, signable: Signable, draft: &Draft) -> Result<Signable, SchedulerError> {
        let mut owed = self.carried.owed();
        // Without change, what a charge takes from a payment would go to the miners, not to
        // us: such a plan recovers nothing.
        if owed == Amount::ZERO || signable.built.change.is_none() {
            return Ok(signable);
        }
        let Signable { mut plan, built } = signable;
        let mut changed = false;
        for ((payment, group), outcome) in plan
            .payments
            .iter_mut()
            .zip(&draft.groups)
            .zip(&built.payments)
        {
            let (None, PaymentOutcome::Paid { amount, .. }) = (group, outcome) else {
                continue;
            };
            let fee_share = payment.amount.checked_sub(*amount).unwrap_or(Amount::ZERO);
            let room = amount.checked_sub(DUST).unwrap_or(Amount::ZERO);
            let charge = fee_share.min(room).min(owed);
            if charge == Amount::ZERO {
                continue;
            }
            payment.amount = payment.amount.checked_sub(charge).unwrap_or(payment.amount);
            owed = owed.checked_sub(charge).unwrap_or(Amount::ZERO);
            changed = true;
        }
        if !changed {
            return Ok(Signable { plan, built });
        }
        // Lower amounts change neither the transaction's size nor its fee: every payment is
        // still paid, at least `DUST`, and the caps still hold.
        match build(&plan)? {
            Built::Transaction(charged)
                if charged.fee == built.fee
                    && charged
                        .payments
                        .iter()
                        .all(|outcome| *outcome != PaymentOutcome::Dropped) =>
            {
                Ok(Signable {
                    plan,
                    built: charged,
                })
            }
            _ => Err(SchedulerError::Charge),
        }
    }

    /// Aggregates the pool beyond its largest `max_inputs` outputs.
    fn aggregate(&mut self, call: &mut Call<'_>) -> Result<(), SchedulerError> {
        let keep = self.limits.max_inputs;
        if self.pool.len() <= keep {
            return Ok(());
        }
        let tail = self.pool.split_off(keep);
        let mut left = Vec::new();
        for chunk in tail.chunks(self.limits.max_inputs.max(1)) {
            if call.full() {
                left.extend_from_slice(chunk);
                continue;
            }
            // Sorted largest first: the outputs worth spending are a prefix.
            let worth = chunk
                .iter()
                .take_while(|output| self.worth_spending(output.amount, call.fee_rate))
                .count();
            let (spend, rest) = chunk.split_at(worth);
            left.extend_from_slice(rest);
            if spend.len() < 2 {
                left.extend_from_slice(spend);
                continue;
            }
            let draft = Draft {
                payments: Vec::new(),
                groups: Vec::new(),
            };
            match self.signable(spend.to_vec(), &draft, call.fee_rate)? {
                Some(signable) => self.commit(signable, draft, Amount::ZERO, call),
                None => left.extend_from_slice(spend),
            }
        }
        self.pool.extend(left);
        Ok(())
    }

    /// Whether this key owes nothing and holds nothing it could ever forward: no queued
    /// payments, branch groups, funded branches or claimed outputs, and no pooled outputs that
    /// a forwarding plan could move even at `MIN_FEE_RATE` (an output so close to `DUST` that
    /// no transaction can keep it stays pooled and on the books, and goes with the next output
    /// that arrives). A drained key of a finished rotation may retire.
    ///
    /// # Errors
    /// The plan forwarding the pool does not build.
    pub fn is_drained(&self) -> Result<bool, SchedulerError> {
        if !(self.queue.is_empty()
            && self.branches.is_empty()
            && self.funded.is_empty()
            && self.claimed.is_empty())
        {
            return Ok(false);
        }
        if self.pool.is_empty() {
            return Ok(true);
        }
        let mut trial = self.clone();
        let mut scheduled = Scheduled::default();
        trial.forward(self.key, MIN_FEE_RATE, &mut scheduled)?;
        Ok(scheduled.plans.is_empty())
    }

    /// Forwards the pool to `to`, the key that replaced this one in a rotation, once this key
    /// owes nothing (no queued payments, branch groups or funded branches: what was planned on
    /// it completes on it first). The outputs worth spending at `fee_rate`, largest first, go in
    /// plans of at most `max_inputs` inputs, no payments and change to `to`, each within the
    /// caps; the others wait for lower fees. A forwarding plan's fee is carried as an operating
    /// cost, like an aggregation's. Appends to `scheduled` (a `schedule` call's), within
    /// `MAX_SCHEDULED_PER_BLOCK` plans in all; what is left waits for the next call.
    ///
    /// # Errors
    /// See `SchedulerError`; the state is unchanged when an error is returned.
    pub fn forward(
        &mut self,
        to: NetworkKey,
        fee_rate: FeeRate,
        scheduled: &mut Scheduled,
    ) -> Result<(), SchedulerError> {
        if !self.queue.is_empty() || !self.branches.is_empty() || !self.funded.is_empty() {
            return Ok(());
        }
        let mut next = self.clone();
        let mut call = Call {
            fee_rate,
            scheduled,
        };
        next.pool
            .sort_by(|a, b| b.amount.cmp(&a.amount).then(a.id.cmp(&b.id)));
        let worth = next
            .pool
            .iter()
            .take_while(|output| next.worth_spending(output.amount, fee_rate))
            .count();
        let mut left = next.pool.split_off(worth);
        let spend = std::mem::take(&mut next.pool);
        let draft = Draft {
            payments: Vec::new(),
            groups: Vec::new(),
        };
        for chunk in spend.chunks(next.limits.max_inputs.max(1)) {
            if call.full() {
                left.extend_from_slice(chunk);
                continue;
            }
            let plan = Plan {
                change: Some(to),
                ..next.plan(chunk.to_vec(), &draft, fee_rate)
            };
            let built = match build(&plan)? {
                Built::Transaction(built) if next.limits.caps.check(fee_rate, &built).is_ok() => {
                    built
                }
                _ => {
                    left.extend_from_slice(chunk);
                    continue;
                }
            };
            next.commit(
                Signable { plan, built },
                draft.clone(),
                Amount::ZERO,
                &mut call,
            );
        }
        next.pool = left;
        *self = next;
        Ok(())
    }

    /// Whether spending an output of `amount` costs, at `fee_rate`, no more than the share cap
    /// of its value.
    fn worth_spending(&self, amount: Amount, fee_rate: FeeRate) -> bool {
        let fee = fee_rate
            .0
            .saturating_mul(schema::transaction::KEY_PATH_INPUT_WEIGHT)
            .div_ceil(4);
        self.limits
            .caps
            .share_allows(Amount::from_sat(fee).unwrap_or(amount), amount)
    }

    /// The plan of `draft` spending `inputs` at `fee_rate`, if its transaction exists, pays
    /// every user payment and is within the caps.
    fn signable(
        &self,
        inputs: Vec<Output>,
        draft: &Draft,
        fee_rate: FeeRate,
    ) -> Result<Option<Signable>, SchedulerError> {
        let plan = self.plan(inputs, draft, fee_rate);
        let built = match build(&plan)? {
            Built::Transaction(built) => built,
            Built::NoTransaction { .. } => return Ok(None),
        };
        let dropped = user_drops(draft, &built.payments, draft.payments.len());
        if dropped.iter().any(|dropped| *dropped)
            || self.limits.caps.check(fee_rate, &built).is_err()
        {
            return Ok(None);
        }
        Ok(Some(Signable { plan, built }))
    }

    fn plan(&self, inputs: Vec<Output>, draft: &Draft, fee_rate: FeeRate) -> Plan {
        Plan {
            key: self.key,
            inputs,
            payments: draft.payments.clone(),
            change: Some(self.key),
            fee_rate,
            replaces: None,
        }
    }

    /// Makes a signable plan: its branch groups start waiting for their outputs, and the fee
    /// no user payment bears is carried (`charged` is what the plan recovered).
    fn commit(&mut self, signable: Signable, draft: Draft, charged: Amount, call: &mut Call<'_>) {
        let Signable { plan, built } = signable;
        let mut borne = Amount::ZERO;
        for ((payment, group), outcome) in
            plan.payments.iter().zip(draft.groups).zip(&built.payments)
        {
            match (group, outcome) {
                (Some(payments), PaymentOutcome::Paid { amount, .. }) => {
                    self.branches.push(BranchGroup {
                        expected: *amount,
                        payments,
                    });
                }
                (None, PaymentOutcome::Paid { amount, .. }) => {
                    let share = payment.amount.checked_sub(*amount).unwrap_or(Amount::ZERO);
                    borne = borne.checked_add(share).unwrap_or(borne);
                }
                // `signable` and `charge` refuse plans dropping a payment.
                (_, PaymentOutcome::Dropped) => {}
            }
        }
        self.carried.add(built.fee);
        self.carried.sub(borne);
        self.carried.sub(charged);
        call.scheduled.plans.push(plan);
    }

    /// Fits payments into one transaction's outputs, moving the excess into branch payments.
    fn fit(&self, payments: Vec<Payment>) -> Result<Draft, SchedulerError> {
        // One slot is kept for change.
        let slots = self.limits.max_outputs.saturating_sub(1).max(2);
        if payments.len() <= slots {
            let groups = vec![None; payments.len()];
            return Ok(Draft { payments, groups });
        }
        let branch = self.branch_address()?;
        let mut draft = Draft {
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

    fn branch_address(&self) -> Result<PaymentAddress, SchedulerError> {
        let script = DerivedKey::derive(&self.key, OutputKind::Branch)?.script_pubkey();
        PaymentAddress::new(script).map_err(|_| SchedulerError::BranchAddress)
    }
}

/// For each of the `count` payments a draft was fitted from, whether the builder dropped it:
/// a user payment dropped itself, or a payment inside a dropped branch payment.
fn user_drops(draft: &Draft, outcomes: &[PaymentOutcome], count: usize) -> Vec<bool> {
    let mut dropped = Vec::with_capacity(count);
    for (group, outcome) in draft.groups.iter().zip(outcomes) {
        let is_dropped = *outcome == PaymentOutcome::Dropped;
        match group {
            None => dropped.push(is_dropped),
            Some(payments) => dropped.extend(std::iter::repeat_n(is_dropped, payments.len())),
        }
    }
    dropped.resize(count, true);
    dropped
}

/// `amount` split over `count` shares: evenly, the remainder to the first.
fn split(amount: u64, count: usize) -> Vec<u64> {
    let Ok(divisor) = u64::try_from(count) else {
        return Vec::new();
    };
    if divisor == 0 {
        return Vec::new();
    }
    let (share, remainder) = (amount / divisor, amount % divisor);
    (0..count)
        .map(|index| if index == 0 { share + remainder } else { share })
        .collect()
}

/// The sum of amounts of outputs or of payments that fit in them: bounded by the money supply
/// (every output exists on chain, and payments are only grouped while outputs cover them), so
/// the saturation never takes effect.
fn total(amounts: impl Iterator<Item = Amount>) -> Amount {
    amounts.fold(Amount::ZERO, |sum, amount| {
        sum.checked_add(amount).unwrap_or(sum)
    })
}
