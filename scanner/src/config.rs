//! The scanner node's configuration file: TOML, every setting documented in `EXAMPLE`,
//! unknown keys refused, secrets only by file path, checked as a whole at load.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use bitcoin::secp256k1::XOnlyPublicKey;
use schema::link::identity::LinkPublicKey;
use serde::Deserialize;
use thiserror::Error;

/// A complete, commented configuration. `scanner example-config` prints it; a test checks
/// that it loads, so the documentation cannot drift from the parser.
pub const EXAMPLE: &str = include_str!("../scanner.example.toml");

/// The Bitcoin networks a processor can serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BitcoinChain {
    /// Mainnet.
    Bitcoin,
    /// Testnet3.
    Testnet,
    /// Signet.
    Signet,
    /// Regtest: local test chains.
    Regtest,
}

impl From<BitcoinChain> for bitcoin::Network {
    fn from(network: BitcoinChain) -> Self {
        match network {
            BitcoinChain::Bitcoin => bitcoin::Network::Bitcoin,
            BitcoinChain::Testnet => bitcoin::Network::Testnet,
            BitcoinChain::Signet => bitcoin::Network::Signet,
            BitcoinChain::Regtest => bitcoin::Network::Regtest,
        }
    }
}

/// The scanner node's settings.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The Bitcoin network followed.
    pub network: BitcoinChain,
    /// Blocks on top of a block (the block itself included) before it is final.
    pub confirmations: u32,
    /// Milliseconds between polls of the node.
    pub poll_interval_ms: u64,
    /// The RocksDB directory.
    pub db_path: PathBuf,
    /// How to reach Bitcoin Core.
    pub bitcoin_rpc: BitcoinRpc,
    /// How to reach the coordinator.
    pub coordinator: Coordinator,
    /// How to reach the signer enclave.
    pub enclave: Enclave,
    /// Where Prometheus scrapes.
    pub metrics: Metrics,
}

/// Bitcoin Core's JSON-RPC endpoint and credentials.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BitcoinRpc {
    /// `http://host:port`.
    pub url: String,
    /// Core's cookie file; or else `user` with `password_file`.
    pub cookie_file: Option<PathBuf>,
    /// RPC user name, with `password_file`.
    pub user: Option<String>,
    /// A file holding the RPC password.
    pub password_file: Option<PathBuf>,
    /// Seconds before a call is abandoned and retried.
    pub timeout_seconds: u64,
    /// Whether blocks come through Core's binary REST endpoint (Core runs with `-rest`).
    #[serde(default)]
    pub rest: bool,
}

/// How the coordinator link is secured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkTransport {
    /// Noise XX, both ends proven by their link keys: the default, and the only choice for a
    /// coordinator on another host.
    #[default]
    Noise,
    /// Plain TCP: only to a loopback address, and only when written explicitly.
    Plain,
}

/// The coordinator's Cap'n Proto endpoint and the keys that authenticate it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Coordinator {
    /// `host:port`.
    pub endpoint: SocketAddr,
    /// The validator this processor runs for, as the coordinator names it (hex).
    pub validator: String,
    /// How the link is secured.
    #[serde(default)]
    pub transport: LinkTransport,
    /// Our link key (`scanner link-key generate`); required with Noise.
    pub link_key_file: Option<PathBuf>,
    /// The coordinator's link public key, pinned (64 hex digits); required with Noise.
    pub link_key: Option<String>,
    /// The coordinator's key that signs every message it queues for us (BIP340 x-only, 64
    /// hex digits).
    pub message_key: String,
}

impl Coordinator {
    /// With Noise, our link key file and the coordinator's pinned link key; `None` with plain
    /// TCP, which only a loopback endpoint may use.
    ///
    /// # Errors
    /// A setting Noise needs is missing or malformed, or plain TCP to another host.
    pub fn noise(&self) -> Result<Option<(&Path, LinkPublicKey)>, ConfigError> {
        if self.transport == LinkTransport::Plain {
            if !self.endpoint.ip().is_loopback() {
                return Err(ConfigError::Invalid {
                    setting: "coordinator.transport",
                    reason: "plain TCP only to a loopback endpoint; use \"noise\"",
                });
            }
            return Ok(None);
        }
        let file = self.link_key_file.as_deref().ok_or(ConfigError::Invalid {
            setting: "coordinator.link_key_file",
            reason: "required with transport = \"noise\" (scanner link-key generate)",
        })?;
        let pinned = self
            .link_key
            .as_deref()
            .ok_or(ConfigError::Invalid {
                setting: "coordinator.link_key",
                reason: "required with transport = \"noise\": the coordinator's link public key",
            })?
            .parse()
            .map_err(|_| ConfigError::Invalid {
                setting: "coordinator.link_key",
                reason: "must be 64 hex digits",
            })?;
        Ok(Some((file, pinned)))
    }

    /// The coordinator's message signing key.
    ///
    /// # Errors
    /// Not an x-only public key.
    pub fn message_public_key(&self) -> Result<XOnlyPublicKey, ConfigError> {
        hex::decode(&self.message_key)
            .ok()
            .and_then(|bytes| XOnlyPublicKey::from_slice(&bytes).ok())
            .ok_or(ConfigError::Invalid {
                setting: "coordinator.message_key",
                reason: "must be an x-only public key, 64 hex digits",
            })
    }
}

/// The signer enclave's Unix socket.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enclave {
    /// Path of the socket.
    pub socket: PathBuf,
}

/// The Prometheus endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    /// Address `/metrics` is served on.
    pub listen: SocketAddr,
}

/// Why a configuration was refused. Each names the setting to fix.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this configuration (unknown or missing keys included).
    #[error("configuration is not valid: {0}")]
    Parse(#[from] toml::de::Error),
    /// A setting outside its domain.
    #[error("setting `{setting}`: {reason}")]
    Invalid {
        /// The setting, as written in the file.
        setting: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
}

impl Config {
    /// Parses and checks a configuration.
    ///
    /// # Errors
    /// The text is not a valid configuration.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and checks a configuration file.
    ///
    /// # Errors
    /// The file cannot be read or is not a valid configuration.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml(&text)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.confirmations == 0 {
            return Err(ConfigError::Invalid {
                setting: "confirmations",
                reason: "must be at least 1",
            });
        }
        if self.network == BitcoinChain::Bitcoin && self.confirmations < 6 {
            return Err(ConfigError::Invalid {
                setting: "confirmations",
                reason: "mainnet needs at least 6",
            });
        }
        if hex::decode(&self.coordinator.validator).map_or(true, |bytes| bytes.is_empty()) {
            return Err(ConfigError::Invalid {
                setting: "coordinator.validator",
                reason: "must be non-empty hex",
            });
        }
        self.coordinator.noise()?;
        self.coordinator.message_public_key()?;
        if self.poll_interval_ms < 10 {
            return Err(ConfigError::Invalid {
                setting: "poll_interval_ms",
                reason: "must be at least 10",
            });
        }
        let rpc = &self.bitcoin_rpc;
        if !(rpc.url.starts_with("http://") || rpc.url.starts_with("https://")) {
            return Err(ConfigError::Invalid {
                setting: "bitcoin_rpc.url",
                reason: "must start with http:// or https://",
            });
        }
        match (&rpc.cookie_file, &rpc.user, &rpc.password_file) {
            (Some(_), None, None) | (None, Some(_), Some(_)) => {}
            _ => {
                return Err(ConfigError::Invalid {
                    setting: "bitcoin_rpc",
                    reason: "set either cookie_file, or user and password_file",
                })
            }
        }
        if rpc.timeout_seconds == 0 {
            return Err(ConfigError::Invalid {
                setting: "bitcoin_rpc.timeout_seconds",
                reason: "must be at least 1",
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_is_a_valid_configuration() {
        let config = Config::from_toml(EXAMPLE).unwrap();
        assert_eq!(config.network, BitcoinChain::Regtest);
        assert!(config.bitcoin_rpc.cookie_file.is_some());
    }

    fn example_with(from: &str, to: &str) -> Result<Config, ConfigError> {
        assert!(EXAMPLE.contains(from), "{from}");
        Config::from_toml(&EXAMPLE.replacen(from, to, 1))
    }

    #[test]
    fn mistakes_are_named() {
        let invalid = |from, to| match example_with(from, to) {
            Err(ConfigError::Invalid { setting, .. }) => setting,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            invalid("confirmations = 1", "confirmations = 0"),
            "confirmations"
        );
        assert_eq!(
            invalid("network = \"regtest\"", "network = \"bitcoin\""),
            "confirmations"
        );
        assert_eq!(
            invalid("url = \"http://", "url = \"ftp://"),
            "bitcoin_rpc.url"
        );
        assert_eq!(invalid("cookie_file = ", "password_file = "), "bitcoin_rpc");
        assert_eq!(
            invalid("validator = \"01\"", "validator = \"zz\""),
            "coordinator.validator"
        );
        assert_eq!(
            invalid("poll_interval_ms = 1000", "poll_interval_ms = 1"),
            "poll_interval_ms"
        );
        assert_eq!(
            invalid("link_key = \"", "link_key = \"00"),
            "coordinator.link_key"
        );
        assert_eq!(
            invalid("message_key = \"", "message_key = \"00"),
            "coordinator.message_key"
        );
        assert_eq!(
            invalid("link_key_file = ", "# link_key_file = "),
            "coordinator.link_key_file"
        );
        assert_eq!(
            invalid("link_key = ", "# link_key = "),
            "coordinator.link_key"
        );
    }

    #[test]
    fn plain_tcp_only_to_loopback_and_only_when_written() {
        let plain = example_with("transport = \"noise\"", "transport = \"plain\"").unwrap();
        assert_eq!(plain.coordinator.transport, LinkTransport::Plain);
        assert_eq!(plain.coordinator.noise().unwrap(), None);
        let remote = EXAMPLE
            .replacen("transport = \"noise\"", "transport = \"plain\"", 1)
            .replacen(
                "endpoint = \"127.0.0.1:7000\"",
                "endpoint = \"10.0.0.2:7000\"",
                1,
            );
        assert!(matches!(
            Config::from_toml(&remote),
            Err(ConfigError::Invalid {
                setting: "coordinator.transport",
                ..
            })
        ));
        let unsaid = example_with("transport = \"noise\"\n", "").unwrap();
        assert_eq!(unsaid.coordinator.transport, LinkTransport::Noise);
    }

    #[test]
    fn unknown_and_malformed_settings_are_refused() {
        assert!(matches!(
            example_with("confirmations = 1", "confirmations = 1\nconfirmation = 2"),
            Err(ConfigError::Parse(_))
        ));
        assert!(matches!(
            example_with("network = \"regtest\"", "network = \"dogecoin\""),
            Err(ConfigError::Parse(_))
        ));
        assert!(matches!(
            example_with("listen = \"127.0.0.1:9100\"", "listen = \"nowhere\""),
            Err(ConfigError::Parse(_))
        ));
    }
}
