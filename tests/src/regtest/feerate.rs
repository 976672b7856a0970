//! Bitcoin Core's fee arithmetic, kept integer and rounded as Core rounds, because the mempool's
//! replacement rules and the block template compare fee rates exactly as Core does and their
//! refusals quote them: `CFeeRate` (satoshis per 1,000 virtual bytes, built by truncating
//! division, `GetFee` rounding up), its `BTC/kvB` text, and `FormatMoney`.

use std::{fmt, str::FromStr};

use bitcoin::{Amount, Denomination};

/// Satoshis in a bitcoin (Core's `COIN`).
const COIN: i64 = 100_000_000;

/// A fee rate in satoshis per 1,000 virtual bytes (Core's `CFeeRate`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CoreFeeRate {
    sat_per_kvb: i64,
}

impl CoreFeeRate {
    /// A rate of `sat_per_kvb` satoshis per 1,000 virtual bytes.
    pub const fn from_sat_per_kvb(sat_per_kvb: i64) -> Self {
        CoreFeeRate { sat_per_kvb }
    }

    /// The rate of `fee` over `vsize` (Core's `CFeeRate(fee, size)`): truncated toward zero, and
    /// zero for an empty size. Core compares these truncated rates, so do the replacement rules.
    pub fn from_fee(fee: i64, vsize: u64) -> Self {
        let size = i128::from(vsize);
        if size == 0 {
            return CoreFeeRate::default();
        }
        CoreFeeRate {
            sat_per_kvb: saturate(i128::from(fee) * 1000 / size),
        }
    }

    /// Satoshis per 1,000 virtual bytes.
    pub const fn sat_per_kvb(self) -> i64 {
        self.sat_per_kvb
    }

    /// The fee this rate asks of `vsize` virtual bytes (Core's `GetFee`): rounded up, and at
    /// least one satoshi (of the rate's sign) for a nonzero size and rate.
    pub fn fee(self, vsize: u64) -> i64 {
        let product = i128::from(self.sat_per_kvb) * i128::from(vsize);
        let quotient = product / 1000;
        // Division truncates toward zero: that is the ceiling for negatives already.
        let fee = saturate(if product % 1000 > 0 {
            quotient + 1
        } else {
            quotient
        });
        if fee == 0 && vsize != 0 {
            return self.sat_per_kvb.signum();
        }
        fee
    }

    /// The rate as a BTC amount per kvB, as Core's RPCs report rates (`ValueFromAmount`).
    pub fn btc_per_kvb(self) -> f64 {
        // Exact for every rate a test meets; only the JSON number is approximate.
        #[allow(clippy::cast_precision_loss)]
        let rate = self.sat_per_kvb as f64;
        rate / 100_000_000.0
    }
}

fn saturate(value: i128) -> i64 {
    i64::try_from(value).unwrap_or(if value < 0 { i64::MIN } else { i64::MAX })
}

/// Core's `CFeeRate::ToString()`: `<BTC>.<8 digits> BTC/kvB`, e.g. `0.00001000 BTC/kvB`.
impl fmt::Display for CoreFeeRate {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        // C++'s `/` and `%` truncate toward zero, as Rust's do; `%08d` of a negative remainder
        // pads after the sign, as `{:08}` does.
        write!(
            formatter,
            "{}.{:08} BTC/kvB",
            self.sat_per_kvb / COIN,
            self.sat_per_kvb % COIN
        )
    }
}

/// Parses a rate in BTC per kvB, as Core's `-blockmintxfee` (`ParseMoney`): a non-negative
/// decimal with at most eight places, e.g. `0.00001` (1 sat/vB).
impl FromStr for CoreFeeRate {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let amount = Amount::from_str_in(text.trim(), Denomination::Bitcoin)
            .map_err(|error| format!("'{text}': {error}"))?;
        let sat_per_kvb =
            i64::try_from(amount.to_sat()).map_err(|_| format!("'{text}': out of range"))?;
        Ok(CoreFeeRate { sat_per_kvb })
    }
}

/// Core's `FormatMoney`: satoshis as BTC, trailing zeros trimmed down to two decimals
/// (`0.0001`, `1.00`, `-0.00000111`).
pub fn format_money(sat: i64) -> String {
    let magnitude = sat.unsigned_abs();
    let coin = COIN.unsigned_abs();
    let mut text = format!("{}.{:08}", magnitude / coin, magnitude % coin);
    while text.ends_with('0') && text.len() > 2 && text.as_bytes()[text.len() - 3] != b'.' {
        text.pop();
    }
    if sat < 0 {
        text.insert(0, '-');
    }
    text
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn rates_truncate_and_fees_round_up_as_cores() {
        // 1,000 sat over 111 vB: 9009.009... truncated.
        assert_eq!(CoreFeeRate::from_fee(1000, 111).sat_per_kvb(), 9009);
        assert_eq!(CoreFeeRate::from_fee(-1000, 111).sat_per_kvb(), -9009);
        assert_eq!(CoreFeeRate::from_fee(1000, 0).sat_per_kvb(), 0);
        let one = CoreFeeRate::from_sat_per_kvb(1000);
        assert_eq!(one.fee(111), 111);
        // 1.5 sat/vB of 111 vB is 166.5: Core asks 167.
        assert_eq!(CoreFeeRate::from_sat_per_kvb(1500).fee(111), 167);
        // A tiny rate still asks one satoshi.
        assert_eq!(CoreFeeRate::from_sat_per_kvb(1).fee(10), 1);
        assert_eq!(CoreFeeRate::from_sat_per_kvb(-1).fee(10), -1);
        assert_eq!(CoreFeeRate::from_sat_per_kvb(-1500).fee(111), -166);
        assert_eq!(CoreFeeRate::default().fee(111), 0);
    }

    #[test]
    fn rates_and_amounts_print_as_cores() {
        assert_eq!(
            CoreFeeRate::from_fee(1000, 111).to_string(),
            "0.00009009 BTC/kvB"
        );
        assert_eq!(
            CoreFeeRate::from_sat_per_kvb(123_456_789_012).to_string(),
            "1234.56789012 BTC/kvB"
        );
        assert_eq!(format_money(0), "0.00");
        assert_eq!(format_money(50), "0.0000005");
        assert_eq!(format_money(111), "0.00000111");
        assert_eq!(format_money(10_000), "0.0001");
        assert_eq!(format_money(100_000_000), "1.00");
        assert_eq!(format_money(150_000_000), "1.50");
        assert_eq!(format_money(-111), "-0.00000111");
    }

    #[test]
    fn blockmintxfee_parses_as_btc_per_kvb() {
        assert_eq!(
            "0.00001".parse::<CoreFeeRate>().unwrap().sat_per_kvb(),
            1000
        );
        assert_eq!(
            "0.0001".parse::<CoreFeeRate>().unwrap().sat_per_kvb(),
            10_000
        );
        assert_eq!("0".parse::<CoreFeeRate>().unwrap().sat_per_kvb(), 0);
        assert!("-0.0001".parse::<CoreFeeRate>().is_err());
        assert!("0.000000001".parse::<CoreFeeRate>().is_err());
        assert!("ten".parse::<CoreFeeRate>().is_err());
        assert!((CoreFeeRate::from_sat_per_kvb(1000).btc_per_kvb() - 0.00001).abs() < 1e-12);
    }
}
