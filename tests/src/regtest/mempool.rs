//! Transactions waiting for a block, admitted only when Bitcoin Core 28+ would relay them: inputs
//! that exist unspent (in the chain or the mempool), mature coinbases, every input's script
//! verified by Core's interpreter with all spent outputs, at least the minimum relay fee, at most
//! the standard weight, and a conflict only as a full-RBF replacement (`replacement`). Fees may be
//! shifted by `prioritisetransaction` deltas (`modified` fees, as Core's); the replacement rules,
//! the relay floor and the block template (`template`) use the modified fee, as Core does.
//! Rejections carry Core's codes, reasons and details.
//!
//! Not Core's: no ancestor/descendant limits (`too-long-mempool-chain`), no size limit or
//! eviction (`mempool full`), no finality (`non-final`) or dust checks, no TRUC (v3) rules.

use std::{collections::HashMap, fmt};

use bitcoin::{consensus, Amount, OutPoint, Transaction, TxOut, Txid, Weight};

use super::{chain::ChainIndex, feerate::CoreFeeRate, miner::COINBASE_MATURITY, replacement};

/// Core's `MAX_STANDARD_TX_WEIGHT`.
pub const MAX_STANDARD_WEIGHT: Weight = Weight::from_wu(400_000);
/// Core's default minimum relay fee rate (`-minrelaytxfee`, 1 sat/vB).
pub const MIN_RELAY_FEE: CoreFeeRate = CoreFeeRate::from_sat_per_kvb(1000);

/// Why a transaction is not admitted, with Core's RPC error code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// `RPC_VERIFY_REJECTED` (-26), `RPC_VERIFY_ERROR` (-25) or
    /// `RPC_VERIFY_ALREADY_IN_CHAIN` (-27).
    pub code: i64,
    /// Core's reject reason (`testmempoolaccept`'s `reject-reason`).
    pub reason: String,
    /// Core's debug message, which `sendrawtransaction` appends after a comma.
    pub detail: Option<String>,
}

impl Rejection {
    /// A policy or consensus refusal (-26) without details.
    pub fn rejected(reason: impl Into<String>) -> Self {
        Rejection {
            code: -26,
            reason: reason.into(),
            detail: None,
        }
    }

    /// A refusal (-26) with Core's debug message.
    pub fn rejected_with(reason: impl Into<String>, detail: impl Into<String>) -> Self {
        Rejection {
            detail: Some(detail.into()),
            ..Rejection::rejected(reason)
        }
    }

    /// The RPC error message, as Core's `ValidationState::ToString`: the reason, then the
    /// details after a comma.
    pub fn message(&self) -> String {
        match &self.detail {
            Some(detail) => format!("{}, {detail}", self.reason),
            None => self.reason.clone(),
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.message())
    }
}

/// A transaction in the mempool.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Its txid.
    pub txid: Txid,
    /// The transaction.
    pub transaction: Transaction,
    /// Inputs minus outputs (Core's base fee; what a block's coinbase collects).
    pub fee: Amount,
    /// Its virtual size.
    pub vsize: u64,
    /// When it was admitted (seconds since the epoch).
    pub time: u64,
    /// The tip height when it was admitted.
    pub height: u32,
}

/// What admitting a checked transaction does.
#[derive(Clone, Debug)]
pub struct Admission {
    /// The new entry.
    pub entry: Entry,
    /// What it replaces: its direct conflicts and all their descendants.
    pub replaced: Vec<Txid>,
}

/// Which rules a check applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// A transaction sent to the node (`sendrawtransaction`, `testmempoolaccept`): every rule,
    /// conflicts only as full-RBF replacements.
    Relay,
    /// A transaction the mempool held, or one of a disconnected block, re-checked after the
    /// chain changed. Core does not hold them to the relay fee floor (`bypass_limits`) and keeps
    /// what it had, so a prioritised-down transaction stays; a conflict among them is dropped
    /// (`txn-mempool-conflict`) rather than weighed as a replacement.
    Readmit,
}

/// The mempool, in admission order (parents before children), with the prioritisation deltas.
#[derive(Default)]
pub struct Mempool {
    order: Vec<Txid>,
    entries: HashMap<Txid, Entry>,
    spent_by: HashMap<OutPoint, Txid>,
    /// `prioritisetransaction` deltas (satoshis) by txid, in the mempool or not (Core's
    /// `mapDeltas`): kept for transactions yet to arrive, across chain changes.
    deltas: HashMap<Txid, i64>,
}

impl Mempool {
    /// Entries in admission order.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.order.iter().filter_map(|txid| self.entries.get(txid))
    }

    /// One entry.
    pub fn get(&self, txid: &Txid) -> Option<&Entry> {
        self.entries.get(txid)
    }

    /// The fee delta `prioritisetransaction` set for `txid` (0 without one).
    pub fn delta(&self, txid: &Txid) -> i64 {
        self.deltas.get(txid).copied().unwrap_or(0)
    }

    /// Every delta, in no particular order.
    pub fn deltas(&self) -> impl Iterator<Item = (&Txid, i64)> {
        self.deltas.iter().map(|(txid, delta)| (txid, *delta))
    }

    /// Adds `delta` satoshis to `txid`'s fee delta (Core's `PrioritiseTransaction`): cumulative,
    /// forgotten when it sums to zero, kept for a transaction not in the mempool yet.
    pub fn prioritise(&mut self, txid: Txid, delta: i64) {
        let total = self.delta(&txid).saturating_add(delta);
        if total == 0 {
            self.deltas.remove(&txid);
        } else {
            self.deltas.insert(txid, total);
        }
    }

    /// Forgets `txid`'s delta (Core's `ClearPrioritisation`, when a block confirms it).
    pub fn clear_prioritisation(&mut self, txid: &Txid) {
        self.deltas.remove(txid);
    }

    /// An entry's modified fee in satoshis: its fee plus its delta (may be negative).
    pub fn modified_fee(&self, entry: &Entry) -> i64 {
        sat(entry.fee).saturating_add(self.delta(&entry.txid))
    }

    /// The in-mempool transactions `txid` spends from, in input order.
    pub fn parents(&self, txid: &Txid) -> Vec<Txid> {
        self.entries
            .get(txid)
            .map(|entry| self.parents_of(&entry.transaction))
            .unwrap_or_default()
    }

    /// The in-mempool transactions spending `txid`'s outputs.
    pub fn children(&self, txid: &Txid) -> Vec<Txid> {
        let Some(entry) = self.entries.get(txid) else {
            return Vec::new();
        };
        let mut children = Vec::new();
        for vout in 0..u32::try_from(entry.transaction.output.len()).unwrap_or(u32::MAX) {
            if let Some(child) = self.spent_by.get(&OutPoint { txid: *txid, vout }) {
                if !children.contains(child) {
                    children.push(*child);
                }
            }
        }
        children
    }

    /// Every in-mempool ancestor of `txid`, itself excluded.
    pub fn ancestors(&self, txid: &Txid) -> Vec<Txid> {
        closure(self.parents(txid), |txid| self.parents(txid))
    }

    /// Every in-mempool descendant of `txid`, itself excluded.
    pub fn descendants(&self, txid: &Txid) -> Vec<Txid> {
        closure(self.children(txid), |txid| self.children(txid))
    }

    /// Checks a transaction against the chain and this mempool without admitting it, in Core's
    /// order: structure, inputs, fee, conflicts with its own ancestors, replacement, scripts.
    ///
    /// # Errors
    /// Why Core would refuse it.
    pub fn check(
        &self,
        chain: &ChainIndex,
        transaction: &Transaction,
        now: u64,
        policy: Policy,
    ) -> Result<Admission, Rejection> {
        let txid = transaction.compute_txid();
        if chain.transaction(&txid).is_some() {
            return Err(Rejection {
                code: -27,
                reason: "Transaction already in block chain".into(),
                detail: None,
            });
        }
        if transaction.is_coinbase() {
            return Err(Rejection::rejected("coinbase"));
        }
        if transaction.input.is_empty() {
            return Err(Rejection::rejected("bad-txns-vin-empty"));
        }
        if transaction.output.is_empty() {
            return Err(Rejection::rejected("bad-txns-vout-empty"));
        }
        if transaction.weight() > MAX_STANDARD_WEIGHT {
            return Err(Rejection::rejected("tx-size"));
        }
        let spend_height = chain.height() + 1;
        let mut spent = Vec::with_capacity(transaction.input.len());
        let mut conflicts: Vec<Txid> = Vec::new();
        for input in &transaction.input {
            if let Some(other) = self.spent_by.get(&input.previous_output) {
                if *other != txid && !conflicts.contains(other) {
                    conflicts.push(*other);
                }
            }
            let output = match chain.coin(&input.previous_output) {
                Some(coin) => {
                    if coin.coinbase && spend_height - coin.height < COINBASE_MATURITY {
                        return Err(Rejection::rejected("bad-txns-premature-spend-of-coinbase"));
                    }
                    coin.output.clone()
                }
                None => self.output(&input.previous_output).ok_or(Rejection {
                    code: -25,
                    reason: "bad-txns-inputs-missingorspent".into(),
                    detail: None,
                })?,
            };
            spent.push(output);
        }
        if policy == Policy::Readmit && !conflicts.is_empty() {
            return Err(Rejection::rejected("txn-mempool-conflict"));
        }
        let inputs: Amount = spent.iter().map(|output| output.value).sum();
        let outputs: Amount = transaction.output.iter().map(|output| output.value).sum();
        let fee = inputs
            .checked_sub(outputs)
            .ok_or_else(|| Rejection::rejected("bad-txns-in-belowout"))?;
        let vsize = u64::try_from(transaction.vsize()).unwrap_or(u64::MAX);
        let modified_fee = sat(fee).saturating_add(self.delta(&txid));
        if policy == Policy::Relay {
            let minimum = MIN_RELAY_FEE.fee(vsize);
            if modified_fee < minimum {
                return Err(Rejection::rejected_with(
                    "min relay fee not met",
                    format!("{modified_fee} < {minimum}"),
                ));
            }
        }
        let ancestors = closure(self.parents_of(transaction), |txid| self.parents(txid));
        replacement::entries_and_txids_disjoint(&ancestors, &conflicts, &txid)?;
        let replaced = if conflicts.is_empty() {
            Vec::new()
        } else {
            let candidate = replacement::Candidate {
                txid,
                transaction,
                modified_fee,
                vsize,
            };
            replacement::check(&candidate, &self.conflicts(&conflicts), |txid| {
                self.entries.contains_key(txid)
            })?
        };
        verify_scripts(transaction, &spent)?;
        Ok(Admission {
            entry: Entry {
                txid,
                transaction: transaction.clone(),
                fee,
                vsize,
                time: now,
                height: chain.height(),
            },
            replaced,
        })
    }

    /// Admits a checked transaction, first evicting what it replaces.
    pub fn insert(&mut self, admission: Admission) {
        let Admission { entry, replaced } = admission;
        if self.entries.contains_key(&entry.txid) {
            return;
        }
        for txid in &replaced {
            self.remove(txid);
        }
        for input in &entry.transaction.input {
            self.spent_by.insert(input.previous_output, entry.txid);
        }
        self.order.push(entry.txid);
        self.entries.insert(entry.txid, entry);
    }

    /// Removes and returns every entry, in admission order (to re-admit after a chain change);
    /// the deltas stay.
    pub fn drain(&mut self) -> Vec<Entry> {
        let order = std::mem::take(&mut self.order);
        self.spent_by.clear();
        let mut entries = std::mem::take(&mut self.entries);
        order
            .into_iter()
            .filter_map(|txid| entries.remove(&txid))
            .collect()
    }

    fn remove(&mut self, txid: &Txid) {
        let Some(entry) = self.entries.remove(txid) else {
            return;
        };
        for input in &entry.transaction.input {
            if self.spent_by.get(&input.previous_output) == Some(txid) {
                self.spent_by.remove(&input.previous_output);
            }
        }
        self.order.retain(|kept| kept != txid);
    }

    /// The replacement rules' view of the direct conflicts.
    fn conflicts(&self, txids: &[Txid]) -> Vec<replacement::Conflict> {
        txids
            .iter()
            .filter_map(|txid| {
                let entry = self.entries.get(txid)?;
                Some(replacement::Conflict {
                    txid: *txid,
                    modified_fee: self.modified_fee(entry),
                    vsize: entry.vsize,
                    spends: entry
                        .transaction
                        .input
                        .iter()
                        .map(|input| input.previous_output.txid)
                        .collect(),
                    descendants: self
                        .descendants(txid)
                        .into_iter()
                        .filter_map(|descendant| {
                            let entry = self.entries.get(&descendant)?;
                            Some((descendant, self.modified_fee(entry)))
                        })
                        .collect(),
                })
            })
            .collect()
    }

    fn parents_of(&self, transaction: &Transaction) -> Vec<Txid> {
        let mut parents = Vec::new();
        for input in &transaction.input {
            let parent = input.previous_output.txid;
            if self.entries.contains_key(&parent) && !parents.contains(&parent) {
                parents.push(parent);
            }
        }
        parents
    }

    fn output(&self, outpoint: &OutPoint) -> Option<TxOut> {
        let entry = self.entries.get(&outpoint.txid)?;
        entry
            .transaction
            .output
            .get(usize::try_from(outpoint.vout).ok()?)
            .cloned()
    }
}

/// An amount in signed satoshis (every real amount fits).
fn sat(amount: Amount) -> i64 {
    i64::try_from(amount.to_sat()).unwrap_or(i64::MAX)
}

/// Everything reachable from `start` through `next`, each once, `start` first.
fn closure(start: Vec<Txid>, next: impl Fn(&Txid) -> Vec<Txid>) -> Vec<Txid> {
    let mut found = start;
    let mut index = 0;
    while let Some(txid) = found.get(index).copied() {
        for reached in next(&txid) {
            if !found.contains(&reached) {
                found.push(reached);
            }
        }
        index += 1;
    }
    found
}

/// Every input's script through Bitcoin Core's interpreter, with every spent output and every
/// consensus flag (Taproot included).
fn verify_scripts(transaction: &Transaction, spent: &[TxOut]) -> Result<(), Rejection> {
    let failed = |detail: String| {
        Rejection::rejected(format!("mandatory-script-verify-flag-failed ({detail})"))
    };
    let bytes = consensus::serialize(transaction);
    let kernel_transaction =
        bitcoinkernel::Transaction::new(&bytes).map_err(|error| failed(error.to_string()))?;
    let mut scripts = Vec::with_capacity(spent.len());
    let mut outputs = Vec::with_capacity(spent.len());
    for output in spent {
        let script = bitcoinkernel::ScriptPubkey::new(output.script_pubkey.as_bytes())
            .map_err(|error| failed(error.to_string()))?;
        let amount = i64::try_from(output.value.to_sat()).map_err(|e| failed(e.to_string()))?;
        outputs.push(bitcoinkernel::TxOut::new(&script, amount));
        scripts.push((script, amount));
    }
    let precomputed = bitcoinkernel::PrecomputedTransactionData::new(&kernel_transaction, &outputs)
        .map_err(|error| failed(error.to_string()))?;
    for (index, (script, amount)) in scripts.iter().enumerate() {
        bitcoinkernel::verify(
            script,
            Some(*amount),
            &kernel_transaction,
            index,
            Some(bitcoinkernel::VERIFY_ALL),
            &precomputed,
        )
        .map_err(|error| failed(format!("input {index}: {error}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use bitcoin::hashes::Hash;

    use super::*;

    #[test]
    fn deltas_add_up_wait_for_their_transaction_and_vanish_at_zero() {
        let mut mempool = Mempool::default();
        let txid = Txid::from_byte_array([7; 32]);
        mempool.prioritise(txid, -500);
        mempool.prioritise(txid, 200);
        assert_eq!(mempool.delta(&txid), -300);
        assert_eq!(mempool.deltas().collect::<Vec<_>>(), vec![(&txid, -300)]);
        mempool.prioritise(txid, 300);
        assert_eq!(mempool.deltas().count(), 0);
        mempool.prioritise(txid, i64::MAX);
        mempool.prioritise(txid, 1);
        assert_eq!(
            mempool.delta(&txid),
            i64::MAX,
            "saturates as Core's SaturatingAdd"
        );
        mempool.clear_prioritisation(&txid);
        assert_eq!(mempool.delta(&txid), 0);
    }

    #[test]
    fn a_closure_reaches_everything_once() {
        let id = |byte: u8| Txid::from_byte_array([byte; 32]);
        // 1 -> 2 -> 4, 1 -> 3 -> 4: 4 once.
        let edges = |txid: &Txid| match txid.as_byte_array()[0] {
            1 => vec![id(2), id(3)],
            2 | 3 => vec![id(4)],
            _ => Vec::new(),
        };
        assert_eq!(closure(edges(&id(1)), edges), vec![id(2), id(3), id(4)]);
    }

    #[test]
    fn a_rejection_reads_as_cores_validation_state() {
        let rejection = Rejection::rejected_with("min relay fee not met", "0 < 111");
        assert_eq!(rejection.to_string(), "min relay fee not met, 0 < 111");
        assert_eq!(Rejection::rejected("coinbase").message(), "coinbase");
    }
}
