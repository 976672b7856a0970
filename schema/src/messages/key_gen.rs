//! Distributed key generation messages.

use super::ParticipantMap;
use crate::{
    ids::{KeyGenId, Participant, ThresholdParams},
    keys::{BatchKey, NetworkKey},
};

/// Key generation, coordinator to processor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CoordinatorMessage {
    /// Start this attempt as participant `params.i()`.
    GenerateKey {
        /// Which attempt.
        id: KeyGenId,
        /// The threshold and our index.
        params: ThresholdParams,
    },
    /// Everyone else's round-1 broadcasts.
    Commitments {
        /// Which attempt.
        id: KeyGenId,
        /// Each other participant's commitments.
        commitments: ParticipantMap,
    },
    /// The round-2 shares addressed to us.
    Shares {
        /// Which attempt.
        id: KeyGenId,
        /// Each other participant's encrypted share for us.
        shares: ParticipantMap,
    },
}

impl CoordinatorMessage {
    /// The attempt the message belongs to.
    pub fn id(&self) -> KeyGenId {
        match self {
            CoordinatorMessage::GenerateKey { id, .. }
            | CoordinatorMessage::Commitments { id, .. }
            | CoordinatorMessage::Shares { id, .. } => *id,
        }
    }
}

/// Key generation, processor to coordinator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProcessorMessage {
    /// Our round-1 broadcast, for both keys.
    Commitments {
        /// Which attempt.
        id: KeyGenId,
        /// The enclave's encoding of both keys' commitments.
        commitments: Vec<u8>,
    },
    /// Our encrypted round-2 shares, one per other participant.
    Shares {
        /// Which attempt.
        id: KeyGenId,
        /// The share for each other participant.
        shares: ParticipantMap,
    },
    /// The DKG completed; these are the group keys the chain votes on.
    GeneratedKeyPair {
        /// Which attempt.
        id: KeyGenId,
        /// The batch group key.
        batch_key: BatchKey,
        /// The network group key.
        network_key: NetworkKey,
    },
    /// The DKG failed because of this participant.
    Blame {
        /// Which attempt.
        id: KeyGenId,
        /// Who is to blame.
        participant: Participant,
        /// The proof others can check.
        evidence: Vec<u8>,
    },
}
