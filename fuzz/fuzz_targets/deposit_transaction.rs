//! The InInstruction codec inside a real transaction, through the scanner's own path: a
//! transaction paying our deposit script and carrying the fuzzed payload in `OP_RETURN` pushes
//! (split where the first byte says), or (odd first byte) arbitrary consensus bytes as a
//! transaction, is received through the scanner's borrowed view of a block and through the
//! owned chain-neutral form, which must agree. A deposit's instruction is exactly what its
//! payload decodes to; an undecodable one is never reported, refunded to the origin its
//! header names, else counted and kept.
#![no_main]

use bitcoin::{
    absolute::LockTime, block, block::Header, consensus, hashes::Hash, opcodes::all::OP_RETURN,
    script::Builder, script::PushBytesBuf, transaction::Version, Amount, Block, BlockHash,
    CompactTarget, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxMerkleNode, TxOut, Txid,
    Witness,
};
use libfuzzer_sys::fuzz_target;
use processor_fuzz::{key_scripts, network_key};
use scanner::{
    chain::bitcoin_core::{chain_transaction, BitcoinBlock},
    chain::ChainBlock,
    scan::outputs::{receive, Received},
};
use schema::{
    instruction::{refund_origin, RefundableInInstruction},
    plan::OutputKind,
};

/// Receives `transaction` in a block of its own, read both ways the scanner can read it: the
/// borrowed view of the decoded block and the owned chain-neutral form. Both must read the
/// same; the view alone refuses an impossible amount only on an output of ours.
fn receive_one(transaction: &Transaction) -> Option<Received> {
    let keys = [(network_key(), key_scripts())];
    let block = BitcoinBlock::new(
        1,
        Block {
            header: Header {
                version: block::Version::TWO,
                prev_blockhash: BlockHash::all_zeros(),
                merkle_root: TxMerkleNode::all_zeros(),
                time: 0,
                bits: CompactTarget::from_consensus(0x207f_ffff),
                nonce: 0,
            },
            txdata: vec![transaction.clone()],
        },
    );
    let viewed = receive(&block, &keys);
    let owned = chain_transaction(transaction).ok().map(|chain| {
        let block = ChainBlock {
            height: 1,
            hash: [0; 32],
            parent: [0; 32],
            time: 0,
            transactions: vec![chain],
        };
        receive(&block, &keys)
    });
    match (&viewed, owned) {
        (Ok(viewed), Some(Ok(owned))) => {
            assert_eq!(viewed, &owned, "the view and the owned form differ");
        }
        (Ok(_) | Err(_), None) => {}
        (Err(_), Some(_)) => panic!("only the view refused the transaction's amounts"),
        (Ok(_), Some(Err(_))) => panic!("only the owned form refused the transaction's amounts"),
    }
    viewed.ok()
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, payload)) = data.split_first() else {
        return;
    };
    if split & 1 == 1 {
        if let Ok(transaction) = consensus::deserialize::<Transaction>(payload) {
            let _ = receive_one(&transaction);
        }
        return;
    }
    let at = usize::from(split / 2).min(payload.len());
    let mut script = Builder::new().push_opcode(OP_RETURN);
    for push in [&payload[..at], &payload[at..]] {
        let Ok(push) = PushBytesBuf::try_from(push.to_vec()) else {
            return;
        };
        script = script.push_slice(push);
    }
    let transaction = Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint::new(Txid::all_zeros(), 0),
            script_sig: ScriptBuf::new(),
            sequence: Sequence::MAX,
            witness: Witness::new(),
        }],
        output: vec![
            TxOut {
                value: Amount::from_sat(100_000),
                script_pubkey: key_scripts().script(OutputKind::External).clone(),
            },
            TxOut {
                value: Amount::ZERO,
                script_pubkey: script.into_script(),
            },
        ],
    };
    let Some(received) = receive_one(&transaction) else {
        panic!("a transaction of valid amounts was not received");
    };
    assert_eq!(received.outputs.len(), 1, "our deposit was not received");
    let expected = RefundableInInstruction::decode(payload).ok();
    assert_eq!(received.outputs[0].instruction, expected);
    // An undecodable one is refunded to the origin its header names, or else kept.
    let refund = expected.is_none().then(|| refund_origin(payload)).flatten();
    assert_eq!(received.outputs[0].refund, refund);
    assert_eq!(received.refunds, u64::from(refund.is_some()));
    assert_eq!(
        received.invalid_instructions,
        u64::from(expected.is_none() && refund.is_none())
    );
});
