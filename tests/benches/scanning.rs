//! How fast the scanner catches up through a node: a regtest chain on the real node (release
//! `regtest-node`), blocks scanned per second through Bitcoin Core's RPC from a fresh database,
//! every block with deposits, against fetching the same blocks alone. (`scan_blocks` times one
//! block's scan against its decoding.)
//!
//! Run: `cargo build --release --workspace --bins && cargo bench -p processor-tests --bench
//! scanning`.

// Benchmark code: a failed unwrap is a failed run, and the report goes to stdout.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::cast_possible_truncation
)]

use std::time::{Duration, Instant};

use bitcoin::{script::PushBytesBuf, Amount, ScriptBuf, TxOut};
use processor_tests::regtest::{harness::RegtestNode, wallet::TestWallet};
use scanner::{
    chain::bitcoin_core::BitcoinCore,
    chain::rpc::{Auth, CoreRpc, Retry},
    scan::metrics::ScannerMetrics,
    scan::Scanner,
    store::db::Db,
};
use schema::{
    hashes::SeraiAddress,
    ids::NetworkId,
    instruction::{InInstruction, RefundableInInstruction},
    keys::NetworkKey,
    plan::OutputKind,
    taproot::KeyScripts,
};

fn key() -> NetworkKey {
    let secp = bitcoin::secp256k1::Secp256k1::new();
    let secret = bitcoin::secp256k1::SecretKey::from_slice(&[0x21; 32]).unwrap();
    NetworkKey::from_slice(&secret.public_key(&secp).serialize()).unwrap()
}

fn on_regtest() {
    let dir = tempfile::tempdir().unwrap();
    let node = RegtestNode::start(&dir.path().join("node")).unwrap();
    let miner = TestWallet::new([0x42; 32]).unwrap();
    const BLOCKS: u32 = 300;
    node.mine(100 + BLOCKS, miner.address()).unwrap();
    let key = key();
    let external = KeyScripts::derive(&key)
        .unwrap()
        .script(OutputKind::External)
        .clone();
    // Blocks with deposits: each spends a mature coinbase into ten deposits.
    let start = node
        .rpc("getblockcount", serde_json::json!([]))
        .unwrap()
        .as_u64()
        .unwrap()
        + 1;
    for index in 0..BLOCKS {
        let coin = node.coinbase_output(index + 1).unwrap();
        let data = RefundableInInstruction {
            origin: None,
            instruction: InInstruction::Transfer {
                to: SeraiAddress([7; 32]),
            },
        }
        .encode();
        let mut outputs: Vec<TxOut> = (0..10)
            .map(|_| TxOut {
                value: Amount::from_sat(100_000),
                script_pubkey: external.clone(),
            })
            .collect();
        outputs.push(TxOut {
            value: Amount::ZERO,
            script_pubkey: ScriptBuf::new_op_return(PushBytesBuf::try_from(data).unwrap()),
        });
        outputs.push(TxOut {
            value: coin.1.value - Amount::from_sat(1_100_000),
            script_pubkey: miner.script_pubkey(),
        });
        node.send(&miner.spend(&[coin], outputs).unwrap()).unwrap();
        node.mine(1, miner.address()).unwrap();
    }
    let rpc = CoreRpc::new(
        &node.url(),
        Auth::Cookie(node.cookie_file()),
        Duration::from_secs(30),
        Retry::default(),
    );
    let mut scanner = Scanner::new(
        BitcoinCore::new(rpc),
        NetworkId::Bitcoin,
        Db::open(&dir.path().join("db")).unwrap(),
        1,
        ScannerMetrics::new().unwrap(),
    );
    scanner.add_key(key, start).unwrap();
    let started = Instant::now();
    for height in start..start + u64::from(BLOCKS) {
        let hash = scanner.network().rpc().block_hash(height).unwrap();
        std::hint::black_box(scanner.network().rpc().block(&hash).unwrap());
    }
    let fetching = started.elapsed();
    let started = Instant::now();
    let progress = scanner.tick().unwrap();
    let elapsed = started.elapsed();
    assert_eq!(progress.scanned, u64::from(BLOCKS));
    assert_eq!(progress.batches.len(), BLOCKS as usize);
    println!(
        "regtest through RPC: {} blocks (10 deposits each) in {:.2} s: {:.0} blocks/s, each block committed (synced) with its Batch; fetching alone (getblockhash + getblock): {:.0} blocks/s",
        progress.scanned,
        elapsed.as_secs_f64(),
        progress.scanned as f64 / elapsed.as_secs_f64(),
        f64::from(BLOCKS) / fetching.as_secs_f64(),
    );
}

fn main() {
    if std::env::args().any(|arg| arg == "--list") {
        return;
    }
    on_regtest();
}
