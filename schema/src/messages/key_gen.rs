//! Distributed key generation messages, and the repair and refresh of the shares it made
//! (driven by the coordinator the same way, each under `KeyGenId`s of its own: a set's
//! attempts of one kind only increase).

use super::{coordinator::Attestation, ParticipantMap};
use crate::{
    ids::{KeyGenId, Participant, ThresholdParams},
    keys::{BatchKey, KeyPair, NetworkKey},
    transcript::Transcript,
};

/// The transcript tag of repair attestations. Changing it invalidates every attestation.
pub const REPAIR_TAG: &str = "serai-processor/share-repair/v1";
/// The transcript tag of refresh attestations.
pub const REFRESH_TAG: &str = "serai-processor/share-refresh/v1";
/// The transcript tag of refresh confirmations.
pub const REFRESH_CONFIRM_TAG: &str = "serai-processor/share-refresh-confirm/v1";
/// The transcript tag of what a repaired enclave's identity signs: its fresh keys.
pub const REPAIR_FRESH_KEY_TAG: &str = "serai-processor/share-repair-fresh-key/v1";
/// The transcript tag of what a participant's identity signs in a refresh: its fresh keys.
pub const REFRESH_KEY_TAG: &str = "serai-processor/share-refresh-key/v1";
/// The transcript tag of what a participant's identity signs: the refreshed shares' digest.
pub const REFRESHED_TAG: &str = "serai-processor/share-refreshed/v1";

/// Who is repaired and who helps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShareRepair {
    /// The key pair whose share is repaired.
    pub pair: KeyPair,
    /// The participant whose share was lost.
    pub repaired: Participant,
    /// The participants who give it back: the key's threshold of them.
    pub helpers: Vec<Participant>,
    /// The set's number of key shares.
    pub participants: u16,
    /// The repaired enclave's identity key (x-only), as its operator registered it with the
    /// coordinator: the key its fresh keys must be signed with.
    pub identity: [u8; 32],
    /// The digest of the verification shares the helpers hold: the sharing the repaired share
    /// belongs to (an enclave left on older shares by a refresh it missed is repaired into it).
    pub shares: [u8; 32],
}

/// The 32-byte message a repair's attestation signs (BIP340): the tagged hash (`REPAIR_TAG`)
/// of the network code, the session (u32 LE), the attempt (u32 LE), both group keys, the
/// repaired participant (u16 LE), the helper count (u64 LE) and each helper (u16 LE), the
/// number of participants (u16 LE), the repaired enclave's identity, the digest of the
/// verification shares the helpers hold, and its fresh keys.
/// Helpers mask what they send under those fresh keys, which the identity signed
/// (`repair_fresh_key_message`): the coordinator attests the identity its operator registered,
/// so a relay cannot receive the share in the repaired enclave's place.
pub fn repair_attestation_message(
    id: KeyGenId,
    repair: &ShareRepair,
    fresh_key: &[u8],
) -> [u8; 32] {
    let mut transcript = repair_transcript(REPAIR_TAG, id, repair);
    transcript.append("fresh key", fresh_key);
    transcript.finish()
}

/// The 32-byte message a repaired enclave's identity signs (BIP340) over its fresh keys: the
/// tagged hash (`REPAIR_FRESH_KEY_TAG`) of the same fields as `repair_attestation_message`.
pub fn repair_fresh_key_message(id: KeyGenId, repair: &ShareRepair, fresh_key: &[u8]) -> [u8; 32] {
    let mut transcript = repair_transcript(REPAIR_FRESH_KEY_TAG, id, repair);
    transcript.append("fresh key", fresh_key);
    transcript.finish()
}

fn repair_transcript(tag: &str, id: KeyGenId, repair: &ShareRepair) -> Transcript {
    let mut transcript = attempt_transcript(tag, id, &repair.pair);
    transcript.append("repaired", &repair.repaired.get().to_le_bytes());
    transcript.append("helpers", &(repair.helpers.len() as u64).to_le_bytes());
    for helper in &repair.helpers {
        transcript.append("helper", &helper.get().to_le_bytes());
    }
    transcript.append("participants", &repair.participants.to_le_bytes());
    transcript.append("identity", &repair.identity);
    transcript.append("shares", &repair.shares);
    transcript
}

/// The 32-byte message a refresh's attestation signs: the tagged hash (`REFRESH_TAG`) of the
/// network code, the session, the attempt, both group keys, the digest of the verification
/// shares refreshed (every participant must hold those, or it refuses by name), and every
/// participant's registered identity in order (the count as u64 LE, then each).
pub fn refresh_attestation_message(
    id: KeyGenId,
    pair: &KeyPair,
    shares: &[u8; 32],
    identities: &[[u8; 32]],
) -> [u8; 32] {
    let mut transcript = attempt_transcript(REFRESH_TAG, id, pair);
    transcript.append("shares", shares);
    append_identities(&mut transcript, identities);
    transcript.finish()
}

fn append_identities(transcript: &mut Transcript, identities: &[[u8; 32]]) {
    transcript.append("identities", &(identities.len() as u64).to_le_bytes());
    for identity in identities {
        transcript.append("identity", identity);
    }
}

/// The 32-byte message a participant's identity signs (BIP340) over its fresh keys for a
/// refresh: the tagged hash (`REFRESH_KEY_TAG`) of the session, the attempt, both group keys,
/// the shares refreshed and the fresh keys.
pub fn refresh_key_message(
    id: KeyGenId,
    pair: &KeyPair,
    shares: &[u8; 32],
    fresh_key: &[u8],
) -> [u8; 32] {
    let mut transcript = attempt_transcript(REFRESH_KEY_TAG, id, pair);
    transcript.append("shares", shares);
    transcript.append("fresh key", fresh_key);
    transcript.finish()
}

/// The 32-byte message a participant's identity signs (BIP340) once it holds the refreshed
/// shares of `digest`: the tagged hash (`REFRESHED_TAG`) of the session, the attempt, both
/// group keys and the digest. Every participant's is in the confirmation, checked before
/// anyone switches.
pub fn refreshed_message(id: KeyGenId, pair: &KeyPair, digest: &[u8; 32]) -> [u8; 32] {
    let mut transcript = attempt_transcript(REFRESHED_TAG, id, pair);
    transcript.append("digest", digest);
    transcript.finish()
}

/// The 32-byte message a refresh confirmation's attestation signs: the tagged hash
/// (`REFRESH_CONFIRM_TAG`) of the network code, the session, the attempt, both group keys, the
/// digest of the refreshed verification shares every participant reported, and every
/// participant's identity as in `refresh_attestation_message`.
pub fn refresh_confirm_message(
    id: KeyGenId,
    pair: &KeyPair,
    digest: &[u8; 32],
    identities: &[[u8; 32]],
) -> [u8; 32] {
    let mut transcript = attempt_transcript(REFRESH_CONFIRM_TAG, id, pair);
    transcript.append("digest", digest);
    append_identities(&mut transcript, identities);
    transcript.finish()
}

fn attempt_transcript(tag: &str, id: KeyGenId, pair: &KeyPair) -> Transcript {
    let mut transcript = Transcript::new(tag);
    transcript.append("network", &[id.set.network.code()]);
    transcript.append("session", &id.set.session.0.to_le_bytes());
    transcript.append("attempt", &id.attempt.0.to_le_bytes());
    transcript.append("batch key", pair.batch_key.as_bytes());
    transcript.append("network key", &pair.network_key.to_bytes());
    transcript
}

/// Key generation, coordinator to processor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CoordinatorMessage {
    /// Start this attempt as participant `params.i()`.
    GenerateKey {
        /// Which attempt.
        id: KeyGenId,
        /// The threshold and our index.
        params: ThresholdParams,
    },
    /// Everyone else's round-1 broadcasts.
    Commitments {
        /// Which attempt.
        id: KeyGenId,
        /// Each other participant's commitments.
        commitments: ParticipantMap,
    },
    /// The round-2 shares addressed to us.
    Shares {
        /// Which attempt.
        id: KeyGenId,
        /// Each other participant's encrypted share for us.
        shares: ParticipantMap,
    },
    /// Our share of `repair.pair` is lost: begin its repair (answered with `RepairKey`).
    RepairBegin {
        /// Which attempt.
        id: KeyGenId,
        /// Who is repaired and by whom.
        repair: ShareRepair,
    },
    /// Help repair another's share: answered with `RepairParts`.
    RepairHelp {
        /// Which attempt.
        id: KeyGenId,
        /// Who is repaired and by whom.
        repair: ShareRepair,
        /// The repaired participant's fresh keys (its `RepairKey`).
        fresh_key: Vec<u8>,
        /// Their signature by the repaired enclave's identity (its `RepairKey`).
        fresh_key_signature: [u8; 64],
        /// The coordinator's signature over `repair_attestation_message`.
        attestation: Attestation,
    },
    /// The other helpers' masked parts for us: answered with `RepairAnswer`.
    RepairParts {
        /// Which attempt.
        id: KeyGenId,
        /// Each other helper's part.
        parts: ParticipantMap,
    },
    /// Every helper's answer for us, the repaired participant: answered with `Repaired`.
    RepairAnswers {
        /// Which attempt.
        id: KeyGenId,
        /// Each helper's answer.
        answers: ParticipantMap,
        /// The coordinator's signature over `repair_attestation_message`.
        attestation: Attestation,
    },
    /// Refresh every share of `pair`: answered with `RefreshKey`.
    RefreshBegin {
        /// Which attempt.
        id: KeyGenId,
        /// The key pair refreshed.
        pair: KeyPair,
        /// The digest of the verification shares refreshed.
        shares: [u8; 32],
        /// Every participant's registered identity, in participant order.
        identities: Vec<[u8; 32]>,
        /// The coordinator's signature over `refresh_attestation_message`.
        attestation: Attestation,
    },
    /// The other participants' fresh keys: answered with `RefreshDeal`.
    RefreshKeys {
        /// Which attempt.
        id: KeyGenId,
        /// Each other participant's `RefreshKey`.
        keys: ParticipantMap,
    },
    /// The other participants' deals for us: answered with `Refreshed`.
    RefreshDeals {
        /// Which attempt.
        id: KeyGenId,
        /// Each other participant's deal.
        deals: ParticipantMap,
    },
    /// Every participant refreshed to the verification shares of `digest`: switch to the
    /// refreshed shares (answered with `RefreshConfirmed`).
    RefreshConfirm {
        /// Which attempt.
        id: KeyGenId,
        /// The key pair refreshed.
        pair: KeyPair,
        /// The digest every participant reported in `Refreshed`.
        digest: [u8; 32],
        /// Every participant's `Refreshed` signature.
        signatures: ParticipantMap,
        /// Every participant's registered identity, in participant order.
        identities: Vec<[u8; 32]>,
        /// The coordinator's signature over `refresh_confirm_message`.
        attestation: Attestation,
    },
}

impl CoordinatorMessage {
    /// The attempt the message belongs to.
    pub fn id(&self) -> KeyGenId {
        match self {
            CoordinatorMessage::GenerateKey { id, .. }
            | CoordinatorMessage::Commitments { id, .. }
            | CoordinatorMessage::Shares { id, .. }
            | CoordinatorMessage::RepairBegin { id, .. }
            | CoordinatorMessage::RepairHelp { id, .. }
            | CoordinatorMessage::RepairParts { id, .. }
            | CoordinatorMessage::RepairAnswers { id, .. }
            | CoordinatorMessage::RefreshBegin { id, .. }
            | CoordinatorMessage::RefreshKeys { id, .. }
            | CoordinatorMessage::RefreshDeals { id, .. }
            | CoordinatorMessage::RefreshConfirm { id, .. } => *id,
        }
    }
}

/// Key generation, processor to coordinator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProcessorMessage {
    /// Our round-1 broadcast, for both keys.
    Commitments {
        /// Which attempt.
        id: KeyGenId,
        /// The enclave's encoding of both keys' commitments.
        commitments: Vec<u8>,
    },
    /// Our encrypted round-2 shares, one per other participant.
    Shares {
        /// Which attempt.
        id: KeyGenId,
        /// The share for each other participant.
        shares: ParticipantMap,
    },
    /// The DKG completed; these are the group keys the chain votes on.
    GeneratedKeyPair {
        /// Which attempt.
        id: KeyGenId,
        /// The batch group key.
        batch_key: BatchKey,
        /// The network group key.
        network_key: NetworkKey,
    },
    /// The DKG failed because of this participant.
    Blame {
        /// Which attempt.
        id: KeyGenId,
        /// Who is to blame.
        participant: Participant,
        /// The proof others can check.
        evidence: Vec<u8>,
    },
    /// Our fresh keys for the helpers to mask our share's parts under (for the attestation).
    RepairKey {
        /// Which attempt.
        id: KeyGenId,
        /// Both fresh public keys: Ristretto (32) then secp256k1 (33).
        fresh_key: Vec<u8>,
        /// Our identity's BIP340 signature over `repair_fresh_key_message`.
        signature: [u8; 64],
    },
    /// Our masked parts, one per other helper.
    RepairParts {
        /// Which attempt.
        id: KeyGenId,
        /// The part for each other helper.
        parts: ParticipantMap,
    },
    /// Our answer for the repaired participant.
    RepairAnswer {
        /// Which attempt.
        id: KeyGenId,
        /// Both masked sums and the verification shares we hold.
        answer: Vec<u8>,
    },
    /// Our share of `pair` is repaired, sealed and signs again.
    Repaired {
        /// Which attempt.
        id: KeyGenId,
        /// The key pair.
        pair: KeyPair,
    },
    /// Our fresh keys for the refresh, signed with our share.
    RefreshKey {
        /// Which attempt.
        id: KeyGenId,
        /// Both fresh public keys (32 + 33) and our identity's BIP340 signature over
        /// `refresh_key_message` (64).
        key: Vec<u8>,
    },
    /// Our refresh deal, one per other participant.
    RefreshDeal {
        /// Which attempt.
        id: KeyGenId,
        /// The deal for each other participant.
        deals: ParticipantMap,
    },
    /// Our refreshed shares are sealed and wait for `RefreshConfirm`.
    Refreshed {
        /// Which attempt.
        id: KeyGenId,
        /// The key pair.
        pair: KeyPair,
        /// The digest of the refreshed verification shares, the same at every participant.
        digest: [u8; 32],
        /// Our identity's BIP340 signature over `refreshed_message`.
        signature: [u8; 64],
    },
    /// We sign with the refreshed shares now.
    RefreshConfirmed {
        /// Which attempt.
        id: KeyGenId,
        /// The key pair.
        pair: KeyPair,
        /// How many refreshes the shares went through.
        epoch: u32,
    },
}
