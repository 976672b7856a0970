//! A finalized block's Batch: the block's deposits (External outputs) that carry a valid
//! InInstruction, in (transaction, output) order, under the next batch id. Pure.

use schema::{
    batch::Batch,
    hashes::BlockHash,
    ids::{BatchId, NetworkId},
    instruction::InInstructionWithBalance,
    plan::OutputKind,
};

use crate::outputs::ReceivedOutput;

/// The Batch of a block whose outputs are `outputs`, if it has any deposit (a block whose
/// deposits all lack valid instructions still gets one: its deposits are on record, ordered).
pub fn batch_for(
    network: NetworkId,
    id: BatchId,
    block: [u8; 32],
    outputs: &[ReceivedOutput],
) -> Option<Batch> {
    let deposits: Vec<&ReceivedOutput> = outputs
        .iter()
        .filter(|output| output.kind == OutputKind::External)
        .collect();
    if deposits.is_empty() {
        return None;
    }
    Some(Batch {
        network,
        id,
        block: BlockHash(block),
        instructions: deposits
            .iter()
            .filter_map(|output| {
                Some(InInstructionWithBalance {
                    instruction: output.instruction.as_ref()?.instruction,
                    amount: output.amount,
                })
            })
            .collect(),
    })
}
