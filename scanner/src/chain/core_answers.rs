//! Bitcoin Core's answers, read: the JSON-RPC reply envelope, and each answer the scanner uses
//! (heights, hashes, headers, block statistics, fee estimates, raw blocks and transactions).
//! Pure, so that what a node (or anything pretending to be one) sends is read the same way in
//! the client and in the fuzz targets: every malformed answer is an `RpcError::Malformed`.

use std::str::FromStr;

use bitcoin::{consensus, BlockHash};
use serde_json::Value;

use crate::chain::rpc::RpcError;

fn malformed(method: &str, reason: impl Into<String>) -> RpcError {
    RpcError::Malformed {
        method: method.to_owned(),
        reason: reason.into(),
    }
}

/// The result of a JSON-RPC reply to `method` (HTTP `status`), or Core's error.
///
/// # Errors
/// `Core` for Core's error; `Malformed` for a body that is not a JSON-RPC reply.
pub fn reply(method: &str, status: u16, text: &str) -> Result<Value, RpcError> {
    let reply: Value = serde_json::from_str(text)
        .map_err(|error| malformed(method, format!("HTTP {status}: {error}")))?;
    match reply.get("error") {
        Some(error) if !error.is_null() => Err(RpcError::Core {
            code: error.get("code").and_then(Value::as_i64).unwrap_or(0),
            message: error
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
        }),
        _ => reply
            .get("result")
            .cloned()
            .ok_or_else(|| malformed(method, "no result")),
    }
}

/// A result that must be a string.
///
/// # Errors
/// `Malformed` for anything else.
pub fn result_string(method: &str, result: Value) -> Result<String, RpcError> {
    match result {
        Value::String(text) => Ok(text),
        other => Err(malformed(method, format!("expected a string, got {other}"))),
    }
}

/// A consensus-encoded value (a block, a transaction) from its hex.
///
/// # Errors
/// `Malformed` for bad hex or bytes that do not decode.
pub fn consensus_hex<T: consensus::Decodable>(method: &str, hex: &str) -> Result<T, RpcError> {
    // `hex::decode`: a table lookup per byte, several times faster than the `bitcoin` crate's
    // checked iterator on a block's megabytes.
    hex::decode(hex)
        .map_err(|error| error.to_string())
        .and_then(|bytes| consensus::deserialize(&bytes).map_err(|error| error.to_string()))
        .map_err(|reason| malformed(method, reason))
}

/// `getblockcount`'s height.
///
/// # Errors
/// `Malformed` for anything but a non-negative integer.
pub fn height(result: &Value) -> Result<u64, RpcError> {
    result
        .as_u64()
        .ok_or_else(|| malformed("getblockcount", "not a height"))
}

/// `getblockhash`'s hash.
///
/// # Errors
/// `Malformed` for anything but a block hash in hex.
pub fn block_hash(result: Value) -> Result<BlockHash, RpcError> {
    let hash = result_string("getblockhash", result)?;
    BlockHash::from_str(&hash).map_err(|error| malformed("getblockhash", error.to_string()))
}

/// A verbose `getblockheader`'s height, if the block is on the active chain (a block off it
/// has no positive confirmations).
pub fn header_height(header: &Value) -> Option<u64> {
    let on_chain = header
        .get("confirmations")
        .and_then(Value::as_i64)
        .is_some_and(|confirmations| confirmations > 0);
    header
        .get("height")
        .and_then(Value::as_u64)
        .filter(|_| on_chain)
}

/// The median fee rate (sat/vB) from `getblockstats` asked for `txs` and
/// `feerate_percentiles`; `None` for a block with only its coinbase.
///
/// # Errors
/// `Malformed` when either statistic is missing.
pub fn median_fee_rate(stats: &Value) -> Result<Option<u64>, RpcError> {
    let transactions = stats
        .get("txs")
        .and_then(Value::as_u64)
        .ok_or_else(|| malformed("getblockstats", "no txs"))?;
    if transactions <= 1 {
        return Ok(None);
    }
    stats
        .get("feerate_percentiles")
        .and_then(|percentiles| percentiles.get(2))
        .and_then(Value::as_u64)
        .map(Some)
        .ok_or_else(|| malformed("getblockstats", "no median fee rate"))
}

/// `estimatesmartfee`'s rate in sat/vB (rounded up), or `None` when Core has no estimate (a
/// fresh or quiet chain) or gives one that is not a positive amount.
pub fn fee_estimate(answer: &Value) -> Option<u64> {
    answer
        .get("feerate")
        .and_then(Value::as_f64)
        .filter(|rate| rate.is_finite() && *rate > 0.0)
        .and_then(|btc_per_kvb| bitcoin::Amount::from_btc(btc_per_kvb).ok())
        .map(|per_kvb| per_kvb.to_sat().div_ceil(1000))
}
