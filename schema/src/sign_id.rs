//! Which signing session a signing message belongs to.

use crate::{
    error::DecodeError,
    hashes::PlanId,
    ids::{Attempt, BatchId, NetworkId},
    keys::{BatchKey, NetworkKey},
};

/// A signing session: the key signing, what it signs, and the attempt. Two sessions with the
/// same key and id but different attempts never share nonces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SignId<K, I> {
    /// The group key signing.
    pub key: K,
    /// What is being signed.
    pub id: I,
    /// Which attempt.
    pub attempt: Attempt,
}

/// Signing a plan's transaction with the network key.
pub type PlanSignId = SignId<NetworkKey, PlanId>;

/// Signing a Batch with the batch key.
pub type BatchSignId = SignId<BatchKey, BatchSignTarget>;

/// Which Batch a batch signing session signs: its network and batch id, which no two batches
/// share. On the wire: the network code, then the batch id as u32 little endian (5 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BatchSignTarget {
    /// The batch's network.
    pub network: NetworkId,
    /// The batch's id.
    pub batch: BatchId,
}

/// A part of a `SignId` (its key or its id) and how it travels as bytes.
pub trait SignIdPart: Sized {
    /// The bytes on the wire.
    fn to_part_bytes(&self) -> Vec<u8>;
    /// Reads the bytes on the wire, refusing malformed ones.
    fn from_part_bytes(bytes: &[u8]) -> Result<Self, DecodeError>;
}

impl SignIdPart for NetworkKey {
    fn to_part_bytes(&self) -> Vec<u8> {
        self.to_bytes().to_vec()
    }
    fn from_part_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        NetworkKey::from_slice(bytes)
    }
}

impl SignIdPart for BatchKey {
    fn to_part_bytes(&self) -> Vec<u8> {
        self.0.to_vec()
    }
    fn from_part_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        BatchKey::from_slice(bytes)
    }
}

impl SignIdPart for PlanId {
    fn to_part_bytes(&self) -> Vec<u8> {
        self.0.to_vec()
    }
    fn from_part_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        PlanId::from_slice(bytes)
    }
}

impl SignIdPart for BatchSignTarget {
    fn to_part_bytes(&self) -> Vec<u8> {
        let mut bytes = vec![self.network.code()];
        bytes.extend_from_slice(&self.batch.0.to_le_bytes());
        bytes
    }
    fn from_part_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let [code, id @ ..] = <[u8; 5]>::try_from(bytes).map_err(|_| DecodeError::WrongLength {
            what: "batch sign id",
            expected: 5,
            actual: bytes.len(),
        })?;
        Ok(BatchSignTarget {
            network: NetworkId::from_code(code)?,
            batch: BatchId(u32::from_le_bytes(id)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_sign_targets_are_five_bytes() {
        let target = BatchSignTarget {
            network: NetworkId::Bitcoin,
            batch: BatchId(0x0a0b_0c0d),
        };
        let bytes = target.to_part_bytes();
        assert_eq!(bytes, vec![1, 0x0d, 0x0c, 0x0b, 0x0a]);
        assert_eq!(BatchSignTarget::from_part_bytes(&bytes), Ok(target));
        assert!(BatchSignTarget::from_part_bytes(&bytes[..4]).is_err());
        assert!(BatchSignTarget::from_part_bytes(&[9, 0, 0, 0, 0]).is_err());
    }
}
