//! Cap'n Proto encoding of every type in this crate, lossless in both directions.
//!
//! `decode` is the one door for untrusted bytes: it bounds the message size, Cap'n Proto's
//! traversal and nesting, every list and byte field, and checks every fixed length, enum
//! value, participant and amount, returning a `DecodeError` instead of panicking. `encode`
//! refuses values a decoder would refuse, so what encodes is what every peer accepts.

mod common;
mod messages;

use capnp::{message, serialize, traits::Owned};

use crate::{
    amount::Amount,
    error::{DecodeError, EncodeError},
    ids::Participant,
    limits::{
        MAX_BLOB_LEN, MAX_MESSAGE_BYTES, MAX_PARTICIPANTS, NESTING_LIMIT, TRAVERSAL_LIMIT_WORDS,
    },
    messages::ParticipantMap,
};

/// A type with a Cap'n Proto struct of its own.
pub trait Wire: Sized {
    /// The generated Cap'n Proto struct.
    type Capnp: Owned;

    /// Fills `builder` with this value.
    ///
    /// # Errors
    /// A list or byte field exceeds its limit (`crate::limits`).
    fn write(&self, builder: <Self::Capnp as Owned>::Builder<'_>) -> Result<(), EncodeError>;

    /// Reads a value, checking every limit and domain.
    ///
    /// # Errors
    /// The struct breaks a limit or holds a value outside its domain.
    fn read(reader: <Self::Capnp as Owned>::Reader<'_>) -> Result<Self, DecodeError>;
}

/// The Cap'n Proto bytes (standard stream framing) of a value.
///
/// # Errors
/// The value breaks a limit every decoder enforces.
pub fn encode<T: Wire>(value: &T) -> Result<Vec<u8>, EncodeError> {
    let mut message = message::Builder::new_default();
    value.write(message.init_root::<<T::Capnp as Owned>::Builder<'_>>())?;
    let bytes = serialize::write_message_to_words(&message);
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(EncodeError::MessageTooLarge {
            len: bytes.len(),
            max: MAX_MESSAGE_BYTES,
        });
    }
    Ok(bytes)
}

/// Reads a value from untrusted bytes. Never panics.
///
/// # Errors
/// The bytes are not exactly one well-formed message of `T` within every limit.
pub fn decode<T: Wire>(bytes: &[u8]) -> Result<T, DecodeError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(DecodeError::MessageTooLarge {
            len: bytes.len(),
            max: MAX_MESSAGE_BYTES,
        });
    }
    let mut rest = bytes;
    let message = serialize::read_message(&mut rest, reader_options())?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes(rest.len()));
    }
    let root = message.get_root::<<T::Capnp as Owned>::Reader<'_>>()?;
    T::read(root)
}

/// The limits every reader of untrusted messages uses, for `decode` and for RPC systems.
pub fn reader_options() -> message::ReaderOptions {
    let mut options = message::ReaderOptions::new();
    options
        .traversal_limit_in_words(Some(TRAVERSAL_LIMIT_WORDS))
        .nesting_limit(NESTING_LIMIT);
    options
}

/// Refuses to read a field longer than `max`.
fn check_read_len(what: &'static str, actual: usize, max: usize) -> Result<(), DecodeError> {
    if actual > max {
        return Err(DecodeError::TooLong { what, max, actual });
    }
    Ok(())
}

/// Refuses to write a field longer than `max`, and gives its length as Cap'n Proto wants it.
fn write_len(what: &'static str, actual: usize, max: usize) -> Result<u32, EncodeError> {
    let too_long = EncodeError::TooLong { what, max, actual };
    if actual > max {
        return Err(too_long);
    }
    u32::try_from(actual).map_err(|_| too_long)
}

/// Reads a variable-length byte field of at most `max` bytes.
fn read_bytes(
    data: capnp::Result<capnp::data::Reader<'_>>,
    what: &'static str,
    max: usize,
) -> Result<Vec<u8>, DecodeError> {
    let data = data?;
    check_read_len(what, data.len(), max)?;
    Ok(data.to_vec())
}

/// Fails unless a required struct field is present.
fn require(present: bool, what: &'static str) -> Result<(), DecodeError> {
    if present {
        Ok(())
    } else {
        Err(DecodeError::Missing(what))
    }
}

/// Reads an amount, refusing more than 21 million BTC.
fn read_amount(sats: u64) -> Result<Amount, DecodeError> {
    Ok(Amount::from_sat(sats)?)
}

/// Writes a participant map, sorted by participant, into a list of `participant_map_len`.
///
/// # Errors
/// A blob is longer than `MAX_BLOB_LEN`.
pub fn write_participant_map(
    map: &ParticipantMap,
    mut list: capnp::struct_list::Builder<
        '_,
        crate::generated::common_capnp::participant_data::Owned,
    >,
) -> Result<(), EncodeError> {
    for (index, (participant, data)) in (0u32..).zip(map) {
        write_len("participant data", data.len(), MAX_BLOB_LEN)?;
        let mut entry = list.reborrow().get(index);
        entry.set_participant(participant.get());
        entry.set_data(data);
    }
    Ok(())
}

/// The length of a participant map's list, checked.
///
/// # Errors
/// The map has more than `MAX_PARTICIPANTS` entries.
pub fn participant_map_len(map: &ParticipantMap) -> Result<u32, EncodeError> {
    write_len("participant map", map.len(), MAX_PARTICIPANTS)
}

/// A coordinator attestation: exactly 64 bytes.
///
/// # Errors
/// Another length.
pub fn read_attestation(
    bytes: &[u8],
) -> Result<crate::messages::coordinator::Attestation, DecodeError> {
    read_array(bytes, "attestation").map(crate::messages::coordinator::Attestation)
}

/// Exactly `N` bytes (a digest, a signature, a key), naming `what` otherwise.
///
/// # Errors
/// Another length.
pub fn read_array<const N: usize>(
    bytes: &[u8],
    what: &'static str,
) -> Result<[u8; N], DecodeError> {
    <[u8; N]>::try_from(bytes).map_err(|_| DecodeError::WrongLength {
        what,
        expected: N,
        actual: bytes.len(),
    })
}

/// Reads a participant map: at most `MAX_PARTICIPANTS` entries, strictly ascending by
/// participant (so each appears once and the encoding is canonical), blobs of at most
/// `MAX_BLOB_LEN` bytes.
///
/// # Errors
/// The list breaks one of those rules.
pub fn read_participant_map(
    list: capnp::Result<
        capnp::struct_list::Reader<'_, crate::generated::common_capnp::participant_data::Owned>,
    >,
) -> Result<ParticipantMap, DecodeError> {
    let list = list?;
    check_read_len("participant map", list.len() as usize, MAX_PARTICIPANTS)?;
    let mut map = ParticipantMap::new();
    let mut previous: Option<Participant> = None;
    for entry in list.iter() {
        let participant = Participant::new(entry.get_participant())?;
        if let Some(previous) = previous {
            if participant == previous {
                return Err(DecodeError::DuplicateParticipant(participant.get()));
            }
            if participant < previous {
                return Err(crate::error::ValueError {
                    what: "participant map",
                    reason: "participants not in ascending order",
                }
                .into());
            }
        }
        previous = Some(participant);
        map.insert(
            participant,
            read_bytes(entry.get_data(), "participant data", MAX_BLOB_LEN)?,
        );
    }
    Ok(map)
}
