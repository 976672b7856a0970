//! The regtest node through its JSON-RPC, as the scanner and the tests use it: Taproot spends
//! accepted only when Core's interpreter says so, mempool rules (coinbase maturity, full-RBF
//! replacement with Core's reasons), `prioritisetransaction`, blocks chosen as Core's block
//! assembler does (`-blockmintxfee`, CPFP), blocks with an invalid transaction refused with the
//! tip unchanged, reorgs through `invalidateblock`, restarts, and Core's answers to broken
//! requests.

// Test code: a failed unwrap is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unwrap_in_result
)]

use std::collections::BTreeSet;

use bitcoin::{consensus, Amount, OutPoint, Transaction, TxOut, Txid};
use processor_tests::regtest::{
    harness::{NodeOptions, RegtestNode},
    wallet::TestWallet,
};
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

    // A double spend of the coin `good` spends, paying less: not a replacement (full RBF
    // needs a higher fee rate and fee).
    let conflict = spend(&alice, funds.clone(), &alice, 49 * 100_000_000 + 50_000_000);
    let refused = node.send(&conflict).unwrap_err();
    assert_eq!(refused.code, -26, "{refused}");
    assert!(
        refused.message.starts_with(&format!(
            "insufficient fee, rejecting replacement {}; new feerate",
            conflict.compute_txid()
        )),
        "{refused}"
    );
    assert_eq!(mempool(&node), vec![txid.clone()]);

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

/// A spend of `input` to `to` leaving exactly `fee` satoshis.
fn pay(from: &TestWallet, input: (OutPoint, TxOut), to: &TestWallet, fee: u64) -> Transaction {
    let value = input.1.value.to_sat() - fee;
    spend(from, input, to, value)
}

/// Output `vout` of `transaction`, to spend it.
fn output(transaction: &Transaction, vout: u32) -> (OutPoint, TxOut) {
    (
        OutPoint {
            txid: transaction.compute_txid(),
            vout,
        },
        transaction.output[vout as usize].clone(),
    )
}

fn vsize(transaction: &Transaction) -> u64 {
    transaction.vsize() as u64
}

fn txid_set(node: &RegtestNode) -> BTreeSet<Txid> {
    node.mempool_txids().unwrap().into_iter().collect()
}

fn hex(transaction: &Transaction) -> String {
    consensus::encode::serialize_hex(transaction)
}

/// Core's rate text for `fee` over `vsize` (sat/kvB truncated, as `CFeeRate`).
fn kvb(fee: u64, vsize: u64) -> String {
    let rate = fee * 1000 / vsize;
    format!("{}.{:08} BTC/kvB", rate / 100_000_000, rate % 100_000_000)
}

/// `transaction` is refused by `testmempoolaccept` and `sendrawtransaction` with Core's reason
/// and details, and the mempool is unchanged by either.
fn assert_refused(node: &RegtestNode, transaction: &Transaction, reason: &str, details: &str) {
    let before = txid_set(node);
    let verdict = node
        .rpc("testmempoolaccept", json!([[hex(transaction)]]))
        .unwrap();
    assert_eq!(verdict[0]["allowed"], json!(false), "{verdict}");
    assert_eq!(verdict[0]["reject-reason"], json!(reason), "{verdict}");
    let message = format!("{reason}, {details}");
    assert_eq!(verdict[0]["reject-details"], json!(message), "{verdict}");
    assert_eq!(txid_set(node), before);
    let refused = node.send(transaction).unwrap_err();
    assert_eq!(
        (refused.code, refused.message.as_str()),
        (-26, message.as_str())
    );
    assert_eq!(txid_set(node), before);
}

fn block_txids(node: &RegtestNode, height: u32) -> Vec<Txid> {
    node.block_at(height)
        .unwrap()
        .txdata
        .iter()
        .skip(1)
        .map(Transaction::compute_txid)
        .collect()
}

#[test]
fn a_replacement_paying_more_evicts_the_conflicts_and_their_descendants() {
    let dir = tempfile::tempdir().unwrap();
    let node = RegtestNode::start(dir.path()).unwrap();
    let alice = wallet(7);
    let bob = wallet(8);
    node.mine(101, alice.address()).unwrap();

    // A chain of three on one coin, and an unrelated payment.
    let original = pay(&alice, node.coinbase_output(1).unwrap(), &alice, 1000);
    let child = pay(&alice, output(&original, 0), &alice, 1000);
    let grandchild = pay(&alice, output(&child, 0), &alice, 1000);
    let unrelated = pay(&alice, node.coinbase_output(2).unwrap(), &bob, 1000);
    for transaction in [&original, &child, &grandchild, &unrelated] {
        node.send(transaction).unwrap();
    }
    let entry = node
        .rpc(
            "getmempoolentry",
            json!([original.compute_txid().to_string()]),
        )
        .unwrap();
    assert_eq!(entry["descendantcount"], json!(3));
    assert_eq!(entry["spentby"], json!([child.compute_txid().to_string()]));
    assert_eq!(entry["fees"]["descendant"], json!(0.00003));
    let entry = node
        .rpc(
            "getmempoolentry",
            json!([grandchild.compute_txid().to_string()]),
        )
        .unwrap();
    assert_eq!(entry["ancestorcount"], json!(3));
    assert_eq!(entry["depends"], json!([child.compute_txid().to_string()]));

    // The same coin to Bob at 90 sat/vB: no signal needed (full RBF), and it pays more than
    // all three plus its own relay.
    let replacement = pay(&alice, node.coinbase_output(1).unwrap(), &bob, 10_000);
    let verdict = node
        .rpc("testmempoolaccept", json!([[hex(&replacement)]]))
        .unwrap();
    assert_eq!(verdict[0]["allowed"], json!(true), "{verdict}");
    assert_eq!(verdict[0]["fees"]["base"], json!(0.0001));
    assert_eq!(txid_set(&node).len(), 4, "testmempoolaccept admits nothing");
    assert_eq!(
        node.send(&replacement).unwrap(),
        replacement.compute_txid().to_string()
    );
    assert_eq!(
        txid_set(&node),
        BTreeSet::from([unrelated.compute_txid(), replacement.compute_txid()])
    );
    for evicted in [&original, &child, &grandchild] {
        let missing = node
            .rpc(
                "getmempoolentry",
                json!([evicted.compute_txid().to_string()]),
            )
            .unwrap_err();
        assert_eq!(missing.code, -5);
    }

    // Mined; the replaced transaction cannot come back.
    node.mine(1, alice.address()).unwrap();
    let mined: BTreeSet<Txid> = block_txids(&node, 102).into_iter().collect();
    assert_eq!(
        mined,
        BTreeSet::from([unrelated.compute_txid(), replacement.compute_txid()])
    );
    assert_eq!(node.send(&original).unwrap_err().code, -25);
}

#[test]
fn replacements_breaking_a_rule_are_refused_with_cores_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let node = RegtestNode::start(dir.path()).unwrap();
    let alice = wallet(9);
    let bob = wallet(10);
    node.mine(120, alice.address()).unwrap();
    let coin = node.coinbase_output(1).unwrap();

    // In the mempool: `original` (1,000 sat, 111 vB) with a child paying 5,000, and an
    // unrelated `other`.
    let original = pay(&alice, coin.clone(), &alice, 1000);
    assert_eq!(vsize(&original), 111);
    let child = pay(&alice, output(&original, 0), &alice, 5000);
    let other = pay(&alice, node.coinbase_output(2).unwrap(), &alice, 1000);
    for transaction in [&original, &child, &other] {
        node.send(transaction).unwrap();
    }

    // Rule 6: the same fee at the same size is not a higher fee rate.
    let same_rate = pay(&alice, coin.clone(), &bob, 1000);
    assert_refused(
        &node,
        &same_rate,
        "insufficient fee",
        &format!(
            "rejecting replacement {}; new feerate {} <= old feerate {}",
            same_rate.compute_txid(),
            kvb(1000, 111),
            kvb(1000, 111)
        ),
    );

    // Rule 3: a higher rate, but less than the original and its child paid together.
    let less_fees = pay(&alice, coin.clone(), &bob, 3000);
    assert_refused(
        &node,
        &less_fees,
        "insufficient fee",
        &format!(
            "rejecting replacement {}, less fees than conflicting txs; 0.00003 < 0.00006",
            less_fees.compute_txid()
        ),
    );

    // Rule 4: 50 sat more than everything replaced does not pay for its 111 vB.
    let no_relay = pay(&alice, coin.clone(), &bob, 6050);
    assert_refused(
        &node,
        &no_relay,
        "insufficient fee",
        &format!(
            "rejecting replacement {}, not enough additional fees to relay; 0.0000005 < 0.00000111",
            no_relay.compute_txid()
        ),
    );

    // Rule 2: a new input from an unconfirmed transaction the original did not spend from.
    // The original's coin and one more input, paying bob well above every fee replaced.
    let with_coin_and = |extra| {
        alice
            .spend(
                &[coin.clone(), extra],
                vec![TxOut {
                    value: Amount::from_sat(10_000_000),
                    script_pubkey: bob.script_pubkey(),
                }],
            )
            .unwrap()
    };
    let new_unconfirmed = with_coin_and(output(&other, 0));
    assert_refused(
        &node,
        &new_unconfirmed,
        "replacement-adds-unconfirmed",
        &format!(
            "replacement {} adds unconfirmed input, idx 1",
            new_unconfirmed.compute_txid()
        ),
    );

    // Spending the transaction it would replace.
    let spends_conflict = with_coin_and(output(&original, 0));
    assert_refused(
        &node,
        &spends_conflict,
        "bad-txns-spends-conflicting-tx",
        &format!(
            "{} spends conflicting transaction {}",
            spends_conflict.compute_txid(),
            original.compute_txid()
        ),
    );

    // Rule 5: five transactions with 20 children each (within Core's descendant limit of 25)
    // are 105 potential replacements.
    let mut coins = Vec::new();
    for height in 10..15 {
        let coin = node.coinbase_output(height).unwrap();
        let outputs = (0..20)
            .map(|_| TxOut {
                value: Amount::from_sat(100_000_000),
                script_pubkey: alice.script_pubkey(),
            })
            .collect();
        let fan = alice.spend(std::slice::from_ref(&coin), outputs).unwrap();
        node.send(&fan).unwrap();
        for vout in 0..20 {
            node.send(&pay(&alice, output(&fan, vout), &alice, 200))
                .unwrap();
        }
        coins.push(coin);
    }
    assert_eq!(txid_set(&node).len(), 3 + 105);
    let too_many = alice
        .spend(
            &coins,
            vec![TxOut {
                value: Amount::from_sat(200 * 100_000_000),
                script_pubkey: bob.script_pubkey(),
            }],
        )
        .unwrap();
    assert_refused(
        &node,
        &too_many,
        "too many potential replacements",
        &format!(
            "rejecting replacement {}; too many potential replacements (105 > 100)",
            too_many.compute_txid()
        ),
    );

    // The rules weigh modified fees: prioritised up, the original outbids a replacement that
    // would otherwise win; prioritised back, it is replaced.
    let replacement = pay(&alice, coin, &bob, 20_000);
    node.prioritise(&original.compute_txid(), 1_000_000)
        .unwrap();
    assert_refused(
        &node,
        &replacement,
        "insufficient fee",
        &format!(
            "rejecting replacement {}; new feerate {} <= old feerate {}",
            replacement.compute_txid(),
            kvb(20_000, 111),
            kvb(1_001_000, 111)
        ),
    );
    node.prioritise(&original.compute_txid(), -1_000_000)
        .unwrap();
    node.send(&replacement).unwrap();
    let left = txid_set(&node);
    assert!(left.contains(&replacement.compute_txid()));
    assert!(!left.contains(&original.compute_txid()));
    assert!(!left.contains(&child.compute_txid()));
    assert_eq!(left.len(), 2 + 105);
}

#[test]
fn prioritisetransaction_moves_transactions_in_and_out_of_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let node = RegtestNode::start(dir.path()).unwrap();
    let alice = wallet(11);
    node.mine(110, alice.address()).unwrap();

    // 5 sat/vB, prioritised 10,000 sat down: held out of blocks.
    let held = pay(&alice, node.coinbase_output(1).unwrap(), &alice, 555);
    let held_txid = held.compute_txid();
    node.send(&held).unwrap();
    let answer = node
        .rpc(
            "prioritisetransaction",
            json!([held_txid.to_string(), 0, -10_000]),
        )
        .unwrap();
    assert_eq!(answer, json!(true));
    let entry = node
        .rpc("getmempoolentry", json!([held_txid.to_string()]))
        .unwrap();
    assert_eq!(entry["fees"]["base"], json!(0.00000555));
    assert_eq!(entry["fees"]["modified"], json!(-0.00009445));
    let prioritised = node.rpc("getprioritisedtransactions", json!([])).unwrap();
    assert_eq!(
        prioritised,
        json!({held_txid.to_string(): {"fee_delta": -10_000, "in_mempool": true, "modified_fee": -9445}})
    );
    node.mine(1, alice.address()).unwrap();
    assert!(block_txids(&node, 111).is_empty());
    assert!(node.in_mempool(&held_txid).unwrap());

    // Cumulative: +20,000 makes it +10,000, and it is mined; the delta goes with it.
    node.prioritise(&held_txid, 20_000).unwrap();
    node.mine(1, alice.address()).unwrap();
    assert_eq!(block_txids(&node, 112), vec![held_txid]);
    assert_eq!(
        node.rpc("getprioritisedtransactions", json!([])).unwrap(),
        json!({})
    );

    // A delta set before the transaction arrives applies when it does: a zero-fee spend is
    // admitted and mined (the coinbase claiming only real fees), while an unprioritised one is
    // below the relay fee.
    let free = pay(&alice, node.coinbase_output(2).unwrap(), &alice, 0);
    let free_txid = free.compute_txid();
    node.prioritise(&free_txid, 1000).unwrap();
    assert_eq!(
        node.rpc("getprioritisedtransactions", json!([])).unwrap(),
        json!({free_txid.to_string(): {"fee_delta": 1000, "in_mempool": false}})
    );
    let unaided = pay(&alice, node.coinbase_output(3).unwrap(), &alice, 0);
    let refused = node.send(&unaided).unwrap_err();
    assert_eq!(
        (refused.code, refused.message.as_str()),
        (-26, "min relay fee not met, 0 < 111")
    );
    node.send(&free).unwrap();
    node.mine(1, alice.address()).unwrap();
    assert_eq!(block_txids(&node, 113), vec![free_txid]);

    // A delta down before arrival counts against the relay fee too, as in Core.
    let lowered = pay(&alice, node.coinbase_output(4).unwrap(), &alice, 555);
    node.prioritise(&lowered.compute_txid(), -555).unwrap();
    let refused = node.send(&lowered).unwrap_err();
    assert_eq!(refused.message, "min relay fee not met, 0 < 111");
    // A delta summing to zero is forgotten.
    node.prioritise(&lowered.compute_txid(), 555).unwrap();
    assert_eq!(
        node.rpc("getprioritisedtransactions", json!([])).unwrap(),
        json!({})
    );

    // Core's argument checks.
    let refused = node
        .rpc(
            "prioritisetransaction",
            json!([held_txid.to_string(), 1, 100]),
        )
        .unwrap_err();
    assert_eq!(
        (refused.code, refused.message.as_str()),
        (
            -8,
            "Priority is no longer supported, dummy argument to prioritisetransaction must be 0."
        )
    );
    assert_eq!(
        node.rpc("prioritisetransaction", json!(["zz", 0, 100]))
            .unwrap_err()
            .code,
        -8
    );
}

#[test]
fn blockmintxfee_holds_low_rate_transactions_out_until_lowered() {
    let dir = tempfile::tempdir().unwrap();
    let options = NodeOptions {
        // 0.0001 BTC/kvB: 10 sat/vB.
        blockmintxfee: Some(Amount::from_sat(10_000)),
        ..NodeOptions::default()
    };
    let mut node = RegtestNode::start_with(dir.path(), options).unwrap();
    let alice = wallet(12);
    node.mine(110, alice.address()).unwrap();

    let low = pay(&alice, node.coinbase_output(1).unwrap(), &alice, 555); // 5 sat/vB
    let high = pay(&alice, node.coinbase_output(2).unwrap(), &alice, 2220); // 20 sat/vB
    node.send(&low).unwrap();
    node.send(&high).unwrap();
    node.mine(1, alice.address()).unwrap();
    assert_eq!(block_txids(&node, 111), vec![high.compute_txid()]);
    assert_eq!(node.mempool_txids().unwrap(), vec![low.compute_txid()]);

    // Still above 5 sat/vB at 6; let in at 5 (5 sat/vB of 111 vB is exactly 555 sat).
    node.set_block_min_fee_rate(6).unwrap();
    node.mine(1, alice.address()).unwrap();
    assert!(block_txids(&node, 112).is_empty());
    node.set_block_min_fee_rate(5).unwrap();
    node.mine(1, alice.address()).unwrap();
    assert_eq!(block_txids(&node, 113), vec![low.compute_txid()]);
    assert!(node.mempool_txids().unwrap().is_empty());
    assert_eq!(
        node.rpc("setblockmintxfee", json!([-1])).unwrap_err().code,
        -8
    );

    // A restart starts from the command line's 10 sat/vB again.
    node.stop().unwrap();
    node.restart().unwrap();
    let again = pay(&alice, node.coinbase_output(3).unwrap(), &alice, 555);
    node.send(&again).unwrap();
    node.mine(1, alice.address()).unwrap();
    assert!(block_txids(&node, 114).is_empty());
    assert!(node.in_mempool(&again.compute_txid()).unwrap());

    // An unparsable rate stops the node at start, with Core's message.
    let bad = std::process::Command::new(processor_tests::binary("regtest-node").unwrap())
        .arg("--datadir")
        .arg(dir.path().join("other"))
        .arg("--rpc-bind")
        .arg("127.0.0.1:0")
        .arg("--blockmintxfee")
        .arg("ten")
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("Invalid amount for -blockmintxfee=<amount>: 'ten'"),
        "{stderr}"
    );
}

#[test]
fn a_high_fee_child_pulls_its_low_fee_parent_into_a_block() {
    let dir = tempfile::tempdir().unwrap();
    let options = NodeOptions {
        blockmintxfee: Some(Amount::from_sat(10_000)),
        ..NodeOptions::default()
    };
    let node = RegtestNode::start_with(dir.path(), options).unwrap();
    let alice = wallet(13);
    node.mine(110, alice.address()).unwrap();

    // 2 sat/vB alone: out.
    let parent = pay(&alice, node.coinbase_output(1).unwrap(), &alice, 222);
    let lonely = pay(&alice, node.coinbase_output(2).unwrap(), &alice, 222);
    node.send(&parent).unwrap();
    node.send(&lonely).unwrap();
    node.mine(1, alice.address()).unwrap();
    assert!(block_txids(&node, 111).is_empty());

    // A 50 sat/vB child: the package pays 26 sat/vB, so both go in, parent first; the other
    // 2 sat/vB transaction stays.
    let child = pay(&alice, output(&parent, 0), &alice, 5550);
    node.send(&child).unwrap();
    let entry = node
        .rpc("getmempoolentry", json!([child.compute_txid().to_string()]))
        .unwrap();
    assert_eq!(entry["ancestorcount"], json!(2));
    assert_eq!(entry["fees"]["ancestor"], json!(0.00005772));
    node.mine(1, alice.address()).unwrap();
    assert_eq!(
        block_txids(&node, 112),
        vec![parent.compute_txid(), child.compute_txid()]
    );
    assert_eq!(node.mempool_txids().unwrap(), vec![lonely.compute_txid()]);
}

#[test]
fn mining_after_a_reorg_takes_the_returned_transactions_parents_first() {
    let dir = tempfile::tempdir().unwrap();
    let node = RegtestNode::start(dir.path()).unwrap();
    let alice = wallet(14);
    node.mine(110, alice.address()).unwrap();
    let parent = pay(&alice, node.coinbase_output(1).unwrap(), &alice, 1000);
    let child = pay(&alice, output(&parent, 0), &alice, 1000);
    node.send(&parent).unwrap();
    node.send(&child).unwrap();
    node.mine(1, alice.address()).unwrap();
    let both = vec![parent.compute_txid(), child.compute_txid()];
    assert_eq!(block_txids(&node, 111), both);

    // Disconnected: both come back; held out above their 9 sat/vB, they stay through a block.
    let old = node.rpc("getblockhash", json!([111])).unwrap();
    node.rpc("invalidateblock", json!([old])).unwrap();
    assert_eq!(node.mempool_txids().unwrap(), both);
    node.set_block_min_fee_rate(100).unwrap();
    node.mine(1, alice.address()).unwrap();
    assert!(block_txids(&node, 111).is_empty());
    assert_eq!(node.mempool_txids().unwrap(), both);

    // Let in: mined on the new branch, parent first.
    node.set_block_min_fee_rate(1).unwrap();
    node.mine(1, alice.address()).unwrap();
    assert_eq!(block_txids(&node, 112), both);
    assert!(node.mempool_txids().unwrap().is_empty());
    assert_ne!(node.rpc("getblockhash", json!([111])).unwrap(), old);
}
