//! The local devnet: a regtest node, the coordinator harness and four validators (a scanner
//! and an enclave each, with its own SoftHSM2 token), running the whole story with readable
//! progress: key generation, a user's deposit with an InInstruction, the signed Batch, a burn,
//! the payout confirmed on the node. Then everything keeps running, with each process's
//! address printed, until Ctrl-C; the directory is removed on exit unless `--dir` was given.
//!
//! Then the handover to the next session's key: key generation and confirmation while the old
//! key works, a deposit to each key during the handover, a burn paid by the new key, the old
//! key's outputs forwarded to the new key, and Serai blocks until the old key retires.
//!
//! `--traffic BLOCKS` first runs that many blocks of mixed traffic (`processor_tests::traffic`:
//! deposits, bursts, quiet stretches, burns, fee rates from 1 to 500 sat/vB), drains it, and
//! prints the audit of the chain and of every validator's books; `--seed N` picks the run.

use std::{
    path::PathBuf,
    process::ExitCode,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use bitcoin::hashes::Hash;
use processor_tests::{
    devnet::{Devnet, CONFIRMATIONS},
    regtest::wallet::TestWallet,
    traffic::{self, Traffic},
};
use schema::{
    amount::Amount,
    ids::{Attempt, NetworkId, Participant, Session, ValidatorSet},
    instruction::OutInstructionWithBalance,
    keys::KeyPair,
    sign_id::PlanSignId,
};

fn participant(i: u16) -> anyhow::Result<Participant> {
    Participant::new(i).map_err(|error| anyhow::anyhow!("{error}"))
}

fn step(text: &str) {
    eprintln!("devnet: {text}");
}

fn wait_for_signal() -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    telemetry::on_shutdown_signal(move || flag.store(true, Ordering::SeqCst))?;
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

fn run(dir: PathBuf, hold: bool, traffic: Option<Traffic>) -> anyhow::Result<()> {
    let started = Instant::now();
    step(&format!("starting in {}", dir.display()));
    let mut devnet = Devnet::start(&dir, 3, 4).context("starting the devnet")?;
    step(&format!(
        "regtest node at {} (height 101, a funded miner); coordinator at {}; 4 validators up",
        devnet.node.url(),
        devnet.coordinator.address()
    ));

    let pair = devnet.key_generation().context("key generation")?;
    step(&format!(
        "key generation (3 of 4) done: network key {}, batch key {}",
        pair.network_key,
        hex_of(&pair.batch_key.0)
    ));
    devnet.confirm(pair).context("confirming the key pair")?;
    step("key pair confirmed: every processor scans for it from the activation block");

    let deposit = devnet
        .deposit(&pair, 5_000_000, [0x5e; 32])
        .context("the deposit")?;
    step(&format!(
        "a user deposited 0.05 BTC with an InInstruction in {deposit}, now {CONFIRMATIONS} blocks deep"
    ));
    let signers = [participant(1)?, participant(2)?, participant(3)?];
    let signed = devnet.sign_batch(0, &signers).context("signing Batch 0")?;
    step(&format!(
        "Batch 0 signed by validators 1, 2 and 3 with the batch key: {} instruction(s), {} sat",
        signed.batch.instructions.len(),
        signed
            .batch
            .instructions
            .iter()
            .map(|instruction| instruction.amount.to_sat())
            .sum::<u64>()
    ));

    let user = TestWallet::new([0x0b; 32]).map_err(|error| anyhow::anyhow!("{error}"))?;
    let burn_started = Instant::now();
    let ack = devnet
        .substrate_block(
            1,
            &pair,
            vec![OutInstructionWithBalance {
                address: user.address().to_string().into_bytes(),
                data: None,
                amount: Amount::from_sat(2_000_000).map_err(|e| anyhow::anyhow!("{e}"))?,
            }],
            &devnet.all(),
        )
        .context("the Serai block with the burn")?;
    step(&format!(
        "Serai block 1 burns 0.02 BTC to {}: every processor acknowledged the same {} plan(s)",
        user.address(),
        ack.plans.len()
    ));
    devnet.acknowledge(&ack).context("attesting the plans")?;
    step("the coordinator attested the plan ids (PlansAcknowledged)");
    let mut payout = None;
    for plan in &ack.plans {
        let id = PlanSignId {
            key: pair.network_key,
            id: *plan,
            attempt: Attempt(0),
        };
        let tx = devnet
            .sign_plan(id, &signers)
            .context("signing the payout")?;
        let txid = bitcoin::Txid::from_byte_array(tx.0);
        step(&format!(
            "payout {txid} signed by validators 1, 2 and 3 and published"
        ));
        payout = Some(txid);
    }
    devnet.mine(u32::try_from(CONFIRMATIONS)?)?;
    let payout = payout.context("no payout")?;
    let confirmed = devnet
        .node
        .rpc(
            "getrawtransaction",
            serde_json::json!([payout.to_string(), true]),
        )
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    let paid: f64 = confirmed["vout"]
        .as_array()
        .map(|outputs| {
            outputs
                .iter()
                .filter(|output| {
                    output["scriptPubKey"]["address"]
                        == serde_json::json!(user.address().to_string())
                })
                .filter_map(|output| output["value"].as_f64())
                .sum()
        })
        .unwrap_or(0.0);
    step(&format!(
        "payout confirmed ({} confirmations): {paid} BTC arrived at {} (0.02 BTC minus its fee); burn to confirmed payout took {:.2} s",
        confirmed["confirmations"],
        user.address(),
        burn_started.elapsed().as_secs_f64()
    ));
    step(&format!(
        "the whole story took {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    if let Some(traffic) = traffic {
        devnet
            .sign_next_batch(&signers)
            .context("including the payout's change")?;
        step(&format!(
            "mixed traffic: {} blocks, a Serai block every {}, seed {}",
            traffic.blocks, traffic.serai_every, traffic.seed
        ));
        let traffic_started = Instant::now();
        let report = traffic::run(&mut devnet, &pair, traffic, step).context("mixed traffic")?;
        step(&format!(
            "mixed traffic done in {:.0} s; the audit holds:",
            traffic_started.elapsed().as_secs_f64()
        ));
        for line in report.to_string().lines() {
            step(line);
        }
    }
    hand_over(&mut devnet, &pair, &signers).context("the handover to session 1")?;
    for validator in &devnet.validators {
        step(&format!(
            "validator {}: scanner metrics http://{}/metrics, enclave metrics http://{}/metrics",
            validator.participant.get(),
            validator
                .scanner_metrics()
                .map_or("-".to_owned(), |address| address.to_string()),
            validator
                .enclave
                .metrics_address()
                .map_or("-".to_owned(), |address| address.to_string()),
        ));
    }
    if hold {
        step("running; Ctrl-C to stop and clean up");
        wait_for_signal()?;
    }
    step("stopping");
    Ok(())
}

/// The handover from session 0's key `old` to session 1's.
fn hand_over(devnet: &mut Devnet, old: &KeyPair, signers: &[Participant]) -> anyhow::Result<()> {
    devnet.include_built_batches(signers)?;
    let next = ValidatorSet {
        session: Session(1),
        network: NetworkId::Bitcoin,
    };
    // Validator 4 leaves: session 1 is validators 1 to 3.
    let stayers = [participant(1)?, participant(2)?, participant(3)?];
    let leaver = [participant(2)?, participant(3)?, participant(4)?];
    let new = devnet.key_generation_for(next, &stayers)?;
    step(&format!(
        "session 1's key generation (validators 1 to 3; validator 4 leaves) done while the old key works: network key {}",
        new.network_key
    ));
    devnet.rotate_to(next, new)?;
    let confirmed = Instant::now();
    let confirmed_height = devnet.finalized_height()?;
    step("session 1's key pair confirmed: both keys scanned, the old key forwards from now on");
    devnet.deposit(&new, 1_000_000, [0x5f; 32])?;
    devnet.deposit(old, 300_000, [0x60; 32])?;
    // A deposit whose instruction Serai cannot take (an unknown kind), naming where to refund.
    let refund_to = TestWallet::new([0x0d; 32]).map_err(|error| anyhow::anyhow!("{error}"))?;
    let origin = refund_to.script_pubkey();
    let invalid = [
        &[1, 1, u8::try_from(origin.len())?][..],
        origin.as_bytes(),
        &[0x07],
    ]
    .concat();
    devnet.deposit_with_data(&new, 400_000, invalid)?;
    devnet.include_built_batches(signers)?;
    step(&format!(
        "a deposit to each key during the handover, both credited (Serai credited {} sat in all), and one of 400,000 sat with an instruction Serai cannot take; new Batches signed with the new batch key",
        devnet.credited()?
    ));
    let user = TestWallet::new([0x0c; 32]).map_err(|error| anyhow::anyhow!("{error}"))?;
    let all = devnet.all();
    let keys = [(old.network_key, &all[..]), (new.network_key, &stayers[..])];
    let mut burns = vec![OutInstructionWithBalance {
        address: user.address().to_string().into_bytes(),
        data: None,
        amount: Amount::from_sat(500_000).map_err(|e| anyhow::anyhow!("{e}"))?,
    }];
    for _ in 0..10 {
        let number = devnet.next_serai_block()?;
        let acks = devnet.substrate_block_acks(number, &new, std::mem::take(&mut burns), &keys)?;
        for ack in acks.iter().filter(|ack| !ack.plans.is_empty()) {
            devnet.acknowledge(ack)?;
            let whose = if ack.key == old.network_key {
                devnet.sign_plans(ack, &leaver)?;
                "the old key forwards, signed by validators 2, 3 and the leaving 4"
            } else {
                devnet.sign_plans(ack, &stayers)?;
                "the new key pays the burn and the refund, signed by validators 1, 2 and 3"
            };
            step(&format!(
                "Serai block {number}: {whose} ({} plan(s)), published",
                ack.plans.len()
            ));
        }
        devnet.mine(3)?;
        devnet.include_built_batches(signers)?;
        let stages = devnet
            .validators
            .iter()
            .map(|validator| validator.key_stage(old))
            .collect::<Result<Vec<_>, _>>()?;
        if stages.iter().all(|stage| *stage == 2.0) {
            let refunded: u64 = devnet.paid_to(&origin)?.iter().map(|(_, sats)| sats).sum();
            step(&format!(
                "the invalid deposit was refunded: {refunded} sat arrived at its origin (400,000 less its fee)"
            ));
            step(&format!(
                "the old key retired, drained, {} network blocks and {:.1} s after session 1's key was confirmed",
                devnet.finalized_height()? - confirmed_height,
                confirmed.elapsed().as_secs_f64()
            ));
            return Ok(());
        }
    }
    anyhow::bail!("the old key did not retire")
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let hold = !args.iter().any(|arg| arg == "--no-wait");
    let given = args
        .iter()
        .position(|arg| arg == "--dir")
        .and_then(|index| args.get(index + 1))
        .map(PathBuf::from);
    let (dir, temporary) = match given {
        Some(dir) => (dir, None),
        None => match tempfile::Builder::new()
            .prefix("processor-devnet-")
            .tempdir()
        {
            Ok(temporary) => (temporary.path().to_owned(), Some(temporary)),
            Err(error) => {
                eprintln!("devnet: cannot make a directory: {error}");
                return ExitCode::FAILURE;
            }
        },
    };
    let number = |flag: &str| {
        args.iter()
            .position(|arg| arg == flag)
            .and_then(|index| args.get(index + 1))
            .and_then(|value| value.parse::<u64>().ok())
    };
    let traffic = number("--traffic").map(|blocks| Traffic {
        blocks: u32::try_from(blocks).unwrap_or(u32::MAX),
        serai_every: 4,
        seed: number("--seed").unwrap_or(1),
    });
    let result = run(dir, hold, traffic);
    drop(temporary);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("devnet: {error:#}");
            ExitCode::FAILURE
        }
    }
}
