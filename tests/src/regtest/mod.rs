//! A Bitcoin regtest node for tests and the devnet, validated by Bitcoin Core's own engine
//! (`bitcoinkernel`), speaking Core's JSON-RPC (binary `regtest-node`), and the harness tests
//! start it with.
//!
//! The kernel holds the chainstate and decides which blocks are valid; the node keeps every
//! block the kernel connected (`store`), its own index of the active chain (`chain`), a mempool
//! whose scripts Core's interpreter checks (`mempool`), builds blocks (`miner`), and answers
//! RPC (`rpc`, `server`).

pub mod chain;
pub mod harness;
pub mod kernel;
pub mod mempool;
pub mod miner;
pub mod node;
pub mod rpc;
pub mod server;
pub mod store;
pub mod wallet;
