//! Which mempool transactions a new block takes, as Bitcoin Core's `BlockAssembler` chooses
//! (`addPackageTxs`): repeatedly the best package, a transaction with its ancestors not yet in
//! the block, scored by the lower of its own and its package's modified fee rate (ties to the
//! smaller txid bytes); stop at the first best package paying less than `-blockmintxfee`; skip
//! a package that would cross the weight limit (counted as 4 × vsize, as Core does) and give up
//! after 1,000 misses in a row once nearly full; each package's transactions parents first (by
//! ancestor count, then txid). So a high-fee child pulls its low-fee parent in (CPFP), and what
//! is left out stays in the mempool.
//!
//! Core 28 limits a template to 3,996,000 WU and reserves 4,000 of them for the header and the
//! coinbase (Core 29: 4,000,000 and 8,000, the same room for transactions). Not modelled:
//! signature-operation limits and lock-time finality (the mempool admits no non-final
//! transaction it would have to skip).

use std::collections::{HashMap, HashSet};

use bitcoin::{hashes::Hash, Txid};

use super::feerate::CoreFeeRate;

/// Core 28's `DEFAULT_BLOCK_MAX_WEIGHT` (`MAX_BLOCK_WEIGHT` - 4,000).
pub const DEFAULT_BLOCK_MAX_WEIGHT: u64 = 3_996_000;
/// The weight Core 28's `BlockAssembler` starts a block with, for the header and coinbase.
pub const COINBASE_RESERVED_WEIGHT: u64 = 4_000;
/// Core's `DEFAULT_BLOCK_MIN_TX_FEE`: 1 sat/vB (`-blockmintxfee=0.00001`).
pub const DEFAULT_BLOCK_MIN_TX_FEE: CoreFeeRate = CoreFeeRate::from_sat_per_kvb(1000);
/// Core's `MAX_CONSECUTIVE_FAILURES`.
const MAX_CONSECUTIVE_FAILURES: u32 = 1000;

/// A mempool transaction as block assembly sees it.
#[derive(Clone, Debug)]
pub struct Candidate {
    /// Its txid.
    pub txid: Txid,
    /// The in-mempool transactions it spends from.
    pub parents: Vec<Txid>,
    /// Its fee plus any `prioritisetransaction` delta, in satoshis.
    pub modified_fee: i64,
    /// Its virtual size.
    pub vsize: u64,
    /// Its weight.
    pub weight: u64,
}

/// What bounds a block.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// The most weight a block may have (`-blockmaxweight`).
    pub max_weight: u64,
    /// The lowest package fee rate taken (`-blockmintxfee`).
    pub min_fee_rate: CoreFeeRate,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_weight: DEFAULT_BLOCK_MAX_WEIGHT,
            min_fee_rate: DEFAULT_BLOCK_MIN_TX_FEE,
        }
    }
}

/// The txids a block takes, in block order. `candidates` is the whole mempool (a transaction's
/// parents among them); a parent missing from it counts as confirmed.
pub fn select(candidates: &[Candidate], limits: &Limits) -> Vec<Txid> {
    let index: HashMap<Txid, usize> = candidates
        .iter()
        .enumerate()
        .map(|(position, candidate)| (candidate.txid, position))
        .collect();
    let parents: Vec<Vec<usize>> = candidates
        .iter()
        .map(|candidate| {
            candidate
                .parents
                .iter()
                .filter_map(|parent| index.get(parent).copied())
                .collect()
        })
        .collect();
    let ancestors: Vec<HashSet<usize>> = (0..candidates.len())
        .map(|start| ancestors_of(start, &parents))
        .collect();

    let mut in_block = vec![false; candidates.len()];
    let mut failed = vec![false; candidates.len()];
    let mut block = Vec::new();
    let mut weight = COINBASE_RESERVED_WEIGHT;
    let mut consecutive_failures = 0u32;
    loop {
        let mut best: Option<(usize, Package)> = None;
        for position in 0..candidates.len() {
            if in_block[position] || failed[position] {
                continue;
            }
            let package = Package::of(position, candidates, &ancestors[position], &in_block);
            let better = match &best {
                None => true,
                Some((best_position, best_package)) => {
                    package.beats(candidates, position, best_package, *best_position)
                }
            };
            if better {
                best = Some((position, package));
            }
        }
        let Some((position, package)) = best else {
            break;
        };
        if package.fee < limits.min_fee_rate.fee(package.vsize) {
            // Every other package scores lower.
            break;
        }
        if weight + 4 * package.vsize >= limits.max_weight {
            failed[position] = true;
            consecutive_failures += 1;
            if consecutive_failures > MAX_CONSECUTIVE_FAILURES
                && weight > limits.max_weight.saturating_sub(COINBASE_RESERVED_WEIGHT)
            {
                break;
            }
            continue;
        }
        consecutive_failures = 0;
        let mut members = package.members;
        members.sort_by(|a, b| {
            (ancestors[*a].len(), candidates[*a].txid.as_byte_array())
                .cmp(&(ancestors[*b].len(), candidates[*b].txid.as_byte_array()))
        });
        for member in &members {
            in_block[*member] = true;
            weight += candidates[*member].weight;
            block.push(candidates[*member].txid);
        }
        // A package that failed may fit once an ancestor is in (Core re-scores the descendants
        // of what it added).
        for (other, failure) in failed.iter_mut().enumerate() {
            if *failure
                && members
                    .iter()
                    .any(|member| ancestors[other].contains(member))
            {
                *failure = false;
            }
        }
    }
    block
}

/// A transaction with its ancestors not yet in the block.
struct Package {
    members: Vec<usize>,
    fee: i64,
    vsize: u64,
}

impl Package {
    fn of(
        position: usize,
        candidates: &[Candidate],
        ancestors: &HashSet<usize>,
        in_block: &[bool],
    ) -> Self {
        let mut members: Vec<usize> = ancestors
            .iter()
            .copied()
            .filter(|ancestor| !in_block[*ancestor])
            .collect();
        members.push(position);
        let fee = members
            .iter()
            .map(|member| candidates[*member].modified_fee)
            .fold(0i64, i64::saturating_add);
        let vsize = members.iter().map(|member| candidates[*member].vsize).sum();
        Package {
            members,
            fee,
            vsize,
        }
    }

    /// Core's `CompareTxMemPoolEntryByAncestorFee::GetModFeeAndSize`: the lower of the
    /// transaction's own rate and its package's, as a fee and a size.
    fn score(&self, own: &Candidate) -> (i128, i128) {
        let own_fee = i128::from(own.modified_fee);
        let own_size = i128::from(own.vsize);
        let (fee, size) = (i128::from(self.fee), i128::from(self.vsize));
        if own_fee * size > fee * own_size {
            (fee, size)
        } else {
            (own_fee, own_size)
        }
    }

    /// Whether this package (of `position`) goes before `other` (of `other_position`): the
    /// higher score, ties to the smaller txid bytes, as Core orders them.
    fn beats(
        &self,
        candidates: &[Candidate],
        position: usize,
        other: &Package,
        other_position: usize,
    ) -> bool {
        let (fee, size) = self.score(&candidates[position]);
        let (other_fee, other_size) = other.score(&candidates[other_position]);
        let mine = fee * other_size;
        let theirs = other_fee * size;
        if mine == theirs {
            return candidates[position].txid.as_byte_array()
                < candidates[other_position].txid.as_byte_array();
        }
        mine > theirs
    }
}

fn ancestors_of(start: usize, parents: &[Vec<usize>]) -> HashSet<usize> {
    let mut found = HashSet::new();
    let mut waiting: Vec<usize> = parents[start].clone();
    while let Some(next) = waiting.pop() {
        if next != start && found.insert(next) {
            waiting.extend(parents[next].iter().copied());
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn txid(byte: u8) -> Txid {
        Txid::from_byte_array([byte; 32])
    }

    fn tx(byte: u8, parents: &[u8], fee: i64, vsize: u64) -> Candidate {
        Candidate {
            txid: txid(byte),
            parents: parents.iter().map(|parent| txid(*parent)).collect(),
            modified_fee: fee,
            vsize,
            weight: vsize * 4,
        }
    }

    fn limits(sat_per_vb: i64) -> Limits {
        Limits {
            min_fee_rate: CoreFeeRate::from_sat_per_kvb(sat_per_vb * 1000),
            ..Limits::default()
        }
    }

    fn bytes(selected: &[Txid]) -> Vec<u8> {
        selected
            .iter()
            .map(|txid| txid.as_byte_array()[0])
            .collect()
    }

    #[test]
    fn best_rate_first_and_the_floor_holds_the_rest_out() {
        let mempool = [
            tx(1, &[], 200, 100),  // 2 sat/vB
            tx(2, &[], 2000, 100), // 20 sat/vB
            tx(3, &[], 999, 100),  // 9.99 sat/vB
            tx(4, &[], 1000, 100), // 10 sat/vB
        ];
        assert_eq!(bytes(&select(&mempool, &limits(1))), vec![2, 4, 3, 1]);
        // At 10 sat/vB, 9.99 stops the block; at 0 everything goes.
        assert_eq!(bytes(&select(&mempool, &limits(10))), vec![2, 4]);
        assert_eq!(select(&mempool, &limits(0)).len(), 4);
        assert!(select(&mempool, &limits(21)).is_empty());
    }

    #[test]
    fn a_child_pays_for_its_parent() {
        let mempool = [
            tx(1, &[], 200, 100),   // parent: 2 sat/vB
            tx(2, &[1], 5000, 100), // child: 50 sat/vB, package 26 sat/vB
            tx(3, &[], 1500, 100),  // 15 sat/vB alone
            tx(4, &[], 300, 100),   // 3 sat/vB alone
        ];
        assert_eq!(bytes(&select(&mempool, &limits(10))), vec![1, 2, 3]);
        // Without the child the parent stays out.
        assert_eq!(bytes(&select(&mempool[2..], &limits(10))), vec![3]);
        assert_eq!(
            bytes(&select(&[tx(1, &[], 200, 100)], &limits(10))),
            Vec::<u8>::new()
        );
    }

    #[test]
    fn a_package_is_scored_by_the_lower_of_its_rates() {
        // A child paying 50 sat/vB for a 2 sat/vB parent scores 26 (its package), so a lone
        // 30 sat/vB transaction goes first.
        let mempool = [
            tx(1, &[], 200, 100),
            tx(2, &[1], 5000, 100),
            tx(3, &[], 3000, 100),
        ];
        assert_eq!(bytes(&select(&mempool, &limits(1))), vec![3, 1, 2]);
        // A parent paying 30 sat/vB with a child paying 1: the child scores 1 (its own rate),
        // so an unrelated 5 sat/vB transaction goes before it, the parent first of all.
        let mempool = [
            tx(1, &[], 3000, 100),
            tx(2, &[1], 100, 100),
            tx(3, &[], 500, 100),
        ];
        assert_eq!(bytes(&select(&mempool, &limits(1))), vec![1, 3, 2]);
    }

    #[test]
    fn negative_modified_fees_stay_out_and_ties_go_by_txid() {
        let mempool = [
            tx(9, &[], 1000, 100),
            tx(5, &[], 1000, 100),
            tx(7, &[], -5000, 100),
        ];
        assert_eq!(bytes(&select(&mempool, &limits(1))), vec![5, 9]);
        assert_eq!(bytes(&select(&mempool, &limits(0))), vec![5, 9]);
    }

    #[test]
    fn a_grandchild_brings_its_whole_line_in_parent_first() {
        let mempool = [
            tx(3, &[2], 10_000, 100),
            tx(1, &[], 100, 100),
            tx(2, &[1], 100, 100),
        ];
        assert_eq!(bytes(&select(&mempool, &limits(5))), vec![1, 2, 3]);
    }

    #[test]
    fn the_weight_limit_skips_what_does_not_fit_and_takes_what_does() {
        // 100,000 vB (400,000 WU, the standard maximum) each: nine fit in 3,996,000 WU with
        // 4,000 reserved; the tenth would reach 4,004,000. A small one still fits after it.
        let mut mempool: Vec<Candidate> = (1..=10)
            .map(|byte| tx(byte, &[], 1_000_000 - i64::from(byte), 100_000))
            .collect();
        mempool.push(tx(50, &[], 1000, 200));
        let selected = select(&mempool, &limits(1));
        assert_eq!(bytes(&selected), vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 50]);
    }
}
