//! The scanner node: the unprivileged half of a validator's processor. It follows a Bitcoin
//! Core node, finalizes blocks, reports deposits in Batches, schedules payouts and watches
//! them complete. It holds no secret key material; everything it asks to have signed, the
//! signer enclave checks for itself.
//!
//! Today it holds the chain abstraction (`network`) with Bitcoin through Core's RPC
//! (`bitcoin_network`, `rpc`), scanning (`scan`: `outputs`, `batch`, `eventuality`, `db`,
//! `metrics`), the scheduler, and the enclave's RPC client (`signer`); the coordinator link
//! joins it with its issue.

pub mod batch;
pub mod bitcoin_network;
pub mod config;
pub mod core_answers;
pub mod db;
pub mod eventuality;
pub mod link;
pub mod metrics;
pub mod network;
pub mod outputs;
pub mod processor;
pub mod records;
pub mod rpc;
pub mod scan;
pub mod scheduler;
pub mod scheduler_state;
pub mod signer;
