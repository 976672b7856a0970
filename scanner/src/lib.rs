//! The scanner node: the unprivileged half of a validator's processor. It follows a Bitcoin
//! Core node, finalizes blocks, reports deposits in Batches, schedules payouts and watches
//! them complete. It holds no secret key material; everything it asks to have signed, the
//! signer enclave checks for itself.
//!
//! Today this crate holds the node's configuration and the scheduler; scanning, batches and
//! the coordinator link join it as their issues land.

pub mod config;
pub mod db;
pub mod scheduler;
pub mod scheduler_state;
pub mod signer;
