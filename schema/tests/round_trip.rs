//! Every type with a Cap'n Proto struct survives encode -> decode unchanged, and re-encoding the
//! decoded value gives the same bytes (the encoding is canonical).

// Test code: a failed unwrap is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unwrap_in_result
)]

use proptest::prelude::*;
use schema::{
    instruction::RefundableInInstruction,
    limits::MAX_IN_INSTRUCTION_LEN,
    strategies::*,
    wire::{decode, encode, Wire},
};

fn round_trips<T: Wire + PartialEq + core::fmt::Debug>(value: &T) -> Result<(), TestCaseError> {
    let bytes = encode(value).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let decoded: T = decode(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&decoded, value);
    prop_assert_eq!(
        encode(&decoded).map_err(|e| TestCaseError::fail(e.to_string()))?,
        bytes
    );
    Ok(())
}

macro_rules! round_trip_tests {
    ($($name:ident: $strategy:expr;)*) => {
        proptest! {
            $(
                #[test]
                fn $name(value in $strategy) {
                    round_trips(&value)?;
                }
            )*
        }
    };
}

round_trip_tests! {
    validator_set_round_trips: validator_set();
    key_gen_id_round_trips: key_gen_id();
    threshold_params_round_trip: threshold_params();
    plan_sign_id_round_trips: plan_sign_id();
    batch_sign_id_round_trips: batch_sign_id();
    substrate_context_round_trips: substrate_context();
    key_pair_round_trips: key_pair();
    out_instruction_round_trips: out_instruction();
    in_instruction_with_balance_round_trips: in_instruction_with_balance();
    batch_round_trips: batch();
    signed_batch_round_trips: signed_batch();
    output_id_round_trips: output_id();
    plan_input_round_trips: plan_input();
    payment_round_trips: payment();
    plan_round_trips: plan();
    plans_acknowledged_round_trips: plans_acknowledged();
    substrate_block_ack_round_trips: substrate_block_ack();
    key_gen_coordinator_message_round_trips: key_gen_coordinator_message();
    key_gen_processor_message_round_trips: key_gen_processor_message();
    sign_coordinator_message_round_trips: sign_coordinator_message();
    sign_processor_message_round_trips: sign_processor_message();
    coordinator_coordinator_message_round_trips: coordinator_coordinator_message();
    coordinator_processor_message_round_trips: coordinator_processor_message();
    substrate_coordinator_message_round_trips: substrate_coordinator_message();
    substrate_processor_message_round_trips: substrate_processor_message();
    coordinator_message_round_trips: coordinator_message();
    processor_message_round_trips: processor_message();
    coordinator_envelope_round_trips: coordinator_envelope();
    processor_envelope_round_trips: processor_envelope();
}

proptest! {
    #[test]
    fn in_instructions_round_trip_within_80_bytes(value in refundable_in_instruction()) {
        let bytes = value.encode();
        prop_assert!(bytes.len() <= MAX_IN_INSTRUCTION_LEN);
        prop_assert_eq!(RefundableInInstruction::decode(&bytes), Ok(value));
    }

    #[test]
    fn plan_ids_survive_the_wire(plan in plan()) {
        let bytes = encode(&plan).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let decoded: schema::plan::Plan =
            decode(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(decoded.id(), plan.id());
    }
}

/// The largest messages the limits allow, built for real: the fullest Serai block (every burn
/// with the longest address and data) and a signing round of every participant's largest
/// blob both encode within `MAX_MESSAGE_BYTES` and decode back.
#[test]
fn the_largest_messages_the_limits_allow_fit_and_round_trip() {
    use schema::{
        hashes::{BlockHash, PlanId},
        ids::{Attempt, MessageId, Participant, SeraiBlockNumber, SeraiTime},
        keys::NetworkKey,
        limits::{MAX_BLOB_LEN, MAX_MESSAGE_BYTES, MAX_PARTICIPANTS},
        messages::{
            sign,
            substrate::{self, SubstrateContext},
            CoordinatorEnvelope, CoordinatorMessage, ParticipantMap,
        },
        sign_id::PlanSignId,
    };
    let key = NetworkKey::from_slice(
        &hex::decode("0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798").unwrap(),
    )
    .unwrap();
    let fullest = CoordinatorEnvelope {
        id: MessageId(u64::MAX),
        message: CoordinatorMessage::Substrate(substrate::CoordinatorMessage::SubstrateBlock {
            context: SubstrateContext {
                serai_time: SeraiTime(u64::MAX),
                network_latest_finalized_block: BlockHash([0xff; 32]),
            },
            block: SeraiBlockNumber(u64::MAX),
            key,
            burns: fullest_burns(),
        }),
    };
    let bytes = encode(&fullest).unwrap();
    assert!(bytes.len() <= MAX_MESSAGE_BYTES, "{} bytes", bytes.len());
    assert_eq!(decode::<CoordinatorEnvelope>(&bytes).unwrap(), fullest);

    let round: ParticipantMap = (1..=u16::try_from(MAX_PARTICIPANTS).unwrap())
        .map(|i| (Participant::new(i).unwrap(), vec![0xcc; MAX_BLOB_LEN]))
        .collect();
    let largest_round = CoordinatorEnvelope {
        id: MessageId(1),
        message: CoordinatorMessage::Sign(sign::CoordinatorMessage::Preprocesses {
            id: PlanSignId {
                key,
                id: PlanId([9; 32]),
                attempt: Attempt(u32::MAX),
            },
            preprocesses: round,
        }),
    };
    let bytes = encode(&largest_round).unwrap();
    assert!(bytes.len() <= MAX_MESSAGE_BYTES, "{} bytes", bytes.len());
    assert_eq!(
        decode::<CoordinatorEnvelope>(&bytes).unwrap(),
        largest_round
    );
}
