//! The coordinator, played for tests: the `CoordinatorGate` Cap'n Proto server processors log in
//! to, over the Noise link (its own link key; processors known by the keys registered for
//! their validators) or plain TCP, with one numbered queue of signed messages per validator,
//! acks, and the messages each processor sent (deduplicated by id, as the real coordinator
//! does). Tests push messages and read what came back; `misbehave_rewind` makes it redeliver
//! from the start, ignoring `after`, as a reset queue would; `alter`, `push_replayed`,
//! `push_moved` and `push_after_gap` make what a tampered queue would hold; `refusals` tells what it
//! turned away.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    rc::Rc,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use bitcoin::secp256k1::{Keypair, Secp256k1, SecretKey, XOnlyPublicKey};
use capnp::message::{Builder, ReaderOptions};
use schema::{
    generated::{
        coordinator_capnp::{coordinator_gate, coordinator_link},
        messages_capnp::coordinator_envelope,
    },
    ids::MessageId,
    limits::MAX_MESSAGE_BYTES,
    link::{
        channel::{self, HANDSHAKE_HASH_LEN},
        identity::{LinkPublicKey, LinkSecretKey},
        signed,
    },
    messages::{CoordinatorMessage, ProcessorEnvelope, ProcessorMessage},
    transport,
    wire::Wire,
};

use crate::HarnessError;

/// A queued message as the coordinator stores it: the signed envelope, serialized.
#[derive(Clone)]
struct Entry {
    id: MessageId,
    stored: Vec<u8>,
}

impl Entry {
    /// Writes envelope `id` to `validator` and signs it with `key`.
    fn new(
        key: &Keypair,
        validator: &[u8],
        id: MessageId,
        write: impl FnOnce(coordinator_envelope::Builder<'_>) -> Result<(), HarnessError>,
    ) -> Result<Self, HarnessError> {
        let mut message = Builder::new_default();
        let mut envelope = message.init_root::<coordinator_envelope::Builder<'_>>();
        envelope.set_id(id.0);
        write(envelope.reborrow())?;
        signed::sign_envelope(key, validator, envelope).map_err(failed)?;
        Ok(Entry {
            id,
            stored: capnp::serialize::write_message_to_words(&message),
        })
    }

    fn reader(
        &self,
    ) -> Result<capnp::message::Reader<capnp::serialize::OwnedSegments>, capnp::Error> {
        capnp::serialize::read_message(&mut self.stored.as_slice(), ReaderOptions::new())
    }

    /// The stored envelope with its message replaced, keeping its id and signature.
    fn altered(&self, message: &CoordinatorMessage) -> Result<Self, HarnessError> {
        let stored = self.reader().map_err(failed)?;
        let old = stored
            .get_root::<coordinator_envelope::Reader<'_>>()
            .map_err(failed)?;
        let mut rewritten = Builder::new_default();
        let mut envelope = rewritten.init_root::<coordinator_envelope::Builder<'_>>();
        envelope.set_id(old.get_id());
        envelope.set_signature(old.get_signature().map_err(failed)?);
        message.write(envelope.init_message()).map_err(failed)?;
        Ok(Entry {
            id: self.id,
            stored: capnp::serialize::write_message_to_words(&rewritten),
        })
    }

    /// The stored envelope under another id, signature and all: a replay from an old queue.
    fn moved(&self, id: MessageId) -> Result<Self, HarnessError> {
        let stored = self.reader().map_err(failed)?;
        let old = stored
            .get_root::<coordinator_envelope::Reader<'_>>()
            .map_err(failed)?;
        let mut rewritten = Builder::new_default();
        rewritten.set_root(old).map_err(failed)?;
        rewritten
            .get_root::<coordinator_envelope::Builder<'_>>()
            .map_err(failed)?
            .set_id(id.0);
        Ok(Entry {
            id,
            stored: capnp::serialize::write_message_to_words(&rewritten),
        })
    }
}

fn failed(error: impl std::fmt::Display) -> HarnessError {
    HarnessError::Failed(error.to_string())
}

#[derive(Default)]
struct Queue {
    inbox: Vec<Entry>,
    acked: u64,
    received: BTreeMap<u64, ProcessorMessage>,
    logins: u32,
}

impl Queue {
    fn next_id(&self) -> MessageId {
        MessageId(self.inbox.last().map_or(1, |last| last.id.0 + 1))
    }
}

/// What the coordinator refused, by kind, for tests to check.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Refusals {
    /// Handshakes that failed, with their errors.
    pub handshakes: Vec<String>,
    /// Connections dropped on a frame that did not authenticate.
    pub frames: u32,
    /// Logins refused, with the reason.
    pub logins: Vec<String>,
}

#[derive(Default)]
struct State {
    queues: BTreeMap<Vec<u8>, Queue>,
    rewind: bool,
    /// Each registered processor link key, and the validator it speaks for.
    registry: BTreeMap<LinkPublicKey, Vec<u8>>,
    refusals: Refusals,
}

type Shared = Arc<Mutex<State>>;

fn lock(state: &Shared) -> Result<std::sync::MutexGuard<'_, State>, capnp::Error> {
    state
        .lock()
        .map_err(|_| capnp::Error::failed("coordinator state poisoned".into()))
}

/// What one connection proved: with Noise, the validator its key is registered for and the
/// session's handshake hash; with plain TCP, nothing.
#[derive(Clone)]
struct Proven {
    validator: Vec<u8>,
    handshake_hash: [u8; HANDSHAKE_HASH_LEN],
}

struct Gate {
    state: Shared,
    proven: Option<Proven>,
}

struct Link {
    state: Shared,
    validator: Vec<u8>,
}

impl Gate {
    /// A login is good over Noise when it names the validator the session's key is registered
    /// for and carries this session's handshake hash.
    fn check(&self, validator: &[u8], proof: &[u8]) -> Result<(), String> {
        match &self.proven {
            None => Ok(()),
            Some(proven) if proven.validator != validator => Err(format!(
                "login as validator {} refused: this link key is registered for validator {}",
                hex::encode(validator),
                hex::encode(&proven.validator)
            )),
            Some(proven) if proven.handshake_hash != proof => {
                Err("login proof is not this session's handshake hash".into())
            }
            Some(_) => Ok(()),
        }
    }
}

impl coordinator_gate::Server for Gate {
    async fn login(
        self: Rc<Self>,
        params: coordinator_gate::LoginParams,
        mut results: coordinator_gate::LoginResults,
    ) -> Result<(), capnp::Error> {
        let params = params.get()?;
        let validator = params.get_validator()?.to_vec();
        if let Err(reason) = self.check(&validator, params.get_proof()?) {
            lock(&self.state)?.refusals.logins.push(reason.clone());
            return Err(capnp::Error::failed(reason));
        }
        lock(&self.state)?
            .queues
            .entry(validator.clone())
            .or_default()
            .logins += 1;
        let link: coordinator_link::Client = capnp_rpc::new_client(Link {
            state: Arc::clone(&self.state),
            validator,
        });
        results.get().set_link(link);
        Ok(())
    }
}

impl coordinator_link::Server for Link {
    async fn next(
        self: Rc<Self>,
        params: coordinator_link::NextParams,
        mut results: coordinator_link::NextResults,
    ) -> Result<(), capnp::Error> {
        let params = params.get()?;
        let after = params.get_after();
        let max = usize::try_from(params.get_max()).unwrap_or(usize::MAX);
        let until = Instant::now() + Duration::from_millis(u64::from(params.get_wait_millis()));
        let messages = loop {
            let pending: Vec<Entry> = {
                let state = lock(&self.state)?;
                let rewind = state.rewind;
                let mut bytes = 0;
                state
                    .queues
                    .get(&self.validator)
                    .map(|queue| {
                        queue
                            .inbox
                            .iter()
                            .filter(|entry| rewind || entry.id.0 > after)
                            .take(max)
                            // As many as fit in one message's limit, and always the first.
                            .take_while(|entry| {
                                let first = bytes == 0;
                                bytes += entry.stored.len();
                                first || bytes <= MAX_MESSAGE_BYTES
                            })
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default()
            };
            if !pending.is_empty() || Instant::now() >= until {
                break pending;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let len = u32::try_from(messages.len())
            .map_err(|_| capnp::Error::failed("too many messages".into()))?;
        let mut list = results.get().init_messages(len);
        for (index, entry) in (0u32..).zip(&messages) {
            let stored = entry.reader()?;
            list.set_with_caveats(index, stored.get_root()?)?;
        }
        Ok(())
    }

    async fn ack(
        self: Rc<Self>,
        params: coordinator_link::AckParams,
        _: coordinator_link::AckResults,
    ) -> Result<(), capnp::Error> {
        let id = params.get()?.get_id();
        let mut state = lock(&self.state)?;
        let queue = state.queues.entry(self.validator.clone()).or_default();
        queue.acked = queue.acked.max(id);
        Ok(())
    }

    async fn send(
        self: Rc<Self>,
        params: coordinator_link::SendParams,
        _: coordinator_link::SendResults,
    ) -> Result<(), capnp::Error> {
        let envelope = ProcessorEnvelope::read(params.get()?.get_envelope()?)
            .map_err(|error| capnp::Error::failed(error.to_string()))?;
        let mut state = lock(&self.state)?;
        state
            .queues
            .entry(self.validator.clone())
            .or_default()
            .received
            .entry(envelope.id.0)
            .or_insert(envelope.message);
        Ok(())
    }
}

/// How the harness listens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listen {
    /// Noise XX with its link key, processors known by theirs.
    Noise,
    /// Plain TCP on loopback.
    Plain,
}

/// The coordinator harness, serving on a loopback port from its own thread.
pub struct CoordinatorHarness {
    state: Shared,
    address: SocketAddr,
    listen: Listen,
    link_key: Arc<LinkSecretKey>,
    message_key: Keypair,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl CoordinatorHarness {
    /// Starts serving Noise on a free loopback port, with fresh link and message keys.
    ///
    /// # Errors
    /// The port cannot be bound.
    pub fn start() -> Result<Self, HarnessError> {
        Self::start_with(Listen::Noise)
    }

    /// Starts listening as `listen` says on a free loopback port.
    ///
    /// # Errors
    /// The port cannot be bound.
    pub fn start_with(listen: Listen) -> Result<Self, HarnessError> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let address = listener.local_addr()?;
        let mut secret = [0u8; 32];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut secret);
        let message_key = Keypair::from_secret_key(
            &Secp256k1::new(),
            &SecretKey::from_slice(&secret).map_err(failed)?,
        );
        let mut harness = CoordinatorHarness {
            state: Arc::default(),
            address,
            listen,
            link_key: Arc::new(LinkSecretKey::generate()),
            message_key,
            stop: Arc::new(AtomicBool::new(false)),
            thread: None,
        };
        harness.serve(listener)?;
        Ok(harness)
    }

    fn serve(&mut self, listener: std::net::TcpListener) -> Result<(), HarnessError> {
        listener.set_nonblocking(true)?;
        self.stop = Arc::new(AtomicBool::new(false));
        let server = Server {
            state: Arc::clone(&self.state),
            stop: Arc::clone(&self.stop),
            listen: self.listen,
            key: Arc::clone(&self.link_key),
        };
        self.thread = Some(
            std::thread::Builder::new()
                .name("coordinator".into())
                .spawn(move || server.run(listener))?,
        );
        Ok(())
    }

    /// Restarts the server on the same port, keeping the queues (a coordinator restart that
    /// loses its connections, not its messages): processors reconnect and resume.
    ///
    /// # Errors
    /// The port cannot be bound again.
    pub fn restart(&mut self) -> Result<(), HarnessError> {
        self.stop();
        self.resume()
    }

    /// Stops serving (a coordinator that is down): connections drop, the queues stay.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    /// Serves again on the same port, with the queues kept.
    ///
    /// # Errors
    /// The port cannot be bound again, or the server is running.
    pub fn resume(&mut self) -> Result<(), HarnessError> {
        if self.thread.is_some() {
            return Err(HarnessError::Failed("the coordinator is running".into()));
        }
        let listener = std::net::TcpListener::bind(self.address)?;
        self.serve(listener)
    }

    /// The coordinator's link public key, which processors pin.
    pub fn link_public_key(&self) -> LinkPublicKey {
        self.link_key.public()
    }

    /// The key the coordinator signs queued messages with.
    pub fn message_public_key(&self) -> XOnlyPublicKey {
        self.message_key.x_only_public_key().0
    }

    /// Registers a processor's link key as speaking for `validator`.
    ///
    /// # Errors
    /// The state is poisoned.
    pub fn register(&self, validator: &[u8], key: LinkPublicKey) -> Result<(), HarnessError> {
        self.with(|state| {
            state.registry.insert(key, validator.to_vec());
        })
    }

    /// What the coordinator refused so far.
    ///
    /// # Errors
    /// The state is poisoned.
    pub fn refusals(&self) -> Result<Refusals, HarnessError> {
        self.with(|state| state.refusals.clone())
    }

    /// Where processors connect.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> Result<T, HarnessError> {
        let mut state = self
            .state
            .lock()
            .map_err(|_| HarnessError::Failed("coordinator state poisoned".into()))?;
        Ok(f(&mut state))
    }

    /// Queues a message for a validator, signed; returns its id.
    ///
    /// # Errors
    /// The state is poisoned.
    pub fn push(
        &self,
        validator: &[u8],
        message: CoordinatorMessage,
    ) -> Result<MessageId, HarnessError> {
        self.queue(validator, |id| {
            Entry::new(&self.message_key, validator, id, |builder| {
                message.write(builder.init_message()).map_err(failed)
            })
        })
    }

    /// Queues a signed message for a validator that does not decode; returns its id.
    ///
    /// # Errors
    /// The state is poisoned.
    pub fn push_malformed(&self, validator: &[u8]) -> Result<MessageId, HarnessError> {
        self.queue(validator, |id| {
            Entry::new(&self.message_key, validator, id, |builder| {
                // A key generation for participant 1 of 4 with threshold 5: refused on decode.
                let mut params = builder
                    .init_message()
                    .init_key_gen()
                    .init_generate_key()
                    .init_params();
                params.set_t(5);
                params.set_n(4);
                params.set_i(1);
                Ok(())
            })
        })
    }

    /// Replaces the content of the queued message `id` with `message`, keeping its id and
    /// signature: an alteration of the coordinator's storage.
    ///
    /// # Errors
    /// No message `id`, or the state is poisoned.
    pub fn alter(
        &self,
        validator: &[u8],
        id: MessageId,
        message: &CoordinatorMessage,
    ) -> Result<(), HarnessError> {
        let altered = self.stored(validator, id)?.altered(message)?;
        self.with(|state| {
            if let Some(entry) = state
                .queues
                .get_mut(validator)
                .and_then(|queue| queue.inbox.iter_mut().find(|entry| entry.id == id))
            {
                *entry = altered;
            }
        })
    }

    /// Queues the message queued as `earlier` again under the next id, its signature kept: a
    /// replay from an old queue. Returns its id.
    ///
    /// # Errors
    /// No message `earlier`, or the state is poisoned.
    pub fn push_replayed(
        &self,
        validator: &[u8],
        earlier: MessageId,
    ) -> Result<MessageId, HarnessError> {
        let original = self.stored(validator, earlier)?;
        self.queue(validator, |id| original.moved(id))
    }

    /// Queues a signed message that does not decode one id past the next, at once: what a
    /// queue looks like after the message before it was deleted from storage. Returns its id.
    ///
    /// # Errors
    /// The state is poisoned.
    pub fn push_after_gap(&self, validator: &[u8]) -> Result<MessageId, HarnessError> {
        self.queue(validator, |next| {
            Entry::new(
                &self.message_key,
                validator,
                MessageId(next.0 + 1),
                |builder| {
                    builder.init_message().init_key_gen().init_generate_key();
                    Ok(())
                },
            )
        })
    }

    /// Queues message `id` of validator `from`'s queue, signature and id kept, for
    /// `validator`, whose next id it must be: a message moved between queues.
    ///
    /// # Errors
    /// No such message, `id` is not `validator`'s next id, or the state is poisoned.
    pub fn push_moved(
        &self,
        validator: &[u8],
        from: &[u8],
        id: MessageId,
    ) -> Result<MessageId, HarnessError> {
        let original = self.stored(from, id)?;
        self.queue(validator, |next| {
            if next == id {
                Ok(original)
            } else {
                Err(HarnessError::Failed(format!(
                    "message {} is not the next id ({}) of the queue it moves to",
                    id.0, next.0
                )))
            }
        })
    }

    fn stored(&self, validator: &[u8], id: MessageId) -> Result<Entry, HarnessError> {
        self.with(|state| {
            state
                .queues
                .get(validator)
                .and_then(|queue| queue.inbox.iter().find(|entry| entry.id == id).cloned())
        })?
        .ok_or_else(|| HarnessError::Failed(format!("no message {}", id.0)))
    }

    fn queue(
        &self,
        validator: &[u8],
        entry: impl FnOnce(MessageId) -> Result<Entry, HarnessError>,
    ) -> Result<MessageId, HarnessError> {
        self.with(|state| {
            let queue = state.queues.entry(validator.to_vec()).or_default();
            let entry = entry(queue.next_id())?;
            let id = entry.id;
            queue.inbox.push(entry);
            Ok(id)
        })?
    }

    /// What a validator's processor sent, by its ids.
    ///
    /// # Errors
    /// The state is poisoned.
    pub fn received(
        &self,
        validator: &[u8],
    ) -> Result<BTreeMap<u64, ProcessorMessage>, HarnessError> {
        self.with(|state| {
            state
                .queues
                .get(validator)
                .map(|queue| queue.received.clone())
                .unwrap_or_default()
        })
    }

    /// The highest id queued for a validator (0: none).
    ///
    /// # Errors
    /// The state is poisoned.
    pub fn queued(&self, validator: &[u8]) -> Result<u64, HarnessError> {
        self.with(|state| {
            state
                .queues
                .get(validator)
                .and_then(|queue| queue.inbox.last())
                .map_or(0, |last| last.id.0)
        })
    }

    /// The highest id a validator's processor acked.
    ///
    /// # Errors
    /// The state is poisoned.
    pub fn acked(&self, validator: &[u8]) -> Result<u64, HarnessError> {
        self.with(|state| state.queues.get(validator).map_or(0, |queue| queue.acked))
    }

    /// How many times a validator's processor logged in.
    ///
    /// # Errors
    /// The state is poisoned.
    pub fn logins(&self, validator: &[u8]) -> Result<u32, HarnessError> {
        self.with(|state| state.queues.get(validator).map_or(0, |queue| queue.logins))
    }

    /// Makes `next` ignore `after` and answer from the first message, as a reset queue would.
    ///
    /// # Errors
    /// The state is poisoned.
    pub fn misbehave_rewind(&self, rewind: bool) -> Result<(), HarnessError> {
        self.with(|state| state.rewind = rewind)
    }

    /// Waits until `done` holds of the state, or `timeout` passes.
    ///
    /// # Errors
    /// It never held.
    pub fn wait_until(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&Self) -> Result<bool, HarnessError>,
    ) -> Result<(), HarnessError> {
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            if done(self)? {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(HarnessError::Failed(format!(
            "condition not met within {timeout:?}"
        )))
    }
}

impl Drop for CoordinatorHarness {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The serving thread's part.
struct Server {
    state: Shared,
    stop: Arc<AtomicBool>,
    listen: Listen,
    key: Arc<LinkSecretKey>,
}

/// How long a connecting processor has to finish its handshake.
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);

impl Server {
    fn run(self, listener: std::net::TcpListener) {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        let local = tokio::task::LocalSet::new();
        let server = Rc::new(self);
        local.block_on(&runtime, async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                return;
            };
            while !server.stop.load(Ordering::SeqCst) {
                let accepted =
                    tokio::time::timeout(Duration::from_millis(50), listener.accept()).await;
                let Ok(Ok((stream, _))) = accepted else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                tokio::task::spawn_local(Rc::clone(&server).connection(stream));
            }
        });
    }

    /// One processor's connection: the handshake (with Noise), then the gate.
    async fn connection(self: Rc<Self>, stream: tokio::net::TcpStream) {
        if self.listen == Listen::Plain {
            let (read, write) = stream.into_split();
            let gate = capnp_rpc::new_client::<coordinator_gate::Client, _>(Gate {
                state: Arc::clone(&self.state),
                proven: None,
            });
            transport::serve(read, write, gate.client, "processor");
            return;
        }
        let registry = Arc::clone(&self.state);
        let mut validator = None;
        let authorize = |key: &LinkPublicKey| {
            let known = lock(&registry)
                .map_err(|error| error.to_string())?
                .registry
                .get(key)
                .cloned();
            validator = known;
            validator
                .is_some()
                .then_some(())
                .ok_or_else(|| format!("link key {key} is not registered for any validator"))
        };
        let faults = Arc::clone(&self.state);
        let on_fault = move |_| {
            if let Ok(mut state) = faults.lock() {
                state.refusals.frames += 1;
            }
        };
        let accepted = tokio::time::timeout(
            HANDSHAKE_DEADLINE,
            channel::accept(stream, &self.key, authorize, on_fault),
        )
        .await;
        let secured = match accepted {
            Ok(Ok(secured)) => secured,
            Ok(Err(error)) => {
                if let Ok(mut state) = self.state.lock() {
                    state.refusals.handshakes.push(error.to_string());
                }
                return;
            }
            Err(_) => {
                if let Ok(mut state) = self.state.lock() {
                    state.refusals.handshakes.push("handshake timed out".into());
                }
                return;
            }
        };
        let Some(validator) = validator else {
            return;
        };
        let gate = capnp_rpc::new_client::<coordinator_gate::Client, _>(Gate {
            state: Arc::clone(&self.state),
            proven: Some(Proven {
                validator,
                handshake_hash: secured.handshake_hash,
            }),
        });
        let (read, write) = tokio::io::split(secured.stream);
        transport::serve(read, write, gate.client, "processor");
    }
}
