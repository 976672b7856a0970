//! The real `scanner` process killed with SIGKILL in the middle of a scan, again and again:
//! every restart resumes where the last committed block left off, and the Batches in the end
//! are exactly those of a scan never interrupted, with the same ids.

// Test code: a failed unwrap is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unwrap_in_result
)]

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use bitcoin::{script::PushBytesBuf, Amount, ScriptBuf, TxOut};
use processor_tests::{
    binary,
    regtest::{harness::RegtestNode, wallet::TestWallet},
};
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

const CONFIRMATIONS: u64 = 2;

fn write_config(dir: &Path, node: &RegtestNode) -> std::path::PathBuf {
    let path = dir.join("scanner.toml");
    std::fs::write(
        &path,
        format!(
            r#"network = "regtest"
confirmations = {CONFIRMATIONS}
poll_interval_ms = 10
db_path = "{db}"

[bitcoin_rpc]
url = "{url}"
cookie_file = "{cookie}"
timeout_seconds = 30

[coordinator]
endpoint = "127.0.0.1:9"
validator = "01"
transport = "plain"
message_key = "50929b74c1a04954b78b4b6035e97a5e078a5a0f28ec96d547bfee9ace803ac0"

[enclave]
socket = "{dir}/signer.sock"

[metrics]
listen = "127.0.0.1:0"
"#,
            db = dir.join("db").display(),
            url = node.url(),
            cookie = node.cookie_file().display(),
            dir = dir.display(),
        ),
    )
    .unwrap();
    path
}

/// Starts `scanner run`; its log lines arrive on the returned channel.
fn start(config: &Path) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(binary("scanner").unwrap())
        .arg("run")
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (send, receive) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if send.send(line).is_err() {
                break;
            }
        }
    });
    (child, receive)
}

/// Waits for `count` "batch built" lines (or the process to go quiet for long).
fn wait_for_batches(lines: &mpsc::Receiver<String>, count: usize) -> usize {
    let mut seen = 0;
    while seen < count {
        match lines.recv_timeout(Duration::from_secs(60)) {
            Ok(line) if line.contains("batch built") => seen += 1,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    seen
}

#[test]
fn a_killed_scanner_resumes_without_losing_or_repeating_a_batch() {
    let dir = tempfile::tempdir().unwrap();
    let node = RegtestNode::start(&dir.path().join("node")).unwrap();
    let miner = TestWallet::new([0x42; 32]).unwrap();
    node.mine(101, miner.address()).unwrap();

    let secp = bitcoin::secp256k1::Secp256k1::new();
    let secret = bitcoin::secp256k1::SecretKey::from_slice(&[0x21; 32]).unwrap();
    let key = NetworkKey::from_slice(&secret.public_key(&secp).serialize()).unwrap();
    let external = KeyScripts::derive(&key)
        .unwrap()
        .script(OutputKind::External)
        .clone();
    let activation = 102;

    // Sixty blocks with one deposit each.
    const DEPOSITS: u32 = 60;
    for index in 0..DEPOSITS {
        let coin = node.coinbase_output(index + 1).unwrap();
        let data = RefundableInInstruction {
            origin: None,
            instruction: InInstruction::Transfer {
                to: SeraiAddress([u8::try_from(index).unwrap(); 32]),
            },
        }
        .encode();
        let deposit = miner
            .spend(
                std::slice::from_ref(&coin),
                vec![
                    TxOut {
                        value: Amount::from_sat(100_000 + u64::from(index)),
                        script_pubkey: external.clone(),
                    },
                    TxOut {
                        value: Amount::ZERO,
                        script_pubkey: ScriptBuf::new_op_return(
                            PushBytesBuf::try_from(data).unwrap(),
                        ),
                    },
                    TxOut {
                        value: coin.1.value - Amount::from_sat(200_000),
                        script_pubkey: miner.script_pubkey(),
                    },
                ],
            )
            .unwrap();
        node.send(&deposit).unwrap();
        node.mine(1, miner.address()).unwrap();
    }
    node.mine(u32::try_from(CONFIRMATIONS).unwrap(), miner.address())
        .unwrap();

    // What an uninterrupted scan reports.
    let rpc = CoreRpc::new(
        &node.url(),
        Auth::Cookie(node.cookie_file()),
        Duration::from_secs(30),
        Retry::default(),
    );
    let mut reference = Scanner::new(
        BitcoinCore::new(rpc),
        NetworkId::Bitcoin,
        Db::open(&dir.path().join("reference")).unwrap(),
        CONFIRMATIONS,
        ScannerMetrics::new().unwrap(),
    );
    reference.add_key(key, activation).unwrap();
    reference.tick().unwrap();
    let expected = reference.store().batches().unwrap();
    // One per deposit, and empty ones at heights divisible by `EMPTY_BATCH_INTERVAL`.
    let deposits = expected
        .iter()
        .filter(|batch| !batch.instructions.is_empty())
        .count();
    assert_eq!(deposits, usize::try_from(DEPOSITS).unwrap());

    // The process: the key is in its database, as a confirmed key pair puts it there.
    let config = write_config(dir.path(), &node);
    {
        let db = Db::open(&dir.path().join("db")).unwrap();
        let seeded = Scanner::new(
            BitcoinCore::new(CoreRpc::new(
                &node.url(),
                Auth::Cookie(node.cookie_file()),
                Duration::from_secs(30),
                Retry::default(),
            )),
            NetworkId::Bitcoin,
            db,
            CONFIRMATIONS,
            ScannerMetrics::new().unwrap(),
        );
        seeded.add_key(key, activation).unwrap();
    }

    // Killed after a few batches each time, three times over.
    let mut partial = Vec::new();
    for after in [3, 7, 11] {
        let (mut child, lines) = start(&config);
        let seen = wait_for_batches(&lines, after);
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(
            seen, after,
            "the scanner stopped reporting before it was killed"
        );
        let db = Db::open(&dir.path().join("db")).unwrap();
        partial.push(db.batches().unwrap().len());
    }
    // Each restart continued from what was committed: the counts only grow, and the scan was
    // not finished when it was killed.
    assert!(
        partial.windows(2).all(|pair| pair[0] < pair[1]),
        "{partial:?}"
    );
    assert!(*partial.last().unwrap() < expected.len(), "{partial:?}");

    // Then it runs to the end.
    let remaining = expected.len() - partial.last().unwrap();
    let (mut child, lines) = start(&config);
    assert_eq!(wait_for_batches(&lines, remaining), remaining);
    std::thread::sleep(Duration::from_millis(200));
    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());

    let db = Db::open(&dir.path().join("db")).unwrap();
    assert_eq!(db.batches().unwrap(), expected);
}
