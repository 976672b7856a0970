//! BIP340 Schnorr signatures from FROST over secp256k1, for Taproot key-path spends of our
//! outputs.
//!
//! modular-frost has no BIP340 mode, so this module supplies what BIP340 adds to plain
//! Schnorr: x-only keys and nonces. The signing keys are prepared so that the group key is the
//! even-y Taproot output key of `schema::taproot` (negating the shares wherever a step yields
//! an odd point), and the challenge is BIP340's tagged hash over `x(R) || x(P) || m`, negated
//! when the aggregate nonce `R` has odd y; `bip340_signature` then negates `s` to match, which
//! makes `(x(R), s)` valid for the even `R` BIP340 implies.

use bitcoin::{
    hashes::{sha256t_hash_newtype, Hash},
    key::Parity,
};
use ciphersuite::{
    group::{ff::PrimeField, GroupEncoding},
    Secp256k1,
};
use flexible_transcript::{RecommendedTranscript, Transcript};
use k256::{elliptic_curve::ops::Reduce, FieldBytes, ProjectivePoint, Scalar, U256};
use modular_frost::{
    algorithm::{Hram, Schnorr},
    ThresholdKeys,
};
use schema::{
    keys::NetworkKey,
    plan::OutputKind,
    taproot::{DerivedKey, KeyDerivationError},
};
use thiserror::Error;

sha256t_hash_newtype! {
    struct ChallengeTag = hash_str("BIP0340/challenge");
    /// BIP340's challenge hash.
    struct ChallengeHash(_);
}

/// Keys that cannot sign for a Taproot output of ours.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TaprootKeyError {
    /// The group key is not a valid network key (the identity).
    #[error("group key is not a valid point")]
    InvalidGroupKey,
    /// Deriving the kind's key failed.
    #[error(transparent)]
    Derivation(#[from] KeyDerivationError),
    /// A derived scalar is not a secp256k1 scalar.
    #[error("derived scalar out of range")]
    Scalar,
    /// The prepared keys do not match the schema's output key: a bug, never signed with.
    #[error("prepared keys disagree with the derived output key")]
    Mismatch,
}

fn is_odd(point: &ProjectivePoint) -> bool {
    point.to_bytes().first() == Some(&3)
}

fn x_only(point: &ProjectivePoint) -> [u8; 32] {
    let bytes = point.to_bytes();
    let mut x = [0u8; 32];
    if let Some(tail) = bytes.get(1..33) {
        x.copy_from_slice(tail);
    }
    x
}

fn to_k256(scalar: &bitcoin::secp256k1::Scalar) -> Result<Scalar, TaprootKeyError> {
    Option::from(Scalar::from_repr(FieldBytes::from(scalar.to_be_bytes())))
        .ok_or(TaprootKeyError::Scalar)
}

/// The network key of a group key.
pub fn network_key(group: &ProjectivePoint) -> Result<NetworkKey, TaprootKeyError> {
    NetworkKey::from_slice(group.to_bytes().as_ref()).map_err(|_| TaprootKeyError::InvalidGroupKey)
}

fn even(
    keys: ThresholdKeys<Secp256k1>,
    odd: bool,
) -> Result<ThresholdKeys<Secp256k1>, TaprootKeyError> {
    if odd {
        keys.scale(-Scalar::ONE).ok_or(TaprootKeyError::Scalar)
    } else {
        Ok(keys)
    }
}

/// The keys that sign for outputs of `kind`: the group key made even, offset for the kind,
/// made even, tweaked per BIP341, and made even, so that the group key of the result is the
/// kind's Taproot output key with even y. Offsets are not serialized with keys: call this after
/// every load.
///
/// # Errors
/// The keys cannot sign for this kind (see `TaprootKeyError`).
pub fn taproot_keys(
    keys: ThresholdKeys<Secp256k1>,
    kind: OutputKind,
) -> Result<ThresholdKeys<Secp256k1>, TaprootKeyError> {
    let derived = DerivedKey::derive(&network_key(&keys.group_key())?, kind)?;
    let mut keys = even(keys, derived.group_negated)?;
    if let Some(offset) = derived.offset {
        keys = keys.offset(to_k256(&offset)?);
    }
    keys = even(keys, derived.internal_parity == Parity::Odd)?;
    keys = keys.offset(to_k256(&derived.tweak)?);
    keys = even(keys, derived.output_parity == Parity::Odd)?;
    let group = keys.group_key();
    if is_odd(&group) || x_only(&group) != derived.output.serialize() {
        return Err(TaprootKeyError::Mismatch);
    }
    Ok(keys)
}

/// BIP340's challenge, negated when the nonce has odd y.
#[derive(Clone, Copy, Debug)]
pub struct Bip340Hram;

impl Hram<Secp256k1> for Bip340Hram {
    #[allow(non_snake_case)]
    fn hram(R: &ProjectivePoint, A: &ProjectivePoint, m: &[u8]) -> Scalar {
        let mut data = Vec::with_capacity(64 + m.len());
        data.extend_from_slice(&x_only(R));
        data.extend_from_slice(&x_only(A));
        data.extend_from_slice(m);
        let hash = ChallengeHash::hash(&data).to_byte_array();
        let challenge = <Scalar as Reduce<U256>>::reduce_bytes(&FieldBytes::from(hash));
        if is_odd(R) {
            -challenge
        } else {
            challenge
        }
    }
}

/// The FROST algorithm that signs one Taproot key-path input.
pub type Bip340Schnorr = Schnorr<Secp256k1, RecommendedTranscript, Bip340Hram>;

/// A fresh signing algorithm, its transcript bound to this protocol.
pub fn algorithm() -> Bip340Schnorr {
    Schnorr::new(RecommendedTranscript::new(b"serai-processor BIP340 v1"))
}

/// The 64-byte BIP340 signature of FROST's `(R, s)`.
#[allow(non_snake_case)]
pub fn bip340_signature(R: &ProjectivePoint, s: &Scalar) -> [u8; 64] {
    let s = if is_odd(R) { -*s } else { *s };
    let mut signature = [0u8; 64];
    signature[..32].copy_from_slice(&x_only(R));
    signature[32..].copy_from_slice(&s.to_repr());
    signature
}
