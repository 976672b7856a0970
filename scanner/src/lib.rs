//! The scanner node: the unprivileged half of a validator's processor. It follows a Bitcoin
//! Core node, finalizes blocks, reports deposits in Batches, schedules payouts and watches
//! them complete. It holds no secret key material; everything it asks to have signed, the
//! signer enclave checks for itself.
//!
//! It holds the chain abstraction (`network`) with Bitcoin through Core's RPC
//! (`bitcoin_network`, `rpc`); scanning (`scan`: a pure core in `scan::block` over `outputs`,
//! `batch` and `eventuality`, with `metrics`); its state behind the traits of `store`
//! (RocksDB in `db`, memory in `store::memory`); the scheduler; the enclave's RPC client
//! (`signer`); the coordinator link (`link`); and the processor loop joining them
//! (`processor`).

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
pub mod parts;
pub mod processor;
pub mod records;
pub mod rpc;
pub mod scan;
pub mod scheduler;
pub mod scheduler_state;
pub mod signer;
pub mod store;
