//! Bitcoin Core's JSON-RPC, as the scanner needs it: an HTTP client (`ureq`) with basic
//! authentication from a cookie file (re-read when Core restarts and rotates it) or a user and
//! a password file, a timeout per call, retries with exponential backoff while the node cannot
//! be reached, and Core's errors as typed values. Blocks and transactions are decoded with the
//! `bitcoin` crate from their raw form; blocks come, optionally, through Core's binary REST
//! endpoint instead of `getblock`'s hex (`with_rest`).

use std::{path::PathBuf, thread, time::Duration};

use base64::Engine;
use bitcoin::{consensus, Block, BlockHash, Transaction, Txid};
use serde_json::{json, Value};
use thiserror::Error;
use zeroize::Zeroizing;

use crate::chain::core_answers;

/// Core's `RPC_INVALID_ADDRESS_OR_KEY`: no such block or transaction.
pub const RPC_INVALID_ADDRESS_OR_KEY: i64 = -5;
/// Core's `RPC_INVALID_PARAMETER`: e.g. a height out of range.
pub const RPC_INVALID_PARAMETER: i64 = -8;
/// Core's `RPC_VERIFY_ALREADY_IN_CHAIN`.
pub const RPC_VERIFY_ALREADY_IN_CHAIN: i64 = -27;

/// A call that did not give its result.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RpcError {
    /// Core answered with an error.
    #[error("Bitcoin Core error {code}: {message}")]
    Core {
        /// Core's code (`RPC_*`).
        code: i64,
        /// Core's message.
        message: String,
    },
    /// The node could not be reached, after every retry.
    #[error("Bitcoin Core unreachable after {attempts} attempts: {last}")]
    Unreachable {
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        last: String,
    },
    /// Core refused the credentials (HTTP 401).
    #[error("Bitcoin Core refused the RPC credentials")]
    Unauthorized,
    /// The credentials could not be read.
    #[error("cannot read RPC credentials from {path}: {reason}")]
    Credentials {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The answer is not what Core sends.
    #[error("malformed answer to {method}: {reason}")]
    Malformed {
        /// The method called.
        method: String,
        /// What was wrong.
        reason: String,
    },
}

impl RpcError {
    /// Whether Core said the block or transaction does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, RpcError::Core { code, .. } if *code == RPC_INVALID_ADDRESS_OR_KEY)
    }

    /// The metric label of the error's kind.
    pub fn kind(&self) -> &'static str {
        match self {
            RpcError::Core { .. } => "core",
            RpcError::Unreachable { .. } => "unreachable",
            RpcError::Unauthorized => "unauthorized",
            RpcError::Credentials { .. } => "credentials",
            RpcError::Malformed { .. } => "malformed",
        }
    }
}

/// How the client authenticates.
#[derive(Clone, Debug)]
pub enum Auth {
    /// Core's cookie file (`__cookie__:<hex>`), read before each call.
    Cookie(PathBuf),
    /// A user and the file holding its password.
    UserPassword {
        /// The user.
        user: String,
        /// The password file.
        password_file: PathBuf,
    },
}

impl Auth {
    fn header(&self) -> Result<Zeroizing<String>, RpcError> {
        let read = |path: &PathBuf| {
            std::fs::read_to_string(path)
                .map(Zeroizing::new)
                .map_err(|error| RpcError::Credentials {
                    path: path.clone(),
                    reason: error.to_string(),
                })
        };
        let credentials = match self {
            Auth::Cookie(path) => Zeroizing::new(read(path)?.trim().to_owned()),
            Auth::UserPassword {
                user,
                password_file,
            } => Zeroizing::new(format!("{user}:{}", read(password_file)?.trim_end())),
        };
        Ok(Zeroizing::new(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(credentials.as_bytes())
        )))
    }
}

/// Retrying while the node is unreachable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retry {
    /// Attempts before giving up (at least 1).
    pub attempts: u32,
    /// The first pause; doubled after each failure.
    pub initial: Duration,
    /// The longest pause.
    pub max: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            attempts: 8,
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
        }
    }
}

/// A Bitcoin Core RPC client.
#[derive(Clone)]
pub struct CoreRpc {
    url: String,
    auth: Auth,
    agent: ureq::Agent,
    retry: Retry,
    /// Whether blocks are fetched through Core's binary REST endpoint (the node runs with
    /// `-rest`) rather than `getblock`'s hex.
    rest: bool,
}

/// The largest answer read: a block's hex, with room (a 4 MB block is 8 MB of hex).
const MAX_ANSWER: u64 = 64 * 1024 * 1024;

/// A block as Core sent it, not yet decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RawBlock {
    /// `getblock`'s hex.
    Hex(String),
    /// The REST endpoint's consensus bytes.
    Bytes(Vec<u8>),
}

impl CoreRpc {
    /// A client of `url` (`http://host:port`), each call abandoned after `timeout`.
    pub fn new(url: &str, auth: Auth, timeout: Duration, retry: Retry) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .build()
            .into();
        CoreRpc {
            url: url.to_owned(),
            auth,
            agent,
            retry,
            rest: false,
        }
    }

    /// The same client, fetching blocks through Core's REST endpoint (`GET
    /// /rest/block/<hash>.bin`, unauthenticated, served when the node runs with `-rest`):
    /// half the bytes of `getblock`'s hex, and neither JSON nor hex to decode.
    #[must_use]
    pub fn with_rest(self) -> Self {
        CoreRpc { rest: true, ..self }
    }

    /// Runs `attempt`, retrying with backoff while the node cannot be reached.
    fn retrying<T>(
        &self,
        what: &str,
        attempt: impl Fn() -> Result<T, RpcError>,
    ) -> Result<T, RpcError> {
        let mut pause = self.retry.initial;
        let mut attempts = 0;
        loop {
            attempts += 1;
            match attempt() {
                Err(RpcError::Unreachable { last, .. })
                    if attempts < self.retry.attempts.max(1) =>
                {
                    tracing::warn!(what, attempt = attempts, error = %last, "Bitcoin Core unreachable; retrying");
                    thread::sleep(pause);
                    pause = (pause * 2).min(self.retry.max);
                }
                Err(RpcError::Unreachable { last, .. }) => {
                    return Err(RpcError::Unreachable { attempts, last })
                }
                other => return other,
            }
        }
    }

    /// Calls `method` with positional `params`, retrying while the node cannot be reached.
    ///
    /// # Errors
    /// Core's error, the node unreachable after every retry, or a malformed answer.
    pub fn call(&self, method: &str, params: Value) -> Result<Value, RpcError> {
        let body = json!({"jsonrpc": "1.0", "id": "scanner", "method": method, "params": params})
            .to_string();
        self.retrying(method, || self.once(method, &body))
    }

    /// One GET of the REST block endpoint.
    fn rest_block_once(&self, hash: &BlockHash) -> Result<Vec<u8>, RpcError> {
        let unreachable = |error: ureq::Error| RpcError::Unreachable {
            attempts: 1,
            last: error.to_string(),
        };
        let mut response = self
            .agent
            .get(format!(
                "{}/rest/block/{hash}.bin",
                self.url.trim_end_matches('/')
            ))
            .call()
            .map_err(unreachable)?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER)
            .read_to_vec()
            .map_err(unreachable)?;
        match status {
            200 => Ok(body),
            // Core: "<hash> not found"; a node without -rest has no handler there at all.
            404 if body.is_empty() => Err(RpcError::Malformed {
                method: "rest/block".into(),
                reason: "the node serves no REST endpoint: run it with -rest, or turn rest off"
                    .into(),
            }),
            404 => Err(RpcError::Core {
                code: RPC_INVALID_ADDRESS_OR_KEY,
                message: String::from_utf8_lossy(&body).trim_end().to_owned(),
            }),
            status => Err(RpcError::Malformed {
                method: "rest/block".into(),
                reason: format!("HTTP {status}: {}", String::from_utf8_lossy(&body)),
            }),
        }
    }

    fn once(&self, method: &str, body: &str) -> Result<Value, RpcError> {
        let authorization = self.auth.header()?;
        let unreachable = |error: ureq::Error| RpcError::Unreachable {
            attempts: 1,
            last: error.to_string(),
        };
        let mut response = self
            .agent
            .post(&self.url)
            .header("Authorization", authorization.as_str())
            .header("Content-Type", "application/json")
            .send(body)
            .map_err(unreachable)?;
        let status = response.status().as_u16();
        if status == 401 {
            return Err(RpcError::Unauthorized);
        }
        let text = response
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER)
            .read_to_string()
            .map_err(unreachable)?;
        core_answers::reply(method, status, &text)
    }

    fn string(&self, method: &str, params: Value) -> Result<String, RpcError> {
        core_answers::result_string(method, self.call(method, params)?)
    }

    /// The height of the node's tip.
    ///
    /// # Errors
    /// See `call`.
    pub fn block_count(&self) -> Result<u64, RpcError> {
        core_answers::height(&self.call("getblockcount", json!([]))?)
    }

    /// The hash of the active chain's block at `height`.
    ///
    /// # Errors
    /// See `call`; Core's -8 when the height is above the tip.
    pub fn block_hash(&self, height: u64) -> Result<BlockHash, RpcError> {
        core_answers::block_hash(self.call("getblockhash", json!([height]))?)
    }

    /// The height of a block on the active chain; `None` for an unknown block or one off the
    /// active chain.
    ///
    /// # Errors
    /// See `call`.
    pub fn header_height(&self, hash: &BlockHash) -> Result<Option<u64>, RpcError> {
        let header = match self.call("getblockheader", json!([hash.to_string(), true])) {
            Ok(header) => header,
            Err(error) if error.is_not_found() => return Ok(None),
            Err(error) => return Err(error),
        };
        Ok(core_answers::header_height(&header))
    }

    /// The median fee rate (sat/vB, weighted by size) paid in a block, from Core's
    /// `getblockstats`; `None` for a block with only its coinbase.
    ///
    /// # Errors
    /// See `call`.
    pub fn block_median_fee_rate(&self, hash: &BlockHash) -> Result<Option<u64>, RpcError> {
        let stats = self.call(
            "getblockstats",
            json!([hash.to_string(), ["txs", "feerate_percentiles"]]),
        )?;
        core_answers::median_fee_rate(&stats)
    }

    /// A block as Core sends it (REST's bytes with `with_rest`, else `getblock`'s hex), not yet
    /// decoded: a caller fetching ahead decodes it on another thread (`decode_block`).
    ///
    /// # Errors
    /// See `call`.
    pub fn raw_block(&self, hash: &BlockHash) -> Result<RawBlock, RpcError> {
        if self.rest {
            self.retrying("rest/block", || self.rest_block_once(hash))
                .map(RawBlock::Bytes)
        } else {
            self.string("getblock", json!([hash.to_string(), 0]))
                .map(RawBlock::Hex)
        }
    }

    /// Decodes the raw block `hash`. Only the header is checked against the
    /// hash: the node is the validator's own, trusted for the chain's contents (checking the
    /// transactions against the merkle root would hash every one of them, twice the cost of
    /// scanning the block).
    ///
    /// # Errors
    /// `Malformed`: not a block, or another block.
    pub fn decode_block(hash: &BlockHash, raw: &RawBlock) -> Result<Block, RpcError> {
        let block: Block = match raw {
            RawBlock::Hex(hex) => core_answers::consensus_hex("getblock", hex)?,
            RawBlock::Bytes(bytes) => {
                consensus::deserialize(bytes).map_err(|error| RpcError::Malformed {
                    method: "rest/block".into(),
                    reason: error.to_string(),
                })?
            }
        };
        if block.block_hash() != *hash {
            return Err(RpcError::Malformed {
                method: "getblock".into(),
                reason: format!("asked for {hash}, got {}", block.block_hash()),
            });
        }
        Ok(block)
    }

    /// A transaction from the mempool or the chain, or `None` if the node knows none.
    ///
    /// # Errors
    /// See `call`.
    pub fn raw_transaction(&self, txid: &Txid) -> Result<Option<Transaction>, RpcError> {
        match self.string("getrawtransaction", json!([txid.to_string(), false])) {
            Ok(hex) => core_answers::consensus_hex("getrawtransaction", &hex).map(Some),
            Err(error) if error.is_not_found() => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Publishes a transaction. One already in the chain counts as published.
    ///
    /// # Errors
    /// Core refused it, or see `call`.
    pub fn send_raw_transaction(&self, transaction: &Transaction) -> Result<(), RpcError> {
        let hex = consensus::encode::serialize_hex(transaction);
        match self.call("sendrawtransaction", json!([hex])) {
            Ok(_) => Ok(()),
            Err(RpcError::Core { code, .. }) if code == RPC_VERIFY_ALREADY_IN_CHAIN => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Core's fee estimate for confirmation within `target` blocks, in sat/vB (rounded up);
    /// `None` when Core has no estimate (a fresh or quiet chain).
    ///
    /// # Errors
    /// See `call`.
    pub fn estimate_smart_fee(&self, target: u16) -> Result<Option<u64>, RpcError> {
        let answer = self.call("estimatesmartfee", json!([target]))?;
        Ok(core_answers::fee_estimate(&answer))
    }
}
