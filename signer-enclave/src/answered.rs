//! Answers kept for repeated requests: a step asked again with the same messages answers what it
//! answered the first time (its caller may have crashed before recording the answer), and one
//! asked again with other messages is refused, since a second answer from the same secret
//! randomness (nonces, polynomial coefficients) would reveal it.

use schema::messages::ParticipantMap;

use crate::plan_signing::SigningError;

/// A step's answer, with a digest of the messages it was computed from.
pub(crate) struct Answered<T> {
    /// `digest` of the messages taken.
    pub(crate) from: [u8; 32],
    /// The answer given.
    pub(crate) answer: T,
}

impl<T: Clone> Answered<T> {
    /// The same answer for the same messages; a refusal for others.
    pub(crate) fn again(&self, messages: &ParticipantMap) -> Result<T, SigningError> {
        if digest(messages) == self.from {
            Ok(self.answer.clone())
        } else {
            Err(SigningError::ConflictingRepeat)
        }
    }
}

/// A digest of a participant map: each participant and its blob, length-prefixed, in order.
pub(crate) fn digest(messages: &ParticipantMap) -> [u8; 32] {
    use bitcoin::hashes::{sha256, Hash, HashEngine};
    let mut engine = sha256::Hash::engine();
    for (participant, blob) in messages {
        engine.input(&participant.get().to_le_bytes());
        engine.input(&(blob.len() as u64).to_le_bytes());
        engine.input(blob);
    }
    sha256::Hash::from_engine(engine).to_byte_array()
}
