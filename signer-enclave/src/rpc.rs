//! The `Signer` Cap'n Proto interface over a Unix socket: decoding every request with the
//! schema's bounded readers, handing it to `Enclave`, and writing its answer or refusal.
//!
//! A connection is served only if the peer's uid (`SO_PEERCRED`, read before any byte) is the
//! configured one; others are dropped and counted. Each connection gets its own RPC system on
//! the current thread's `LocalSet`; all share one `Enclave`, and no handler holds it across an
//! await, so a dropped call leaves nothing half done.
//!
//! Nothing a peer does can exhaust the enclave: at most `max_connections` are served (more are
//! dropped and counted); a connection sending nothing for `idle_timeout` is dropped; a peer
//! that does not read its answers is not read from (its answers cannot pile up in memory) and
//! is dropped after `NOT_READING`; and a failed accept is counted and serving goes on.

use std::{
    cell::{Cell, RefCell},
    future::Future,
    io,
    pin::Pin,
    rc::Rc,
    task::{Context, Poll, Waker},
    time::{Duration, Instant},
};

use schema::{
    batch::{Batch, SignedBatch},
    error::{DecodeError, EncodeError},
    generated::signer_capnp::{refusal, signer},
    ids::ValidatorSet,
    keys::KeyPair,
    messages::{
        coordinator::{Attestation, PlansAcknowledged},
        key_gen, ParticipantMap,
    },
    plan::Plan,
    sign_id::{BatchSignId, PlanSignId},
    transport,
    wire::{read_attestation, read_participant_map, Wire},
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{
        unix::{OwnedReadHalf, OwnedWriteHalf},
        UnixListener,
    },
};

use crate::{
    enclave::{Enclave, Refused},
    metrics::Metrics,
};

/// The `Signer` capability: every connection's handle on the one enclave.
#[derive(Clone)]
pub struct SignerService {
    enclave: Rc<RefCell<Enclave>>,
}

impl SignerService {
    /// Serves `enclave`.
    pub fn new(enclave: Rc<RefCell<Enclave>>) -> Self {
        SignerService { enclave }
    }

    /// Runs `handle` on a decoded request, or refuses a request that does not decode.
    fn with<T, R>(
        &self,
        decoded: Result<T, DecodeError>,
        handle: impl FnOnce(&mut Enclave, T) -> Result<R, Refused>,
    ) -> Result<R, Refused> {
        let mut enclave = self.enclave.borrow_mut();
        match decoded {
            Ok(request) => handle(&mut enclave, request),
            Err(error) => Err(enclave.malformed(&error)),
        }
    }
}

/// How long a peer may leave its answers unread before its connection is dropped.
pub const NOT_READING: Duration = Duration::from_secs(30);

/// The limits connections are served under.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// Most connections served at once.
    pub max_connections: usize,
    /// How long a connection may send nothing.
    pub idle_timeout: Duration,
}

/// Accepts connections until `shutdown` resolves, serving each allowed one on the current
/// `LocalSet`, within `limits`. Accept errors are counted and serving goes on.
pub async fn serve(
    listener: UnixListener,
    allowed_uid: u32,
    service: SignerService,
    metrics: Metrics,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let open = Rc::new(Cell::new(0usize));
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of descriptors, a peer gone before it was accepted: not a reason to
                    // stop serving the scanner.
                    metrics.accept_errors.inc();
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        match stream.peer_cred() {
            Ok(credentials) if credentials.uid() == allowed_uid => {}
            Ok(credentials) => {
                metrics.rejected_connections.inc();
                tracing::warn!(uid = credentials.uid(), "connection from a uid not allowed");
                continue;
            }
            Err(error) => {
                metrics.rejected_connections.inc();
                tracing::warn!(%error, "connection without peer credentials");
                continue;
            }
        }
        if open.get() >= limits.max_connections {
            metrics
                .connections_dropped
                .with_label_values(&["too_many"])
                .inc();
            tracing::warn!(open = open.get(), "too many connections; one dropped");
            continue;
        }
        let (read, write) = stream.into_split();
        let state = Rc::new(Guard::default());
        let client: signer::Client = capnp_rpc::new_client(service.clone());
        let connection = transport::serve(
            GuardedRead {
                inner: read,
                state: Rc::clone(&state),
            },
            GuardedWrite {
                inner: write,
                state: Rc::clone(&state),
            },
            client.client,
            "scanner",
        );
        open.set(open.get() + 1);
        metrics
            .open_connections
            .set(i64::try_from(open.get()).unwrap_or(i64::MAX));
        tokio::task::spawn_local(watch(
            connection,
            state,
            limits.idle_timeout,
            Rc::clone(&open),
            metrics.clone(),
        ));
    }
}

/// Ends `connection` when its peer has sent nothing for `idle`, or has not read its answers for
/// `NOT_READING`; counts it out when it ends either way.
async fn watch(
    connection: tokio::task::JoinHandle<()>,
    state: Rc<Guard>,
    idle: Duration,
    open: Rc<Cell<usize>>,
    metrics: Metrics,
) {
    let check = (idle.min(NOT_READING) / 10).max(Duration::from_millis(100));
    let dropped = loop {
        if connection.is_finished() {
            break None;
        }
        let now = Instant::now();
        if now.duration_since(state.last_read.get()) >= idle {
            break Some("idle");
        }
        if state
            .write_blocked_since
            .get()
            .is_some_and(|since| now.duration_since(since) >= NOT_READING)
        {
            break Some("not_reading");
        }
        tokio::time::sleep(check).await;
    };
    if let Some(reason) = dropped {
        connection.abort();
        metrics
            .connections_dropped
            .with_label_values(&[reason])
            .inc();
        tracing::info!(reason, "connection dropped");
    }
    open.set(open.get().saturating_sub(1));
    metrics
        .open_connections
        .set(i64::try_from(open.get()).unwrap_or(i64::MAX));
}

/// What a connection's two halves share.
struct Guard {
    /// When the peer last sent bytes.
    last_read: Cell<Instant>,
    /// Since when writing answers has been blocked (the peer is not reading).
    write_blocked_since: Cell<Option<Instant>>,
    /// The reader waiting for writes to unblock.
    reader: RefCell<Option<Waker>>,
}

impl Default for Guard {
    fn default() -> Self {
        Guard {
            last_read: Cell::new(Instant::now()),
            write_blocked_since: Cell::new(None),
            reader: RefCell::new(None),
        }
    }
}

impl Guard {
    fn write_done(&self) {
        self.write_blocked_since.set(None);
        if let Some(waker) = self.reader.borrow_mut().take() {
            waker.wake();
        }
    }

    fn write_blocked(&self) {
        if self.write_blocked_since.get().is_none() {
            self.write_blocked_since.set(Some(Instant::now()));
        }
    }
}

/// The read half: not read from while answers cannot be written, so that a peer that sends
/// requests without reading answers cannot make them pile up.
struct GuardedRead {
    inner: OwnedReadHalf,
    state: Rc<Guard>,
}

impl AsyncRead for GuardedRead {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.state.write_blocked_since.get().is_some() {
            *self.state.reader.borrow_mut() = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.state.last_read.set(Instant::now());
        }
        polled
    }
}

/// The write half: records when the peer stops taking answers.
struct GuardedWrite {
    inner: OwnedWriteHalf,
    state: Rc<Guard>,
}

impl GuardedWrite {
    fn track<T>(&self, polled: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match &polled {
            Poll::Pending => self.state.write_blocked(),
            Poll::Ready(_) => self.state.write_done(),
        }
        polled
    }
}

impl AsyncWrite for GuardedWrite {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.track(polled)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.track(polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

fn encode_failed(error: EncodeError) -> capnp::Error {
    capnp::Error::failed(format!("answer does not encode: {error}"))
}

fn write_refusal(mut builder: refusal::Builder<'_>, refused: &Refused) {
    builder.set_reason(refused.reason);
    builder.set_detail(refused.detail.as_str());
}

fn plan_id(
    id: capnp::Result<schema::generated::common_capnp::sign_id::Reader<'_>>,
) -> Result<PlanSignId, DecodeError> {
    PlanSignId::read(id?)
}

fn batch_id(
    id: capnp::Result<schema::generated::common_capnp::sign_id::Reader<'_>>,
) -> Result<BatchSignId, DecodeError> {
    BatchSignId::read(id?)
}

type Participants<'a> = capnp::Result<
    capnp::struct_list::Reader<'a, schema::generated::common_capnp::participant_data::Owned>,
>;

fn participants(list: Participants<'_>) -> Result<ParticipantMap, DecodeError> {
    read_participant_map(list)
}

macro_rules! bytes_answer {
    ($results:expr, $outcome:expr) => {{
        let mut result = $results.get().init_result();
        match $outcome {
            Ok(bytes) => result.set_ok(&bytes),
            Err(refused) => write_refusal(result.init_refused(), &refused),
        }
        futures::future::ready(Ok(()))
    }};
}

impl signer::Server for SignerService {
    fn status(
        self: Rc<Self>,
        _: signer::StatusParams,
        mut results: signer::StatusResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let mut answer = || -> Result<(), capnp::Error> {
            let status = self
                .enclave
                .borrow()
                .status()
                .map_err(|refused| capnp::Error::failed(refused.to_string()))?;
            let mut builder = results.get().init_status();
            builder.set_pending_key_gens(status.pending_key_gens);
            builder.set_acknowledged_plans(status.acknowledged_plans);
            let len = u32::try_from(status.keys.len())
                .map_err(|_| capnp::Error::failed("too many keys".into()))?;
            let mut keys = builder.init_keys(len);
            for (index, pair) in (0u32..).zip(&status.keys) {
                pair.write(keys.reborrow().get(index))
                    .map_err(encode_failed)?;
            }
            Ok(())
        };
        futures::future::ready(answer())
    }

    fn key_gen(
        self: Rc<Self>,
        params: signer::KeyGenParams,
        mut results: signer::KeyGenResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let decoded = params
            .get()
            .and_then(|p| p.get_message())
            .map_err(DecodeError::from)
            .and_then(key_gen::CoordinatorMessage::read);
        let outcome = self.with(decoded, |enclave, message| enclave.key_gen(message));
        let answer = || -> Result<(), capnp::Error> {
            let result = results.get().init_result();
            match outcome {
                Ok(messages) => {
                    let len = u32::try_from(messages.len())
                        .map_err(|_| capnp::Error::failed("too many messages".into()))?;
                    let mut list = result.init_ok(len);
                    for (index, message) in (0u32..).zip(&messages) {
                        message
                            .write(list.reborrow().get(index))
                            .map_err(encode_failed)?;
                    }
                }
                Err(refused) => write_refusal(result.init_refused(), &refused),
            }
            Ok(())
        };
        futures::future::ready(answer())
    }

    fn confirm_key_pair(
        self: Rc<Self>,
        params: signer::ConfirmKeyPairParams,
        mut results: signer::ConfirmKeyPairResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let decoded = (|| -> Result<(ValidatorSet, KeyPair), DecodeError> {
            let p = params.get()?;
            Ok((
                ValidatorSet::read(p.get_set()?)?,
                KeyPair::read(p.get_key_pair()?)?,
            ))
        })();
        let outcome = self.with(decoded, |enclave, (set, pair)| {
            enclave.confirm_key_pair(set, pair)
        });
        unit_answer(results.get().init_result(), outcome)
    }

    fn acknowledge_plans(
        self: Rc<Self>,
        params: signer::AcknowledgePlansParams,
        mut results: signer::AcknowledgePlansResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let decoded = params
            .get()
            .and_then(|p| p.get_acknowledged())
            .map_err(DecodeError::from)
            .and_then(PlansAcknowledged::read);
        let outcome = self.with(decoded, |enclave, acknowledged| {
            enclave.acknowledge_plans(&acknowledged)
        });
        unit_answer(results.get().init_result(), outcome)
    }

    fn preprocess_plan(
        self: Rc<Self>,
        params: signer::PreprocessPlanParams,
        mut results: signer::PreprocessPlanResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let decoded = (|| -> Result<(PlanSignId, Plan), DecodeError> {
            let p = params.get()?;
            Ok((plan_id(p.get_id())?, Plan::read(p.get_plan()?)?))
        })();
        let outcome = self.with(decoded, |enclave, (id, plan)| {
            enclave.preprocess_plan(id, &plan)
        });
        bytes_answer!(results, outcome)
    }

    fn share_plan(
        self: Rc<Self>,
        params: signer::SharePlanParams,
        mut results: signer::SharePlanResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let decoded = params
            .get()
            .map_err(DecodeError::from)
            .and_then(|p| Ok((plan_id(p.get_id())?, participants(p.get_preprocesses())?)));
        let outcome = self.with(decoded, |enclave, (id, preprocesses)| {
            enclave.share_plan(&id, &preprocesses)
        });
        bytes_answer!(results, outcome)
    }

    fn complete_plan(
        self: Rc<Self>,
        params: signer::CompletePlanParams,
        mut results: signer::CompletePlanResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let decoded = params
            .get()
            .map_err(DecodeError::from)
            .and_then(|p| Ok((plan_id(p.get_id())?, participants(p.get_shares())?)));
        let outcome = self.with(decoded, |enclave, (id, shares)| {
            enclave.complete_plan(&id, &shares)
        });
        bytes_answer!(results, outcome)
    }

    fn preprocess_batch(
        self: Rc<Self>,
        params: signer::PreprocessBatchParams,
        mut results: signer::PreprocessBatchResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let decoded = params
            .get()
            .map_err(DecodeError::from)
            .and_then(|p| Ok((batch_id(p.get_id())?, Batch::read(p.get_batch()?)?)));
        let outcome = self.with(decoded, |enclave, (id, batch)| {
            enclave.preprocess_batch(id, batch)
        });
        bytes_answer!(results, outcome)
    }

    fn share_batch(
        self: Rc<Self>,
        params: signer::ShareBatchParams,
        mut results: signer::ShareBatchResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let decoded = params
            .get()
            .map_err(DecodeError::from)
            .and_then(|p| Ok((batch_id(p.get_id())?, participants(p.get_preprocesses())?)));
        let outcome = self.with(decoded, |enclave, (id, preprocesses)| {
            enclave.share_batch(&id, &preprocesses)
        });
        bytes_answer!(results, outcome)
    }

    fn complete_batch(
        self: Rc<Self>,
        params: signer::CompleteBatchParams,
        mut results: signer::CompleteBatchResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let decoded = params
            .get()
            .map_err(DecodeError::from)
            .and_then(|p| Ok((batch_id(p.get_id())?, participants(p.get_shares())?)));
        let outcome = self.with(decoded, |enclave, (id, shares)| {
            enclave.complete_batch(&id, &shares)
        });
        let result = results.get().init_result();
        let answer = match outcome {
            Ok(signed) => signed.write(result.init_ok()).map_err(encode_failed),
            Err(refused) => {
                write_refusal(result.init_refused(), &refused);
                Ok(())
            }
        };
        futures::future::ready(answer)
    }

    fn batch_included(
        self: Rc<Self>,
        params: signer::BatchIncludedParams,
        mut results: signer::BatchIncludedResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let decoded = (|| -> Result<(SignedBatch, Attestation), DecodeError> {
            let p = params.get()?;
            Ok((
                SignedBatch::read(p.get_batch()?)?,
                read_attestation(p.get_attestation()?)?,
            ))
        })();
        let outcome = self.with(decoded, |enclave, (signed, attestation)| {
            enclave.batch_included(&signed, &attestation)
        });
        unit_answer(results.get().init_result(), outcome)
    }
}

fn unit_answer(
    mut result: schema::generated::signer_capnp::unit_result::Builder<'_>,
    outcome: Result<(), Refused>,
) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
    match outcome {
        Ok(()) => result.set_ok(()),
        Err(refused) => write_refusal(result.init_refused(), &refused),
    }
    futures::future::ready(Ok(()))
}
