//! Protocol parameters: the values every validator's scanner and enclave must agree on, fixed in
//! code for Bitcoin rather than left to each operator (PROTOCOL.md section 1). A scheduler that
//! planned with other values than the enclaves check would make plans that are acknowledged and
//! then refused on every attempt, their inputs and payments stuck; so both sides read them here,
//! and `FeeCaps::check` is the one function deciding whether a transaction's fee is acceptable.
//!
//! The wire format's bounds that follow from these values are derived in `limits`.

use crate::{
    amount::Amount,
    ids::ThresholdParams,
    transaction::{BuiltTransaction, FeeRate},
};

/// The most key shares a validator set has (Serai's `MAX_KEY_SHARES_PER_SET`).
pub const MAX_KEY_SHARES: u16 = 150;

/// A key generation's threshold parameters are not a set shape the protocol accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SetShapeError {
    /// More key shares than a set has.
    #[error("{n} key shares, more than the {MAX_KEY_SHARES} a set has")]
    TooManyShares {
        /// The shares asked.
        n: u16,
    },
    /// A threshold of two thirds of the shares or fewer: a minority could sign.
    #[error("threshold {t} of {n} is not more than two thirds")]
    ThresholdTooLow {
        /// The threshold asked.
        t: u16,
        /// The shares.
        n: u16,
    },
}

/// Whether `params` are a set shape the protocol accepts: at most `MAX_KEY_SHARES` shares and
/// a threshold above two thirds of them (`ThresholdParams` already holds `0 < t <= n` and the
/// participant within `1..=n`). An enclave generates keys for no other shape, whoever asks: a
/// 1-of-n key would let any one holder sign alone.
///
/// # Errors
/// The shape is refused, with why.
pub fn accepts_set_shape(params: ThresholdParams) -> Result<(), SetShapeError> {
    let (t, n) = (params.t(), params.n());
    if n > MAX_KEY_SHARES {
        return Err(SetShapeError::TooManyShares { n });
    }
    if 3 * u32::from(t) <= 2 * u32::from(n) {
        return Err(SetShapeError::ThresholdTooLow { t, n });
    }
    Ok(())
}

/// Outputs below this many satoshis are neither created nor scanned: they cost more to spend
/// than they are worth.
pub const DUST: Amount = match Amount::from_sat_const(10_000) {
    Some(amount) => amount,
    None => Amount::ZERO,
};

/// Most inputs of a transaction the scheduler plans (Serai's Bitcoin value). With `MAX_OUTPUTS`
/// outputs it weighs about 210,000 WU, well under Bitcoin Core's standard 400,000 (the builder
/// checks every transaction against that limit). The signing blobs are sized from it
/// (`limits::MAX_BLOB_LEN`).
pub const MAX_INPUTS: usize = 520;

/// Most outputs of a transaction the scheduler plans, change included.
pub const MAX_OUTPUTS: usize = 520;

/// The lowest fee rate a plan is built at, in sat/vB: Bitcoin Core's minimum relay fee rate is
/// 1, and one more leaves room above it for blocks that pay nothing.
pub const MIN_FEE_RATE: FeeRate = FeeRate(2);

/// The highest fee rate a plan is built at, and the highest an enclave signs, in sat/vB. Above
/// every sustained rate Bitcoin has seen; a market above it waits.
pub const MAX_FEE_RATE: FeeRate = FeeRate(1_000);

/// The highest fee an enclave signs, as a share of the value of the transaction's inputs, in
/// basis points. The scheduler plans within it: outputs too small to be worth spending at the
/// current fee rate stay pooled, and payments whose plan would cross it wait.
pub const MAX_FEE_SHARE_BASIS_POINTS: u16 = 500;

/// How many new Batch ids past the last one Serai included (as the coordinator attests) an
/// enclave preprocesses new content for. A compromised scanner can make its enclave claim at
/// most this many ids with junk (the honest Batches under them are refused there until a later
/// inclusion is attested); an honest processor preprocesses this far ahead of Serai's
/// inclusions, and waits beyond.
pub const BATCH_WINDOW: u32 = 32;

/// A finalized block whose height is a multiple of this gets a Batch even without any of our
/// outputs (an hour on mainnet): Serai acknowledges network blocks only through Batches,
/// and plans take their fee rate from the acknowledged block, so in a quiet period the fee rate
/// would otherwise never follow the market, and payments waiting for lower fees would wait for
/// an unrelated deposit. It also tells the chain the validators are live. A rule of the height
/// alone (not "so many blocks after the last Batch"), so that validators that started, stopped
/// or upgraded at different heights still number their Batches the same.
pub const EMPTY_BATCH_INTERVAL: u64 = 6;

/// The fee rate of the plans made for a Serai block, from the median fee rate of the network
/// block it acknowledges (`None` for a block paying no fees): every validator reads the same
/// block, so all build byte-identical transactions. Kept within `MIN_FEE_RATE..=MAX_FEE_RATE`.
pub fn plan_fee_rate(median: Option<FeeRate>) -> FeeRate {
    FeeRate(
        median
            .map_or(MIN_FEE_RATE.0, |rate| rate.0)
            .clamp(MIN_FEE_RATE.0, MAX_FEE_RATE.0),
    )
}

/// Blocks after which a plan none of whose inputs is spent is stuck: counted from the network
/// block of the Serai block that made it (or made its latest replacement), judged at each
/// later Serai block by its network block. Both ends are finalized, acknowledged blocks, so
/// every validator judges alike.
pub const STUCK_AFTER_BLOCKS: u64 = 6;

/// Whether a plan made (or last replaced) at network block `since` is stuck when a Serai block
/// acknowledges network block `now`, none of its inputs spent by then.
pub fn is_stuck(since: u64, now: u64) -> bool {
    now >= since.saturating_add(STUCK_AFTER_BLOCKS)
}

/// Network blocks a key that a rotation replaced stays at least in its forwarding stage after
/// its successor's activation block, however soon it is drained: deposits sent to its address
/// by users who looked it up just before the rotation are still picked up and forwarded while
/// it is watched as a live key. After that it retires once it holds nothing and none of its
/// plans is in flight (a retired key is still scanned, and anything that reaches it after all
/// is forwarded). Judged at Serai blocks by their acknowledged network block, so every
/// validator retires a key at the same Serai block.
pub const RETIRE_AFTER_BLOCKS: u64 = 6;

/// Whether a key replaced by one activated at network block `successor_activation` has
/// forwarded long enough to retire, judged at a Serai block acknowledging network block `now`.
pub fn may_retire(successor_activation: u64, now: u64) -> bool {
    now >= successor_activation.saturating_add(RETIRE_AFTER_BLOCKS)
}

/// Bitcoin Core's incremental relay fee rate (sat/vB): what a replacement must pay on top of
/// the fees it evicts, for its own size (BIP125 rule 4).
pub const INCREMENTAL_RELAY_FEE_RATE: FeeRate = FeeRate(1);

/// How far a family's replacements may raise its fee rate: to this many times the higher of
/// the market and the family's original rate. A plan still unconfirmed at that rate is not
/// held out for want of fee (its signing stalled, a payee pinned it, a miner declines it), and
/// bumping on would only take the payees' money: each payment bears its share of the fee.
pub const MAX_BUMP_FACTOR: u64 = 2;

/// The fee rate a stuck plan is replaced at: the rate plans are made at now (`market`, from
/// the acknowledged block as `plan_fee_rate`), but at least a quarter (and one sat/vB) above
/// the rate it was stuck at, so that a market that has not moved still gets a replacement
/// that outbids the stuck transaction; never above the ceiling, `MAX_BUMP_FACTOR` times the
/// higher of the market and the family's `original` rate, nor above `MAX_FEE_RATE`. `None`
/// when the stuck rate is at the ceiling already.
pub fn bump_fee_rate(stuck: FeeRate, market: FeeRate, original: FeeRate) -> Option<FeeRate> {
    let ceiling = market
        .0
        .max(original.0)
        .saturating_mul(MAX_BUMP_FACTOR)
        .min(MAX_FEE_RATE.0);
    if stuck.0 >= ceiling {
        return None;
    }
    let step = (stuck.0 / 4).max(INCREMENTAL_RELAY_FEE_RATE.0);
    Some(FeeRate(
        market.0.max(stuck.0.saturating_add(step)).min(ceiling),
    ))
}

/// Whether `replacement` outbids `replaced` (BIP125 rules 3 and 4 for one conflicting
/// transaction without descendants): a higher fee rate, and an absolute fee at least the
/// replaced one plus the incremental relay fee for the replacement's own size. Fee rates are
/// compared exactly, where Core truncates them to sat/kvB; for two builds of one plan (the
/// same size, whole sat/vB rates) both agree. Descendants a payee hangs on the replaced
/// transaction raise what Core demands beyond this.
pub fn outbids(replaced: &BuiltTransaction, replacement: &BuiltTransaction) -> bool {
    let (old_fee, new_fee) = (replaced.fee.to_sat(), replacement.fee.to_sat());
    let (old_size, new_size) = (replaced.signed_vsize(), replacement.signed_vsize());
    let relay = new_size.saturating_mul(INCREMENTAL_RELAY_FEE_RATE.0);
    u128::from(new_fee) * u128::from(old_size) > u128::from(old_fee) * u128::from(new_size)
        && new_fee >= old_fee.saturating_add(relay)
}

/// The fee caps a signed transaction stays under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeeCaps {
    /// Highest fee rate.
    pub max_fee_rate: FeeRate,
    /// Highest fee as a share of the inputs' value, in basis points.
    pub max_fee_share_basis_points: u16,
}

/// A transaction's fee is over a cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FeeCapExceeded {
    /// The fee rate is above the cap.
    #[error("fee rate {rate:?} above the cap {cap:?}")]
    Rate {
        /// Asked.
        rate: FeeRate,
        /// Allowed.
        cap: FeeRate,
    },
    /// The fee is too large a share of the inputs.
    #[error("fee {fee} is more than the allowed share of inputs worth {inputs}")]
    Share {
        /// The fee.
        fee: Amount,
        /// The inputs' value.
        inputs: Amount,
    },
}

impl FeeCaps {
    /// The protocol's caps: what every enclave enforces and every scheduler plans within.
    pub const PROTOCOL: FeeCaps = FeeCaps {
        max_fee_rate: MAX_FEE_RATE,
        max_fee_share_basis_points: MAX_FEE_SHARE_BASIS_POINTS,
    };

    /// Whether a fee rate is under the rate cap.
    ///
    /// # Errors
    /// It is above the cap.
    pub fn check_rate(&self, rate: FeeRate) -> Result<(), FeeCapExceeded> {
        if rate > self.max_fee_rate {
            return Err(FeeCapExceeded::Rate {
                rate,
                cap: self.max_fee_rate,
            });
        }
        Ok(())
    }

    /// Whether a built transaction's fee is under the share cap.
    ///
    /// # Errors
    /// The fee is too large a share of the inputs.
    pub fn check_share(&self, built: &BuiltTransaction) -> Result<(), FeeCapExceeded> {
        let inputs: u64 = built.prevouts.iter().map(|out| out.value.to_sat()).sum();
        let inputs = Amount::from_sat(inputs).unwrap_or(Amount::ZERO);
        if !self.share_allows(built.fee, inputs) {
            return Err(FeeCapExceeded::Share {
                fee: built.fee,
                inputs,
            });
        }
        Ok(())
    }

    /// Whether `fee` is within the share cap of inputs worth `inputs`.
    pub fn share_allows(&self, fee: Amount, inputs: Amount) -> bool {
        u128::from(fee.to_sat()) * 10_000
            <= u128::from(inputs.to_sat()) * u128::from(self.max_fee_share_basis_points)
    }

    /// Both checks of a transaction built at `rate`.
    ///
    /// # Errors
    /// The first cap it is over.
    pub fn check(&self, rate: FeeRate, built: &BuiltTransaction) -> Result<(), FeeCapExceeded> {
        self.check_rate(rate)?;
        self.check_share(built)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_plan_is_stuck_from_the_sixth_block_on() {
        assert!(!is_stuck(100, 105));
        assert!(is_stuck(100, 106));
        assert!(is_stuck(100, 107));
        // A judgement before the plan's own block, or at the end of heights, is not a panic.
        assert!(!is_stuck(100, 99));
        assert!(!is_stuck(u64::MAX, u64::MAX - 1));
        assert!(is_stuck(u64::MAX - 2, u64::MAX));
    }

    #[test]
    fn plans_pay_the_acknowledged_blocks_median_within_bounds() {
        assert_eq!(plan_fee_rate(Some(FeeRate(17))), FeeRate(17));
        assert_eq!(plan_fee_rate(None), MIN_FEE_RATE);
        assert_eq!(plan_fee_rate(Some(FeeRate(0))), MIN_FEE_RATE);
        assert_eq!(plan_fee_rate(Some(FeeRate(5_000))), MAX_FEE_RATE);
    }

    #[test]
    fn only_sets_of_more_than_two_thirds_and_at_most_150_shares_are_accepted() {
        use crate::ids::Participant;
        let shape = |t, n| {
            accepts_set_shape(ThresholdParams::new(t, n, Participant::new(1).unwrap()).unwrap())
        };
        assert_eq!(shape(3, 4), Ok(()));
        assert_eq!(shape(1, 1), Ok(()));
        assert_eq!(shape(101, 150), Ok(()));
        assert_eq!(
            shape(2, 4),
            Err(SetShapeError::ThresholdTooLow { t: 2, n: 4 })
        );
        assert_eq!(
            shape(1, 4),
            Err(SetShapeError::ThresholdTooLow { t: 1, n: 4 })
        );
        assert_eq!(
            shape(100, 150),
            Err(SetShapeError::ThresholdTooLow { t: 100, n: 150 })
        );
        assert_eq!(
            shape(150, 151),
            Err(SetShapeError::TooManyShares { n: 151 })
        );
        assert_eq!(
            shape(65_535, 65_535),
            Err(SetShapeError::TooManyShares { n: 65_535 })
        );
    }

    #[test]
    fn the_share_cap_is_inclusive_and_exact() {
        let caps = FeeCaps::PROTOCOL;
        let inputs = Amount::from_sat(1_000_000).unwrap();
        let at_cap = Amount::from_sat(50_000).unwrap();
        let over = Amount::from_sat(50_001).unwrap();
        assert!(caps.share_allows(at_cap, inputs));
        assert!(!caps.share_allows(over, inputs));
        assert!(caps.check_rate(MAX_FEE_RATE).is_ok());
        assert_eq!(
            caps.check_rate(FeeRate(MAX_FEE_RATE.0 + 1)),
            Err(FeeCapExceeded::Rate {
                rate: FeeRate(MAX_FEE_RATE.0 + 1),
                cap: MAX_FEE_RATE
            })
        );
    }
}
