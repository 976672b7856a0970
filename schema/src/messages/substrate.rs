//! Events of the Serai chain, and updates for it.

use bitcoin::hashes::{sha256, Hash};

use super::coordinator::Attestation;
use crate::{
    batch::{Batch, SignedBatch},
    hashes::BlockHash,
    ids::{SeraiBlockNumber, SeraiTime, ValidatorSet},
    instruction::OutInstructionWithBalance,
    keys::{KeyPair, NetworkKey},
    transcript::Transcript,
};

/// The transcript tag of the coordinator's attestations that Serai included a Batch.
pub const INCLUSION_TAG: &str = "serai-processor/batch-included/v1";

/// The 32 bytes the coordinator's attestation key signs (BIP340) to say Serai included
/// `batch`: the transcript (`INCLUSION_TAG`) of the network code, the batch id (u32 LE) and the
/// SHA-256 of `Batch::message`.
pub fn inclusion_message(batch: &Batch) -> [u8; 32] {
    let mut transcript = Transcript::new(INCLUSION_TAG);
    transcript.append("network", &[batch.network.code()]);
    transcript.append("batch", &batch.id.0.to_le_bytes());
    transcript.append(
        "message",
        sha256::Hash::hash(&batch.message()).as_byte_array(),
    );
    transcript.finish()
}

/// What the Serai chain knew when it produced a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SubstrateContext {
    /// The Serai block's time.
    pub serai_time: SeraiTime,
    /// The latest network block Serai has acknowledged, all zeroes for none.
    pub network_latest_finalized_block: BlockHash,
}

impl SubstrateContext {
    /// The latest acknowledged network block, if Serai acknowledged any.
    pub fn latest_finalized_block(&self) -> Option<BlockHash> {
        (self.network_latest_finalized_block != BlockHash([0; 32]))
            .then_some(self.network_latest_finalized_block)
    }
}

/// Serai chain events, coordinator to processor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CoordinatorMessage {
    /// The chain voted our generated key pair in: activate it.
    ConfirmKeyPair {
        /// When.
        context: SubstrateContext,
        /// Whose keys.
        set: ValidatorSet,
        /// The keys.
        key_pair: KeyPair,
    },
    /// A Serai block: acknowledge network blocks up to `context`'s, schedule its burns.
    SubstrateBlock {
        /// What the chain acknowledged.
        context: SubstrateContext,
        /// The Serai block's number.
        block: SeraiBlockNumber,
        /// The network key the burns are paid from.
        key: NetworkKey,
        /// The burns, in chain order.
        burns: Vec<OutInstructionWithBalance>,
    },
    /// Serai included this Batch, the newest of the network it included, as the coordinator
    /// attests: the evidence that lets the enclave preprocess new Batches past it.
    BatchIncluded {
        /// The batch and its signature.
        batch: SignedBatch,
        /// The coordinator's signature over `inclusion_message(&batch.batch)`.
        attestation: Attestation,
    },
}

/// Updates for the Serai chain, processor to coordinator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProcessorMessage {
    /// A signed Batch for the chain to include.
    Update {
        /// The batch and its signature.
        batch: SignedBatch,
    },
}
