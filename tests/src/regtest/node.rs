//! The regtest node's state: the kernel's chainstate, the block store, the node's chain index
//! and its mempool, kept in step. A block made here counts only once the kernel connected it;
//! then it is stored, indexed, and its transactions leave the mempool.

use std::{
    path::Path,
    time::{SystemTime, UNIX_EPOCH},
};

use bitcoin::{
    blockdata::constants::genesis_block, Amount, Block, BlockHash, Network, OutPoint, ScriptBuf,
    Transaction, TxOut,
};

use super::{
    chain::ChainIndex,
    kernel::{Kernel, KernelFailure},
    mempool::{Entry, Mempool, Rejection},
    miner::{self, Template},
    store::BlockStore,
};

/// Why a node operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The kernel refused or failed.
    #[error(transparent)]
    Kernel(#[from] KernelFailure),
    /// The block store failed.
    #[error("block store: {0}")]
    Store(#[from] std::io::Error),
    /// A transaction was refused.
    #[error("{}", .0.reason)]
    Transaction(Rejection),
    /// No such block.
    #[error("Block not found")]
    UnknownBlock,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}

/// Everything a regtest node holds.
pub struct Node {
    kernel: Kernel,
    store: BlockStore,
    chain: ChainIndex,
    mempool: Mempool,
    fee_rate: Option<u64>,
}

impl Node {
    /// Opens the node in `datadir`: the stored chain is chosen and indexed, and the kernel is
    /// rebuilt if its tip is not that chain's.
    ///
    /// # Errors
    /// The kernel or the store failed.
    pub fn open(datadir: &Path) -> Result<Self, NodeError> {
        let genesis = genesis_block(Network::Regtest);
        let store = BlockStore::open(&datadir.join("blocks"), genesis.block_hash())?;
        let mut kernel = Kernel::open(&datadir.join("kernel"))?;
        let mut chain = ChainIndex::new(genesis);
        let best = store.best_chain(kernel.tip());
        for block in &best {
            chain.connect((*block).clone());
        }
        if kernel.tip() != chain.tip().block_hash() {
            kernel.rebuild(&best)?;
        }
        Ok(Node {
            kernel,
            store,
            chain,
            mempool: Mempool::default(),
            fee_rate: None,
        })
    }

    /// The active chain.
    pub fn chain(&self) -> &ChainIndex {
        &self.chain
    }

    /// The mempool.
    pub fn mempool(&self) -> &Mempool {
        &self.mempool
    }

    /// The fee rate `estimatesmartfee` answers with, if a test set one (sat/vB).
    pub fn fee_rate(&self) -> Option<u64> {
        self.fee_rate
    }

    /// Sets (or clears) the fee rate `estimatesmartfee` answers with.
    pub fn set_fee_rate(&mut self, rate: Option<u64>) {
        self.fee_rate = rate;
    }

    /// Admits a transaction to the mempool (`sendrawtransaction`). A transaction already in
    /// the mempool is accepted again, as Core does.
    ///
    /// # Errors
    /// Why Core would refuse it.
    pub fn send(&mut self, transaction: &Transaction) -> Result<(), Rejection> {
        if self.mempool.get(&transaction.compute_txid()).is_some() {
            return Ok(());
        }
        let entry = self.mempool.check(&self.chain, transaction, now())?;
        self.mempool.insert(entry);
        Ok(())
    }

    /// Checks a transaction without admitting it (`testmempoolaccept`).
    ///
    /// # Errors
    /// Why Core would refuse it.
    pub fn test_accept(&self, transaction: &Transaction) -> Result<Entry, Rejection> {
        if self.mempool.get(&transaction.compute_txid()).is_some() {
            return Err(Rejection {
                code: -26,
                reason: "txn-already-in-mempool".into(),
            });
        }
        self.mempool.check(&self.chain, transaction, now())
    }

    /// Mines one block paying `payout`, with the whole mempool (`generatetoaddress`) or with
    /// exactly `transactions` (`generateblock`).
    ///
    /// # Errors
    /// The kernel refused the block: nothing changed.
    pub fn mine(
        &mut self,
        payout: ScriptBuf,
        transactions: Option<Vec<Transaction>>,
    ) -> Result<BlockHash, NodeError> {
        let (transactions, fees) = match transactions {
            None => {
                let entries: Vec<&Entry> = self.mempool.entries().collect();
                let fees = entries.iter().map(|entry| entry.fee).sum();
                (
                    entries
                        .iter()
                        .map(|entry| entry.transaction.clone())
                        .collect(),
                    fees,
                )
            }
            Some(transactions) => {
                let fees = self.fees_of(&transactions);
                (transactions, fees)
            }
        };
        let tip = self.chain.tip();
        let time = u32::try_from(now())
            .unwrap_or(u32::MAX)
            .max(self.chain.median_time_past() + 1)
            .max(tip.header.time + 1);
        let block = miner::build(Template {
            parent: tip.block_hash(),
            height: self.chain.height() + 1,
            time,
            payout,
            fees,
            transactions,
        });
        self.submit(block)
    }

    /// The fees of transactions to mine in this order; what cannot be valued counts zero and is
    /// left for the kernel to refuse.
    fn fees_of(&self, transactions: &[Transaction]) -> Amount {
        let mut created: Vec<(OutPoint, TxOut)> = Vec::new();
        let mut fees = Amount::ZERO;
        for transaction in transactions {
            let inputs: Option<Amount> = transaction
                .input
                .iter()
                .map(|input| {
                    self.chain
                        .coin(&input.previous_output)
                        .map(|coin| coin.output.value)
                        .or_else(|| {
                            created
                                .iter()
                                .find(|(outpoint, _)| *outpoint == input.previous_output)
                                .map(|(_, output)| output.value)
                        })
                })
                .sum();
            let outputs: Amount = transaction.output.iter().map(|output| output.value).sum();
            if let Some(fee) = inputs.and_then(|inputs| inputs.checked_sub(outputs)) {
                fees += fee;
            }
            let txid = transaction.compute_txid();
            created.extend(
                (0u32..)
                    .zip(&transaction.output)
                    .map(|(vout, output)| (OutPoint { txid, vout }, output.clone())),
            );
        }
        fees
    }

    fn submit(&mut self, block: Block) -> Result<BlockHash, NodeError> {
        self.kernel.submit(&block)?;
        self.store.save(&block)?;
        let hash = block.block_hash();
        self.chain.connect(block);
        self.readmit(Vec::new());
        Ok(hash)
    }

    /// Re-checks the mempool against the chain, first re-admitting `returning` (transactions of
    /// disconnected blocks), dropping whatever no longer fits.
    fn readmit(&mut self, returning: Vec<Transaction>) {
        let waiting = self.mempool.drain();
        let now = now();
        for transaction in returning
            .into_iter()
            .chain(waiting.into_iter().map(|entry| entry.transaction))
        {
            if let Ok(entry) = self.mempool.check(&self.chain, &transaction, now) {
                self.mempool.insert(entry);
            }
        }
    }

    /// `invalidateblock`: the block and its descendants leave the chain.
    ///
    /// # Errors
    /// Unknown block, or the chain could not be rebuilt.
    pub fn invalidate(&mut self, hash: BlockHash) -> Result<(), NodeError> {
        if !self.store.contains(&hash) {
            return Err(NodeError::UnknownBlock);
        }
        self.store.set_invalid(hash, true)?;
        self.follow_best()
    }

    /// `reconsiderblock`: the block may be part of the chain again.
    ///
    /// # Errors
    /// Unknown block, or the chain could not be rebuilt.
    pub fn reconsider(&mut self, hash: BlockHash) -> Result<(), NodeError> {
        if !self.store.contains(&hash) {
            return Err(NodeError::UnknownBlock);
        }
        self.store.set_invalid(hash, false)?;
        self.follow_best()
    }

    /// Moves to the store's best chain: disconnects to the fork, connects the new branch,
    /// rebuilds the kernel along it, and returns the disconnected transactions to the mempool.
    fn follow_best(&mut self) -> Result<(), NodeError> {
        let best: Vec<Block> = self
            .store
            .best_chain(self.chain.tip().block_hash())
            .into_iter()
            .cloned()
            .collect();
        let current = self.chain.hashes();
        let fork = best
            .iter()
            .zip(current.iter().skip(1))
            .take_while(|(block, hash)| block.block_hash() == **hash)
            .count();
        if fork == best.len() && current.len() == best.len() + 1 {
            return Ok(());
        }
        let mut returning = Vec::new();
        while self.chain.height() > u32::try_from(fork).unwrap_or(u32::MAX) {
            if let Some(block) = self.chain.disconnect() {
                returning.splice(
                    0..0,
                    block
                        .txdata
                        .into_iter()
                        .filter(|transaction| !transaction.is_coinbase()),
                );
            }
        }
        for block in best.iter().skip(fork) {
            self.chain.connect(block.clone());
        }
        self.kernel.rebuild(&best.iter().collect::<Vec<_>>())?;
        self.readmit(returning);
        Ok(())
    }

    /// A block the node stored, on the active chain or not.
    pub fn stored_block(&self, hash: &BlockHash) -> Option<&Block> {
        self.store.block(hash)
    }
}
