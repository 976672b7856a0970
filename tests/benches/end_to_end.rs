//! End-to-end latency on the devnet (release binaries): from the coordinator sending a Serai
//! block with a burn to the payout in a block with `CONFIRMATIONS` confirmations. Each round:
//! every processor acknowledges the Serai block (scheduling from the change of the previous
//! payout), the coordinator attests the identical acknowledgements, three of four sign the
//! transaction through their enclaves, it is published and mined. Regtest mines on demand, so
//! the time is the processors' and enclaves' own, not Bitcoin's.
//!
//! Run: `cargo build --release --workspace --bins && cargo bench -p processor-tests --bench
//! end_to_end`.

// Benchmark code: a failed unwrap is a failed run, and the report goes to stdout.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::time::{Duration, Instant};

use processor_tests::{
    devnet::{Devnet, CONFIRMATIONS},
    regtest::wallet::TestWallet,
};
use schema::{
    amount::Amount,
    ids::{Attempt, Participant},
    instruction::OutInstructionWithBalance,
    sign_id::PlanSignId,
};

const ROUNDS: u64 = 10;

fn main() {
    if std::env::args().any(|arg| arg == "--list") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut devnet = Devnet::start(dir.path(), 3, 4).unwrap();
    let pair = devnet.key_generation().unwrap();
    devnet.confirm(pair).unwrap();
    devnet.deposit(&pair, 40 * 100_000_000, [1; 32]).unwrap();
    let signers: Vec<Participant> = (1..=3).map(|i| Participant::new(i).unwrap()).collect();
    devnet.sign_batch(0, &signers).unwrap();
    let user = TestWallet::new([0x0b; 32]).unwrap();

    let mut samples: Vec<Duration> = Vec::new();
    for round in 1..=ROUNDS {
        let started = Instant::now();
        let ack = devnet
            .substrate_block(
                round,
                &pair,
                vec![OutInstructionWithBalance {
                    address: user.address().to_string().into_bytes(),
                    data: None,
                    amount: Amount::from_sat(1_000_000).unwrap(),
                }],
                &devnet.all(),
            )
            .unwrap();
        devnet.acknowledge(&ack).unwrap();
        for plan in &ack.plans {
            let id = PlanSignId {
                key: pair.network_key,
                id: *plan,
                attempt: Attempt(0),
            };
            devnet.sign_plan(id, &signers).unwrap();
        }
        devnet.mine(u32::try_from(CONFIRMATIONS).unwrap()).unwrap();
        samples.push(started.elapsed());
        // The payout's change is reported in its block's Batch; once Serai includes it, the
        // change pays the next round.
        devnet.sign_next_batch(&signers).unwrap();
    }
    samples.sort();
    println!(
        "burn to payout with {CONFIRMATIONS} confirmations on the devnet (3-of-4, release): median {:.1} ms, max {:.1} ms, min {:.1} ms ({ROUNDS} rounds)",
        samples[samples.len() / 2].as_secs_f64() * 1000.0,
        samples[samples.len() - 1].as_secs_f64() * 1000.0,
        samples[0].as_secs_f64() * 1000.0,
    );
}
