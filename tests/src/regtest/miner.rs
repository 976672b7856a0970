//! Regtest blocks as Bitcoin Core's miner makes them, built with the `bitcoin` crate: a coinbase
//! with the BIP34 height, the subsidy plus fees to a chosen script, and the BIP141 witness
//! commitment; the chosen transactions; the regtest target; a ground nonce. Pure: whether the
//! block is valid is the kernel's to say.

use bitcoin::{
    absolute::LockTime,
    block::{Header, Version},
    blockdata::{opcodes::all::OP_RETURN, script::Builder},
    hashes::Hash,
    transaction, Amount, Block, BlockHash, CompactTarget, OutPoint, ScriptBuf, Sequence,
    Transaction, TxIn, TxMerkleNode, TxOut, Witness,
};

/// Regtest's proof-of-work limit (`powLimit` as nBits): about every other nonce meets it.
pub const REGTEST_BITS: u32 = 0x207f_ffff;
/// Blocks between subsidy halvings on regtest.
pub const HALVING_INTERVAL: u32 = 150;
/// Confirmations before a coinbase output may be spent.
pub const COINBASE_MATURITY: u32 = 100;

/// The block subsidy at `height`.
pub fn subsidy(height: u32) -> Amount {
    let halvings = height / HALVING_INTERVAL;
    if halvings >= 64 {
        return Amount::ZERO;
    }
    Amount::from_sat((50 * 100_000_000) >> halvings)
}

/// What a new block is built from.
pub struct Template {
    /// The block it extends.
    pub parent: BlockHash,
    /// Its height.
    pub height: u32,
    /// Its time (the caller keeps it above the median time past).
    pub time: u32,
    /// Where the subsidy and fees go.
    pub payout: ScriptBuf,
    /// The fees of `transactions`.
    pub fees: Amount,
    /// The transactions after the coinbase, parents before children.
    pub transactions: Vec<Transaction>,
}

/// Builds and grinds a block.
pub fn build(template: Template) -> Block {
    let height_push = i64::from(template.height);
    let coinbase = Transaction {
        version: transaction::Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint::null(),
            // Core's miner: `CScript() << nHeight << OP_0` (BIP34, and at least two bytes).
            script_sig: Builder::new()
                .push_int(height_push)
                .push_int(0)
                .into_script(),
            sequence: Sequence::MAX,
            witness: Witness::from_slice(&[[0u8; 32]]),
        }],
        output: vec![TxOut {
            value: subsidy(template.height) + template.fees,
            script_pubkey: template.payout,
        }],
    };
    let mut block = Block {
        header: Header {
            version: Version::from_consensus(0x2000_0000),
            prev_blockhash: template.parent,
            merkle_root: TxMerkleNode::all_zeros(),
            time: template.time,
            bits: CompactTarget::from_consensus(REGTEST_BITS),
            nonce: 0,
        },
        txdata: [vec![coinbase], template.transactions].concat(),
    };
    if let Some(witness_root) = block.witness_root() {
        let commitment = Block::compute_witness_commitment(&witness_root, &[0u8; 32]);
        let mut data = [0u8; 36];
        data[..4].copy_from_slice(&[0xaa, 0x21, 0xa9, 0xed]);
        data[4..].copy_from_slice(commitment.as_byte_array());
        if let Some(coinbase) = block.txdata.first_mut() {
            coinbase.output.push(TxOut {
                value: Amount::ZERO,
                script_pubkey: Builder::new()
                    .push_opcode(OP_RETURN)
                    .push_slice(data)
                    .into_script(),
            });
        }
    }
    if let Some(root) = block.compute_merkle_root() {
        block.header.merkle_root = root;
    }
    let target = block.header.target();
    while !target.is_met_by(block.header.block_hash()) {
        block.header.nonce = block.header.nonce.wrapping_add(1);
    }
    block
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subsidy_halves_every_150_blocks() {
        assert_eq!(subsidy(0).to_sat(), 5_000_000_000);
        assert_eq!(subsidy(149).to_sat(), 5_000_000_000);
        assert_eq!(subsidy(150).to_sat(), 2_500_000_000);
        assert_eq!(subsidy(150 * 64).to_sat(), 0);
    }

    #[test]
    fn a_built_block_meets_its_target_and_commits_to_its_transactions() {
        let block = build(Template {
            parent: BlockHash::all_zeros(),
            // Heights 1 to 16 are OP_1..OP_16 (as Core encodes them), which the `bitcoin`
            // crate's BIP34 reader does not parse; the kernel accepts both.
            height: 300,
            time: 1_700_000_000,
            payout: ScriptBuf::new_op_return([1u8; 4]),
            fees: Amount::ZERO,
            transactions: Vec::new(),
        });
        assert!(block.header.target().is_met_by(block.block_hash()));
        assert!(block.check_merkle_root());
        assert!(block.check_witness_commitment());
        assert_eq!(block.bip34_block_height(), Ok(300));
        assert_eq!(block.txdata[0].output[0].value, subsidy(300));
    }
}
