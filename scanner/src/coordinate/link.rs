//! The coordinator link, client side: Cap'n Proto over TCP (Nagle off, both halves buffered)
//! to the coordinator's `CoordinatorGate`, logged in as our validator; then numbered messages
//! in (`next`, `ack`) and out (`send`), each call under a deadline.
//!
//! Exactly-once is the caller's: it handles inbound messages strictly in id order, commits each
//! one's effects with its "handled" marker, and acks only after the commit; outbound messages
//! leave from the persistent outbox (`db`) and are deleted only once `send` returned. The RPC
//! system is `!Send`: connect and call from a `LocalSet`.

use std::{net::SocketAddr, time::Duration};

use schema::{
    error::{DecodeError, EncodeError},
    generated::coordinator_capnp::{coordinator_gate, coordinator_link},
    ids::MessageId,
    messages::{CoordinatorEnvelope, CoordinatorMessage, ProcessorEnvelope},
    transport,
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
    /// The RPC failed (disconnected, or the coordinator failed the call): reconnect.
    #[error("coordinator RPC: {0}")]
    Rpc(#[from] capnp::Error),
    /// The call took longer than the deadline.
    #[error("coordinator call timed out after {0:?}")]
    Timeout(Duration),
    /// A message does not decode: the coordinator is broken or hostile.
    #[error("coordinator message does not decode: {0}")]
    Decode(#[from] DecodeError),
    /// An outbound message does not encode.
    #[error("outbound message does not encode: {0}")]
    Encode(#[from] EncodeError),
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

/// A logged-in link.
#[derive(Clone)]
pub struct LinkClient {
    link: coordinator_link::Client,
    deadline: Duration,
}

impl LinkClient {
    /// Connects to `endpoint` and logs in as `validator`. Call from a `LocalSet`.
    ///
    /// # Errors
    /// The coordinator cannot be reached or refused the login.
    pub async fn connect(
        endpoint: SocketAddr,
        validator: &[u8],
        deadline: Duration,
    ) -> Result<Self, LinkError> {
        let stream = tokio::time::timeout(deadline, TcpStream::connect(endpoint))
            .await
            .map_err(|_| LinkError::Timeout(deadline))?
            .map_err(|source| LinkError::Connect { endpoint, source })?;
        stream
            .set_nodelay(true)
            .map_err(|source| LinkError::Connect { endpoint, source })?;
        let (read, write) = stream.into_split();
        let gate: coordinator_gate::Client = transport::connect(read, write, "coordinator");
        let mut login = gate.login_request();
        login.get().set_validator(validator);
        login.get().set_proof(&[]);
        let link = tokio::time::timeout(deadline, async {
            let response = login.send().promise.await?;
            response.get()?.get_link()
        })
        .await
        .map_err(|_| LinkError::Timeout(deadline))??;
        Ok(LinkClient { link, deadline })
    }

    /// Messages with ids above `after`, in id order; waits up to `wait` when there are none.
    /// Each message that does not decode is returned with its error, to be skipped.
    ///
    /// # Errors
    /// The call failed, or the answer itself is malformed.
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
            Ok(messages
                .iter()
                .map(|envelope| Inbound {
                    id: MessageId(envelope.get_id()),
                    message: CoordinatorEnvelope::read(envelope).map(|read| read.message),
                })
                .collect())
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
