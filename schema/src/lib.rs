//! The contract between the processes of an HSM-backed threshold processor: the scanner node,
//! the signer enclave and the coordinator.
//!
//! Everything that crosses a process boundary, or must come out byte-identical on every
//! validator, is defined here once: the Cap'n Proto schema and its Rust types, plan ids, the
//! InInstruction encoding of deposits, and the bytes a Batch signature covers. This crate does
//! no I/O and holds no secrets.

pub mod amount;
pub mod batch;
pub mod burn;
pub mod error;
pub mod hashes;
pub mod ids;
pub mod instruction;
pub mod keys;
pub mod limits;
pub mod link;
pub mod messages;
pub mod plan;
pub mod protocol;
pub mod refusal;
pub mod sign_id;
#[cfg(any(test, feature = "testing"))]
pub mod strategies;
pub mod taproot;
pub mod transaction;
mod transcript;
pub mod transport;
pub mod wire;

/// Bindings generated from `schema/capnp/*.capnp` at build time, for the RPC interfaces. Use
/// the types of this crate and `wire` for messages.
#[allow(
    missing_docs,
    unused_qualifications,
    unsafe_code,
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation,
    clippy::unimplemented,
    clippy::todo
)]
pub mod generated {
    pub mod common_capnp {
        include!(concat!(env!("OUT_DIR"), "/common_capnp.rs"));
    }
    pub mod messages_capnp {
        include!(concat!(env!("OUT_DIR"), "/messages_capnp.rs"));
    }
    pub mod coordinator_capnp {
        include!(concat!(env!("OUT_DIR"), "/coordinator_capnp.rs"));
    }
    pub mod signer_capnp {
        include!(concat!(env!("OUT_DIR"), "/signer_capnp.rs"));
    }
}
