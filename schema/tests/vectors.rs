//! The fixed test vectors in `tests/vectors/`, computed from the written specification by
//! `generate.py` independently of this crate. A change to plan ids, batch messages,
//! attestations or the InInstruction encoding fails here.

// Test code: a failed unwrap is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unwrap_in_result
)]

use schema::{
    amount::Amount,
    batch::Batch,
    hashes::{BlockHash, PlanId, SeraiAddress, TransactionId},
    ids::{BatchId, NetworkId, SeraiBlockNumber},
    instruction::{InInstruction, InInstructionWithBalance, RefundableInInstruction},
    keys::NetworkKey,
    messages::coordinator::PlansAcknowledged,
    plan::{OutputId, OutputKind, Payment, PaymentAddress, Plan, PlanInput, Replaces},
    transaction::FeeRate,
};
use serde::Deserialize;

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

fn key(s: &str) -> NetworkKey {
    NetworkKey::from_slice(&unhex(s)).unwrap()
}

#[derive(Deserialize)]
struct InputVector {
    txid: String,
    vout: u32,
    kind: String,
    amount: u64,
}

#[derive(Deserialize)]
struct PaymentVector {
    script: String,
    data: Option<String>,
    amount: u64,
}

#[derive(Deserialize)]
struct PlanVector {
    name: String,
    key: String,
    inputs: Vec<InputVector>,
    payments: Vec<PaymentVector>,
    change: Option<String>,
    fee_rate: u64,
    #[serde(default)]
    replaces: Option<ReplacesVector>,
    id: String,
}

#[derive(Deserialize)]
struct ReplacesVector {
    plan: String,
    fee_rate: u64,
}

fn plan_of(vector: &PlanVector) -> Plan {
    Plan {
        key: key(&vector.key),
        inputs: vector
            .inputs
            .iter()
            .map(|input| PlanInput {
                id: OutputId {
                    txid: TransactionId::from_slice(&unhex(&input.txid)).unwrap(),
                    vout: input.vout,
                },
                kind: match input.kind.as_str() {
                    "external" => OutputKind::External,
                    "branch" => OutputKind::Branch,
                    "change" => OutputKind::Change,
                    other => panic!("unknown kind {other}"),
                },
                amount: Amount::from_sat(input.amount).unwrap(),
            })
            .collect(),
        payments: vector
            .payments
            .iter()
            .map(|payment| Payment {
                address: PaymentAddress::from_bytes(&unhex(&payment.script)).unwrap(),
                data: payment.data.as_deref().map(unhex),
                amount: Amount::from_sat(payment.amount).unwrap(),
            })
            .collect(),
        change: vector.change.as_deref().map(key),
        fee_rate: FeeRate(vector.fee_rate),
        replaces: vector.replaces.as_ref().map(|replaces| Replaces {
            plan: PlanId::from_slice(&unhex(&replaces.plan)).unwrap(),
            fee_rate: FeeRate(replaces.fee_rate),
        }),
    }
}

#[test]
fn plan_ids_match_the_vectors() {
    let vectors: Vec<PlanVector> =
        serde_json::from_str(include_str!("vectors/plan_ids.json")).unwrap();
    assert!(vectors.len() >= 4);
    for vector in &vectors {
        let plan = plan_of(vector);
        assert_eq!(hex::encode(plan.id().0), vector.id, "{}", vector.name);
    }
}

#[test]
fn plan_ids_ignore_input_kinds_and_amounts_but_nothing_else() {
    let vectors: Vec<PlanVector> =
        serde_json::from_str(include_str!("vectors/plan_ids.json")).unwrap();
    let plan = plan_of(&vectors[3]);
    let id = plan.id();

    let mut same = plan.clone();
    same.inputs[0].kind = OutputKind::External;
    same.inputs[0].amount = Amount::from_sat(1).unwrap();
    assert_eq!(same.id(), id);

    let mut changes: Vec<Plan> = Vec::new();
    let mut p = plan.clone();
    p.key = key(&vectors[0].key);
    changes.push(p);
    let mut p = plan.clone();
    p.inputs[0].id.vout += 1;
    changes.push(p);
    let mut p = plan.clone();
    p.inputs.swap(0, 1);
    changes.push(p);
    let mut p = plan.clone();
    p.payments[0].amount = Amount::from_sat(1_000_001).unwrap();
    changes.push(p);
    let mut p = plan.clone();
    p.payments[0].data = None;
    changes.push(p);
    let mut p = plan.clone();
    p.payments.pop();
    changes.push(p);
    let mut p = plan.clone();
    p.change = None;
    changes.push(p);
    let mut p = plan.clone();
    p.fee_rate = FeeRate(plan.fee_rate.0 - 1);
    changes.push(p);
    // The replacement link, and each of its fields.
    let replacement = plan.replaced_at(FeeRate(plan.fee_rate.0 - 1));
    let mut p = replacement.clone();
    p.replaces = p.replaces.map(|replaces| Replaces {
        fee_rate: FeeRate(replaces.fee_rate.0 - 1),
        ..replaces
    });
    assert_eq!(replacement.original().id(), id);
    changes.extend([plan.replaced_at(plan.fee_rate), replacement.clone(), p]);
    let mut p = replacement;
    p.replaces = p.replaces.map(|replaces| Replaces {
        plan: PlanId([0; 32]),
        ..replaces
    });
    changes.push(p);
    for changed in changes {
        assert_ne!(changed.id(), id, "{changed:?}");
    }
}

#[derive(Deserialize)]
struct InstructionVector {
    to: String,
    amount: u64,
}

#[derive(Deserialize)]
struct BatchVector {
    name: String,
    network: u8,
    id: u32,
    block: String,
    instructions: Vec<InstructionVector>,
    message: String,
}

#[test]
fn batch_messages_match_the_vectors() {
    let vectors: Vec<BatchVector> =
        serde_json::from_str(include_str!("vectors/batch_messages.json")).unwrap();
    assert!(vectors.len() >= 2);
    for vector in vectors {
        let batch = Batch {
            network: NetworkId::from_code(vector.network).unwrap(),
            id: BatchId(vector.id),
            block: BlockHash::from_slice(&unhex(&vector.block)).unwrap(),
            instructions: vector
                .instructions
                .iter()
                .map(|i| InInstructionWithBalance {
                    instruction: InInstruction::Transfer {
                        to: SeraiAddress::from_slice(&unhex(&i.to)).unwrap(),
                    },
                    amount: Amount::from_sat(i.amount).unwrap(),
                })
                .collect(),
        };
        assert_eq!(
            hex::encode(batch.message()),
            vector.message,
            "{}",
            vector.name
        );
    }
}

#[derive(Deserialize)]
struct AttestationVector {
    name: String,
    network: u8,
    key: String,
    block: u64,
    plans: Vec<String>,
    message: String,
}

#[test]
fn attestation_messages_match_the_vectors() {
    let vectors: Vec<AttestationVector> =
        serde_json::from_str(include_str!("vectors/attestations.json")).unwrap();
    assert!(vectors.len() >= 2);
    for vector in vectors {
        let plans: Vec<PlanId> = vector
            .plans
            .iter()
            .map(|p| PlanId::from_slice(&unhex(p)).unwrap())
            .collect();
        let message = PlansAcknowledged::attestation_message(
            NetworkId::from_code(vector.network).unwrap(),
            &key(&vector.key),
            SeraiBlockNumber(vector.block),
            &plans,
        );
        assert_eq!(hex::encode(message), vector.message, "{}", vector.name);
    }
}

#[derive(Deserialize)]
struct InInstructionVector {
    name: String,
    origin: Option<String>,
    to: String,
    encoding: String,
}

#[test]
fn in_instruction_encodings_match_the_vectors() {
    let vectors: Vec<InInstructionVector> =
        serde_json::from_str(include_str!("vectors/in_instructions.json")).unwrap();
    assert!(vectors.len() >= 3);
    for vector in vectors {
        let instruction = RefundableInInstruction {
            origin: vector
                .origin
                .as_deref()
                .map(|s| PaymentAddress::from_bytes(&unhex(s)).unwrap()),
            instruction: InInstruction::Transfer {
                to: SeraiAddress::from_slice(&unhex(&vector.to)).unwrap(),
            },
        };
        assert_eq!(
            hex::encode(instruction.encode()),
            vector.encoding,
            "{}",
            vector.name
        );
        assert_eq!(
            RefundableInInstruction::decode(&unhex(&vector.encoding)),
            Ok(instruction),
            "{}",
            vector.name
        );
    }
}
