//! Four validators' processors (a real `scanner` and a real `signer-enclave` process each, own
//! SoftHSM token each) against the coordinator harness and the regtest node (`devnet`).
//!
//! The whole story: key generation through the coordinator link, the key pair confirmed, a
//! deposit scanned into Batch 0, the Batch signed by three and verified with `schnorrkel`; a
//! Serai block with a burn, the same plan acknowledged by all four before any signing,
//! attested, signed by three, published, mined: the payout arrives, every processor reports the
//! completion. Then faults: a validator down during signing (the others sign; it catches up
//! without doing anything twice), kill -9 of a scanner and an enclave in the middle of signing
//! (re-attempted; paid exactly once), and a coordinator whose queue is rewound (the link halts
//! instead of handling anything twice). Fee bumping: a payout held out of blocks is replaced at
//! a higher fee after `STUCK_AFTER_BLOCKS`, the replacement confirms and the burn is paid once;
//! the original confirming after its replacement was signed settles the family just once; and a
//! payout no replacement can bump is paid for by a child spending its change (CPFP), both
//! confirm together, and the next payout spends the child's change. Key rotation: the next
//! session's key takes over, the old key forwards everything and retires, nothing is lost.

// Test code: a failed unwrap is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unwrap_in_result
)]

use std::collections::BTreeMap;

use bitcoin::{hashes::Hash, Txid};
use processor_tests::{
    devnet::{Devnet, CONFIRMATIONS},
    regtest::wallet::TestWallet,
};
use schema::{
    amount::Amount as SeraiAmount,
    hashes::{SeraiAddress, TransactionId},
    ids::{Attempt, KeyGenId, MessageId, NetworkId, Participant, SeraiTime, Session, ValidatorSet},
    instruction::{InInstruction, OutInstructionWithBalance},
    keys::KeyPair,
    messages::{
        coordinator::{ProcessorMessage as CoordinatorOut, SubstrateBlockAck},
        key_gen::{self, ShareRepair},
        sign,
        substrate::{self, SubstrateContext},
        CoordinatorMessage, ProcessorMessage,
    },
    plan::OutputKind,
    sign_id::PlanSignId,
    taproot::KeyScripts,
};
use serde_json::json;
use signer_enclave::batch_signing::BATCH_SIGNING_CONTEXT;

fn p(i: u16) -> Participant {
    Participant::new(i).unwrap()
}

fn txid_hex(tx: &TransactionId) -> String {
    tx.0.iter()
        .rev()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Key generation, confirmation, a deposit and its Batch signed by 1, 2 and 3: where every
/// scenario starts.
fn keyed_and_funded(devnet: &mut Devnet) -> (KeyPair, schema::batch::SignedBatch) {
    let pair = devnet.key_generation().unwrap();
    devnet.confirm(pair).unwrap();
    devnet.deposit(&pair, 2_500_000, [5; 32]).unwrap();
    let signed = devnet.sign_batch(0, &[p(1), p(2), p(3)]).unwrap();
    assert_eq!(signed.batch.instructions.len(), 1);
    assert_eq!(signed.batch.instructions[0].amount.to_sat(), 2_500_000);
    assert_eq!(
        signed.batch.instructions[0].instruction,
        InInstruction::Transfer {
            to: SeraiAddress([5; 32])
        }
    );
    let public = schnorrkel::PublicKey::from_bytes(&pair.batch_key.0).unwrap();
    public
        .verify_simple(
            BATCH_SIGNING_CONTEXT,
            &signed.batch.message(),
            &schnorrkel::Signature::from_bytes(&signed.signature.0).unwrap(),
        )
        .unwrap();
    (pair, signed)
}

/// A Serai block after the Batch, burning `amount` to `to`; returns the acknowledged plans.
fn burn(
    devnet: &Devnet,
    pair: &KeyPair,
    to: &TestWallet,
    amount: u64,
    up: &[Participant],
) -> SubstrateBlockAck {
    let ack = devnet
        .substrate_block(
            1,
            pair,
            vec![OutInstructionWithBalance {
                address: to.address().to_string().into_bytes(),
                data: None,
                amount: SeraiAmount::from_sat(amount).unwrap(),
            }],
            up,
        )
        .unwrap();
    assert_eq!(ack.plans.len(), 1);
    // Nothing is signed before the acknowledgement.
    for validator in &devnet.validators {
        let signing = devnet
            .sent(validator, |message| {
                matches!(message, ProcessorMessage::Sign(_)).then_some(())
            })
            .unwrap();
        assert!(signing.is_empty());
    }
    devnet.acknowledge(&ack).unwrap();
    ack
}

/// The outputs of the active chain's transactions paying `to`, in satoshis.
fn paid_to(devnet: &Devnet, to: &TestWallet) -> Vec<(Txid, u64)> {
    devnet.paid_to(&to.script_pubkey()).unwrap()
}

/// Signs `plan` of `pair`'s key with `signers` (attempt 0) and returns its transaction as the
/// node has it (published by the processors), with its id both ways.
fn sign_and_fetch(
    devnet: &Devnet,
    pair: &KeyPair,
    plan: schema::hashes::PlanId,
    signers: &[Participant],
) -> (TransactionId, Txid, bitcoin::Transaction) {
    let tx = devnet
        .sign_plan(
            PlanSignId {
                key: pair.network_key,
                id: plan,
                attempt: Attempt(0),
            },
            signers,
        )
        .unwrap();
    let txid: Txid = txid_hex(&tx).parse().unwrap();
    let raw = devnet
        .node
        .rpc("getrawtransaction", json!([txid.to_string()]))
        .unwrap();
    let transaction = bitcoin::consensus::encode::deserialize_hex(raw.as_str().unwrap()).unwrap();
    (tx, txid, transaction)
}

fn completions(devnet: &Devnet, validator: usize) -> Vec<TransactionId> {
    devnet
        .sent(&devnet.validators[validator], |message| match message {
            ProcessorMessage::Sign(sign::ProcessorMessage::Completed { tx, .. }) => Some(*tx),
            _ => None,
        })
        .unwrap()
}

#[test]
fn the_whole_story_through_four_processors() {
    let dir = tempfile::tempdir().unwrap();
    let mut devnet = Devnet::start(dir.path(), 3, 4).unwrap();
    let (pair, _) = keyed_and_funded(&mut devnet);
    let bob = TestWallet::new([0x0b; 32]).unwrap();
    let ack = burn(&devnet, &pair, &bob, 1_000_000, &devnet.all());
    let id = PlanSignId {
        key: pair.network_key,
        id: ack.plans[0],
        attempt: Attempt(0),
    };
    let tx = devnet.sign_plan(id, &[p(1), p(2), p(3)]).unwrap();
    let mempool = devnet.node.rpc("getrawmempool", json!([])).unwrap();
    assert!(mempool.as_array().unwrap().contains(&json!(txid_hex(&tx))));
    devnet.mine(u32::try_from(CONFIRMATIONS).unwrap()).unwrap();

    // Bob receives the burn minus its share of the fee, once.
    let paid = paid_to(&devnet, &bob);
    assert_eq!(paid.len(), 1);
    assert_eq!(paid[0].0.to_string(), txid_hex(&tx));
    assert!(paid[0].1 < 1_000_000 && paid[0].1 > 995_000, "{paid:?}");
    // Every processor reports the completion, the one that did not sign included (the
    // signers twice: when they signed, and when their scan saw it final).
    devnet
        .coordinator
        .wait_until(processor_tests::devnet::STEP_TIMEOUT, |_| {
            Ok((0..3).all(|v| completions(&devnet, v).len() == 2)
                && completions(&devnet, 3).len() == 1)
        })
        .unwrap();
    for validator in 0..4 {
        assert!(completions(&devnet, validator)
            .iter()
            .all(|seen| *seen == tx));
    }

    // A coordinator whose queue was rewound redelivers old ids: the processors halt their
    // link rather than handle anything twice.
    let acked: Vec<u64> = devnet
        .validators
        .iter()
        .map(|v| devnet.coordinator.acked(&v.id).unwrap())
        .collect();
    let sent: Vec<usize> = devnet
        .validators
        .iter()
        .map(|v| devnet.coordinator.received(&v.id).unwrap().len())
        .collect();
    devnet.coordinator.misbehave_rewind(true).unwrap();
    devnet
        .coordinator
        .wait_until(processor_tests::devnet::STEP_TIMEOUT, |_| {
            Ok(devnet
                .validators
                .iter()
                .all(|v| v.log().contains("coordinator link halted")))
        })
        .unwrap();
    for ((validator, acked), sent) in devnet.validators.iter().zip(acked).zip(sent) {
        assert_eq!(devnet.coordinator.acked(&validator.id).unwrap(), acked);
        assert_eq!(
            devnet.coordinator.received(&validator.id).unwrap().len(),
            sent
        );
    }
}

#[test]
fn a_validator_down_during_signing_catches_up_without_doing_anything_twice() {
    let dir = tempfile::tempdir().unwrap();
    let mut devnet = Devnet::start(dir.path(), 3, 4).unwrap();
    let (pair, _) = keyed_and_funded(&mut devnet);
    // Validator 3 goes down before the plans are acknowledged.
    devnet.validators[2].kill_scanner();
    let carol = TestWallet::new([0x0c; 32]).unwrap();
    let ack = burn(&devnet, &pair, &carol, 700_000, &[p(1), p(2), p(4)]);
    // The coordinator signs with those that answered: 1, 2 and 4.
    let id = PlanSignId {
        key: pair.network_key,
        id: ack.plans[0],
        attempt: Attempt(0),
    };
    let tx = devnet.sign_plan(id, &[p(1), p(2), p(4)]).unwrap();
    devnet.mine(u32::try_from(CONFIRMATIONS).unwrap()).unwrap();
    assert_eq!(paid_to(&devnet, &carol).len(), 1);

    // Validator 3 returns: it handles what it missed, preprocesses the plan (the coordinator
    // no longer needs it), sees the payout final and reports it; nothing is paid twice.
    devnet.validators[2].start_scanner().unwrap();
    devnet
        .coordinator
        .wait_until(processor_tests::devnet::STEP_TIMEOUT, |_| {
            Ok(!completions(&devnet, 2).is_empty())
        })
        .unwrap();
    assert_eq!(completions(&devnet, 2), vec![tx]);
    devnet.mine(3).unwrap();
    assert_eq!(paid_to(&devnet, &carol).len(), 1);
}

#[test]
fn kill_9_of_a_scanner_and_an_enclave_mid_signing_pays_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut devnet = Devnet::start(dir.path(), 3, 4).unwrap();
    let (pair, _) = keyed_and_funded(&mut devnet);
    let dave = TestWallet::new([0x0d; 32]).unwrap();
    let ack = burn(&devnet, &pair, &dave, 800_000, &devnet.all());
    let first = PlanSignId {
        key: pair.network_key,
        id: ack.plans[0],
        attempt: Attempt(0),
    };
    // Everyone preprocessed attempt 0; then validator 2's scanner and enclave are killed.
    devnet
        .collect(&devnet.all(), 1, |message| match message {
            ProcessorMessage::Sign(sign::ProcessorMessage::Preprocess { id, .. })
                if *id == first =>
            {
                Some(())
            }
            _ => None,
        })
        .unwrap();
    let victim = &mut devnet.validators[1];
    victim.kill_scanner();
    victim.enclave.kill();
    victim.enclave.start().unwrap();
    victim.start_scanner().unwrap();
    // The restarted enclave lost attempt 0's nonces: the coordinator re-attempts.
    let second = PlanSignId {
        attempt: Attempt(1),
        ..first
    };
    devnet.reattempt(second, &[p(1), p(2), p(3)]).unwrap();
    let tx = devnet.sign_plan(second, &[p(1), p(2), p(3)]).unwrap();
    devnet.mine(u32::try_from(CONFIRMATIONS).unwrap()).unwrap();
    let paid = paid_to(&devnet, &dave);
    assert_eq!(paid.len(), 1, "{paid:?}");
    assert_eq!(paid[0].0.to_string(), txid_hex(&tx));
    assert!(paid[0].1 < 800_000 && paid[0].1 > 795_000);
}

#[test]
fn a_coordinator_restart_or_a_malformed_message_loses_nothing_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut devnet = Devnet::start(dir.path(), 3, 4).unwrap();
    let pair = devnet.key_generation().unwrap();
    // The coordinator restarts between key generation and confirmation: the processors
    // reconnect, log in again and continue after the last message they handled.
    devnet.coordinator.restart().unwrap();
    // A message that does not decode is skipped (acked, not retried), and what follows is
    // handled.
    for validator in &devnet.validators {
        devnet.coordinator.push_malformed(&validator.id).unwrap();
    }
    devnet.confirm(pair).unwrap();
    devnet.deposit(&pair, 1_500_000, [6; 32]).unwrap();
    let signed = devnet.sign_batch(0, &[p(1), p(2), p(3)]).unwrap();
    assert_eq!(signed.batch.instructions[0].amount.to_sat(), 1_500_000);
    for validator in &devnet.validators {
        assert!(devnet.coordinator.logins(&validator.id).unwrap() >= 2);
        let count = |pick: fn(&ProcessorMessage) -> bool| {
            devnet
                .sent(validator, |message| pick(message).then_some(()))
                .unwrap()
                .len()
        };
        assert_eq!(
            count(|m| matches!(
                m,
                ProcessorMessage::KeyGen(key_gen::ProcessorMessage::Commitments { .. })
            )),
            1
        );
        assert_eq!(
            count(|m| matches!(
                m,
                ProcessorMessage::KeyGen(key_gen::ProcessorMessage::GeneratedKeyPair { .. })
            )),
            1
        );
        assert_eq!(
            count(|m| matches!(
                m,
                ProcessorMessage::Coordinator(
                    schema::messages::coordinator::ProcessorMessage::BatchPreprocess { .. }
                )
            )),
            1
        );
    }

    // A handled message replayed from storage under a new id (its signature names the old
    // id): validator 1's processor refuses it, handles and acks nothing more, and halts its
    // link; validator 2 refuses a message moved from validator 3's queue alike, at its id.
    let replayer = &devnet.validators[0];
    let mover = &devnet.validators[1];
    let replayed = devnet
        .coordinator
        .push_replayed(&replayer.id, MessageId(1))
        .unwrap();
    // Validator 3's next message (one it skips: it does not decode), moved to validator 2's
    // queue under the same id.
    let for_three = devnet
        .coordinator
        .push_malformed(&devnet.validators[2].id)
        .unwrap();
    let moved = devnet
        .coordinator
        .push_moved(&mover.id, &devnet.validators[2].id, for_three)
        .unwrap();
    // Validator 4's queue loses a message in storage: the gap halts its link at the message
    // before it, and the one after is not handled.
    let gapped = &devnet.validators[3];
    let after_gap = devnet.coordinator.push_after_gap(&gapped.id).unwrap();
    devnet
        .coordinator
        .wait_until(processor_tests::devnet::STEP_TIMEOUT, |_| {
            Ok([replayer, mover, gapped]
                .iter()
                .all(|v| v.log().contains("coordinator link halted")))
        })
        .unwrap();
    assert!(gapped.log().contains("messages are missing from its queue"));
    assert_eq!(
        devnet.coordinator.acked(&gapped.id).unwrap(),
        after_gap.0 - 2
    );
    assert_eq!(gapped.scanner_metric("processor_link_halted").unwrap(), 1.0);
    for (validator, forged) in [(replayer, replayed), (mover, moved)] {
        assert!(validator
            .log()
            .contains("not signed by the coordinator's message key"));
        // Everything before the forged message was handled and acked; it was not.
        assert_eq!(
            devnet.coordinator.acked(&validator.id).unwrap(),
            forged.0 - 1
        );
        // Message 1 was the key generation: handled again, it would have answered again.
        let commitments = devnet
            .sent(validator, |message| {
                matches!(
                    message,
                    ProcessorMessage::KeyGen(key_gen::ProcessorMessage::Commitments { .. })
                )
                .then_some(())
            })
            .unwrap();
        assert_eq!(commitments.len(), 1);
        assert_eq!(
            validator
                .scanner_metric("scanner_link_messages_refused_total{reason=\"bad_signature\"}")
                .unwrap(),
            1.0
        );
        assert_eq!(
            validator.scanner_metric("processor_link_halted").unwrap(),
            1.0
        );
    }
}

#[test]
fn more_burns_than_one_transaction_holds_are_paid_through_a_branch_without_a_later_deposit() {
    let dir = tempfile::tempdir().unwrap();
    let mut devnet = Devnet::start(dir.path(), 3, 4).unwrap();
    let pair = devnet.key_generation().unwrap();
    devnet.confirm(pair).unwrap();
    const DEPOSIT: u64 = 20_000_000;
    devnet.deposit(&pair, DEPOSIT, [7; 32]).unwrap();
    devnet.sign_batch(0, &[p(1), p(2), p(3)]).unwrap();
    let signers = [p(1), p(2), p(3)];

    // 600 burns: more than the 519 payments a transaction of 520 outputs can carry.
    const BURNS: usize = 600;
    const EACH: u64 = 20_000;
    let erin = TestWallet::new([0x0e; 32]).unwrap();
    let burns = vec![
        OutInstructionWithBalance {
            address: erin.address().to_string().into_bytes(),
            data: None,
            amount: SeraiAmount::from_sat(EACH).unwrap(),
        };
        BURNS
    ];
    // No deposit follows: the branch output is acknowledged through its own block's (empty)
    // Batch, which Serai includes, and the Serai block after it has that block as context.
    let mut paid_out = 0;
    for serai_block in 1..=3u64 {
        let ack = devnet
            .substrate_block(
                serai_block,
                &pair,
                if serai_block == 1 {
                    burns.clone()
                } else {
                    Vec::new()
                },
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
        paid_out = paid_to(&devnet, &erin).len();
        if paid_out == BURNS {
            break;
        }
        // The payout's block holds our branch and change outputs: its Batch has no deposit.
        let reported = devnet.sign_next_batch(&signers).unwrap();
        assert!(reported.batch.instructions.is_empty());
    }
    // Every payout arrived, each the burn minus its share of the fees.
    let paid = paid_to(&devnet, &erin);
    assert_eq!(paid_out, BURNS);
    let least = paid.iter().map(|(_, sats)| *sats).min().unwrap();
    let most = paid.iter().map(|(_, sats)| *sats).max().unwrap();
    assert!(most < EACH && least > EACH / 2, "{least}..{most}");
    // Two transactions: the first paid what fits and funded a branch output, which paid the
    // rest once it was final and acknowledged.
    let mut transactions: Vec<Txid> = paid.iter().map(|(txid, _)| *txid).collect();
    transactions.sort();
    transactions.dedup();
    let per_transaction: Vec<usize> = transactions
        .iter()
        .map(|txid| paid.iter().filter(|(paid_by, _)| paid_by == txid).count())
        .collect();
    // 518 paid directly beside the one branch output, the other 82 by the branch.
    let mut per_transaction = per_transaction;
    per_transaction.sort_unstable();
    assert_eq!(per_transaction, vec![82, 518]);
    // Value is conserved: the deposit is the payouts, our unspent change, and the fees.
    let mut fees = 0u64;
    let mut change = 0u64;
    for txid in &transactions {
        let tx = devnet
            .node
            .rpc("getrawtransaction", json!([txid.to_string(), true]))
            .unwrap();
        let outputs: u64 = tx["vout"]
            .as_array()
            .unwrap()
            .iter()
            .map(|output| {
                bitcoin::Amount::from_btc(output["value"].as_f64().unwrap())
                    .unwrap()
                    .to_sat()
            })
            .sum();
        let mut inputs = 0u64;
        for input in tx["vin"].as_array().unwrap() {
            let spent = devnet
                .node
                .rpc("getrawtransaction", json!([input["txid"], true]))
                .unwrap();
            let vout = usize::try_from(input["vout"].as_u64().unwrap()).unwrap();
            inputs += bitcoin::Amount::from_btc(spent["vout"][vout]["value"].as_f64().unwrap())
                .unwrap()
                .to_sat();
        }
        fees += inputs - outputs;
        // Change: outputs neither to Erin nor spent by the other transaction (the branch).
        for (index, output) in tx["vout"].as_array().unwrap().iter().enumerate() {
            let to_erin = output["scriptPubKey"]["address"] == json!(erin.address().to_string());
            let spent_later = transactions.iter().any(|other| {
                let other = devnet
                    .node
                    .rpc("getrawtransaction", json!([other.to_string(), true]))
                    .unwrap();
                other["vin"].as_array().unwrap().iter().any(|input| {
                    input["txid"] == json!(txid.to_string()) && input["vout"] == json!(index)
                })
            });
            if !to_erin && !spent_later {
                change += bitcoin::Amount::from_btc(output["value"].as_f64().unwrap())
                    .unwrap()
                    .to_sat();
            }
        }
    }
    let payouts: u64 = paid.iter().map(|(_, sats)| sats).sum();
    assert_eq!(payouts + change + fees, DEPOSIT);
}

/// Signs Batches until every Batch built is included, so that the next Serai block names the
/// latest finalized block that has one.
fn include_built_batches(devnet: &Devnet) {
    devnet.include_built_batches(&[p(1), p(2), p(3)]).unwrap();
}

/// Lowers `txid`'s fee in the node's miner's eyes by `delta` sat (a fee market that moved on),
/// mines past `STUCK_AFTER_BLOCKS` and reports the Batches built meanwhile: the transaction is
/// still in the mempool, out of every block.
fn hold_out_of_blocks(devnet: &Devnet, txid: &Txid, delta: i64) {
    devnet.node.prioritise(txid, -delta).unwrap();
    devnet.mine(16).unwrap();
    include_built_batches(devnet);
    assert!(devnet.node.in_mempool(txid).unwrap(), "held out of blocks");
}

/// Serai block `block`, after the stuck plans' blocks are final, finds every family landed:
/// nothing is proposed and nothing is stuck on any validator.
fn nothing_stuck_at(devnet: &Devnet, pair: &KeyPair, block: u64) {
    devnet.mine(8).unwrap();
    include_built_batches(devnet);
    let ack = devnet
        .substrate_block(block, pair, Vec::new(), &devnet.all())
        .unwrap();
    assert!(ack.plans.is_empty());
    for validator in &devnet.validators {
        assert_eq!(
            validator.scanner_metric("processor_plans_stuck").unwrap(),
            0.0
        );
    }
}

/// A burn to `to` paid by a signed transaction that the node's miner holds out of blocks (its
/// fee deprioritised, as a fee market that moved on would), and the Serai block whose network
/// block is `STUCK_AFTER_BLOCKS` later: its acknowledgement proposes the replacement, which is
/// acknowledged and signed. Returns the original's and the replacement's plan ids and
/// transactions (the original's as it was signed), and when that Serai block was sent.
fn stuck_and_replaced(
    devnet: &Devnet,
    pair: &KeyPair,
    to: &TestWallet,
) -> (
    (schema::hashes::PlanId, bitcoin::Transaction),
    (schema::hashes::PlanId, TransactionId),
    std::time::Instant,
) {
    let ack = burn(devnet, pair, to, 1_000_000, &devnet.all());
    let original = ack.plans[0];
    let (_, txid, signed) = sign_and_fetch(devnet, pair, original, &[p(1), p(2), p(3)]);
    hold_out_of_blocks(devnet, &txid, 100_000_000);
    assert!(paid_to(devnet, to).is_empty());

    let stuck_at = std::time::Instant::now();
    let ack = devnet
        .substrate_block(2, pair, Vec::new(), &devnet.all())
        .unwrap();
    assert_eq!(
        ack.plans.len(),
        1,
        "the stuck plan's replacement, nothing else"
    );
    let replacement = ack.plans[0];
    assert_ne!(replacement, original);
    for validator in &devnet.validators {
        assert_eq!(
            validator
                .scanner_metric("processor_plan_replacements_total")
                .unwrap(),
            1.0
        );
        assert_eq!(
            validator.scanner_metric("processor_plans_stuck").unwrap(),
            1.0
        );
    }
    devnet.acknowledge(&ack).unwrap();
    let replacing = devnet
        .sign_plan(
            PlanSignId {
                key: pair.network_key,
                id: replacement,
                attempt: Attempt(0),
            },
            &[p(2), p(3), p(4)],
        )
        .unwrap();
    // The replacement took the original's place in the node's mempool.
    let replacing_id: Txid = txid_hex(&replacing).parse().unwrap();
    assert!(devnet.node.in_mempool(&replacing_id).unwrap());
    assert!(!devnet.node.in_mempool(&txid).unwrap());
    ((original, signed), (replacement, replacing), stuck_at)
}

/// Every validator reported `tx` as the completion of every one of `plans` (a family settles
/// whichever member's transaction confirms), and keeps none of their transactions to publish.
fn family_settled_by(devnet: &Devnet, plans: &[schema::hashes::PlanId], tx: TransactionId) {
    devnet
        .coordinator
        .wait_until(processor_tests::devnet::STEP_TIMEOUT, |_| {
            for validator in &devnet.validators {
                let reported = devnet.sent(validator, |message| match message {
                    ProcessorMessage::Sign(sign::ProcessorMessage::Completed {
                        id,
                        tx: completed,
                        ..
                    }) if *completed == tx => Some(*id),
                    _ => None,
                })?;
                if !plans.iter().all(|plan| reported.contains(plan))
                    || validator.scanner_metric("processor_oldest_unsettled_blocks")? != 0.0
                {
                    return Ok(false);
                }
            }
            Ok(true)
        })
        .unwrap();
}

#[test]
fn a_payout_held_out_of_blocks_is_replaced_at_a_higher_fee_and_paid_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut devnet = Devnet::start(dir.path(), 3, 4).unwrap();
    let (pair, _) = keyed_and_funded(&mut devnet);
    let bob = TestWallet::new([0x0b; 32]).unwrap();
    let ((original, signed), (replacement, tx), stuck_at) =
        stuck_and_replaced(&devnet, &pair, &bob);
    devnet.mine(1).unwrap();
    // The replacement is proposed by the first Serai block at least STUCK_AFTER_BLOCKS after
    // the plan, and confirms in the next network block mined.
    eprintln!(
        "stuck (the Serai block sent) to the replacement's first confirmation: {:?}",
        stuck_at.elapsed()
    );
    devnet
        .mine(u32::try_from(CONFIRMATIONS).unwrap() - 1)
        .unwrap();

    // Bob is paid once, by the replacement, a little less than the original would have paid
    // him: his payment bears its share of the higher fee.
    let paid = paid_to(&devnet, &bob);
    assert_eq!(paid.len(), 1, "{paid:?}");
    assert_eq!(paid[0].0.to_string(), txid_hex(&tx));
    let originally = signed
        .output
        .iter()
        .find(|output| output.script_pubkey == bob.script_pubkey())
        .unwrap()
        .value
        .to_sat();
    assert!(paid[0].1 < originally && paid[0].1 > 995_000, "{paid:?}");
    family_settled_by(&devnet, &[original, replacement], tx);

    // The next Serai block finds the family landed: nothing is stuck any more.
    nothing_stuck_at(&devnet, &pair, 3);
    assert_eq!(paid_to(&devnet, &bob).len(), 1);
}

#[test]
fn an_original_confirming_after_its_replacement_was_signed_settles_the_family_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut devnet = Devnet::start(dir.path(), 3, 4).unwrap();
    let (pair, _) = keyed_and_funded(&mut devnet);
    let carol = TestWallet::new([0x0c; 32]).unwrap();
    let ((original, signed), (replacement, replacing), _) =
        stuck_and_replaced(&devnet, &pair, &carol);

    // A miner that kept the original mines it: the replacement is evicted as a conflict.
    let miner = TestWallet::new([0x0d; 32]).unwrap();
    devnet
        .node
        .rpc(
            "generateblock",
            json!([
                miner.address().to_string(),
                [bitcoin::consensus::encode::serialize_hex(&signed)]
            ]),
        )
        .unwrap();
    devnet
        .mine(u32::try_from(CONFIRMATIONS).unwrap() - 1)
        .unwrap();
    let tx = TransactionId(signed.compute_txid().to_byte_array());
    let paid = paid_to(&devnet, &carol);
    assert_eq!(paid.len(), 1, "{paid:?}");
    assert_eq!(paid[0].0, signed.compute_txid());
    family_settled_by(&devnet, &[original, replacement], tx);
    // The processors stop publishing the replacement: it never comes back.
    devnet.mine(2).unwrap();
    devnet.wait_scanned().unwrap();
    let replacing: Txid = txid_hex(&replacing).parse().unwrap();
    assert!(!devnet.node.in_mempool(&replacing).unwrap());
    assert_eq!(paid_to(&devnet, &carol).len(), 1);
    for validator in &devnet.validators {
        assert_eq!(
            validator
                .scanner_metric("scanner_eventualities_total{outcome=\"conflict\"}")
                .unwrap(),
            0.0
        );
    }
}

/// The fee rate the scheduler plans at when Serai acknowledges `block`: its median (Core's
/// `getblockstats`), as the scanner reads it.
fn plan_rate_at(devnet: &Devnet, block: schema::hashes::BlockHash) -> u64 {
    let hash = bitcoin::BlockHash::from_byte_array(block.0).to_string();
    let stats = devnet
        .node
        .rpc(
            "getblockstats",
            json!([hash, ["txs", "feerate_percentiles"]]),
        )
        .unwrap();
    let median = scanner::chain::core_answers::median_fee_rate(&stats).unwrap();
    schema::protocol::plan_fee_rate(median.map(schema::transaction::FeeRate)).0
}

#[test]
fn a_payout_no_replacement_can_bump_is_paid_for_by_a_child_and_paid_once() {
    use schema::{
        plan::{OutputId, OutputKind, Payment, PaymentAddress, Plan, PlanInput},
        protocol::DUST,
        taproot::KeyScripts,
        transaction::{build, Built, FeeRate},
    };
    let dir = tempfile::tempdir().unwrap();
    let mut devnet = Devnet::start(dir.path(), 3, 4).unwrap();
    let (pair, funded) = keyed_and_funded(&mut devnet);
    let dave = TestWallet::new([0x0a; 32]).unwrap();

    // A burn its payment bears the fee of down to 20 sat above dust: a replacement outbidding
    // the transaction by the relay fee would take the payment below dust, so none is made.
    let rate = plan_rate_at(&devnet, funded.batch.block);
    let shaped = |amount: u64| Plan {
        key: pair.network_key,
        inputs: vec![PlanInput {
            id: OutputId {
                txid: TransactionId([0; 32]),
                vout: 0,
            },
            kind: OutputKind::External,
            amount: SeraiAmount::from_sat(2_500_000).unwrap(),
        }],
        payments: vec![Payment {
            address: PaymentAddress::new(dave.script_pubkey()).unwrap(),
            data: None,
            amount: SeraiAmount::from_sat(amount).unwrap(),
        }],
        change: Some(pair.network_key),
        fee_rate: FeeRate(rate),
        replaces: None,
    };
    let Ok(Built::Transaction(probe)) = build(&shaped(100_000)) else {
        panic!("the payout's shape builds");
    };
    let amount = DUST.to_sat() + probe.fee.to_sat() + 20;
    let ack = burn(&devnet, &pair, &dave, amount, &devnet.all());
    let parent_plan = ack.plans[0];
    let (parent, parent_id, signed) =
        sign_and_fetch(&devnet, &pair, parent_plan, &[p(1), p(2), p(3)]);
    let change_script = KeyScripts::derive(&pair.network_key)
        .unwrap()
        .script(OutputKind::Change)
        .clone();
    let change_vout = signed
        .output
        .iter()
        .position(|output| output.script_pubkey == change_script)
        .unwrap();
    // Its fee taken away in the miner's eyes: it pays nothing a block template takes alone.
    hold_out_of_blocks(
        &devnet,
        &parent_id,
        i64::try_from(probe.fee.to_sat()).unwrap(),
    );

    // The Serai block STUCK_AFTER_BLOCKS on proposes a child, not a replacement.
    let stuck_at = std::time::Instant::now();
    let ack = devnet
        .substrate_block(2, &pair, Vec::new(), &devnet.all())
        .unwrap();
    assert_eq!(ack.plans.len(), 1, "the child, nothing else");
    let child_plan = ack.plans[0];
    for validator in &devnet.validators {
        assert_eq!(
            validator
                .scanner_metric("processor_plan_children_total")
                .unwrap(),
            1.0
        );
        assert_eq!(
            validator
                .scanner_metric("processor_plan_replacements_total")
                .unwrap(),
            0.0
        );
    }
    devnet.acknowledge(&ack).unwrap();
    let (child, child_id, spending) =
        sign_and_fetch(&devnet, &pair, child_plan, &[p(2), p(3), p(4)]);
    // The child spends the stuck transaction's change, back to our change address.
    assert_eq!(spending.input.len(), 1);
    assert_eq!(
        spending.input[0].previous_output,
        bitcoin::OutPoint {
            txid: parent_id,
            vout: u32::try_from(change_vout).unwrap()
        }
    );
    assert_eq!(spending.output.len(), 1);
    assert_eq!(spending.output[0].script_pubkey, change_script);

    // The next block takes both: the child's fee lifts the package above the miner's floor.
    devnet.mine(1).unwrap();
    assert!(!devnet.node.in_mempool(&parent_id).unwrap());
    assert!(!devnet.node.in_mempool(&child_id).unwrap());
    eprintln!(
        "stuck (the Serai block sent) to the child's and its parent's first confirmation: {:?}",
        stuck_at.elapsed()
    );
    devnet
        .mine(u32::try_from(CONFIRMATIONS).unwrap() - 1)
        .unwrap();
    let paid = paid_to(&devnet, &dave);
    assert_eq!(paid, vec![(parent_id, DUST.to_sat() + 20)]);
    family_settled_by(&devnet, &[parent_plan], parent);
    family_settled_by(&devnet, &[child_plan], child);

    // The next Serai block finds both landed; the one after pays a new burn from the child's
    // change (the parent's, which the child spent, never joined the pool).
    nothing_stuck_at(&devnet, &pair, 3);
    let erin = TestWallet::new([0x0e; 32]).unwrap();
    let ack = devnet
        .substrate_block(
            4,
            &pair,
            vec![OutInstructionWithBalance {
                address: erin.address().to_string().into_bytes(),
                data: None,
                amount: SeraiAmount::from_sat(500_000).unwrap(),
            }],
            &devnet.all(),
        )
        .unwrap();
    assert_eq!(ack.plans.len(), 1);
    devnet.acknowledge(&ack).unwrap();
    let (_, _, next_tx) = sign_and_fetch(&devnet, &pair, ack.plans[0], &[p(1), p(3), p(4)]);
    assert_eq!(next_tx.input.len(), 1);
    assert_eq!(next_tx.input[0].previous_output.txid, child_id);
    devnet.mine(u32::try_from(CONFIRMATIONS).unwrap()).unwrap();
    assert_eq!(paid_to(&devnet, &erin).len(), 1);
    assert_eq!(paid_to(&devnet, &dave).len(), 1);
}

/// Pays 500,000 sat to `to` for Serai block `number`, signed by `signers`; returns once the
/// payout is final, was paid once (less its fee), and the Batch of the block holding its
/// change is included (so that the change can pay the next burn).
fn pay_out(devnet: &Devnet, pair: &KeyPair, number: u64, to: &TestWallet, signers: &[Participant]) {
    let amount = 500_000;
    let burns = vec![OutInstructionWithBalance {
        address: to.address().to_string().into_bytes(),
        data: None,
        amount: SeraiAmount::from_sat(amount).unwrap(),
    }];
    let ack = devnet
        .substrate_block(number, pair, burns, &devnet.all())
        .unwrap();
    assert_eq!(ack.plans.len(), 1);
    devnet.acknowledge(&ack).unwrap();
    let id = PlanSignId {
        key: pair.network_key,
        id: ack.plans[0],
        attempt: Attempt(0),
    };
    let tx = devnet.sign_plan(id, signers).unwrap();
    devnet.mine(u32::try_from(CONFIRMATIONS).unwrap()).unwrap();
    let paid = paid_to(devnet, to);
    assert_eq!(paid.len(), 1, "{paid:?}");
    assert_eq!(paid[0].0.to_string(), txid_hex(&tx));
    assert!(paid[0].1 < amount && paid[0].1 > amount - 5_000, "{paid:?}");
    devnet.wait_scanned().unwrap();
    devnet.sign_next_batch(signers).unwrap();
}

#[test]
fn a_lost_enclave_is_repaired_by_three_peers_and_every_share_refreshed() {
    let dir = tempfile::tempdir().unwrap();
    let mut devnet = Devnet::start(dir.path(), 3, 4).unwrap();
    let (pair, _) = keyed_and_funded(&mut devnet);
    let id = |attempt| KeyGenId {
        set: ValidatorSet {
            session: Session(0),
            network: NetworkId::Bitcoin,
        },
        attempt: Attempt(attempt),
    };

    // Validator 2's enclave directory and token are destroyed; a new token is provisioned.
    let attestor = *devnet.attestor();
    devnet.validators[1].lose_enclave(&attestor).unwrap();
    let status = devnet.validators[1].enclave.cli("status").unwrap();
    assert!(String::from_utf8_lossy(&status.stdout).contains("key pairs: 0"));

    // Validators 1, 3 and 4 give its share back through the coordinator.
    // The new enclave's identity, as its operator reads it on its host and registers it.
    let repair = ShareRepair {
        pair,
        repaired: p(2),
        helpers: vec![p(1), p(3), p(4)],
        participants: 4,
        identity: devnet.validators[1].enclave.identity().unwrap(),
        shares: devnet.validators[0].enclave.shares_digest().unwrap(),
    };
    let started = std::time::Instant::now();
    let repaired = devnet.repair(id(1), &repair).unwrap();
    eprintln!("devnet repair: {:?}", started.elapsed());
    assert!(
        matches!(repaired, key_gen::ProcessorMessage::Repaired { pair: got, .. } if got == pair),
        "{repaired:?}"
    );
    // Validator 2 signs a payout with two others.
    let bob = TestWallet::new([0x0b; 32]).unwrap();
    pay_out(&devnet, &pair, 1, &bob, &[p(2), p(3), p(4)]);

    // A refresh on all four; then a payout signed with the refreshed shares.
    let started = std::time::Instant::now();
    let refreshed = devnet.refresh(id(2), pair).unwrap();
    eprintln!("devnet refresh: {:?}", started.elapsed());
    assert_eq!(refreshed.len(), 4);
    for message in refreshed.values() {
        assert!(
            matches!(
                message,
                key_gen::ProcessorMessage::RefreshConfirmed { epoch: 1, .. }
            ),
            "{message:?}"
        );
    }
    let carol = TestWallet::new([0x0c; 32]).unwrap();
    pay_out(&devnet, &pair, 2, &carol, &[p(1), p(2), p(4)]);
}

/// What `keys` hold and spent on the active chain: their unspent outputs (those paying any of
/// their addresses), by outpoint, and the fees of every transaction spending their outputs
/// (all of whose inputs are theirs).
fn ours_on_chain(devnet: &Devnet, keys: &[KeyPair]) -> (BTreeMap<bitcoin::OutPoint, u64>, u64) {
    let scripts: Vec<KeyScripts> = keys
        .iter()
        .map(|pair| KeyScripts::derive(&pair.network_key).unwrap())
        .collect();
    let height = devnet
        .node
        .rpc("getblockcount", json!([]))
        .unwrap()
        .as_u64()
        .unwrap();
    let (mut unspent, mut fees) = (BTreeMap::new(), 0);
    for h in 1..=u32::try_from(height).unwrap() {
        for transaction in devnet.node.block_at(h).unwrap().txdata {
            let spent: Vec<u64> = transaction
                .input
                .iter()
                .filter_map(|input| unspent.remove(&input.previous_output))
                .collect();
            if !spent.is_empty() {
                assert_eq!(
                    spent.len(),
                    transaction.input.len(),
                    "a transaction of ours"
                );
                let out: u64 = transaction
                    .output
                    .iter()
                    .map(|output| output.value.to_sat())
                    .sum();
                fees += spent.iter().sum::<u64>() - out;
            }
            let txid = transaction.compute_txid();
            for (vout, output) in (0_u32..).zip(&transaction.output) {
                if scripts
                    .iter()
                    .any(|key| key.kind_of(&output.script_pubkey).is_some())
                {
                    unspent.insert(bitcoin::OutPoint { txid, vout }, output.value.to_sat());
                }
            }
        }
    }
    (unspent, fees)
}

/// Signs every plan of `ack` under its key with `signers`, then mines them to finality.
fn sign_all(devnet: &Devnet, ack: &SubstrateBlockAck, signers: &[Participant]) -> Vec<Txid> {
    let txids = devnet
        .sign_plans(ack, signers)
        .unwrap()
        .iter()
        .map(|tx| txid_hex(tx).parse().unwrap())
        .collect();
    devnet.mine(u32::try_from(CONFIRMATIONS).unwrap()).unwrap();
    txids
}

fn stage_of(validator: &processor_tests::devnet::Validator, key: &KeyPair) -> f64 {
    validator.key_stage(key).unwrap()
}

/// Session 0 (validators 1 to 4) hands over to session 1 (validators 1 to 3: validator 4
/// leaves): the new key is generated and confirmed while the old one works; a payout planned
/// on the old key before the rotation completes on it; deposits to both keys during the
/// handover are credited, their Batches signed under the batch key of their block; a burn after
/// the rotation is paid by the new key; the old key forwards everything it holds to the new key
/// (validator 4 among its signers) and retires. Validator 4 never holds, schedules or signs
/// anything for the new key. A validator's scanner is killed (-9) at the rotation's boundaries
/// (right after the confirmation, and with the forwarding plans acknowledged but not signed).
/// At the end the old key holds nothing, every burn was paid once, and every satoshi deposited
/// is paid out, spent on fees, or held by the new key.
#[test]
fn a_rotation_forwards_every_satoshi_to_the_new_key_and_retires_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut devnet = Devnet::start(dir.path(), 3, 4).unwrap();
    let (old, _) = keyed_and_funded(&mut devnet);
    let signers = [p(1), p(2), p(3)];
    let alice = TestWallet::new([0x0a; 32]).unwrap();
    let planned = burn(&devnet, &old, &alice, 600_000, &devnet.all());

    let next = ValidatorSet {
        session: Session(1),
        network: NetworkId::Bitcoin,
    };
    let stayers = [p(1), p(2), p(3)];
    let new = devnet.key_generation_for(next, &stayers).unwrap();
    assert_ne!(new, old);
    // A pair no one generated, for the new set: its members' enclaves know the set and refuse
    // it (nothing changes: the old key stays active).
    let forged = KeyPair {
        batch_key: schema::keys::BatchKey([9; 32]),
        network_key: schema::keys::NetworkKey::from(
            bitcoin::secp256k1::SecretKey::from_slice(&[9; 32])
                .unwrap()
                .public_key(&bitcoin::secp256k1::Secp256k1::new()),
        ),
    };
    let context = devnet.last_included_block().unwrap().unwrap();
    for validator in &devnet.validators[..3] {
        devnet
            .coordinator
            .push(
                &validator.id,
                CoordinatorMessage::Substrate(substrate::CoordinatorMessage::ConfirmKeyPair {
                    context: SubstrateContext {
                        serai_time: SeraiTime(1),
                        network_latest_finalized_block: context,
                    },
                    set: next,
                    key_pair: forged,
                }),
            )
            .unwrap();
    }
    devnet.wait_handled().unwrap();
    for validator in &devnet.validators[..3] {
        assert_eq!(stage_of(validator, &old), 0.0);
        assert_eq!(
            validator
                .scanner_metric("processor_messages_total{kind=\"substrate\",outcome=\"refused\"}")
                .unwrap(),
            1.0
        );
    }
    devnet.rotate_to(next, new).unwrap();
    let confirmed_at = std::time::Instant::now();
    let rotated_height = devnet.finalized_height().unwrap();
    devnet.validators[1].kill_scanner();
    devnet.validators[1].start_scanner().unwrap();
    for validator in &devnet.validators {
        devnet
            .coordinator
            .wait_until(processor_tests::devnet::STEP_TIMEOUT, |_| {
                Ok(stage_of(validator, &old) == 1.0)
            })
            .unwrap();
    }

    // The payout planned before the rotation completes on the old key.
    let (_, _, paid_alice) = sign_and_fetch(&devnet, &old, planned.plans[0], &signers);
    assert!(paid_alice
        .output
        .iter()
        .any(|output| output.script_pubkey == alice.script_pubkey()));
    // Deposits to both keys during the handover: both credited, their Batches signed under
    // the new batch key (`sign_batch` checks every Batch under the key of its block).
    devnet.deposit(&new, 900_000, [7; 32]).unwrap();
    devnet.deposit(&old, 400_000, [8; 32]).unwrap();
    include_built_batches(&devnet);
    assert_eq!(devnet.credited().unwrap(), 2_500_000 + 900_000 + 400_000);

    // A burn after the rotation: the new key pays it; the old key's plans only forward.
    let bob = TestWallet::new([0x0b; 32]).unwrap();
    let all = devnet.all();
    let keys = [(old.network_key, &all[..]), (new.network_key, &stayers[..])];
    let acks = devnet
        .substrate_block_acks(
            2,
            &new,
            vec![OutInstructionWithBalance {
                address: bob.address().to_string().into_bytes(),
                data: None,
                amount: SeraiAmount::from_sat(700_000).unwrap(),
            }],
            &keys,
        )
        .unwrap();
    assert!(!acks[0].plans.is_empty(), "the old key forwards");
    assert_eq!(acks[1].plans.len(), 1, "the new key pays the burn");
    for ack in &acks {
        devnet.acknowledge(ack).unwrap();
    }
    devnet.validators[1].kill_scanner();
    devnet.validators[1].start_scanner().unwrap();
    let new_scripts = KeyScripts::derive(&new.network_key).unwrap();
    // The leaving validator signs for the old key until it retires.
    for txid in sign_all(&devnet, &acks[0], &[p(2), p(3), p(4)]) {
        let raw = devnet
            .node
            .rpc("getrawtransaction", json!([txid.to_string()]))
            .unwrap();
        let forward: bitcoin::Transaction =
            bitcoin::consensus::encode::deserialize_hex(raw.as_str().unwrap()).unwrap();
        for output in &forward.output {
            assert_eq!(
                new_scripts.kind_of(&output.script_pubkey),
                Some(OutputKind::Change),
                "a forwarding plan pays only the new key's change address"
            );
        }
    }
    sign_all(&devnet, &acks[1], &signers);

    // Serai blocks until the old key retires: its forwarded outputs arrive at the new key
    // (reported in Batches under the new key), and it waits RETIRE_AFTER_BLOCKS.
    let mut number = 3;
    let mut retired_at = None;
    while retired_at.is_none() {
        assert!(number < 10, "the old key did not retire");
        devnet.mine(3).unwrap();
        include_built_batches(&devnet);
        let acks = devnet
            .substrate_block_acks(number, &new, Vec::new(), &keys)
            .unwrap();
        for ack in acks.iter().filter(|ack| !ack.plans.is_empty()) {
            devnet.acknowledge(ack).unwrap();
            let signers = if ack.key == old.network_key {
                [p(2), p(3), p(4)]
            } else {
                stayers
            };
            sign_all(&devnet, ack, &signers);
        }
        devnet.wait_scanned().unwrap();
        if devnet
            .validators
            .iter()
            .all(|validator| stage_of(validator, &old) == 2.0)
        {
            retired_at = Some(devnet.finalized_height().unwrap());
        }
        number += 1;
    }
    eprintln!(
        "the old key retired {} network blocks and {:?} after the new key's confirmation",
        retired_at.unwrap_or(0) - rotated_height,
        confirmed_at.elapsed()
    );

    // The leaving validator answered, preprocessed and signed nothing for the new key: it
    // skipped what it was sent about it as another set's (`not_held`), and refused nothing.
    devnet.wait_handled().unwrap();
    let leaver = &devnet.validators[3];
    assert!(
        leaver
            .scanner_metric("processor_messages_total{kind=\"coordinator\",outcome=\"not_held\"}")
            .unwrap()
            > 0.0
    );
    for outcome in ["unknown_key", "rotation_refused", "refused"] {
        for kind in ["coordinator", "sign", "substrate"] {
            assert_eq!(
                leaver
                    .scanner_metric(&format!(
                        "processor_messages_total{{kind=\"{kind}\",outcome=\"{outcome}\"}}"
                    ))
                    .unwrap(),
                0.0,
                "{kind} {outcome}"
            );
        }
    }
    let for_new_key = devnet
        .sent(&devnet.validators[3], |message| match message {
            ProcessorMessage::Coordinator(CoordinatorOut::SubstrateBlockAck(ack))
                if ack.key == new.network_key =>
            {
                Some("acknowledgement")
            }
            ProcessorMessage::Coordinator(CoordinatorOut::BatchPreprocess { id, .. })
                if id.key == new.batch_key =>
            {
                Some("batch preprocess")
            }
            ProcessorMessage::Sign(sign::ProcessorMessage::Preprocess { id, .. })
                if id.key == new.network_key =>
            {
                Some("plan preprocess")
            }
            _ => None,
        })
        .unwrap();
    assert!(for_new_key.is_empty(), "{for_new_key:?}");

    // Nothing is left on the old key; each burn was paid once; every satoshi is accounted.
    assert!(ours_on_chain(&devnet, &[old]).0.is_empty());
    assert_eq!(paid_to(&devnet, &alice).len(), 1);
    assert_eq!(paid_to(&devnet, &bob).len(), 1);
    let paid: u64 = paid_to(&devnet, &alice)
        .iter()
        .chain(&paid_to(&devnet, &bob))
        .map(|(_, sats)| sats)
        .sum();
    let held: u64 = ours_on_chain(&devnet, &[new]).0.values().sum();
    let fees = ours_on_chain(&devnet, &[old, new]).1;
    assert_eq!(paid + fees + held, 2_500_000 + 900_000 + 400_000);
}

/// A deposit whose instruction Serai cannot take (an unknown kind) but that names a refund
/// origin is not credited, and the next Serai block refunds it to the origin less its fee,
/// through a plan acknowledged and signed like any; one without an origin is kept. Every
/// satoshi is accounted.
#[test]
fn a_deposit_serai_cannot_take_is_refunded_to_its_origin_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut devnet = Devnet::start(dir.path(), 3, 4).unwrap();
    let (pair, _) = keyed_and_funded(&mut devnet);
    let carol = TestWallet::new([0x0c; 32]).unwrap();
    let origin = carol.script_pubkey();
    let len = u8::try_from(origin.len()).unwrap();
    // Version 1, refundable, the origin, then an instruction kind no version knows.
    let refundable = [&[1, 1, len][..], origin.as_bytes(), &[0x07, 1, 2]].concat();
    devnet
        .deposit_with_data(&pair, 300_000, refundable)
        .unwrap();
    // No origin: kept.
    devnet
        .deposit_with_data(&pair, 200_000, vec![0xff, 1, 2])
        .unwrap();
    include_built_batches(&devnet);
    assert_eq!(devnet.credited().unwrap(), 2_500_000);

    let ack = devnet
        .substrate_block(1, &pair, Vec::new(), &devnet.all())
        .unwrap();
    assert_eq!(ack.plans.len(), 1, "one refund");
    devnet.acknowledge(&ack).unwrap();
    sign_all(&devnet, &ack, &[p(1), p(2), p(3)]);
    let refunded = paid_to(&devnet, &carol);
    assert_eq!(refunded.len(), 1, "{refunded:?}");
    assert!(
        refunded[0].1 < 300_000 && refunded[0].1 > 295_000,
        "{refunded:?}"
    );
    for validator in &devnet.validators {
        assert_eq!(
            validator.scanner_metric("processor_refunds_total").unwrap(),
            1.0
        );
        assert_eq!(
            validator
                .scanner_metric("processor_refunded_sats_total")
                .unwrap(),
            300_000.0
        );
        assert_eq!(
            validator
                .scanner_metric("scanner_instructions_rejected_total{reason=\"invalid\"}")
                .unwrap(),
            1.0
        );
    }
    // A later Serai block refunds nothing again.
    include_built_batches(&devnet);
    let again = devnet
        .substrate_block(2, &pair, Vec::new(), &devnet.all())
        .unwrap();
    assert!(again.plans.is_empty());
    assert_eq!(paid_to(&devnet, &carol).len(), 1);
    let (unspent, fees) = ours_on_chain(&devnet, &[pair]);
    let held: u64 = unspent.values().sum();
    assert_eq!(refunded[0].1 + fees + held, 2_500_000 + 300_000 + 200_000);
}
