//! Amounts of the external network's coin.

use core::fmt;

use crate::{error::ValueError, limits::MAX_MONEY_SATS};

/// An amount in satoshis, never above 21 million BTC. The bound means any sum of a few billion
/// amounts fits a `u64`, so adding up inputs or payments cannot overflow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Amount(u64);

impl Amount {
    /// Nothing.
    pub const ZERO: Amount = Amount(0);

    /// An amount, refusing more than 21 million BTC.
    pub fn from_sat(sats: u64) -> Result<Self, ValueError> {
        if sats > MAX_MONEY_SATS {
            return Err(ValueError {
                what: "amount",
                reason: "more than 21 million BTC",
            });
        }
        Ok(Amount(sats))
    }

    /// `from_sat` for constants.
    pub const fn from_sat_const(sats: u64) -> Option<Self> {
        if sats > MAX_MONEY_SATS {
            None
        } else {
            Some(Amount(sats))
        }
    }

    /// The amount in satoshis.
    pub const fn to_sat(self) -> u64 {
        self.0
    }

    /// The sum, or `None` above 21 million BTC.
    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        self.0
            .checked_add(other.0)
            .and_then(|sum| Amount::from_sat(sum).ok())
    }

    /// The difference, or `None` below zero.
    pub fn checked_sub(self, other: Amount) -> Option<Amount> {
        self.0.checked_sub(other.0).map(Amount)
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} sat", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_bounded_by_the_supply() {
        assert_eq!(
            Amount::from_sat(MAX_MONEY_SATS).map(Amount::to_sat),
            Ok(MAX_MONEY_SATS)
        );
        assert!(Amount::from_sat(MAX_MONEY_SATS + 1).is_err());
        assert!(Amount::from_sat(u64::MAX).is_err());
    }

    #[test]
    fn arithmetic_is_checked() {
        let max = Amount::from_sat(MAX_MONEY_SATS).unwrap();
        let one = Amount::from_sat(1).unwrap();
        assert_eq!(max.checked_add(one), None);
        assert_eq!(Amount::ZERO.checked_sub(one), None);
        assert_eq!(one.checked_add(one).map(Amount::to_sat), Some(2));
    }
}
