//! The signer enclave: the isolated half of a validator's processor. It holds FROST key shares
//! sealed through PKCS#11, runs key generation and signing, and signs only what it can check
//! for itself: plans whose ids the coordinator acknowledged, rebuilt here from their content.
//!
//! Today this crate holds the enclave's configuration and its signing policy; custody, key
//! generation, signing and the RPC server join it as their issue lands.

pub mod batch_signing;
pub mod bip340;
pub mod config;
pub mod custody;
pub mod db;
pub mod enclave;
pub mod key_gen;
pub mod key_store;
pub mod metrics;
pub mod plan_signing;
pub mod policy;
pub mod rpc;
pub mod secrets;
