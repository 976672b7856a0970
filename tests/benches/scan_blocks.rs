//! How fast the scanner reads a block, against decoding it alone and against a wallet library,
//! on the same blocks in one run.
//!
//! Each block is timed three ways, interleaved, and the median of `RUNS` runs kept:
//! - decode: `bitcoin::consensus::deserialize` of the block's bytes, nothing else;
//! - scanner: decoding, then the scanner's own work through the `Network` abstraction
//!   (`BitcoinBlock`, the borrowed `BlockView`) and its pure core (`scan::block::scan_block`)
//!   reading a RocksDB store that holds 100,000 of our outputs: every output typed, every input
//!   checked against our outputs, deposits and their data read, the Batches built;
//! - BDK (built with `--features bdk`): decoding, then `bdk_wallet::Wallet::apply_block` into a
//!   wallet watching the same deposit script.
//!
//! The blocks are read from the file `SCAN_BLOCKS` names (each block a little-endian u32
//! length, then the consensus-encoded block), or else 30 mainnet-sized blocks are generated
//! (3,000 transactions of two inputs and two outputs each, one in a hundred a deposit to us).
//!
//! Run: `ops/bench scan` (or `cargo bench -p processor-tests --features bdk --bench
//! scan_blocks`, with `SCAN_BLOCKS=blocks.bin` for real blocks).

// Benchmark code: a failed unwrap is a failed run, and the report goes to stdout.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::cast_possible_truncation
)]

use std::time::{Duration, Instant};

use bitcoin::{consensus, Block, ScriptBuf};
use processor_tests::blocks::{bench_key, mainnet_sized_block, split_blocks};
use scanner::{
    chain::bitcoin_core::BitcoinBlock,
    scan::block::scan_block,
    scan::outputs::ReceivedOutput,
    store::{
        db::{Db, ScannedKey},
        ScanChanges, ScanStore,
    },
};
use schema::{
    hashes::TransactionId,
    ids::NetworkId,
    keys::NetworkKey,
    plan::{OutputId, OutputKind},
    taproot::{DerivedKey, KeyScripts},
};

/// Timed runs of each block, each way.
const RUNS: usize = 15;
/// Our outputs in the store the scanner reads.
const HELD: u32 = 100_000;
/// The height the blocks are scanned at.
const HEIGHT: u64 = 800_000;

/// The blocks to time: from the file `SCAN_BLOCKS` names, or generated.
fn blocks(ours: &ScriptBuf) -> (String, Vec<Vec<u8>>) {
    let Ok(path) = std::env::var("SCAN_BLOCKS") else {
        let blocks = (0..30)
            .map(|seed| consensus::serialize(&mainnet_sized_block(seed, ours)))
            .collect();
        return ("30 generated mainnet-sized blocks".into(), blocks);
    };
    let file = std::fs::read(&path).unwrap_or_else(|error| panic!("{path}: {error}"));
    let blocks = split_blocks(&file).unwrap_or_else(|error| panic!("{path}: {error}"));
    (format!("{} blocks from {path}", blocks.len()), blocks)
}

/// A store holding `HELD` outputs of ours, none of them in the timed blocks.
fn store(dir: &std::path::Path, key: NetworkKey) -> Db {
    let db = Db::open(dir).unwrap();
    let outputs = (0..HELD)
        .map(|index| {
            let mut txid = [0xee; 32];
            txid[..4].copy_from_slice(&index.to_le_bytes());
            let output = ReceivedOutput {
                id: OutputId {
                    txid: TransactionId(txid),
                    vout: index % 3,
                },
                key,
                kind: OutputKind::External,
                amount: schema::amount::Amount::from_sat(100_000).unwrap(),
                instruction: None,
                refund: None,
            };
            (1, output)
        })
        .collect();
    db.apply(&ScanChanges {
        outputs,
        ..ScanChanges::default()
    })
    .unwrap();
    db
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// The descriptor of the key-path-only Taproot output `kind` of `key` pays: the same script
/// as the scanner's.
fn descriptor(key: &NetworkKey, kind: OutputKind) -> String {
    format!("tr({})", DerivedKey::derive(key, kind).unwrap().internal)
}

/// One run of BDK on `raw`: a fresh wallet watching the deposit and change descriptors times
/// decoding the block and applying it (`Wallet::apply_block_connected_to`, `apply_block` with
/// the block connected to the wallet's genesis, since its parent is not in the wallet).
#[cfg(feature = "bdk")]
fn bdk_run(raw: &[u8], descriptors: &(String, String)) -> Option<Duration> {
    use bdk_wallet::{bitcoin::Network, chain::BlockId, Wallet};

    let mut wallet = Wallet::create(descriptors.0.clone(), descriptors.1.clone())
        .network(Network::Regtest)
        .create_wallet_no_persist()
        .unwrap();
    let started = Instant::now();
    let decoded: Block = consensus::deserialize(raw).unwrap();
    let genesis = BlockId {
        height: 0,
        hash: wallet.local_chain().genesis_hash(),
    };
    wallet
        .apply_block_connected_to(&decoded, HEIGHT as u32, genesis)
        .unwrap();
    let elapsed = started.elapsed();
    drop(std::hint::black_box((decoded, wallet)));
    Some(elapsed)
}

/// Without BDK built, no comparison.
#[cfg(not(feature = "bdk"))]
fn bdk_run(_: &[u8], _: &(String, String)) -> Option<Duration> {
    None
}

fn main() {
    if std::env::args().any(|arg| arg == "--list") {
        return;
    }
    let key = bench_key().unwrap();
    let scripts = KeyScripts::derive(&key).unwrap();
    let deposit = scripts.script(OutputKind::External).clone();
    let (source, blocks) = blocks(&deposit);
    let dir = tempfile::tempdir().unwrap();
    let db = store(dir.path(), key);
    let scanned = ScannedKey {
        key,
        activation: 1,
        next: HEIGHT,
    };
    let keys = [(scanned, &scripts)];
    let descriptors = (
        descriptor(&key, OutputKind::External),
        descriptor(&key, OutputKind::Change),
    );

    println!(
        "{source}; median of {RUNS} runs each; the scanner's store holds {HELD} of our outputs"
    );
    let (mut decode_total, mut scan_total, mut bdk_total) =
        (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let mut bytes = 0usize;
    for (index, raw) in blocks.iter().enumerate() {
        let (mut decode, mut scan, mut bdk) = (Vec::new(), Vec::new(), Vec::new());
        let mut received = 0;
        let mut transactions = 0;
        for _ in 0..RUNS {
            let started = Instant::now();
            let decoded: Block = consensus::deserialize(raw).unwrap();
            decode.push(started.elapsed());
            transactions = decoded.txdata.len();
            drop(std::hint::black_box(decoded));

            let started = Instant::now();
            let decoded: Block = consensus::deserialize(raw).unwrap();
            let block = BitcoinBlock::new(HEIGHT, decoded);
            let result = scan_block(&db, NetworkId::Bitcoin, &block, &keys).unwrap();
            scan.push(started.elapsed());
            received = result.received.outputs.len();
            drop(std::hint::black_box((block, result)));

            bdk.extend(bdk_run(raw, &descriptors));
        }
        let (decode, scan) = (median(&mut decode), median(&mut scan));
        decode_total += decode;
        scan_total += scan;
        bytes += raw.len();
        let mut line = format!(
            "block {index}: {transactions} tx, {} bytes, {received} ours: decode {:.3} ms; scanner {:.3} ms ({:.2}x decode)",
            raw.len(),
            ms(decode),
            ms(scan),
            scan.as_secs_f64() / decode.as_secs_f64(),
        );
        if !bdk.is_empty() {
            let bdk = median(&mut bdk);
            bdk_total += bdk;
            line += &format!(
                "; BDK {:.3} ms ({:.2}x decode, {:.2}x the scanner)",
                ms(bdk),
                bdk.as_secs_f64() / decode.as_secs_f64(),
                bdk.as_secs_f64() / scan.as_secs_f64(),
            );
        }
        println!("{line}");
    }
    let count = blocks.len() as u32;
    let mut summary = format!(
        "all {count} blocks ({:.1} MB), mean of medians: decode {:.3} ms; scanner {:.3} ms ({:.2}x decode, {:.0} MB/s)",
        bytes as f64 / 1e6,
        ms(decode_total / count),
        ms(scan_total / count),
        scan_total.as_secs_f64() / decode_total.as_secs_f64(),
        bytes as f64 / 1e6 / scan_total.as_secs_f64(),
    );
    if bdk_total > Duration::ZERO {
        summary += &format!(
            "; BDK {:.3} ms ({:.2}x decode, {:.2}x the scanner)",
            ms(bdk_total / count),
            bdk_total.as_secs_f64() / decode_total.as_secs_f64(),
            bdk_total.as_secs_f64() / scan_total.as_secs_f64(),
        );
    }
    println!("{summary}");
}
