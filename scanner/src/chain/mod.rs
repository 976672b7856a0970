//! The chain the processor custodies funds on, as the scanner sees it: heights, blocks read
//! through a chain-neutral view (`BlockView`, `TransactionView`: transactions with their spent
//! output ids, outputs as scripts and amounts, and the data a deposit carries) that borrows
//! from the chain's own decoded form, how our keys' outputs are recognized, the fee rate, and
//! publishing. Bitcoin implements it through Core (`bitcoin_core`); another chain
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

/// An output as a block holds it, borrowed: nothing is copied for outputs that are not ours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutputRef<'a> {
    /// The locking script.
    pub script: &'a [u8],
    /// The value in the chain's smallest unit, as the block states it (not yet checked
    /// against the supply: `Amount::from_sat` does that for the outputs that matter).
    pub value: u64,
}

/// A transaction, with what it spends and what it creates: the owned form, kept for the
/// transactions that matter to us (spends of our outputs, eventualities, the simulation).
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

/// A transaction as the scanner reads it, in the chain's own form: what it spends and its
/// outputs are borrowed, and its id and data are computed only when asked, so that scanning
/// a block costs little more than decoding it although only a handful of its transactions
/// are ours.
pub trait TransactionView {
    /// Its id. This may hash the whole transaction: ask only for one that matters.
    fn id(&self) -> TransactionId;

    /// The outputs it spends, in order (none for a coinbase).
    fn spends(&self) -> impl Iterator<Item = OutputId> + '_;

    /// Its outputs, in order.
    fn outputs(&self) -> impl Iterator<Item = OutputRef<'_>> + '_;

    /// The data it carries for a deposit.
    fn data(&self) -> Option<Vec<u8>>;

    /// The owned, chain-neutral form.
    ///
    /// # Errors
    /// An output is worth more than the chain's supply.
    fn to_chain(&self) -> Result<ChainTransaction, NetworkError>;
}

impl TransactionView for ChainTransaction {
    fn id(&self) -> TransactionId {
        self.id
    }

    fn spends(&self) -> impl Iterator<Item = OutputId> + '_ {
        self.inputs.iter().copied()
    }

    fn outputs(&self) -> impl Iterator<Item = OutputRef<'_>> + '_ {
        self.outputs.iter().map(|output| OutputRef {
            script: &output.script,
            value: output.amount.to_sat(),
        })
    }

    fn data(&self) -> Option<Vec<u8>> {
        self.data.clone()
    }

    fn to_chain(&self) -> Result<ChainTransaction, NetworkError> {
        Ok(self.clone())
    }
}

/// A block of the active chain as the scanner reads it: its header facts and its
/// transactions in the chain's own form.
pub trait BlockView {
    /// How its transactions are held.
    type Transaction: TransactionView;

    /// Its height.
    fn height(&self) -> u64;

    /// Its hash.
    fn hash(&self) -> [u8; 32];

    /// Its parent's hash.
    fn parent(&self) -> [u8; 32];

    /// Its timestamp (seconds).
    fn time(&self) -> u64;

    /// Its transactions, in order.
    fn transactions(&self) -> &[Self::Transaction];
}

/// A block in the owned, chain-neutral form (the simulation's chain, tests).
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

impl BlockView for ChainBlock {
    type Transaction = ChainTransaction;

    fn height(&self) -> u64 {
        self.height
    }

    fn hash(&self) -> [u8; 32] {
        self.hash
    }

    fn parent(&self) -> [u8; 32] {
        self.parent
    }

    fn time(&self) -> u64 {
        self.time
    }

    fn transactions(&self) -> &[ChainTransaction] {
        &self.transactions
    }
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

    /// How its blocks are read.
    type Block: BlockView;

    /// The height of the node's tip.
    ///
    /// # Errors
    /// The node could not answer.
    fn latest_height(&self) -> Result<u64, NetworkError>;

    /// The active chain's block at `height`.
    ///
    /// # Errors
    /// No such block, or the node could not answer.
    fn block(&self, height: u64) -> Result<Self::Block, NetworkError>;

    /// The active chain's blocks `from..=to`, in order, for a caller reading them one after
    /// another (catching up on a backlog); the first error ends the range. A node may fetch and decode ahead while the caller
    /// works on earlier blocks, so `to` must be final: a block past finality could be fetched
    /// before a reorganization replaced it. The iterator owns what it needs, so the caller
    /// can go on using the network while it reads.
    fn blocks(
        &self,
        from: u64,
        to: u64,
    ) -> impl Iterator<Item = Result<Self::Block, NetworkError>> + 'static;

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
