//! Bitcoin Core's JSON-RPC, over HTTP with basic authentication: the methods the processor and
//! its tests use, with Core's names, result shapes and error codes. Requests are JSON-RPC 1.0
//! or 2.0, single or batched, with positional parameters.
//!
//! Two methods are ours, not Core's, for tests: `setfeerate <sat/vB>` (what `estimatesmartfee`
//! answers) and `setblockmintxfee <sat/vB>` (`-blockmintxfee` at run time, so a test can hold
//! transactions out of blocks and later let them in without a restart).

use std::{str::FromStr, sync::Mutex};

use bitcoin::{
    consensus, hex::DisplayHex, Address, Amount, Block, BlockHash, Network, Transaction, Txid,
};
use serde_json::{json, Value};

use super::{
    feerate::CoreFeeRate,
    mempool::{Entry, Mempool, Rejection},
    node::{Node, NodeError},
};

/// Core's RPC error codes used here.
pub mod code {
    /// `RPC_MISC_ERROR`.
    pub const MISC: i64 = -1;
    /// `RPC_TYPE_ERROR`.
    pub const TYPE: i64 = -3;
    /// `RPC_INVALID_ADDRESS_OR_KEY`.
    pub const INVALID_ADDRESS_OR_KEY: i64 = -5;
    /// `RPC_INVALID_PARAMETER`.
    pub const INVALID_PARAMETER: i64 = -8;
    /// `RPC_DESERIALIZATION_ERROR`.
    pub const DESERIALIZATION: i64 = -22;
    /// `RPC_VERIFY_ERROR`.
    pub const VERIFY: i64 = -25;
    /// `RPC_INVALID_REQUEST`.
    pub const INVALID_REQUEST: i64 = -32600;
    /// `RPC_METHOD_NOT_FOUND`.
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// `RPC_PARSE_ERROR`.
    pub const PARSE: i64 = -32700;
}

/// An RPC error as Core reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RpcError {
    /// The code.
    pub code: i64,
    /// The message.
    pub message: String,
}

fn error(code: i64, message: impl Into<String>) -> RpcError {
    RpcError {
        code,
        message: message.into(),
    }
}

impl From<Rejection> for RpcError {
    fn from(rejection: Rejection) -> Self {
        error(rejection.code, rejection.message())
    }
}

impl From<NodeError> for RpcError {
    fn from(failure: NodeError) -> Self {
        match failure {
            NodeError::UnknownBlock => error(code::INVALID_ADDRESS_OR_KEY, "Block not found"),
            NodeError::Transaction(rejection) => rejection.into(),
            NodeError::Kernel(failure) => {
                error(code::VERIFY, format!("TestBlockValidity failed: {failure}"))
            }
            NodeError::Store(io) => error(code::MISC, io.to_string()),
        }
    }
}

/// What the HTTP layer sends back.
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The JSON body.
    pub body: String,
    /// Whether the node should stop after answering.
    pub stop: bool,
}

/// Handles one HTTP request body.
pub fn handle(node: &Mutex<Node>, body: &[u8]) -> Answer {
    let parsed: Value = match serde_json::from_slice(body) {
        Ok(value) => value,
        Err(_) => {
            return Answer {
                status: 500,
                body: reply(&Value::Null, Err(error(code::PARSE, "Parse error")), false),
                stop: false,
            }
        }
    };
    if let Value::Array(requests) = parsed {
        let mut stop = false;
        let replies: Vec<Value> = requests
            .iter()
            .map(|request| {
                let (value, stops) = one(node, request);
                stop |= stops;
                value
            })
            .collect();
        return Answer {
            status: 200,
            body: Value::Array(replies).to_string(),
            stop,
        };
    }
    let (value, stop) = one(node, &parsed);
    let version_two = parsed.get("jsonrpc").and_then(Value::as_str) == Some("2.0");
    let status = match value
        .get("error")
        .and_then(|e| e.get("code"))
        .and_then(Value::as_i64)
    {
        None => 200,
        Some(_) if version_two => 200,
        Some(code::INVALID_REQUEST) => 400,
        Some(code::METHOD_NOT_FOUND) => 404,
        Some(_) => 500,
    };
    Answer {
        status,
        body: value.to_string(),
        stop,
    }
}

fn reply(id: &Value, result: Result<Value, RpcError>, version_two: bool) -> String {
    reply_value(id, result, version_two).to_string()
}

fn reply_value(id: &Value, result: Result<Value, RpcError>, version_two: bool) -> Value {
    match (result, version_two) {
        (Ok(result), false) => json!({"result": result, "error": null, "id": id}),
        (Ok(result), true) => json!({"jsonrpc": "2.0", "result": result, "id": id}),
        (Err(e), false) => {
            json!({"result": null, "error": {"code": e.code, "message": e.message}, "id": id})
        }
        (Err(e), true) => {
            json!({"jsonrpc": "2.0", "error": {"code": e.code, "message": e.message}, "id": id})
        }
    }
}

fn one(node: &Mutex<Node>, request: &Value) -> (Value, bool) {
    let id = request.get("id").cloned().unwrap_or(Value::Null);
    let version_two = request.get("jsonrpc").and_then(Value::as_str) == Some("2.0");
    let Some(method) = request.get("method").and_then(Value::as_str) else {
        let invalid = error(code::INVALID_REQUEST, "Method must be a string");
        return (reply_value(&id, Err(invalid), version_two), false);
    };
    let params = match request.get("params") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(params)) => params.clone(),
        Some(_) => {
            let invalid = error(code::INVALID_REQUEST, "Params must be an array");
            return (reply_value(&id, Err(invalid), version_two), false);
        }
    };
    let stop = method == "stop";
    let result = match node.lock() {
        Ok(mut node) => dispatch(&mut node, method, &Params(params)),
        Err(_) => Err(error(code::MISC, "node state poisoned")),
    };
    (reply_value(&id, result, version_two), stop)
}

/// Positional parameters with Core's type errors.
struct Params(Vec<Value>);

impl Params {
    fn get(&self, index: usize) -> Option<&Value> {
        self.0.get(index).filter(|value| !value.is_null())
    }

    fn required(&self, index: usize, name: &str) -> Result<&Value, RpcError> {
        self.get(index)
            .ok_or_else(|| error(code::MISC, format!("missing required parameter {name}")))
    }

    fn string(&self, index: usize, name: &str) -> Result<&str, RpcError> {
        self.required(index, name)?
            .as_str()
            .ok_or_else(|| error(code::TYPE, format!("{name}: expected type string")))
    }

    fn integer(&self, index: usize, name: &str) -> Result<i64, RpcError> {
        self.required(index, name)?
            .as_i64()
            .ok_or_else(|| error(code::TYPE, format!("{name}: expected type number")))
    }

    fn number(&self, index: usize, name: &str) -> Result<f64, RpcError> {
        self.required(index, name)?
            .as_f64()
            .ok_or_else(|| error(code::TYPE, format!("{name}: expected type number")))
    }

    fn verbosity(&self, index: usize, default: i64) -> Result<i64, RpcError> {
        match self.get(index) {
            None => Ok(default),
            Some(Value::Bool(verbose)) => Ok(i64::from(*verbose)),
            Some(Value::Number(number)) => number
                .as_i64()
                .ok_or_else(|| error(code::TYPE, "verbosity: expected integer")),
            Some(_) => Err(error(code::TYPE, "verbosity: expected number or bool")),
        }
    }

    fn block_hash(&self, index: usize) -> Result<BlockHash, RpcError> {
        let text = self.string(index, "blockhash")?;
        BlockHash::from_str(text).map_err(|_| {
            error(
                code::INVALID_PARAMETER,
                format!(
                    "blockhash must be of length 64 (not {}, for '{text}')",
                    text.len()
                ),
            )
        })
    }

    fn txid(&self, index: usize) -> Result<Txid, RpcError> {
        let text = self.string(index, "txid")?;
        Txid::from_str(text).map_err(|_| {
            error(
                code::INVALID_PARAMETER,
                format!(
                    "txid must be of length 64 (not {}, for '{text}')",
                    text.len()
                ),
            )
        })
    }
}

fn decode_transaction(hex: &str) -> Result<Transaction, RpcError> {
    let bytes = bitcoin::hex::FromHex::from_hex(hex);
    bytes
        .ok()
        .and_then(|bytes: Vec<u8>| consensus::deserialize(&bytes).ok())
        .ok_or_else(|| {
            error(
                code::DESERIALIZATION,
                "TX decode failed. Make sure the tx has at least one input.",
            )
        })
}

fn address(text: &str) -> Result<bitcoin::ScriptBuf, RpcError> {
    Address::from_str(text)
        .ok()
        .and_then(|address| address.require_network(Network::Regtest).ok())
        .map(|address| address.script_pubkey())
        .ok_or_else(|| error(code::INVALID_ADDRESS_OR_KEY, "Error: Invalid address"))
}

fn btc(amount: Amount) -> Value {
    json!(amount.to_btc())
}

fn dispatch(node: &mut Node, method: &str, params: &Params) -> Result<Value, RpcError> {
    match method {
        "getblockcount" => Ok(json!(node.chain().height())),
        "getbestblockhash" => Ok(json!(node.chain().tip().block_hash().to_string())),
        "getblockchaininfo" => {
            let chain = node.chain();
            let tip = chain.tip();
            Ok(json!({
                "chain": "regtest",
                "blocks": chain.height(),
                "headers": chain.height(),
                "bestblockhash": tip.block_hash().to_string(),
                "difficulty": difficulty(tip),
                "time": tip.header.time,
                "mediantime": chain.median_time_past(),
                "verificationprogress": 1,
                "initialblockdownload": false,
                "chainwork": chainwork(chain.height()),
                "size_on_disk": 0,
                "pruned": false,
                "warnings": [],
            }))
        }
        "getblockhash" => {
            let height = params.integer(0, "height")?;
            u32::try_from(height)
                .ok()
                .and_then(|height| node.chain().at(height))
                .map(|block| json!(block.block_hash().to_string()))
                .ok_or_else(|| error(code::INVALID_PARAMETER, "Block height out of range"))
        }
        "getblock" => {
            let hash = params.block_hash(0)?;
            let verbosity = params.verbosity(1, 1)?;
            let block = node
                .stored_block(&hash)
                .or_else(|| {
                    (node.chain().at(0)?.block_hash() == hash).then(|| node.chain().at(0))?
                })
                .ok_or_else(|| error(code::INVALID_ADDRESS_OR_KEY, "Block not found"))?;
            match verbosity {
                0 => Ok(json!(consensus::serialize(block).to_lower_hex_string())),
                _ => Ok(block_json(node, block, true)),
            }
        }
        "getblockheader" => {
            let hash = params.block_hash(0)?;
            let verbose = params.verbosity(1, 1)? != 0;
            let block = node
                .stored_block(&hash)
                .or_else(|| {
                    (node.chain().at(0)?.block_hash() == hash).then(|| node.chain().at(0))?
                })
                .ok_or_else(|| error(code::INVALID_ADDRESS_OR_KEY, "Block not found"))?;
            if verbose {
                Ok(block_json(node, block, false))
            } else {
                Ok(json!(
                    consensus::serialize(&block.header).to_lower_hex_string()
                ))
            }
        }
        "getblockstats" => {
            // Only the fee-rate statistics, by hash or height, as Core computes them: the
            // percentiles weighted by virtual size.
            let height = match params.required(0, "hash_or_height")? {
                Value::Number(height) => height
                    .as_u64()
                    .and_then(|height| u32::try_from(height).ok())
                    .filter(|height| *height <= node.chain().height())
                    .ok_or_else(|| {
                        error(
                            code::INVALID_PARAMETER,
                            "Target block height after current tip",
                        )
                    })?,
                Value::String(_) => {
                    let hash = params.block_hash(0)?;
                    node.chain()
                        .height_of(&hash)
                        .ok_or_else(|| error(code::INVALID_ADDRESS_OR_KEY, "Block not found"))?
                }
                _ => {
                    return Err(error(
                        code::TYPE,
                        "hash_or_height: expected string or number",
                    ))
                }
            };
            let rates = node
                .chain()
                .fee_rates(height)
                .ok_or_else(|| error(code::MISC, "Can't read undo data from disk"))?;
            Ok(json!({
                "height": height,
                "txs": rates.len() + 1,
                "feerate_percentiles": feerate_percentiles(rates),
            }))
        }
        "getrawtransaction" => {
            let txid = params.txid(0)?;
            let verbose = params.verbosity(1, 0)? != 0;
            let (transaction, block) = if let Some(entry) = node.mempool().get(&txid) {
                (entry.transaction.clone(), None)
            } else if let Some((transaction, height)) = node.chain().transaction(&txid) {
                (transaction.clone(), Some(height))
            } else {
                return Err(error(
                    code::INVALID_ADDRESS_OR_KEY,
                    "No such mempool or blockchain transaction. Use gettransaction for wallet transactions.",
                ));
            };
            if !verbose {
                return Ok(json!(
                    consensus::serialize(&transaction).to_lower_hex_string()
                ));
            }
            let mut value = transaction_json(&transaction);
            if let (Some(height), Value::Object(map)) = (block, &mut value) {
                if let Some(block) = node.chain().at(height) {
                    map.insert("blockhash".into(), json!(block.block_hash().to_string()));
                    map.insert(
                        "confirmations".into(),
                        json!(node.chain().height() - height + 1),
                    );
                    map.insert("time".into(), json!(block.header.time));
                    map.insert("blocktime".into(), json!(block.header.time));
                }
            }
            Ok(value)
        }
        "sendrawtransaction" => {
            let transaction = decode_transaction(params.string(0, "hexstring")?)?;
            node.send(&transaction)?;
            Ok(json!(transaction.compute_txid().to_string()))
        }
        "testmempoolaccept" => {
            let list = params
                .required(0, "rawtxs")?
                .as_array()
                .ok_or_else(|| error(code::TYPE, "rawtxs: expected type array"))?;
            let mut results = Vec::new();
            for hex in list {
                let hex = hex
                    .as_str()
                    .ok_or_else(|| error(code::TYPE, "rawtxs: expected strings"))?;
                let transaction = decode_transaction(hex)?;
                let mut result = json!({
                    "txid": transaction.compute_txid().to_string(),
                    "wtxid": transaction.compute_wtxid().to_string(),
                });
                if let Value::Object(map) = &mut result {
                    match node.test_accept(&transaction) {
                        Ok(admission) => {
                            let entry = &admission.entry;
                            let rate = CoreFeeRate::from_fee(
                                node.mempool().modified_fee(entry),
                                entry.vsize,
                            );
                            map.insert("allowed".into(), json!(true));
                            map.insert("vsize".into(), json!(entry.vsize));
                            map.insert(
                                "fees".into(),
                                json!({
                                    "base": btc(entry.fee),
                                    "effective-feerate": rate.btc_per_kvb(),
                                    "effective-includes":
                                        [entry.transaction.compute_wtxid().to_string()],
                                }),
                            );
                        }
                        Err(rejection) => {
                            // Core reports missing inputs by this name here, and the full
                            // message as `reject-details` (Core 29).
                            let reason = if rejection.reason == "bad-txns-inputs-missingorspent" {
                                "missing-inputs".to_owned()
                            } else {
                                rejection.reason.clone()
                            };
                            map.insert("allowed".into(), json!(false));
                            map.insert("reject-reason".into(), json!(reason));
                            map.insert("reject-details".into(), json!(rejection.message()));
                        }
                    }
                }
                results.push(result);
            }
            Ok(Value::Array(results))
        }
        "getrawmempool" => {
            let verbose = params.verbosity(0, 0)? != 0;
            if verbose {
                let mut map = serde_json::Map::new();
                for entry in node.mempool().entries() {
                    map.insert(
                        entry.txid.to_string(),
                        mempool_entry_json(node.mempool(), entry),
                    );
                }
                Ok(Value::Object(map))
            } else {
                Ok(json!(node
                    .mempool()
                    .entries()
                    .map(|entry| entry.txid.to_string())
                    .collect::<Vec<_>>()))
            }
        }
        "getmempoolentry" => {
            let txid = params.txid(0)?;
            node.mempool()
                .get(&txid)
                .map(|entry| mempool_entry_json(node.mempool(), entry))
                .ok_or_else(|| error(code::INVALID_ADDRESS_OR_KEY, "Transaction not in mempool"))
        }
        "prioritisetransaction" => {
            let txid = params.txid(0)?;
            // Core: `dummy` is the retired priority, accepted only as 0 or null.
            if let Some(dummy) = params.get(1) {
                let dummy = dummy
                    .as_f64()
                    .ok_or_else(|| error(code::TYPE, "dummy: expected type number"))?;
                if dummy != 0.0 {
                    return Err(error(
                        code::INVALID_PARAMETER,
                        "Priority is no longer supported, dummy argument to prioritisetransaction must be 0.",
                    ));
                }
            }
            let delta = params.integer(2, "fee_delta")?;
            node.prioritise(txid, delta);
            Ok(json!(true))
        }
        "getprioritisedtransactions" => {
            let mempool = node.mempool();
            let mut map = serde_json::Map::new();
            for (txid, delta) in mempool.deltas() {
                let mut value = json!({"fee_delta": delta, "in_mempool": false});
                if let (Some(entry), Value::Object(fields)) = (mempool.get(txid), &mut value) {
                    fields.insert("in_mempool".into(), json!(true));
                    fields.insert("modified_fee".into(), json!(mempool.modified_fee(entry)));
                }
                map.insert(txid.to_string(), value);
            }
            Ok(Value::Object(map))
        }
        "estimatesmartfee" => {
            let target = params.integer(0, "conf_target")?;
            if !(1..=1008).contains(&target) {
                return Err(error(
                    code::INVALID_PARAMETER,
                    "Invalid conf_target, must be between 1 and 1008",
                ));
            }
            Ok(match node.fee_rate() {
                // BTC per kvB, as Core answers.
                Some(rate) => {
                    json!({"feerate": Amount::from_sat(rate * 1000).to_btc(), "blocks": target})
                }
                None => json!({"errors": ["Insufficient data or no feerate found"], "blocks": 0}),
            })
        }
        "setfeerate" => {
            // Not Core's: lets tests decide what `estimatesmartfee` answers (sat/vB; 0 clears).
            let rate = params.integer(0, "sat_per_vbyte")?;
            let rate = u64::try_from(rate)
                .map_err(|_| error(code::INVALID_PARAMETER, "fee rate must not be negative"))?;
            node.set_fee_rate((rate > 0).then_some(rate));
            Ok(Value::Null)
        }
        "setblockmintxfee" => {
            // Not Core's: `-blockmintxfee` at run time, in sat/vB (fractions allowed; 0 takes
            // every package with a non-negative modified fee).
            let rate = params.number(0, "sat_per_vbyte")?;
            if !(0.0..=1e12).contains(&rate) {
                return Err(error(
                    code::INVALID_PARAMETER,
                    "fee rate must be a non-negative number of sat/vB",
                ));
            }
            // In range by the check above; sat/kvB are whole, as in Core's `CFeeRate`.
            #[allow(clippy::cast_possible_truncation)]
            let sat_per_kvb = (rate * 1000.0).round() as i64;
            node.set_block_min_fee_rate(CoreFeeRate::from_sat_per_kvb(sat_per_kvb));
            Ok(Value::Null)
        }
        "generatetoaddress" => {
            let count = params.integer(0, "nblocks")?;
            let payout = address(params.string(1, "address")?)?;
            let mut hashes = Vec::new();
            for _ in 0..count.max(0) {
                hashes.push(json!(node.mine(payout.clone(), None)?.to_string()));
            }
            Ok(Value::Array(hashes))
        }
        "generateblock" => {
            let payout = address(params.string(0, "output")?)?;
            let list = params
                .required(1, "transactions")?
                .as_array()
                .ok_or_else(|| error(code::TYPE, "transactions: expected type array"))?;
            let mut transactions = Vec::new();
            for item in list {
                let text = item
                    .as_str()
                    .ok_or_else(|| error(code::TYPE, "transactions: expected strings"))?;
                let transaction = match Txid::from_str(text) {
                    Ok(txid) if text.len() == 64 => node
                        .mempool()
                        .get(&txid)
                        .map(|entry| entry.transaction.clone())
                        .ok_or_else(|| {
                            error(
                                code::INVALID_ADDRESS_OR_KEY,
                                format!("Transaction {txid} not in mempool."),
                            )
                        })?,
                    _ => decode_transaction(text).map_err(|_| {
                        error(
                            code::DESERIALIZATION,
                            format!("Transaction decode failed for {text}. Make sure the tx has at least one input."),
                        )
                    })?,
                };
                transactions.push(transaction);
            }
            let hash = node.mine(payout, Some(transactions))?;
            Ok(json!({"hash": hash.to_string()}))
        }
        "invalidateblock" => {
            node.invalidate(params.block_hash(0)?)?;
            Ok(Value::Null)
        }
        "reconsiderblock" => {
            node.reconsider(params.block_hash(0)?)?;
            Ok(Value::Null)
        }
        "stop" => Ok(json!("Bitcoin Core stopping")),
        _ => Err(error(code::METHOD_NOT_FOUND, "Method not found")),
    }
}

/// Core's `feerate_percentiles`: the 10th, 25th, 50th, 75th and 90th percentile fee rates,
/// weighted by virtual size; zeroes for a block without transactions.
fn feerate_percentiles(mut rates: Vec<(u64, u64)>) -> [u64; 5] {
    rates.sort_unstable();
    let total: u64 = rates.iter().map(|(_, vsize)| vsize).sum();
    let mut percentiles = [0u64; 5];
    for (slot, percent) in percentiles.iter_mut().zip([10u64, 25, 50, 75, 90]) {
        let threshold = total * percent / 100;
        let mut seen = 0;
        for (rate, vsize) in &rates {
            seen += vsize;
            if seen >= threshold {
                *slot = *rate;
                break;
            }
        }
    }
    percentiles
}

fn difficulty(block: &Block) -> f64 {
    block.header.difficulty_float()
}

/// Regtest's work per block is 2 (target 0x7fffff << 232): the chain's work as Core prints it.
fn chainwork(height: u32) -> String {
    format!("{:064x}", (u64::from(height) + 1) * 2)
}

fn block_json(node: &Node, block: &Block, with_transactions: bool) -> Value {
    let hash = block.block_hash();
    let chain = node.chain();
    let height = chain.height_of(&hash);
    let mut value = json!({
        "hash": hash.to_string(),
        "confirmations": height.map_or(-1, |height| i64::from(chain.height() - height) + 1),
        "version": block.header.version.to_consensus(),
        "versionHex": format!("{:08x}", block.header.version.to_consensus()),
        "merkleroot": block.header.merkle_root.to_string(),
        "time": block.header.time,
        "nonce": block.header.nonce,
        "bits": format!("{:08x}", block.header.bits.to_consensus()),
        "difficulty": difficulty(block),
        "nTx": block.txdata.len(),
        "previousblockhash": block.header.prev_blockhash.to_string(),
    });
    if let Value::Object(map) = &mut value {
        if let Some(height) = height {
            map.insert("height".into(), json!(height));
            map.insert("chainwork".into(), json!(chainwork(height)));
            if let Some(next) = chain.at(height + 1) {
                map.insert("nextblockhash".into(), json!(next.block_hash().to_string()));
            }
            if height == 0 {
                map.remove("previousblockhash");
            }
        }
        if with_transactions {
            map.insert("size".into(), json!(block.total_size()));
            map.insert(
                "strippedsize".into(),
                json!(
                    block
                        .txdata
                        .iter()
                        .map(Transaction::base_size)
                        .sum::<usize>()
                        + 80
                ),
            );
            map.insert("weight".into(), json!(block.weight().to_wu()));
            map.insert(
                "tx".into(),
                json!(block
                    .txdata
                    .iter()
                    .map(|transaction| transaction.compute_txid().to_string())
                    .collect::<Vec<_>>()),
            );
        }
    }
    value
}

fn transaction_json(transaction: &Transaction) -> Value {
    let inputs: Vec<Value> = transaction
        .input
        .iter()
        .map(|input| {
            let witness: Vec<String> = input
                .witness
                .iter()
                .map(|item| item.to_lower_hex_string())
                .collect();
            if transaction.is_coinbase() {
                json!({
                    "coinbase": input.script_sig.as_bytes().to_lower_hex_string(),
                    "txinwitness": witness,
                    "sequence": input.sequence.0,
                })
            } else {
                json!({
                    "txid": input.previous_output.txid.to_string(),
                    "vout": input.previous_output.vout,
                    "scriptSig": {"hex": input.script_sig.as_bytes().to_lower_hex_string()},
                    "txinwitness": witness,
                    "sequence": input.sequence.0,
                })
            }
        })
        .collect();
    let outputs: Vec<Value> = (0u32..)
        .zip(&transaction.output)
        .map(|(n, output)| {
            let mut script = json!({"hex": output.script_pubkey.as_bytes().to_lower_hex_string()});
            if let (Ok(address), Value::Object(map)) = (
                Address::from_script(&output.script_pubkey, Network::Regtest),
                &mut script,
            ) {
                map.insert("address".into(), json!(address.to_string()));
            }
            json!({"value": btc(output.value), "n": n, "scriptPubKey": script})
        })
        .collect();
    json!({
        "txid": transaction.compute_txid().to_string(),
        "hash": transaction.compute_wtxid().to_string(),
        "version": transaction.version.0,
        "size": transaction.total_size(),
        "vsize": transaction.vsize(),
        "weight": transaction.weight().to_wu(),
        "locktime": transaction.lock_time.to_consensus_u32(),
        "vin": inputs,
        "vout": outputs,
        "hex": consensus::serialize(transaction).to_lower_hex_string(),
    })
}

/// Satoshis (possibly negative) as a BTC JSON number, as Core's `ValueFromAmount`.
fn signed_btc(sat: i64) -> Value {
    json!(bitcoin::SignedAmount::from_sat(sat).to_btc())
}

/// Core's mempool entry: sizes, counts and modified fees with ancestors and descendants (each
/// counting the entry itself), its in-mempool parents (`depends`) and children (`spentby`).
fn mempool_entry_json(mempool: &Mempool, entry: &Entry) -> Value {
    let ancestors = mempool.ancestors(&entry.txid);
    let descendants = mempool.descendants(&entry.txid);
    let modified = mempool.modified_fee(entry);
    let totals = |txids: &[Txid]| {
        txids.iter().filter_map(|txid| mempool.get(txid)).fold(
            (entry.vsize, modified),
            |(vsize, fee), other| {
                (
                    vsize + other.vsize,
                    fee.saturating_add(mempool.modified_fee(other)),
                )
            },
        )
    };
    let (ancestor_size, ancestor_fees) = totals(&ancestors);
    let (descendant_size, descendant_fees) = totals(&descendants);
    // BIP125 signalling, reported as Core does though full RBF ignores it: the entry's inputs or
    // an in-mempool ancestor's.
    let signals = |transaction: &Transaction| {
        transaction
            .input
            .iter()
            .any(|input| input.sequence.is_rbf())
    };
    let replaceable = signals(&entry.transaction)
        || ancestors
            .iter()
            .filter_map(|txid| mempool.get(txid))
            .any(|ancestor| signals(&ancestor.transaction));
    let strings =
        |txids: Vec<Txid>| -> Vec<String> { txids.iter().map(ToString::to_string).collect() };
    json!({
        "vsize": entry.vsize,
        "weight": entry.transaction.weight().to_wu(),
        "time": entry.time,
        "height": entry.height,
        "descendantcount": descendants.len() + 1,
        "descendantsize": descendant_size,
        "ancestorcount": ancestors.len() + 1,
        "ancestorsize": ancestor_size,
        "wtxid": entry.transaction.compute_wtxid().to_string(),
        "fees": {
            "base": btc(entry.fee),
            "modified": signed_btc(modified),
            "ancestor": signed_btc(ancestor_fees),
            "descendant": signed_btc(descendant_fees),
        },
        "depends": strings(mempool.parents(&entry.txid)),
        "spentby": strings(mempool.children(&entry.txid)),
        "bip125-replaceable": replaceable,
        "unbroadcast": false,
    })
}
