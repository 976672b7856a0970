//! Messages that keep their authenticity at rest: the coordinator signs each message it queues
//! for a validator (BIP340, with the key the processor pins as `coordinator.message_key`), over
//! the validator, the message id and the message's canonical Cap'n Proto encoding. The
//! processor checks the signature before it decodes the message, whatever the transport, so a
//! message altered in the coordinator's storage, moved to another validator's queue, or
//! replayed under another id is refused and never handled, even over an authenticated session.
//!
//! The canonical encoding (Cap'n Proto's, one segment, no slack) is signed rather than our own
//! decoding of it, so that a message this build cannot decode is still known to be the
//! coordinator's (skipped and counted) and told apart from a forged one (refused).

use bitcoin::secp256k1::{schnorr::Signature, Keypair, Message, Secp256k1, XOnlyPublicKey};
use capnp::message::HeapAllocator;
use thiserror::Error;

use crate::{
    generated::messages_capnp::{coordinator_envelope, coordinator_message},
    ids::MessageId,
    transcript::Transcript,
};

/// The transcript tag of message signatures. Changing it invalidates every queued message.
pub const MESSAGE_TAG: &str = "serai-processor/coordinator-message/v1";

/// Bytes of a message signature.
pub const SIGNATURE_LEN: usize = 64;

/// Why a queued message's signature was refused.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// The envelope carries no signature of the right length.
    #[error("message {} carries no signature of {SIGNATURE_LEN} bytes", id.0)]
    Missing {
        /// The message id.
        id: MessageId,
    },
    /// The message cannot be read to check its signature (beyond the reader's limits, or
    /// holding capabilities): not shown forged, but not handled either.
    #[error("message {} cannot be read to check its signature: {source}", id.0)]
    Canonical {
        /// The message id.
        id: MessageId,
        /// Why.
        source: capnp::Error,
    },
    /// The signature does not verify for this validator, id and message under the pinned key.
    #[error("message {} is not signed by the coordinator's message key for this validator and id (altered, moved or replayed at rest)", id.0)]
    Invalid {
        /// The message id.
        id: MessageId,
    },
}

impl SignatureError {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            SignatureError::Missing { .. } => "unsigned",
            SignatureError::Canonical { .. } => "unreadable",
            SignatureError::Invalid { .. } => "bad_signature",
        }
    }
}

/// A message brought to its canonical encoding: what is signed, and what is then decoded (a
/// copy of its own, so decoding does not spend the read budget of the answer it came in).
pub struct CanonicalMessage(capnp::message::Builder<HeapAllocator>);

impl CanonicalMessage {
    /// Copies `message` into its canonical encoding: one pass to size it, one to copy it.
    ///
    /// # Errors
    /// The message cannot be read (beyond the reader's limits) or holds capabilities.
    pub fn of(message: coordinator_message::Reader<'_>) -> Result<Self, capnp::Error> {
        // Canonicalizing into one segment asserts that the segment is large enough: size it
        // from the message itself (the canonical form is never larger), plus the root pointer.
        let words = message.total_size()?.word_count.saturating_add(1);
        let words = u32::try_from(words)
            .map_err(|_| capnp::Error::failed("message too large to canonicalize".into()))?;
        let mut canonical =
            capnp::message::Builder::new(HeapAllocator::new().first_segment_words(words));
        canonical.set_root_canonical(message)?;
        Ok(CanonicalMessage(canonical))
    }

    /// The message, to decode. The copy is as large as the message it came from and has no
    /// pointer read twice, so reading it needs no traversal limit of its own.
    ///
    /// # Errors
    /// Never for a copy this type made; the type says it could.
    pub fn reader(&self) -> Result<coordinator_message::Reader<'_>, capnp::Error> {
        self.0.get_root_as_reader()
    }

    /// The 32 bytes signed for this message as `id` to `validator`: the tagged hash
    /// (`MESSAGE_TAG`) of a transcript of the validator, the id (u64 LE) and the canonical
    /// encoding.
    pub fn digest(&self, validator: &[u8], id: MessageId) -> [u8; 32] {
        let segments = self.0.get_segments_for_output();
        let mut transcript = Transcript::new(MESSAGE_TAG);
        transcript.append("validator", validator);
        transcript.append("id", &id.0.to_le_bytes());
        transcript.append("segments", &(segments.len() as u64).to_le_bytes());
        for segment in segments.iter() {
            transcript.append("message", segment);
        }
        transcript.finish()
    }
}

/// Signs a written envelope for `validator` (the coordinator's side).
///
/// # Errors
/// The written message cannot be canonicalized.
pub fn sign_envelope(
    key: &Keypair,
    validator: &[u8],
    mut envelope: coordinator_envelope::Builder<'_>,
) -> Result<(), capnp::Error> {
    let id = MessageId(envelope.reborrow().get_id());
    let digest = CanonicalMessage::of(envelope.reborrow().get_message()?.into_reader())?
        .digest(validator, id);
    let signature = Secp256k1::signing_only()
        .sign_schnorr_no_aux_rand(&Message::from_digest(digest), key)
        .serialize();
    envelope.set_signature(&signature);
    Ok(())
}

/// Checks a received envelope's signature for `validator` under the pinned `key`, before its
/// message is decoded, and returns the canonical copy to decode.
///
/// # Errors
/// Unsigned, not canonicalizable, or not signed by `key` for this validator and id.
pub fn verify_envelope(
    key: &XOnlyPublicKey,
    validator: &[u8],
    envelope: coordinator_envelope::Reader<'_>,
) -> Result<CanonicalMessage, SignatureError> {
    let id = MessageId(envelope.get_id());
    let signature = envelope
        .get_signature()
        .ok()
        .and_then(|bytes| Signature::from_slice(bytes).ok())
        .ok_or(SignatureError::Missing { id })?;
    let canonical = envelope
        .get_message()
        .and_then(CanonicalMessage::of)
        .map_err(|source| SignatureError::Canonical { id, source })?;
    Secp256k1::verification_only()
        .verify_schnorr(
            &signature,
            &Message::from_digest(canonical.digest(validator, id)),
            key,
        )
        .map_err(|_| SignatureError::Invalid { id })?;
    Ok(canonical)
}
