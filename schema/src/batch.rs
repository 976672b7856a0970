//! Batches: the deposits of one finalized block, reported to the Serai chain under the batch
//! key's signature, and the exact bytes that signature covers.

use crate::{
    hashes::BlockHash,
    ids::{BatchId, NetworkId},
    instruction::{InInstruction, InInstructionWithBalance},
};

/// The domain tag at the front of every batch message. Changing it changes every signed batch.
pub const BATCH_MESSAGE_DOMAIN: &[u8] = b"serai-processor/batch/v1";

/// The deposits of one network block, in (transaction, output) order.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Batch {
    /// The network the deposits are on.
    pub network: NetworkId,
    /// Sequential per network.
    pub id: BatchId,
    /// The block the deposits are in.
    pub block: BlockHash,
    /// The deposits' instructions and amounts.
    pub instructions: Vec<InInstructionWithBalance>,
}

/// The signing context of batch signatures: Substrate's, so the Serai chain verifies them as
/// ordinary sr25519 signatures over `Batch::message`.
pub const BATCH_SIGNING_CONTEXT: &[u8] = b"substrate";

impl Batch {
    /// The bytes the batch key signs:
    ///
    /// ```text
    /// len(domain) as u8 || domain || network code (u8) || batch id (u32 LE) || block (32)
    /// || instruction count (u32 LE) || per instruction: kind (u8, 0 = transfer) || to (32)
    /// || amount (u64 LE)
    /// ```
    ///
    /// Canonical: each batch has exactly one message and no two batches share one (every
    /// field has a fixed size or a count in front of it). A batch with more than `u32::MAX`
    /// instructions cannot be encoded and never reaches signing (`MAX_BATCH_INSTRUCTIONS`).
    pub fn message(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.instructions.len() * 41);
        out.push(u8::try_from(BATCH_MESSAGE_DOMAIN.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(BATCH_MESSAGE_DOMAIN);
        out.push(self.network.code());
        out.extend_from_slice(&self.id.0.to_le_bytes());
        out.extend_from_slice(self.block.as_bytes());
        let count = u32::try_from(self.instructions.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&count.to_le_bytes());
        for InInstructionWithBalance {
            instruction,
            amount,
        } in &self.instructions
        {
            match instruction {
                InInstruction::Transfer { to } => {
                    out.push(0);
                    out.extend_from_slice(to.as_bytes());
                }
            }
            out.extend_from_slice(&amount.to_sat().to_le_bytes());
        }
        out
    }
}

/// A Schnorrkel (sr25519) signature by a batch key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BatchSignature(pub [u8; 64]);

/// A Batch with its signature: what `Update` carries to the chain.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SignedBatch {
    /// The batch.
    pub batch: Batch,
    /// The batch key's signature over `batch.message()`.
    pub signature: BatchSignature,
}
