//! The regtest node's state: the kernel's chainstate, the block store, the node's chain index
//! and its mempool, kept in step. A block made here counts only once the kernel connected it;
//! then it is stored, indexed, and its transactions leave the mempool (and their
//! prioritisation, as Core's `removeForBlock`). Blocks from the mempool take what Core's
//! `BlockAssembler` would (`template`), above the node's `-blockmintxfee`.

use std::{
    path::Path,
    time::{SystemTime, UNIX_EPOCH},
};

use bitcoin::{
    blockdata::constants::genesis_block, Amount, Block, BlockHash, Network, OutPoint, ScriptBuf,
    Transaction, TxOut, Txid,
};

use super::{
    chain::ChainIndex,
    feerate::CoreFeeRate,
    kernel::{Kernel, KernelFailure},
    mempool::{Admission, Mempool, Policy, Rejection},
    miner::{self, Template},
    store::BlockStore,
    template::{self, Limits},
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
    #[error("{0}")]
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
    /// The lowest package fee rate a block from the mempool takes (Core's `-blockmintxfee`).
    block_min_fee_rate: CoreFeeRate,
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
            block_min_fee_rate: template::DEFAULT_BLOCK_MIN_TX_FEE,
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

    /// The lowest package fee rate a block from the mempool takes.
    pub fn block_min_fee_rate(&self) -> CoreFeeRate {
        self.block_min_fee_rate
    }

    /// Sets the lowest package fee rate a block from the mempool takes (`-blockmintxfee` at
    /// start, our `setblockmintxfee` RPC at run time).
    pub fn set_block_min_fee_rate(&mut self, rate: CoreFeeRate) {
        self.block_min_fee_rate = rate;
    }

    /// `prioritisetransaction`: shifts `txid`'s modified fee by `delta` satoshis, in the
    /// mempool or once it arrives.
    pub fn prioritise(&mut self, txid: Txid, delta: i64) {
        self.mempool.prioritise(txid, delta);
    }

    /// Admits a transaction to the mempool (`sendrawtransaction`), replacing what it conflicts
    /// with if the replacement rules allow. A transaction already in the mempool is accepted
    /// again, as Core does.
    ///
    /// # Errors
    /// Why Core would refuse it.
    pub fn send(&mut self, transaction: &Transaction) -> Result<(), Rejection> {
        if self.mempool.get(&transaction.compute_txid()).is_some() {
            return Ok(());
        }
        let admission = self
            .mempool
            .check(&self.chain, transaction, now(), Policy::Relay)?;
        self.mempool.insert(admission);
        Ok(())
    }

    /// Checks a transaction without admitting it (`testmempoolaccept`), by the same rules as
    /// `send`.
    ///
    /// # Errors
    /// Why Core would refuse it.
    pub fn test_accept(&self, transaction: &Transaction) -> Result<Admission, Rejection> {
        if self.mempool.get(&transaction.compute_txid()).is_some() {
            return Err(Rejection::rejected("txn-already-in-mempool"));
        }
        self.mempool
            .check(&self.chain, transaction, now(), Policy::Relay)
    }

    /// The mempool transactions a block would take now, in block order, and their fees (base
    /// fees: what the coinbase may claim).
    pub fn block_template(&self) -> (Vec<Transaction>, Amount) {
        let candidates: Vec<template::Candidate> = self
            .mempool
            .entries()
            .map(|entry| template::Candidate {
                txid: entry.txid,
                parents: self.mempool.parents(&entry.txid),
                modified_fee: self.mempool.modified_fee(entry),
                vsize: entry.vsize,
                weight: entry.transaction.weight().to_wu(),
            })
            .collect();
        let limits = Limits {
            min_fee_rate: self.block_min_fee_rate,
            ..Limits::default()
        };
        let mut fees = Amount::ZERO;
        let mut transactions = Vec::new();
        for txid in template::select(&candidates, &limits) {
            if let Some(entry) = self.mempool.get(&txid) {
                fees += entry.fee;
                transactions.push(entry.transaction.clone());
            }
        }
        (transactions, fees)
    }

    /// Mines one block paying `payout`, with what Core's block assembler would take from the
    /// mempool (`generatetoaddress`) or with exactly `transactions` (`generateblock`).
    ///
    /// # Errors
    /// The kernel refused the block: nothing changed.
    pub fn mine(
        &mut self,
        payout: ScriptBuf,
        transactions: Option<Vec<Transaction>>,
    ) -> Result<BlockHash, NodeError> {
        let (transactions, fees) = match transactions {
            None => self.block_template(),
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
        self.confirmed(&block);
        self.chain.connect(block);
        self.readmit(Vec::new());
        Ok(hash)
    }

    /// Forgets the prioritisation of a connected block's transactions, as Core does.
    fn confirmed(&mut self, block: &Block) {
        for transaction in &block.txdata {
            self.mempool
                .clear_prioritisation(&transaction.compute_txid());
        }
    }

    /// Re-checks the mempool against the chain, first re-admitting `returning` (transactions of
    /// disconnected blocks), dropping whatever no longer fits: spent or missing inputs, and
    /// their descendants. Fee floors do not apply again (`Policy::Readmit`).
    fn readmit(&mut self, returning: Vec<Transaction>) {
        let waiting = self.mempool.drain();
        let now = now();
        let returning = returning.into_iter().map(|transaction| (transaction, None));
        let waiting = waiting
            .into_iter()
            .map(|entry| (entry.transaction, Some((entry.time, entry.height))));
        for (transaction, since) in returning.chain(waiting) {
            if let Ok(mut admission) =
                self.mempool
                    .check(&self.chain, &transaction, now, Policy::Readmit)
            {
                // An entry keeps when it arrived, as in Core's mempool.
                if let Some((time, height)) = since {
                    admission.entry.time = time;
                    admission.entry.height = height;
                }
                self.mempool.insert(admission);
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
            self.confirmed(block);
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
