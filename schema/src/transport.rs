//! One Cap'n Proto RPC connection over a tokio stream, set up the same way by every process:
//! both halves buffered (unbuffered, each call costs several small writes), and inbound
//! messages read with the same limits as `wire::decode`. The RPC system is `!Send`: call these
//! from a `LocalSet`, where the connection then runs until it ends.

use capnp::capability::FromClientHook;
use capnp_rpc::{rpc_twoparty_capnp::Side, twoparty::VatNetwork, RpcSystem};
use futures::io::{BufReader, BufWriter};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::compat::{TokioAsyncReadCompatExt, TokioAsyncWriteCompatExt};

use crate::wire;

fn system(
    read: impl AsyncRead + Unpin + 'static,
    write: impl AsyncWrite + Unpin + 'static,
    side: Side,
    bootstrap: Option<capnp::capability::Client>,
) -> RpcSystem<Side> {
    let network = VatNetwork::new(
        BufReader::new(read.compat()),
        BufWriter::new(write.compat_write()),
        side,
        wire::reader_options(),
    );
    RpcSystem::new(Box::new(network), bootstrap)
}

fn run(system: RpcSystem<Side>, peer: &'static str) -> tokio::task::JoinHandle<()> {
    tokio::task::spawn_local(async move {
        if let Err(error) = system.await {
            tracing::info!(%error, peer, "connection ended");
        }
    })
}

/// Serves `bootstrap` to the peer on the other end of `read` and `write`; aborting the returned
/// task ends the connection.
pub fn serve(
    read: impl AsyncRead + Unpin + 'static,
    write: impl AsyncWrite + Unpin + 'static,
    bootstrap: capnp::capability::Client,
    peer: &'static str,
) -> tokio::task::JoinHandle<()> {
    run(system(read, write, Side::Server, Some(bootstrap)), peer)
}

/// The server's bootstrap capability, over `read` and `write`.
pub fn connect<C: FromClientHook>(
    read: impl AsyncRead + Unpin + 'static,
    write: impl AsyncWrite + Unpin + 'static,
    peer: &'static str,
) -> C {
    let mut system = system(read, write, Side::Client, None);
    let client = system.bootstrap(Side::Server);
    // The connection runs until the peer ends it or the process exits: dropping the client
    // does not hang up (the enclave drops connections idle past its timeout). The fuzz target
    // `enclave_rpc`, which must hang up, keeps its own system and disconnector instead;
    // `connect_owned` hangs up when asked.
    drop(run(system, peer));
    client
}

/// Ends a connection when dropped.
#[derive(Debug)]
pub struct Hangup(tokio::task::JoinHandle<()>);

impl Drop for Hangup {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The server's bootstrap capability over `read` and `write`, and the connection's end:
/// dropping the `Hangup` closes it (a client that reconnects must not leave the old
/// connection open for as long as the peer keeps it).
pub fn connect_owned<C: FromClientHook>(
    read: impl AsyncRead + Unpin + 'static,
    write: impl AsyncWrite + Unpin + 'static,
    peer: &'static str,
) -> (C, Hangup) {
    let mut system = system(read, write, Side::Client, None);
    let client = system.bootstrap(Side::Server);
    (client, Hangup(run(system, peer)))
}
