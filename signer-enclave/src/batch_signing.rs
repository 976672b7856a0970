//! Signing a Batch with the batch key: FROST over Ristretto producing a Schnorrkel (sr25519)
//! signature (`frost-schnorrkel`), in Substrate's signing context, over `Batch::message`.
//! Sessions start only from a `policy::BatchApproval`; nonces live only in memory; the
//! completed signature is verified with `schnorrkel` before it is released. Repeated steps
//! answer the same for the same messages and refuse others (see `plan_signing`).

use std::collections::HashMap;

use ciphersuite::Ristretto;
use frost_schnorrkel::{
    frost::{
        sign::{
            AlgorithmMachine, AlgorithmSignMachine, AlgorithmSignatureMachine, PreprocessMachine,
            SignMachine, SignatureMachine, Writable,
        },
        Participant as FrostParticipant, ThresholdKeys,
    },
    Schnorrkel,
};
use rand_core::{CryptoRng, RngCore};
use schema::{
    batch::{Batch, BatchSignature, SignedBatch},
    ids::{BatchId, NetworkId},
    messages::ParticipantMap,
    protocol::BATCH_WINDOW,
    sign_id::BatchSignId,
};

use crate::{
    answered::{digest, Answered},
    plan_signing::SigningError,
    policy::BatchApproval,
    sessions::Sessions,
};

pub use schema::batch::BATCH_SIGNING_CONTEXT;

enum Step {
    Preprocessed(Box<AlgorithmSignMachine<Ristretto, Schnorrkel>>),
    Shared {
        machine: Box<AlgorithmSignatureMachine<Ristretto, Schnorrkel>>,
        answered: Answered<Vec<u8>>,
    },
    Completed(Answered<SignedBatch>),
}

struct Session {
    id: BatchSignId,
    batch: Batch,
    /// Our preprocess, answered again to a repeated request before any share.
    preprocess: Vec<u8>,
    step: Step,
}

/// Most Batch signing sessions open at once; the oldest is evicted for a new one. New Batches
/// are preprocessed only within `BATCH_WINDOW` ids, so twice that leaves room for the window
/// and for attempts at ids the window has just left.
pub const MAX_BATCH_SESSIONS: usize = 2 * BATCH_WINDOW as usize;

/// The batch signing sessions in progress, at most one attempt per batch, at most
/// `MAX_BATCH_SESSIONS` batches.
pub struct BatchSigning {
    sessions: Sessions<(NetworkId, BatchId), Session>,
    evicted: u64,
}

impl Default for BatchSigning {
    fn default() -> Self {
        BatchSigning {
            sessions: Sessions::new(MAX_BATCH_SESSIONS),
            evicted: 0,
        }
    }
}

impl BatchSigning {
    /// Starts the approved attempt, returning our preprocess. Replaces any earlier attempt.
    pub fn preprocess<R: RngCore + CryptoRng>(
        &mut self,
        approval: &BatchApproval,
        batch: Batch,
        keys: &ThresholdKeys<Ristretto>,
        rng: &mut R,
    ) -> Result<Vec<u8>, SigningError> {
        let (machine, preprocess) =
            AlgorithmMachine::new(Schnorrkel::new(BATCH_SIGNING_CONTEXT), keys.clone())
                .preprocess(rng);
        let mut blob = Vec::new();
        preprocess
            .write(&mut blob)
            .map_err(|_| SigningError::Frost("preprocess encoding".into()))?;
        let id = approval.marker;
        let evicted = self.sessions.insert(
            (id.id.network, id.id.batch),
            Session {
                id,
                batch,
                preprocess: blob.clone(),
                step: Step::Preprocessed(Box::new(machine)),
            },
        );
        self.evicted += u64::try_from(evicted).unwrap_or(u64::MAX);
        Ok(blob)
    }

    /// Our preprocess of attempt `id` of exactly `batch`, while it waits for the others'
    /// preprocesses: a repeated request gets the same commitments, whose nonce still signs at
    /// most one share.
    pub fn preprocessed(&self, id: &BatchSignId, batch: &Batch) -> Option<Vec<u8>> {
        let session = self.session(id).ok()?;
        (matches!(session.step, Step::Preprocessed(_)) && session.batch == *batch)
            .then(|| session.preprocess.clone())
    }

    /// Takes the other signers' preprocesses and returns our share; the same share again when
    /// asked again with the same preprocesses.
    ///
    /// # Errors
    /// No such session at this step, a malformed preprocess, FROST refusing one, or a repeat
    /// with other preprocesses.
    pub fn share(
        &mut self,
        id: &BatchSignId,
        preprocesses: &ParticipantMap,
    ) -> Result<Vec<u8>, SigningError> {
        match &self.session(id)?.step {
            Step::Preprocessed(_) => {}
            Step::Shared { answered, .. } => return answered.again(preprocesses),
            Step::Completed(_) => return Err(SigningError::WrongStep),
        }
        let mut session = self.take(id)?;
        let Step::Preprocessed(machine) = session.step else {
            return Err(SigningError::WrongStep);
        };
        let mut these = HashMap::new();
        for (participant, blob) in preprocesses {
            let frost = frost_participant(participant.get())?;
            let mut reader = blob.as_slice();
            let preprocess = machine
                .read_preprocess(&mut reader)
                .ok()
                .filter(|_| reader.is_empty())
                .ok_or(SigningError::Malformed(participant.get()))?;
            these.insert(frost, preprocess);
        }
        let (machine, share) = machine
            .sign(these, &session.batch.message())
            .map_err(|error| SigningError::Frost(error.to_string()))?;
        let mut blob = Vec::new();
        share
            .write(&mut blob)
            .map_err(|_| SigningError::Frost("share encoding".into()))?;
        session.step = Step::Shared {
            machine: Box::new(machine),
            answered: Answered {
                from: digest(preprocesses),
                answer: blob.clone(),
            },
        };
        self.sessions.insert((id.id.network, id.id.batch), session);
        Ok(blob)
    }

    /// Takes the other signers' shares and returns the signed batch, its signature verified;
    /// the same again when asked again with the same shares.
    ///
    /// # Errors
    /// No such session at this step, a malformed or invalid share, a signature that does not
    /// verify, or a repeat with other shares.
    pub fn complete(
        &mut self,
        id: &BatchSignId,
        shares: &ParticipantMap,
    ) -> Result<SignedBatch, SigningError> {
        match &self.session(id)?.step {
            Step::Shared { .. } => {}
            Step::Completed(answered) => return answered.again(shares),
            Step::Preprocessed(_) => return Err(SigningError::WrongStep),
        }
        let mut session = self.take(id)?;
        let Step::Shared { machine, .. } = session.step else {
            return Err(SigningError::WrongStep);
        };
        let mut these = HashMap::new();
        for (participant, blob) in shares {
            let frost = frost_participant(participant.get())?;
            let mut reader = blob.as_slice();
            let share = machine
                .read_share(&mut reader)
                .ok()
                .filter(|_| reader.is_empty())
                .ok_or(SigningError::Malformed(participant.get()))?;
            these.insert(frost, share);
        }
        let signature = machine
            .complete(these)
            .map_err(|error| SigningError::Frost(error.to_string()))?;
        let key = schnorrkel::PublicKey::from_bytes(id.key.as_bytes())
            .map_err(|_| SigningError::InvalidSignature(0))?;
        key.verify_simple(BATCH_SIGNING_CONTEXT, &session.batch.message(), &signature)
            .map_err(|_| SigningError::InvalidSignature(0))?;
        let signed = SignedBatch {
            batch: session.batch.clone(),
            signature: BatchSignature(signature.to_bytes()),
        };
        session.step = Step::Completed(Answered {
            from: digest(shares),
            answer: signed.clone(),
        });
        self.sessions.insert((id.id.network, id.id.batch), session);
        Ok(signed)
    }

    /// How many sessions were evicted to make room, since the enclave started.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// How many sessions are open.
    pub fn open(&self) -> usize {
        self.sessions.len()
    }

    fn session(&self, id: &BatchSignId) -> Result<&Session, SigningError> {
        self.sessions
            .get(&(id.id.network, id.id.batch))
            .filter(|session| session.id == *id)
            .ok_or(SigningError::UnknownSession)
    }

    fn take(&mut self, id: &BatchSignId) -> Result<Session, SigningError> {
        let slot = (id.id.network, id.id.batch);
        match self.sessions.remove(&slot) {
            Some(session) if session.id == *id => Ok(session),
            Some(other) => {
                self.sessions.insert(slot, other);
                Err(SigningError::UnknownSession)
            }
            None => Err(SigningError::UnknownSession),
        }
    }
}

fn frost_participant(index: u16) -> Result<FrostParticipant, SigningError> {
    FrostParticipant::new(index).ok_or(SigningError::Malformed(index))
}
