//! The coordinator link, client side: Cap'n Proto over TCP (Nagle off, both halves buffered)
//! to the coordinator's `CoordinatorGate`, inside a Noise XX channel that proves both ends by
//! their link keys (`schema::link::channel`; plain TCP only to a loopback address, and only when
//! configured), logged in as our validator with the session's handshake hash; then numbered
//! messages in (`next`, `ack`) and out (`send`), each call under a deadline. Every inbound
//! message's signature by the coordinator's message key is checked before it is decoded.
//!
//! Exactly-once is the caller's: it handles inbound messages strictly in id order, commits each
//! one's effects with its "handled" marker, and acks only after the commit; outbound messages
//! leave from the persistent outbox (`db`) and are deleted only once `send` returned. The RPC
//! system is `!Send`: connect and call from a `LocalSet`.

use std::{net::SocketAddr, rc::Rc, time::Duration};

use bitcoin::secp256k1::XOnlyPublicKey;
use prometheus::{IntCounter, IntCounterVec, Opts, Registry};
use schema::{
    error::{DecodeError, EncodeError},
    generated::coordinator_capnp::{coordinator_gate, coordinator_link},
    ids::MessageId,
    link::{
        channel::{self, ChannelFault, HandshakeError},
        identity::{LinkPublicKey, LinkSecretKey},
        signed::{verify_envelope, SignatureError},
    },
    messages::{CoordinatorMessage, ProcessorEnvelope},
    transport::{self, Hangup},
    wire::Wire,
};
use thiserror::Error;
use tokio::net::TcpStream;

/// The most messages asked for at once.
pub const MAX_BATCH: u32 = 64;

/// A link operation failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The coordinator could not be reached.
    #[error("cannot connect to the coordinator at {endpoint}: {source}")]
    Connect {
        /// Where.
        endpoint: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Plain TCP was asked for to an address other than loopback.
    #[error("plain TCP to the coordinator at {0} refused: plain TCP is only for a loopback address; use transport = \"noise\"")]
    PlainNotLoopback(SocketAddr),
    /// The handshake failed; the error names which side failed which check.
    #[error("coordinator link handshake with {endpoint}: {source}")]
    Handshake {
        /// Where.
        endpoint: SocketAddr,
        /// Why.
        source: HandshakeError,
    },
    /// The coordinator accepted the connection but did not finish the handshake in time.
    #[error("coordinator link handshake with {endpoint} did not finish within {deadline:?}: is the coordinator stalled?")]
    HandshakeTimeout {
        /// Where.
        endpoint: SocketAddr,
        /// How long we waited.
        deadline: Duration,
    },
    /// The coordinator refused our login (over Noise: the validator named is not the one our
    /// key is registered for).
    #[error("coordinator at {endpoint} refused the login: {reason}")]
    LoginRefused {
        /// Where.
        endpoint: SocketAddr,
        /// Its reason.
        reason: capnp::Error,
    },
    /// The RPC failed (disconnected, or the coordinator failed the call): reconnect.
    #[error("coordinator RPC: {0}")]
    Rpc(#[from] capnp::Error),
    /// The call took longer than the deadline.
    #[error("coordinator call timed out after {0:?}")]
    Timeout(Duration),
    /// A message is not signed by the coordinator's message key for this validator and id:
    /// altered or replayed at rest. It is not handled, and the link halts.
    #[error("{0}; halting the link")]
    Forged(#[from] SignatureError),
    /// A message does not decode: the coordinator is broken or hostile.
    #[error("coordinator message does not decode: {0}")]
    Decode(#[from] DecodeError),
    /// An outbound message does not encode.
    #[error("outbound message does not encode: {0}")]
    Encode(#[from] EncodeError),
}

/// How the link is secured.
pub enum LinkSecurity {
    /// Noise XX: we prove `key`, and accept only a coordinator proving `coordinator`.
    Noise {
        /// Our link key.
        key: Rc<LinkSecretKey>,
        /// The coordinator's, pinned.
        coordinator: LinkPublicKey,
    },
    /// Plain TCP, to a loopback address only: a coordinator on the same host.
    PlainLoopback,
}

/// Everything a connection needs besides the deadline.
pub struct LinkSettings {
    /// The coordinator's address.
    pub endpoint: SocketAddr,
    /// How the connection is secured.
    pub security: LinkSecurity,
    /// The validator we run for, as the coordinator names it.
    pub validator: Vec<u8>,
    /// The coordinator's key signing every queued message (BIP340, x-only).
    pub message_key: XOnlyPublicKey,
}

/// The link's refusals, for Prometheus.
#[derive(Clone)]
pub struct LinkMetrics {
    /// `scanner_link_handshakes_total`: handshakes completed.
    pub handshakes: IntCounter,
    /// `scanner_link_handshakes_refused_total{reason}`: handshakes failed, by which check.
    pub handshakes_refused: IntCounterVec,
    /// `scanner_link_frames_refused_total{reason}`: established connections dropped because
    /// a frame did not authenticate.
    pub frames_refused: IntCounterVec,
    /// `scanner_link_messages_refused_total{reason}`: queued messages whose signature failed.
    pub messages_refused: IntCounterVec,
}

impl LinkMetrics {
    /// Creates and registers the link's metrics.
    ///
    /// # Errors
    /// A metric is already registered.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let vec = |name: &str, help: &str| IntCounterVec::new(Opts::new(name, help), &["reason"]);
        let metrics = LinkMetrics {
            handshakes: IntCounter::new(
                "scanner_link_handshakes_total",
                "Coordinator link handshakes completed",
            )?,
            handshakes_refused: vec(
                "scanner_link_handshakes_refused_total",
                "Coordinator link handshakes that failed, by the check that failed",
            )?,
            frames_refused: vec(
                "scanner_link_frames_refused_total",
                "Coordinator connections dropped because a frame did not authenticate",
            )?,
            messages_refused: vec(
                "scanner_link_messages_refused_total",
                "Coordinator messages refused because their signature did not verify",
            )?,
        };
        registry.register(Box::new(metrics.handshakes.clone()))?;
        registry.register(Box::new(metrics.handshakes_refused.clone()))?;
        registry.register(Box::new(metrics.frames_refused.clone()))?;
        registry.register(Box::new(metrics.messages_refused.clone()))?;
        Ok(metrics)
    }
}

/// A message from the coordinator: its id, and the message or why it does not decode (so that
/// a malformed message can be skipped by id, not retried forever).
#[derive(Debug)]
pub struct Inbound {
    /// The message id.
    pub id: MessageId,
    /// The message, or why it is malformed.
    pub message: Result<CoordinatorMessage, DecodeError>,
}

/// A logged-in link. The connection closes when the last clone is dropped.
#[derive(Clone)]
pub struct LinkClient {
    link: coordinator_link::Client,
    _connection: Rc<Hangup>,
    deadline: Duration,
    validator: Rc<[u8]>,
    message_key: XOnlyPublicKey,
    metrics: LinkMetrics,
}

impl LinkClient {
    /// Connects, secures the connection as `settings` say, and logs in. Call from a
    /// `LocalSet`.
    ///
    /// # Errors
    /// The coordinator cannot be reached, failed the handshake (the error names the check), or
    /// refused the login.
    pub async fn connect(
        settings: &LinkSettings,
        deadline: Duration,
        metrics: &LinkMetrics,
    ) -> Result<Self, LinkError> {
        let endpoint = settings.endpoint;
        if matches!(settings.security, LinkSecurity::PlainLoopback) && !endpoint.ip().is_loopback()
        {
            metrics
                .handshakes_refused
                .with_label_values(&["plain_not_loopback"])
                .inc();
            return Err(LinkError::PlainNotLoopback(endpoint));
        }
        let stream = tokio::time::timeout(deadline, TcpStream::connect(endpoint))
            .await
            .map_err(|_| LinkError::Timeout(deadline))?
            .map_err(|source| LinkError::Connect { endpoint, source })?;
        stream
            .set_nodelay(true)
            .map_err(|source| LinkError::Connect { endpoint, source })?;
        let ((gate, connection), proof): ((coordinator_gate::Client, Hangup), Vec<u8>) =
            match &settings.security {
                LinkSecurity::PlainLoopback => {
                    let (read, write) = stream.into_split();
                    (
                        transport::connect_owned(read, write, "coordinator"),
                        Vec::new(),
                    )
                }
                LinkSecurity::Noise { key, coordinator } => {
                    let frames_refused = metrics.frames_refused.clone();
                    let on_fault = move |fault: ChannelFault| {
                        tracing::error!(%fault, "coordinator link");
                        frames_refused.with_label_values(&[fault.label()]).inc();
                    };
                    let secured = tokio::time::timeout(
                        deadline,
                        channel::initiate(stream, key, *coordinator, on_fault),
                    )
                    .await
                    .map_err(|_| {
                        // The coordinator took the connection but never finished the handshake.
                        metrics
                            .handshakes_refused
                            .with_label_values(&["timeout"])
                            .inc();
                        LinkError::HandshakeTimeout { endpoint, deadline }
                    })?
                    .map_err(|source| {
                        metrics
                            .handshakes_refused
                            .with_label_values(&[source.label()])
                            .inc();
                        LinkError::Handshake { endpoint, source }
                    })?;
                    metrics.handshakes.inc();
                    let (read, write) = tokio::io::split(secured.stream);
                    (
                        transport::connect_owned(read, write, "coordinator"),
                        secured.handshake_hash.to_vec(),
                    )
                }
            };
        let mut login = gate.login_request();
        login.get().set_validator(&settings.validator);
        login.get().set_proof(&proof);
        let response = tokio::time::timeout(deadline, login.send().promise)
            .await
            .map_err(|_| LinkError::Timeout(deadline))?
            .map_err(|reason| {
                // A failed call is the coordinator's answer; a lost connection is only that.
                if reason.kind != capnp::ErrorKind::Failed {
                    return LinkError::Rpc(reason);
                }
                metrics
                    .handshakes_refused
                    .with_label_values(&["login_refused"])
                    .inc();
                LinkError::LoginRefused { endpoint, reason }
            })?;
        let link = response.get()?.get_link()?;
        Ok(LinkClient {
            link,
            _connection: Rc::new(connection),
            deadline,
            validator: settings.validator.clone().into(),
            message_key: settings.message_key,
            metrics: metrics.clone(),
        })
    }

    /// Messages with ids above `after`, in id order; waits up to `wait` when there are none.
    /// Each message that does not decode is returned with its error, to be skipped. Messages
    /// are returned only up to the first whose signature fails; if that is the first, the
    /// call fails with `Forged`.
    ///
    /// # Errors
    /// The call failed, the answer itself is malformed, or the first message is forged.
    pub async fn next(&self, after: MessageId, wait: Duration) -> Result<Vec<Inbound>, LinkError> {
        let mut request = self.link.next_request();
        request.get().set_after(after.0);
        request.get().set_max(MAX_BATCH);
        request
            .get()
            .set_wait_millis(u32::try_from(wait.as_millis()).unwrap_or(u32::MAX));
        let deadline = self.deadline + wait;
        tokio::time::timeout(deadline, async {
            let response = request.send().promise.await?;
            let messages = response.get()?.get_messages()?;
            if messages.len() > MAX_BATCH {
                return Err(LinkError::Decode(DecodeError::TooLong {
                    what: "message batch",
                    max: MAX_BATCH as usize,
                    actual: messages.len() as usize,
                }));
            }
            let mut inbound = Vec::with_capacity(messages.len() as usize);
            for envelope in messages.iter() {
                let canonical = match verify_envelope(&self.message_key, &self.validator, envelope)
                {
                    Ok(canonical) => canonical,
                    // After the messages before it are handled, it comes first, and is
                    // refused then (once).
                    Err(_) if !inbound.is_empty() => break,
                    Err(error) => {
                        tracing::error!(%error, "coordinator message refused");
                        self.metrics
                            .messages_refused
                            .with_label_values(&[error.label()])
                            .inc();
                        return Err(LinkError::Forged(error));
                    }
                };
                // Decoded from the checked copy: exactly what was signed, read on a budget of
                // its own.
                let message = if envelope.has_message() {
                    canonical
                        .reader()
                        .map_err(DecodeError::from)
                        .and_then(CoordinatorMessage::read)
                } else {
                    Err(DecodeError::Missing("envelope message"))
                };
                inbound.push(Inbound {
                    id: MessageId(envelope.get_id()),
                    message,
                });
            }
            Ok(inbound)
        })
        .await
        .map_err(|_| LinkError::Timeout(deadline))?
    }

    /// Tells the coordinator every message up to `id` is durably handled.
    ///
    /// # Errors
    /// The call failed.
    pub async fn ack(&self, id: MessageId) -> Result<(), LinkError> {
        let mut request = self.link.ack_request();
        request.get().set_id(id.0);
        tokio::time::timeout(self.deadline, async {
            request.send().promise.await?;
            Ok(())
        })
        .await
        .map_err(|_| LinkError::Timeout(self.deadline))?
    }

    /// Delivers one outbound message; returning means the coordinator stored it.
    ///
    /// # Errors
    /// The call failed (the message stays in the outbox).
    pub async fn send(&self, envelope: &ProcessorEnvelope) -> Result<(), LinkError> {
        let mut request = self.link.send_request();
        envelope.write(request.get().init_envelope())?;
        tokio::time::timeout(self.deadline, async {
            request.send().promise.await?;
            Ok(())
        })
        .await
        .map_err(|_| LinkError::Timeout(self.deadline))?
    }
}
