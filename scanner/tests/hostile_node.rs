//! A node answering impossible heights or amounts cannot crash the scanner or change its state:
//! the arithmetic on what the node says is checked, and the answer is the node's error,
//! counted, not a panic.

// Test code: a failed unwrap is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unwrap_in_result
)]

use bitcoin::{
    absolute::LockTime, block::Header, block::Version, hashes::Hash, transaction, Amount, Block,
    BlockHash, CompactTarget, ScriptBuf, Transaction, TxMerkleNode, TxOut,
};
use scanner::{
    chain::bitcoin_core::BitcoinBlock,
    chain::{Network, NetworkError},
    scan::metrics::ScannerMetrics,
    scan::{ScanError, Scanner},
    store::db::Db,
};
use schema::{
    hashes::TransactionId, ids::NetworkId, keys::NetworkKey, plan::OutputKind, taproot::KeyScripts,
    transaction::FeeRate,
};

/// A node that lies: its tip is at `tip`, and every block up to it is `block` (none: it has
/// no blocks at all).
struct HostileNode {
    tip: u64,
    block: Option<Block>,
}

impl Network for HostileNode {
    type Typing = KeyScripts;
    type Block = BitcoinBlock;

    fn latest_height(&self) -> Result<u64, NetworkError> {
        Ok(self.tip)
    }
    fn block(&self, height: u64) -> Result<BitcoinBlock, NetworkError> {
        match &self.block {
            Some(block) if height <= self.tip => Ok(BitcoinBlock::new(height, block.clone())),
            _ => Err(NetworkError::NoBlock(height)),
        }
    }
    fn blocks(
        &self,
        from: u64,
        to: u64,
    ) -> impl Iterator<Item = Result<BitcoinBlock, NetworkError>> + 'static {
        let blocks: Vec<_> = (from..=to).map(|height| self.block(height)).collect();
        blocks.into_iter()
    }
    fn height_of(&self, _: [u8; 32]) -> Result<Option<u64>, NetworkError> {
        Ok(None)
    }
    fn typing(&self, key: &NetworkKey) -> Result<KeyScripts, NetworkError> {
        KeyScripts::derive(key).map_err(|error| NetworkError::Invalid(error.to_string()))
    }
    fn fee_rate_of(&self, _: [u8; 32]) -> Result<Option<FeeRate>, NetworkError> {
        Ok(None)
    }
    fn fee_rate(&self) -> Result<Option<FeeRate>, NetworkError> {
        Ok(None)
    }
    fn publish(&self, _: &[u8]) -> Result<(), NetworkError> {
        Ok(())
    }
    fn transaction(&self, _: &TransactionId) -> Result<Option<Vec<u8>>, NetworkError> {
        Ok(None)
    }
}

#[test]
fn a_tip_at_the_largest_height_is_the_nodes_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = ScannerMetrics::new().unwrap();
    let mut scanner = Scanner::new(
        HostileNode {
            tip: u64::MAX,
            block: None,
        },
        NetworkId::Bitcoin,
        Db::open(dir.path()).unwrap(),
        6,
        metrics.clone(),
    );
    assert!(matches!(
        scanner.tick(),
        Err(ScanError::Network(NetworkError::Invalid(_)))
    ));
    assert!(matches!(
        scanner.first_final_block_at(1_700_000_000),
        Err(ScanError::Network(NetworkError::Invalid(_)))
    ));
    let rendered = String::from_utf8(metrics.render()).unwrap();
    assert!(
        rendered.contains("scanner_rpc_errors_total{kind=\"invalid\"} 2"),
        "{rendered}"
    );
}

#[test]
fn a_block_paying_us_more_than_the_supply_is_refused_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let secp = bitcoin::secp256k1::Secp256k1::new();
    let secret = bitcoin::secp256k1::SecretKey::from_slice(&[0x33; 32]).unwrap();
    let key = NetworkKey::from(secret.public_key(&secp));
    let ours = KeyScripts::derive(&key)
        .unwrap()
        .script(OutputKind::External)
        .clone();
    // One satoshi more than 21M BTC, to our deposit address.
    let block = Block {
        header: Header {
            version: Version::TWO,
            prev_blockhash: BlockHash::all_zeros(),
            merkle_root: TxMerkleNode::all_zeros(),
            time: 0,
            bits: CompactTarget::from_consensus(0x207f_ffff),
            nonce: 0,
        },
        txdata: vec![Transaction {
            version: transaction::Version::TWO,
            lock_time: LockTime::ZERO,
            input: Vec::new(),
            output: vec![
                TxOut {
                    value: Amount::from_sat(2_100_000_000_000_001),
                    script_pubkey: ours,
                },
                TxOut {
                    value: Amount::ZERO,
                    script_pubkey: ScriptBuf::new(),
                },
            ],
        }],
    };
    let metrics = ScannerMetrics::new().unwrap();
    let mut scanner = Scanner::new(
        HostileNode {
            tip: 3,
            block: Some(block),
        },
        NetworkId::Bitcoin,
        Db::open(dir.path()).unwrap(),
        1,
        metrics.clone(),
    );
    scanner.add_key(key, 1).unwrap();
    assert!(matches!(
        scanner.tick(),
        Err(ScanError::Network(NetworkError::Invalid(_)))
    ));
    // Nothing changed: the key still waits at the block, which is not recorded.
    assert_eq!(scanner.store().keys().unwrap()[0].next, 1);
    assert_eq!(scanner.store().block_hash(1).unwrap(), None);
    let rendered = String::from_utf8(metrics.render()).unwrap();
    assert!(
        rendered.contains("scanner_rpc_errors_total{kind=\"invalid\"} 1"),
        "{rendered}"
    );
}
