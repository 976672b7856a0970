//! The simulated chain: Bitcoin transactions in blocks of a single best chain (each block
//! opening with its coinbase), a mempool that refuses spends of outputs that do not exist and
//! conflicting spends, unless one replaces its conflicts in the mempool by paying more (full
//! RBF: a higher fee rate, and a fee above theirs by 1 sat/vB of its size), a fee market (the
//! median fee rate of a block with any transaction besides its coinbase; none for a block of
//! only its coinbase) that holds out of blocks every transaction paying less than a quarter of
//! it, and reorganizations. Each validator
//! reads it through its own `SimNode`, which can be made unreachable. `SimNode` passes the same
//! `Network` conformance suite as Bitcoin through Core (`sim/tests/network_conformance.rs`).

use std::{
    cell::{Cell, RefCell},
    collections::{BTreeMap, BTreeSet},
    rc::Rc,
};

use bitcoin::{consensus, hashes::Hash, OutPoint, ScriptBuf, Transaction, TxOut, Txid};
use scanner::{
    chain::bitcoin_core::chain_transaction,
    chain::{ChainBlock, Network, NetworkError},
};
use schema::{hashes::TransactionId, keys::NetworkKey, taproot::KeyScripts, transaction::FeeRate};

use crate::rng::Rng;

/// A block of the simulated chain.
#[derive(Clone, Debug)]
pub struct Block {
    /// Its hash (random: the simulation does not mine).
    pub hash: [u8; 32],
    /// Its parent's hash.
    pub parent: [u8; 32],
    /// Its time.
    pub time: u64,
    /// The median fee rate it paid.
    pub fee_rate: u64,
    /// Its transactions.
    pub transactions: Vec<Transaction>,
}

/// The chain and its mempool.
#[derive(Default)]
pub struct Chain {
    /// The best chain, from height 0.
    pub blocks: Vec<Block>,
    /// Published transactions not in a block, in arrival order.
    pub mempool: Vec<Transaction>,
    /// The fee rate blocks pay now, sat/vB.
    pub market: u64,
    /// Outputs outside the simulation that depositors spend (their own coins): they exist,
    /// so a deposit reorganized out comes back from the mempool unless it was double-spent.
    pub external: BTreeSet<OutPoint>,
    /// The index of `blocks` and `mempool`, built when first read after a change.
    index: RefCell<Option<Rc<Index>>>,
}

/// When each output was created and by whom it was spent, over the best chain and the mempool.
#[derive(Default)]
struct Index {
    created: BTreeMap<OutPoint, TxOut>,
    spent: BTreeMap<OutPoint, Txid>,
    known: BTreeMap<Txid, Transaction>,
}

impl Chain {
    /// A chain of `blocks` empty blocks.
    pub fn new(rng: &mut Rng, blocks: u64) -> Self {
        let mut chain = Chain {
            market: 2,
            ..Chain::default()
        };
        for _ in 0..blocks {
            chain.mine(rng, Vec::new());
        }
        chain
    }

    /// The tip's height.
    pub fn height(&self) -> u64 {
        (self.blocks.len() as u64).saturating_sub(1)
    }

    fn index(&self) -> Rc<Index> {
        if let Some(index) = self.index.borrow().as_ref() {
            return Rc::clone(index);
        }
        let index = Rc::new(self.build_index());
        *self.index.borrow_mut() = Some(Rc::clone(&index));
        index
    }

    fn build_index(&self) -> Index {
        let mut index = Index::default();
        let transactions = self
            .blocks
            .iter()
            .flat_map(|block| block.transactions.iter())
            .chain(self.mempool.iter());
        for transaction in transactions {
            index.add(transaction);
        }
        index
    }

    /// Mines a block holding `deposits` and every mempool transaction whose inputs exist and
    /// whose fee rate is at least a quarter of the market's (or unknown: a depositor's).
    pub fn mine(&mut self, rng: &mut Rng, deposits: Vec<Transaction>) {
        self.index.replace(None);
        // Every output that exists, with its value (a depositor's own coin: unknown).
        let mut created: BTreeMap<OutPoint, Option<u64>> = self
            .external
            .iter()
            .map(|outpoint| (*outpoint, None))
            .collect();
        for block in &self.blocks {
            for transaction in &block.transactions {
                add_outputs(&mut created, transaction);
            }
        }
        let mut included = deposits;
        for transaction in &included {
            add_outputs(&mut created, transaction);
        }
        let mut left = Vec::new();
        let floor = self.market / 4;
        // Outputs spent by the chain or this block: a mempool transaction spending one again
        // is a conflict, dropped.
        let mut spent: BTreeSet<OutPoint> = self
            .blocks
            .iter()
            .flat_map(|block| block.transactions.iter())
            .chain(&included)
            .flat_map(|transaction| transaction.input.iter())
            .map(|input| input.previous_output)
            .collect();
        for transaction in std::mem::take(&mut self.mempool) {
            if transaction
                .input
                .iter()
                .any(|input| spent.contains(&input.previous_output))
            {
                continue;
            }
            let exists = transaction
                .input
                .iter()
                .all(|input| created.contains_key(&input.previous_output));
            if exists
                && fee_of(&created, &transaction)
                    .is_none_or(|fee| fee >= floor * vsize(&transaction))
            {
                add_outputs(&mut created, &transaction);
                spent.extend(transaction.input.iter().map(|input| input.previous_output));
                included.push(transaction);
            } else {
                left.push(transaction);
            }
        }
        // A child paying for its parents (CPFP): a transaction left out whose package (it and
        // its ancestors left out) pays the floor takes them all in, parents first.
        while let Some(package) =
            (0..left.len())
                .map(|index| package_of(&left, index))
                .find(|package| {
                    let members: Vec<&Transaction> = package.iter().map(|at| &left[*at]).collect();
                    package_pays(&created, &spent, &members, floor)
                })
        {
            for at in package.iter().rev() {
                let transaction = left.remove(*at);
                included.push(transaction);
            }
            let start = included.len() - package.len();
            included[start..].reverse();
            for transaction in &included[start..] {
                add_outputs(&mut created, transaction);
                spent.extend(transaction.input.iter().map(|input| input.previous_output));
            }
        }
        self.mempool = left;
        let parent = self.blocks.last().map_or([0; 32], |block| block.hash);
        let height = self.blocks.len() as u64;
        included.insert(0, coinbase(rng));
        self.blocks.push(Block {
            hash: rng.bytes32(),
            parent,
            time: 1_700_000_000 + height * 600,
            fee_rate: self.market,
            transactions: included,
        });
    }

    /// Replaces the top `depth` blocks with `depth + 1` new ones: their transactions go back
    /// to the mempool, except the deposits `keep` refuses (double-spent on the new branch).
    pub fn reorganize(
        &mut self,
        rng: &mut Rng,
        depth: u64,
        mut keep: impl FnMut(&Transaction) -> bool,
    ) {
        self.index.replace(None);
        let depth = usize::try_from(depth)
            .unwrap_or(usize::MAX)
            .min(self.blocks.len().saturating_sub(1));
        let cut = self.blocks.len() - depth;
        let removed: Vec<Block> = self.blocks.drain(cut..).collect();
        let mut returned: Vec<Transaction> = removed
            .into_iter()
            .flat_map(|block| block.transactions)
            .filter(|transaction| !transaction.is_coinbase() && keep(transaction))
            .collect();
        returned.append(&mut self.mempool);
        self.mempool = returned;
        for _ in 0..=depth {
            self.mine(rng, Vec::new());
        }
    }

    /// Whether a transaction in the best chain created `outpoint` (or it is a depositor's coin).
    pub fn exists_in_blocks(&self, outpoint: &OutPoint) -> bool {
        self.external.contains(outpoint)
            || self
                .blocks
                .iter()
                .flat_map(|block| block.transactions.iter())
                .any(|transaction| {
                    transaction.compute_txid() == outpoint.txid
                        && usize::try_from(outpoint.vout)
                            .is_ok_and(|vout| vout < transaction.output.len())
                })
    }

    /// Whether a transaction in the best chain spends `outpoint`.
    pub fn spent_in_blocks(&self, outpoint: &OutPoint) -> bool {
        self.blocks
            .iter()
            .flat_map(|block| block.transactions.iter())
            .flat_map(|transaction| transaction.input.iter())
            .any(|input| input.previous_output == *outpoint)
    }

    /// Adds a transaction to the mempool, as a node's `sendrawtransaction` would.
    ///
    /// # Errors
    /// It spends an output that does not exist or that another transaction spends.
    pub fn publish(&mut self, transaction: Transaction) -> Result<(), NetworkError> {
        let index = self.index();
        let txid = transaction.compute_txid();
        if index.known.contains_key(&txid) {
            return Ok(());
        }
        let mut conflicts = BTreeSet::new();
        for input in &transaction.input {
            if !index.created.contains_key(&input.previous_output)
                && !self.external.contains(&input.previous_output)
            {
                return Err(NetworkError::Refused("missing inputs".into()));
            }
            if let Some(spender) = index.spent.get(&input.previous_output) {
                conflicts.insert(*spender);
            }
        }
        if !conflicts.is_empty() {
            let in_mempool: Vec<&Transaction> = self
                .mempool
                .iter()
                .filter(|pooled| conflicts.contains(&pooled.compute_txid()))
                .collect();
            let values: BTreeMap<OutPoint, Option<u64>> = index
                .created
                .iter()
                .map(|(outpoint, output)| (*outpoint, Some(output.value.to_sat())))
                .collect();
            let outbids =
                |old: &Transaction| match (fee_of(&values, old), fee_of(&values, &transaction)) {
                    (Some(old_fee), Some(new_fee)) => {
                        u128::from(new_fee) * u128::from(vsize(old))
                            > u128::from(old_fee) * u128::from(vsize(&transaction))
                            && new_fee >= old_fee.saturating_add(vsize(&transaction))
                    }
                    _ => false,
                };
            if in_mempool.len() != conflicts.len() {
                return Err(NetworkError::Refused("conflicts with a spend".into()));
            }
            if !in_mempool.iter().all(|old| outbids(old)) {
                return Err(NetworkError::Refused("insufficient fee".into()));
            }
            self.mempool
                .retain(|pooled| !conflicts.contains(&pooled.compute_txid()));
        }
        self.mempool.push(transaction);
        self.index.replace(None);
        Ok(())
    }

    /// The amounts of the best chain's outputs paying `script`.
    pub fn payments_to(&self, script: &ScriptBuf) -> Vec<u64> {
        self.blocks
            .iter()
            .flat_map(|block| block.transactions.iter())
            .flat_map(|transaction| transaction.output.iter())
            .filter(|output| output.script_pubkey == *script)
            .map(|output| output.value.to_sat())
            .collect()
    }

    /// The best chain's block at `height`, as a node gives it.
    fn chain_block(&self, height: u64) -> Result<ChainBlock, NetworkError> {
        let block = usize::try_from(height)
            .ok()
            .and_then(|index| self.blocks.get(index))
            .ok_or(NetworkError::NoBlock(height))?;
        Ok(ChainBlock {
            height,
            hash: block.hash,
            parent: block.parent,
            time: block.time,
            transactions: block
                .transactions
                .iter()
                .map(chain_transaction)
                .collect::<Result<_, _>>()?,
        })
    }
}

impl Index {
    fn add(&mut self, transaction: &Transaction) {
        let txid = transaction.compute_txid();
        for input in &transaction.input {
            self.spent.insert(input.previous_output, txid);
        }
        for (vout, output) in (0u32..).zip(&transaction.output) {
            self.created.insert(OutPoint { txid, vout }, output.clone());
        }
        self.known.insert(txid, transaction.clone());
    }
}

/// A coinbase paying nowhere of ours; its random tag keeps every coinbase's id distinct.
fn coinbase(rng: &mut Rng) -> Transaction {
    let tag = rng.bytes32();
    Transaction {
        version: bitcoin::transaction::Version::TWO,
        lock_time: bitcoin::absolute::LockTime::ZERO,
        input: vec![bitcoin::TxIn {
            previous_output: OutPoint::null(),
            script_sig: ScriptBuf::from_bytes(tag.to_vec()),
            sequence: bitcoin::Sequence::MAX,
            witness: bitcoin::Witness::new(),
        }],
        output: vec![TxOut {
            value: bitcoin::Amount::from_sat(50_000),
            script_pubkey: ScriptBuf::new(),
        }],
    }
}

fn add_outputs(created: &mut BTreeMap<OutPoint, Option<u64>>, transaction: &Transaction) {
    let txid = transaction.compute_txid();
    for (vout, output) in (0u32..).zip(&transaction.output) {
        created.insert(OutPoint { txid, vout }, Some(output.value.to_sat()));
    }
}

/// The fee `transaction` pays, from the values of the outputs it spends (`None` when one is
/// unknown: a depositor's own coin, or missing).
fn fee_of(created: &BTreeMap<OutPoint, Option<u64>>, transaction: &Transaction) -> Option<u64> {
    let mut spent = 0_u64;
    for input in &transaction.input {
        spent = spent.checked_add((*created.get(&input.previous_output)?)?)?;
    }
    let paid = transaction
        .output
        .iter()
        .try_fold(0_u64, |sum, output| sum.checked_add(output.value.to_sat()))?;
    spent.checked_sub(paid)
}

/// The indices in `pool` of the transaction at `index` and its ancestors there, ascending
/// (parents first: a transaction enters the mempool after what it spends from).
fn package_of(pool: &[Transaction], index: usize) -> Vec<usize> {
    let txids: Vec<Txid> = pool.iter().map(Transaction::compute_txid).collect();
    let mut package = BTreeSet::from([index]);
    let mut next = vec![index];
    while let Some(at) = next.pop() {
        for input in &pool[at].input {
            if let Some(parent) = txids
                .iter()
                .position(|txid| *txid == input.previous_output.txid)
            {
                if package.insert(parent) {
                    next.push(parent);
                }
            }
        }
    }
    package.into_iter().collect()
}

/// Whether `package` (parents first) can be mined on top of `created` with nothing in `spent`
/// spent again, paying at least `floor` sat/vB over the whole package.
fn package_pays(
    created: &BTreeMap<OutPoint, Option<u64>>,
    spent: &BTreeSet<OutPoint>,
    package: &[&Transaction],
    floor: u64,
) -> bool {
    let mut own = BTreeMap::new();
    for transaction in package {
        add_outputs(&mut own, transaction);
    }
    let (mut fee, mut size) = (0_u64, 0_u64);
    for transaction in package {
        let mut values = BTreeMap::new();
        for input in &transaction.input {
            let outpoint = input.previous_output;
            let value = created.get(&outpoint).or_else(|| own.get(&outpoint));
            match value {
                Some(value) if !spent.contains(&outpoint) => values.insert(outpoint, *value),
                _ => return false,
            };
        }
        let Some(paid) = fee_of(&values, transaction) else {
            return false;
        };
        fee = fee.saturating_add(paid);
        size = size.saturating_add(vsize(transaction));
    }
    fee >= floor.saturating_mul(size)
}

fn vsize(transaction: &Transaction) -> u64 {
    u64::try_from(transaction.vsize()).unwrap_or(u64::MAX)
}

/// One validator's node: the shared chain, and whether it answers.
#[derive(Clone)]
pub struct SimNode {
    chain: Rc<RefCell<Chain>>,
    down: Rc<Cell<bool>>,
}

impl SimNode {
    /// A node following `chain`, answering while `down` is false.
    pub fn new(chain: Rc<RefCell<Chain>>, down: Rc<Cell<bool>>) -> Self {
        SimNode { chain, down }
    }

    fn up(&self) -> Result<(), NetworkError> {
        if self.down.get() {
            return Err(NetworkError::Node("connection refused (simulated)".into()));
        }
        Ok(())
    }
}

impl Network for SimNode {
    type Typing = KeyScripts;
    type Block = ChainBlock;

    fn latest_height(&self) -> Result<u64, NetworkError> {
        self.up()?;
        Ok(self.chain.borrow().height())
    }

    fn block(&self, height: u64) -> Result<ChainBlock, NetworkError> {
        self.up()?;
        self.chain.borrow().chain_block(height)
    }

    fn blocks(
        &self,
        from: u64,
        to: u64,
    ) -> impl Iterator<Item = Result<ChainBlock, NetworkError>> + 'static {
        let node = self.clone();
        let mut failed = false;
        (from..=to).map_while(move |height| {
            if failed {
                return None;
            }
            let block = node.block(height);
            failed = block.is_err();
            Some(block)
        })
    }

    fn height_of(&self, hash: [u8; 32]) -> Result<Option<u64>, NetworkError> {
        self.up()?;
        Ok(self
            .chain
            .borrow()
            .blocks
            .iter()
            .position(|block| block.hash == hash)
            .map(|height| height as u64))
    }

    fn typing(&self, key: &NetworkKey) -> Result<KeyScripts, NetworkError> {
        KeyScripts::derive(key).map_err(|error| NetworkError::Invalid(error.to_string()))
    }

    fn fee_rate_of(&self, block: [u8; 32]) -> Result<Option<FeeRate>, NetworkError> {
        self.up()?;
        Ok(self
            .chain
            .borrow()
            .blocks
            .iter()
            .find(|candidate| candidate.hash == block)
            .filter(|block| block.transactions.len() > 1)
            .map(|block| FeeRate(block.fee_rate)))
    }

    fn fee_rate(&self) -> Result<Option<FeeRate>, NetworkError> {
        self.up()?;
        Ok(Some(FeeRate(self.chain.borrow().market)))
    }

    fn publish(&self, transaction: &[u8]) -> Result<(), NetworkError> {
        self.up()?;
        let transaction: Transaction = consensus::deserialize(transaction)
            .map_err(|error| NetworkError::Invalid(error.to_string()))?;
        self.chain.borrow_mut().publish(transaction)
    }

    fn transaction(&self, id: &TransactionId) -> Result<Option<Vec<u8>>, NetworkError> {
        self.up()?;
        let txid = Txid::from_byte_array(id.0);
        Ok(self
            .chain
            .borrow()
            .index()
            .known
            .get(&txid)
            .map(consensus::serialize))
    }
}
