//! The scanner against the regtest node, through Bitcoin Core's RPC: the `Network` conformance
//! suite for Bitcoin; deposits reported in the Batch of the block where they become final and
//! not before; bad deposit data and dust; output typing; empty blocks; reorgs above and below
//! finality; restarts; an unreachable node; eventualities completed and conflicting.

// Test code: a failed unwrap is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unwrap_in_result
)]

use std::{
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use bitcoin::{
    consensus, hashes::Hash, script::PushBytesBuf, Amount, OutPoint, ScriptBuf, Transaction, TxOut,
};
use processor_tests::{
    conformance::{check_network, ChainDriver},
    regtest::{harness::RegtestNode, wallet::TestWallet},
    HarnessError,
};
use scanner::{
    chain::bitcoin_core::{chain_transaction, BitcoinCore},
    chain::rpc::{Auth, CoreRpc, Retry},
    chain::{BlockView, Network},
    scan::eventuality::{Eventuality, Outcome},
    scan::metrics::ScannerMetrics,
    scan::{ScanError, Scanner},
    store::db::Db,
    store::{ProcessorChanges, ProcessorStore},
};
use schema::{
    hashes::{PlanId, SeraiAddress, TransactionId},
    ids::{BatchId, NetworkId},
    instruction::{InInstruction, RefundableInInstruction},
    keys::NetworkKey,
    plan::OutputKind,
    protocol::EMPTY_BATCH_INTERVAL,
    taproot::KeyScripts,
};
use serde_json::json;

/// A network key (the scanner needs only the public key).
fn network_key(seed: u8) -> NetworkKey {
    let secp = bitcoin::secp256k1::Secp256k1::new();
    let secret = bitcoin::secp256k1::SecretKey::from_slice(&[seed; 32]).unwrap();
    NetworkKey::from_slice(&secret.public_key(&secp).serialize()).unwrap()
}

/// The script deposits to `key` pay.
fn deposit_script(key: &NetworkKey) -> ScriptBuf {
    KeyScripts::derive(key)
        .unwrap()
        .script(OutputKind::External)
        .clone()
}

fn rpc(node: &RegtestNode, retry: Retry) -> CoreRpc {
    CoreRpc::new(
        &node.url(),
        Auth::Cookie(node.cookie_file()),
        Duration::from_secs(30),
        retry,
    )
}

fn scanner(node: &RegtestNode, db: &Path, confirmations: u64) -> Scanner<BitcoinCore> {
    Scanner::new(
        BitcoinCore::new(rpc(node, Retry::default())),
        NetworkId::Bitcoin,
        Db::open(db).unwrap(),
        confirmations,
        ScannerMetrics::new().unwrap(),
    )
}

/// A funded test chain: a miner wallet with mature coinbases, spent one per payment.
struct Chain {
    node: RegtestNode,
    miner: TestWallet,
    next_coinbase: Mutex<u32>,
}

impl Chain {
    fn start(dir: &Path) -> Chain {
        let node = RegtestNode::start(&dir.join("node")).unwrap();
        let miner = TestWallet::new([0x42; 32]).unwrap();
        node.mine(120, miner.address()).unwrap();
        Chain {
            node,
            miner,
            next_coinbase: Mutex::new(1),
        }
    }

    fn height(&self) -> u64 {
        self.node
            .rpc("getblockcount", json!([]))
            .unwrap()
            .as_u64()
            .unwrap()
    }

    fn coin(&self) -> (OutPoint, TxOut) {
        let mut next = self.next_coinbase.lock().unwrap();
        let coin = self.node.coinbase_output(*next).unwrap();
        *next += 1;
        coin
    }

    /// A transaction from a fresh coinbase paying `outputs`, change back to the miner.
    fn pay(&self, outputs: Vec<TxOut>) -> Transaction {
        self.pay_with_fee(outputs, 10_000)
    }

    /// `pay` with a fee of `fee` satoshis.
    fn pay_with_fee(&self, outputs: Vec<TxOut>, fee: u64) -> Transaction {
        let coin = self.coin();
        let spent: Amount = outputs.iter().map(|output| output.value).sum();
        let mut outputs = outputs;
        outputs.push(TxOut {
            value: coin.1.value - spent - Amount::from_sat(fee),
            script_pubkey: self.miner.script_pubkey(),
        });
        self.miner.spend(&[coin], outputs).unwrap()
    }

    fn mine(&self, count: u32) {
        self.node.mine(count, self.miner.address()).unwrap();
    }

    fn empty_block(&self) {
        self.node
            .rpc(
                "generateblock",
                json!([self.miner.address().to_string(), []]),
            )
            .unwrap();
    }
}

impl ChainDriver for Chain {
    fn mine(&self, count: u32) -> Result<(), HarnessError> {
        Chain::mine(self, count);
        Ok(())
    }

    fn payment(
        &self,
        script: &[u8],
        amount: u64,
        data: Option<&[u8]>,
    ) -> Result<(Vec<u8>, TransactionId), HarnessError> {
        let mut outputs = vec![TxOut {
            value: Amount::from_sat(amount),
            script_pubkey: ScriptBuf::from_bytes(script.to_vec()),
        }];
        if let Some(data) = data {
            outputs.push(op_return(data));
        }
        let transaction = self.pay(outputs);
        Ok((
            consensus::serialize(&transaction),
            TransactionId(transaction.compute_txid().to_byte_array()),
        ))
    }

    fn set_fee_rate(&self, rate: u64) -> Result<(), HarnessError> {
        self.node
            .rpc("setfeerate", json!([rate]))
            .map(|_| ())
            .map_err(|error| HarnessError::Failed(error.to_string()))
    }
}

fn op_return(data: &[u8]) -> TxOut {
    TxOut {
        value: Amount::ZERO,
        script_pubkey: ScriptBuf::new_op_return(PushBytesBuf::try_from(data.to_vec()).unwrap()),
    }
}

fn to(script: &ScriptBuf, sats: u64) -> TxOut {
    TxOut {
        value: Amount::from_sat(sats),
        script_pubkey: script.clone(),
    }
}

fn instruction(account: u8) -> Vec<u8> {
    RefundableInInstruction {
        origin: None,
        instruction: InInstruction::Transfer {
            to: SeraiAddress([account; 32]),
        },
    }
    .encode()
}

#[test]
fn bitcoin_passes_the_network_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let chain = Chain::start(dir.path());
    let network = BitcoinCore::new(rpc(&chain.node, Retry::default()));
    check_network(&network, &chain, &network_key(1), &network_key(2)).unwrap();
}

#[test]
fn bitcoin_through_cores_rest_endpoint_passes_the_network_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let chain = Chain::start(dir.path());
    let network = BitcoinCore::new(rpc(&chain.node, Retry::default()).with_rest());
    check_network(&network, &chain, &network_key(1), &network_key(2)).unwrap();
}

#[test]
fn deposits_are_reported_when_final_and_typed_by_address() {
    let dir = tempfile::tempdir().unwrap();
    let chain = Chain::start(dir.path());
    let key = network_key(3);
    let scripts = KeyScripts::derive(&key).unwrap();
    let external = scripts.script(OutputKind::External).clone();
    let mut scanner = scanner(&chain.node, &dir.path().join("db"), 3);
    scanner.add_key(key, chain.height() + 1).unwrap();

    // One block: a deposit with a valid instruction, one with garbage data, one with data over
    // 80 bytes, one without data, a dust deposit, a branch and a change output.
    let good = chain.pay(vec![to(&external, 1_000_000), op_return(&instruction(7))]);
    let garbage = chain.pay(vec![to(&external, 200_000), op_return(&[0xff, 1, 2, 3])]);
    let oversized = chain.pay(vec![to(&external, 300_000), op_return(&[1; 100])]);
    let bare = chain.pay(vec![to(&external, 400_000)]);
    let dust = chain.pay(vec![to(&external, 5_000), op_return(&instruction(8))]);
    let branch = chain.pay(vec![to(scripts.script(OutputKind::Branch), 60_000)]);
    let change = chain.pay(vec![to(scripts.script(OutputKind::Change), 70_000)]);
    for transaction in [&good, &garbage, &oversized, &bare, &dust, &branch, &change] {
        chain.node.send(transaction).unwrap();
    }
    chain.mine(1);
    let deposit_height = chain.height();

    // Not final with one or two confirmations.
    for _ in 0..2 {
        let progress = scanner.tick().unwrap();
        assert!(progress.batches.is_empty());
        assert!(scanner.store().batches().unwrap().is_empty());
        chain.mine(1);
    }
    // Final with three: exactly one Batch, of that block, with the one valid instruction.
    let progress = scanner.tick().unwrap();
    assert_eq!(progress.batches.len(), 1);
    let batch = &progress.batches[0];
    assert_eq!(batch.id, BatchId(0));
    assert_eq!(
        batch.block.0,
        chain
            .node
            .block_at(u32::try_from(deposit_height).unwrap())
            .unwrap()
            .block_hash()
            .to_byte_array()
    );
    assert_eq!(batch.instructions.len(), 1);
    assert_eq!(batch.instructions[0].amount.to_sat(), 1_000_000);
    assert_eq!(
        batch.instructions[0].instruction,
        InInstruction::Transfer {
            to: SeraiAddress([7; 32])
        }
    );

    // The funds of every non-dust output are kept, typed by address.
    let outputs = scanner
        .store()
        .outputs(deposit_height, deposit_height)
        .unwrap();
    let kinds: Vec<(OutputKind, u64)> = outputs
        .iter()
        .map(|(_, output)| (output.kind, output.amount.to_sat()))
        .collect();
    let mut expected = vec![
        (OutputKind::External, 1_000_000),
        (OutputKind::External, 200_000),
        (OutputKind::External, 300_000),
        (OutputKind::External, 400_000),
        (OutputKind::Branch, 60_000),
        (OutputKind::Change, 70_000),
    ];
    let mut found = kinds.clone();
    found.sort();
    expected.sort();
    assert_eq!(found, expected);
    let metrics = String::from_utf8(scanner.metrics().render()).unwrap();
    assert!(
        metrics.contains("scanner_outputs_ignored_total{reason=\"dust\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("scanner_instructions_rejected_total{reason=\"invalid\"} 2"));
    assert!(metrics.contains("scanner_instructions_rejected_total{reason=\"missing\"} 1"));
    assert!(metrics.contains("scanner_outputs_total{kind=\"branch\"} 1"));

    // Serai acknowledges the deposit block: its outputs go to the scheduler exactly once.
    let mut write = ProcessorChanges::default();
    let handed = scanner
        .acknowledge(&key, deposit_height, &mut write)
        .unwrap()
        .unwrap();
    assert_eq!(handed.len(), 6);
    scanner.store().commit_changes(&write).unwrap();
    let mut write = ProcessorChanges::default();
    assert_eq!(
        scanner
            .acknowledge(&key, deposit_height, &mut write)
            .unwrap(),
        Some(vec![])
    );
    assert_eq!(
        scanner
            .acknowledge(&key, chain.height() + 10, &mut write)
            .unwrap(),
        None,
        "a block not scanned yet waits"
    );

    // Many empty blocks advance the scan; every block at a height that is a multiple of
    // `EMPTY_BATCH_INTERVAL` gets an empty Batch (so Serai keeps acknowledging blocks in a
    // quiet period), and the next deposit gets the id after them.
    let first = scanner.store().keys().unwrap()[0].next;
    for _ in 0..25 {
        chain.empty_block();
    }
    let progress = scanner.tick().unwrap();
    assert_eq!(progress.scanned, 25);
    let due: Vec<u64> = (first..first + 25)
        .filter(|height| height % EMPTY_BATCH_INTERVAL == 0)
        .collect();
    let expected = due.len() as u64;
    assert_eq!(progress.batches.len() as u64, expected);
    for (batch, height) in progress.batches.iter().zip(&due) {
        assert!(batch.instructions.is_empty());
        assert_eq!(
            batch.block.as_bytes(),
            &scanner.store().block_hash(*height).unwrap().unwrap()
        );
    }
    assert_eq!(scanner.store().keys().unwrap()[0].next, chain.height() - 1);
    chain
        .node
        .send(&chain.pay(vec![to(&external, 123_456), op_return(&instruction(9))]))
        .unwrap();
    chain.mine(3);
    let progress = scanner.tick().unwrap();
    assert_eq!(progress.batches.len(), 1);
    assert_eq!(
        progress.batches[0].id,
        BatchId(1 + u32::try_from(expected).unwrap())
    );
}

#[test]
fn a_reorg_above_finality_is_harmless_and_one_below_halts() {
    let dir = tempfile::tempdir().unwrap();
    let chain = Chain::start(dir.path());
    let key = network_key(4);
    let external = deposit_script(&key);
    let mut scanner = scanner(&chain.node, &dir.path().join("db"), 3);
    scanner.add_key(key, chain.height() + 1).unwrap();

    // A deposit two blocks deep (not final) is reorganized away: never reported.
    chain
        .node
        .send(&chain.pay(vec![to(&external, 500_000), op_return(&instruction(1))]))
        .unwrap();
    chain.mine(1);
    let orphaned = chain.node.rpc("getbestblockhash", json!([])).unwrap();
    chain.empty_block();
    scanner.tick().unwrap();
    chain
        .node
        .rpc("invalidateblock", json!([orphaned]))
        .unwrap();
    // The deposit is back in the mempool; mine around it.
    for _ in 0..4 {
        chain.empty_block();
    }
    let progress = scanner.tick().unwrap();
    assert!(progress.batches.is_empty());
    assert!(scanner.store().batches().unwrap().is_empty());

    // Now a deposit is mined and becomes final: Batch 0.
    chain.mine(1); // takes the deposit from the mempool
    let final_block = chain.node.rpc("getbestblockhash", json!([])).unwrap();
    chain.mine(2);
    let progress = scanner.tick().unwrap();
    assert_eq!(progress.batches.len(), 1);
    let before = scanner.store().batches().unwrap();

    // A reorganization replacing that final block: scanning halts, state intact.
    chain
        .node
        .rpc("invalidateblock", json!([final_block]))
        .unwrap();
    for _ in 0..5 {
        chain.empty_block();
    }
    for _ in 0..2 {
        let error = scanner.tick().unwrap_err();
        assert!(
            matches!(error, ScanError::ReorgBelowFinality { .. }),
            "{error}"
        );
    }
    assert_eq!(scanner.store().batches().unwrap(), before);
    let metrics = String::from_utf8(scanner.metrics().render()).unwrap();
    assert!(metrics.contains("scanner_halted 1"));
    assert!(metrics.contains("scanner_reorg_halts_total 2"));
}

#[test]
fn a_block_of_more_deposits_than_one_batch_holds_is_reported_in_consecutive_batches() {
    // Two standard transactions of 2,100 deposits each: before, the block's one Batch did not
    // encode, scanning retried the block forever, and every validator halted.
    let dir = tempfile::tempdir().unwrap();
    let chain = Chain::start(dir.path());
    let key = network_key(11);
    let external = deposit_script(&key);
    let mut scanner = scanner(&chain.node, &dir.path().join("db"), 1);
    scanner.add_key(key, chain.height() + 1).unwrap();
    let mut sent = Vec::new();
    for account in [1u8, 2] {
        let mut outputs: Vec<TxOut> = (0..2_100u64).map(|i| to(&external, 20_000 + i)).collect();
        outputs.push(op_return(&instruction(account)));
        let transaction = chain.pay_with_fee(outputs, 100_000);
        chain.node.send(&transaction).unwrap();
        sent.push((account, transaction.compute_txid()));
    }
    chain.mine(1);
    // The block orders them as Core's block assembly does (by fee rate, then txid).
    let block = chain
        .node
        .block_at(u32::try_from(chain.height()).unwrap())
        .unwrap();
    let position = |txid| {
        block
            .txdata
            .iter()
            .position(|transaction| transaction.compute_txid() == txid)
            .unwrap()
    };
    sent.sort_by_key(|(_, txid)| position(*txid));
    let progress = scanner.tick().unwrap();
    let max = schema::limits::MAX_BATCH_INSTRUCTIONS;
    let expected_batches = 4_200usize.div_ceil(max);
    assert_eq!(progress.batches.len(), expected_batches);
    let ids: Vec<u32> = progress.batches.iter().map(|batch| batch.id.0).collect();
    assert_eq!(
        ids,
        (0..u32::try_from(expected_batches).unwrap()).collect::<Vec<_>>()
    );
    let block = progress.batches[0].block;
    assert!(progress.batches.iter().all(|batch| batch.block == block));
    assert!(progress.batches[..expected_batches - 1]
        .iter()
        .all(|batch| batch.instructions.len() == max));
    // Every deposit once, in (transaction, output) order.
    let instructions: Vec<(u64, InInstruction)> = progress
        .batches
        .iter()
        .flat_map(|batch| &batch.instructions)
        .map(|i| (i.amount.to_sat(), i.instruction))
        .collect();
    let expected: Vec<(u64, InInstruction)> = sent
        .iter()
        .map(|(account, _)| account)
        .flat_map(|account| {
            (0..2_100u64).map(move |i| {
                (
                    20_000 + i,
                    InInstruction::Transfer {
                        to: SeraiAddress([*account; 32]),
                    },
                )
            })
        })
        .collect();
    assert_eq!(instructions, expected);
    assert_eq!(scanner.store().batches().unwrap(), progress.batches);
}

#[test]
fn a_block_with_only_change_or_branch_outputs_gets_an_empty_batch() {
    // Before, only deposits made Batches: a payout's change and branch outputs waited for an
    // unrelated deposit to be acknowledged, and payouts needing a branch stalled meanwhile.
    let dir = tempfile::tempdir().unwrap();
    let chain = Chain::start(dir.path());
    let key = network_key(12);
    let scripts = KeyScripts::derive(&key).unwrap();
    let mut scanner = scanner(&chain.node, &dir.path().join("db"), 1);
    scanner.add_key(key, chain.height() + 1).unwrap();
    let mut reported = Vec::new();
    for kind in [OutputKind::Change, OutputKind::Branch] {
        chain
            .node
            .send(&chain.pay(vec![to(scripts.script(kind), 70_000)]))
            .unwrap();
        chain.mine(1);
        reported.push(chain.height());
        chain.empty_block();
        if chain.height() % EMPTY_BATCH_INTERVAL == 0 {
            reported.push(chain.height());
        }
    }
    let progress = scanner.tick().unwrap();
    assert_eq!(progress.scanned, 4);
    let blocks: Vec<[u8; 32]> = progress
        .batches
        .iter()
        .map(|b| *b.block.as_bytes())
        .collect();
    let expected: Vec<[u8; 32]> = reported
        .iter()
        .map(|height| scanner.store().block_hash(*height).unwrap().unwrap())
        .collect();
    assert_eq!(blocks, expected);
    for (id, batch) in (0u32..).zip(&progress.batches) {
        assert_eq!(batch.id, BatchId(id));
        assert!(batch.instructions.is_empty());
    }
}

#[test]
fn each_key_gets_its_own_outputs_when_a_serai_block_for_it_acknowledges_them() {
    // Before, one acknowledged height served every key: a Serai block for one key consumed
    // the other key's outputs too, and they were filtered out and never scheduled.
    let dir = tempfile::tempdir().unwrap();
    let chain = Chain::start(dir.path());
    let (old, new) = (network_key(14), network_key(15));
    let mut scanner = scanner(&chain.node, &dir.path().join("db"), 1);
    for key in [old, new] {
        scanner.add_key(key, chain.height() + 1).unwrap();
        let change = KeyScripts::derive(&key)
            .unwrap()
            .script(OutputKind::Change)
            .clone();
        chain
            .node
            .send(&chain.pay(vec![to(&change, 70_000)]))
            .unwrap();
    }
    chain.mine(1);
    let height = chain.height();
    scanner.tick().unwrap();

    let mut write = ProcessorChanges::default();
    let for_new = scanner
        .acknowledge(&new, height, &mut write)
        .unwrap()
        .unwrap();
    assert_eq!(for_new.len(), 1);
    assert_eq!(for_new[0].key, new);
    scanner.store().commit_changes(&write).unwrap();
    // The old key's output waited for a Serai block of its own, and comes exactly once.
    let mut write = ProcessorChanges::default();
    let for_old = scanner
        .acknowledge(&old, height, &mut write)
        .unwrap()
        .unwrap();
    assert_eq!(for_old.len(), 1);
    assert_eq!(for_old[0].key, old);
    scanner.store().commit_changes(&write).unwrap();
    let mut write = ProcessorChanges::default();
    assert_eq!(
        scanner.acknowledge(&old, height, &mut write).unwrap(),
        Some(vec![])
    );
}

#[test]
fn a_restarted_scanner_gives_the_same_batches() {
    let dir = tempfile::tempdir().unwrap();
    let chain = Chain::start(dir.path());
    let key = network_key(5);
    let external = deposit_script(&key);
    let activation = chain.height() + 1;
    for account in 0..6u8 {
        chain
            .node
            .send(&chain.pay(vec![
                to(&external, 100_000 + u64::from(account)),
                op_return(&instruction(account)),
            ]))
            .unwrap();
        chain.mine(1 + u32::from(account % 3));
    }
    chain.mine(3);

    // A reference scan in one go.
    let mut reference = scanner(&chain.node, &dir.path().join("reference"), 3);
    reference.add_key(key, activation).unwrap();
    reference.tick().unwrap();
    let expected = reference.store().batches().unwrap();
    // The six deposits', and the empty ones of heights divisible by `EMPTY_BATCH_INTERVAL`.
    let deposits = expected
        .iter()
        .filter(|batch| !batch.instructions.is_empty())
        .count();
    assert_eq!(deposits, 6);
    assert!(expected.len() > deposits);

    // The same chain scanned by scanners dropped and reopened between ticks, each seeing less
    // of the chain as final (more confirmations asked), then all of it.
    let db = dir.path().join("restarted");
    let tip = chain.height();
    for stop in [activation + 2, activation + 5, activation + 9, tip] {
        let mut scanner = scanner(&chain.node, &db, 3 + tip - stop);
        scanner.add_key(key, activation).unwrap();
        scanner.tick().unwrap();
        drop(scanner);
    }
    let restarted = scanner(&chain.node, &db, 3);
    assert_eq!(restarted.store().batches().unwrap(), expected);
    let ids: Vec<u32> = expected.iter().map(|batch| batch.id.0).collect();
    let count = u32::try_from(expected.len()).unwrap();
    assert_eq!(ids, (0..count).collect::<Vec<_>>());
}

#[test]
fn the_scanner_waits_for_an_unreachable_node_and_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let chain = Chain::start(dir.path());
    let key = network_key(6);
    let external = deposit_script(&key);
    let mut scanner = Scanner::new(
        BitcoinCore::new(rpc(
            &chain.node,
            Retry {
                attempts: 10,
                initial: Duration::from_millis(100),
                max: Duration::from_millis(800),
            },
        )),
        NetworkId::Bitcoin,
        Db::open(&dir.path().join("db")).unwrap(),
        2,
        ScannerMetrics::new().unwrap(),
    );
    scanner.add_key(key, chain.height() + 1).unwrap();
    chain
        .node
        .send(&chain.pay(vec![to(&external, 700_000), op_return(&instruction(3))]))
        .unwrap();
    chain.mine(2);

    // The node goes away and comes back (on the same port, with a new cookie) while the
    // scanner is retrying.
    let chain = Arc::new(Mutex::new(chain));
    chain.lock().unwrap().node.kill();
    let restarter = {
        let chain = Arc::clone(&chain);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(1500));
            chain.lock().unwrap().node.restart().unwrap();
        })
    };
    let progress = scanner.tick().unwrap();
    restarter.join().unwrap();
    assert_eq!(progress.batches.len(), 1);
    assert_eq!(progress.batches[0].instructions[0].amount.to_sat(), 700_000);
}

#[test]
fn rest_against_a_node_without_it_fails_saying_so() {
    let dir = tempfile::tempdir().unwrap();
    let node = RegtestNode::start_without_rest(&dir.path().join("node")).unwrap();
    node.mine(1, TestWallet::new([0x42; 32]).unwrap().address())
        .unwrap();
    let network = BitcoinCore::new(rpc(&node, Retry::default()).with_rest());
    let error = network.block(1).unwrap_err().to_string();
    assert!(error.contains("run it with -rest"), "{error}");
    // Over hex the same node serves the block.
    let hex = BitcoinCore::new(rpc(&node, Retry::default()));
    assert_eq!(hex.block(1).unwrap().height(), 1);
}

#[test]
fn a_backlog_is_scanned_in_order_a_limited_number_of_blocks_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let chain = Chain::start(dir.path());
    let key = network_key(8);
    let external = deposit_script(&key);
    let mut scanner = scanner(&chain.node, &dir.path().join("db"), 3);
    scanner.add_key(key, chain.height() + 1).unwrap();
    // Eight blocks, each with one deposit of its own amount; two more make them final.
    for block in 0..8 {
        chain
            .node
            .send(&chain.pay(vec![
                to(&external, 100_000 + block),
                op_return(&instruction(1)),
            ]))
            .unwrap();
        chain.mine(1);
    }
    chain.mine(2);
    let amounts = |progress: &scanner::scan::Progress| -> Vec<u64> {
        progress
            .batches
            .iter()
            .flat_map(|batch| batch.instructions.iter())
            .map(|instruction| instruction.amount.to_sat())
            .collect()
    };
    // A tick stops at its limit (its range fetched ahead ends there)...
    let first = scanner.tick_at_most(3).unwrap();
    assert_eq!(first.scanned, 3);
    assert_eq!(amounts(&first), vec![100_000, 100_001, 100_002]);
    // ...and the next goes on from there, in order, up to the last final block.
    let rest = scanner.tick().unwrap();
    assert_eq!(amounts(&rest), (100_003..100_008).collect::<Vec<_>>());
    assert_eq!(rest.finalized, Some(chain.height() - 2));
    assert_eq!(scanner.tick().unwrap().scanned, 0);
}

#[test]
fn eventualities_complete_or_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let chain = Chain::start(dir.path());
    let key = network_key(7);
    let mut scanner = scanner(&chain.node, &dir.path().join("db"), 1);
    scanner.add_key(key, chain.height() + 1).unwrap();
    let recipient = TestWallet::new([9; 32]).unwrap();

    // The plan's transaction, as the scanner expects it.
    let planned = chain.pay(vec![to(&recipient.script_pubkey(), 1_000_000)]);
    let expected = chain_transaction(&planned).unwrap();
    let completed = Eventuality {
        plan: PlanId([1; 32]),
        key,
        inputs: expected.inputs.clone(),
        outputs: expected.outputs.clone(),
        replacements: Vec::new(),
    };
    // Another plan, whose input is spent by a different transaction.
    let diverted = chain.pay(vec![to(&recipient.script_pubkey(), 2_000_000)]);
    let conflicting = chain_transaction(&diverted).unwrap();
    let mut other_outputs = conflicting.outputs.clone();
    other_outputs[0].amount = schema::amount::Amount::from_sat(1_999_000).unwrap();
    let conflicted = Eventuality {
        plan: PlanId([2; 32]),
        key,
        inputs: conflicting.inputs.clone(),
        outputs: other_outputs,
        replacements: Vec::new(),
    };
    scanner.register_eventuality(&completed).unwrap();
    scanner.register_eventuality(&conflicted).unwrap();

    chain.node.send(&planned).unwrap();
    chain.node.send(&diverted).unwrap();
    chain.mine(1);
    let progress = scanner.tick().unwrap();
    let mut outcomes = progress.outcomes.clone();
    outcomes.sort_by_key(|(plan, _)| *plan);
    assert_eq!(
        outcomes,
        vec![
            (
                PlanId([1; 32]),
                Outcome::Completed {
                    plan: PlanId([1; 32]),
                    tx: expected.id
                }
            ),
            (PlanId([2; 32]), Outcome::Conflict(conflicting.id)),
        ]
    );
    assert_eq!(
        scanner.store().outcome(&PlanId([1; 32])).unwrap(),
        Some(Outcome::Completed {
            plan: PlanId([1; 32]),
            tx: expected.id
        })
    );
    // Settled once: nothing more on later blocks.
    chain.mine(2);
    assert!(scanner.tick().unwrap().outcomes.is_empty());
}

#[test]
fn the_first_keys_activation_block_is_found_by_time() {
    let dir = tempfile::tempdir().unwrap();
    let chain = Chain::start(dir.path());
    let scanner = scanner(&chain.node, &dir.path().join("db"), 3);
    let tip = u32::try_from(chain.height()).unwrap();
    for height in [1, 57, tip - 2] {
        let time = u64::from(chain.node.block_at(height).unwrap().header.time);
        assert_eq!(
            scanner.first_final_block_at(time).unwrap(),
            Some(u64::from(height)),
            "block {height}"
        );
    }
    // Later than every finalized block: wait.
    let last = u64::from(chain.node.block_at(tip).unwrap().header.time);
    assert_eq!(scanner.first_final_block_at(last).unwrap(), None);
}
