//! How fast the scanner finalizes and scans blocks.
//!
//! 1. A mainnet-sized block (3,000 transactions, two inputs and two outputs each, about 1.3 MB)
//!    held in memory: decoding it alone (`bitcoin` crate), against decoding plus the scanner's
//!    work on it (chain-neutral form, output typing for one key, deposits' data).
//! 2. A regtest chain on the real node (release `regtest-node`): blocks scanned per second
//!    through Bitcoin Core's RPC, from a fresh database, every block with deposits.
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

use bitcoin::{
    absolute::LockTime,
    block::{Header, Version},
    consensus,
    hashes::Hash,
    script::PushBytesBuf,
    transaction, Amount, Block, BlockHash, CompactTarget, OutPoint, ScriptBuf, Sequence,
    Transaction, TxIn, TxMerkleNode, TxOut, Txid, Witness,
};
use processor_tests::regtest::{harness::RegtestNode, wallet::TestWallet};
use scanner::{
    chain::bitcoin_core::{chain_block, BitcoinCore},
    chain::rpc::{Auth, CoreRpc, Retry},
    scan::metrics::ScannerMetrics,
    scan::outputs::receive,
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

fn mainnet_sized_block(ours: &ScriptBuf) -> Block {
    let txdata: Vec<Transaction> = (0u32..3000)
        .map(|index| {
            let input = |vout| TxIn {
                previous_output: OutPoint {
                    txid: Txid::from_byte_array([(index % 251) as u8; 32]),
                    vout,
                },
                script_sig: ScriptBuf::new(),
                sequence: Sequence::MAX,
                witness: Witness::from_slice(&[vec![0x30; 72], vec![0x02; 33]]),
            };
            let mut output = vec![
                TxOut {
                    value: Amount::from_sat(50_000 + u64::from(index)),
                    script_pubkey: ScriptBuf::from_bytes(
                        [&[0x00, 0x14][..], &[index as u8; 20]].concat(),
                    ),
                },
                TxOut {
                    value: Amount::from_sat(70_000),
                    script_pubkey: ScriptBuf::from_bytes(
                        [&[0x51, 0x20][..], &[(index >> 8) as u8; 32]].concat(),
                    ),
                },
            ];
            // One transaction in a hundred is a deposit to us.
            if index % 100 == 0 {
                output[1].script_pubkey = ours.clone();
            }
            Transaction {
                version: transaction::Version::TWO,
                lock_time: LockTime::ZERO,
                input: vec![input(0), input(1)],
                output,
            }
        })
        .collect();
    Block {
        header: Header {
            version: Version::TWO,
            prev_blockhash: BlockHash::all_zeros(),
            merkle_root: TxMerkleNode::all_zeros(),
            time: 0,
            bits: CompactTarget::from_consensus(0x207f_ffff),
            nonce: 0,
        },
        txdata,
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn in_memory() {
    let key = key();
    let scripts = KeyScripts::derive(&key).unwrap();
    let block = mainnet_sized_block(scripts.script(OutputKind::External));
    let raw = consensus::serialize(&block);
    let keys = [(key, &scripts)];
    let runs = 30;
    let mut decode = Vec::new();
    let mut scan = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        let decoded: Block = consensus::deserialize(&raw).unwrap();
        decode.push(started.elapsed());
        std::hint::black_box(&decoded);

        let started = Instant::now();
        let decoded: Block = consensus::deserialize(&raw).unwrap();
        let neutral = chain_block(1, &decoded).unwrap();
        let received = receive(&neutral, &keys);
        scan.push(started.elapsed());
        assert_eq!(received.outputs.len(), 30);
    }
    let decode = median(decode);
    let scan = median(scan);
    println!(
        "mainnet-sized block ({} tx, {} bytes): decode alone {:.2} ms ({:.0} blocks/s); decode + scan {:.2} ms ({:.0} blocks/s)",
        block.txdata.len(),
        raw.len(),
        decode.as_secs_f64() * 1000.0,
        1.0 / decode.as_secs_f64(),
        scan.as_secs_f64() * 1000.0,
        1.0 / scan.as_secs_f64(),
    );
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
    in_memory();
    on_regtest();
}
