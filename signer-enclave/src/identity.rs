//! The enclave's identity: a secp256k1 key made at provisioning (or at the first start of an
//! enclave provisioned before identities existed), sealed by custody like a share and kept in
//! the database. Its x-only public half is printed by `provision` and `status`, for the
//! operator to register with the coordinator. It signs the fresh keys of a repair of this
//! enclave's share: the coordinator attests the identity its operator registered, never one
//! from the link, so the helpers' answers reach this enclave and not whoever relays them.

use bitcoin::{
    key::{Keypair, XOnlyPublicKey},
    secp256k1::{Message, Secp256k1, SecretKey},
};
use rand_core::{CryptoRng, RngCore};
use thiserror::Error;
use zeroize::Zeroizing;

use crate::{
    custody::{CustodyError, Purpose, Seal},
    db::{DbError, EnclaveDb},
};

/// What the identity is sealed under (the key id of its blob).
const KEY_ID: &[u8] = b"enclave identity";

/// The identity cannot be made or read.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// Sealing or unsealing failed.
    #[error("enclave identity: {0}")]
    Custody(#[from] CustodyError),
    /// The database failed.
    #[error("enclave identity: {0}")]
    Db(#[from] DbError),
    /// The unsealed bytes are not a secp256k1 secret key.
    #[error("the unsealed enclave identity is not a key")]
    Malformed,
}

/// The enclave's identity key, erased when dropped.
pub struct Identity {
    keypair: Keypair,
}

impl Drop for Identity {
    fn drop(&mut self) {
        self.keypair.non_secure_erase();
    }
}

impl Identity {
    /// Reads the identity from `db`, unsealed by `custody`, or makes, seals and records one
    /// (audited) if the database has none.
    ///
    /// # Errors
    /// The database or custody failed, or the recorded identity does not unseal to a key.
    pub fn load_or_create<R: RngCore + CryptoRng>(
        db: &EnclaveDb,
        custody: &dyn Seal,
        rng: &mut R,
    ) -> Result<Self, IdentityError> {
        if let Some(identity) = Self::load(db, custody)? {
            return Ok(identity);
        }
        let identity = Self::generate(rng);
        let secret = Zeroizing::new(identity.keypair.secret_bytes());
        db.record_identity(&custody.seal(KEY_ID, Purpose::EnclaveIdentity, secret.as_ref())?)?;
        Ok(identity)
    }

    /// A new identity, kept nowhere (`load_or_create` seals and records one).
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        let mut secret = Zeroizing::new([0u8; 32]);
        loop {
            rng.fill_bytes(secret.as_mut());
            if let Ok(identity) = Self::from_secret(&secret) {
                return identity;
            }
        }
    }

    /// Reads the identity from `db`, if it has one.
    ///
    /// # Errors
    /// The database or custody failed, or the recorded identity does not unseal to a key.
    pub fn load(db: &EnclaveDb, custody: &dyn Seal) -> Result<Option<Self>, IdentityError> {
        let Some(sealed) = db.identity()? else {
            return Ok(None);
        };
        let unsealed = custody.unseal(KEY_ID, Purpose::EnclaveIdentity, &sealed)?;
        let secret = <[u8; 32]>::try_from(unsealed.as_slice())
            .map(Zeroizing::new)
            .map_err(|_| IdentityError::Malformed)?;
        Self::from_secret(&secret).map(Some)
    }

    fn from_secret(secret: &Zeroizing<[u8; 32]>) -> Result<Self, IdentityError> {
        let mut key =
            SecretKey::from_slice(secret.as_ref()).map_err(|_| IdentityError::Malformed)?;
        let keypair = Keypair::from_secret_key(&Secp256k1::signing_only(), &key);
        key.non_secure_erase();
        Ok(Identity { keypair })
    }

    /// The x-only public key the operator registers.
    pub fn public(&self) -> XOnlyPublicKey {
        self.keypair.x_only_public_key().0
    }

    /// A BIP340 signature over `digest`.
    pub fn sign(&self, digest: [u8; 32]) -> [u8; 64] {
        Secp256k1::signing_only()
            .sign_schnorr_no_aux_rand(&Message::from_digest(digest), &self.keypair)
            .serialize()
    }
}

/// The identity recorded in `db`, sealed anew under `to` after unsealing it from `from` (what
/// moving to another token does to it); `None` if none was made.
///
/// # Errors
/// The database failed, or either token did.
pub fn reseal(
    db: &EnclaveDb,
    from: &dyn Seal,
    to: &dyn Seal,
) -> Result<Option<Vec<u8>>, IdentityError> {
    let Some(sealed) = db.identity()? else {
        return Ok(None);
    };
    let secret = from.unseal(KEY_ID, Purpose::EnclaveIdentity, &sealed)?;
    Ok(Some(to.seal(KEY_ID, Purpose::EnclaveIdentity, &secret)?))
}
