//! What the processor coordinates with: the coordinator (`link`, its Cap'n Proto client), the
//! enclave (`enclave_client`, its Cap'n Proto client), and the parts a `Processor` is generic
//! over (`parts`), with the node's real ones.

pub mod enclave_client;
pub mod link;
pub mod parts;
