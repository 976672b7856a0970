//! The errors of this crate's two boundaries: reading untrusted bytes and writing a value that
//! breaks a limit.

use thiserror::Error;

/// Why untrusted bytes were rejected. Callers log the reason and count it; none of these is a
/// reason to stop a process.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The bytes are not a well-formed Cap'n Proto message, or break its traversal or nesting
    /// limits.
    #[error("malformed cap'n proto message: {0}")]
    Capnp(String),
    /// The message is larger than `limits::MAX_MESSAGE_BYTES`.
    #[error("message of {len} bytes exceeds the {max} byte limit")]
    MessageTooLarge {
        /// Bytes received.
        len: usize,
        /// Bytes allowed.
        max: usize,
    },
    /// An enum or union discriminant this version does not know.
    #[error("unknown {what} value {value}")]
    UnknownVariant {
        /// Which enum or union.
        what: &'static str,
        /// The discriminant read.
        value: u16,
    },
    /// A fixed-size field with the wrong length.
    #[error("{what} must be {expected} bytes, got {actual}")]
    WrongLength {
        /// Which field.
        what: &'static str,
        /// The length the protocol fixes.
        expected: usize,
        /// The length read.
        actual: usize,
    },
    /// A variable-size field or list longer than its limit.
    #[error("{what} has {actual} entries or bytes, more than the limit of {max}")]
    TooLong {
        /// Which field.
        what: &'static str,
        /// The limit.
        max: usize,
        /// The length read.
        actual: usize,
    },
    /// A required struct field is absent.
    #[error("missing field {0}")]
    Missing(&'static str),
    /// A value outside its domain.
    #[error(transparent)]
    Invalid(#[from] ValueError),
    /// A participant map names the same participant twice.
    #[error("participant {0} appears twice")]
    DuplicateParticipant(u16),
    /// Bytes left over after a complete value.
    #[error("{0} trailing bytes")]
    TrailingBytes(usize),
}

impl From<capnp::Error> for DecodeError {
    fn from(error: capnp::Error) -> Self {
        DecodeError::Capnp(error.to_string())
    }
}

impl From<capnp::NotInSchema> for DecodeError {
    fn from(error: capnp::NotInSchema) -> Self {
        DecodeError::UnknownVariant {
            what: "union or enum",
            value: error.0,
        }
    }
}

/// A value outside its domain: a zero participant, t > n, an amount above 21M BTC, a point
/// not on the curve, a script that is no standard address. Returned by the validating
/// constructors of this crate's types, and inside `DecodeError::Invalid` when read off the wire.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("invalid {what}: {reason}")]
pub struct ValueError {
    /// Which type or field.
    pub what: &'static str,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Why a value could not be encoded: it breaks a limit that every decoder enforces, so sending
/// it would only get it rejected.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodeError {
    /// A list or byte field longer than its limit.
    #[error("{what} has {actual} entries or bytes, more than the limit of {max}")]
    TooLong {
        /// Which field.
        what: &'static str,
        /// The limit.
        max: usize,
        /// The length given.
        actual: usize,
    },
    /// The encoded message would exceed `limits::MAX_MESSAGE_BYTES`.
    #[error("encoded message of {len} bytes exceeds the {max} byte limit")]
    MessageTooLarge {
        /// Encoded size.
        len: usize,
        /// Bytes allowed.
        max: usize,
    },
    /// Cap'n Proto refused to build the message.
    #[error("cap'n proto: {0}")]
    Capnp(String),
}

impl From<capnp::Error> for EncodeError {
    fn from(error: capnp::Error) -> Self {
        EncodeError::Capnp(error.to_string())
    }
}
