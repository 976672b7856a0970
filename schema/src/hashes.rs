//! Fixed-size 32-byte identifiers: network block hashes, transaction ids, plan ids and Serai
//! addresses. Each is its own type so that one cannot be passed where another is meant.

use core::fmt;

use crate::error::DecodeError;

macro_rules! bytes32 {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// Reads the value from exactly 32 bytes.
            pub fn from_slice(bytes: &[u8]) -> Result<Self, DecodeError> {
                <[u8; 32]>::try_from(bytes)
                    .map(Self)
                    .map_err(|_| DecodeError::WrongLength {
                        what: $what,
                        expected: 32,
                        actual: bytes.len(),
                    })
            }

            /// The 32 bytes.
            pub const fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), hex::encode(self.0))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }
    };
}

bytes32!(
    /// A network block's hash, in the network's internal byte order (for Bitcoin, the order
    /// of the block header, not the reversed order explorers show).
    BlockHash,
    "block hash"
);

bytes32!(
    /// A network transaction's id, in internal byte order.
    TransactionId,
    "transaction id"
);

bytes32!(
    /// The id of a plan: the hash of its canonical transcript (see `Plan::id`). What the
    /// coordinator acknowledges and the enclave checks.
    PlanId,
    "plan id"
);

bytes32!(
    /// An account on the Serai chain (an sr25519 public key).
    SeraiAddress,
    "serai address"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_lengths_are_refused() {
        assert!(BlockHash::from_slice(&[0; 32]).is_ok());
        assert_eq!(
            PlanId::from_slice(&[0; 31]),
            Err(DecodeError::WrongLength {
                what: "plan id",
                expected: 32,
                actual: 31
            })
        );
        assert!(TransactionId::from_slice(&[0; 33]).is_err());
        assert!(SeraiAddress::from_slice(&[]).is_err());
    }
}
