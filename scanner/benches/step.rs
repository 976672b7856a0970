//! Work per processor step does not grow with history: the database reads an idle step makes
//! (the outbox to deliver, the scan positions, the Batches from the signing watermark on, the
//! signed transactions not settled yet, the last handled message), timed on a fresh database
//! and on one holding 10,000 past Batches and 10,000 settled plans with their signed
//! transactions. For contrast, the same with every Batch decoded, as steps did before.
//!
//! Run: `cargo bench -p scanner --bench step`. Prints medians over 2,000 steps and the ratio.

// A benchmark binary: a failed unwrap is a failed run, and printing is its output.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use bitcoin::{key::Secp256k1, secp256k1::SecretKey};
use rocksdb::WriteBatch;
use scanner::{
    rotation::Rotation,
    scan::eventuality::{Eventuality, Outcome},
    store::db::{Db, ScannedKey},
};
use schema::{
    amount::Amount,
    batch::Batch,
    hashes::{BlockHash, PlanId, SeraiAddress, TransactionId},
    ids::{BatchId, NetworkId, Session},
    instruction::{InInstruction, InInstructionWithBalance},
    keys::{BatchKey, KeyPair, NetworkKey},
    plan::OutputId,
};

const HISTORY: u32 = 10_000;
const STEPS: usize = 2_000;

/// The reads of an idle step, as `Processor::step` makes them.
fn idle_step(db: &Db) -> usize {
    let outbox = db.outbox().unwrap();
    let keys = db.keys().unwrap();
    let _ = db.rotation().unwrap();
    let next = db.next_batch_to_sign().unwrap();
    let batches = db.batches_from(BatchId(next)).unwrap();
    let unsettled = db.unsettled().unwrap();
    let _ = db.last_handled().unwrap();
    outbox.len() + keys.len() + batches.len() + unsettled.len()
}

/// The same, reading every Batch as steps did before the watermark was used.
fn idle_step_reading_every_batch(db: &Db) -> usize {
    let next = db.next_batch_to_sign().unwrap();
    let batches = db
        .batches()
        .unwrap()
        .into_iter()
        .filter(|batch| batch.id.0 >= next)
        .count();
    idle_step(db) + batches
}

fn median(db: &Db, step: fn(&Db) -> usize) -> Duration {
    let mut times = Vec::with_capacity(STEPS);
    for _ in 0..STEPS {
        let started = Instant::now();
        std::hint::black_box(step(db));
        times.push(started.elapsed());
    }
    times.sort();
    times[STEPS / 2]
}

fn key() -> NetworkKey {
    NetworkKey::from(
        SecretKey::from_slice(&[3; 32])
            .unwrap()
            .public_key(&Secp256k1::new()),
    )
}

fn base(db: &Db) {
    let mut write = WriteBatch::default();
    db.put_key(
        &mut write,
        &ScannedKey {
            key: key(),
            activation: 0,
            next: 20_000,
        },
    )
    .unwrap();
    let mut rotation = Rotation::default();
    rotation
        .confirm(
            KeyPair {
                batch_key: BatchKey([2; 32]),
                network_key: key(),
            },
            Session(0),
            0,
            true,
        )
        .unwrap();
    db.put_rotation(&mut write, &rotation).unwrap();
    db.commit(write).unwrap();
}

/// Plan `id`'s eventuality: one input, no outputs.
fn eventuality(id: u32) -> Eventuality {
    let mut plan = [0u8; 32];
    plan[..4].copy_from_slice(&id.to_le_bytes());
    Eventuality {
        plan: PlanId(plan),
        key: key(),
        inputs: vec![OutputId {
            txid: TransactionId(plan),
            vout: 0,
        }],
        outputs: Vec::new(),
        replacements: Vec::new(),
    }
}

/// 10,000 Batches, all being signed, and 10,000 plans signed and settled.
fn history(db: &Db) {
    for chunk in 0..HISTORY / 1_000 {
        let mut write = WriteBatch::default();
        for id in chunk * 1_000..(chunk + 1) * 1_000 {
            let batch = Batch {
                network: NetworkId::Bitcoin,
                id: BatchId(id),
                block: BlockHash([1; 32]),
                instructions: vec![
                    InInstructionWithBalance {
                        instruction: InInstruction::Transfer {
                            to: SeraiAddress([4; 32]),
                        },
                        amount: Amount::from_sat(50_000).unwrap(),
                    };
                    3
                ],
            };
            db.put_batch(&mut write, &batch).unwrap();
            let eventuality = eventuality(id);
            db.put_eventuality(&mut write, &eventuality).unwrap();
            db.put_signed(&mut write, &eventuality.plan, 100, &[0u8; 250])
                .unwrap();
        }
        db.put_next_batch_to_sign(&mut write, (chunk + 1) * 1_000)
            .unwrap();
        db.commit(write).unwrap();
        // Each plan settles in a later block.
        let mut write = WriteBatch::default();
        for id in chunk * 1_000..(chunk + 1) * 1_000 {
            let eventuality = eventuality(id);
            let completed = Outcome::Completed {
                plan: eventuality.plan,
                tx: TransactionId(eventuality.plan.0),
            };
            db.put_outcome(&mut write, &eventuality, completed).unwrap();
        }
        db.commit(write).unwrap();
    }
}

fn main() {
    if std::env::args().any(|arg| arg == "--list") {
        return;
    }
    let fresh_dir = tempfile::tempdir().unwrap();
    let fresh = Db::open(fresh_dir.path()).unwrap();
    base(&fresh);
    let old_dir = tempfile::tempdir().unwrap();
    let old = Db::open(old_dir.path()).unwrap();
    base(&old);
    history(&old);

    let empty = median(&fresh, idle_step);
    let full = median(&old, idle_step);
    let before = median(&old, idle_step_reading_every_batch);
    println!(
        "idle step's database reads: {:.1} us with no history, {:.1} us with {HISTORY} past Batches and settled plans ({:.2}x); reading every Batch as before: {:.1} us ({:.0}x)",
        empty.as_secs_f64() * 1e6,
        full.as_secs_f64() * 1e6,
        full.as_secs_f64() / empty.as_secs_f64(),
        before.as_secs_f64() * 1e6,
        before.as_secs_f64() / empty.as_secs_f64(),
    );
}
