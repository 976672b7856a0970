//! The simulated chain is held to the `Network` conformance suite that Bitcoin through Core
//! passes against a real regtest node (`tests/tests/scanner.rs`): heights and parent links,
//! coinbases, blocks past the tip, typing, deposit data, publishing twice and after mining, fee
//! rates of paying and of coinbase-only blocks, fee estimates.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    cell::{Cell, RefCell},
    rc::Rc,
};

use bitcoin::{
    absolute::LockTime, consensus, hashes::Hash, opcodes::all::OP_RETURN, script::PushBytesBuf,
    transaction::Version, Amount, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid,
    Witness,
};
use processor_sim::{
    chain::{Chain, SimNode},
    rng::Rng,
};
use processor_tests::{
    conformance::{check_network, ChainDriver},
    HarnessError,
};
use schema::{hashes::TransactionId, keys::NetworkKey};

struct Driver {
    chain: Rc<RefCell<Chain>>,
    rng: RefCell<Rng>,
}

fn input(previous_output: OutPoint) -> TxIn {
    TxIn {
        previous_output,
        script_sig: ScriptBuf::new(),
        sequence: Sequence::MAX,
        witness: Witness::new(),
    }
}

impl ChainDriver for Driver {
    fn mine(&self, count: u32) -> Result<(), HarnessError> {
        for _ in 0..count {
            self.chain
                .borrow_mut()
                .mine(&mut self.rng.borrow_mut(), Vec::new());
        }
        Ok(())
    }

    fn payment(
        &self,
        script: &[u8],
        amount: u64,
        data: Option<&[u8]>,
    ) -> Result<(Vec<u8>, TransactionId), HarnessError> {
        // The funds it spends, mined first: the mempool takes only spends of outputs that exist.
        let funding = Transaction {
            version: Version::TWO,
            lock_time: LockTime::ZERO,
            input: vec![input(OutPoint {
                txid: Txid::from_byte_array(self.rng.borrow_mut().bytes32()),
                vout: 0,
            })],
            output: vec![TxOut {
                value: Amount::from_sat(amount + 10_000),
                script_pubkey: ScriptBuf::new(),
            }],
        };
        let funded = OutPoint {
            txid: funding.compute_txid(),
            vout: 0,
        };
        self.chain
            .borrow_mut()
            .mine(&mut self.rng.borrow_mut(), vec![funding]);
        let mut output = vec![TxOut {
            value: Amount::from_sat(amount),
            script_pubkey: ScriptBuf::from_bytes(script.to_vec()),
        }];
        if let Some(data) = data {
            let push = PushBytesBuf::try_from(data.to_vec())
                .map_err(|error| HarnessError::Failed(error.to_string()))?;
            output.push(TxOut {
                value: Amount::ZERO,
                script_pubkey: ScriptBuf::builder()
                    .push_opcode(OP_RETURN)
                    .push_slice(push)
                    .into_script(),
            });
        }
        let payment = Transaction {
            version: Version::TWO,
            lock_time: LockTime::ZERO,
            input: vec![input(funded)],
            output,
        };
        Ok((
            consensus::serialize(&payment),
            TransactionId(payment.compute_txid().to_byte_array()),
        ))
    }

    fn set_fee_rate(&self, rate: u64) -> Result<(), HarnessError> {
        self.chain.borrow_mut().market = rate;
        Ok(())
    }
}

fn network_key(seed: u8) -> NetworkKey {
    let secp = bitcoin::secp256k1::Secp256k1::new();
    let secret = bitcoin::secp256k1::SecretKey::from_slice(&[seed; 32]).unwrap();
    NetworkKey::from_slice(&secret.public_key(&secp).serialize()).unwrap()
}

#[test]
fn the_simulated_chain_passes_the_network_conformance_suite() {
    let mut rng = Rng::new(1);
    let chain = Rc::new(RefCell::new(Chain::new(&mut rng, 5)));
    let node = SimNode::new(Rc::clone(&chain), Rc::new(Cell::new(false)));
    let driver = Driver {
        chain,
        rng: RefCell::new(rng),
    };
    check_network(&node, &driver, &network_key(1), &network_key(2)).unwrap();
}

#[test]
fn a_node_that_is_down_answers_nothing() {
    let mut rng = Rng::new(2);
    let chain = Rc::new(RefCell::new(Chain::new(&mut rng, 5)));
    let down = Rc::new(Cell::new(true));
    let node = SimNode::new(chain, Rc::clone(&down));
    assert!(scanner::chain::Network::latest_height(&node).is_err());
    down.set(false);
    assert_eq!(scanner::chain::Network::latest_height(&node).unwrap(), 4);
}
