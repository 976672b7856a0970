//! The scanner node: the unprivileged half of a validator's processor. It follows a Bitcoin
//! Core node, finalizes blocks, reports deposits in Batches, schedules payouts and watches
//! them complete. It holds no secret key material; everything it asks to have signed, the
//! signer enclave checks for itself.
//!
//! Laid out by concept:
//! - `chain`: the chain abstraction (`Network`), and Bitcoin through Core's RPC
//!   (`chain::bitcoin_core`, `chain::rpc`, `chain::core_answers`);
//! - `scan`: scanning, a pure core (`scan::block`) over `scan::outputs`, `scan::batches` and
//!   `scan::eventuality`, with its adapter `scan::Scanner` and `scan::metrics`;
//! - `store`: the state behind traits (`ScanStore`, `ProcessorStore`), in RocksDB
//!   (`store::db`, with its record codecs in `store::records`) or in memory (`store::memory`);
//! - `schedule`: the scheduler, and its stored form (`schedule::state`);
//! - `coordinate`: what the processor talks to: the coordinator (`coordinate::link`), the
//!   enclave (`coordinate::enclave_client`), and the traits the processor is generic over
//!   (`coordinate::parts`);
//! - `rotation`: the network's confirmed keys and the stage of each (active, forwarding,
//!   retired);
//! - `processor`: the loop joining them; `config`: the node's configuration file.

pub mod chain;
pub mod config;
pub mod coordinate;
pub mod processor;
pub mod rotation;
pub mod scan;
pub mod schedule;
pub mod store;
