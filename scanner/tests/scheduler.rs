//! The scheduler, checked the way a validator set lives with it: plans are built into
//! transactions, their branch and change outputs come back as new outputs, and at the end
//! every payment is paid, waiting, or dropped as dust, with every satoshi accounted for.

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
use scanner::scheduler::{Limits, Output, Scheduler};
use schema::{
    amount::Amount,
    hashes::{PlanId, TransactionId},
    keys::NetworkKey,
    plan::{OutputId, OutputKind, Payment, PaymentAddress, Plan, PlanInput},
    protocol::DUST,
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
};

#[test]
fn branch_fees_are_amortized_over_the_branch_children() {
    let scripts = KeyScripts::derive(&key()).unwrap();
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
    let plan = &first.plans[0];
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

/// Runs the scheduler until it makes no more plans, confirming every plan's transaction and
/// feeding its branch and change outputs back. Returns the plan ids in order, the amount paid
/// to each payment index, the fees, and the final scheduler.
struct Run {
    plan_ids: Vec<PlanId>,
    paid: BTreeMap<PaymentAddress, Vec<u64>>,
    fees: u64,
    dropped: Vec<Payment>,
    scheduler: Scheduler,
}

fn run(
    limits: Limits,
    deposits: Vec<Output>,
    payments: Vec<Payment>,
    rates: &[u64],
) -> Result<Run, TestCaseError> {
    let scripts = KeyScripts::derive(&key()).unwrap();
    let mut scheduler = Scheduler::new(key(), limits);
    let mut known: BTreeSet<OutputId> = deposits.iter().map(|o| o.id).collect();
    let mut spent = BTreeSet::new();
    let mut result = Run {
        plan_ids: vec![],
        paid: BTreeMap::new(),
        fees: 0,
        dropped: vec![],
        scheduler: scheduler.clone(),
    };
    let (mut outputs, mut new_payments) = (deposits, payments);
    for round in 0.. {
        prop_assert!(round < 500, "the scheduler does not terminate");
        let rate = rates[round % rates.len()];
        let scheduled = scheduler
            .schedule(
                std::mem::take(&mut outputs),
                std::mem::take(&mut new_payments),
                FeeRate(rate),
            )
            .unwrap();
        result
            .dropped
            .extend(scheduled.dropped.into_iter().map(|d| d.payment));
        if scheduled.plans.is_empty() {
            break;
        }
        for plan in scheduled.plans {
            prop_assert!(plan.inputs.len() <= limits.max_inputs);
            for input in &plan.inputs {
                prop_assert!(known.contains(&input.id), "spends an output it never got");
                prop_assert!(spent.insert(input.id), "an output in two plans");
            }
            result.plan_ids.push(plan.id());
            let built = transaction(&plan, rate);
            prop_assert!(built.transaction.output.len() <= limits.max_outputs);
            let inputs: u64 = plan.inputs.iter().map(|i| i.amount.to_sat()).sum();
            let outputs_value: u64 = built
                .transaction
                .output
                .iter()
                .map(|o| o.value.to_sat())
                .sum();
            prop_assert_eq!(inputs, outputs_value + built.fee.to_sat());
            result.fees += built.fee.to_sat();
            for output in &built.transaction.output {
                if scripts.kind_of(&output.script_pubkey).is_none() {
                    let address = PaymentAddress::new(output.script_pubkey.clone()).unwrap();
                    result
                        .paid
                        .entry(address)
                        .or_default()
                        .push(output.value.to_sat());
                }
            }
            let returned = returned_outputs(&built, &scripts);
            known.extend(returned.iter().map(|o| o.id));
            outputs.extend(returned);
        }
    }
    result.scheduler = scheduler;
    Ok(result)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_payment_is_paid_waiting_or_dropped_and_value_is_conserved(
        max_inputs in 2usize..6,
        max_outputs in 3usize..6,
        deposits in prop::collection::vec(10_000u64..3_000_000, 1..30),
        payments in prop::collection::vec(5_000u64..400_000, 0..60),
        rates in prop::collection::vec(1u64..40, 1..4),
    ) {
        let limits = Limits { max_inputs, max_outputs };
        let deposits: Vec<Output> = deposits
            .iter()
            .zip(0u32..)
            .map(|(amount, i)| deposit(i, *amount, OutputKind::External))
            .collect();
        let payments: Vec<Payment> = payments.iter().zip(0u32..).map(|(a, i)| payment(i, *a)).collect();
        let run_once = run(limits, deposits.clone(), payments.clone(), &rates)?;

        // Determinism: the same inputs give the same plans.
        let again = run(limits, deposits.clone(), payments.clone(), &rates)?;
        prop_assert_eq!(&run_once.plan_ids, &again.plan_ids);

        // No branch group is left waiting once every transaction confirmed.
        prop_assert!(run_once.scheduler.branches().is_empty());

        // Each payment exactly once: paid (never more than asked), waiting, or dropped.
        let waiting: BTreeSet<&PaymentAddress> = run_once.scheduler.queue().iter().map(|p| &p.address).collect();
        let dropped: BTreeSet<&PaymentAddress> = run_once.dropped.iter().map(|p| &p.address).collect();
        for payment in &payments {
            let paid = run_once.paid.get(&payment.address);
            let states = usize::from(paid.is_some())
                + usize::from(waiting.contains(&payment.address))
                + usize::from(dropped.contains(&payment.address));
            prop_assert_eq!(states, 1, "payment {:?}", payment);
            if let Some(paid) = paid {
                prop_assert_eq!(paid.len(), 1);
                prop_assert!(paid[0] <= payment.amount.to_sat());
                prop_assert!(paid[0] >= DUST.to_sat());
            }
        }

        // Every satoshi deposited is paid out, spent on fees, or still ours.
        let deposited: u64 = deposits.iter().map(|d| d.amount.to_sat()).sum();
        let paid_out: u64 = run_once.paid.values().flatten().sum();
        let pool: u64 = run_once.scheduler.pool().iter().map(|o| o.amount.to_sat()).sum();
        prop_assert_eq!(deposited, paid_out + run_once.fees + pool);
    }
}

#[test]
fn more_than_max_outputs_squared_payments_terminate() {
    let limits = Limits {
        max_inputs: 3,
        max_outputs: 3,
    };
    let deposits = vec![deposit(0, 100_000_000, OutputKind::External)];
    let payments: Vec<Payment> = (0..40).map(|i| payment(i, 50_000 + u64::from(i))).collect();
    let result = run(limits, deposits, payments.clone(), &[5]).unwrap();
    assert_eq!(result.paid.len(), payments.len());
    assert!(result.scheduler.queue().is_empty());
    assert!(result.scheduler.branches().is_empty());
    // 40 payments through 2-slot transactions need a branch tree of depth at least 5.
    assert!(
        result.plan_ids.len() >= 20,
        "{} plans",
        result.plan_ids.len()
    );
}

#[test]
fn the_largest_plan_at_bitcoin_limits_is_standard() {
    let deposits: Vec<Output> = (0..600)
        .map(|i| deposit(i, 1_000_000, OutputKind::External))
        .collect();
    // P2TR payments: the heaviest standard outputs.
    let payments: Vec<Payment> = (0..2_000u32)
        .map(|i| {
            let mut program = [0u8; 32];
            program[..4].copy_from_slice(&i.to_le_bytes());
            Payment {
                address: PaymentAddress::from_bytes(&[&[0x51, 0x20][..], &program].concat())
                    .unwrap(),
                data: None,
                amount: sat(200_000),
            }
        })
        .collect();
    let mut scheduler = Scheduler::new(key(), Limits::BITCOIN);
    let scheduled = scheduler
        .schedule(deposits, payments, FeeRate(100))
        .unwrap();
    let largest = &scheduled.plans[0];
    assert_eq!(largest.inputs.len(), Limits::BITCOIN.max_inputs);
    let built = transaction(largest, 100);
    assert_eq!(built.transaction.output.len(), Limits::BITCOIN.max_outputs);
    // Signed, each input gains 66 witness bytes (and the transaction 2 for marker and flag).
    let signed_weight = built.transaction.weight().to_wu() + 2 + 66 * 520;
    assert!(signed_weight <= 400_000, "{signed_weight} WU");
}
