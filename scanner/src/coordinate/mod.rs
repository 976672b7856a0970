//! What the processor coordinates with: the coordinator (`link`, its Cap'n Proto client over
//! the secured link, with our key on disk in `link_key`), the enclave (`enclave_client`, its Cap'n Proto client), and the parts a `Processor` is generic
//! over (`parts`), with the node's real ones.

pub mod enclave_client;
pub mod link;
pub mod link_key;
pub mod parts;
