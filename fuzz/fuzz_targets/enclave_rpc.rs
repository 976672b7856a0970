//! The enclave's RPC server: Cap'n Proto RPC over an in-memory stream into the real `Signer`
//! service, on a real (RocksDB) enclave database and the in-memory custody twin, provisioned
//! with a coordinator and a confirmed key pair (`processor_fuzz::enclave_keys`), so that calls
//! reach the policy and signing, not only "no such key". A fresh enclave serves every 64
//! inputs (making one takes about 0.2 s), and always the first, so an input replayed alone
//! runs on a fresh enclave; a finding that needs an earlier input's state shows as one that
//! does not reproduce alone. An even first byte makes the rest a list of calls
//! (`method (1) || params length (u16 LE) || params as a Cap'n Proto message`), sent by a real
//! RPC client, so the fuzzer reaches every method's decoding; an odd one sends the rest as raw
//! bytes to the server, to reach the RPC framing itself. Either way the server must end the
//! connection once its peer has hung up.
#![no_main]

use std::{cell::RefCell, path::Path, rc::Rc, time::Duration};

use capnp::{any_pointer, serialize, traits::HasTypeId};
use capnp_rpc::{rpc_twoparty_capnp::Side, twoparty::VatNetwork, RpcSystem};
use futures::io::{BufReader, BufWriter};
use libfuzzer_sys::fuzz_target;
use schema::{generated::signer_capnp::signer, keys::KeyPair, transport, wire};
use signer_enclave::{
    db::EnclaveDb, enclave::Enclave, key_gen::GeneratedKeys, key_store,
    memory_custody::MemoryCustody, metrics::Metrics, rpc::SignerService,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    runtime::Runtime,
    task::LocalSet,
};
use tokio_util::compat::{TokioAsyncReadCompatExt, TokioAsyncWriteCompatExt};

/// How long a connection may take to end after its peer hung up before it counts as hung; well
/// inside libFuzzer's own `-timeout`, so that this names the hang.
const END_WITHIN: Duration = Duration::from_secs(2);
/// Methods of `Signer` (0..=10) and one past them.
const METHODS: u8 = 12;

/// What every input shares: the runtime, and the keys (a key generation takes a while).
struct Process {
    runtime: Runtime,
    pair: KeyPair,
    keys: GeneratedKeys,
}

fn process() -> Process {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => panic!("no runtime: {error}"),
    };
    let (pair, keys) = processor_fuzz::enclave_keys();
    Process {
        runtime,
        pair,
        keys,
    }
}

thread_local! {
    static PROCESS: Process = process();
}

/// A fresh enclave in `dir`: provisioned, holding the confirmed pair.
fn enclave(dir: &Path, process: &Process) -> SignerService {
    let db = match EnclaveDb::open(dir) {
        Ok(db) => db,
        Err(error) => panic!("enclave database: {error}"),
    };
    if let Err(error) = db.set_coordinator_key(&processor_fuzz::coordinator_key()) {
        panic!("provisioning: {error}");
    }
    let custody = MemoryCustody::default();
    let sealed = match key_store::seal(&custody, &process.keys) {
        Ok(sealed) => sealed,
        Err(error) => panic!("sealing: {error}"),
    };
    if let Err(error) = db.record_generated(processor_fuzz::SET, process.pair, sealed) {
        panic!("recording the pair: {error}");
    }
    let metrics = match Metrics::new() {
        Ok(metrics) => metrics,
        Err(error) => panic!("metrics: {error}"),
    };
    let mut enclave = match Enclave::open(db, Box::new(custody), metrics) {
        Ok(enclave) => enclave,
        Err(error) => panic!("enclave: {error}"),
    };
    if let Err(error) = enclave.confirm_key_pair(processor_fuzz::SET, process.pair) {
        panic!("confirming the pair: {error}");
    }
    SignerService::new(Rc::new(RefCell::new(enclave)))
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

/// An enclave and the directory of its database.
struct Served {
    service: SignerService,
    inputs: u32,
    _dir: tempfile::TempDir,
}

/// A fresh enclave (a new database and custody twin, about 0.2 s to make) serves this many
/// inputs: enough to fuzz at a useful rate, few enough that its database stays small.
const INPUTS_PER_ENCLAVE: u32 = 64;

thread_local! {
    static SERVED: RefCell<Option<Served>> = const { RefCell::new(None) };
}

fn fresh(process: &Process) -> Served {
    // In memory where the system offers it: the enclave syncs every approval to disk.
    let shm = Path::new("/dev/shm");
    let dir = match if shm.is_dir() {
        tempfile::tempdir_in(shm)
    } else {
        tempfile::tempdir()
    } {
        Ok(dir) => dir,
        Err(error) => panic!("no temporary directory: {error}"),
    };
    Served {
        service: enclave(dir.path(), process),
        inputs: 0,
        _dir: dir,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, input)) = data.split_first() else {
        return;
    };
    PROCESS.with(|process| {
        let service = SERVED.with(|served| {
            let mut served = served.borrow_mut();
            if served
                .as_ref()
                .is_none_or(|served| served.inputs >= INPUTS_PER_ENCLAVE)
            {
                // The old enclave (and its database) goes before the new one opens.
                *served = None;
                *served = Some(fresh(process));
            }
            match served.as_mut() {
                Some(served) => {
                    served.inputs += 1;
                    served.service.clone()
                }
                None => panic!("no enclave"),
            }
        });
        let local = LocalSet::new();
        if mode & 1 == 0 {
            local.block_on(&process.runtime, structured(service, input));
        } else {
            local.block_on(&process.runtime, raw(service, input));
        }
    });
});
