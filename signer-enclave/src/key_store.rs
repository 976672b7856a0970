//! Key shares at rest: a completed key generation's two `ThresholdKeys`, each sealed by
//! `custody` under the network group key as key id; and back, with every unsealed share
//! checked against its own verification share (`ThresholdKeys::read` does not check it).

use ciphersuite::{group::GroupEncoding, Ciphersuite, Ristretto};
use modular_frost::{curve::Secp256k1, ThresholdKeys};
use thiserror::Error;

use crate::{
    custody::{CustodyError, Purpose, Seal},
    key_gen::GeneratedKeys,
};

/// Sealed keys cannot be used.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum KeyStoreError {
    /// Sealing or unsealing failed.
    #[error(transparent)]
    Custody(#[from] CustodyError),
    /// The unsealed bytes are not keys.
    #[error("unsealed {0} keys do not parse")]
    Malformed(&'static str),
    /// The unsealed secret share does not match its verification share.
    #[error("unsealed {0} secret share does not match its verification share")]
    Inconsistent(&'static str),
    /// Keys sealed anew do not unseal to the keys they were sealed from.
    #[error("resealed keys do not unseal to the same keys")]
    ResealMismatch,
}

/// Both keys of a key pair, sealed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedKeys {
    /// The network group key: the key id both blobs are sealed under.
    pub key_id: Vec<u8>,
    /// The sealed batch keys.
    pub batch: Vec<u8>,
    /// The sealed network keys.
    pub network: Vec<u8>,
}

/// Seals both keys. The plaintext serializations are zeroized when dropped.
///
/// # Errors
/// The token failed.
pub fn seal(custody: &dyn Seal, keys: &GeneratedKeys) -> Result<SealedKeys, KeyStoreError> {
    let key_id = keys.network.group_key().to_bytes().as_slice().to_vec();
    Ok(SealedKeys {
        batch: custody.seal(&key_id, Purpose::BatchKeyShare, &keys.batch.serialize())?,
        network: custody.seal(&key_id, Purpose::NetworkKeyShare, &keys.network.serialize())?,
        key_id,
    })
}

/// Unseals both keys and checks each secret share against its verification share.
///
/// # Errors
/// The blobs do not unseal, do not parse, or hold inconsistent shares.
pub fn unseal(custody: &dyn Seal, sealed: &SealedKeys) -> Result<GeneratedKeys, KeyStoreError> {
    let batch = custody.unseal(&sealed.key_id, Purpose::BatchKeyShare, &sealed.batch)?;
    let network = custody.unseal(&sealed.key_id, Purpose::NetworkKeyShare, &sealed.network)?;
    Ok(GeneratedKeys {
        batch: read_checked::<Ristretto>(&batch, "batch")?,
        network: read_checked::<Secp256k1>(&network, "network")?,
    })
}

/// Seals `sealed`'s keys anew under `to` (another token), after unsealing them from `from`
/// and checking them: what moving to a new token does to each key pair. The new blobs are
/// unsealed again from `to` and compared before they are returned.
///
/// # Errors
/// The old blobs do not unseal or hold inconsistent shares, the new token failed, or the new
/// blobs do not give the same keys back.
pub fn reseal(
    from: &dyn Seal,
    to: &dyn Seal,
    sealed: &SealedKeys,
) -> Result<SealedKeys, KeyStoreError> {
    let keys = unseal(from, sealed)?;
    let resealed = seal(to, &keys)?;
    let again = unseal(to, &resealed)?;
    if again.batch.serialize() != keys.batch.serialize()
        || again.network.serialize() != keys.network.serialize()
    {
        return Err(KeyStoreError::ResealMismatch);
    }
    Ok(resealed)
}

/// Reads unsealed keys (`ThresholdKeys::serialize`'s bytes) and checks the secret share
/// against its own verification share; nothing may follow them.
///
/// # Errors
/// `Malformed` or `Inconsistent`, naming `what`.
pub fn read_checked<C: Ciphersuite>(
    mut bytes: &[u8],
    what: &'static str,
) -> Result<ThresholdKeys<C>, KeyStoreError> {
    let keys = ThresholdKeys::<C>::read(&mut bytes).map_err(|_| KeyStoreError::Malformed(what))?;
    if !bytes.is_empty() {
        return Err(KeyStoreError::Malformed(what));
    }
    let ours = keys.params().i();
    let secret: &C::F = keys.original_secret_share();
    if C::generator() * secret != keys.original_verification_share(ours) {
        return Err(KeyStoreError::Inconsistent(what));
    }
    Ok(keys)
}
