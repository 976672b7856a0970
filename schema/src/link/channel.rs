//! The link's secure channel: a Noise XX handshake over TCP that authenticates both ends by
//! their link keys, then a stream of encrypted, authenticated frames that Cap'n Proto runs
//! over as over any byte stream.
//!
//! Why Noise XX (`Noise_XX_25519_ChaChaPoly_BLAKE2s`, the `snow` crate) and not TLS: both ends
//! are known by one raw 32-byte key, pinned on each side, so there is no certificate, no X.509
//! parser facing a hostile peer, and nothing to expire. XX sends each end's static key inside
//! the handshake, so each side can say exactly which key it saw when it refuses one (the
//! processor checks the coordinator's against its pin; the coordinator checks the processor's
//! against its registry of validators); the processor's key travels encrypted. Every frame is
//! authenticated under a key only these two handshake parties hold, with an implicit counter
//! as nonce, so a flipped byte, a dropped, reordered or replayed frame, and a whole recorded
//! session played again all fail to decrypt, and the connection drops before anything is read.
//!
//! On the wire every message, handshake or transport, is a 2-byte big-endian length and the
//! Noise message (at most 65535 bytes). After the three handshake messages the responder sends
//! one transport frame, its verdict: accepted (`0x00`), or refused (`0x01` and a UTF-8 reason),
//! so the initiator learns why it was turned away from the authenticated peer itself.

use std::{sync::Arc, time::Duration};

use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};

use super::identity::{LinkPublicKey, LinkSecretKey, LINK_KEY_LEN};

/// The Noise protocol name: handshake pattern, DH, cipher and hash.
pub const NOISE_PARAMS: &str = "Noise_XX_25519_ChaChaPoly_BLAKE2s";

/// Mixed into the handshake: a peer speaking another version of the link fails the handshake
/// instead of misreading it.
pub const PROLOGUE: &[u8] = b"serai-processor/coordinator-link/v1";

/// The longest Noise message, and so the longest frame after its length.
pub const MAX_FRAME: usize = 65535;

/// The authentication tag of every encrypted frame.
const TAG_LEN: usize = 16;

/// The most plaintext one frame carries.
pub const MAX_PLAINTEXT: usize = MAX_FRAME - TAG_LEN;

/// The longest a frame may take to leave: a peer that takes no bytes for this long is gone.
pub const WRITE_DEADLINE: Duration = Duration::from_secs(60);

/// Bytes of the handshake hash, which binds a login to its session.
pub const HANDSHAKE_HASH_LEN: usize = 32;

const ACCEPTED: u8 = 0;
const REFUSED: u8 = 1;

/// The longest refusal reason sent or read.
pub const MAX_REASON: usize = 256;

/// Why a handshake failed. Each names which side failed which check.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The connection failed.
    #[error("connection failed during the link handshake: {0}")]
    Io(#[from] std::io::Error),
    /// A handshake message did not authenticate: the peer does not hold the key it claims, a
    /// proxy altered the handshake, or a recorded handshake was played again.
    #[error("a link handshake message does not authenticate ({0}): tampered, replayed, or another protocol")]
    Noise(#[from] snow::Error),
    /// A handshake message was malformed (a length out of bounds, a key missing).
    #[error("malformed link handshake: {0}")]
    Malformed(&'static str),
    /// The coordinator proved a key other than the one pinned for it.
    #[error("the coordinator's link key is {presented}, but the configuration pins {pinned} (coordinator.link_key)")]
    WrongCoordinator {
        /// What it proved.
        presented: LinkPublicKey,
        /// What we pinned.
        pinned: LinkPublicKey,
    },
    /// The responder turned the initiator away, saying why.
    #[error("the coordinator refused our link key {key}: {reason}")]
    RefusedByCoordinator {
        /// Our key.
        key: LinkPublicKey,
        /// Its reason.
        reason: String,
    },
    /// The responder turned an initiator away.
    #[error("refused the link key {key}: {reason}")]
    RefusedInitiator {
        /// The initiator's key.
        key: LinkPublicKey,
        /// Why.
        reason: String,
    },
}

impl HandshakeError {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            HandshakeError::Io(_) => "io",
            HandshakeError::Noise(_) => "unauthenticated",
            HandshakeError::Malformed(_) => "malformed",
            HandshakeError::WrongCoordinator { .. } => "wrong_coordinator_key",
            HandshakeError::RefusedByCoordinator { .. } => "refused_by_coordinator",
            HandshakeError::RefusedInitiator { .. } => "unknown_key",
        }
    }
}

/// Why an established channel dropped.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ChannelFault {
    /// A frame did not decrypt: altered, reordered, dropped or replayed on the way.
    #[error(
        "a link frame does not authenticate (altered, reordered or replayed): connection dropped"
    )]
    Unauthenticated,
    /// A frame too short to hold its tag.
    #[error("a link frame of {0} bytes is shorter than its tag: connection dropped")]
    Short(usize),
}

impl ChannelFault {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            ChannelFault::Unauthenticated => "unauthenticated",
            ChannelFault::Short(_) => "short",
        }
    }
}

/// An authenticated, encrypted connection: a byte stream to hand to Cap'n Proto, the peer's
/// key, and the handshake hash that names this session (a login proves it is made inside
/// this session by carrying it).
pub struct SecureStream {
    /// Plaintext both ways; frames are encrypted and checked underneath.
    pub stream: DuplexStream,
    /// The peer's link key, proven in the handshake.
    pub peer: LinkPublicKey,
    /// The Noise handshake hash.
    pub handshake_hash: [u8; HANDSHAKE_HASH_LEN],
}

fn noise(key: &LinkSecretKey) -> Result<snow::Builder<'_>, HandshakeError> {
    let params = NOISE_PARAMS
        .parse()
        .map_err(|_| HandshakeError::Malformed("Noise parameters"))?;
    Ok(snow::Builder::new(params)
        .local_private_key(key.secret())?
        .prologue(PROLOGUE)?)
}

async fn write_frame(
    write: &mut (impl AsyncWrite + Unpin),
    frame: &[u8],
) -> Result<(), std::io::Error> {
    let len = u16::try_from(frame.len())
        .map_err(|_| std::io::Error::other("a link frame longer than 65535 bytes"))?;
    let mut bytes = Vec::with_capacity(2 + frame.len());
    bytes.extend_from_slice(&len.to_be_bytes());
    bytes.extend_from_slice(frame);
    write.write_all(&bytes).await?;
    write.flush().await
}

/// Reads one frame into `buffer`, returning its length; `None` at a clean end of stream.
async fn read_frame(
    read: &mut (impl AsyncRead + Unpin),
    buffer: &mut [u8; MAX_FRAME],
) -> Result<Option<usize>, std::io::Error> {
    let mut len = [0u8; 2];
    match read.read_exact(&mut len).await {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error),
    }
    let len = usize::from(u16::from_be_bytes(len));
    read.read_exact(&mut buffer[..len]).await?;
    Ok(Some(len))
}

async fn read_handshake(
    read: &mut (impl AsyncRead + Unpin),
    buffer: &mut [u8; MAX_FRAME],
) -> Result<usize, HandshakeError> {
    read_frame(read, buffer).await?.ok_or_else(|| {
        HandshakeError::Io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the peer closed the connection",
        ))
    })
}

fn peer_key(noise: &snow::HandshakeState) -> Result<LinkPublicKey, HandshakeError> {
    let key: [u8; LINK_KEY_LEN] = noise
        .get_remote_static()
        .and_then(|key| key.try_into().ok())
        .ok_or(HandshakeError::Malformed("the peer's static key"))?;
    Ok(LinkPublicKey(key))
}

fn handshake_hash(noise: &snow::HandshakeState) -> Result<[u8; 32], HandshakeError> {
    noise
        .get_handshake_hash()
        .try_into()
        .map_err(|_| HandshakeError::Malformed("handshake hash"))
}

/// Connects as the initiator (the processor): proves `key`, and accepts only a responder that
/// proves `pinned`. Nothing after the handshake is read unless the responder accepted us. Call
/// from a `LocalSet` (the channel's tasks are spawned there), under a deadline of the caller's:
/// a peer that stops answering stalls the handshake.
///
/// # Errors
/// The handshake failed; the error names the check.
pub async fn initiate<S>(
    stream: S,
    key: &LinkSecretKey,
    pinned: LinkPublicKey,
    on_fault: impl FnOnce(ChannelFault) + 'static,
) -> Result<SecureStream, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let (mut read, mut write) = tokio::io::split(stream);
    let mut noise = noise(key)?.build_initiator()?;
    let mut buffer = Box::new([0u8; MAX_FRAME]);
    let mut out = vec![0u8; MAX_FRAME];
    let len = noise.write_message(&[], &mut out)?;
    write_frame(&mut write, &out[..len]).await?;
    let len = read_handshake(&mut read, &mut buffer).await?;
    noise.read_message(&buffer[..len], &mut out)?;
    let presented = peer_key(&noise)?;
    if presented != pinned {
        return Err(HandshakeError::WrongCoordinator { presented, pinned });
    }
    let len = noise.write_message(&[], &mut out)?;
    write_frame(&mut write, &out[..len]).await?;
    let hash = handshake_hash(&noise)?;
    let transport = noise.into_stateless_transport_mode()?;
    let len = read_handshake(&mut read, &mut buffer).await?;
    let verdict = transport
        .read_message(0, &buffer[..len], &mut out)
        .map_err(HandshakeError::Noise)?;
    match out[..verdict] {
        [ACCEPTED] => {}
        [REFUSED, ref reason @ ..] => {
            return Err(HandshakeError::RefusedByCoordinator {
                key: key.public(),
                // Shown to an operator: no control characters from the peer in the logs.
                reason: String::from_utf8_lossy(&reason[..reason.len().min(MAX_REASON)])
                    .chars()
                    .filter(|c| !c.is_control())
                    .collect(),
            });
        }
        _ => return Err(HandshakeError::Malformed("the coordinator's verdict")),
    }
    Ok(SecureStream {
        stream: pump(read, write, Arc::new(transport), 1, 0, on_fault),
        peer: pinned,
        handshake_hash: hash,
    })
}

/// Accepts as the responder (the coordinator): proves `key`, and lets `authorize` judge the
/// initiator's proven key; a refused initiator is told why, and nothing it sends is read. Call
/// from a `LocalSet`, under a deadline of the caller's, as `initiate`.
///
/// # Errors
/// The handshake failed, or `authorize` refused the initiator.
pub async fn accept<S>(
    stream: S,
    key: &LinkSecretKey,
    authorize: impl FnOnce(&LinkPublicKey) -> Result<(), String>,
    on_fault: impl FnOnce(ChannelFault) + 'static,
) -> Result<SecureStream, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let (mut read, mut write) = tokio::io::split(stream);
    let mut noise = noise(key)?.build_responder()?;
    let mut buffer = Box::new([0u8; MAX_FRAME]);
    let mut out = vec![0u8; MAX_FRAME];
    let len = read_handshake(&mut read, &mut buffer).await?;
    noise.read_message(&buffer[..len], &mut out)?;
    let len = noise.write_message(&[], &mut out)?;
    write_frame(&mut write, &out[..len]).await?;
    let len = read_handshake(&mut read, &mut buffer).await?;
    noise.read_message(&buffer[..len], &mut out)?;
    let peer = peer_key(&noise)?;
    let hash = handshake_hash(&noise)?;
    let transport = noise.into_stateless_transport_mode()?;
    let verdict = authorize(&peer);
    let mut plain = vec![ACCEPTED];
    if let Err(reason) = &verdict {
        plain = vec![REFUSED];
        plain.extend_from_slice(&reason.as_bytes()[..reason.len().min(MAX_REASON)]);
    }
    let len = transport.write_message(0, &plain, &mut out)?;
    write_frame(&mut write, &out[..len]).await?;
    if let Err(reason) = verdict {
        return Err(HandshakeError::RefusedInitiator { key: peer, reason });
    }
    Ok(SecureStream {
        stream: pump(read, write, Arc::new(transport), 0, 1, on_fault),
        peer,
        handshake_hash: hash,
    })
}

/// Moves bytes between the application's end of a duplex pipe and the encrypted frames on the
/// socket, one task per direction (spawned on the current `LocalSet`), each with its own nonce
/// counter. A frame that does not authenticate ends both: the application reads end-of-stream
/// and its RPC system hangs up.
fn pump<R, W>(
    mut socket_read: R,
    mut socket_write: W,
    transport: Arc<snow::StatelessTransportState>,
    mut read_nonce: u64,
    mut write_nonce: u64,
    on_fault: impl FnOnce(ChannelFault) + 'static,
) -> DuplexStream
where
    R: AsyncRead + Unpin + 'static,
    W: AsyncWrite + Unpin + 'static,
{
    let (application, pumped) = tokio::io::duplex(2 * MAX_PLAINTEXT);
    let (mut plain_read, mut plain_write) = tokio::io::split(pumped);
    let inbound = Arc::clone(&transport);
    // When the application hangs up, the outbound task ends and stops the inbound one, so the
    // socket closes even if the peer keeps it open.
    let (hung_up, mut hang_up) = tokio::sync::oneshot::channel::<()>();
    tokio::task::spawn_local(async move {
        let mut frame = Box::new([0u8; MAX_FRAME]);
        let mut plain = vec![0u8; MAX_FRAME];
        loop {
            let read = tokio::select! {
                read = read_frame(&mut socket_read, &mut frame) => read,
                _ = &mut hang_up => break,
            };
            let Ok(Some(len)) = read else {
                break;
            };
            if len < TAG_LEN {
                on_fault(ChannelFault::Short(len));
                break;
            }
            let Ok(plain_len) = inbound.read_message(read_nonce, &frame[..len], &mut plain) else {
                on_fault(ChannelFault::Unauthenticated);
                break;
            };
            read_nonce += 1;
            if plain_write.write_all(&plain[..plain_len]).await.is_err() {
                break;
            }
        }
        // The pipe's other end stays open while the outbound task holds it: end it here, so
        // the application reads end-of-stream.
        let _ = plain_write.shutdown().await;
    });
    tokio::task::spawn_local(async move {
        let mut plain = vec![0u8; MAX_PLAINTEXT];
        let mut frame = vec![0u8; MAX_FRAME];
        loop {
            let len = match plain_read.read(&mut plain).await {
                Ok(0) | Err(_) => break,
                Ok(len) => len,
            };
            let Ok(frame_len) = transport.write_message(write_nonce, &plain[..len], &mut frame)
            else {
                break;
            };
            write_nonce += 1;
            // A peer that stops taking bytes would hold this task (and the socket) forever.
            let written = tokio::time::timeout(
                WRITE_DEADLINE,
                write_frame(&mut socket_write, &frame[..frame_len]),
            )
            .await;
            if !matches!(written, Ok(Ok(()))) {
                break;
            }
        }
        let _ = socket_write.shutdown().await;
        let _ = hung_up.send(());
    });
    application
}
