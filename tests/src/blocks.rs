//! Blocks for benchmarks: mainnet-sized blocks generated for a seed, and files of real blocks
//! (each a little-endian u32 length, then the consensus-encoded block).

use bitcoin::secp256k1::SecretKey;
use bitcoin::{
    absolute::LockTime,
    block::{Header, Version},
    hashes::Hash,
    script::PushBytesBuf,
    transaction, Amount, Block, BlockHash, CompactTarget, OutPoint, ScriptBuf, Sequence,
    Transaction, TxIn, TxMerkleNode, TxOut, Txid, Witness,
};
use schema::{
    hashes::SeraiAddress,
    instruction::{InInstruction, RefundableInInstruction},
    keys::NetworkKey,
};

use crate::HarnessError;

/// The network key the benchmarks' blocks pay: our key, as the scanner is given it.
///
/// # Errors
/// None in practice: the secret is a valid scalar.
pub fn bench_key() -> Result<NetworkKey, bitcoin::secp256k1::Error> {
    let secp = bitcoin::secp256k1::Secp256k1::new();
    let secret = SecretKey::from_slice(&[0x21; 32])?;
    Ok(NetworkKey::from(secret.public_key(&secp)))
}

/// A deposit's data: a valid InInstruction, pushed in one `OP_RETURN` push (far below the 520
/// bytes one push may hold).
pub fn deposit_data() -> PushBytesBuf {
    PushBytesBuf::try_from(
        RefundableInInstruction {
            origin: None,
            instruction: InInstruction::Transfer {
                to: SeraiAddress([7; 32]),
            },
        }
        .encode(),
    )
    .unwrap_or_default()
}

/// The transaction id a generated block's `index`th transaction spends from.
fn spent_txid(seed: u32, index: u32) -> [u8; 32] {
    let mut txid = [0; 32];
    for (chunk, byte) in txid.chunks_mut(4).zip(0u8..) {
        let word = if byte % 2 == 0 {
            (index % 251).to_le_bytes()
        } else {
            seed.to_le_bytes()
        };
        chunk.copy_from_slice(&word);
    }
    txid
}

/// A mainnet-sized block (3,000 transactions of two inputs and two outputs each, about 1.15
/// MB), different for each `seed`; one transaction in a hundred pays `ours` and carries a
/// valid InInstruction. Not a valid block (its inputs spend nothing): for timing and memory.
pub fn mainnet_sized_block(seed: u32, ours: &ScriptBuf) -> Block {
    let data = deposit_data();
    let txdata: Vec<Transaction> = (0u32..3000)
        .map(|index| {
            let input = |vout| TxIn {
                previous_output: OutPoint {
                    txid: Txid::from_byte_array(spent_txid(seed, index)),
                    vout,
                },
                script_sig: ScriptBuf::new(),
                sequence: Sequence::MAX,
                witness: Witness::from_slice(&[vec![0x30; 72], vec![0x02; 33]]),
            };
            let mut output = vec![
                TxOut {
                    value: Amount::from_sat(50_000 + u64::from(index)),
                    script_pubkey: ScriptBuf::from_bytes(
                        [&[0x00, 0x14][..], &[index.to_le_bytes()[0]; 20]].concat(),
                    ),
                },
                TxOut {
                    value: Amount::from_sat(70_000),
                    script_pubkey: ScriptBuf::from_bytes(
                        [&[0x51, 0x20][..], &[index.to_le_bytes()[1]; 32]].concat(),
                    ),
                },
            ];
            // One transaction in a hundred is a deposit to us, with its instruction.
            if index % 100 == 0 {
                output[1].script_pubkey = ours.clone();
                output.push(TxOut {
                    value: Amount::ZERO,
                    script_pubkey: ScriptBuf::new_op_return(&data),
                });
            }
            Transaction {
                version: transaction::Version::TWO,
                lock_time: LockTime::from_consensus(seed),
                input: vec![input(0), input(1)],
                output,
            }
        })
        .collect();
    Block {
        header: Header {
            version: Version::TWO,
            prev_blockhash: BlockHash::from_byte_array([seed.to_le_bytes()[0]; 32]),
            merkle_root: TxMerkleNode::all_zeros(),
            time: seed,
            bits: CompactTarget::from_consensus(0x207f_ffff),
            nonce: 0,
        },
        txdata,
    }
}

/// The blocks of a file of blocks, each as its consensus bytes.
///
/// # Errors
/// A block is cut short.
pub fn split_blocks(file: &[u8]) -> Result<Vec<Vec<u8>>, HarnessError> {
    let mut rest = file;
    let mut blocks = Vec::new();
    while !rest.is_empty() {
        let Some((length, after)) = rest.split_first_chunk::<4>() else {
            return Err(HarnessError::Failed("a block's length is cut short".into()));
        };
        let length = usize::try_from(u32::from_le_bytes(*length))
            .map_err(|error| HarnessError::Failed(error.to_string()))?;
        if after.len() < length {
            return Err(HarnessError::Failed(format!(
                "block {} is cut short",
                blocks.len()
            )));
        }
        let (block, after) = after.split_at(length);
        blocks.push(block.to_vec());
        rest = after;
    }
    Ok(blocks)
}
