//! Distributed key generation messages, and the repair and refresh of the shares it made
//! (driven by the coordinator the same way, under the same attempt ids).

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

/// Who is repaired and who helps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShareRepair {
    /// The key pair whose share is repaired.
    pub pair: KeyPair,
    /// The participant whose share was lost.
    pub repaired: Participant,
    /// The participants who give it back: the key's threshold of them.
    pub helpers: Vec<Participant>,
}

/// The 32-byte message a repair's attestation signs (BIP340): the tagged hash (`REPAIR_TAG`)
/// of the network code, the session (u32 LE), the attempt (u32 LE), both group keys, the
/// repaired participant (u16 LE), the helper count (u64 LE) and each helper (u16 LE), and the
/// repaired participant's fresh keys. Helpers mask what they send under those fresh keys, so
/// attesting them is what keeps a relay from receiving a share in the repaired one's place.
pub fn repair_attestation_message(
    id: KeyGenId,
    repair: &ShareRepair,
    fresh_key: &[u8],
) -> [u8; 32] {
    let mut transcript = attempt_transcript(REPAIR_TAG, id, &repair.pair);
    transcript.append("repaired", &repair.repaired.get().to_le_bytes());
    transcript.append("helpers", &(repair.helpers.len() as u64).to_le_bytes());
    for helper in &repair.helpers {
        transcript.append("helper", &helper.get().to_le_bytes());
    }
    transcript.append("fresh key", fresh_key);
    transcript.finish()
}

/// The 32-byte message a refresh's attestation signs: the tagged hash (`REFRESH_TAG`) of the
/// network code, the session, the attempt and both group keys.
pub fn refresh_attestation_message(id: KeyGenId, pair: &KeyPair) -> [u8; 32] {
    attempt_transcript(REFRESH_TAG, id, pair).finish()
}

/// The 32-byte message a refresh confirmation's attestation signs: the tagged hash
/// (`REFRESH_CONFIRM_TAG`) of the network code, the session, the attempt, both group keys and
/// the digest of the refreshed verification shares every participant reported.
pub fn refresh_confirm_message(id: KeyGenId, pair: &KeyPair, digest: &[u8; 32]) -> [u8; 32] {
    let mut transcript = attempt_transcript(REFRESH_CONFIRM_TAG, id, pair);
    transcript.append("digest", digest);
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
    /// Refresh every share of `pair`: answered with `RefreshDeal`.
    RefreshBegin {
        /// Which attempt.
        id: KeyGenId,
        /// The key pair refreshed.
        pair: KeyPair,
        /// The coordinator's signature over `refresh_attestation_message`.
        attestation: Attestation,
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
