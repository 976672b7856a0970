//! A Bitcoin regtest node for tests and the devnet, validated by Bitcoin Core's own engine
//! (`bitcoinkernel`), speaking Core's JSON-RPC (binary `regtest-node`), and the harness tests
//! start it with.
//!
//! The kernel holds the chainstate and decides which blocks are valid; the node keeps every
//! block the kernel connected (`store`), its own index of the active chain (`chain`), a mempool
//! whose scripts Core's interpreter checks (`mempool`) with Core 28's full replace-by-fee
//! (`replacement`) and `prioritisetransaction` deltas, chooses a block's transactions as Core's
//! block assembler does (`template`, above `-blockmintxfee`), builds blocks (`miner`), and
//! answers RPC (`rpc`, `server`). `feerate` is Core's fee arithmetic the policies share.

pub mod chain;
pub mod feerate;
pub mod harness;
pub mod kernel;
pub mod mempool;
pub mod miner;
pub mod node;
pub mod replacement;
pub mod rpc;
pub mod server;
pub mod store;
pub mod template;
pub mod wallet;
