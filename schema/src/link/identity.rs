//! Link identities: an X25519 key pair per end, the public half written as 64 hex digits
//! wherever an operator pins it. Our copy of the secret half is zeroized on drop (deriving the
//! public half passes a transient copy on the stack, as the curve library takes it by value);
//! the copies
//! `snow` 0.10 makes inside a handshake (its DH state, the session's cipher keys) are not, as
//! snow does not zeroize: the link key lives in the scanner's memory for as long as it runs,
//! and a scanner host is assumed compromisable anyway (it holds no custody secret; a stolen
//! link key lets an attacker speak as this validator's processor, never sign).

use std::{fmt, str::FromStr};

use curve25519_dalek::montgomery::MontgomeryPoint;
use rand_core::{OsRng, RngCore};
use thiserror::Error;
use zeroize::Zeroizing;

/// Bytes of a link key, secret or public.
pub const LINK_KEY_LEN: usize = 32;

/// A link key's public half, as pinned in the other end's configuration.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkPublicKey(pub [u8; LINK_KEY_LEN]);

impl fmt::Display for LinkPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for LinkPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LinkPublicKey({self})")
    }
}

/// A link key written wrongly.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("a link key is {LINK_KEY_LEN} bytes written as {} hex digits", LINK_KEY_LEN * 2)]
pub struct LinkKeyFormatError;

fn parse_hex(text: &str) -> Result<Zeroizing<[u8; LINK_KEY_LEN]>, LinkKeyFormatError> {
    let mut bytes = Zeroizing::new([0u8; LINK_KEY_LEN]);
    hex::decode_to_slice(text.trim(), bytes.as_mut()).map_err(|_| LinkKeyFormatError)?;
    Ok(bytes)
}

impl FromStr for LinkPublicKey {
    type Err = LinkKeyFormatError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(LinkPublicKey(*parse_hex(text)?))
    }
}

/// A link key's secret half. Never printed; zeroized on drop.
pub struct LinkSecretKey(Zeroizing<[u8; LINK_KEY_LEN]>);

impl LinkSecretKey {
    /// A new key from the operating system's randomness.
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new([0u8; LINK_KEY_LEN]);
        OsRng.fill_bytes(bytes.as_mut());
        LinkSecretKey(bytes)
    }

    /// The key written as by `to_hex`.
    ///
    /// # Errors
    /// Not 64 hex digits.
    pub fn from_hex(text: &str) -> Result<Self, LinkKeyFormatError> {
        parse_hex(text).map(LinkSecretKey)
    }

    /// The secret as 64 hex digits, for the key file only.
    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(&self.0[..]))
    }

    /// The public half (X25519 of the clamped secret, as Noise computes it).
    pub fn public(&self) -> LinkPublicKey {
        LinkPublicKey(MontgomeryPoint::mul_base_clamped(*self.0).to_bytes())
    }

    pub(crate) fn secret(&self) -> &[u8; LINK_KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for LinkSecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LinkSecretKey(public {})", self.public())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_hex_and_debug_shows_only_the_public_half() {
        let key = LinkSecretKey::generate();
        let again = LinkSecretKey::from_hex(&key.to_hex()).unwrap();
        assert_eq!(key.public(), again.public());
        assert_eq!(
            key.public().to_string().parse::<LinkPublicKey>().unwrap(),
            key.public()
        );
        assert!(!format!("{key:?}").contains(key.to_hex().as_str()));
    }

    #[test]
    fn malformed_keys_are_refused() {
        assert_eq!("00".parse::<LinkPublicKey>(), Err(LinkKeyFormatError));
        assert_eq!(
            "zz".repeat(LINK_KEY_LEN).parse::<LinkPublicKey>(),
            Err(LinkKeyFormatError)
        );
        assert!(LinkSecretKey::from_hex(&"ab".repeat(LINK_KEY_LEN + 1)).is_err());
    }
}
