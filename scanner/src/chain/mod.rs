//! The chain the processor custodies funds on, as the scanner sees it: heights, blocks in a
//! chain-neutral form (transactions with their spent output ids, outputs as scripts and
//! amounts, and the data a deposit carries), how our keys' outputs are recognized, the fee
//! rate, and publishing. Bitcoin implements it through Core (`bitcoin_core`); another chain
//! would be one more implementation, checked by the same conformance tests.

pub mod bitcoin_core;
pub mod core_answers;
pub mod rpc;

use schema::{
    amount::Amount,
    hashes::TransactionId,
    keys::NetworkKey,
    plan::{OutputId, OutputKind},
    transaction::FeeRate,
};
use thiserror::Error;

/// A chain query that failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum NetworkError {
    /// The node could not answer (unreachable, refused, or errored).
    #[error("node: {0}")]
    Node(String),
    /// The node has no block at this height (yet).
    #[error("no block at height {0}")]
    NoBlock(u64),
    /// What the node sent is not valid chain data.
    #[error("invalid chain data: {0}")]
    Invalid(String),
    /// The node refused to publish a transaction.
    #[error("transaction refused: {0}")]
    Refused(String),
}

/// An output of a transaction, in chain-neutral terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainOutput {
    /// The locking script (an address, in Bitcoin).
    pub script: Vec<u8>,
    /// The value. Outputs above 21M BTC are rejected when the block is decoded.
    pub amount: Amount,
}

/// A transaction, with what it spends and what it creates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainTransaction {
    /// Its id.
    pub id: TransactionId,
    /// The outputs it spends (none for a coinbase).
    pub inputs: Vec<OutputId>,
    /// Its outputs, in order.
    pub outputs: Vec<ChainOutput>,
    /// The data it carries for a deposit (Bitcoin: the payload of its first `OP_RETURN`).
    pub data: Option<Vec<u8>>,
}

/// A block of the active chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainBlock {
    /// Its height.
    pub height: u64,
    /// Its hash.
    pub hash: [u8; 32],
    /// Its parent's hash.
    pub parent: [u8; 32],
    /// Its timestamp (seconds).
    pub time: u64,
    /// Its transactions, in order.
    pub transactions: Vec<ChainTransaction>,
}

/// A key's addresses: the script each kind of its outputs pays, and the kind of a script.
pub trait OutputTyping {
    /// The kind of output paying `script`, if it is one of the key's.
    fn kind_of(&self, script: &[u8]) -> Option<OutputKind>;

    /// The script outputs of `kind` pay.
    fn script(&self, kind: OutputKind) -> Vec<u8>;
}

impl<T: OutputTyping + ?Sized> OutputTyping for &T {
    fn kind_of(&self, script: &[u8]) -> Option<OutputKind> {
        (**self).kind_of(script)
    }

    fn script(&self, kind: OutputKind) -> Vec<u8> {
        (**self).script(kind)
    }
}

/// A chain, through its node.
pub trait Network {
    /// How a key's outputs are recognized.
    type Typing: OutputTyping;

    /// The height of the node's tip.
    ///
    /// # Errors
    /// The node could not answer.
    fn latest_height(&self) -> Result<u64, NetworkError>;

    /// The active chain's block at `height`.
    ///
    /// # Errors
    /// No such block, or the node could not answer.
    fn block(&self, height: u64) -> Result<ChainBlock, NetworkError>;

    /// The height of the active chain's block with this hash; `None` if it is not on the
    /// active chain.
    ///
    /// # Errors
    /// The node could not answer.
    fn height_of(&self, hash: [u8; 32]) -> Result<Option<u64>, NetworkError>;

    /// How `key`'s outputs are recognized.
    ///
    /// # Errors
    /// The key cannot hold outputs on this chain.
    fn typing(&self, key: &NetworkKey) -> Result<Self::Typing, NetworkError>;

    /// The median fee rate paid in a block of the active chain, `None` for a block that pays
    /// no fees: what every validator reads the same from the same block.
    ///
    /// # Errors
    /// The node could not answer.
    fn fee_rate_of(&self, block: [u8; 32]) -> Result<Option<FeeRate>, NetworkError>;

    /// The node's fee rate estimate, `None` when it has none.
    ///
    /// # Errors
    /// The node could not answer.
    fn fee_rate(&self) -> Result<Option<FeeRate>, NetworkError>;

    /// Publishes a signed transaction (consensus bytes). Publishing one already in the chain
    /// succeeds.
    ///
    /// # Errors
    /// The node refused it or could not answer.
    fn publish(&self, transaction: &[u8]) -> Result<(), NetworkError>;

    /// A transaction the node knows (mempool or chain), as consensus bytes.
    ///
    /// # Errors
    /// The node could not answer.
    fn transaction(&self, id: &TransactionId) -> Result<Option<Vec<u8>>, NetworkError>;
}
