//! The policy over the enclave's real RocksDB: what an approval records survives closing and
//! reopening the database, and the next request the records forbid is refused.

// Test code: a failed unwrap is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unwrap_in_result
)]

use bitcoin::{key::Secp256k1, secp256k1::SecretKey};
use schema::{
    amount::Amount,
    batch::Batch,
    hashes::{BlockHash, PlanId, SeraiAddress, TransactionId},
    ids::{Attempt, BatchId, NetworkId, SeraiBlockNumber},
    instruction::{InInstruction, InInstructionWithBalance},
    keys::{BatchKey, NetworkKey},
    messages::coordinator::{Attestation, PlansAcknowledged},
    plan::{OutputId, OutputKind, Payment, PaymentAddress, Plan, PlanInput},
    protocol::FeeCaps,
    sign_id::{BatchSignId, BatchSignTarget, PlanSignId},
    transaction::FeeRate,
};
use signer_enclave::{
    db::EnclaveDb,
    policy::{batch_preprocess, plan_preprocess, Decision, PolicyHistory, Refusal},
};

const CAPS: FeeCaps = FeeCaps::PROTOCOL;

fn key() -> NetworkKey {
    NetworkKey::from(
        SecretKey::from_slice(&[1; 32])
            .unwrap()
            .public_key(&Secp256k1::new()),
    )
}

fn plan(vout: u32, payment: u64) -> Plan {
    Plan {
        key: key(),
        inputs: vec![PlanInput {
            id: OutputId {
                txid: TransactionId([9; 32]),
                vout,
            },
            kind: OutputKind::External,
            amount: Amount::from_sat(1_000_000).unwrap(),
        }],
        payments: vec![Payment {
            address: PaymentAddress::from_bytes(&[&[0x00, 0x14][..], &[5; 20]].concat()).unwrap(),
            data: None,
            amount: Amount::from_sat(payment).unwrap(),
        }],
        change: Some(key()),
        fee_rate: FeeRate(10),
        replaces: None,
    }
}

fn sign_id(plan: &Plan, attempt: u32) -> PlanSignId {
    PlanSignId {
        key: plan.key,
        id: plan.id(),
        attempt: Attempt(attempt),
    }
}

fn acknowledge(db: &EnclaveDb, plans: &[&Plan]) {
    // The attestation was checked by `policy::acknowledgement` before this point.
    db.record_acknowledgement(&PlansAcknowledged {
        block: SeraiBlockNumber(1),
        key: key(),
        plans: plans.iter().map(|plan| plan.id()).collect(),
        attestation: Attestation([0; 64]),
    })
    .unwrap();
}

#[test]
fn plan_records_survive_a_restart_and_forbid_what_they_should() {
    let dir = tempfile::tempdir().unwrap();
    let first = plan(0, 500_000);
    // Spends the same input, pays differently: a double spend of the first plan's input.
    let rival = plan(0, 400_000);
    {
        let db = EnclaveDb::open(dir.path()).unwrap();
        assert!(!db.acknowledged(&key(), &first.id()).unwrap());
        acknowledge(&db, &[&first, &rival]);
        let Decision::Approve(approval) = plan_preprocess(&db, CAPS, &sign_id(&first, 0), &first)
        else {
            panic!("refused");
        };
        db.record_plan_approval(&approval).unwrap();
    }

    let db = EnclaveDb::open(dir.path()).unwrap();
    assert!(db.acknowledged(&key(), &first.id()).unwrap());
    assert_eq!(
        db.input_signed_into(&first.inputs[0].id).unwrap(),
        Some(first.id())
    );
    // The same attempt again: refused (the nonce must never be reused).
    assert!(matches!(
        plan_preprocess(&db, CAPS, &sign_id(&first, 0), &first),
        Decision::Refuse(Refusal::AttemptAlreadyPreprocessed)
    ));
    // A new attempt of the same plan: allowed.
    assert!(matches!(
        plan_preprocess(&db, CAPS, &sign_id(&first, 1), &first),
        Decision::Approve(_)
    ));
    // Another acknowledged plan spending the same input: refused.
    assert!(matches!(
        plan_preprocess(&db, CAPS, &sign_id(&rival, 0), &rival),
        Decision::Refuse(Refusal::InputAlreadySigned { plan, .. }) if plan == first.id()
    ));
    // A plan never acknowledged: refused.
    let stranger = plan(1, 300_000);
    assert!(matches!(
        plan_preprocess(&db, CAPS, &sign_id(&stranger, 0), &stranger),
        Decision::Refuse(Refusal::PlanNotAcknowledged(id)) if id == stranger.id()
    ));
    assert_ne!(stranger.id(), PlanId([0; 32]));
}

#[test]
fn a_replacements_inputs_are_recorded_against_its_family_so_the_family_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let original = plan(0, 500_000);
    let bumped = original.replaced_at(FeeRate(original.fee_rate.0 + 5));
    let again = bumped.replaced_at(FeeRate(original.fee_rate.0 + 9));
    let approve = |db: &EnclaveDb, plan: &Plan, attempt: u32| {
        let Decision::Approve(approval) = plan_preprocess(db, CAPS, &sign_id(plan, attempt), plan)
        else {
            panic!("refused");
        };
        db.record_plan_approval(&approval).unwrap();
    };
    {
        let db = EnclaveDb::open(dir.path()).unwrap();
        acknowledge(&db, &[&original, &bumped, &again]);
        approve(&db, &original, 0);
        approve(&db, &bumped, 0);
    }
    let db = EnclaveDb::open(dir.path()).unwrap();
    // Recorded against the original, not the replacement: a later member may follow it.
    assert_eq!(
        db.input_signed_into(&original.inputs[0].id).unwrap(),
        Some(original.id())
    );
    approve(&db, &again, 0);
    approve(&db, &original, 1);
    assert_eq!(
        db.input_signed_into(&original.inputs[0].id).unwrap(),
        Some(original.id())
    );
}

#[test]
fn batch_records_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let batch = |amount| Batch {
        network: NetworkId::Bitcoin,
        id: BatchId(0),
        block: BlockHash([3; 32]),
        instructions: vec![InInstructionWithBalance {
            instruction: InInstruction::Transfer {
                to: SeraiAddress([4; 32]),
            },
            amount: Amount::from_sat(amount).unwrap(),
        }],
    };
    let id = |attempt| BatchSignId {
        key: BatchKey([7; 32]),
        id: BatchSignTarget {
            network: NetworkId::Bitcoin,
            batch: BatchId(0),
        },
        attempt: Attempt(attempt),
    };
    {
        let db = EnclaveDb::open(dir.path()).unwrap();
        let Decision::Approve(approval) =
            batch_preprocess(&db, NetworkId::Bitcoin, &id(0), &batch(20_000))
        else {
            panic!("refused");
        };
        db.record_batch_approval(&approval).unwrap();
    }
    let db = EnclaveDb::open(dir.path()).unwrap();
    assert!(matches!(
        batch_preprocess(&db, NetworkId::Bitcoin, &id(0), &batch(20_000)),
        Decision::Refuse(Refusal::AttemptAlreadyPreprocessed)
    ));
    assert!(matches!(
        batch_preprocess(&db, NetworkId::Bitcoin, &id(1), &batch(20_000)),
        Decision::Approve(_)
    ));
    assert!(matches!(
        batch_preprocess(&db, NetworkId::Bitcoin, &id(1), &batch(30_000)),
        Decision::Refuse(Refusal::BatchIdReused(BatchId(0)))
    ));
}
