//! Group public keys: the network key (secp256k1, spends Bitcoin) and the batch key
//! (Ristretto, signs Batches).

use core::fmt;

use bitcoin::secp256k1::PublicKey;

use crate::error::{DecodeError, ValueError};

/// A network group key: a secp256k1 point, sent in 33-byte compressed form. Holding the
/// parsed point means every `NetworkKey` is usable.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NetworkKey(PublicKey);

impl NetworkKey {
    /// Reads a compressed point, refusing any other length and any bytes that are not a point.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() != 33 {
            return Err(DecodeError::WrongLength {
                what: "network key",
                expected: 33,
                actual: bytes.len(),
            });
        }
        let key = PublicKey::from_slice(bytes).map_err(|_| ValueError {
            what: "network key",
            reason: "not a compressed secp256k1 point",
        })?;
        Ok(NetworkKey(key))
    }

    /// The compressed encoding.
    pub fn to_bytes(&self) -> [u8; 33] {
        self.0.serialize()
    }

    /// The point.
    pub const fn public_key(&self) -> &PublicKey {
        &self.0
    }
}

impl From<PublicKey> for NetworkKey {
    fn from(key: PublicKey) -> Self {
        NetworkKey(key)
    }
}

impl fmt::Debug for NetworkKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NetworkKey({})", hex::encode(self.to_bytes()))
    }
}

impl fmt::Display for NetworkKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.to_bytes()))
    }
}

/// A batch group key: a compressed Ristretto point (32 bytes). The enclave, which holds the
/// curve arithmetic, checks that it decompresses; here only its length is fixed.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BatchKey(pub [u8; 32]);

impl BatchKey {
    /// Reads exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, DecodeError> {
        <[u8; 32]>::try_from(bytes)
            .map(BatchKey)
            .map_err(|_| DecodeError::WrongLength {
                what: "batch key",
                expected: 32,
                actual: bytes.len(),
            })
    }

    /// The compressed encoding.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for BatchKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BatchKey({})", hex::encode(self.0))
    }
}

/// The two group keys a DKG produces and the chain votes in together.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KeyPair {
    /// Signs Batches.
    pub batch_key: BatchKey,
    /// Holds the network's funds.
    pub network_key: NetworkKey,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The secp256k1 generator, compressed.
    const G: &str = "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798";

    #[test]
    fn network_keys_must_be_points() {
        let g = hex::decode(G).unwrap();
        let key = NetworkKey::from_slice(&g).unwrap();
        assert_eq!(key.to_bytes().as_slice(), g.as_slice());

        let mut not_a_point = g.clone();
        not_a_point[0] = 0x05;
        assert!(matches!(
            NetworkKey::from_slice(&not_a_point),
            Err(DecodeError::Invalid(_))
        ));
        assert!(matches!(
            NetworkKey::from_slice(&g[..32]),
            Err(DecodeError::WrongLength { .. })
        ));
        // x = 5 has no square root mod p on secp256k1: a 33-byte encoding of no point.
        let mut off_curve = [0u8; 33];
        off_curve[0] = 0x02;
        off_curve[32] = 5;
        assert!(NetworkKey::from_slice(&off_curve).is_err());
    }
}
