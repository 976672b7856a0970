//! The scheduler, checked the way a validator set lives with it: plans are built into
//! transactions, their branch and change outputs come back as new outputs, and at the end
//! every payment is paid, waiting, or dropped, with every satoshi accounted for: on chain
//! (deposits = payouts + fees + holdings) and in the scheduler's books (deposits − settled
//! burns = holdings + carried operating costs) after every call. Every plan is within the fee
//! caps the enclaves enforce, at any fee rate.

// Test code: a failed unwrap is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unwrap_in_result
)]

use std::collections::{BTreeMap, BTreeSet};

use bitcoin::{hashes::Hash, key::Secp256k1, secp256k1::SecretKey};
use proptest::prelude::*;
use scanner::schedule::{bump, Carried, DropReason, Limits, Output, Scheduler};
use schema::{
    amount::Amount,
    hashes::{PlanId, TransactionId},
    keys::NetworkKey,
    plan::{OutputId, OutputKind, Payment, PaymentAddress, Plan, PlanInput},
    protocol::{FeeCaps, DUST},
    taproot::KeyScripts,
    transaction::{build, Built, BuiltTransaction, FeeRate, PaymentOutcome},
};

fn key() -> NetworkKey {
    NetworkKey::from(
        SecretKey::from_slice(&[0x17; 32])
            .unwrap()
            .public_key(&Secp256k1::new()),
    )
}

fn sat(sats: u64) -> Amount {
    Amount::from_sat(sats).unwrap()
}

fn deposit(index: u32, amount: u64, kind: OutputKind) -> Output {
    let mut txid = [0u8; 32];
    txid[..4].copy_from_slice(&index.to_le_bytes());
    PlanInput {
        id: OutputId {
            txid: TransactionId(txid),
            vout: 0,
        },
        kind,
        amount: sat(amount),
    }
}

/// A payment to a P2WPKH address unique to `index`.
fn payment(index: u32, amount: u64) -> Payment {
    let mut program = [0u8; 20];
    program[..4].copy_from_slice(&index.to_le_bytes());
    Payment {
        address: PaymentAddress::from_bytes(&[&[0x00, 0x14][..], &program].concat()).unwrap(),
        data: None,
        amount: sat(amount),
    }
}

fn transaction(plan: &Plan, rate: u64) -> BuiltTransaction {
    assert_eq!(plan.fee_rate, FeeRate(rate));
    match build(plan).unwrap() {
        Built::Transaction(built) => built,
        Built::NoTransaction { .. } => panic!("the scheduler made a plan with no transaction"),
    }
}

/// The outputs a confirmed transaction gives back to us.
fn returned_outputs(built: &BuiltTransaction, scripts: &KeyScripts) -> Vec<Output> {
    let txid = TransactionId(built.transaction.compute_txid().to_byte_array());
    built
        .transaction
        .output
        .iter()
        .zip(0u32..)
        .filter_map(|(output, vout)| {
            Some(PlanInput {
                id: OutputId { txid, vout },
                kind: scripts.kind_of(&output.script_pubkey)?,
                amount: sat(output.value.to_sat()),
            })
        })
        .collect()
}

const SMALL: Limits = Limits {
    max_inputs: 4,
    max_outputs: 3,
    caps: FeeCaps::PROTOCOL,
};

/// Three payments of 100,000 from one deposit of 1,000,000 at 10 sat/vB under `SMALL`: the
/// scheduler, the payments, and the one plan it makes.
fn three_payments_one_plan() -> (Scheduler, Vec<Payment>, Plan) {
    let mut scheduler = Scheduler::new(key(), SMALL);
    let payments: Vec<Payment> = (0..3).map(|i| payment(i, 100_000)).collect();
    let first = scheduler
        .schedule(
            vec![deposit(1, 1_000_000, OutputKind::External)],
            payments.clone(),
            FeeRate(10),
        )
        .unwrap();
    assert_eq!(first.plans.len(), 1);
    let plan = first.plans[0].clone();
    (scheduler, payments, plan)
}

#[test]
fn branch_fees_are_amortized_over_the_branch_children() {
    let scripts = KeyScripts::derive(&key()).unwrap();
    let (mut scheduler, payments, plan) = three_payments_one_plan();
    let plan = &plan;
    // Two slots besides change: payment 0 (the oldest) direct, payments 1 and 2 in one branch
    // of 200,000.
    assert_eq!(plan.payments.len(), 2);
    assert_eq!(plan.payments[0], payments[0]);
    assert_eq!(
        plan.payments[1].address.script(),
        scripts.branch.as_script()
    );
    assert_eq!(plan.payments[1].amount, sat(200_000));

    // 1 key-path input, P2WPKH payment, P2TR branch, P2TR change: 185 vbytes, 1,850 sat at
    // 10 sat/vB, 925 from each payment.
    let built = transaction(plan, 10);
    assert_eq!(built.fee, sat(1_850));
    // Unsigned, it has no witness (nor segwit marker and flag): 168 of the 185 vbytes.
    assert_eq!(built.transaction.vsize(), 168);
    assert_eq!(
        built.payments,
        vec![
            PaymentOutcome::Paid {
                vout: 0,
                amount: sat(99_075)
            },
            PaymentOutcome::Paid {
                vout: 1,
                amount: sat(199_075)
            },
        ]
    );
    assert_eq!(scheduler.branches().len(), 1);
    assert_eq!(scheduler.branches()[0].expected, sat(199_075));

    // The branch output arrives 925 short of its group's sum: 463 from the first child (the
    // remainder goes first), 462 from the second.
    let returned = returned_outputs(&built, &scripts);
    let branch: Vec<Output> = returned
        .iter()
        .copied()
        .filter(|o| o.kind == OutputKind::Branch)
        .collect();
    assert_eq!(branch.len(), 1);
    let second = scheduler.schedule(branch, vec![], FeeRate(10)).unwrap();
    assert_eq!(second.plans.len(), 1);
    let child = &second.plans[0];
    assert_eq!(child.payments[0].amount, sat(99_537));
    assert_eq!(child.payments[1].amount, sat(99_538));
    assert_eq!(child.payments[0].address, payments[1].address);
    assert_eq!(child.payments[1].address, payments[2].address);
    assert!(scheduler.branches().is_empty());
    let built = transaction(child, 10);
    assert_eq!(built.change, None);
    assert_eq!(
        built.fee.to_sat()
            + built
                .transaction
                .output
                .iter()
                .map(|o| o.value.to_sat())
                .sum::<u64>(),
        199_075
    );
}

/// The books (what Serai still credits its users with is what we hold, less the operating
/// costs carried), given what we hold.
fn books_balance(scheduler: &Scheduler, deposited: u64, burned: u64, holdings: u64) -> bool {
    i128::from(deposited) - i128::from(burned) + i128::from(scheduler.outstanding().to_sat())
        == i128::from(holdings) + i128::from(scheduler.carried().0)
}

/// A plan funding a branch cannot be replaced; a child paying for it spends its change. The
/// parent's change, when it arrives, does not join the pool (the child spent it); the child's
/// change does; the child's fee is carried; the books balance throughout.
#[test]
fn a_child_paying_for_a_stuck_plan_keeps_the_books_and_its_parents_change_out_of_the_pool() {
    let scripts = KeyScripts::derive(&key()).unwrap();
    let (mut scheduler, _, plan) = three_payments_one_plan();
    assert_eq!(
        bump::replacement(&plan, FeeRate(40), &FeeCaps::PROTOCOL),
        Err(bump::Held::FundsBranch)
    );
    let child = bump::child(&plan, FeeRate(40), &FeeCaps::PROTOCOL).unwrap();
    let carried = scheduler.carried();
    scheduler.pays_for(&child).unwrap();
    let child_built = build_any(&child);
    assert_eq!(
        scheduler.carried().0,
        carried.0 + i64::try_from(child_built.fee.to_sat()).unwrap()
    );
    let parent = returned_outputs(&transaction(&plan, 10), &scripts);
    let change = child.inputs[0].id;
    assert!(parent.iter().any(|output| output.id == change));
    let returned = returned_outputs(&child_built, &scripts);
    let holdings = |arriving: &[Output]| -> u64 {
        arriving
            .iter()
            .filter(|output| output.id != change)
            .chain(&returned)
            .map(|output| output.amount.to_sat())
            .sum()
    };
    assert!(books_balance(
        &scheduler,
        1_000_000,
        300_000,
        holdings(&parent)
    ));

    // The parent confirms: its change is not pooled; its branch output pays its group.
    let rate = FeeRate(10);
    scheduler.schedule(parent, vec![], rate).unwrap();
    assert!(scheduler.pool().iter().all(|output| output.id != change));
    assert!(scheduler.claimed().is_empty());
    // The child confirms: its change is pooled.
    scheduler.schedule(returned.clone(), vec![], rate).unwrap();
    assert!(scheduler.pool().contains(&returned[0]));
}

/// A conflict spends the parent's inputs: the child never confirms; undoing it and taking the
/// parent back leave the books balanced with nothing claimed.
#[test]
fn a_child_of_a_conflicted_plan_is_undone_and_the_books_balance() {
    let (mut scheduler, payments, plan) = three_payments_one_plan();
    let child = bump::child(&plan, FeeRate(40), &FeeCaps::PROTOCOL).unwrap();
    let before = scheduler.carried();
    scheduler.pays_for(&child).unwrap();
    scheduler.child_void(&child).unwrap();
    assert_eq!(scheduler.carried(), before);
    assert!(scheduler.claimed().is_empty());
    scheduler.conflicted(&plan, sat(0)).unwrap();
    assert_eq!(
        scheduler.queue().iter().cloned().collect::<Vec<_>>(),
        payments
    );
    assert!(books_balance(&scheduler, 1_000_000, 300_000, 0));
}

fn build_any(plan: &Plan) -> BuiltTransaction {
    transaction(plan, plan.fee_rate.0)
}

#[test]
fn a_conflicted_plans_payments_are_owed_again_and_the_books_balance() {
    let scripts = KeyScripts::derive(&key()).unwrap();
    // Payment 0 direct, payments 1 and 2 through a branch.
    let (mut scheduler, payments, plan) = three_payments_one_plan();
    let built = transaction(&plan, 10);
    let returned: u64 = returned_outputs(&built, &scripts)
        .iter()
        .map(|o| o.amount.to_sat())
        .sum();
    assert!(books_balance(&scheduler, 1_000_000, 300_000, returned));

    // Another transaction spends the plan's input, paying 600,000 back to our change address
    // and the rest elsewhere: the plan's change and branch outputs never come.
    scheduler.conflicted(&plan, sat(600_000)).unwrap();
    assert_eq!(
        scheduler.queue().iter().cloned().collect::<Vec<_>>(),
        payments
    );
    assert!(scheduler.branches().is_empty());
    assert!(books_balance(&scheduler, 1_000_000, 300_000, 600_000));

    // What came back pays them all again, once; the books balance at every step.
    let mut arriving = vec![deposit(2, 600_000, OutputKind::Change)];
    let mut paid: BTreeMap<PaymentAddress, u32> = BTreeMap::new();
    while !arriving.is_empty() {
        let scheduled = scheduler
            .schedule(std::mem::take(&mut arriving), vec![], FeeRate(10))
            .unwrap();
        for plan in &scheduled.plans {
            let built = transaction(plan, 10);
            for output in &built.transaction.output {
                if scripts.kind_of(&output.script_pubkey).is_none() {
                    let address = PaymentAddress::new(output.script_pubkey.clone()).unwrap();
                    *paid.entry(address).or_default() += 1;
                }
            }
            arriving.extend(returned_outputs(&built, &scripts));
        }
        let holdings: u64 = scheduler
            .pool()
            .iter()
            .chain(scheduler.funded().iter().map(|f| &f.output))
            .chain(&arriving)
            .map(|o| o.amount.to_sat())
            .sum();
        assert!(books_balance(&scheduler, 1_000_000, 300_000, holdings));
    }
    assert_eq!(paid.len(), 3);
    assert!(paid.values().all(|count| *count == 1));
    assert!(scheduler.queue().is_empty() && scheduler.branches().is_empty());
}

#[test]
fn only_branch_outputs_fund_branch_groups() {
    let mut scheduler = Scheduler::new(key(), SMALL);
    let payments: Vec<Payment> = (0..3).map(|i| payment(i, 100_000)).collect();
    scheduler
        .schedule(
            vec![deposit(1, 1_000_000, OutputKind::External)],
            payments,
            FeeRate(10),
        )
        .unwrap();
    let expected = scheduler.branches()[0].expected;

    // A deposit of exactly the expected amount is a deposit.
    let lookalike = deposit(2, expected.to_sat(), OutputKind::External);
    let scheduled = scheduler
        .schedule(vec![lookalike], vec![], FeeRate(10))
        .unwrap();
    assert!(scheduled.plans.is_empty());
    assert_eq!(scheduler.branches().len(), 1);
    assert!(scheduler.pool().contains(&lookalike));

    // A branch output of another amount is pooled, not matched.
    let wrong = deposit(3, expected.to_sat() - 1, OutputKind::Branch);
    scheduler
        .schedule(vec![wrong], vec![], FeeRate(10))
        .unwrap();
    assert_eq!(scheduler.branches().len(), 1);
    assert!(scheduler.pool().contains(&wrong));
}

#[test]
fn dust_payments_are_dropped_and_large_pools_aggregated() {
    let mut scheduler = Scheduler::new(key(), SMALL);
    let deposits: Vec<Output> = (0..9)
        .map(|i| deposit(i, 50_000 + u64::from(i), OutputKind::External))
        .collect();
    let scheduled = scheduler
        .schedule(deposits, vec![payment(0, DUST.to_sat() - 1)], FeeRate(2))
        .unwrap();
    assert_eq!(scheduled.dropped.len(), 1);
    assert_eq!(scheduled.dropped[0].reason, DropReason::BelowDust);
    assert!(scheduler.queue().is_empty());
    // 9 outputs in chunks of 4: the first chunk pays nothing and stays; the second is
    // aggregated; the last chunk has one output and stays.
    assert_eq!(scheduled.plans.len(), 1);
    let aggregation = &scheduled.plans[0];
    assert_eq!(aggregation.inputs.len(), 4);
    assert!(aggregation.payments.is_empty());
    assert_eq!(scheduler.pool().len(), 5);
    let built = transaction(aggregation, 2);
    assert_eq!(built.transaction.output.len(), 1);
}

/// A chain in miniature for the scheduler: plans confirm (each transaction's branch and change
/// outputs come back as new outputs on the next call), deposits and burns arrive, and the
/// books are checked after every call.
struct Ledger {
    scheduler: Scheduler,
    scripts: KeyScripts,
    /// Outputs created by confirmed plans, not yet handed to the scheduler.
    in_flight: Vec<Output>,
    known: BTreeSet<OutputId>,
    spent: BTreeSet<OutputId>,
    deposited: u64,
    burned: u64,
    /// What each payment address received, in order.
    paid: BTreeMap<PaymentAddress, Vec<u64>>,
    paid_total: u64,
    fees: u64,
    dropped: Vec<(Payment, DropReason)>,
    plan_ids: Vec<PlanId>,
    /// The largest fee share of any plan, in basis points.
    worst_share: u64,
}

impl Ledger {
    fn new(limits: Limits) -> Self {
        Ledger {
            scheduler: Scheduler::new(key(), limits),
            scripts: KeyScripts::derive(&key()).unwrap(),
            in_flight: vec![],
            known: BTreeSet::new(),
            spent: BTreeSet::new(),
            deposited: 0,
            burned: 0,
            paid: BTreeMap::new(),
            paid_total: 0,
            fees: 0,
            dropped: vec![],
            plan_ids: vec![],
            worst_share: 0,
        }
    }

    /// One Serai block: new deposits and the outputs of confirmed plans, new burns, a fee rate.
    /// Returns how many plans were made.
    fn step(
        &mut self,
        deposits: Vec<Output>,
        burns: Vec<Payment>,
        rate: u64,
    ) -> Result<usize, TestCaseError> {
        self.deposited += deposits.iter().map(|d| d.amount.to_sat()).sum::<u64>();
        self.burned += burns.iter().map(|b| b.amount.to_sat()).sum::<u64>();
        self.known.extend(deposits.iter().map(|d| d.id));
        let mut outputs = std::mem::take(&mut self.in_flight);
        outputs.extend(deposits);
        let limits = self.scheduler.limits();
        let scheduled = self
            .scheduler
            .schedule(outputs, burns, FeeRate(rate))
            .unwrap();
        self.dropped
            .extend(scheduled.dropped.into_iter().map(|d| (d.payment, d.reason)));
        let made = scheduled.plans.len();
        for plan in scheduled.plans {
            prop_assert!(plan.inputs.len() <= limits.max_inputs);
            prop_assert_eq!(plan.fee_rate, FeeRate(rate));
            for input in &plan.inputs {
                prop_assert!(
                    self.known.contains(&input.id),
                    "spends an output it never got"
                );
                prop_assert!(self.spent.insert(input.id), "an output in two plans");
            }
            self.plan_ids.push(plan.id());
            let built = transaction(&plan, rate);
            // What every enclave checks: the fee caps, and that every payment is paid.
            prop_assert_eq!(limits.caps.check(FeeRate(rate), &built), Ok(()));
            prop_assert!(built
                .payments
                .iter()
                .all(|outcome| *outcome != PaymentOutcome::Dropped));
            prop_assert!(built.transaction.output.len() <= limits.max_outputs);
            let inputs: u64 = plan.inputs.iter().map(|i| i.amount.to_sat()).sum();
            let outputs_value: u64 = built
                .transaction
                .output
                .iter()
                .map(|o| o.value.to_sat())
                .sum();
            prop_assert_eq!(inputs, outputs_value + built.fee.to_sat());
            self.worst_share = self.worst_share.max(built.fee.to_sat() * 10_000 / inputs);
            self.fees += built.fee.to_sat();
            for output in &built.transaction.output {
                if self.scripts.kind_of(&output.script_pubkey).is_none() {
                    let address = PaymentAddress::new(output.script_pubkey.clone()).unwrap();
                    self.paid
                        .entry(address)
                        .or_default()
                        .push(output.value.to_sat());
                    self.paid_total += output.value.to_sat();
                }
            }
            let returned = returned_outputs(&built, &self.scripts);
            self.known.extend(returned.iter().map(|o| o.id));
            self.in_flight.extend(returned);
        }
        self.check_books()?;
        Ok(made)
    }

    /// Everything we hold: the pool, branch outputs waiting to pay their groups, and outputs
    /// of confirmed plans not handed back yet.
    fn holdings(&self) -> u64 {
        self.scheduler
            .pool()
            .iter()
            .chain(self.scheduler.funded().iter().map(|f| &f.output))
            .chain(&self.in_flight)
            .map(|o| o.amount.to_sat())
            .sum()
    }

    fn check_books(&self) -> Result<(), TestCaseError> {
        let holdings = self.holdings();
        // On chain: every satoshi deposited is paid out, went to miners, or is still ours.
        prop_assert_eq!(self.deposited, self.paid_total + self.fees + holdings);
        // In the books: what Serai still credits its users with (deposits less the burns that
        // were paid or dropped) is what we hold, less the operating costs not recovered yet.
        prop_assert!(
            books_balance(&self.scheduler, self.deposited, self.burned, holdings),
            "carried {:?}",
            self.scheduler.carried()
        );
        Ok(())
    }

    /// Steps with no new deposits or burns at `rate` until nothing more happens.
    fn settle(&mut self, rate: u64) -> Result<(), TestCaseError> {
        for round in 0.. {
            prop_assert!(round < 500, "the scheduler does not terminate");
            if self.step(vec![], vec![], rate)? == 0 && self.in_flight.is_empty() {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Each payment exactly once: paid (never more than asked, at least dust), waiting, or
    /// dropped.
    fn each_payment_once(&self, payments: &[Payment]) -> Result<(), TestCaseError> {
        let waiting: BTreeSet<&PaymentAddress> =
            self.scheduler.queue().iter().map(|p| &p.address).collect();
        let dropped: BTreeSet<&PaymentAddress> =
            self.dropped.iter().map(|(p, _)| &p.address).collect();
        for payment in payments {
            let paid = self.paid.get(&payment.address);
            let states = usize::from(paid.is_some())
                + usize::from(waiting.contains(&payment.address))
                + usize::from(dropped.contains(&payment.address));
            prop_assert_eq!(
                states,
                1,
                "payment {:?}; {} branch groups, {} funded, {} queued",
                payment,
                self.scheduler.branches().len(),
                self.scheduler.funded().len(),
                self.scheduler.queue().len()
            );
            if let Some(paid) = paid {
                prop_assert_eq!(paid.len(), 1);
                prop_assert!(paid[0] <= payment.amount.to_sat());
                prop_assert!(paid[0] >= DUST.to_sat());
            }
        }
        Ok(())
    }
}

fn deposits_of(amounts: &[u64], first: u32) -> Vec<Output> {
    amounts
        .iter()
        .zip(first..)
        .map(|(amount, i)| deposit(i, *amount, OutputKind::External))
        .collect()
}

fn payments_of(amounts: &[u64], first: u32) -> Vec<Payment> {
    amounts
        .iter()
        .zip(first..)
        .map(|(amount, i)| payment(i, *amount))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_payment_is_paid_waiting_or_dropped_and_every_satoshi_is_accounted(
        max_inputs in 2usize..6,
        max_outputs in 3usize..6,
        deposits in prop::collection::vec(10_000u64..3_000_000, 1..30),
        payments in prop::collection::vec(5_000u64..400_000, 0..60),
        rates in prop::collection::vec(1u64..40, 1..4),
    ) {
        let limits = Limits { max_inputs, max_outputs, caps: FeeCaps::PROTOCOL };
        let deposits = deposits_of(&deposits, 0);
        let payments = payments_of(&payments, 0);
        let run = |rates: &[u64]| -> Result<Ledger, TestCaseError> {
            let mut ledger = Ledger::new(limits);
            ledger.step(deposits.clone(), payments.clone(), rates[0])?;
            for rate in rates.iter().cycle().take(200) {
                if ledger.step(vec![], vec![], *rate)? == 0 && ledger.in_flight.is_empty() {
                    break;
                }
            }
            ledger.settle(1)?;
            Ok(ledger)
        };
        let once = run(&rates)?;
        // Determinism: the same inputs give the same plans.
        prop_assert_eq!(&once.plan_ids, &run(&rates)?.plan_ids);
        // No branch group or funded branch is left waiting once every transaction confirmed
        // and fees are at their lowest.
        prop_assert!(once.scheduler.branches().is_empty());
        prop_assert!(once.scheduler.funded().is_empty());
        once.each_payment_once(&payments)?;
    }

    /// Fee rates anywhere from 1 to 1,000 sat/vB, deposits from dust to large, bursts of small
    /// burns: no plan the enclaves would refuse, ever, and the books balance after every call.
    #[test]
    fn at_any_fee_rate_every_plan_is_within_the_caps(
        rounds in prop::collection::vec(
            (
                prop::collection::vec(10_000u64..5_000_000, 0..12),
                prop::collection::vec(10_000u64..300_000, 0..25),
                prop_oneof![1u64..20, 20u64..200, 200u64..=1_000],
            ),
            1..12,
        ),
    ) {
        let limits = Limits { max_inputs: 6, max_outputs: 5, caps: FeeCaps::PROTOCOL };
        let mut ledger = Ledger::new(limits);
        let mut all_payments = Vec::new();
        let mut next = 0u32;
        for (deposits, burns, rate) in rounds {
            let deposits = deposits_of(&deposits, next);
            let burns = payments_of(&burns, next);
            next += 100;
            all_payments.extend(burns.clone());
            ledger.step(deposits, burns, rate)?;
        }
        // When fees fall, every payment that can be paid is paid.
        ledger.settle(2)?;
        ledger.each_payment_once(&all_payments)?;
        prop_assert!(ledger.scheduler.funded().is_empty());
    }
}

#[test]
fn more_than_max_outputs_squared_payments_terminate() {
    let limits = Limits {
        max_inputs: 3,
        max_outputs: 3,
        caps: FeeCaps::PROTOCOL,
    };
    let payments: Vec<Payment> = (0..40).map(|i| payment(i, 50_000 + u64::from(i))).collect();
    let mut ledger = Ledger::new(limits);
    ledger
        .step(
            vec![deposit(0, 100_000_000, OutputKind::External)],
            payments.clone(),
            5,
        )
        .unwrap();
    ledger.settle(5).unwrap();
    assert_eq!(ledger.paid.len(), payments.len());
    assert!(ledger.scheduler.queue().is_empty());
    assert!(ledger.scheduler.branches().is_empty());
    // 40 payments through 2-slot transactions need a branch tree of depth at least 5.
    assert!(
        ledger.plan_ids.len() >= 20,
        "{} plans",
        ledger.plan_ids.len()
    );
}

fn p2tr_payment(index: u32, amount: u64) -> Payment {
    let mut program = [0u8; 32];
    program[..4].copy_from_slice(&index.to_le_bytes());
    Payment {
        address: PaymentAddress::from_bytes(&[&[0x51, 0x20][..], &program].concat()).unwrap(),
        data: None,
        amount: sat(amount),
    }
}

#[test]
fn the_largest_plan_at_bitcoin_limits_is_standard_and_within_the_caps() {
    let deposits: Vec<Output> = (0..600)
        .map(|i| deposit(i, 1_000_000, OutputKind::External))
        .collect();
    // P2TR payments (the heaviest standard outputs) needing every one of the largest outputs,
    // with change.
    let payments: Vec<Payment> = (0..2_000u32).map(|i| p2tr_payment(i, 259_900)).collect();
    let mut scheduler = Scheduler::new(key(), Limits::BITCOIN);
    let scheduled = scheduler
        .schedule(deposits, payments, FeeRate(100))
        .unwrap();
    let largest = &scheduled.plans[0];
    assert_eq!(largest.inputs.len(), Limits::BITCOIN.max_inputs);
    let built = transaction(largest, 100);
    assert_eq!(built.transaction.output.len(), Limits::BITCOIN.max_outputs);
    assert_eq!(FeeCaps::PROTOCOL.check(FeeRate(100), &built), Ok(()));
    // Signed, each input gains 66 witness bytes (and the transaction 2 for marker and flag).
    let signed_weight = built.transaction.weight().to_wu() + 2 + 66 * 520;
    assert!(signed_weight <= 400_000, "{signed_weight} WU");
}

#[test]
fn a_payment_spends_the_fewest_largest_outputs_not_a_whole_chunk() {
    // Before: one payment of 150,000 spent all 520 of the largest outputs, its fee (about
    // 30,000 vbytes) charged to the payment and over the share cap.
    let deposits: Vec<Output> = (0..600)
        .map(|i| deposit(i, 100_000 + u64::from(i), OutputKind::External))
        .collect();
    let mut scheduler = Scheduler::new(key(), Limits::BITCOIN);
    let scheduled = scheduler
        .schedule(deposits, vec![payment(1, 150_000)], FeeRate(10))
        .unwrap();
    let paying = &scheduled.plans[0];
    assert_eq!(paying.payments.len(), 1);
    // The two largest outputs cover it with change to keep.
    assert_eq!(paying.inputs.len(), 2);
    assert_eq!(paying.inputs[0].amount, sat(100_599));
    assert_eq!(paying.inputs[1].amount, sat(100_598));
    let built = transaction(paying, 10);
    assert!(built.change.is_some());
    // Two key-path inputs, a P2WPKH payment and P2TR change: 200 vbytes.
    assert_eq!(built.fee, sat(2_000));
}

#[test]
fn a_payment_over_the_share_cap_from_one_output_takes_just_enough_more() {
    // Before: over the cap with one 50,000-sat output, the plan jumped to all 520 outputs
    // worth spending; their fee (about 600,000 sat) left the payment below dust, and even at
    // the lowest rate 520 inputs cost more than it, so it was dropped for good.
    let deposits: Vec<Output> = (0..520)
        .map(|i| deposit(i, 50_000, OutputKind::External))
        .collect();
    let mut scheduler = Scheduler::new(key(), Limits::BITCOIN);
    let scheduled = scheduler
        .schedule(deposits, vec![payment(1, 40_000)], FeeRate(20))
        .unwrap();
    assert!(scheduled.dropped.is_empty());
    let paying = &scheduled.plans[0];
    // One input: 142 vbytes, 2,840 sat, over 5% of 50,000. Two: 200 vbytes, 4,000 sat,
    // within 5% of 100,000.
    assert_eq!(paying.inputs.len(), 2);
    let built = transaction(paying, 20);
    assert_eq!(built.fee, sat(4_000));
    assert_eq!(FeeCaps::PROTOCOL.check(FeeRate(20), &built), Ok(()));
}

#[test]
fn operating_costs_are_not_charged_to_a_plan_without_change() {
    // Before: the charge left the plan's leftover below dust, so it went to the miners; the
    // fee changed, the scheduler failed, and the Serai block was skipped with its outputs.
    let mut scheduler = Scheduler::from_parts(
        key(),
        Limits::BITCOIN,
        vec![deposit(1, 1_000_000, OutputKind::External)],
        Default::default(),
        vec![],
        vec![],
        Carried(5_000),
    );
    let scheduled = scheduler
        .schedule(vec![], vec![payment(1, 1_000_000)], FeeRate(10))
        .unwrap();
    let plan = &scheduled.plans[0];
    let built = transaction(plan, 10);
    assert_eq!(built.change, None);
    // The payment bears its own fee share and nothing more; the costs stay carried.
    assert_eq!(plan.payments[0].amount, sat(1_000_000));
    assert_eq!(scheduler.carried(), Carried(5_000));
}

#[test]
fn small_outputs_stay_pooled_while_fees_are_high() {
    // 20,000-sat outputs cost 58 vbytes each to spend: above 17 sat/vB that is more than the
    // 5% share cap of their value, so they are not aggregated; at 10 sat/vB they are.
    let limits = Limits {
        max_inputs: 4,
        max_outputs: 3,
        caps: FeeCaps::PROTOCOL,
    };
    let deposits: Vec<Output> = (0..12)
        .map(|i| deposit(i, 20_000, OutputKind::External))
        .collect();
    let mut ledger = Ledger::new(limits);
    assert_eq!(ledger.step(deposits, vec![], 50).unwrap(), 0);
    assert_eq!(ledger.scheduler.pool().len(), 12);
    // Fees fall: the 8 beyond the largest 4 are aggregated in two chunks.
    assert_eq!(ledger.step(vec![], vec![], 10).unwrap(), 2);
    assert!(ledger.worst_share <= 500);
    // The aggregations' fees are carried until payments bear them.
    assert!(ledger.scheduler.carried().0 > 0);
}

#[test]
fn payments_too_small_for_todays_fees_wait_and_are_paid_when_fees_fall() {
    let mut ledger = Ledger::new(Limits::BITCOIN);
    // At 300 sat/vB a 25,000-sat payment's fee share (a P2WPKH output and the transaction's
    // overhead, over 20,000 sat) leaves it below dust: it waits, it is not dropped.
    let burns = vec![payment(1, 25_000), payment(2, 5_000_000)];
    ledger
        .step(
            vec![deposit(1, 50_000_000, OutputKind::External)],
            burns.clone(),
            300,
        )
        .unwrap();
    assert!(ledger.dropped.is_empty());
    assert_eq!(ledger.paid.len(), 1, "the large payment is paid now");
    assert_eq!(ledger.scheduler.queue().len(), 1);
    ledger.settle(300).unwrap();
    assert_eq!(
        ledger.scheduler.queue().len(),
        1,
        "still waiting at 300 sat/vB"
    );
    ledger.settle(5).unwrap();
    ledger.each_payment_once(&burns).unwrap();
    assert_eq!(ledger.paid.len(), 2);
    assert!(ledger.scheduler.queue().is_empty());
}

#[test]
fn a_payment_no_fee_rate_can_pay_is_dropped_as_unpayable() {
    let mut ledger = Ledger::new(Limits::BITCOIN);
    // 10,050 sat cannot carry even its own output's fee at the lowest rate and stay above dust.
    ledger
        .step(
            vec![deposit(1, 1_000_000, OutputKind::External)],
            vec![payment(1, 10_050)],
            2,
        )
        .unwrap();
    assert_eq!(ledger.dropped.len(), 1);
    assert_eq!(ledger.dropped[0].1, DropReason::Unpayable);
    assert!(ledger.scheduler.queue().is_empty());
    // Its value stays with us: a surplus in the books.
    assert_eq!(ledger.scheduler.carried().0, -10_050);
}

#[test]
fn a_branch_child_waits_for_fees_within_the_caps() {
    // 40 small payments: 2 direct and a branch group of 38 (max 40 outputs); the group's own
    // transaction (1 input, 38 outputs, ~1,700 vbytes) at 400 sat/vB would cost more than 5%
    // of its 0.0133 BTC input. It waits until fees fall.
    let limits = Limits {
        max_inputs: 10,
        max_outputs: 40,
        caps: FeeCaps::PROTOCOL,
    };
    let burns: Vec<Payment> = (0..40).map(|i| payment(i, 35_000)).collect();
    let mut ledger = Ledger::new(limits);
    ledger
        .step(
            vec![deposit(1, 100_000_000, OutputKind::External)],
            burns.clone(),
            10,
        )
        .unwrap();
    assert_eq!(ledger.scheduler.branches().len(), 1);
    // The branch output arrives while fees are high.
    assert_eq!(ledger.step(vec![], vec![], 400).unwrap(), 0);
    assert_eq!(ledger.scheduler.funded().len(), 1);
    assert_eq!(ledger.step(vec![], vec![], 400).unwrap(), 0);
    // Fees fall: the child is made and pays every payment of the group.
    ledger.settle(10).unwrap();
    assert!(ledger.scheduler.funded().is_empty());
    ledger.each_payment_once(&burns).unwrap();
    assert_eq!(ledger.paid.len(), burns.len());
}

#[test]
fn operating_costs_are_recovered_from_later_payments() {
    let limits = Limits {
        max_inputs: 4,
        max_outputs: 3,
        caps: FeeCaps::PROTOCOL,
    };
    let mut ledger = Ledger::new(limits);
    // Aggregating 8 outputs costs fees no payment bears.
    let deposits: Vec<Output> = (0..12)
        .map(|i| deposit(i, 600_000 + u64::from(i), OutputKind::External))
        .collect();
    ledger.step(deposits, vec![], 10).unwrap();
    let carried = ledger.scheduler.carried().0;
    assert!(carried > 0);
    // Later payments bear them, each at most its own fee share again: after the first few
    // the costs are recovered, and the payments after that bear only their own fees.
    let burns: Vec<Payment> = (0..30).map(|i| payment(100 + i, 150_000)).collect();
    let mut recovered_after = None;
    for (step, chunk) in burns.chunks(2).enumerate() {
        ledger.step(vec![], chunk.to_vec(), 10).unwrap();
        if recovered_after.is_none() && ledger.scheduler.carried().0 <= 0 {
            recovered_after = Some(step);
        }
    }
    assert_eq!(recovered_after, Some(3));
    ledger.settle(10).unwrap();
    ledger.each_payment_once(&burns).unwrap();
    // Each payment bore at most twice its fee share.
    for burn in &burns {
        let paid = ledger.paid[&burn.address][0];
        assert!(burn.amount.to_sat() - paid <= 2 * 1_480, "{paid}");
    }
}

#[test]
fn a_long_mixed_run_keeps_the_books() {
    // Deposits of many sizes (near dust included), bursts, quiet stretches, burns of many
    // sizes, fee rates from 1 to 500 sat/vB: the books are checked after every call.
    let mut ledger = Ledger::new(Limits::BITCOIN);
    let mut seed = 0x5eed_u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut all_burns = Vec::new();
    let mut index = 0u32;
    for block in 0..2_000u32 {
        let rate = match block / 100 % 4 {
            0 => 1 + next() % 5,
            1 => 10 + next() % 40,
            2 => 100 + next() % 400,
            _ => 2 + next() % 20,
        };
        let quiet = block % 300 > 250;
        let burst = block % 500 == 0;
        let deposit_count = if quiet {
            0
        } else if burst {
            300
        } else {
            next() % 4
        };
        let deposits: Vec<Output> = (0..deposit_count)
            .map(|_| {
                index += 1;
                let amount = match next() % 4 {
                    0 => 10_000 + next() % 2_000,
                    1 => 20_000 + next() % 100_000,
                    2 => 500_000 + next() % 5_000_000,
                    _ => 10_000_000 + next() % 90_000_000,
                };
                deposit(index, amount, OutputKind::External)
            })
            .collect();
        let burn_count = if quiet {
            0
        } else if burst {
            200
        } else {
            next() % 3
        };
        let burns: Vec<Payment> = (0..burn_count)
            .map(|_| {
                index += 1;
                let amount = match next() % 3 {
                    0 => 9_000 + next() % 5_000,
                    1 => 20_000 + next() % 200_000,
                    _ => 1_000_000 + next() % 10_000_000,
                };
                payment(index, amount)
            })
            .collect();
        all_burns.extend(burns.clone());
        ledger.step(deposits, burns, rate).unwrap();
    }
    ledger.settle(2).unwrap();
    ledger.each_payment_once(&all_burns).unwrap();
    // Every payable burn was paid; the rest were dropped, none of them payable.
    assert!(ledger.scheduler.queue().is_empty());
    assert!(ledger.scheduler.funded().is_empty());
    assert!(ledger.scheduler.branches().is_empty());
    for (payment, reason) in &ledger.dropped {
        match reason {
            DropReason::BelowDust => assert!(payment.amount < DUST),
            DropReason::Unpayable => assert!(payment.amount < sat(DUST.to_sat() + 1_000)),
        }
    }
    assert!(ledger.worst_share <= 500);
}

fn successor() -> NetworkKey {
    NetworkKey::from(
        SecretKey::from_slice(&[0x18; 32])
            .unwrap()
            .public_key(&Secp256k1::new()),
    )
}

/// A key replaced in a rotation first pays what is queued on it, then forwards every output
/// to the new key's change address, in chunks of `max_inputs`: nothing is paid to anyone else,
/// every plan is within the caps, the value arrives at the new key less the fees (carried as
/// operating costs), and the key is drained after.
#[test]
fn a_replaced_key_pays_what_it_owes_then_forwards_everything_to_the_new_key() {
    let new = KeyScripts::derive(&successor()).unwrap();
    let mut scheduler = Scheduler::new(key(), SMALL);
    let mut deposits: Vec<Output> = (0..9)
        .map(|i| deposit(i, 200_000, OutputKind::External))
        .collect();
    deposits.push(deposit(9, 5_000_000, OutputKind::External));
    // A payment larger than the pool waits; while it does, nothing is forwarded.
    let owed = payment(1, 8_000_000);
    let mut scheduled = scheduler
        .schedule(deposits.clone(), vec![owed.clone()], FeeRate(10))
        .unwrap();
    scheduler
        .forward(successor(), FeeRate(10), &mut scheduled)
        .unwrap();
    assert!(scheduled
        .plans
        .iter()
        .all(|plan| plan.change == Some(key())));
    assert!(!scheduler.is_drained().unwrap());
    // A deposit lets it pay: now it owes nothing, and forwards.
    let mut scheduled = scheduler
        .schedule(
            vec![deposit(10, 9_000_000, OutputKind::External)],
            vec![],
            FeeRate(10),
        )
        .unwrap();
    assert!(scheduled
        .plans
        .iter()
        .flat_map(|plan| &plan.payments)
        .any(|paid| paid.address == owed.address));
    let before = scheduled.plans.len();
    let carried = scheduler.carried().0;
    scheduler
        .forward(successor(), FeeRate(10), &mut scheduled)
        .unwrap();
    let forwards = &scheduled.plans[before..];
    assert!(!forwards.is_empty());
    let (mut spent, mut arrived, mut fees) = (0_u64, 0_u64, 0_u64);
    for plan in forwards {
        assert_eq!(plan.key, key());
        assert_eq!(plan.change, Some(successor()));
        assert!(plan.payments.is_empty());
        assert!(plan.inputs.len() <= SMALL.max_inputs);
        let built = transaction(plan, 10);
        SMALL.caps.check(FeeRate(10), &built).unwrap();
        spent += plan
            .inputs
            .iter()
            .map(|input| input.amount.to_sat())
            .sum::<u64>();
        for output in &built.transaction.output {
            assert_eq!(new.kind_of(&output.script_pubkey), Some(OutputKind::Change));
            arrived += output.value.to_sat();
        }
        fees += built.fee.to_sat();
    }
    assert_eq!(spent, arrived + fees);
    assert_eq!(
        scheduler.carried().0,
        carried + i64::try_from(fees).unwrap()
    );
    assert!(scheduler.pool().is_empty());
    assert!(scheduler.is_drained().unwrap());
}

/// Outputs not worth spending at today's fee rate wait for lower fees before they are
/// forwarded; one so close to `DUST` that no fee rate can forward it alone does not keep the
/// key from being drained (it stays on the books, and goes with the next output that comes).
#[test]
fn small_outputs_are_forwarded_when_fees_fall_and_a_lone_unforwardable_one_does_not_block() {
    let mut scheduler = Scheduler::new(key(), SMALL);
    let mut scheduled = scheduler
        .schedule(
            vec![
                deposit(1, 20_000, OutputKind::External),
                deposit(2, 20_000, OutputKind::External),
            ],
            vec![],
            FeeRate(50),
        )
        .unwrap();
    scheduler
        .forward(successor(), FeeRate(50), &mut scheduled)
        .unwrap();
    assert!(scheduled.plans.is_empty());
    assert_eq!(scheduler.pool().len(), 2);
    assert!(!scheduler.is_drained().unwrap());
    let mut scheduled = scheduler.schedule(vec![], vec![], FeeRate(5)).unwrap();
    scheduler
        .forward(successor(), FeeRate(5), &mut scheduled)
        .unwrap();
    assert_eq!(scheduled.plans.len(), 1);
    assert!(scheduler.is_drained().unwrap());

    // Just above dust: forwarding it alone would leave change below dust at any rate.
    let mut scheduler = Scheduler::new(key(), SMALL);
    let lone = deposit(3, DUST.to_sat() + 100, OutputKind::External);
    let mut scheduled = scheduler.schedule(vec![lone], vec![], FeeRate(2)).unwrap();
    scheduler
        .forward(successor(), FeeRate(2), &mut scheduled)
        .unwrap();
    assert!(scheduled.plans.is_empty());
    assert_eq!(scheduler.pool(), &[lone]);
    assert!(scheduler.is_drained().unwrap());
    // With another output it goes.
    let mut scheduled = scheduler
        .schedule(
            vec![deposit(4, 50_000, OutputKind::External)],
            vec![],
            FeeRate(2),
        )
        .unwrap();
    scheduler
        .forward(successor(), FeeRate(2), &mut scheduled)
        .unwrap();
    assert_eq!(scheduled.plans.len(), 1);
    assert_eq!(scheduled.plans[0].inputs.len(), 2);
    assert!(scheduler.pool().is_empty());
}
