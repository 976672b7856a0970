//! Every message between the coordinator and a processor (PROTOCOL.md sections 2 and 3),
//! grouped as the protocol groups them, and the envelopes that number them.
//!
//! These are plain values; `crate::wire` turns them into Cap'n Proto bytes and back.

pub mod coordinator;
pub mod key_gen;
pub mod sign;
pub mod substrate;

use std::collections::BTreeMap;

use crate::ids::{MessageId, Participant};

/// One blob per participant: commitments, shares, preprocesses. Sorted by participant on the
/// wire; a participant appears at most once.
pub type ParticipantMap = BTreeMap<Participant, Vec<u8>>;

/// A message from the coordinator to a processor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CoordinatorMessage {
    /// Key generation.
    KeyGen(key_gen::CoordinatorMessage),
    /// Transaction signing.
    Sign(sign::CoordinatorMessage),
    /// Batch signing and plan acknowledgement.
    Coordinator(coordinator::CoordinatorMessage),
    /// Events of the Serai chain.
    Substrate(substrate::CoordinatorMessage),
}

/// A message from a processor to the coordinator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProcessorMessage {
    /// Key generation.
    KeyGen(key_gen::ProcessorMessage),
    /// Transaction signing.
    Sign(sign::ProcessorMessage),
    /// Batch signing and plan reporting.
    Coordinator(coordinator::ProcessorMessage),
    /// Updates for the Serai chain.
    Substrate(substrate::ProcessorMessage),
}

/// A coordinator message with its id. Ids increase strictly; the processor acks an id only
/// once the message's effects are durable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoordinatorEnvelope {
    /// The message's position in this processor's inbox.
    pub id: MessageId,
    /// The message.
    pub message: CoordinatorMessage,
}

/// A processor message with its outbox position, by which the coordinator drops duplicates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessorEnvelope {
    /// The message's position in this processor's outbox.
    pub id: MessageId,
    /// The message.
    pub message: ProcessorMessage,
}
