//! A node answering impossible heights cannot crash the scanner: the arithmetic on what the
//! node says is checked, and the answer is the node's error, counted, not a panic.

// Test code: a failed unwrap is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unwrap_in_result
)]

use scanner::{
    chain::{ChainBlock, Network, NetworkError, OutputTyping},
    scan::metrics::ScannerMetrics,
    scan::{ScanError, Scanner},
    store::db::Db,
};
use schema::{
    hashes::TransactionId, ids::NetworkId, keys::NetworkKey, plan::OutputKind, transaction::FeeRate,
};

/// A node whose tip is at the largest height a `u64` holds.
struct HostileNode;

struct NoOutputs;

impl OutputTyping for NoOutputs {
    fn kind_of(&self, _: &[u8]) -> Option<OutputKind> {
        None
    }
    fn script(&self, _: OutputKind) -> Vec<u8> {
        Vec::new()
    }
}

impl Network for HostileNode {
    type Typing = NoOutputs;
    type Block = ChainBlock;

    fn latest_height(&self) -> Result<u64, NetworkError> {
        Ok(u64::MAX)
    }
    fn block(&self, height: u64) -> Result<ChainBlock, NetworkError> {
        Err(NetworkError::NoBlock(height))
    }
    fn blocks(
        &self,
        from: u64,
        _: u64,
    ) -> impl Iterator<Item = Result<ChainBlock, NetworkError>> + 'static {
        std::iter::once(Err(NetworkError::NoBlock(from)))
    }
    fn height_of(&self, _: [u8; 32]) -> Result<Option<u64>, NetworkError> {
        Ok(None)
    }
    fn typing(&self, _: &NetworkKey) -> Result<NoOutputs, NetworkError> {
        Ok(NoOutputs)
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
        HostileNode,
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
