//! The regtest node through its JSON-RPC, as the scanner and the tests use it: Taproot spends
//! accepted only when Core's interpreter says so, mempool rules (conflicts, coinbase maturity),
//! blocks with an invalid transaction refused with the tip unchanged, reorgs through
//! `invalidateblock`, restarts, and Core's answers to broken requests.

// Test code: a failed unwrap is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unwrap_in_result
)]

use bitcoin::{consensus, Amount, OutPoint, Transaction, TxOut};
use processor_tests::regtest::{harness::RegtestNode, wallet::TestWallet};
use serde_json::{json, Value};

fn wallet(seed: u8) -> TestWallet {
    TestWallet::new([seed; 32]).unwrap()
}

/// A spend of `input` paying `value` back to `to`, the rest as fee.
fn spend(from: &TestWallet, input: (OutPoint, TxOut), to: &TestWallet, value: u64) -> Transaction {
    from.spend(
        &[input],
        vec![TxOut {
            value: Amount::from_sat(value),
            script_pubkey: to.script_pubkey(),
        }],
    )
    .unwrap()
}

fn mempool(node: &RegtestNode) -> Vec<String> {
    node.rpc("getrawmempool", json!([]))
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|txid| txid.as_str().unwrap().to_owned())
        .collect()
}

fn height(node: &RegtestNode) -> u64 {
    node.rpc("getblockcount", json!([]))
        .unwrap()
        .as_u64()
        .unwrap()
}

#[test]
fn spends_are_checked_by_cores_interpreter_and_mined() {
    let dir = tempfile::tempdir().unwrap();
    let node = RegtestNode::start(dir.path()).unwrap();
    let alice = wallet(1);
    let bob = wallet(2);
    node.mine(101, alice.address()).unwrap();
    assert_eq!(height(&node), 101);

    // A key-path spend of the mature coinbase at height 1: accepted, then mined.
    let funds = node.coinbase_output(1).unwrap();
    let good = spend(&alice, funds.clone(), &bob, 49 * 100_000_000);
    let txid = node.send(&good).unwrap();
    assert_eq!(txid, good.compute_txid().to_string());
    assert_eq!(mempool(&node), vec![txid.clone()]);
    let entry = node.rpc("getmempoolentry", json!([txid])).unwrap();
    assert_eq!(entry["fees"]["base"], json!(1.0));
    // Sending it again is fine, as in Core.
    assert_eq!(node.send(&good).unwrap(), txid);

    // The same spend with one flipped signature bit: -26, and never mined.
    let mut forged = spend(&alice, node.coinbase_output(2).unwrap(), &bob, 10_000_000);
    let mut witness = forged.input[0].witness.to_vec();
    witness[0][10] ^= 1;
    forged.input[0].witness = witness.into();
    let refused = node.send(&forged).unwrap_err();
    assert_eq!(refused.code, -26, "{refused}");
    assert!(
        refused
            .message
            .contains("mandatory-script-verify-flag-failed"),
        "{refused}"
    );
    let verdict = node
        .rpc(
            "testmempoolaccept",
            json!([[consensus::encode::serialize_hex(&forged)]]),
        )
        .unwrap();
    assert_eq!(verdict[0]["allowed"], json!(false));

    // A double spend of the coin `good` spends: a mempool conflict.
    let conflict = spend(&alice, funds.clone(), &alice, 48 * 100_000_000);
    let refused = node.send(&conflict).unwrap_err();
    assert_eq!(
        (refused.code, refused.message.as_str()),
        (-26, "txn-mempool-conflict")
    );

    // An immature coinbase (height 101 has one confirmation).
    let immature = spend(&alice, node.coinbase_output(101).unwrap(), &bob, 10_000_000);
    let refused = node.send(&immature).unwrap_err();
    assert_eq!(
        (refused.code, refused.message.as_str()),
        (-26, "bad-txns-premature-spend-of-coinbase")
    );

    // Mined: in the block, out of the mempool, confirmed once.
    let block = node.mine(1, alice.address()).unwrap()[0];
    assert!(mempool(&node).is_empty());
    let confirmed = node.rpc("getrawtransaction", json!([txid, true])).unwrap();
    assert_eq!(confirmed["blockhash"], json!(block.to_string()));
    assert_eq!(confirmed["confirmations"], json!(1));
    let mined = node.block_at(102).unwrap();
    assert!(mined
        .txdata
        .iter()
        .any(|tx| tx.compute_txid() == good.compute_txid()));
    assert!(!mined
        .txdata
        .iter()
        .any(|tx| tx.compute_txid() == forged.compute_txid()));
    let missing = node
        .rpc(
            "getrawtransaction",
            json!([forged.compute_txid().to_string()]),
        )
        .unwrap_err();
    assert_eq!(missing.code, -5);

    // Now that the coin is spent in the chain, spending it again finds nothing.
    let refused = node.send(&conflict).unwrap_err();
    assert_eq!(
        (refused.code, refused.message.as_str()),
        (-25, "bad-txns-inputs-missingorspent")
    );
    // And the mined transaction itself is already in the chain.
    assert_eq!(node.send(&good).unwrap_err().code, -27);
}

#[test]
fn a_block_with_an_invalid_transaction_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = RegtestNode::start(dir.path()).unwrap();
    let alice = wallet(3);
    node.mine(101, alice.address()).unwrap();
    let tip = node.rpc("getbestblockhash", json!([])).unwrap();

    let mut forged = spend(&alice, node.coinbase_output(1).unwrap(), &alice, 10_000_000);
    let mut witness = forged.input[0].witness.to_vec();
    witness[0][3] ^= 1;
    forged.input[0].witness = witness.into();
    let hex = consensus::encode::serialize_hex(&forged);
    let refused = node
        .rpc("generateblock", json!([alice.address().to_string(), [hex]]))
        .unwrap_err();
    assert_eq!(refused.code, -25, "{refused}");
    assert!(
        refused.message.contains("TestBlockValidity failed"),
        "{refused}"
    );
    assert_eq!(node.rpc("getbestblockhash", json!([])).unwrap(), tip);
    assert_eq!(height(&node), 101);

    // The honest version of the same spend goes through generateblock.
    let good = spend(&alice, node.coinbase_output(1).unwrap(), &alice, 10_000_000);
    let hex = consensus::encode::serialize_hex(&good);
    let made = node
        .rpc("generateblock", json!([alice.address().to_string(), [hex]]))
        .unwrap();
    assert_eq!(height(&node), 102);
    assert_eq!(
        made["hash"],
        node.rpc("getbestblockhash", json!([])).unwrap()
    );
}

#[test]
fn reorgs_follow_the_new_chain_and_return_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let node = RegtestNode::start(dir.path()).unwrap();
    let alice = wallet(4);
    let bob = wallet(5);
    node.mine(101, alice.address()).unwrap();
    let payment = spend(&alice, node.coinbase_output(1).unwrap(), &bob, 20_000_000);
    let txid = node.send(&payment).unwrap();
    node.mine(1, alice.address()).unwrap(); // 102 holds the payment
    node.mine(1, alice.address()).unwrap(); // 103 on top
    let old_102 = node.rpc("getblockhash", json!([102])).unwrap();
    let old_103 = node.rpc("getblockhash", json!([103])).unwrap();

    // Invalidate the tip's parent: back to 101, the payment back in the mempool.
    node.rpc("invalidateblock", json!([old_102])).unwrap();
    assert_eq!(height(&node), 101);
    assert_eq!(mempool(&node), vec![txid.clone()]);
    let unconfirmed = node.rpc("getrawtransaction", json!([txid, true])).unwrap();
    assert!(unconfirmed.get("blockhash").is_none());

    // A longer branch of empty blocks: the chain and index follow it.
    for _ in 0..3 {
        node.rpc("generateblock", json!([bob.address().to_string(), []]))
            .unwrap();
    }
    assert_eq!(height(&node), 104);
    let new_102 = node.rpc("getblockhash", json!([102])).unwrap();
    assert_ne!(new_102, old_102);
    let block = node.rpc("getblock", json!([new_102])).unwrap();
    assert_eq!(block["height"], json!(102));
    assert_eq!(block["tx"].as_array().unwrap().len(), 1);
    assert_eq!(mempool(&node), vec![txid.clone()]);
    // The old blocks are no longer on the chain.
    let old = node.rpc("getblock", json!([old_103])).unwrap();
    assert_eq!(old["confirmations"], json!(-1));

    // Reconsidering the old branch does not switch back: it is shorter.
    node.rpc("reconsiderblock", json!([old_102])).unwrap();
    assert_eq!(node.rpc("getblockhash", json!([102])).unwrap(), new_102);

    // Mining confirms the payment on the new branch.
    let block = node.mine(1, alice.address()).unwrap()[0];
    let confirmed = node.rpc("getrawtransaction", json!([txid, true])).unwrap();
    assert_eq!(confirmed["blockhash"], json!(block.to_string()));

    // Invalidating the new branch's first block makes the old branch (reconsidered) the
    // longest valid one again: its transaction is confirmed there, not in the mempool.
    node.rpc("invalidateblock", json!([new_102])).unwrap();
    assert_eq!(height(&node), 103);
    assert_eq!(node.rpc("getblockhash", json!([102])).unwrap(), old_102);
    let confirmed = node.rpc("getrawtransaction", json!([txid, true])).unwrap();
    assert_eq!(confirmed["blockhash"], old_102);
    assert!(mempool(&node).is_empty());
}

#[test]
fn a_restart_keeps_the_chain_and_its_index() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = RegtestNode::start(dir.path()).unwrap();
    let alice = wallet(6);
    node.mine(101, alice.address()).unwrap();
    let payment = spend(&alice, node.coinbase_output(1).unwrap(), &alice, 30_000_000);
    let txid = node.send(&payment).unwrap();
    node.mine(1, alice.address()).unwrap();
    let pending = spend(&alice, node.coinbase_output(2).unwrap(), &alice, 30_000_000);
    node.send(&pending).unwrap();
    let tip = node.rpc("getbestblockhash", json!([])).unwrap();
    assert!(node.stop().unwrap().success());
    assert!(
        !node.cookie_file().exists(),
        "the cookie is removed at stop"
    );

    node.restart().unwrap();
    assert_eq!(node.rpc("getbestblockhash", json!([])).unwrap(), tip);
    assert_eq!(height(&node), 102);
    let confirmed = node.rpc("getrawtransaction", json!([txid, true])).unwrap();
    assert_eq!(confirmed["confirmations"], json!(1));
    assert!(mempool(&node).is_empty(), "the mempool is not persisted");
    // The index knows what is spent: the mined payment's coin cannot be spent again.
    let again = spend(&alice, node.coinbase_output(1).unwrap(), &alice, 1_000_000);
    assert_eq!(node.send(&again).unwrap_err().code, -25);

    // After kill -9 too.
    node.kill();
    node.restart().unwrap();
    assert_eq!(node.rpc("getbestblockhash", json!([])).unwrap(), tip);
    node.mine(1, alice.address()).unwrap();
    assert_eq!(height(&node), 103);
}

#[test]
fn broken_requests_get_cores_errors() {
    let dir = tempfile::tempdir().unwrap();
    let node = RegtestNode::start(dir.path()).unwrap();

    let (status, body) = node.post("{not json", None).unwrap();
    let reply: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (status, reply["error"]["code"].clone()),
        (500, json!(-32700))
    );

    let (status, body) = node
        .post(
            r#"{"id":1,"method":"getblockcount"}"#,
            Some("__cookie__:wrong"),
        )
        .unwrap();
    assert_eq!((status, body.as_str()), (401, ""));

    let (status, body) = node
        .post(r#"{"id":1,"method":"getnothing","params":[]}"#, None)
        .unwrap();
    let reply: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (status, reply["error"]["code"].clone()),
        (404, json!(-32601))
    );

    let (status, body) = node
        .post(r#"{"id":1,"method":7,"params":[]}"#, None)
        .unwrap();
    let reply: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (status, reply["error"]["code"].clone()),
        (400, json!(-32600))
    );

    assert_eq!(node.rpc("getblockhash", json!([5])).unwrap_err().code, -8);
    assert_eq!(
        node.rpc("getblockhash", json!(["five"])).unwrap_err().code,
        -3
    );
    assert_eq!(
        node.rpc("getblock", json!(["00".repeat(32)]))
            .unwrap_err()
            .code,
        -5
    );
    assert_eq!(node.rpc("getblock", json!(["zz"])).unwrap_err().code, -8);
    assert_eq!(
        node.rpc("sendrawtransaction", json!(["00ff"]))
            .unwrap_err()
            .code,
        -22
    );
    assert_eq!(
        node.rpc("generatetoaddress", json!([1, "not-an-address"]))
            .unwrap_err()
            .code,
        -5
    );

    // No fee data on a fresh chain, as Core answers; a test can set a rate.
    let estimate = node.rpc("estimatesmartfee", json!([6])).unwrap();
    assert_eq!(
        estimate["errors"],
        json!(["Insufficient data or no feerate found"])
    );
    node.rpc("setfeerate", json!([12])).unwrap();
    let estimate = node.rpc("estimatesmartfee", json!([6])).unwrap();
    assert_eq!(estimate["feerate"], json!(0.00012));

    // A batch answers each request.
    let (status, body) = node
        .post(
            r#"[{"id":1,"method":"getblockcount","params":[]},{"id":2,"method":"nope"}]"#,
            None,
        )
        .unwrap();
    let reply: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status, 200);
    assert_eq!(reply[0]["result"], json!(0));
    assert_eq!(reply[1]["error"]["code"], json!(-32601));

    // The node is still answering.
    let info = node.rpc("getblockchaininfo", json!([])).unwrap();
    assert_eq!(info["chain"], json!("regtest"));
}

#[test]
fn the_rest_endpoint_serves_blocks_without_credentials_as_core_does() {
    let dir = tempfile::tempdir().unwrap();
    let node = RegtestNode::start(dir.path()).unwrap();
    let miner = wallet(1);
    node.mine(2, miner.address()).unwrap();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let get = |path: &str| {
        let mut response = agent.get(format!("{}{path}", node.url())).call().unwrap();
        let status = response.status().as_u16();
        (status, response.body_mut().read_to_vec().unwrap())
    };
    let tip = node.block_at(2).unwrap();
    let (status, bytes) = get(&format!("/rest/block/{}.bin", tip.block_hash()));
    assert_eq!(status, 200);
    assert_eq!(
        consensus::deserialize::<bitcoin::Block>(&bytes).unwrap(),
        tip
    );
    let unknown = "11".repeat(32);
    let (status, body) = get(&format!("/rest/block/{unknown}.bin"));
    assert_eq!(
        (status, String::from_utf8(body).unwrap()),
        (404, format!("{unknown} not found\r\n"))
    );
    assert_eq!(get("/rest/block/zz.bin").0, 400);
}
