//! Full replace-by-fee, as Bitcoin Core 28 applies it by default (`-mempoolfullrbf=1`: no BIP125
//! signal needed): the rules of Core's `policy/rbf.cpp`, in the order `MemPoolAccept` checks
//! them, with Core's reasons and details (all code -26).
//!
//! - `bad-txns-spends-conflicting-tx`: the transaction spends (through its in-mempool
//!   ancestors) a transaction it would replace.
//! - Rule 6, `insufficient fee` (`new feerate … <= old feerate …`): its modified fee rate must
//!   be strictly above each direct conflict's, rates truncated to sat/kvB as `CFeeRate` does.
//! - Rule 5, `too many potential replacements`: the direct conflicts with their descendants,
//!   counted per conflict as Core counts them (a shared descendant twice), must not exceed 100.
//! - Rule 2, `replacement-adds-unconfirmed`: every input from an in-mempool transaction must
//!   come from a transaction a direct conflict also spends from (Core 28; Core 29 widened this
//!   to the inputs of every replaced transaction).
//! - Rules 3 and 4, `insufficient fee` (`less fees than conflicting txs` / `not enough
//!   additional fees to relay`): its modified fee must cover the modified fees of everything
//!   replaced, plus the incremental relay fee (1 sat/vB) for its own size.
//!
//! Not modelled: package RBF and its feerate diagram, TRUC sibling eviction.

use std::collections::HashSet;

use bitcoin::{Transaction, Txid};

use super::{
    feerate::{format_money, CoreFeeRate},
    mempool::Rejection,
};

/// Core's `MAX_REPLACEMENT_CANDIDATES`.
pub const MAX_REPLACEMENT_CANDIDATES: usize = 100;
/// Core's default `-incrementalrelayfee` (1 sat/vB).
pub const INCREMENTAL_RELAY_FEE: CoreFeeRate = CoreFeeRate::from_sat_per_kvb(1000);

/// The transaction that would replace others.
pub struct Candidate<'a> {
    /// Its txid.
    pub txid: Txid,
    /// The transaction.
    pub transaction: &'a Transaction,
    /// Its fee plus any `prioritisetransaction` delta, in satoshis.
    pub modified_fee: i64,
    /// Its virtual size.
    pub vsize: u64,
}

/// A mempool transaction the candidate conflicts with directly (spends one of its inputs).
pub struct Conflict {
    /// Its txid.
    pub txid: Txid,
    /// Its modified fee, in satoshis.
    pub modified_fee: i64,
    /// Its virtual size.
    pub vsize: u64,
    /// The txids whose outputs it spends.
    pub spends: HashSet<Txid>,
    /// Its in-mempool descendants with their modified fees: replaced with it.
    pub descendants: Vec<(Txid, i64)>,
}

/// Core's `EntriesAndTxidsDisjoint`: a transaction spending (directly or through ancestors) a
/// transaction it conflicts with cannot be valid alongside either.
///
/// # Errors
/// `bad-txns-spends-conflicting-tx`.
pub fn entries_and_txids_disjoint(
    ancestors: &[Txid],
    conflicts: &[Txid],
    txid: &Txid,
) -> Result<(), Rejection> {
    match ancestors
        .iter()
        .find(|ancestor| conflicts.contains(ancestor))
    {
        Some(ancestor) => Err(Rejection::rejected_with(
            "bad-txns-spends-conflicting-tx",
            format!("{txid} spends conflicting transaction {ancestor}"),
        )),
        None => Ok(()),
    }
}

/// `MemPoolAccept::ReplacementChecks` for a single transaction: rules 6, 5, 2, then 3 and 4.
/// Returns what would be replaced: the direct conflicts and their descendants, each once.
///
/// # Errors
/// The first rule broken, as Core reports it.
pub fn check(
    candidate: &Candidate<'_>,
    conflicts: &[Conflict],
    in_mempool: impl Fn(&Txid) -> bool,
) -> Result<Vec<Txid>, Rejection> {
    pays_more_than_conflicts(candidate, conflicts)?;
    not_too_many(candidate, conflicts)?;
    has_no_new_unconfirmed(candidate, conflicts, in_mempool)?;
    let mut replaced: Vec<Txid> = Vec::new();
    let mut replaced_fees: i64 = 0;
    let all = conflicts.iter().flat_map(|conflict| {
        std::iter::once((conflict.txid, conflict.modified_fee))
            .chain(conflict.descendants.iter().copied())
    });
    for (txid, fee) in all {
        if !replaced.contains(&txid) {
            replaced.push(txid);
            replaced_fees = replaced_fees.saturating_add(fee);
        }
    }
    pays_for_rbf(candidate, replaced_fees)?;
    Ok(replaced)
}

/// Rule 6 (Core's `PaysMoreThanConflicts`): a replacement must not lower the mempool's fee
/// rate, so it pays a strictly higher rate than each transaction it directly replaces.
fn pays_more_than_conflicts(
    candidate: &Candidate<'_>,
    conflicts: &[Conflict],
) -> Result<(), Rejection> {
    let new = CoreFeeRate::from_fee(candidate.modified_fee, candidate.vsize);
    for conflict in conflicts {
        let old = CoreFeeRate::from_fee(conflict.modified_fee, conflict.vsize);
        if new <= old {
            return Err(Rejection::rejected_with(
                "insufficient fee",
                format!(
                    "rejecting replacement {}; new feerate {new} <= old feerate {old}",
                    candidate.txid
                ),
            ));
        }
    }
    Ok(())
}

/// Rule 5 (Core's `GetEntriesForConflicts`): bounds the work one replacement may cause.
fn not_too_many(candidate: &Candidate<'_>, conflicts: &[Conflict]) -> Result<(), Rejection> {
    let mut count = 0usize;
    for conflict in conflicts {
        count += 1 + conflict.descendants.len();
        if count > MAX_REPLACEMENT_CANDIDATES {
            return Err(Rejection::rejected_with(
                "too many potential replacements",
                format!(
                    "rejecting replacement {}; too many potential replacements ({count} > {MAX_REPLACEMENT_CANDIDATES})",
                    candidate.txid
                ),
            ));
        }
    }
    Ok(())
}

/// Rule 2 (Core's `HasNoNewUnconfirmed`): a replacement must not need new low-fee unconfirmed
/// parents mined first; Core compares txids, not outpoints, and asks only the mempool.
fn has_no_new_unconfirmed(
    candidate: &Candidate<'_>,
    conflicts: &[Conflict],
    in_mempool: impl Fn(&Txid) -> bool,
) -> Result<(), Rejection> {
    for (index, input) in candidate.transaction.input.iter().enumerate() {
        let parent = input.previous_output.txid;
        let known = conflicts
            .iter()
            .any(|conflict| conflict.spends.contains(&parent));
        if !known && in_mempool(&parent) {
            return Err(Rejection::rejected_with(
                "replacement-adds-unconfirmed",
                format!(
                    "replacement {} adds unconfirmed input, idx {index}",
                    candidate.txid
                ),
            ));
        }
    }
    Ok(())
}

/// Rules 3 and 4 (Core's `PaysForRBF`): the replacement pays for the bandwidth of what it
/// replaces, and for its own at the incremental relay fee.
fn pays_for_rbf(candidate: &Candidate<'_>, original_fees: i64) -> Result<(), Rejection> {
    let replacement_fees = candidate.modified_fee;
    if replacement_fees < original_fees {
        return Err(Rejection::rejected_with(
            "insufficient fee",
            format!(
                "rejecting replacement {}, less fees than conflicting txs; {} < {}",
                candidate.txid,
                format_money(replacement_fees),
                format_money(original_fees)
            ),
        ));
    }
    let additional = replacement_fees - original_fees;
    let relay = INCREMENTAL_RELAY_FEE.fee(candidate.vsize);
    if additional < relay {
        return Err(Rejection::rejected_with(
            "insufficient fee",
            format!(
                "rejecting replacement {}, not enough additional fees to relay; {} < {}",
                candidate.txid,
                format_money(additional),
                format_money(relay)
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use bitcoin::{
        absolute::LockTime, hashes::Hash, transaction, OutPoint, ScriptBuf, Sequence, TxIn, Witness,
    };

    use super::*;

    fn txid(byte: u8) -> Txid {
        Txid::from_byte_array([byte; 32])
    }

    fn spending(parents: &[u8]) -> Transaction {
        Transaction {
            version: transaction::Version::TWO,
            lock_time: LockTime::ZERO,
            input: parents
                .iter()
                .map(|parent| TxIn {
                    previous_output: OutPoint {
                        txid: txid(*parent),
                        vout: 0,
                    },
                    script_sig: ScriptBuf::new(),
                    sequence: Sequence::MAX,
                    witness: Witness::new(),
                })
                .collect(),
            output: Vec::new(),
        }
    }

    fn conflict(
        byte: u8,
        fee: i64,
        vsize: u64,
        spends: &[u8],
        descendants: &[(u8, i64)],
    ) -> Conflict {
        Conflict {
            txid: txid(byte),
            modified_fee: fee,
            vsize,
            spends: spends.iter().map(|parent| txid(*parent)).collect(),
            descendants: descendants
                .iter()
                .map(|(byte, fee)| (txid(*byte), *fee))
                .collect(),
        }
    }

    fn candidate(transaction: &Transaction, fee: i64, vsize: u64) -> Candidate<'_> {
        Candidate {
            txid: txid(0xee),
            transaction,
            modified_fee: fee,
            vsize,
        }
    }

    fn refusal(result: Result<Vec<Txid>, Rejection>) -> (String, String) {
        let rejection = result.unwrap_err();
        assert_eq!(rejection.code, -26);
        (rejection.reason, rejection.detail.unwrap_or_default())
    }

    #[test]
    fn a_better_replacement_replaces_the_conflicts_and_their_descendants_once() {
        let tx = spending(&[1]);
        let conflicts = [
            conflict(0xa0, 1000, 100, &[1], &[(0xa1, 500), (0xa2, 500)]),
            conflict(0xb0, 1000, 100, &[1], &[(0xa2, 500)]),
        ];
        let replaced = check(&candidate(&tx, 3200, 100), &conflicts, |_| false).unwrap();
        assert_eq!(
            replaced,
            vec![txid(0xa0), txid(0xa1), txid(0xa2), txid(0xb0)]
        );
    }

    #[test]
    fn an_equal_or_lower_fee_rate_is_refused_with_cores_rates() {
        let tx = spending(&[1]);
        let conflicts = [conflict(0xa0, 1000, 111, &[1], &[])];
        // 1,000 sat over 111 vB and 1,004 over 112 vB both truncate to 9009... and 8964.
        let (reason, detail) = refusal(check(&candidate(&tx, 1004, 112), &conflicts, |_| false));
        assert_eq!(reason, "insufficient fee");
        assert_eq!(
            detail,
            format!(
                "rejecting replacement {}; new feerate 0.00008964 BTC/kvB <= old feerate 0.00009009 BTC/kvB",
                txid(0xee)
            )
        );
        // Equal truncated rates are refused too.
        let (_, detail) = refusal(check(&candidate(&tx, 1000, 111), &conflicts, |_| false));
        assert!(detail.contains("0.00009009 BTC/kvB <= old feerate 0.00009009 BTC/kvB"));
    }

    #[test]
    fn more_than_100_potential_replacements_are_refused() {
        let tx = spending(&[1, 2]);
        let many: Vec<(u8, i64)> = (0..60).map(|byte| (byte, 1)).collect();
        let conflicts = [
            conflict(0xa0, 100, 100, &[1], &many[..50]),
            conflict(0xb0, 100, 100, &[2], &many[10..]),
        ];
        // 51 + 51: counted per conflict, shared descendants twice, as Core does.
        let (reason, detail) = refusal(check(&candidate(&tx, 1_000_000, 100), &conflicts, |_| {
            false
        }));
        assert_eq!(reason, "too many potential replacements");
        assert_eq!(
            detail,
            format!(
                "rejecting replacement {}; too many potential replacements (102 > 100)",
                txid(0xee)
            )
        );
        // Exactly 100 is fine.
        let conflicts = [
            conflict(0xa0, 100, 100, &[1], &many[..49]),
            conflict(0xb0, 100, 100, &[2], &many[..49]),
        ];
        assert_eq!(
            check(&candidate(&tx, 1_000_000, 100), &conflicts, |_| false)
                .unwrap()
                .len(),
            51
        );
    }

    #[test]
    fn a_new_unconfirmed_input_is_refused() {
        // Spends 1 (as the conflict does) and 7 (in the mempool, not spent by the conflict).
        let tx = spending(&[1, 7]);
        let conflicts = [conflict(0xa0, 100, 100, &[1], &[])];
        let (reason, detail) = refusal(check(&candidate(&tx, 10_000, 100), &conflicts, |txid| {
            *txid == self::txid(7) || *txid == self::txid(1)
        }));
        assert_eq!(reason, "replacement-adds-unconfirmed");
        assert_eq!(
            detail,
            format!("replacement {} adds unconfirmed input, idx 1", txid(0xee))
        );
        // A confirmed new input is fine.
        assert!(check(&candidate(&tx, 10_000, 100), &conflicts, |txid| *txid
            == self::txid(1))
        .is_ok());
    }

    #[test]
    fn the_replacement_pays_for_everything_it_evicts_and_its_own_relay() {
        let tx = spending(&[1]);
        let conflicts = [conflict(0xa0, 1000, 111, &[1], &[(0xa1, 5000)])];
        let (reason, detail) = refusal(check(&candidate(&tx, 3000, 111), &conflicts, |_| false));
        assert_eq!(reason, "insufficient fee");
        assert_eq!(
            detail,
            format!(
                "rejecting replacement {}, less fees than conflicting txs; 0.00003 < 0.00006",
                txid(0xee)
            )
        );
        let conflicts = [conflict(0xa0, 1000, 111, &[1], &[])];
        let (reason, detail) = refusal(check(&candidate(&tx, 1050, 111), &conflicts, |_| false));
        assert_eq!(reason, "insufficient fee");
        assert_eq!(
            detail,
            format!(
                "rejecting replacement {}, not enough additional fees to relay; 0.0000005 < 0.00000111",
                txid(0xee)
            )
        );
        assert!(check(&candidate(&tx, 1111, 111), &conflicts, |_| false).is_ok());
    }

    #[test]
    fn spending_a_conflict_is_refused() {
        let ancestors = [txid(3), txid(0xa0)];
        let rejection =
            entries_and_txids_disjoint(&ancestors, &[txid(0xa0)], &txid(0xee)).unwrap_err();
        assert_eq!(rejection.reason, "bad-txns-spends-conflicting-tx");
        assert_eq!(
            rejection.message(),
            format!(
                "bad-txns-spends-conflicting-tx, {} spends conflicting transaction {}",
                txid(0xee),
                txid(0xa0)
            )
        );
        assert!(entries_and_txids_disjoint(&ancestors, &[txid(4)], &txid(0xee)).is_ok());
    }
}
