//! An in-memory twin of `Custody`, for tests and fuzzing only (the `testing` feature): it seals
//! with a random key that lives and dies with the value, so nothing it seals outlives the
//! process. It is held to the token's behaviour by the conformance suite in
//! `tests/custody.rs`: blobs differ for the same share, and a blob for another key id or
//! purpose, a flipped bit or a truncation does not unseal.
//!
//! A blob is `nonce (12) || share XOR keystream || tag (16)`, the keystream and the tag
//! HMAC-SHA256 under the twin's key, the tag over the same associated data the token binds.
//! Confidential and authenticated, but not a vetted construction: never a custody to run.

use bitcoin::hashes::{sha256, Hash, HashEngine, Hmac, HmacEngine};
use rand_core::{OsRng, RngCore};
use zeroize::Zeroizing;

use crate::custody::{associated_data, CustodyError, Purpose, Seal};

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// Seals in memory under a key drawn when it is made.
pub struct MemoryCustody {
    key: Zeroizing<[u8; 32]>,
}

impl Default for MemoryCustody {
    fn default() -> Self {
        let mut key = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(key.as_mut());
        MemoryCustody { key }
    }
}

impl MemoryCustody {
    fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut engine = HmacEngine::<sha256::Hash>::new(self.key.as_ref());
        for part in parts {
            engine.input(part);
        }
        Hmac::<sha256::Hash>::from_engine(engine).to_byte_array()
    }

    /// XORs `data` with the keystream for `nonce`, in place.
    fn apply_keystream(&self, nonce: &[u8], data: &mut [u8]) {
        for (counter, chunk) in (0u64..).zip(data.chunks_mut(32)) {
            let block = Zeroizing::new(self.mac(&[b"stream", nonce, &counter.to_le_bytes()]));
            for (byte, key) in chunk.iter_mut().zip(block.iter()) {
                *byte ^= key;
            }
        }
    }

    fn tag(&self, aad: &[u8], nonce: &[u8], ciphertext: &[u8]) -> [u8; TAG_LEN] {
        let mac = self.mac(&[b"tag", aad, nonce, ciphertext]);
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&mac[..TAG_LEN]);
        tag
    }
}

impl Seal for MemoryCustody {
    fn seal(&self, key_id: &[u8], purpose: Purpose, share: &[u8]) -> Result<Vec<u8>, CustodyError> {
        let aad = associated_data(key_id, purpose)?;
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        let mut sealed = Vec::with_capacity(NONCE_LEN + share.len() + TAG_LEN);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(share);
        self.apply_keystream(&nonce, &mut sealed[NONCE_LEN..]);
        let tag = self.tag(&aad, &nonce, &sealed[NONCE_LEN..]);
        sealed.extend_from_slice(&tag);
        Ok(sealed)
    }

    fn unseal(
        &self,
        key_id: &[u8],
        purpose: Purpose,
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CustodyError> {
        let aad = associated_data(key_id, purpose)?;
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(CustodyError::Unseal);
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
        let expected = self.tag(&aad, nonce, ciphertext);
        // Constant time, as a real token would compare.
        let differs = expected
            .iter()
            .zip(tag)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if differs != 0 {
            return Err(CustodyError::Unseal);
        }
        let mut share = Zeroizing::new(ciphertext.to_vec());
        self.apply_keystream(nonce, &mut share);
        Ok(share)
    }
}
