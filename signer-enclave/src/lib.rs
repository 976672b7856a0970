//! The signer enclave: the isolated half of a validator's processor. It holds FROST key shares
//! sealed through PKCS#11, runs key generation and signing, and signs only what it can check
//! for itself: plans whose ids the coordinator acknowledged, rebuilt here from their content.
//!
//! The binary serves the `Signer` Cap'n Proto interface on a Unix socket (`rpc`), handling each
//! call in `enclave` with custody (`custody`, `key_store`), key generation (`key_gen`), the
//! policy (`policy`, its history in `db`) and the signing sessions (`plan_signing`,
//! `batch_signing`); `metrics` serves Prometheus on loopback.

mod answered;
pub mod audit;
pub mod batch_signing;
pub mod bip340;
pub mod config;
pub mod custody;
pub mod db;
pub mod enclave;
pub mod identity;
pub mod key_gen;
pub mod key_store;
#[cfg(feature = "testing")]
pub mod local_key_gen;
#[cfg(feature = "testing")]
pub mod memory_custody;
pub mod metrics;
pub mod pairwise;
pub mod plan_signing;
pub mod policy;
pub mod polynomial;
pub mod resharing;
pub mod rpc;
pub mod secrets;
mod sessions;
pub mod share_refresh;
pub mod share_repair;
