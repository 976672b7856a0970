//! Transactions waiting for a block, admitted only when Bitcoin Core would relay them: inputs
//! that exist unspent (in the chain or the mempool), mature coinbases, every input's script
//! verified by Core's interpreter with all spent outputs, no conflict, at least the minimum
//! relay fee, and at most the standard weight. Rejections carry Core's codes and reasons.

use std::collections::HashMap;

use bitcoin::{consensus, Amount, OutPoint, Transaction, TxOut, Txid, Weight};

use super::{chain::ChainIndex, miner::COINBASE_MATURITY};

/// Core's `MAX_STANDARD_TX_WEIGHT`.
pub const MAX_STANDARD_WEIGHT: Weight = Weight::from_wu(400_000);
/// Core's default minimum relay fee rate, in satoshis per virtual byte.
pub const MIN_RELAY_SAT_PER_VBYTE: u64 = 1;

/// Why a transaction is not admitted, with Core's RPC error code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// `RPC_VERIFY_REJECTED` (-26), `RPC_VERIFY_ERROR` (-25) or
    /// `RPC_VERIFY_ALREADY_IN_CHAIN` (-27).
    pub code: i64,
    /// Core's reject reason.
    pub reason: String,
}

impl Rejection {
    fn rejected(reason: impl Into<String>) -> Self {
        Rejection {
            code: -26,
            reason: reason.into(),
        }
    }
}

/// A transaction in the mempool.
#[derive(Clone, Debug)]
pub struct Entry {
    /// The transaction.
    pub transaction: Transaction,
    /// Inputs minus outputs.
    pub fee: Amount,
    /// Its virtual size.
    pub vsize: u64,
    /// When it was admitted (seconds since the epoch).
    pub time: u64,
    /// The tip height when it was admitted.
    pub height: u32,
}

/// The mempool, in admission order (parents before children).
#[derive(Default)]
pub struct Mempool {
    order: Vec<Txid>,
    entries: HashMap<Txid, Entry>,
    spent_by: HashMap<OutPoint, Txid>,
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

    /// Checks a transaction against the chain and this mempool without admitting it.
    ///
    /// # Errors
    /// Why Core would refuse it.
    pub fn check(
        &self,
        chain: &ChainIndex,
        transaction: &Transaction,
        now: u64,
    ) -> Result<Entry, Rejection> {
        let txid = transaction.compute_txid();
        if chain.transaction(&txid).is_some() {
            return Err(Rejection {
                code: -27,
                reason: "Transaction already in block chain".into(),
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
        for input in &transaction.input {
            if let Some(other) = self.spent_by.get(&input.previous_output) {
                if *other != txid {
                    return Err(Rejection::rejected("txn-mempool-conflict"));
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
                })?,
            };
            spent.push(output);
        }
        let inputs: Amount = spent.iter().map(|output| output.value).sum();
        let outputs: Amount = transaction.output.iter().map(|output| output.value).sum();
        let fee = inputs
            .checked_sub(outputs)
            .ok_or_else(|| Rejection::rejected("bad-txns-in-belowout"))?;
        let vsize = transaction.vsize() as u64;
        let minimum = Amount::from_sat(vsize * MIN_RELAY_SAT_PER_VBYTE);
        if fee < minimum {
            return Err(Rejection::rejected(format!(
                "min relay fee not met, {} < {}",
                fee.to_sat(),
                minimum.to_sat()
            )));
        }
        verify_scripts(transaction, &spent)?;
        Ok(Entry {
            transaction: transaction.clone(),
            fee,
            vsize,
            time: now,
            height: chain.height(),
        })
    }

    /// Admits a checked transaction.
    pub fn insert(&mut self, entry: Entry) {
        let txid = entry.transaction.compute_txid();
        if self.entries.contains_key(&txid) {
            return;
        }
        for input in &entry.transaction.input {
            self.spent_by.insert(input.previous_output, txid);
        }
        self.order.push(txid);
        self.entries.insert(txid, entry);
    }

    /// Removes and returns everything, in admission order (to re-admit after a chain change).
    pub fn drain(&mut self) -> Vec<Entry> {
        let order = std::mem::take(&mut self.order);
        self.spent_by.clear();
        let mut entries = std::mem::take(&mut self.entries);
        order
            .into_iter()
            .filter_map(|txid| entries.remove(&txid))
            .collect()
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
