//! What a coordinator or an operator can throw at four real processors (a `scanner` and a
//! `signer-enclave` process each, their own SoftHSM tokens, the regtest node) without funds
//! being paid twice or stranded: a Serai block re-sent under a new message id, messages for a
//! key this validator does not hold, an activation time in milliseconds, and an HSM that fails
//! while a key pair is confirmed.

// Test code: a failed unwrap is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unwrap_in_result
)]

use bitcoin::key::Secp256k1;
use processor_tests::{
    devnet::{Devnet, STEP_TIMEOUT},
    regtest::wallet::TestWallet,
};
use schema::{
    amount::Amount,
    hashes::BlockHash,
    ids::{Participant, SeraiBlockNumber, SeraiTime},
    instruction::OutInstructionWithBalance,
    keys::NetworkKey,
    messages::{
        coordinator::ProcessorMessage as CoordinatorOut,
        substrate::{self, SubstrateContext},
        CoordinatorMessage, ProcessorMessage,
    },
};

fn p(i: u16) -> Participant {
    Participant::new(i).unwrap()
}

fn burn(to: &TestWallet, amount: u64) -> OutInstructionWithBalance {
    OutInstructionWithBalance {
        address: to.address().to_string().into_bytes(),
        data: None,
        amount: Amount::from_sat(amount).unwrap(),
    }
}

/// How many `SubstrateBlockAck`s each validator sent for Serai block `block`.
fn acks_for(devnet: &Devnet, block: u64) -> Vec<usize> {
    devnet
        .validators
        .iter()
        .map(|validator| {
            devnet
                .sent(validator, |message| match message {
                    ProcessorMessage::Coordinator(CoordinatorOut::SubstrateBlockAck(ack))
                        if ack.block == SeraiBlockNumber(block) =>
                    {
                        Some(())
                    }
                    _ => None,
                })
                .unwrap()
                .len()
        })
        .collect()
}

fn outcome_count(devnet: &Devnet, kind: &str, outcome: &str) -> Vec<f64> {
    let series = format!("processor_messages_total{{kind=\"{kind}\",outcome=\"{outcome}\"}}");
    devnet
        .validators
        .iter()
        .map(|validator| validator.scanner_metric(&series).unwrap())
        .collect()
}

#[test]
fn resent_serai_blocks_foreign_keys_and_millisecond_times_are_refused_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut devnet = Devnet::start(dir.path(), 3, 4).unwrap();
    let pair = devnet.key_generation().unwrap();

    // A ConfirmKeyPair whose Serai time is in milliseconds: refused with a metric, not waited
    // for forever (the first key activates at the first block at or after that time).
    let set = devnet.set();
    let ids = devnet
        .push_to_each(|_| {
            CoordinatorMessage::Substrate(substrate::CoordinatorMessage::ConfirmKeyPair {
                context: SubstrateContext {
                    serai_time: SeraiTime(1_764_600_000_000),
                    network_latest_finalized_block: BlockHash([0; 32]),
                },
                set,
                key_pair: pair,
            })
        })
        .unwrap();
    devnet.wait_acked(&ids).unwrap();
    assert_eq!(
        outcome_count(&devnet, "substrate", "activation_time_unit"),
        vec![1.0; 4]
    );
    devnet.confirm(pair).unwrap();
    devnet.deposit(&pair, 5_000_000, [5; 32]).unwrap();
    devnet.sign_next_batch(&[p(1), p(2), p(3)]).unwrap();

    let bob = TestWallet::new([0x0b; 32]).unwrap();
    let ack = devnet
        .substrate_block(1, &pair, vec![burn(&bob, 1_000_000)], &devnet.all())
        .unwrap();
    assert_eq!(ack.plans.len(), 1);

    // The coordinator sends Serai block 1 again under new message ids (a replayed queue, a
    // restarted coordinator): refused and counted, nothing scheduled twice.
    let context = SubstrateContext {
        serai_time: SeraiTime(2),
        network_latest_finalized_block: devnet.last_included_block().unwrap().unwrap(),
    };
    let resend = |block: u64, key: NetworkKey| {
        let bob = &bob;
        move |_| {
            CoordinatorMessage::Substrate(substrate::CoordinatorMessage::SubstrateBlock {
                context,
                block: SeraiBlockNumber(block),
                key,
                burns: vec![burn(bob, 1_000_000)],
            })
        }
    };
    let ids = devnet.push_to_each(resend(1, pair.network_key)).unwrap();
    devnet.wait_acked(&ids).unwrap();
    assert_eq!(acks_for(&devnet, 1), vec![1; 4]);
    assert_eq!(
        outcome_count(&devnet, "substrate", "stale_serai_block"),
        vec![1.0; 4]
    );

    // A Serai block for a key none of them holds: refused and counted, no scheduler for it.
    let stranger = NetworkKey::from(
        bitcoin::secp256k1::SecretKey::from_slice(&[0x51; 32])
            .unwrap()
            .public_key(&Secp256k1::new()),
    );
    let ids = devnet.push_to_each(resend(2, stranger)).unwrap();
    devnet.wait_acked(&ids).unwrap();
    assert_eq!(acks_for(&devnet, 2), vec![0; 4]);
    assert_eq!(
        outcome_count(&devnet, "substrate", "unknown_key"),
        vec![1.0; 4]
    );

    // The next real Serai block is handled as ever.
    let ack = devnet
        .substrate_block(3, &pair, vec![], &devnet.all())
        .unwrap();
    assert!(ack.plans.is_empty());
    assert_eq!(acks_for(&devnet, 3), vec![1; 4]);
}

#[test]
fn a_key_pair_confirmed_while_the_hsm_fails_is_activated_once_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let mut devnet = Devnet::start(dir.path(), 3, 4).unwrap();
    let pair = devnet.key_generation().unwrap();

    // Validator 1's token disappears (an HSM unplugged or failing) while the chain votes the
    // pair in: its enclave cannot unseal the shares and refuses with a reason that may pass.
    // Before, the refusal skipped the message for good and the key never became active.
    let tokens = devnet.validators[0].enclave.dir().join("tokens");
    let away = devnet.validators[0].enclave.dir().join("tokens.away");
    std::fs::rename(&tokens, &away).unwrap();
    let ids = devnet.push_confirm(pair).unwrap();
    let refused = "signer_enclave_refusals_total{reason=\"custody_unavailable\"}";
    let waited = devnet.coordinator.wait_until(STEP_TIMEOUT, |_| {
        Ok(devnet.validators[0].enclave.metric(refused)? >= 2.0)
    });
    assert!(
        waited.is_ok(),
        "{}\n{}",
        devnet.validators[0].log(),
        devnet.validators[0].enclave.log()
    );
    // Retried, neither handled nor acked.
    let acked = devnet.coordinator.acked(&devnet.validators[0].id).unwrap();
    assert!(
        acked < ids[0].0,
        "acked {acked}, confirmation is {}",
        ids[0].0
    );

    // The operator brings the HSM back and restarts the enclave: the same confirmation
    // succeeds, and the key is in use.
    std::fs::rename(&away, &tokens).unwrap();
    devnet.validators[0].enclave.kill();
    devnet.validators[0].enclave.start().unwrap();
    devnet.wait_acked(&ids).unwrap();
    devnet.deposit(&pair, 2_000_000, [6; 32]).unwrap();
    let signed = devnet.sign_next_batch(&[p(1), p(2), p(3)]).unwrap();
    assert_eq!(signed.batch.instructions.len(), 1);
}

#[test]
fn mixed_traffic_pays_every_payable_burn_once_and_keeps_the_books() {
    // A short run of what `ops/devnet --no-wait --traffic 2000` runs at length.
    let dir = tempfile::tempdir().unwrap();
    let mut devnet = Devnet::start(dir.path(), 3, 4).unwrap();
    let pair = devnet.key_generation().unwrap();
    devnet.confirm(pair).unwrap();
    devnet.deposit(&pair, 30_000_000, [5; 32]).unwrap();
    devnet.sign_next_batch(&[p(1), p(2), p(3)]).unwrap();
    let report = processor_tests::traffic::run(
        &mut devnet,
        &pair,
        processor_tests::traffic::Traffic {
            blocks: 160,
            serai_every: 4,
            seed: 7,
        },
        |_| {},
    )
    .unwrap();
    // The audit passed; the run did exercise what it should.
    assert!(report.deposits.0 > 100, "{report}");
    assert!(report.burns.0 > 20, "{report}");
    assert!(report.paid.0 > 10, "{report}");
    assert!(report.fee_rates.1 > 100, "{report}");
}

#[test]
fn the_outbox_gauge_moves_while_the_coordinator_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let mut devnet = Devnet::start(dir.path(), 3, 4).unwrap();
    let pair = devnet.key_generation().unwrap();
    devnet.confirm(pair).unwrap();
    devnet.deposit(&pair, 5_000_000, [5; 32]).unwrap();
    devnet.sign_next_batch(&[p(1), p(2), p(3)]).unwrap();
    let carol = TestWallet::new([0x0c; 32]).unwrap();
    let ack = devnet
        .substrate_block(1, &pair, vec![burn(&carol, 1_000_000)], &devnet.all())
        .unwrap();
    devnet.acknowledge(&ack).unwrap();
    devnet
        .sign_plan(
            schema::sign_id::PlanSignId {
                key: pair.network_key,
                id: ack.plans[0],
                attempt: schema::ids::Attempt(0),
            },
            &[p(1), p(2), p(3)],
        )
        .unwrap();

    // The coordinator goes down; the payout becomes final, and each scanner queues its
    // `Completed` for it. Operators see the outbox grow while the link is down.
    devnet.coordinator.stop();
    devnet
        .mine(u32::try_from(processor_tests::devnet::CONFIRMATIONS).unwrap())
        .unwrap();
    let depth = |validator: &processor_tests::devnet::Validator| {
        validator.scanner_metric("processor_outbox_depth").unwrap()
    };
    let until = std::time::Instant::now() + STEP_TIMEOUT;
    while devnet.validators.iter().any(|v| depth(v) < 1.0) {
        assert!(
            std::time::Instant::now() < until,
            "the outbox gauge did not move"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // It returns: the messages are delivered and the gauge falls back.
    devnet.coordinator.resume().unwrap();
    let until = std::time::Instant::now() + STEP_TIMEOUT;
    while devnet.validators.iter().any(|v| depth(v) > 0.0) {
        assert!(
            std::time::Instant::now() < until,
            "the outbox did not drain"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
