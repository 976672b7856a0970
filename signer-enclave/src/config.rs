//! The signer enclave's configuration file: TOML, every setting documented in `EXAMPLE`,
//! unknown keys refused, the PIN only by file path, checked as a whole at load.

use std::{net::SocketAddr, path::PathBuf};

use serde::Deserialize;
use thiserror::Error;

use crate::custody::TokenSelector;

/// A complete, commented configuration. `signer-enclave example-config` prints it; a test
/// checks that it loads, so the documentation cannot drift from the parser.
pub const EXAMPLE: &str = include_str!("../signer-enclave.example.toml");

/// Longest token label PKCS#11 stores (`CK_TOKEN_INFO.label` is 32 bytes).
const MAX_TOKEN_LABEL: usize = 32;
/// Longest serial number PKCS#11 stores (`CK_TOKEN_INFO.serialNumber` is 16 bytes).
const MAX_TOKEN_SERIAL: usize = 16;

/// The enclave's settings.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The policy database directory.
    pub db_path: PathBuf,
    /// The HSM.
    pub pkcs11: Pkcs11,
    /// The scanner-facing socket.
    pub rpc: Rpc,
    /// The Prometheus endpoint.
    pub metrics: Metrics,
}

/// Where the sealing key lives. The token is named by exactly one of its label, its serial
/// number or its slot id.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11 {
    /// The PKCS#11 module.
    pub module: PathBuf,
    /// The token's label.
    #[serde(default)]
    pub token_label: Option<String>,
    /// The token's serial number.
    #[serde(default)]
    pub token_serial: Option<String>,
    /// The token's slot id.
    #[serde(default)]
    pub slot_id: Option<u64>,
    /// A file holding the user PIN.
    pub pin_file: PathBuf,
}

impl Pkcs11 {
    /// The token the settings name; `None` unless exactly one of label, serial and slot id is
    /// set (a configuration loaded through `Config::load` always has one).
    pub fn token(&self) -> Option<TokenSelector> {
        match (&self.token_label, &self.token_serial, self.slot_id) {
            (Some(label), None, None) => Some(TokenSelector::Label(label.clone())),
            (None, Some(serial), None) => Some(TokenSelector::Serial(serial.clone())),
            (None, None, Some(id)) => Some(TokenSelector::SlotId(id)),
            _ => None,
        }
    }
}

/// The scanner-facing RPC socket.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rpc {
    /// The Unix socket path.
    pub socket: PathBuf,
    /// The only peer uid accepted.
    pub allowed_uid: u32,
    /// Most connections served at once; more are dropped and counted.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Seconds a connection may send nothing before it is dropped.
    #[serde(default = "default_idle_timeout_seconds")]
    pub idle_timeout_seconds: u64,
}

fn default_max_connections() -> usize {
    8
}

fn default_idle_timeout_seconds() -> u64 {
    600
}

/// The Prometheus endpoint, local only.
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
    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml(&text)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let pkcs11 = &self.pkcs11;
        if pkcs11.token().is_none() {
            return Err(ConfigError::Invalid {
                setting: "pkcs11",
                reason: "name the token by exactly one of token_label, token_serial and slot_id",
            });
        }
        // A token pads these with spaces: a name ending in one can never match.
        let fits = |name: &str, max: usize| {
            !name.is_empty() && name.len() <= max && !name.ends_with(char::is_whitespace)
        };
        if let Some(label) = &pkcs11.token_label {
            if !fits(label, MAX_TOKEN_LABEL) {
                return Err(ConfigError::Invalid {
                    setting: "pkcs11.token_label",
                    reason: "must be 1 to 32 bytes, not ending in a space",
                });
            }
        }
        if let Some(serial) = &pkcs11.token_serial {
            if !fits(serial, MAX_TOKEN_SERIAL) {
                return Err(ConfigError::Invalid {
                    setting: "pkcs11.token_serial",
                    reason: "must be 1 to 16 bytes, not ending in a space",
                });
            }
        }
        if self.rpc.max_connections == 0 {
            return Err(ConfigError::Invalid {
                setting: "rpc.max_connections",
                reason: "must be at least 1",
            });
        }
        if self.rpc.idle_timeout_seconds == 0 {
            return Err(ConfigError::Invalid {
                setting: "rpc.idle_timeout_seconds",
                reason: "must be at least 1",
            });
        }
        if !self.metrics.listen.ip().is_loopback() {
            return Err(ConfigError::Invalid {
                setting: "metrics.listen",
                reason: "the enclave serves metrics on a loopback address only",
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
        assert_eq!(
            config.pkcs11.token(),
            Some(TokenSelector::Label("processor".into()))
        );
        assert!(config.metrics.listen.ip().is_loopback());
    }

    fn invalid_setting(from: &str, to: &str) -> &'static str {
        assert!(EXAMPLE.contains(from), "{from}");
        match Config::from_toml(&EXAMPLE.replacen(from, to, 1)) {
            Err(ConfigError::Invalid { setting, .. }) => setting,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn mistakes_are_named() {
        assert_eq!(
            invalid_setting("listen = \"127.0.0.1:9101\"", "listen = \"0.0.0.0:9101\""),
            "metrics.listen"
        );
        assert_eq!(
            invalid_setting("token_label = \"processor\"", "token_label = \"\""),
            "pkcs11.token_label"
        );
        assert_eq!(
            invalid_setting(
                "token_label = \"processor\"",
                "token_label = \"a label longer than thirty-two bytes\""
            ),
            "pkcs11.token_label"
        );
    }

    #[test]
    fn a_token_is_named_by_exactly_one_of_label_serial_and_slot() {
        let by = |setting: &str| {
            Config::from_toml(&EXAMPLE.replacen("token_label = \"processor\"", setting, 1))
        };
        assert_eq!(
            by("token_serial = \"0123456789abcdef\"")
                .unwrap()
                .pkcs11
                .token(),
            Some(TokenSelector::Serial("0123456789abcdef".into()))
        );
        assert_eq!(
            by("slot_id = 42").unwrap().pkcs11.token(),
            Some(TokenSelector::SlotId(42))
        );
        for wrong in [
            "",
            "token_label = \"processor\"\nslot_id = 42",
            "token_serial = \"1\"\nslot_id = 42",
        ] {
            assert!(
                matches!(
                    by(wrong),
                    Err(ConfigError::Invalid {
                        setting: "pkcs11",
                        ..
                    })
                ),
                "{wrong}"
            );
        }
        assert!(matches!(
            by("token_serial = \"0123456789abcdef0\""),
            Err(ConfigError::Invalid {
                setting: "pkcs11.token_serial",
                ..
            })
        ));
    }

    #[test]
    fn fee_caps_are_not_a_setting() {
        // They are protocol parameters: an operator's own caps would refuse honest plans.
        let with_caps = format!("{EXAMPLE}\n[policy]\nmax_fee_rate_sat_per_vbyte = 500\n");
        assert!(matches!(
            Config::from_toml(&with_caps),
            Err(ConfigError::Parse(_))
        ));
    }

    #[test]
    fn a_pin_in_the_file_is_refused() {
        let with_pin = EXAMPLE.replacen("pin_file = ", "pin = \"1234\"\npin_file = ", 1);
        assert!(matches!(
            Config::from_toml(&with_pin),
            Err(ConfigError::Parse(_))
        ));
    }
}
