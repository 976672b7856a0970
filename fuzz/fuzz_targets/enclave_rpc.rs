//! The enclave's RPC server: Cap'n Proto RPC over an in-memory stream into the real `Signer`
//! service, on a real (RocksDB) enclave database and the in-memory custody twin. An even first
//! byte makes the rest a list of calls (`method (1) || params length (u16 LE) || params as a
//! Cap'n Proto message`), sent by a real RPC client, so the fuzzer reaches every method's
//! decoding and policy; an odd one sends the rest as raw bytes to the server, to reach the RPC
//! framing itself. Either way the connection must end once its peer is gone, within the
//! enclave's own limits.
#![no_main]

use std::{cell::RefCell, rc::Rc, time::Duration};

use bitcoin::key::XOnlyPublicKey;
use capnp::{any_pointer, serialize, traits::HasTypeId};
use capnp_rpc::{rpc_twoparty_capnp::Side, twoparty::VatNetwork, RpcSystem};
use futures::io::{BufReader, BufWriter};
use libfuzzer_sys::fuzz_target;
use schema::{generated::signer_capnp::signer, transport, wire};
use signer_enclave::{
    db::EnclaveDb, enclave::Enclave, memory_custody::MemoryCustody, metrics::Metrics,
    rpc::SignerService,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    runtime::Runtime,
    task::LocalSet,
};
use tokio_util::compat::{TokioAsyncReadCompatExt, TokioAsyncWriteCompatExt};

/// How long a connection may take to end after its peer is gone before it counts as hung.
const END_WITHIN: Duration = Duration::from_secs(10);
/// Methods of `Signer` (0..=10) and one past them.
const METHODS: u8 = 12;

struct Harness {
    runtime: Runtime,
    service: SignerService,
    /// Kept for the process's life: the enclave's database lives in it.
    _dir: tempfile::TempDir,
}

fn harness() -> Harness {
    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(error) => panic!("no temporary directory: {error}"),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => panic!("no runtime: {error}"),
    };
    let db = match EnclaveDb::open(dir.path()) {
        Ok(db) => db,
        Err(error) => panic!("enclave database: {error}"),
    };
    // The secp256k1 generator's x coordinate: a coordinator key whose secret nobody needs.
    let coordinator =
        match XOnlyPublicKey::from_slice(&processor_fuzz::network_key().to_bytes()[1..]) {
            Ok(key) => key,
            Err(error) => panic!("coordinator key: {error}"),
        };
    if let Err(error) = db.set_coordinator_key(&coordinator) {
        panic!("provisioning: {error}");
    }
    let metrics = match Metrics::new() {
        Ok(metrics) => metrics,
        Err(error) => panic!("metrics: {error}"),
    };
    let enclave = match Enclave::open(db, Box::new(MemoryCustody::default()), metrics) {
        Ok(enclave) => enclave,
        Err(error) => panic!("enclave: {error}"),
    };
    Harness {
        runtime,
        service: SignerService::new(Rc::new(RefCell::new(enclave))),
        _dir: dir,
    }
}

thread_local! {
    static HARNESS: Harness = harness();
}

/// The calls an even-led input asks for.
fn calls(mut bytes: &[u8]) -> Vec<(u16, &[u8])> {
    let mut calls = Vec::new();
    while let Some((&method, rest)) = bytes.split_first() {
        let Some((len, rest)) = rest.split_first_chunk::<2>() else {
            break;
        };
        let len = usize::from(u16::from_le_bytes(*len)).min(rest.len());
        let (params, rest) = rest.split_at(len);
        calls.push((u16::from(method % METHODS), params));
        bytes = rest;
    }
    calls
}

async fn structured(service: SignerService, input: &[u8]) {
    let (client_side, server_side) = tokio::io::duplex(1 << 16);
    let (server_read, server_write) = tokio::io::split(server_side);
    let bootstrap: signer::Client = capnp_rpc::new_client(service);
    let server = transport::serve(server_read, server_write, bootstrap.client, "fuzz");
    let (client_read, client_write) = tokio::io::split(client_side);
    // The client's own RPC system, so that it can hang up when the calls are done.
    let network = VatNetwork::new(
        BufReader::new(client_read.compat()),
        BufWriter::new(client_write.compat_write()),
        Side::Client,
        wire::reader_options(),
    );
    let mut system = RpcSystem::new(Box::new(network), None);
    let client: signer::Client = system.bootstrap(Side::Server);
    let hang_up = system.get_disconnector();
    let client_system = tokio::task::spawn_local(system);
    for (method, params) in calls(input) {
        let mut request = client
            .client
            .new_call::<any_pointer::Owned, any_pointer::Owned>(
                <signer::Client as HasTypeId>::TYPE_ID,
                method,
                None,
            );
        let mut slice = params;
        if let Ok(message) = serialize::read_message(&mut slice, wire::reader_options()) {
            if let Ok(root) = message.get_root::<any_pointer::Reader<'_>>() {
                if request.get().set_as(root).is_err() {
                    continue;
                }
            }
        }
        let _ = request.send().promise.await;
    }
    drop(client);
    let _ = hang_up.await;
    let _ = client_system.await;
    match tokio::time::timeout(END_WITHIN, server).await {
        Ok(_) => {}
        Err(_) => panic!("the server did not end its connection after the client left"),
    }
}

async fn raw(service: SignerService, input: &[u8]) {
    let (mut client_side, server_side) = tokio::io::duplex(1 << 16);
    let (server_read, server_write) = tokio::io::split(server_side);
    let bootstrap: signer::Client = capnp_rpc::new_client(service);
    let server = transport::serve(server_read, server_write, bootstrap.client, "fuzz");
    let _ = client_side.write_all(input).await;
    let _ = client_side.shutdown().await;
    let drain = async {
        let mut sink = Vec::new();
        let _ = client_side.read_to_end(&mut sink).await;
    };
    match tokio::time::timeout(END_WITHIN, async { tokio::join!(drain, server) }).await {
        Ok(_) => {}
        Err(_) => panic!("the server did not end a connection whose peer sent everything"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, input)) = data.split_first() else {
        return;
    };
    HARNESS.with(|harness| {
        let local = LocalSet::new();
        let service = harness.service.clone();
        if mode & 1 == 0 {
            local.block_on(&harness.runtime, structured(service, input));
        } else {
            local.block_on(&harness.runtime, raw(service, input));
        }
    });
});
