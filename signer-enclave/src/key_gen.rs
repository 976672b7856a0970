//! Distributed key generation for both keys of a validator set, driven by the coordinator's
//! `key_gen` messages: the batch key on Ristretto and the network key on secp256k1, each a
//! PedPoP DKG (`dkg-pedpop`) with a context unique to (set, attempt, curve).
//!
//! The blobs exchanged carry both keys' messages: `len(batch part) (u32 LE) || batch part ||
//! network part`. A participant whose commitments or shares are invalid is blamed (with the
//! proof when the DKG gives one), never trusted; a newer attempt for a set replaces the old one
//! in progress, an older or repeated one is refused (attempts only increase), and at most
//! `MAX_SESSIONS` sets generate keys at once. Completed keys stay here until the caller seals
//! them (see `custody`). Which set shapes are accepted is the caller's check
//! (`schema::protocol::accepts_set_shape`).

use std::collections::{BTreeMap, HashMap};

use bitcoin::hashes::{sha256, Hash, HashEngine};
use ciphersuite::Ristretto;
use ciphersuite::{group::GroupEncoding, Ciphersuite};
use dkg_pedpop::{
    Commitments, EncryptedMessage, EncryptionKeyMessage, KeyGenMachine, KeyMachine,
    Participant as DkgParticipant, PedPoPError, SecretShare, SecretShareMachine, ThresholdKeys,
    ThresholdParams as DkgParams,
};
use modular_frost::curve::Secp256k1;
use rand_core::{CryptoRng, RngCore};
use schema::{
    ids::{KeyGenId, Participant, ThresholdParams, ValidatorSet},
    keys::{BatchKey, NetworkKey},
    messages::{
        key_gen::{CoordinatorMessage, ProcessorMessage},
        ParticipantMap,
    },
};
use thiserror::Error;

use crate::answered::{digest, Answered};

/// A key generation message that cannot be acted on. Not a participant's fault (that is a
/// `Blame`): the coordinator sent something out of order or for an attempt we do not have.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyGenError {
    /// No attempt with this id is in progress (never started, replaced, or finished).
    #[error("no key generation in progress for {0:?}")]
    UnknownAttempt(KeyGenId),
    /// The message belongs to another round than the attempt is in.
    #[error("key generation {0:?} is not waiting for this message")]
    WrongRound(KeyGenId),
    /// The participants in the message are not everyone else.
    #[error("key generation {id:?}: {reason}")]
    Participants {
        /// The attempt.
        id: KeyGenId,
        /// What is wrong.
        reason: String,
    },
    /// The threshold parameters are unusable.
    #[error("invalid threshold parameters")]
    Params,
    /// An attempt at or below one already started for the set.
    #[error("key generation {id:?}: attempt {started} was already started")]
    StaleAttempt {
        /// The attempt asked.
        id: KeyGenId,
        /// The highest attempt started.
        started: u32,
    },
    /// As many sets generate keys as are allowed at once.
    #[error("{0} key generations are in progress already")]
    TooManySessions(usize),
}

/// Most validator sets generating keys at once: a validator is in the current set and the next.
pub const MAX_SESSIONS: usize = 4;

/// Most sets whose highest started attempt is remembered; beyond, the set of the lowest
/// session is forgotten (a replay of one of its old attempts would only add a candidate pair,
/// which never replaces another). Bounds what a scanner starting and abandoning generations for
/// ever new sets can make the enclave hold.
pub const MAX_REMEMBERED_SETS: usize = 64;

/// The two threshold keys of a completed key generation.
pub struct GeneratedKeys {
    /// Signs Batches.
    pub batch: ThresholdKeys<Ristretto>,
    /// Holds the network's funds.
    pub network: ThresholdKeys<Secp256k1>,
}

enum Round {
    Commitments {
        batch: SecretShareMachine<Ristretto>,
        network: SecretShareMachine<Secp256k1>,
    },
    Shares {
        batch: KeyMachine<Ristretto>,
        network: KeyMachine<Secp256k1>,
        /// The shares sent, for a repeated `Commitments`.
        answered: Answered<ParticipantMap>,
    },
}

struct InProgress {
    id: KeyGenId,
    params: DkgParams,
    /// Our commitments, for a repeated `GenerateKey`.
    commitments: Vec<u8>,
    round: Round,
}

/// Every key generation this enclave takes part in.
#[derive(Default)]
pub struct KeyGen {
    in_progress: HashMap<ValidatorSet, InProgress>,
    /// The highest attempt started for each set, since the enclave started, for at most
    /// `MAX_REMEMBERED_SETS` sets.
    started: BTreeMap<ValidatorSet, u32>,
}

/// What a participant did wrong, found while reading or using its messages.
struct Blame {
    participant: Participant,
    evidence: Vec<u8>,
}

impl KeyGen {
    /// Handles one coordinator message, returning the messages to send back.
    ///
    /// # Errors
    /// The message does not fit any attempt in progress (see `KeyGenError`). Participants'
    /// faults are not errors: they produce `Blame`.
    pub fn handle<R: RngCore + CryptoRng>(
        &mut self,
        message: CoordinatorMessage,
        rng: &mut R,
    ) -> Result<(Vec<ProcessorMessage>, Option<GeneratedKeys>), KeyGenError> {
        match message {
            CoordinatorMessage::GenerateKey { id, params } => {
                if let Some(attempt) = self.in_progress.get(&id.set).filter(|a| a.id == id) {
                    // Asked again (the caller crashed before recording the answer): the same
                    // commitments, never new coefficients for the same attempt.
                    return Ok((
                        vec![ProcessorMessage::Commitments {
                            id,
                            commitments: attempt.commitments.clone(),
                        }],
                        None,
                    ));
                }
                if let Some(&started) = self.started.get(&id.set) {
                    if id.attempt.0 <= started {
                        return Err(KeyGenError::StaleAttempt { id, started });
                    }
                }
                if !self.in_progress.contains_key(&id.set) && self.in_progress.len() >= MAX_SESSIONS
                {
                    return Err(KeyGenError::TooManySessions(self.in_progress.len()));
                }
                let params = dkg_params(params)?;
                self.started.insert(id.set, id.attempt.0);
                while self.started.len() > MAX_REMEMBERED_SETS {
                    self.started.pop_first();
                }
                let (batch, batch_commitments) =
                    KeyGenMachine::<Ristretto>::new(params, context(&id, b"ristretto"))
                        .generate_coefficients(&mut *rng);
                let (network, network_commitments) =
                    KeyGenMachine::<Secp256k1>::new(params, context(&id, b"secp256k1"))
                        .generate_coefficients(&mut *rng);
                let commitments = pair(
                    &batch_commitments.serialize(),
                    &network_commitments.serialize(),
                );
                self.in_progress.insert(
                    id.set,
                    InProgress {
                        id,
                        params,
                        commitments: commitments.clone(),
                        round: Round::Commitments { batch, network },
                    },
                );
                Ok((
                    vec![ProcessorMessage::Commitments { id, commitments }],
                    None,
                ))
            }
            CoordinatorMessage::Commitments { id, commitments } => {
                if let Some(InProgress {
                    round: Round::Shares { answered, .. },
                    ..
                }) = self.in_progress.get(&id.set).filter(|a| a.id == id)
                {
                    let shares =
                        answered
                            .again(&commitments)
                            .map_err(|_| KeyGenError::Participants {
                                id,
                                reason: "commitments repeated with other contents".into(),
                            })?;
                    return Ok((vec![ProcessorMessage::Shares { id, shares }], None));
                }
                let attempt = self.take(&id)?;
                let Round::Commitments { batch, network } = attempt.round else {
                    self.in_progress.insert(id.set, attempt);
                    return Err(KeyGenError::WrongRound(id));
                };
                let params = attempt.params;
                let parsed = parse_each(&commitments, |bytes| {
                    Ok((
                        read_all(bytes.0, |r| {
                            EncryptionKeyMessage::<Ristretto, Commitments<Ristretto>>::read(
                                r, params,
                            )
                        })?,
                        read_all(bytes.1, |r| {
                            EncryptionKeyMessage::<Secp256k1, Commitments<Secp256k1>>::read(
                                r, params,
                            )
                        })?,
                    ))
                });
                let (batch_commitments, network_commitments) = match parsed {
                    Ok(maps) => maps,
                    Err(blame) => return Ok((vec![blame_message(id, blame)], None)),
                };
                let batch = batch.generate_secret_shares(&mut *rng, batch_commitments);
                let network = network.generate_secret_shares(&mut *rng, network_commitments);
                let ((batch, batch_shares), (network, network_shares)) = match (batch, network) {
                    (Ok(batch), Ok(network)) => (batch, network),
                    (Err(error), _) => return pedpop_failure(id, error),
                    (_, Err(error)) => return pedpop_failure(id, error),
                };
                let mut shares = ParticipantMap::new();
                for (to, batch_share) in &batch_shares {
                    let network_share =
                        network_shares
                            .get(to)
                            .ok_or_else(|| KeyGenError::Participants {
                                id,
                                reason: "shares for different participants".into(),
                            })?;
                    shares.insert(
                        our_participant(*to)?,
                        pair(&batch_share.serialize(), &network_share.serialize()),
                    );
                }
                self.in_progress.insert(
                    id.set,
                    InProgress {
                        id,
                        params,
                        commitments: attempt.commitments,
                        round: Round::Shares {
                            batch,
                            network,
                            answered: Answered {
                                from: digest(&commitments),
                                answer: shares.clone(),
                            },
                        },
                    },
                );
                Ok((vec![ProcessorMessage::Shares { id, shares }], None))
            }
            CoordinatorMessage::Shares { id, shares } => {
                let attempt = self.take(&id)?;
                let Round::Shares { batch, network, .. } = attempt.round else {
                    self.in_progress.insert(id.set, attempt);
                    return Err(KeyGenError::WrongRound(id));
                };
                let params = attempt.params;
                let parsed = parse_each(&shares, |bytes| {
                    Ok((
                        read_all(bytes.0, |r| {
                            EncryptedMessage::<Ristretto, SecretShare<<Ristretto as Ciphersuite>::F>>::read(r, params)
                        })?,
                        read_all(bytes.1, |r| {
                            EncryptedMessage::<Secp256k1, SecretShare<<Secp256k1 as Ciphersuite>::F>>::read(r, params)
                        })?,
                    ))
                });
                let (batch_shares, network_shares) = match parsed {
                    Ok(maps) => maps,
                    Err(blame) => return Ok((vec![blame_message(id, blame)], None)),
                };
                let batch = batch.calculate_share(&mut *rng, batch_shares);
                let network = network.calculate_share(&mut *rng, network_shares);
                let (batch, network) = match (batch, network) {
                    (Ok(batch), Ok(network)) => (batch.complete(), network.complete()),
                    (Err(error), _) => return pedpop_failure(id, error),
                    (_, Err(error)) => return pedpop_failure(id, error),
                };
                let batch_key = BatchKey::from_slice(batch.group_key().to_bytes().as_ref())
                    .map_err(|_| KeyGenError::Params)?;
                let network_key = NetworkKey::from_slice(network.group_key().to_bytes().as_ref())
                    .map_err(|_| KeyGenError::Params)?;
                Ok((
                    vec![ProcessorMessage::GeneratedKeyPair {
                        id,
                        batch_key,
                        network_key,
                    }],
                    Some(GeneratedKeys { batch, network }),
                ))
            }
            // Repairs and refreshes are the enclave's `resharing`, never a key generation.
            other => Err(KeyGenError::WrongRound(other.id())),
        }
    }

    /// How many key generations are in progress.
    pub fn in_progress(&self) -> usize {
        self.in_progress.len()
    }

    /// Removes the attempt `id` names, if it is the one in progress for its set.
    fn take(&mut self, id: &KeyGenId) -> Result<InProgress, KeyGenError> {
        match self.in_progress.remove(&id.set) {
            Some(attempt) if attempt.id == *id => Ok(attempt),
            Some(other) => {
                self.in_progress.insert(id.set, other);
                Err(KeyGenError::UnknownAttempt(*id))
            }
            None => Err(KeyGenError::UnknownAttempt(*id)),
        }
    }
}

/// A context unique to (set, attempt, curve).
fn context(id: &KeyGenId, curve: &[u8]) -> [u8; 32] {
    let mut engine = sha256::HashEngine::default();
    engine.input(b"serai-processor/dkg/v1");
    engine.input(&id.set.session.0.to_le_bytes());
    engine.input(&[id.set.network.code()]);
    engine.input(&id.attempt.0.to_le_bytes());
    engine.input(curve);
    sha256::Hash::from_engine(engine).to_byte_array()
}

fn dkg_params(params: ThresholdParams) -> Result<DkgParams, KeyGenError> {
    let i = DkgParticipant::new(params.i().get()).ok_or(KeyGenError::Params)?;
    DkgParams::new(params.t(), params.n(), i).map_err(|_| KeyGenError::Params)
}

fn dkg_participant(participant: Participant) -> Option<DkgParticipant> {
    DkgParticipant::new(participant.get())
}

fn our_participant(participant: DkgParticipant) -> Result<Participant, KeyGenError> {
    Participant::new(u16::from(participant)).map_err(|_| KeyGenError::Params)
}

fn pair(batch: &[u8], network: &[u8]) -> Vec<u8> {
    let len = u32::try_from(batch.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(4 + batch.len() + network.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(batch);
    out.extend_from_slice(network);
    out
}

fn split_pair(blob: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = blob.split_first_chunk::<4>()?;
    let len = usize::try_from(u32::from_le_bytes(*len)).ok()?;
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// Reads one value that must use every byte.
fn read_all<T>(
    mut bytes: &[u8],
    read: impl FnOnce(&mut &[u8]) -> std::io::Result<T>,
) -> Result<T, ()> {
    let value = read(&mut bytes).map_err(|_| ())?;
    bytes.is_empty().then_some(value).ok_or(())
}

/// Parses every participant's paired blob, blaming the first whose blob does not parse.
#[allow(clippy::type_complexity)]
fn parse_each<A, B>(
    map: &ParticipantMap,
    parse: impl Fn((&[u8], &[u8])) -> Result<(A, B), ()>,
) -> Result<(HashMap<DkgParticipant, A>, HashMap<DkgParticipant, B>), Blame> {
    let mut first = HashMap::new();
    let mut second = HashMap::new();
    for (participant, blob) in map {
        let Some(dkg) = dkg_participant(*participant) else {
            continue;
        };
        let blame = || Blame {
            participant: *participant,
            evidence: Vec::new(),
        };
        let (a, b) = split_pair(blob)
            .ok_or(())
            .and_then(&parse)
            .map_err(|()| blame())?;
        first.insert(dkg, a);
        second.insert(dkg, b);
    }
    Ok((first, second))
}

fn blame_message(id: KeyGenId, blame: Blame) -> ProcessorMessage {
    ProcessorMessage::Blame {
        id,
        participant: blame.participant,
        evidence: blame.evidence,
    }
}

/// A DKG failure: a participant's fault becomes `Blame`; anything else is an error.
fn pedpop_failure<C: Ciphersuite>(
    id: KeyGenId,
    error: PedPoPError<C>,
) -> Result<(Vec<ProcessorMessage>, Option<GeneratedKeys>), KeyGenError> {
    let blame = match error {
        PedPoPError::InvalidCommitments(participant) => Blame {
            participant: our_participant(participant)?,
            evidence: Vec::new(),
        },
        PedPoPError::InvalidShare { participant, blame } => Blame {
            participant: our_participant(participant)?,
            evidence: blame.map(|proof| proof.serialize()).unwrap_or_default(),
        },
        PedPoPError::IncorrectAmountOfParticipants { expected, found } => {
            return Err(KeyGenError::Participants {
                id,
                reason: format!("expected {expected} participants, found {found}"),
            })
        }
        PedPoPError::MissingParticipant(participant) => {
            return Err(KeyGenError::Participants {
                id,
                reason: format!("participant {} missing", u16::from(participant)),
            })
        }
        PedPoPError::DkgError(_) => {
            return Err(KeyGenError::Participants {
                id,
                reason: "participant set rejected by the DKG".into(),
            })
        }
    };
    Ok((vec![blame_message(id, blame)], None))
}
