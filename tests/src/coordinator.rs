//! The coordinator, played for tests: the `CoordinatorGate` Cap'n Proto server processors log in
//! to, with one numbered message queue per validator, acks, and the messages each processor
//! sent (deduplicated by id, as the real coordinator does). Tests push messages and read what
//! came back; `misbehave_rewind` makes it redeliver from the start, ignoring `after`, as a
//! reset queue would.

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

use schema::{
    generated::coordinator_capnp::{coordinator_gate, coordinator_link},
    ids::MessageId,
    messages::{CoordinatorEnvelope, CoordinatorMessage, ProcessorEnvelope, ProcessorMessage},
    transport,
    wire::Wire,
};

use crate::HarnessError;

/// A queued message, or one that does not decode (for tests of skipping).
#[derive(Clone)]
enum Entry {
    Message(Box<CoordinatorEnvelope>),
    Malformed(MessageId),
}

impl Entry {
    fn id(&self) -> MessageId {
        match self {
            Entry::Message(envelope) => envelope.id,
            Entry::Malformed(id) => *id,
        }
    }

    fn write(
        &self,
        mut builder: schema::generated::messages_capnp::coordinator_envelope::Builder<'_>,
    ) -> Result<(), capnp::Error> {
        match self {
            Entry::Message(envelope) => envelope
                .write(builder)
                .map_err(|error| capnp::Error::failed(error.to_string())),
            Entry::Malformed(id) => {
                // A key generation for participant 1 of 4 with threshold 5: refused on decode.
                builder.set_id(id.0);
                let mut params = builder
                    .init_message()
                    .init_key_gen()
                    .init_generate_key()
                    .init_params();
                params.set_t(5);
                params.set_n(4);
                params.set_i(1);
                Ok(())
            }
        }
    }
}

#[derive(Default)]
struct Queue {
    inbox: Vec<Entry>,
    acked: u64,
    received: BTreeMap<u64, ProcessorMessage>,
    logins: u32,
}

#[derive(Default)]
struct State {
    queues: BTreeMap<Vec<u8>, Queue>,
    rewind: bool,
}

type Shared = Arc<Mutex<State>>;

fn lock(state: &Shared) -> Result<std::sync::MutexGuard<'_, State>, capnp::Error> {
    state
        .lock()
        .map_err(|_| capnp::Error::failed("coordinator state poisoned".into()))
}

struct Gate {
    state: Shared,
}

struct Link {
    state: Shared,
    validator: Vec<u8>,
}

impl coordinator_gate::Server for Gate {
    async fn login(
        self: Rc<Self>,
        params: coordinator_gate::LoginParams,
        mut results: coordinator_gate::LoginResults,
    ) -> Result<(), capnp::Error> {
        let validator = params.get()?.get_validator()?.to_vec();
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
                state
                    .queues
                    .get(&self.validator)
                    .map(|queue| {
                        queue
                            .inbox
                            .iter()
                            .filter(|entry| rewind || entry.id().0 > after)
                            .take(max)
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
            entry.write(list.reborrow().get(index))?;
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

/// The coordinator harness, serving on a loopback port from its own thread.
pub struct CoordinatorHarness {
    state: Shared,
    address: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl CoordinatorHarness {
    /// Starts serving on a free loopback port.
    ///
    /// # Errors
    /// The port cannot be bound.
    pub fn start() -> Result<Self, HarnessError> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let address = listener.local_addr()?;
        let state: Shared = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (served, stopping) = (Arc::clone(&state), Arc::clone(&stop));
        let thread = std::thread::Builder::new()
            .name("coordinator".into())
            .spawn(move || serve(listener, served, stopping))?;
        Ok(CoordinatorHarness {
            state,
            address,
            stop,
            thread: Some(thread),
        })
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
        listener.set_nonblocking(true)?;
        self.stop = Arc::new(AtomicBool::new(false));
        let (served, stopping) = (Arc::clone(&self.state), Arc::clone(&self.stop));
        self.thread = Some(
            std::thread::Builder::new()
                .name("coordinator".into())
                .spawn(move || serve(listener, served, stopping))?,
        );
        Ok(())
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

    /// Queues a message for a validator; returns its id.
    ///
    /// # Errors
    /// The state is poisoned.
    pub fn push(
        &self,
        validator: &[u8],
        message: CoordinatorMessage,
    ) -> Result<MessageId, HarnessError> {
        self.with(|state| {
            let queue = state.queues.entry(validator.to_vec()).or_default();
            let id = MessageId(queue.inbox.last().map_or(1, |last| last.id().0 + 1));
            queue
                .inbox
                .push(Entry::Message(Box::new(CoordinatorEnvelope {
                    id,
                    message,
                })));
            id
        })
    }

    /// Queues a message for a validator that does not decode; returns its id.
    ///
    /// # Errors
    /// The state is poisoned.
    pub fn push_malformed(&self, validator: &[u8]) -> Result<MessageId, HarnessError> {
        self.with(|state| {
            let queue = state.queues.entry(validator.to_vec()).or_default();
            let id = MessageId(queue.inbox.last().map_or(1, |last| last.id().0 + 1));
            queue.inbox.push(Entry::Malformed(id));
            id
        })
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

fn serve(listener: std::net::TcpListener, state: Shared, stop: Arc<AtomicBool>) {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
            return;
        };
        let gate: coordinator_gate::Client = capnp_rpc::new_client(Gate { state });
        while !stop.load(Ordering::SeqCst) {
            let accepted = tokio::time::timeout(Duration::from_millis(50), listener.accept()).await;
            let Ok(Ok((stream, _))) = accepted else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let (read, write) = stream.into_split();
            transport::serve(read, write, gate.clone().client, "processor");
        }
    });
}
