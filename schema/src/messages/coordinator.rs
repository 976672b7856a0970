//! Batch signing and the acknowledgement of plans.

use super::ParticipantMap;
use crate::{
    hashes::{BlockHash, PlanId},
    ids::{BatchId, NetworkId, SeraiBlockNumber},
    keys::NetworkKey,
    sign_id::BatchSignId,
    transcript::Transcript,
};

/// The transcript tag of plan attestations. Changing it invalidates every attestation.
pub const ATTESTATION_TAG: &str = "serai-processor/plans-acknowledged/v1";

/// A BIP340 Schnorr signature by the coordinator's attestation key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Attestation(pub [u8; 64]);

/// The validator set recognized exactly these plan ids for Serai block `block`. The only
/// message that makes a plan signable, and only if its attestation verifies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlansAcknowledged {
    /// The Serai block the plans were made for.
    pub block: SeraiBlockNumber,
    /// The key the plans spend from.
    pub key: NetworkKey,
    /// The acknowledged plan ids.
    pub plans: Vec<PlanId>,
    /// The coordinator's signature over `attestation_message`.
    pub attestation: Attestation,
}

impl PlansAcknowledged {
    /// The 32-byte message the attestation signs (BIP340 over these bytes): the tagged hash
    /// (`ATTESTATION_TAG`) of a transcript of the network code, the key, the Serai block
    /// number (u64 LE), the plan count (u64 LE) and each plan id. The network is the
    /// processor's own, so an attestation for one network never serves another.
    pub fn attestation_message(
        network: NetworkId,
        key: &NetworkKey,
        block: SeraiBlockNumber,
        plans: &[PlanId],
    ) -> [u8; 32] {
        let mut transcript = Transcript::new(ATTESTATION_TAG);
        transcript.append("network", &[network.code()]);
        transcript.append("key", &key.to_bytes());
        transcript.append("block", &block.0.to_le_bytes());
        transcript.append("plans", &(plans.len() as u64).to_le_bytes());
        for plan in plans {
            transcript.append("plan", plan.as_bytes());
        }
        transcript.finish()
    }
}

/// Every plan created for a Serai block, sent before any of them is signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubstrateBlockAck {
    /// The Serai block.
    pub block: SeraiBlockNumber,
    /// The key the plans spend from.
    pub key: NetworkKey,
    /// The plan ids, in creation order.
    pub plans: Vec<PlanId>,
}

/// Batch signing and plan acknowledgement, coordinator to processor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CoordinatorMessage {
    /// The signing set's batch preprocesses: produce our share.
    BatchPreprocesses {
        /// The session.
        id: BatchSignId,
        /// Each signer's preprocess.
        preprocesses: ParticipantMap,
    },
    /// The signing set's batch shares: complete and emit `Update`.
    BatchShares {
        /// The session.
        id: BatchSignId,
        /// Each signer's share.
        shares: ParticipantMap,
    },
    /// Start this batch attempt afresh.
    BatchReattempt {
        /// The new attempt's session.
        id: BatchSignId,
    },
    /// Plans the set recognized.
    PlansAcknowledged(PlansAcknowledged),
}

/// Batch signing and plan reporting, processor to coordinator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProcessorMessage {
    /// Our preprocess for a batch.
    BatchPreprocess {
        /// The session.
        id: BatchSignId,
        /// The block the batch reports.
        block: BlockHash,
        /// The batch's id.
        batch_id: BatchId,
        /// The preprocess.
        preprocess: Vec<u8>,
    },
    /// Our share for a batch.
    BatchShare {
        /// The session.
        id: BatchSignId,
        /// The share.
        share: Vec<u8>,
    },
    /// Every plan created for a Serai block.
    SubstrateBlockAck(SubstrateBlockAck),
}
