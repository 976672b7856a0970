//! Signing a plan's transaction: one FROST session per input, every input's preprocess and
//! share travelling together in one blob, in input order. Nonces live only in memory; a
//! session the enclave restarted through is gone, and the coordinator re-attempts.
//!
//! The later steps are idempotent, as `signer.capnp` promises: asked again with the same
//! messages, a step answers what it answered the first time (the caller may have crashed
//! before recording it); asked again with different messages, it refuses, since a second share
//! from the same nonces would reveal the key share.
//!
//! Sessions start only from a `policy::PlanApproval` (whose records the caller committed), so
//! what is signed is always the enclave's own transaction's sighashes. Each completed
//! signature is checked by libsecp256k1's BIP340 verifier before it is used.

use std::collections::HashMap;

use bitcoin::{
    key::XOnlyPublicKey,
    secp256k1::{schnorr, Message, Secp256k1},
    taproot::Signature,
    TapSighashType, Transaction, Witness,
};
use modular_frost::{
    curve::Secp256k1 as Curve,
    sign::{
        AlgorithmMachine, AlgorithmSignMachine, AlgorithmSignatureMachine, PreprocessMachine,
        SignMachine, SignatureMachine, Writable,
    },
    FrostError, Participant as FrostParticipant, ThresholdKeys,
};
use rand_core::{CryptoRng, RngCore};
use schema::{messages::ParticipantMap, plan::Plan, sign_id::PlanSignId};
use thiserror::Error;

use crate::{
    answered::{digest, Answered},
    bip340::{algorithm, bip340_signature, taproot_keys, Bip340Schnorr, TaprootKeyError},
    policy::PlanApproval,
    sessions::Sessions,
};

/// A signing step that cannot proceed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SigningError {
    /// No session for this id and attempt (never preprocessed here, replaced, or lost to a
    /// restart).
    #[error("no signing session for this plan attempt")]
    UnknownSession,
    /// The session is at another step.
    #[error("signing session is not at this step")]
    WrongStep,
    /// A participant's blob does not parse for every input.
    #[error("malformed message from participant {0}")]
    Malformed(u16),
    /// FROST refused: a bad preprocess or share (by participant), or a bad signing set.
    #[error("FROST: {0}")]
    Frost(String),
    /// The keys cannot sign our outputs.
    #[error(transparent)]
    Keys(#[from] TaprootKeyError),
    /// A completed signature failed BIP340 verification; nothing is released.
    #[error("completed signature for input {0} does not verify")]
    InvalidSignature(usize),
    /// A step repeated with other messages than the first time.
    #[error("this step was already taken with other messages")]
    ConflictingRepeat,
}

impl From<FrostError> for SigningError {
    fn from(error: FrostError) -> Self {
        SigningError::Frost(error.to_string())
    }
}

type SignMachines = Vec<AlgorithmSignMachine<Curve, Bip340Schnorr>>;
type SignatureMachines = Vec<AlgorithmSignatureMachine<Curve, Bip340Schnorr>>;

enum Step {
    Preprocessed(SignMachines),
    Shared {
        machines: SignatureMachines,
        /// What the share answered, for a repeated call.
        answered: Answered<Vec<u8>>,
    },
    Completed(Answered<Transaction>),
}

struct Session {
    id: PlanSignId,
    approval: PlanApproval,
    /// Our preprocess, answered again to a repeated request before any share.
    preprocess: Vec<u8>,
    step: Step,
}

/// Most plan signing sessions open at once (a 520-input session holds about a megabyte); the
/// oldest is evicted for a new one.
pub const MAX_PLAN_SESSIONS: usize = 32;

/// The plan signing sessions in progress, at most one attempt per plan, at most
/// `MAX_PLAN_SESSIONS` plans.
pub struct PlanSigning {
    sessions: Sessions<schema::hashes::PlanId, Session>,
    evicted: u64,
}

impl Default for PlanSigning {
    fn default() -> Self {
        PlanSigning {
            sessions: Sessions::new(MAX_PLAN_SESSIONS),
            evicted: 0,
        }
    }
}

impl PlanSigning {
    /// Starts the approved attempt, returning our preprocess for every input. Replaces any
    /// earlier attempt of the plan.
    ///
    /// # Errors
    /// The keys cannot sign the plan's inputs.
    pub fn preprocess<R: RngCore + CryptoRng>(
        &mut self,
        approval: PlanApproval,
        plan: &Plan,
        keys: &ThresholdKeys<Curve>,
        rng: &mut R,
    ) -> Result<Vec<u8>, SigningError> {
        let mut machines = Vec::with_capacity(plan.inputs.len());
        let mut blob = Vec::new();
        for input in &plan.inputs {
            let keys = taproot_keys(keys.clone(), input.kind)?;
            let (machine, preprocess) =
                AlgorithmMachine::new(algorithm(), keys).preprocess(&mut *rng);
            preprocess
                .write(&mut blob)
                .map_err(|_| SigningError::Frost("preprocess encoding".into()))?;
            machines.push(machine);
        }
        let id = approval.marker;
        let evicted = self.sessions.insert(
            id.id,
            Session {
                id,
                approval,
                preprocess: blob.clone(),
                step: Step::Preprocessed(machines),
            },
        );
        self.evicted += u64::try_from(evicted).unwrap_or(u64::MAX);
        Ok(blob)
    }

    /// Our preprocess of attempt `id`, while it waits for the others' preprocesses: a repeated
    /// request (a message retried after a later one in it failed) gets the same commitments,
    /// whose nonces still sign at most one share.
    pub fn preprocessed(&self, id: &PlanSignId) -> Option<Vec<u8>> {
        let session = self.session(id).ok()?;
        matches!(session.step, Step::Preprocessed(_)).then(|| session.preprocess.clone())
    }

    /// Takes the other signers' preprocesses and returns our share for every input; the same
    /// share again when asked again with the same preprocesses.
    ///
    /// # Errors
    /// No such session at this step, a malformed preprocess, FROST refusing one, or a repeat
    /// with other preprocesses.
    pub fn share(
        &mut self,
        id: &PlanSignId,
        preprocesses: &ParticipantMap,
    ) -> Result<Vec<u8>, SigningError> {
        match &self.session(id)?.step {
            Step::Preprocessed(_) => {}
            Step::Shared { answered, .. } => return answered.again(preprocesses),
            Step::Completed(_) => return Err(SigningError::WrongStep),
        }
        let mut session = self.take(id)?;
        let Step::Preprocessed(machines) = session.step else {
            return Err(SigningError::WrongStep);
        };
        let mut readers = readers(preprocesses)?;
        let mut blob = Vec::new();
        let mut next = Vec::with_capacity(machines.len());
        for (machine, sighash) in machines.into_iter().zip(&session.approval.built.sighashes) {
            let mut these = HashMap::new();
            for (participant, reader) in &mut readers {
                let preprocess = machine
                    .read_preprocess(reader)
                    .map_err(|_| SigningError::Malformed(u16::from(*participant)))?;
                these.insert(*participant, preprocess);
            }
            let (machine, share) = machine.sign(these, sighash)?;
            share
                .write(&mut blob)
                .map_err(|_| SigningError::Frost("share encoding".into()))?;
            next.push(machine);
        }
        finished(&readers)?;
        session.step = Step::Shared {
            machines: next,
            answered: Answered {
                from: digest(preprocesses),
                answer: blob.clone(),
            },
        };
        self.sessions.insert(id.id, session);
        Ok(blob)
    }

    /// Takes the other signers' shares and returns the signed transaction, every signature
    /// verified; the same transaction again when asked again with the same shares.
    ///
    /// # Errors
    /// No such session at this step, a malformed or invalid share, a signature that does not
    /// verify, or a repeat with other shares.
    pub fn complete(
        &mut self,
        id: &PlanSignId,
        shares: &ParticipantMap,
    ) -> Result<Transaction, SigningError> {
        match &self.session(id)?.step {
            Step::Shared { .. } => {}
            Step::Completed(answered) => return answered.again(shares),
            Step::Preprocessed(_) => return Err(SigningError::WrongStep),
        }
        let mut session = self.take(id)?;
        let Step::Shared { machines, .. } = session.step else {
            return Err(SigningError::WrongStep);
        };
        let mut readers = readers(shares)?;
        let built = &session.approval.built;
        let mut transaction = built.transaction.clone();
        let secp = Secp256k1::verification_only();
        for (index, machine) in machines.into_iter().enumerate() {
            let mut these = HashMap::new();
            for (participant, reader) in &mut readers {
                let share = machine
                    .read_share(reader)
                    .map_err(|_| SigningError::Malformed(u16::from(*participant)))?;
                these.insert(*participant, share);
            }
            let signature = machine.complete(these)?;
            let signature = bip340_signature(&signature.R, &signature.s);
            let verified = verify(&secp, built, index, &signature)
                .ok_or(SigningError::InvalidSignature(index))?;
            if let Some(input) = transaction.input.get_mut(index) {
                input.witness = Witness::p2tr_key_spend(&Signature {
                    signature: verified,
                    sighash_type: TapSighashType::Default,
                });
            }
        }
        finished(&readers)?;
        session.step = Step::Completed(Answered {
            from: digest(shares),
            answer: transaction.clone(),
        });
        self.sessions.insert(id.id, session);
        Ok(transaction)
    }

    /// How many sessions were evicted to make room, since the enclave started.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// How many sessions are open.
    pub fn open(&self) -> usize {
        self.sessions.len()
    }

    fn session(&self, id: &PlanSignId) -> Result<&Session, SigningError> {
        self.sessions
            .get(&id.id)
            .filter(|session| session.id == *id)
            .ok_or(SigningError::UnknownSession)
    }

    fn take(&mut self, id: &PlanSignId) -> Result<Session, SigningError> {
        match self.sessions.remove(&id.id) {
            Some(session) if session.id == *id => Ok(session),
            Some(other) => {
                self.sessions.insert(id.id, other);
                Err(SigningError::UnknownSession)
            }
            None => Err(SigningError::UnknownSession),
        }
    }
}

fn readers(map: &ParticipantMap) -> Result<Vec<(FrostParticipant, &[u8])>, SigningError> {
    map.iter()
        .map(|(participant, blob)| {
            FrostParticipant::new(participant.get())
                .map(|frost| (frost, blob.as_slice()))
                .ok_or(SigningError::Malformed(participant.get()))
        })
        .collect()
}

/// Every blob must have been read to its end.
fn finished(readers: &[(FrostParticipant, &[u8])]) -> Result<(), SigningError> {
    match readers.iter().find(|(_, rest)| !rest.is_empty()) {
        Some((participant, _)) => Err(SigningError::Malformed(u16::from(*participant))),
        None => Ok(()),
    }
}

fn verify(
    secp: &Secp256k1<bitcoin::secp256k1::VerifyOnly>,
    built: &schema::transaction::BuiltTransaction,
    index: usize,
    signature: &[u8; 64],
) -> Option<schnorr::Signature> {
    let script = built.prevouts.get(index)?.script_pubkey.as_bytes();
    let key = XOnlyPublicKey::from_slice(script.get(2..34)?).ok()?;
    let sighash = built.sighashes.get(index)?;
    let signature = schnorr::Signature::from_slice(signature).ok()?;
    secp.verify_schnorr(&signature, &Message::from_digest(*sighash), &key)
        .ok()
        .map(|()| signature)
}
