//! The node's own view of the active chain, for what the kernel does not answer: blocks by
//! height and hash, every transaction by id, and the UTXO set with undo data, so that a reorg
//! disconnects blocks exactly and connects the new branch.

use std::collections::HashMap;

use bitcoin::{Block, BlockHash, OutPoint, Transaction, TxOut, Txid};

/// An unspent output and where it was created.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Coin {
    /// The output.
    pub output: TxOut,
    /// The height of the block that created it.
    pub height: u32,
    /// Whether a coinbase created it (spendable only after maturity).
    pub coinbase: bool,
}

struct Connected {
    block: Block,
    /// The coins the block spent, to restore when it is disconnected.
    spent: Vec<(OutPoint, Coin)>,
}

/// The active chain, genesis first.
pub struct ChainIndex {
    blocks: Vec<Connected>,
    heights: HashMap<BlockHash, u32>,
    transactions: HashMap<Txid, (u32, usize)>,
    utxos: HashMap<OutPoint, Coin>,
}

impl ChainIndex {
    /// A chain holding only `genesis` (whose coinbase, as in Core, is not spendable).
    pub fn new(genesis: Block) -> Self {
        let mut heights = HashMap::new();
        heights.insert(genesis.block_hash(), 0);
        ChainIndex {
            blocks: vec![Connected {
                block: genesis,
                spent: Vec::new(),
            }],
            heights,
            transactions: HashMap::new(),
            utxos: HashMap::new(),
        }
    }

    /// The tip's height.
    pub fn height(&self) -> u32 {
        u32::try_from(self.blocks.len().saturating_sub(1)).unwrap_or(u32::MAX)
    }

    /// The tip.
    pub fn tip(&self) -> &Block {
        // The chain always holds genesis.
        &self.blocks[self.blocks.len() - 1].block
    }

    /// The block at `height` on the active chain.
    pub fn at(&self, height: u32) -> Option<&Block> {
        self.blocks
            .get(usize::try_from(height).ok()?)
            .map(|connected| &connected.block)
    }

    /// The fee rates (sat/vB, rounded down) and virtual sizes of an active-chain block's
    /// transactions, coinbase excluded, from the coins the block spent.
    pub fn fee_rates(&self, height: u32) -> Option<Vec<(u64, u64)>> {
        let connected = self.blocks.get(usize::try_from(height).ok()?)?;
        let spent: HashMap<&OutPoint, &Coin> = connected
            .spent
            .iter()
            .map(|(outpoint, coin)| (outpoint, coin))
            .collect();
        let mut rates = Vec::new();
        for transaction in connected.block.txdata.iter().skip(1) {
            let inputs: Option<u64> = transaction
                .input
                .iter()
                .map(|input| Some(spent.get(&input.previous_output)?.output.value.to_sat()))
                .sum();
            let outputs: u64 = transaction
                .output
                .iter()
                .map(|output| output.value.to_sat())
                .sum();
            // A transaction spending an output of the same block is valued from that block.
            let inputs = inputs.or_else(|| {
                transaction
                    .input
                    .iter()
                    .map(|input| {
                        let (parent, _) = self.transaction(&input.previous_output.txid)?;
                        let vout = usize::try_from(input.previous_output.vout).ok()?;
                        Some(parent.output.get(vout)?.value.to_sat())
                    })
                    .sum()
            })?;
            let vsize = u64::try_from(transaction.vsize()).ok()?;
            rates.push((inputs.saturating_sub(outputs) / vsize.max(1), vsize));
        }
        Some(rates)
    }

    /// The height of an active-chain block.
    pub fn height_of(&self, hash: &BlockHash) -> Option<u32> {
        self.heights.get(hash).copied()
    }

    /// A confirmed transaction and the height of its block.
    pub fn transaction(&self, txid: &Txid) -> Option<(&Transaction, u32)> {
        let (height, index) = *self.transactions.get(txid)?;
        let transaction = self.at(height)?.txdata.get(index)?;
        Some((transaction, height))
    }

    /// An unspent output of the active chain.
    pub fn coin(&self, outpoint: &OutPoint) -> Option<&Coin> {
        self.utxos.get(outpoint)
    }

    /// The median time of the last 11 blocks (BIP113), which a new block's time must exceed.
    pub fn median_time_past(&self) -> u32 {
        let mut times: Vec<u32> = self
            .blocks
            .iter()
            .rev()
            .take(11)
            .map(|connected| connected.block.header.time)
            .collect();
        times.sort_unstable();
        times.get(times.len() / 2).copied().unwrap_or(0)
    }

    /// Connects a block the kernel connected on top of the tip.
    pub fn connect(&mut self, block: Block) {
        let height = self.height() + 1;
        let mut spent = Vec::new();
        for (index, transaction) in block.txdata.iter().enumerate() {
            let coinbase = transaction.is_coinbase();
            if !coinbase {
                for input in &transaction.input {
                    if let Some(coin) = self.utxos.remove(&input.previous_output) {
                        spent.push((input.previous_output, coin));
                    }
                }
            }
            let txid = transaction.compute_txid();
            for (vout, output) in (0u32..).zip(&transaction.output) {
                if output.script_pubkey.is_op_return() {
                    continue;
                }
                self.utxos.insert(
                    OutPoint { txid, vout },
                    Coin {
                        output: output.clone(),
                        height,
                        coinbase,
                    },
                );
            }
            self.transactions.insert(txid, (height, index));
        }
        self.heights.insert(block.block_hash(), height);
        self.blocks.push(Connected { block, spent });
    }

    /// Disconnects the tip, restoring what it spent; genesis stays.
    pub fn disconnect(&mut self) -> Option<Block> {
        if self.blocks.len() <= 1 {
            return None;
        }
        let Connected { block, spent } = self.blocks.pop()?;
        for transaction in &block.txdata {
            let txid = transaction.compute_txid();
            for vout in 0..u32::try_from(transaction.output.len()).unwrap_or(u32::MAX) {
                self.utxos.remove(&OutPoint { txid, vout });
            }
            self.transactions.remove(&txid);
        }
        for (outpoint, coin) in spent {
            self.utxos.insert(outpoint, coin);
        }
        self.heights.remove(&block.block_hash());
        Some(block)
    }

    /// The active chain's hashes, genesis first.
    pub fn hashes(&self) -> Vec<BlockHash> {
        self.blocks
            .iter()
            .map(|connected| connected.block.block_hash())
            .collect()
    }
}
