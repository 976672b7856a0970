//! How much memory the scanner's state costs at scale: a RocksDB store holding 100,000 unspent
//! outputs of ours, and a scheduler holding the same outputs with 10,000 queued payments.
//!
//! The state is written first; then a fresh process (this benchmark run again with `--hold
//! DIR`) does what the scanner does with it: opens the store (indexing our outputs), scans a
//! mainnet-sized block into it (committed), and handles a Serai block's scheduling (the stored
//! scheduler read, scheduled, written back). It reports its peak and final resident memory
//! (`VmHWM`, `VmRSS` of /proc/self/status) against the 200 MB the scanner must stay under.
//!
//! Run: `ops/bench memory` (or `cargo bench -p processor-tests --bench memory`).

// Benchmark code: a failed unwrap is a failed run, and the report goes to stdout.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::{collections::VecDeque, path::Path, process::Command};

use processor_tests::blocks::{bench_key, mainnet_sized_block};
use scanner::{
    chain::bitcoin_core::BitcoinBlock,
    scan::block::scan_block,
    scan::outputs::ReceivedOutput,
    schedule::{Carried, Limits, Scheduler},
    store::{
        db::{Db, ScannedKey},
        ProcessorChanges, ProcessorStore, ScanChanges, ScanStore,
    },
};
use schema::{
    amount::Amount,
    hashes::TransactionId,
    ids::NetworkId,
    keys::NetworkKey,
    plan::{OutputId, OutputKind, Payment, PaymentAddress, PlanInput},
    taproot::KeyScripts,
    transaction::FeeRate,
};

const OUTPUTS: u32 = 100_000;
const PAYMENTS: u32 = 10_000;
/// The resident memory the scanner must stay under.
const BUDGET_MB: f64 = 200.0;
const HEIGHT: u64 = 800_000;

fn output(index: u32) -> PlanInput {
    let mut txid = [0xee; 32];
    txid[..4].copy_from_slice(&index.to_le_bytes());
    PlanInput {
        id: OutputId {
            txid: TransactionId(txid),
            vout: index % 3,
        },
        kind: OutputKind::External,
        amount: Amount::from_sat(100_000 + u64::from(index)).unwrap(),
    }
}

fn payment(index: u32) -> Payment {
    let mut program = [0u8; 32];
    program[..4].copy_from_slice(&index.to_le_bytes());
    Payment {
        address: PaymentAddress::from_bytes(&[&[0x51, 0x20][..], &program].concat()).unwrap(),
        data: None,
        amount: Amount::from_sat(20_000 + u64::from(index)).unwrap(),
    }
}

/// Writes the state: our outputs received, the key scanned up to `HEIGHT`, the scheduler.
fn write_state(dir: &Path, key: NetworkKey) {
    let db = Db::open(dir).unwrap();
    let outputs = (0..OUTPUTS)
        .map(|index| {
            let input = output(index);
            let received = ReceivedOutput {
                id: input.id,
                key,
                kind: input.kind,
                amount: input.amount,
                instruction: None,
                refund: None,
            };
            (1, received)
        })
        .collect();
    db.apply(&ScanChanges {
        outputs,
        keys: vec![ScannedKey {
            key,
            activation: 1,
            next: HEIGHT,
        }],
        ..ScanChanges::default()
    })
    .unwrap();
    let scheduler = Scheduler::from_parts(
        key,
        Limits::BITCOIN,
        (0..OUTPUTS).map(output).collect(),
        (0..PAYMENTS).map(payment).collect::<VecDeque<_>>(),
        Vec::new(),
        Vec::new(),
        Carried::default(),
    );
    db.commit_changes(&ProcessorChanges {
        schedulers: vec![scheduler],
        ..ProcessorChanges::default()
    })
    .unwrap();
}

/// A line of /proc/self/status in MB.
fn status_mb(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|line| line.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"));
    let kb: f64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|value| value.parse().ok())
        .unwrap();
    kb / 1024.0
}

/// The child: what the scanner does with the state, then its memory.
fn hold(dir: &Path) {
    let key = bench_key().unwrap();
    let scripts = KeyScripts::derive(&key).unwrap();
    let db = Db::open(dir).unwrap();
    let opened = status_mb("VmRSS:");

    let block = BitcoinBlock::new(
        HEIGHT,
        mainnet_sized_block(1, scripts.script(OutputKind::External)),
    );
    let scanned = db.keys().unwrap()[0];
    let scan = scan_block(&db, NetworkId::Bitcoin, &block, &[(scanned, &scripts)]).unwrap();
    db.apply(&scan.changes).unwrap();
    drop(block);

    let mut scheduler = db.scheduler(&key).unwrap().unwrap().under(Limits::BITCOIN);
    let held = (scheduler.pool().len(), scheduler.queue().len());
    let scheduled = scheduler
        .schedule(Vec::new(), Vec::new(), FeeRate(25))
        .unwrap();
    db.commit_changes(&ProcessorChanges {
        schedulers: vec![scheduler],
        ..ProcessorChanges::default()
    })
    .unwrap();
    println!(
        "held {} outputs and {} queued payments; scanned a mainnet-sized block ({} ours) and scheduled {} plans",
        held.0,
        held.1,
        scan.received.outputs.len(),
        scheduled.plans.len()
    );
    println!(
        "resident: {opened:.1} MB after opening the store, {:.1} MB at the end, peak {:.1} MB (budget {BUDGET_MB} MB)",
        status_mb("VmRSS:"),
        status_mb("VmHWM:"),
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|arg| arg == "--list") {
        return;
    }
    if let Some(at) = args.iter().position(|arg| arg == "--hold") {
        hold(Path::new(&args[at + 1]));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    write_state(dir.path(), bench_key().unwrap());
    let child = Command::new(std::env::current_exe().unwrap())
        .arg("--hold")
        .arg(dir.path())
        .output()
        .unwrap();
    print!("{}", String::from_utf8_lossy(&child.stdout));
    assert!(
        child.status.success(),
        "{}",
        String::from_utf8_lossy(&child.stderr)
    );
}
