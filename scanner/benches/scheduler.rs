//! Planning time for the worst case the scheduler meets in one call: 10,000 unspent outputs
//! and 10,000 pending payments, planned at Bitcoin's limits (520 inputs, 520 outputs), so
//! that one plan pays through branch groups and the rest of the pool is aggregated. Every
//! plan's transaction and sighashes are built inside the call.
//!
//! Run: `cargo bench -p scanner --bench scheduler`. Prints the minimum and median of 10 runs.

// A benchmark binary: a failed unwrap is a failed run, and printing is its output.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use bitcoin::{key::Secp256k1, secp256k1::SecretKey};
use scanner::schedule::{Limits, Scheduler};
use schema::{
    amount::Amount,
    hashes::TransactionId,
    keys::NetworkKey,
    plan::{OutputId, OutputKind, Payment, PaymentAddress, PlanInput},
    transaction::FeeRate,
};

const OUTPUTS: u32 = 10_000;
const PAYMENTS: u32 = 10_000;
const RUNS: usize = 10;

fn main() {
    let key = NetworkKey::from(
        SecretKey::from_slice(&[5; 32])
            .unwrap()
            .public_key(&Secp256k1::new()),
    );
    let outputs: Vec<PlanInput> = (0..OUTPUTS)
        .map(|i| {
            let mut txid = [0u8; 32];
            txid[..4].copy_from_slice(&i.to_le_bytes());
            PlanInput {
                id: OutputId {
                    txid: TransactionId(txid),
                    vout: i % 3,
                },
                kind: OutputKind::External,
                // 0.05 to 0.25 BTC: the largest chunk covers every payment.
                amount: Amount::from_sat(5_000_000 + u64::from(i) * 2_000).unwrap(),
            }
        })
        .collect();
    let payments: Vec<Payment> = (0..PAYMENTS)
        .map(|i| {
            let mut program = [0u8; 32];
            program[..4].copy_from_slice(&i.to_le_bytes());
            Payment {
                address: PaymentAddress::from_bytes(&[&[0x51, 0x20][..], &program].concat())
                    .unwrap(),
                data: None,
                amount: Amount::from_sat(20_000 + u64::from(i)).unwrap(),
            }
        })
        .collect();

    let mut times: Vec<Duration> = Vec::with_capacity(RUNS);
    let mut plans = 0;
    for _ in 0..RUNS {
        let mut scheduler = Scheduler::new(key, Limits::BITCOIN);
        let start = Instant::now();
        let scheduled = scheduler
            .schedule(outputs.clone(), payments.clone(), FeeRate(25))
            .unwrap();
        times.push(start.elapsed());
        plans = scheduled.plans.len();
        assert!(scheduler.queue().is_empty());
    }
    times.sort();
    println!(
        "schedule {OUTPUTS} outputs + {PAYMENTS} payments: {plans} plans; min {:?}, median {:?} over {RUNS} runs",
        times[0],
        times[RUNS / 2]
    );
}
