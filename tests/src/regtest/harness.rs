//! The regtest node as a test uses it: `regtest-node` started on a free port with a cookie file
//! in its own directory (with `NodeOptions`: REST, `-blockmintxfee`), a JSON-RPC client (ureq)
//! that returns Core's errors as values, helpers to fund test wallets by mining, and helpers to
//! steer what gets mined (`prioritise`, `set_block_min_fee_rate`, `mempool_txids`).

use std::{
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command},
    time::Duration,
};

use base64::Engine;
use bitcoin::{
    consensus, hex::FromHex, Amount, Block, BlockHash, Denomination, OutPoint, Transaction, TxOut,
    Txid,
};
use serde_json::{json, Value};

use crate::{binary, start_until_ready, HarnessError};

/// An RPC call's error: Core's code and message, or a transport failure (code 0).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("RPC error {code}: {message}")]
pub struct CallError {
    /// Core's error code; 0 when the call never got an answer.
    pub code: i64,
    /// The message.
    pub message: String,
    /// The HTTP status (0 without an answer).
    pub status: u16,
}

/// How a test starts a node. `NodeOptions::default()` is what `start` uses.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    /// Serve Core's REST block endpoint (`--rest`, as `bitcoind -rest`); on by default.
    pub rest: bool,
    /// `--blockmintxfee`: the lowest package fee rate a block from the mempool takes, in BTC
    /// per kvB as Core's `-blockmintxfee` (`Amount::from_sat(10_000)` is 10 sat/vB). `None`
    /// keeps Core's default, 1 sat/vB. Restarts pass it again; a rate set at run time with
    /// `set_block_min_fee_rate` does not survive them (as in Core).
    pub blockmintxfee: Option<Amount>,
}

impl Default for NodeOptions {
    fn default() -> Self {
        NodeOptions {
            rest: true,
            blockmintxfee: None,
        }
    }
}

/// A running regtest node.
pub struct RegtestNode {
    datadir: PathBuf,
    child: Option<Child>,
    address: Option<SocketAddr>,
    /// The port of the first start, reused by restarts so that clients find the node again.
    port: u16,
    agent: ureq::Agent,
    /// How it is started (again at each restart).
    options: NodeOptions,
}

impl RegtestNode {
    /// Starts a node on `datadir` (created if missing), with Core's REST endpoint on as
    /// `bitcoind -rest` would have it, and waits until it answers.
    ///
    /// # Errors
    /// The binary is missing or the node did not start.
    pub fn start(datadir: &Path) -> Result<Self, HarnessError> {
        Self::start_with(datadir, NodeOptions::default())
    }

    /// Starts a node as `start` does, without the REST endpoint (as `bitcoind` by default).
    ///
    /// # Errors
    /// The binary is missing or the node did not start.
    pub fn start_without_rest(datadir: &Path) -> Result<Self, HarnessError> {
        Self::start_with(
            datadir,
            NodeOptions {
                rest: false,
                ..NodeOptions::default()
            },
        )
    }

    /// Starts a node on `datadir` (created if missing) with `options`, and waits until it
    /// answers.
    ///
    /// # Errors
    /// The binary is missing or the node did not start.
    pub fn start_with(datadir: &Path, options: NodeOptions) -> Result<Self, HarnessError> {
        fs::create_dir_all(datadir)?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into();
        let mut node = RegtestNode {
            datadir: datadir.to_owned(),
            child: None,
            address: None,
            port: 0,
            agent,
            options,
        };
        node.restart()?;
        Ok(node)
    }

    /// Starts the node again on the same directory and port (after `stop` or `kill`).
    ///
    /// # Errors
    /// The node did not start.
    pub fn restart(&mut self) -> Result<(), HarnessError> {
        let mut command = Command::new(binary("regtest-node")?);
        command
            .arg("--datadir")
            .arg(&self.datadir)
            .arg("--rpc-bind")
            .arg(format!("127.0.0.1:{}", self.port));
        if self.options.rest {
            command.arg("--rest");
        }
        if let Some(rate) = self.options.blockmintxfee {
            command
                .arg("--blockmintxfee")
                .arg(rate.to_string_in(Denomination::Bitcoin));
        }
        let (child, address) = start_until_ready(command, &self.datadir.join("node.log"))?;
        self.address = Some(address);
        self.port = address.port();
        self.child = Some(child);
        Ok(())
    }

    /// The RPC URL, e.g. for a scanner's configuration (the same across restarts).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The cookie file the node wrote.
    pub fn cookie_file(&self) -> PathBuf {
        self.datadir.join(".cookie")
    }

    /// Sends one raw HTTP body with the cookie's credentials (or `credentials`); returns the
    /// status and body.
    ///
    /// # Errors
    /// No answer.
    pub fn post(
        &self,
        body: &str,
        credentials: Option<&str>,
    ) -> Result<(u16, String), HarnessError> {
        if self.address.is_none() {
            return Err(HarnessError::Failed("node not running".into()));
        }
        let url = self.url();
        let cookie;
        let credentials = match credentials {
            Some(credentials) => credentials,
            None => {
                cookie = fs::read_to_string(self.cookie_file())?;
                cookie.trim()
            }
        };
        let authorization = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(credentials)
        );
        let mut response = self
            .agent
            .post(&url)
            .header("Authorization", &authorization)
            .header("Content-Type", "application/json")
            .send(body)
            .map_err(|error| HarnessError::Failed(error.to_string()))?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .read_to_string()
            .map_err(|error| HarnessError::Failed(error.to_string()))?;
        Ok((status, text))
    }

    /// Calls a method with positional parameters.
    ///
    /// # Errors
    /// Core's error, or no answer (code 0).
    pub fn rpc(&self, method: &str, params: Value) -> Result<Value, CallError> {
        let body = json!({"jsonrpc": "1.0", "id": 1, "method": method, "params": params});
        let (status, text) = self
            .post(&body.to_string(), None)
            .map_err(|error| CallError {
                code: 0,
                message: error.to_string(),
                status: 0,
            })?;
        let reply: Value = serde_json::from_str(&text).map_err(|error| CallError {
            code: 0,
            message: format!("HTTP {status}: {error}: {text}"),
            status,
        })?;
        match reply.get("error") {
            Some(error) if !error.is_null() => Err(CallError {
                code: error.get("code").and_then(Value::as_i64).unwrap_or(0),
                message: error
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
                status,
            }),
            _ => Ok(reply.get("result").cloned().unwrap_or(Value::Null)),
        }
    }

    /// Mines `count` blocks to `address`, returning their hashes.
    ///
    /// # Errors
    /// The node refused.
    pub fn mine(
        &self,
        count: u32,
        address: &bitcoin::Address,
    ) -> Result<Vec<BlockHash>, CallError> {
        let hashes = self.rpc("generatetoaddress", json!([count, address.to_string()]))?;
        Ok(hashes
            .as_array()
            .map(|hashes| {
                hashes
                    .iter()
                    .filter_map(|hash| hash.as_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The block at `height` of the active chain.
    ///
    /// # Errors
    /// No such block, or it does not decode.
    pub fn block_at(&self, height: u32) -> Result<Block, CallError> {
        let hash = self.rpc("getblockhash", json!([height]))?;
        let hex = self.rpc("getblock", json!([hash, 0]))?;
        let bytes = hex
            .as_str()
            .and_then(|hex| Vec::<u8>::from_hex(hex).ok())
            .unwrap_or_default();
        consensus::deserialize(&bytes).map_err(|error| CallError {
            code: 0,
            message: error.to_string(),
            status: 0,
        })
    }

    /// The first output of the coinbase at `height`: a mined wallet's funds.
    ///
    /// # Errors
    /// No such block.
    pub fn coinbase_output(&self, height: u32) -> Result<(OutPoint, TxOut), CallError> {
        let block = self.block_at(height)?;
        let coinbase = block.txdata.first().ok_or_else(|| CallError {
            code: 0,
            message: "block without coinbase".into(),
            status: 0,
        })?;
        let output = coinbase.output.first().cloned().ok_or_else(|| CallError {
            code: 0,
            message: "coinbase without outputs".into(),
            status: 0,
        })?;
        Ok((
            OutPoint {
                txid: coinbase.compute_txid(),
                vout: 0,
            },
            output,
        ))
    }

    /// Sends a transaction, returning its txid as the node reports it.
    ///
    /// # Errors
    /// The node refused it.
    pub fn send(&self, transaction: &Transaction) -> Result<String, CallError> {
        let hex = consensus::encode::serialize_hex(transaction);
        self.rpc("sendrawtransaction", json!([hex]))
            .map(|txid| txid.as_str().unwrap_or_default().to_owned())
    }

    /// `prioritisetransaction`: adds `delta_sat` (negative to lower) to `txid`'s modified fee,
    /// which block selection and replacement use; cumulative, and kept for a transaction that
    /// has not arrived yet.
    ///
    /// # Errors
    /// The node refused.
    pub fn prioritise(&self, txid: &Txid, delta_sat: i64) -> Result<(), CallError> {
        self.rpc(
            "prioritisetransaction",
            json!([txid.to_string(), null, delta_sat]),
        )
        .map(drop)
    }

    /// Sets the lowest package fee rate `generatetoaddress` mines (our `setblockmintxfee`, not
    /// Core's: `-blockmintxfee` without a restart), in sat/vB.
    ///
    /// # Errors
    /// The node refused.
    pub fn set_block_min_fee_rate(&self, sat_per_vb: u64) -> Result<(), CallError> {
        self.rpc("setblockmintxfee", json!([sat_per_vb])).map(drop)
    }

    /// The txids in the mempool (`getrawmempool`), in admission order.
    ///
    /// # Errors
    /// The node refused, or answered something else than txids.
    pub fn mempool_txids(&self) -> Result<Vec<Txid>, CallError> {
        let txids = self.rpc("getrawmempool", json!([]))?;
        txids
            .as_array()
            .into_iter()
            .flatten()
            .map(|txid| {
                txid.as_str()
                    .and_then(|txid| txid.parse().ok())
                    .ok_or_else(|| CallError {
                        code: 0,
                        message: format!("not a txid: {txid}"),
                        status: 0,
                    })
            })
            .collect()
    }

    /// Whether `txid` is in the mempool.
    ///
    /// # Errors
    /// The node refused.
    pub fn in_mempool(&self, txid: &Txid) -> Result<bool, CallError> {
        Ok(self.mempool_txids()?.contains(txid))
    }

    /// `stop`, then waits for the process to exit.
    ///
    /// # Errors
    /// The call or the wait failed.
    pub fn stop(&mut self) -> Result<std::process::ExitStatus, HarnessError> {
        let _ = self.rpc("stop", json!([]));
        let mut child = self
            .child
            .take()
            .ok_or_else(|| HarnessError::Failed("not running".into()))?;
        self.address = None;
        Ok(child.wait()?)
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.address = None;
    }
}

impl Drop for RegtestNode {
    fn drop(&mut self) {
        self.kill();
    }
}
