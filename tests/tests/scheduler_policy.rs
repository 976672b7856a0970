//! The scanner's scheduler and the enclave's policy agree: every plan the scheduler makes, at
//! any fee rate from 1 to 1,000 sat/vB, is approved by `signer_enclave::policy::plan_preprocess`
//! (the enclave's own decision, over a history that acknowledged the plan), so no plan is
//! acknowledged and then refused on every attempt. Pure: no processes.

// Test code: a failed unwrap is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unwrap_in_result
)]

use std::collections::BTreeSet;

use bitcoin::{hashes::Hash, key::Secp256k1, secp256k1::SecretKey};
use proptest::prelude::*;
use scanner::schedule::{Limits, Output, Scheduler};
use schema::{
    amount::Amount,
    hashes::{PlanId, TransactionId},
    ids::{Attempt, BatchId, NetworkId},
    keys::NetworkKey,
    plan::{OutputId, OutputKind, Payment, PaymentAddress, PlanInput},
    protocol::FeeCaps,
    sign_id::{BatchSignId, PlanSignId},
    taproot::KeyScripts,
    transaction::{build, Built, FeeRate},
};
use signer_enclave::policy::{plan_preprocess, Decision, HistoryError, PolicyHistory};

/// An enclave history that acknowledged every plan and signed nothing yet.
struct AcknowledgedEverything;

impl PolicyHistory for AcknowledgedEverything {
    fn acknowledged(&self, _: &NetworkKey, _: &PlanId) -> Result<bool, HistoryError> {
        Ok(true)
    }
    fn input_signed_into(&self, _: &OutputId) -> Result<Option<PlanId>, HistoryError> {
        Ok(None)
    }
    fn plan_attempt_preprocessed(&self, _: &PlanSignId) -> Result<bool, HistoryError> {
        Ok(false)
    }
    fn batch_attempt_preprocessed(&self, _: &BatchSignId) -> Result<bool, HistoryError> {
        Ok(false)
    }
    fn batch_signed(&self, _: NetworkId, _: BatchId) -> Result<Option<[u8; 32]>, HistoryError> {
        Ok(None)
    }
    fn next_batch(&self, _: NetworkId) -> Result<BatchId, HistoryError> {
        Ok(BatchId(0))
    }
    fn batch_floor(&self, _: NetworkId) -> Result<BatchId, HistoryError> {
        Ok(BatchId(0))
    }
}

fn key() -> NetworkKey {
    NetworkKey::from(
        SecretKey::from_slice(&[0x29; 32])
            .unwrap()
            .public_key(&Secp256k1::new()),
    )
}

fn output(index: u32, amount: u64) -> Output {
    let mut txid = [0u8; 32];
    txid[..4].copy_from_slice(&index.to_le_bytes());
    PlanInput {
        id: OutputId {
            txid: TransactionId(txid),
            vout: 0,
        },
        kind: OutputKind::External,
        amount: Amount::from_sat(amount).unwrap(),
    }
}

fn payment(index: u32, amount: u64) -> Payment {
    let mut program = [0u8; 20];
    program[..4].copy_from_slice(&index.to_le_bytes());
    Payment {
        address: PaymentAddress::from_bytes(&[&[0x00, 0x14][..], &program].concat()).unwrap(),
        data: None,
        amount: Amount::from_sat(amount).unwrap(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn the_enclave_approves_every_plan_the_scheduler_makes(
        rounds in prop::collection::vec(
            (
                prop::collection::vec(10_000u64..20_000_000, 0..40),
                prop::collection::vec(10_000u64..2_000_000, 0..40),
                prop_oneof![1u64..20, 20u64..200, 200u64..=1_000],
            ),
            1..10,
        ),
    ) {
        let scripts = KeyScripts::derive(&key()).unwrap();
        let limits = Limits { max_inputs: 30, max_outputs: 12, caps: FeeCaps::PROTOCOL };
        let mut scheduler = Scheduler::new(key(), limits);
        let mut returned: Vec<Output> = Vec::new();
        let mut spent = BTreeSet::new();
        let mut index = 0u32;
        for (deposits, burns, rate) in rounds {
            let mut outputs = std::mem::take(&mut returned);
            for amount in deposits {
                index += 1;
                outputs.push(output(index, amount));
            }
            let payments: Vec<Payment> = burns
                .into_iter()
                .map(|amount| {
                    index += 1;
                    payment(index, amount)
                })
                .collect();
            let scheduled = scheduler.schedule(outputs, payments, FeeRate(rate)).unwrap();
            for plan in scheduled.plans {
                let id = PlanSignId { key: plan.key, id: plan.id(), attempt: Attempt(0) };
                match plan_preprocess(&AcknowledgedEverything, FeeCaps::PROTOCOL, &id, &plan) {
                    Decision::Approve(_) => {}
                    Decision::Refuse(refusal) => {
                        prop_assert!(false, "the enclave refuses a plan at {rate} sat/vB: {refusal:?}");
                    }
                }
                for input in &plan.inputs {
                    prop_assert!(spent.insert(input.id), "an input in two plans");
                }
                // The plan's transaction confirms; its outputs to us come back.
                let Built::Transaction(built) = build(&plan).unwrap() else {
                    panic!("approved plans build");
                };
                let txid = TransactionId(built.transaction.compute_txid().to_byte_array());
                for (vout, out) in (0u32..).zip(&built.transaction.output) {
                    if let Some(kind) = scripts.kind_of(&out.script_pubkey) {
                        returned.push(PlanInput {
                            id: OutputId { txid, vout },
                            kind,
                            amount: Amount::from_sat(out.value.to_sat()).unwrap(),
                        });
                    }
                }
            }
        }
    }
}
