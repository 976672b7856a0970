//! Schnorr signatures by a key share, verified under its verification share: how the
//! participants of a refresh vouch for their fresh keys and for the shares they refreshed to,
//! with nothing beyond what the key generation gave them (every participant holds every
//! verification share). The share's curve's Schnorr with a fresh nonce per signature, under a
//! domain of its own, so a signature here is never a FROST share or another protocol's.

use ciphersuite::{
    group::{ff::PrimeField, Group, GroupEncoding},
    Ciphersuite,
};
use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

const DOMAIN: &[u8] = b"serai-processor/share-signature/v1";

/// Signs `message` with `secret` (a share): `R || s` in the curve's encodings.
pub fn sign<C: Ciphersuite, R: RngCore + CryptoRng>(
    secret: &C::F,
    message: &[u8; 32],
    rng: &mut R,
) -> Vec<u8> {
    let nonce = Zeroizing::new(C::random_nonzero_F(rng));
    let commitment = C::generator() * *nonce;
    let challenge = challenge::<C>(commitment, C::generator() * *secret, message);
    let response = *nonce + challenge * *secret;
    [commitment.to_bytes().as_ref(), response.to_repr().as_ref()].concat()
}

/// Whether `signature` is `public`'s over `message`. Any encoding that does not read back
/// exactly, and the identity as nonce commitment, is refused.
pub fn verify<C: Ciphersuite>(public: C::G, message: &[u8; 32], signature: &[u8]) -> bool {
    let mut reader = signature;
    let (Ok(commitment), Ok(response)) = (C::read_G(&mut reader), C::read_F(&mut reader)) else {
        return false;
    };
    reader.is_empty()
        && !bool::from(commitment.is_identity())
        && C::generator() * response
            == commitment + public * challenge::<C>(commitment, public, message)
}

fn challenge<C: Ciphersuite>(commitment: C::G, public: C::G, message: &[u8; 32]) -> C::F {
    let mut transcript = Vec::with_capacity(160);
    transcript.extend_from_slice(commitment.to_bytes().as_ref());
    transcript.extend_from_slice(public.to_bytes().as_ref());
    transcript.extend_from_slice(message);
    C::hash_to_F(DOMAIN, &transcript)
}

#[cfg(test)]
mod tests {
    use ciphersuite::{group::ff::Field, Ciphersuite};
    use modular_frost::curve::Secp256k1;
    use rand_core::OsRng;

    use super::{sign, verify};

    type F = <Secp256k1 as Ciphersuite>::F;

    #[test]
    fn a_signature_verifies_under_its_key_and_message_only() {
        let secret = F::random(&mut OsRng);
        let public = Secp256k1::generator() * secret;
        let signature = sign::<Secp256k1, _>(&secret, &[1; 32], &mut OsRng);
        assert_eq!(signature.len(), 65);
        assert!(verify::<Secp256k1>(public, &[1; 32], &signature));
        assert!(!verify::<Secp256k1>(public, &[2; 32], &signature));
        assert!(!verify::<Secp256k1>(
            public + Secp256k1::generator(),
            &[1; 32],
            &signature
        ));
        let mut flipped = signature.clone();
        flipped[64] ^= 1;
        assert!(!verify::<Secp256k1>(public, &[1; 32], &flipped));
        assert!(!verify::<Secp256k1>(public, &[1; 32], &signature[..64]));
        assert!(!verify::<Secp256k1>(
            public,
            &[1; 32],
            &[&signature[..], &[0]].concat()
        ));
    }
}
