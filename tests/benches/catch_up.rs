//! How fast the scanner catches up on a backlog through a node, against fetching the same
//! blocks alone.
//!
//! The real regtest node (release `regtest-node`, every block validated by Bitcoin Core's
//! kernel) is given a chain of mainnet-sized blocks: 3,000 transactions each, every one
//! spending the two outputs of its predecessor in the block before (anyone-can-spend P2WSH
//! outputs with padded witnesses, so that no signature is made or checked), about 1.3 MB a
//! block; in every block 30 of them also pay a deposit to our key with its InInstruction.
//!
//! Then, through Core's RPC (`getblockhash`, then `getblock` in hex, or Core's binary REST
//! endpoint), each way:
//! - fetching alone: every block fetched, one after another, nothing decoded;
//! - the scanner: a fresh RocksDB store, `Scanner::tick` over the whole backlog: blocks fetched
//!   ahead on one thread and decoded on another (`Network::blocks`), each scanned and committed
//!   (synced) with its Batch.
//!
//! Blocks: `CATCH_UP_BLOCKS` (default 500; the regtest node holds every block in memory,
//! about 6 MB each).
//!
//! Run: `ops/bench catch-up` (or `cargo build --release --workspace --bins && cargo bench -p
//! processor-tests --bench catch_up`).

// Benchmark code: a failed unwrap is a failed run, and the report goes to stdout.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::{
    path::Path,
    time::{Duration, Instant},
};

use bitcoin::{
    absolute::LockTime, consensus::encode::serialize_hex, opcodes::all::OP_DROP, opcodes::OP_TRUE,
    script::Builder, transaction, Amount, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut,
    Witness,
};
use processor_tests::{
    blocks::{bench_key, deposit_data},
    regtest::{harness::RegtestNode, wallet::TestWallet},
};
use scanner::{
    chain::bitcoin_core::BitcoinCore,
    chain::rpc::{Auth, CoreRpc, RawBlock, Retry},
    scan::metrics::ScannerMetrics,
    scan::Scanner,
    store::db::Db,
};
use schema::{ids::NetworkId, keys::NetworkKey, plan::OutputKind, taproot::KeyScripts};
use serde_json::json;

/// Transactions in each block besides the coinbase.
const CHAINS: usize = 3_000;
/// Witness padding per input, for a mainnet-sized block.
const PAD: usize = 120;
/// A deposit's value.
const DEPOSIT: u64 = 20_000;

/// Spends of the anyone-can-spend script: its witness is the padding, then the script.
fn anyone() -> ScriptBuf {
    Builder::new()
        .push_opcode(OP_DROP)
        .push_opcode(OP_TRUE)
        .into_script()
}

fn spend(outpoint: OutPoint) -> TxIn {
    TxIn {
        previous_output: outpoint,
        script_sig: ScriptBuf::new(),
        sequence: Sequence::MAX,
        witness: Witness::from_slice(&[vec![0x5a; PAD], anyone().to_bytes()]),
    }
}

/// Mines a block of exactly `transactions` (after the coinbase).
fn generate(node: &RegtestNode, miner: &TestWallet, transactions: &[Transaction]) {
    let hex: Vec<String> = transactions.iter().map(serialize_hex).collect();
    node.rpc("generateblock", json!([miner.address().to_string(), hex]))
        .unwrap();
}

/// Builds the backlog: returns the height of its first block.
fn backlog(node: &RegtestNode, blocks: u32, deposit: &ScriptBuf) -> u64 {
    let miner = TestWallet::new([0x42; 32]).unwrap();
    node.mine(101, miner.address()).unwrap();
    let chained = ScriptBuf::new_p2wsh(&anyone().wscript_hash());
    let coin = node.coinbase_output(1).unwrap();
    let each = (coin.1.value.to_sat() - 1_000_000) / (2 * CHAINS as u64);
    let fan_out = miner
        .spend(
            &[coin],
            (0..2 * CHAINS)
                .map(|_| TxOut {
                    value: Amount::from_sat(each),
                    script_pubkey: chained.clone(),
                })
                .collect(),
        )
        .unwrap();
    let txid = fan_out.compute_txid();
    // Each chain's two spendable outputs and their value.
    let mut chains: Vec<([OutPoint; 2], u64)> = (0..CHAINS)
        .map(|chain| {
            let vout = |n: usize| u32::try_from(2 * chain + n).unwrap();
            (
                [OutPoint::new(txid, vout(0)), OutPoint::new(txid, vout(1))],
                2 * each,
            )
        })
        .collect();
    generate(node, &miner, &[fan_out]);
    let start = node
        .rpc("getblockcount", json!([]))
        .unwrap()
        .as_u64()
        .unwrap()
        + 1;
    let data = deposit_data();
    for block in 0..blocks as usize {
        let transactions: Vec<Transaction> = chains
            .iter_mut()
            .enumerate()
            .map(|(chain, (spent, value))| {
                let mut output = Vec::new();
                let mut left = *value;
                if (chain + block) % 100 == 0 {
                    output.push(TxOut {
                        value: Amount::from_sat(DEPOSIT),
                        script_pubkey: deposit.clone(),
                    });
                    output.push(TxOut {
                        value: Amount::ZERO,
                        script_pubkey: ScriptBuf::new_op_return(&data),
                    });
                    left -= DEPOSIT;
                }
                output.push(TxOut {
                    value: Amount::from_sat(left / 2),
                    script_pubkey: chained.clone(),
                });
                output.push(TxOut {
                    value: Amount::from_sat(left - left / 2),
                    script_pubkey: chained.clone(),
                });
                let transaction = Transaction {
                    version: transaction::Version::TWO,
                    lock_time: LockTime::ZERO,
                    input: vec![spend(spent[0]), spend(spent[1])],
                    output,
                };
                let txid = transaction.compute_txid();
                let first = u32::try_from(transaction.output.len() - 2).unwrap();
                *spent = [OutPoint::new(txid, first), OutPoint::new(txid, first + 1)];
                *value = left;
                transaction
            })
            .collect();
        generate(node, &miner, &transactions);
        if (block + 1) % 100 == 0 {
            println!("  {} of {blocks} blocks mined", block + 1);
        }
    }
    start
}

fn main() {
    if std::env::args().any(|arg| arg == "--list") {
        return;
    }
    let blocks: u32 = std::env::var("CATCH_UP_BLOCKS")
        .ok()
        .and_then(|count| count.parse().ok())
        .unwrap_or(500);
    let dir = tempfile::tempdir().unwrap();
    let node = RegtestNode::start(&dir.path().join("node")).unwrap();
    let key = bench_key().unwrap();
    let deposit = KeyScripts::derive(&key)
        .unwrap()
        .script(OutputKind::External)
        .clone();
    let started = Instant::now();
    let start = backlog(&node, blocks, &deposit);
    println!(
        "a backlog of {blocks} blocks ({CHAINS} transactions each) mined in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let rpc = CoreRpc::new(
        &node.url(),
        Auth::Cookie(node.cookie_file()),
        Duration::from_secs(60),
        Retry::default(),
    );
    for (way, rpc) in [
        ("getblock hex", rpc.clone()),
        ("REST binary", rpc.with_rest()),
    ] {
        measure(way, rpc, &dir.path().join(way), key, start, blocks);
    }
}

/// Fetching alone, then the scanner from a fresh store, both through `rpc`.
fn measure(way: &str, rpc: CoreRpc, db: &Path, key: NetworkKey, start: u64, blocks: u32) {
    let end = start + u64::from(blocks) - 1;
    let started = Instant::now();
    let mut bytes = 0;
    for height in start..=end {
        let hash = rpc.block_hash(height).unwrap();
        bytes += match rpc.raw_block(&hash).unwrap() {
            RawBlock::Hex(hex) => hex.len() / 2,
            RawBlock::Bytes(bytes) => bytes.len(),
        };
    }
    let fetching = started.elapsed().as_secs_f64();
    let megabytes = bytes as f64 / 1e6;

    let mut scanner = Scanner::new(
        BitcoinCore::new(rpc),
        NetworkId::Bitcoin,
        Db::open(db).unwrap(),
        1,
        ScannerMetrics::new().unwrap(),
    );
    scanner.add_key(key, start).unwrap();
    let started = Instant::now();
    let progress = scanner.tick().unwrap();
    let scanning = started.elapsed().as_secs_f64();
    // One confirmation: the whole backlog is final.
    let scanned = progress.scanned;
    assert_eq!(scanned, u64::from(blocks));
    assert_eq!(progress.batches.len(), usize::try_from(scanned).unwrap());
    let fetch_rate = f64::from(blocks) / fetching;
    let scan_rate = scanned as f64 / scanning;
    println!(
        "{way}: fetching alone (nothing decoded): {blocks} blocks, {megabytes:.0} MB in {fetching:.1} s: {fetch_rate:.1} blocks/s, {:.1} MB/s",
        megabytes / fetching,
    );
    println!(
        "{way}: the scanner (fetched ahead; decoded, scanned, each block committed synced with its Batch): {scanned} blocks in {scanning:.1} s: {scan_rate:.1} blocks/s, {:.1} MB/s: {:.0}% of fetching alone",
        megabytes / scanning,
        100.0 * scan_rate / fetch_rate,
    );
}
