//! Transaction signing messages.

use super::ParticipantMap;
use crate::{
    hashes::{PlanId, TransactionId},
    keys::NetworkKey,
    sign_id::PlanSignId,
};

/// Transaction signing, coordinator to processor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CoordinatorMessage {
    /// The signing set's preprocesses: produce our share.
    Preprocesses {
        /// The session.
        id: PlanSignId,
        /// Each signer's preprocess (ours included or not; the enclave checks).
        preprocesses: ParticipantMap,
    },
    /// The signing set's shares: complete the transaction and publish it.
    Shares {
        /// The session.
        id: PlanSignId,
        /// Each signer's share.
        shares: ParticipantMap,
    },
    /// Start this attempt afresh, with new nonces.
    Reattempt {
        /// The new attempt's session.
        id: PlanSignId,
    },
    /// Another validator saw the plan fulfilled by `tx`: check it on our node, stop signing.
    Completed {
        /// The plan's key.
        key: NetworkKey,
        /// The plan.
        id: PlanId,
        /// The fulfilling transaction.
        tx: TransactionId,
    },
}

/// Transaction signing, processor to coordinator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProcessorMessage {
    /// Our preprocess, for every input together.
    Preprocess {
        /// The session.
        id: PlanSignId,
        /// The preprocess.
        preprocess: Vec<u8>,
    },
    /// Our signature share, for every input together.
    Share {
        /// The session.
        id: PlanSignId,
        /// The share.
        share: Vec<u8>,
    },
    /// We completed, or saw on chain, the plan's transaction.
    Completed {
        /// The plan's key.
        key: NetworkKey,
        /// The plan.
        id: PlanId,
        /// The fulfilling transaction.
        tx: TransactionId,
    },
}
