//! Untrusted bytes never panic a decoder: arbitrary bytes, corrupted valid messages, and
//! hand-built messages that break one rule each are all answered with a typed error.

// Test code: a failed unwrap is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unwrap_in_result
)]

use capnp::{message, serialize};
use proptest::prelude::*;
use schema::{
    error::{DecodeError, EncodeError},
    generated::{common_capnp, messages_capnp},
    ids::{Attempt, KeyGenId, NetworkId, Participant, Session, ValidatorSet},
    instruction::RefundableInInstruction,
    limits::{MAX_BLOB_LEN, MAX_MESSAGE_BYTES, MAX_PARTICIPANTS},
    messages::{key_gen, CoordinatorEnvelope, ParticipantMap, ProcessorEnvelope},
    plan::Plan,
    strategies::{coordinator_envelope, processor_envelope},
    wire::{decode, encode},
};

/// Runs every decoder over the bytes; only a panic fails.
fn decode_with_every_decoder(bytes: &[u8]) {
    let _ = decode::<CoordinatorEnvelope>(bytes);
    let _ = decode::<ProcessorEnvelope>(bytes);
    let _ = decode::<schema::messages::CoordinatorMessage>(bytes);
    let _ = decode::<schema::messages::ProcessorMessage>(bytes);
    let _ = decode::<Plan>(bytes);
    let _ = decode::<schema::batch::SignedBatch>(bytes);
    let _ = decode::<schema::messages::coordinator::PlansAcknowledged>(bytes);
    let _ = decode::<schema::messages::coordinator::SubstrateBlockAck>(bytes);
    let _ = decode::<schema::sign_id::PlanSignId>(bytes);
    let _ = decode::<schema::sign_id::BatchSignId>(bytes);
    let _ = RefundableInInstruction::decode(bytes);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        decode_with_every_decoder(&bytes);
    }

    #[test]
    fn framed_arbitrary_words_never_panic(words in prop::collection::vec(any::<u64>(), 1..64)) {
        // A valid one-segment frame around arbitrary content reaches the pointer decoder.
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.extend_from_slice(&u32::try_from(words.len()).unwrap().to_le_bytes());
        for word in &words {
            bytes.extend_from_slice(&word.to_le_bytes());
        }
        decode_with_every_decoder(&bytes);
    }
}

proptest! {
    #[test]
    fn corrupted_messages_never_panic(
        envelope in coordinator_envelope(),
        other in processor_envelope(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        for mut bytes in [encode(&envelope).unwrap(), encode(&other).unwrap()] {
            let truncated = bytes[..cut.index(bytes.len())].to_vec();
            decode_with_every_decoder(&truncated);
            for (index, byte) in &flips {
                let at = index.index(bytes.len());
                bytes[at] ^= byte | 1;
            }
            decode_with_every_decoder(&bytes);
        }
    }
}

fn key_gen_id() -> KeyGenId {
    KeyGenId {
        set: ValidatorSet {
            session: Session(0),
            network: NetworkId::Bitcoin,
        },
        attempt: Attempt(0),
    }
}

/// A `KeyGenToProcessor::commitments` message with the given raw entries.
fn raw_commitments(entries: &[(u16, usize)]) -> Vec<u8> {
    let mut builder = message::Builder::new_default();
    let root = builder.init_root::<messages_capnp::key_gen_to_processor::Builder>();
    let mut group = root.init_commitments();
    let mut id = group.reborrow().init_id();
    id.set_attempt(1);
    id.init_set().set_network(common_capnp::NetworkId::Bitcoin);
    let mut list = group.init_commitments(u32::try_from(entries.len()).unwrap());
    for (index, (participant, len)) in entries.iter().enumerate() {
        let mut entry = list.reborrow().get(u32::try_from(index).unwrap());
        entry.set_participant(*participant);
        entry.set_data(&vec![7u8; *len]);
    }
    serialize::write_message_to_words(&builder)
}

#[test]
fn participant_maps_are_checked() {
    type M = key_gen::CoordinatorMessage;
    assert!(decode::<M>(&raw_commitments(&[(1, 3), (2, 3)])).is_ok());
    assert_eq!(
        decode::<M>(&raw_commitments(&[(1, 3), (1, 3)])),
        Err(DecodeError::DuplicateParticipant(1))
    );
    assert!(matches!(
        decode::<M>(&raw_commitments(&[(2, 3), (1, 3)])),
        Err(DecodeError::Invalid(_))
    ));
    assert!(matches!(
        decode::<M>(&raw_commitments(&[(0, 3)])),
        Err(DecodeError::Invalid(_))
    ));
    assert!(matches!(
        decode::<M>(&raw_commitments(&[(1, MAX_BLOB_LEN + 1)])),
        Err(DecodeError::TooLong {
            what: "participant data",
            ..
        })
    ));
    let too_many: Vec<(u16, usize)> = (1..=u16::try_from(MAX_PARTICIPANTS + 1).unwrap())
        .map(|p| (p, 1))
        .collect();
    assert!(matches!(
        decode::<M>(&raw_commitments(&too_many)),
        Err(DecodeError::TooLong {
            what: "participant map",
            ..
        })
    ));
}

#[test]
fn encoders_refuse_what_decoders_refuse() {
    let oversized: ParticipantMap = (1..=u16::try_from(MAX_PARTICIPANTS + 1).unwrap())
        .map(|p| (Participant::new(p).unwrap(), vec![1]))
        .collect();
    let message = key_gen::CoordinatorMessage::Commitments {
        id: key_gen_id(),
        commitments: oversized,
    };
    assert!(matches!(encode(&message), Err(EncodeError::TooLong { .. })));

    let blob = key_gen::ProcessorMessage::Commitments {
        id: key_gen_id(),
        commitments: vec![0; MAX_BLOB_LEN + 1],
    };
    assert!(matches!(encode(&blob), Err(EncodeError::TooLong { .. })));
}

#[test]
fn unknown_union_and_enum_values_are_errors() {
    // Discriminant 9 of CoordinatorMessage's union does not exist. The frame is the segment
    // table (8 bytes), the root pointer (8 bytes), then the root's data section, whose first
    // u16 is the union discriminant.
    let mut builder = message::Builder::new_default();
    builder
        .init_root::<messages_capnp::coordinator_message::Builder>()
        .init_sign()
        .init_reattempt();
    let mut bytes = serialize::write_message_to_words(&builder);
    assert_eq!(bytes[16], 1, "sign is discriminant 1");
    assert!(decode::<schema::messages::CoordinatorMessage>(&bytes).is_err());
    bytes[16] = 9;
    assert!(matches!(
        decode::<schema::messages::CoordinatorMessage>(&bytes),
        Err(DecodeError::UnknownVariant { value: 9, .. })
    ));

    // Network 200 does not exist.
    let mut builder = message::Builder::new_default();
    let mut root = builder.init_root::<common_capnp::validator_set::Builder>();
    root.set_session(1);
    root.set_network(common_capnp::NetworkId::Monero);
    let mut bytes = serialize::write_message_to_words(&builder);
    let at = bytes.len() - 4; // the data word: session (u32), then network (u16)
    assert_eq!(bytes[at], 3);
    bytes[at] = 200;
    assert!(matches!(
        decode::<ValidatorSet>(&bytes),
        Err(DecodeError::UnknownVariant { value: 200, .. })
    ));
}

#[test]
fn wrong_lengths_and_missing_fields_are_errors() {
    // A plan whose key is 32 bytes.
    let mut builder = message::Builder::new_default();
    let mut root = builder.init_root::<common_capnp::plan::Builder>();
    root.set_key(&[2u8; 32]);
    let bytes = serialize::write_message_to_words(&builder);
    assert!(matches!(
        decode::<Plan>(&bytes),
        Err(DecodeError::WrongLength {
            what: "network key",
            expected: 33,
            actual: 32
        })
    ));

    // An envelope without its message.
    let mut builder = message::Builder::new_default();
    builder
        .init_root::<messages_capnp::coordinator_envelope::Builder>()
        .set_id(1);
    let bytes = serialize::write_message_to_words(&builder);
    assert_eq!(
        decode::<CoordinatorEnvelope>(&bytes),
        Err(DecodeError::Missing("envelope message"))
    );
}

#[test]
fn oversized_and_trailing_input_is_refused() {
    let huge = vec![0u8; MAX_MESSAGE_BYTES + 1];
    assert!(matches!(
        decode::<CoordinatorEnvelope>(&huge),
        Err(DecodeError::MessageTooLarge { .. })
    ));

    let mut builder = message::Builder::new_default();
    builder
        .init_root::<common_capnp::validator_set::Builder>()
        .set_session(1);
    let mut bytes = serialize::write_message_to_words(&builder);
    bytes.extend_from_slice(&[0; 8]);
    assert_eq!(
        decode::<ValidatorSet>(&bytes),
        Err(DecodeError::TrailingBytes(8))
    );
}

#[test]
fn a_segment_table_claiming_huge_segments_is_refused_without_allocating() {
    // One segment claiming 2^31 words: more than the traversal limit allows.
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&0u32.to_le_bytes());
    bytes.extend_from_slice(&(1u32 << 31).to_le_bytes());
    bytes.extend_from_slice(&[0; 64]);
    assert!(matches!(
        decode::<CoordinatorEnvelope>(&bytes),
        Err(DecodeError::Capnp(_))
    ));
}
