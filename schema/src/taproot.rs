//! Our Bitcoin keys and addresses: one Taproot address per output kind, derived from the
//! network group key. Shared by the scanner (typing outputs by the script they pay) and the
//! enclave (deriving the tweak it applies to its key share), so both derive the same keys.
//!
//! Derivation, for group key `P` and output kind `k`:
//!
//! 1. `E = lift_x(x(P))`, the even-y point with `P`'s x coordinate (BIP340). A signer whose
//!    group key has odd y negates its share.
//! 2. `K = E + o_k·G` with `o_External = 0` and, for Branch and Change,
//!    `o_k = SHA256(SHA256(tag) || SHA256(tag) || label)` for `tag = KEY_OFFSET_TAG` and
//!    `label` = `"branch"` or `"change"`: fixed offsets no one can choose.
//! 3. The Taproot internal key is `x(K)`; the output key is `x(K') + t·G` per BIP341 with no
//!    script tree, `t = hash_TapTweak(x(K))`. The address is the P2TR of the output key.

use std::sync::OnceLock;

use bitcoin::{
    hashes::{sha256, Hash, HashEngine},
    key::{Parity, TweakedPublicKey, XOnlyPublicKey},
    secp256k1::{All, PublicKey, Scalar, Secp256k1},
    taproot::TapTweakHash,
    Address, Network, ScriptBuf,
};
use thiserror::Error;

use crate::{keys::NetworkKey, plan::OutputKind};

/// The tag of the branch and change key offsets. Changing it moves every branch and change
/// address.
pub const KEY_OFFSET_TAG: &str = "serai-processor/key-offset/v1";

/// Key derivation failed: a hash was not a valid scalar or a sum was the point at infinity.
/// Both happen with probability about 2^-128; the error exists so that they are not panics.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("key derivation failed: {0}")]
pub struct KeyDerivationError(&'static str);

/// The secp256k1 context, created once: creating one costs far more than using it.
pub(crate) fn secp() -> &'static Secp256k1<All> {
    static SECP: OnceLock<Secp256k1<All>> = OnceLock::new();
    SECP.get_or_init(Secp256k1::new)
}

/// The fixed offset of a kind's key from the even group key; `None` for External.
pub fn kind_offset(kind: OutputKind) -> Result<Option<Scalar>, KeyDerivationError> {
    let label: &[u8] = match kind {
        OutputKind::External => return Ok(None),
        OutputKind::Branch => b"branch",
        OutputKind::Change => b"change",
    };
    let tag = sha256::Hash::hash(KEY_OFFSET_TAG.as_bytes());
    let mut engine = sha256::HashEngine::default();
    engine.input(tag.as_byte_array());
    engine.input(tag.as_byte_array());
    engine.input(label);
    let hash = sha256::Hash::from_engine(engine).to_byte_array();
    Scalar::from_be_bytes(hash)
        .map(Some)
        .map_err(|_| KeyDerivationError("offset out of range"))
}

/// One kind's key, with every intermediate a signer needs to adjust its share.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DerivedKey {
    /// Whether the group key had odd y and was negated to make it even.
    pub group_negated: bool,
    /// The offset added to the even group key (`None` for External).
    pub offset: Option<Scalar>,
    /// The Taproot internal key, `x(K)`.
    pub internal: XOnlyPublicKey,
    /// The parity of `K` (odd means the signer negates again before tweaking).
    pub internal_parity: Parity,
    /// The BIP341 tweak.
    pub tweak: Scalar,
    /// The Taproot output key.
    pub output: XOnlyPublicKey,
    /// The parity of the output key.
    pub output_parity: Parity,
}

impl DerivedKey {
    /// Derives the key of `kind` for `group`.
    ///
    /// # Errors
    /// Only with negligible probability (see `KeyDerivationError`).
    pub fn derive(group: &NetworkKey, kind: OutputKind) -> Result<Self, KeyDerivationError> {
        let (x, group_parity) = group.public_key().x_only_public_key();
        let even = PublicKey::from_x_only_public_key(x, Parity::Even);
        let offset = kind_offset(kind)?;
        let key = match offset {
            None => even,
            Some(offset) => even
                .add_exp_tweak(secp(), &offset)
                .map_err(|_| KeyDerivationError("offset key at infinity"))?,
        };
        let (internal, internal_parity) = key.x_only_public_key();
        let tweak = TapTweakHash::from_key_and_tweak(internal, None).to_scalar();
        let (output, output_parity) = internal
            .add_tweak(secp(), &tweak)
            .map_err(|_| KeyDerivationError("output key at infinity"))?;
        Ok(DerivedKey {
            group_negated: group_parity == Parity::Odd,
            offset,
            internal,
            internal_parity,
            tweak,
            output,
            output_parity,
        })
    }

    /// The P2TR output script paying this key.
    pub fn script_pubkey(&self) -> ScriptBuf {
        ScriptBuf::new_p2tr_tweaked(TweakedPublicKey::dangerous_assume_tweaked(self.output))
    }

    /// The address of this key on `network`.
    pub fn address(&self, network: Network) -> Address {
        Address::p2tr_tweaked(
            TweakedPublicKey::dangerous_assume_tweaked(self.output),
            network,
        )
    }
}

/// The three output scripts of one group key, for typing the outputs a block pays.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyScripts {
    /// Deposits.
    pub external: ScriptBuf,
    /// Branch outputs.
    pub branch: ScriptBuf,
    /// Change.
    pub change: ScriptBuf,
}

impl KeyScripts {
    /// Derives the scripts of `group`.
    ///
    /// # Errors
    /// Only with negligible probability (see `KeyDerivationError`).
    pub fn derive(group: &NetworkKey) -> Result<Self, KeyDerivationError> {
        let script = |kind| DerivedKey::derive(group, kind).map(|key| key.script_pubkey());
        Ok(KeyScripts {
            external: script(OutputKind::External)?,
            branch: script(OutputKind::Branch)?,
            change: script(OutputKind::Change)?,
        })
    }

    /// The script paying `kind`.
    pub fn script(&self, kind: OutputKind) -> &ScriptBuf {
        match kind {
            OutputKind::External => &self.external,
            OutputKind::Branch => &self.branch,
            OutputKind::Change => &self.change,
        }
    }

    /// Which of our kinds a script pays, if any.
    pub fn kind_of(&self, script: &bitcoin::Script) -> Option<OutputKind> {
        [OutputKind::External, OutputKind::Branch, OutputKind::Change]
            .into_iter()
            .find(|kind| self.script(*kind).as_script() == script)
    }
}
