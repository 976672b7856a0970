//! A finalized block's Batches: the block's deposits (External outputs) that carry a valid
//! InInstruction, in (transaction, output) order, under consecutive batch ids. Pure.
//!
//! Every block holding any of our outputs (External, Branch or Change) is reported, with an
//! empty Batch when none of them is a deposit with a valid instruction: Serai acknowledges
//! blocks through their Batches, and the change and branch outputs of a payout must be
//! acknowledged (and so spendable) without waiting for an unrelated deposit. A block with more
//! deposits than one Batch holds (`MAX_BATCH_INSTRUCTIONS`, what Serai accepts) is reported in
//! as many Batches as it takes, in order. A block whose height is a multiple of
//! `EMPTY_BATCH_INTERVAL` gets an empty Batch too, so that in a quiet period Serai still
//! acknowledges new blocks (whose fee rates the plans follow).

use schema::{
    batch::Batch,
    hashes::BlockHash,
    ids::{BatchId, NetworkId},
    instruction::InInstructionWithBalance,
    limits::MAX_BATCH_INSTRUCTIONS,
    plan::OutputKind,
};

use crate::scan::outputs::ReceivedOutput;

/// The Batches of a block whose outputs are `outputs`, the first under `first`; none for a
/// block without any of our outputs, unless a Batch is `due` for it anyway.
pub fn batches_for(
    network: NetworkId,
    first: BatchId,
    block: [u8; 32],
    outputs: &[ReceivedOutput],
    due: bool,
) -> Vec<Batch> {
    if outputs.is_empty() && !due {
        return Vec::new();
    }
    let instructions: Vec<InInstructionWithBalance> = outputs
        .iter()
        .filter(|output| output.kind == OutputKind::External)
        .filter_map(|output| {
            Some(InInstructionWithBalance {
                instruction: output.instruction.as_ref()?.instruction,
                amount: output.amount,
            })
        })
        .collect();
    let mut chunks: Vec<Vec<InInstructionWithBalance>> = instructions
        .chunks(MAX_BATCH_INSTRUCTIONS)
        .map(<[InInstructionWithBalance]>::to_vec)
        .collect();
    if chunks.is_empty() {
        chunks.push(Vec::new());
    }
    (first.0..)
        .zip(chunks)
        .map(|(id, instructions)| Batch {
            network,
            id: BatchId(id),
            block: BlockHash(block),
            instructions,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use schema::{
        amount::Amount,
        hashes::{SeraiAddress, TransactionId},
        instruction::{InInstruction, RefundableInInstruction},
        keys::NetworkKey,
        plan::OutputId,
        wire,
    };

    use super::*;

    fn received(vout: u32, kind: OutputKind, instruction: bool) -> ReceivedOutput {
        ReceivedOutput {
            id: OutputId {
                txid: TransactionId([1; 32]),
                vout,
            },
            key: NetworkKey::from(
                bitcoin::secp256k1::SecretKey::from_slice(&[7; 32])
                    .unwrap()
                    .public_key(&bitcoin::secp256k1::Secp256k1::new()),
            ),
            kind,
            amount: Amount::from_sat(50_000 + u64::from(vout)).unwrap(),
            instruction: instruction.then_some(RefundableInInstruction {
                origin: None,
                instruction: InInstruction::Transfer {
                    to: SeraiAddress([3; 32]),
                },
            }),
            refund: None,
        }
    }

    #[test]
    fn a_block_without_our_outputs_has_no_batch() {
        assert!(batches_for(NetworkId::Bitcoin, BatchId(4), [9; 32], &[], false).is_empty());
        // Unless one is due: an empty Batch.
        let due = batches_for(NetworkId::Bitcoin, BatchId(4), [9; 32], &[], true);
        assert_eq!(due.len(), 1);
        assert!(due[0].instructions.is_empty());
    }

    #[test]
    fn change_branch_and_invalid_deposits_get_an_empty_batch() {
        for kind in [OutputKind::Change, OutputKind::Branch, OutputKind::External] {
            let batches = batches_for(
                NetworkId::Bitcoin,
                BatchId(4),
                [9; 32],
                &[received(0, kind, false)],
                false,
            );
            assert_eq!(batches.len(), 1, "{kind:?}");
            assert_eq!(batches[0].id, BatchId(4));
            assert!(batches[0].instructions.is_empty());
        }
    }

    #[test]
    fn more_deposits_than_one_batch_holds_fill_consecutive_batches_serai_accepts() {
        let count = u32::try_from(2 * MAX_BATCH_INSTRUCTIONS + 1).unwrap();
        let outputs: Vec<ReceivedOutput> = (0..count)
            .map(|vout| received(vout, OutputKind::External, true))
            .collect();
        let batches = batches_for(NetworkId::Bitcoin, BatchId(7), [9; 32], &outputs, false);
        assert_eq!(
            batches.iter().map(|batch| batch.id).collect::<Vec<_>>(),
            vec![BatchId(7), BatchId(8), BatchId(9)]
        );
        assert_eq!(
            batches
                .iter()
                .map(|batch| batch.instructions.len())
                .collect::<Vec<_>>(),
            vec![MAX_BATCH_INSTRUCTIONS, MAX_BATCH_INSTRUCTIONS, 1]
        );
        // In order, and every Batch encodes within the wire's limits.
        let amounts: Vec<u64> = batches
            .iter()
            .flat_map(|batch| &batch.instructions)
            .map(|instruction| instruction.amount.to_sat())
            .collect();
        assert_eq!(
            amounts,
            (0..u64::from(count))
                .map(|v| 50_000 + v)
                .collect::<Vec<_>>()
        );
        for batch in &batches {
            assert_eq!(
                wire::decode::<Batch>(&wire::encode(batch).unwrap()).unwrap(),
                *batch
            );
        }
    }
}
