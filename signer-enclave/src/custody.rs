//! Custody of key shares through PKCS#11: a non-extractable, sensitive AES-256 key generated
//! inside the token seals every key share with AES-GCM before it is stored anywhere, with
//! associated data binding the sealed blob to its key id and purpose. Unsealed shares exist
//! only in zeroizing memory.
//!
//! A sealed blob is `iv (12) || ciphertext || tag (16)`; the IV comes from the token's
//! random generator. The associated data is
//! `"processor-seal-v1" || purpose (u8) || len(key id) (u8) || key id`.

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use cryptoki::{
    context::{CInitializeArgs, CInitializeFlags, Pkcs11},
    error::{Error as Pkcs11Error, RvError},
    mechanism::{aead::GcmParams, Mechanism, MechanismInfo, MechanismType},
    object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle},
    session::{Session, UserType},
    slot::Slot,
    types::AuthPin,
};
use thiserror::Error;
use zeroize::Zeroizing;

/// The label of the sealing key inside the token.
pub const SEALING_KEY_LABEL: &str = "processor-sealing-key";

const AAD_DOMAIN: &[u8] = b"processor-seal-v1";
const IV_LEN: usize = 12;
const TAG_BITS: u64 = 128;

/// What a sealed blob holds; part of the associated data, so a blob sealed for one purpose
/// never unseals as another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// A network (secp256k1) key share.
    NetworkKeyShare,
    /// A batch (Ristretto) key share.
    BatchKeyShare,
    /// The enclave's identity key (`identity`).
    EnclaveIdentity,
}

impl Purpose {
    fn code(self) -> u8 {
        match self {
            Purpose::NetworkKeyShare => 1,
            Purpose::BatchKeyShare => 2,
            Purpose::EnclaveIdentity => 3,
        }
    }
}

/// Which token holds the sealing key: named by its label, its serial number or its slot id
/// (`pkcs11.token_label`, `pkcs11.token_serial`, `pkcs11.slot_id`; exactly one is set).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenSelector {
    /// `CK_TOKEN_INFO.label`, without its padding.
    Label(String),
    /// `CK_TOKEN_INFO.serialNumber`, without its padding.
    Serial(String),
    /// The slot's id.
    SlotId(u64),
}

impl fmt::Display for TokenSelector {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenSelector::Label(label) => {
                write!(formatter, "labelled {label:?} (pkcs11.token_label)")
            }
            TokenSelector::Serial(serial) => {
                write!(formatter, "with serial {serial:?} (pkcs11.token_serial)")
            }
            TokenSelector::SlotId(id) => write!(formatter, "in slot {id} (pkcs11.slot_id)"),
        }
    }
}

/// What a slot's token says about itself, as far as choosing it goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenFacts {
    /// The label, without its padding.
    pub label: String,
    /// The serial number, without its padding.
    pub serial: String,
    /// Whether it was initialized.
    pub initialized: bool,
}

/// A slot skipped while looking for the token: its information could not be read (a token
/// reporting a malformed field, as opencryptoki's soft token does with its time).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedSlot {
    /// The slot's id.
    pub slot: u64,
    /// Why its information could not be read.
    pub error: String,
}

/// The slot `selector` names among `slots` (each with what its token says, or why that could
/// not be read), and the slots skipped on the way. Only initialized tokens are chosen, and
/// only one: two tokens answering to the selector are refused (`Ambiguous`), since opening
/// the wrong one would send it the PIN and, at provisioning, make a sealing key in it. An
/// unreadable slot is skipped, never fatal, so that one odd slot does not hide the configured
/// token. Pure: the lookup's decision, apart from the module's answers.
pub fn choose_slot(
    selector: &TokenSelector,
    slots: Vec<(u64, Result<TokenFacts, String>)>,
) -> (Result<u64, Unchosen>, Vec<SkippedSlot>) {
    let mut skipped = Vec::new();
    let mut named = Vec::new();
    for (slot, facts) in slots {
        let facts = match facts {
            Ok(facts) => facts,
            Err(error) => {
                skipped.push(SkippedSlot { slot, error });
                continue;
            }
        };
        let answers = match selector {
            TokenSelector::Label(label) => facts.label == *label,
            TokenSelector::Serial(serial) => facts.serial == *serial,
            TokenSelector::SlotId(id) => slot == *id,
        };
        if answers && facts.initialized {
            named.push(slot);
        }
    }
    let chosen = match named.as_slice() {
        [] => Err(Unchosen::None),
        [slot] => Ok(*slot),
        _ => Err(Unchosen::Ambiguous(named)),
    };
    (chosen, skipped)
}

/// Why no slot was chosen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unchosen {
    /// No initialized token answers to the selector.
    None,
    /// Several do, in these slots.
    Ambiguous(Vec<u64>),
}

/// A label or serial number as the token gives it, without its padding (spaces, and the NULs
/// some tokens pad with).
fn unpadded(field: &str) -> String {
    field.trim_end_matches([' ', '\0']).to_owned()
}

/// A use of a mechanism that sealing needs: the mechanism, its name for the operator (and
/// with the use, for a token offering the mechanism without it), and whether the token's
/// information says it does that.
struct Required {
    mechanism: MechanismType,
    name: &'static str,
    use_name: &'static str,
    does: fn(&MechanismInfo) -> bool,
}

/// What sealing needs of a token: AES key generation, AES-GCM encryption and decryption.
const REQUIRED: [Required; 3] = [
    Required {
        mechanism: MechanismType::AES_KEY_GEN,
        name: "CKM_AES_KEY_GEN",
        use_name: "CKM_AES_KEY_GEN (generate)",
        does: MechanismInfo::generate,
    },
    Required {
        mechanism: MechanismType::AES_GCM,
        name: "CKM_AES_GCM",
        use_name: "CKM_AES_GCM (encrypt)",
        does: MechanismInfo::encrypt,
    },
    Required {
        mechanism: MechanismType::AES_GCM,
        name: "CKM_AES_GCM",
        use_name: "CKM_AES_GCM (decrypt)",
        does: MechanismInfo::decrypt,
    },
];

/// Whether opening custody may create the sealing key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SealingKey {
    /// Provisioning: use the token's sealing key, creating it if there is none.
    CreateIfMissing,
    /// Running: the sealing key must exist.
    MustExist,
}

/// The sealing key's attributes that make it safe, read back from the token.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SealingKeyAttributes {
    /// `CKA_SENSITIVE`: the value never leaves the token in the clear.
    pub sensitive: bool,
    /// `CKA_ALWAYS_SENSITIVE`: it never did.
    pub always_sensitive: bool,
    /// `CKA_EXTRACTABLE`: whether it could be wrapped out of the token.
    pub extractable: bool,
    /// `CKA_NEVER_EXTRACTABLE`: it never could.
    pub never_extractable: bool,
    /// `CKA_TOKEN`: it persists in the token.
    pub token: bool,
    /// `CKA_VALUE_LEN`: its length in bytes.
    pub value_len: u64,
    /// `CKA_LOCAL`: it was generated inside the token, not imported.
    pub local: bool,
}

/// A custody failure. Configuration mistakes name what to fix.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CustodyError {
    /// The PKCS#11 module file does not exist.
    #[error("PKCS#11 module {0} does not exist (pkcs11.module)")]
    ModuleMissing(PathBuf),
    /// The module could not be loaded or initialized.
    #[error("PKCS#11 module {path} could not be loaded: {source}")]
    ModuleLoad {
        /// The module.
        path: PathBuf,
        /// Why.
        source: Pkcs11Error,
    },
    /// No initialized token is the one configured.
    #[error("no initialized PKCS#11 token {selector}{}", skipped_note(.skipped))]
    TokenNotFound {
        /// The token looked for.
        selector: TokenSelector,
        /// The slots that could not be read on the way.
        skipped: Vec<SkippedSlot>,
    },
    /// More than one initialized token answers to the configuration: which one holds the
    /// sealing key is ambiguous.
    #[error("PKCS#11 tokens in slots {slots:?} are all {selector}; name the token by its serial (pkcs11.token_serial)")]
    AmbiguousToken {
        /// The token looked for.
        selector: TokenSelector,
        /// The slots of the tokens answering to it.
        slots: Vec<u64>,
    },
    /// The token lacks a mechanism, or a use of one, that sealing needs.
    #[error("the token cannot seal: it lacks {0}")]
    MissingMechanism(&'static str),
    /// The token refused the PIN.
    #[error("the token refused the PIN (pkcs11.pin_file)")]
    WrongPin,
    /// The token has no sealing key and this is not provisioning.
    #[error("the token has no sealing key: run `signer-enclave provision` first")]
    SealingKeyMissing,
    /// A sealed blob is too short, or failed authentication: tampered, or sealed for another
    /// key id, purpose or token.
    #[error("sealed key share does not unseal: tampered or not ours")]
    Unseal,
    /// A key id longer than 255 bytes.
    #[error("key id too long")]
    KeyIdTooLong,
    /// Any other PKCS#11 failure.
    #[error("PKCS#11: {0}")]
    Pkcs11(#[from] Pkcs11Error),
    /// The session lock was poisoned by a panic elsewhere: custody stops.
    #[error("custody session poisoned")]
    Poisoned,
    /// More than one key carries the sealing key's label: which one seals is ambiguous, and a
    /// planted key could be chosen.
    #[error("{0} keys in the token are labelled {SEALING_KEY_LABEL:?}; exactly one must be")]
    AmbiguousSealingKey(usize),
    /// The sealing key could leave the token or is not stored in it.
    #[error("the sealing key is not safe to seal with: {0:?}")]
    UnsafeSealingKey(SealingKeyAttributes),
}

fn skipped_note(skipped: &[SkippedSlot]) -> String {
    skipped
        .iter()
        .map(|slot| {
            format!(
                "; slot {}'s token information cannot be read ({})",
                slot.slot, slot.error
            )
        })
        .collect()
}

/// Loads and initializes a PKCS#11 module. Call once per process: every token and session
/// shares it.
///
/// # Errors
/// The module is missing or does not initialize.
pub fn load_module(path: &Path) -> Result<Arc<Pkcs11>, CustodyError> {
    if !path.is_file() {
        return Err(CustodyError::ModuleMissing(path.to_owned()));
    }
    let load = || -> Result<Pkcs11, Pkcs11Error> {
        let pkcs11 = Pkcs11::new(path)?;
        pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))?;
        Ok(pkcs11)
    };
    load()
        .map(Arc::new)
        .map_err(|source| CustodyError::ModuleLoad {
            path: path.to_owned(),
            source,
        })
}

/// An open, logged-in session on the token holding the sealing key.
pub struct Custody {
    session: Mutex<Session>,
    key: ObjectHandle,
    skipped: Vec<SkippedSlot>,
    token: OpenToken,
}

/// The token custody opened: where it is and what it says it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenToken {
    /// Its slot.
    pub slot: u64,
    /// Its label.
    pub label: String,
    /// Its serial number.
    pub serial: String,
}

impl fmt::Display for OpenToken {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "slot {} label {:?} serial {:?}",
            self.slot, self.label, self.serial
        )
    }
}

impl SealingKeyAttributes {
    /// Whether a key with these attributes may seal shares: sensitive and never extractable
    /// since it was made, generated in the token and stored there, and a 256-bit key (what
    /// provisioning makes: a planted AES-128 key is refused).
    pub fn safe(&self) -> bool {
        self.sensitive
            && self.always_sensitive
            && !self.extractable
            && self.never_extractable
            && self.token
            && self.local
            && self.value_len == 32
    }
}

impl Custody {
    /// Opens the token `selector` names (slots whose information cannot be read are skipped,
    /// logged, and listed by `skipped_slots`), checks that it has the mechanisms sealing needs,
    /// logs in as its user (the PIN checked even when another session of this process is
    /// logged in already), and finds (or, when provisioning, creates) the sealing key: exactly
    /// one key carries its label, and its attributes are checked every time.
    ///
    /// # Errors
    /// No such token, a token without a mechanism sealing needs (named), a wrong PIN, no
    /// sealing key outside provisioning, an ambiguous or unsafe sealing key, or a PKCS#11
    /// failure.
    pub fn open(
        pkcs11: &Pkcs11,
        selector: &TokenSelector,
        pin: &AuthPin,
        sealing_key: SealingKey,
    ) -> Result<Self, CustodyError> {
        let slots = pkcs11.get_slots_with_token()?;
        let facts: Vec<(u64, Result<TokenFacts, String>)> = slots
            .iter()
            .map(|slot| {
                let facts = pkcs11
                    .get_token_info(*slot)
                    .map(|info| TokenFacts {
                        label: unpadded(info.label()),
                        serial: unpadded(info.serial_number()),
                        initialized: info.token_initialized(),
                    })
                    .map_err(|error| error.to_string());
                (slot.id(), facts)
            })
            .collect();
        let (chosen, skipped) = choose_slot(selector, facts.clone());
        for slot in &skipped {
            tracing::warn!(slot = slot.slot, error = %slot.error, "a PKCS#11 slot's token information cannot be read; skipped");
        }
        let slot = match chosen {
            Ok(id) => slots.into_iter().find(|slot| slot.id() == id),
            Err(Unchosen::Ambiguous(slots)) => {
                return Err(CustodyError::AmbiguousToken {
                    selector: selector.clone(),
                    slots,
                })
            }
            Err(Unchosen::None) => None,
        }
        .ok_or_else(|| CustodyError::TokenNotFound {
            selector: selector.clone(),
            skipped: skipped.clone(),
        })?;
        let token = facts
            .into_iter()
            .find_map(|(id, facts)| match facts {
                Ok(facts) if id == slot.id() => Some(OpenToken {
                    slot: id,
                    label: facts.label,
                    serial: facts.serial,
                }),
                _ => None,
            })
            .ok_or_else(|| CustodyError::TokenNotFound {
                selector: selector.clone(),
                skipped: skipped.clone(),
            })?;
        tracing::info!(%token, "PKCS#11 token found");
        check_mechanisms(pkcs11, slot)?;
        let session = pkcs11.open_rw_session(slot)?;
        login(&session, slot.id(), pin)?;
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Label(SEALING_KEY_LABEL.as_bytes().to_vec()),
        ];
        let found = session.find_objects(&template)?;
        if found.len() > 1 {
            return Err(CustodyError::AmbiguousSealingKey(found.len()));
        }
        let key = match found.first() {
            Some(key) => *key,
            None if sealing_key == SealingKey::CreateIfMissing => session.generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Token(true),
                    Attribute::Private(true),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(false),
                    Attribute::Modifiable(false),
                    Attribute::Encrypt(true),
                    Attribute::Decrypt(true),
                    Attribute::ValueLen(32.into()),
                    Attribute::Label(SEALING_KEY_LABEL.as_bytes().to_vec()),
                ],
            )?,
            None => return Err(CustodyError::SealingKeyMissing),
        };
        let custody = Custody {
            session: Mutex::new(session),
            key,
            skipped,
            token,
        };
        let attributes = custody.sealing_key_attributes()?;
        if !attributes.safe() {
            return Err(CustodyError::UnsafeSealingKey(attributes));
        }
        Ok(custody)
    }

    /// The sealing key's security attributes, as the token reports them.
    ///
    /// # Errors
    /// The token failed or did not report an attribute.
    pub fn sealing_key_attributes(&self) -> Result<SealingKeyAttributes, CustodyError> {
        let session = self.session.lock().map_err(|_| CustodyError::Poisoned)?;
        let mut read = SealingKeyAttributes::default();
        for attribute in session.get_attributes(
            self.key,
            &[
                AttributeType::Sensitive,
                AttributeType::AlwaysSensitive,
                AttributeType::Extractable,
                AttributeType::NeverExtractable,
                AttributeType::Token,
                AttributeType::ValueLen,
                AttributeType::Local,
            ],
        )? {
            match attribute {
                Attribute::Sensitive(value) => read.sensitive = value,
                Attribute::AlwaysSensitive(value) => read.always_sensitive = value,
                Attribute::Extractable(value) => read.extractable = value,
                Attribute::NeverExtractable(value) => read.never_extractable = value,
                Attribute::Token(value) => read.token = value,
                Attribute::ValueLen(len) => read.value_len = u64::from(len),
                Attribute::Local(value) => read.local = value,
                _ => {}
            }
        }
        Ok(read)
    }

    /// The token opened.
    pub fn token(&self) -> &OpenToken {
        &self.token
    }

    /// The slots skipped while looking for the token, their information unreadable.
    pub fn skipped_slots(&self) -> &[SkippedSlot] {
        &self.skipped
    }

    /// Runs `f` with the session, for inspection.
    ///
    /// # Errors
    /// The session lock was poisoned.
    pub fn with_session<T>(&self, f: impl FnOnce(&Session) -> T) -> Result<T, CustodyError> {
        let session = self.session.lock().map_err(|_| CustodyError::Poisoned)?;
        Ok(f(&session))
    }
}

/// Refuses a token without what sealing needs, naming the first thing missing: AES key
/// generation, and AES-GCM encryption and decryption. (A token without them would otherwise be
/// provisioned and fail at the first key generation.)
fn check_mechanisms(pkcs11: &Pkcs11, slot: Slot) -> Result<(), CustodyError> {
    let offered = pkcs11.get_mechanism_list(slot)?;
    for required in REQUIRED {
        if !offered.contains(&required.mechanism) {
            return Err(CustodyError::MissingMechanism(required.name));
        }
        if !(required.does)(&pkcs11.get_mechanism_info(slot, required.mechanism)?) {
            return Err(CustodyError::MissingMechanism(required.use_name));
        }
    }
    Ok(())
}

/// The PINs this process logged in to each slot with, as digests. PKCS#11 logs a user in for
/// the whole process: a second login answers `UserAlreadyLoggedIn` without checking its PIN.
/// That answer is taken only for the PIN that logged in; any other PIN is wrong.
static LOGINS: Mutex<Vec<(u64, [u8; 32])>> = Mutex::new(Vec::new());

fn pin_digest(pin: &AuthPin) -> [u8; 32] {
    use bitcoin::hashes::{sha256, Hash};
    use secrecy::ExposeSecret;
    sha256::Hash::hash(pin.expose_secret().as_bytes()).to_byte_array()
}

/// Logs in as the token's user, the PIN checked even when this process is logged in already.
fn login(session: &Session, slot: u64, pin: &AuthPin) -> Result<(), CustodyError> {
    let digest = pin_digest(pin);
    let mut logins = LOGINS.lock().map_err(|_| CustodyError::Poisoned)?;
    match session.login(UserType::User, Some(pin)) {
        Ok(()) => {
            logins.retain(|(logged, _)| *logged != slot);
            logins.push((slot, digest));
            Ok(())
        }
        Err(Pkcs11Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {
            match logins.iter().find(|(logged, _)| *logged == slot) {
                Some((_, known)) if *known == digest => Ok(()),
                Some(_) => Err(CustodyError::WrongPin),
                // Logged in by someone else in this process: log out and let the token check.
                None => {
                    session.logout()?;
                    session
                        .login(UserType::User, Some(pin))
                        .map_err(|error| match error {
                            Pkcs11Error::Pkcs11(RvError::PinIncorrect, _) => CustodyError::WrongPin,
                            other => other.into(),
                        })?;
                    logins.push((slot, digest));
                    Ok(())
                }
            }
        }
        Err(Pkcs11Error::Pkcs11(RvError::PinIncorrect, _)) => Err(CustodyError::WrongPin),
        Err(error) => Err(error.into()),
    }
}

/// What the enclave asks of custody: a key share sealed for storage, and back. Implemented by
/// the PKCS#11 token (`Custody`) and, for tests and fuzzing, by an in-memory twin
/// (`memory_custody`) held to the same behaviour by one conformance suite.
pub trait Seal {
    /// Seals a key share for storage, bound to its key id and purpose; sealing the same share
    /// twice gives different blobs.
    ///
    /// # Errors
    /// The key id is too long, or custody failed.
    fn seal(&self, key_id: &[u8], purpose: Purpose, share: &[u8]) -> Result<Vec<u8>, CustodyError>;

    /// Unseals a key share into zeroizing memory.
    ///
    /// # Errors
    /// `Unseal` when the blob was tampered with, truncated, or sealed for another key id,
    /// purpose or custody.
    fn unseal(
        &self,
        key_id: &[u8],
        purpose: Purpose,
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CustodyError>;
}

impl Seal for Custody {
    fn seal(&self, key_id: &[u8], purpose: Purpose, share: &[u8]) -> Result<Vec<u8>, CustodyError> {
        let aad = associated_data(key_id, purpose)?;
        let session = self.session.lock().map_err(|_| CustodyError::Poisoned)?;
        let mut iv = [0u8; IV_LEN];
        session.generate_random_slice(&mut iv)?;
        let mut nonce = iv;
        let params = GcmParams::new(&mut nonce, &aad, TAG_BITS.into())?;
        let ciphertext = session.encrypt(&Mechanism::AesGcm(params), self.key, share)?;
        let mut sealed = Vec::with_capacity(IV_LEN + ciphertext.len());
        sealed.extend_from_slice(&iv);
        sealed.extend_from_slice(&ciphertext);
        Ok(sealed)
    }

    fn unseal(
        &self,
        key_id: &[u8],
        purpose: Purpose,
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CustodyError> {
        let aad = associated_data(key_id, purpose)?;
        if sealed.len() < IV_LEN + 16 {
            return Err(CustodyError::Unseal);
        }
        let (iv, ciphertext) = sealed.split_at(IV_LEN);
        let mut iv = <[u8; IV_LEN]>::try_from(iv).map_err(|_| CustodyError::Unseal)?;
        let session = self.session.lock().map_err(|_| CustodyError::Poisoned)?;
        let params = GcmParams::new(&mut iv, &aad, TAG_BITS.into())?;
        session
            .decrypt(&Mechanism::AesGcm(params), self.key, ciphertext)
            .map(Zeroizing::new)
            .map_err(|_| CustodyError::Unseal)
    }
}

/// `"processor-seal-v1" || purpose (u8) || len(key id) (u8) || key id`: what binds a sealed
/// blob to its key id and purpose.
pub(crate) fn associated_data(key_id: &[u8], purpose: Purpose) -> Result<Vec<u8>, CustodyError> {
    let len = u8::try_from(key_id.len()).map_err(|_| CustodyError::KeyIdTooLong)?;
    let mut aad = Vec::with_capacity(AAD_DOMAIN.len() + 2 + key_id.len());
    aad.extend_from_slice(AAD_DOMAIN);
    aad.push(purpose.code());
    aad.push(len);
    aad.extend_from_slice(key_id);
    Ok(aad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(label: &str, serial: &str, initialized: bool) -> Result<TokenFacts, String> {
        Ok(TokenFacts {
            label: label.into(),
            serial: serial.into(),
            initialized,
        })
    }

    /// A slot whose information cannot be read (opencryptoki's soft token reports a malformed
    /// time) is skipped and listed, and the configured token is still found behind it, by
    /// label, serial or slot id; an uninitialized token is never chosen, nor one of two
    /// answering to the same name. The error names the skipped slot.
    #[test]
    fn an_unreadable_slot_is_skipped_and_the_token_still_found() {
        let slots = || {
            vec![
                (0, Err("invalid time".to_owned())),
                (1, token("processor", "AAAA", false)),
                (2, token("other", "BBBB", true)),
                (3, token("processor", "CCCC", true)),
                (4, token("twin", "DDDD", true)),
                (5, token("twin", "EEEE", true)),
            ]
        };
        let skipped = vec![SkippedSlot {
            slot: 0,
            error: "invalid time".into(),
        }];
        for (selector, chosen) in [
            (TokenSelector::Label("processor".into()), Ok(3)),
            (TokenSelector::Serial("BBBB".into()), Ok(2)),
            (TokenSelector::SlotId(3), Ok(3)),
            (TokenSelector::SlotId(1), Err(Unchosen::None)),
            (TokenSelector::Label("missing".into()), Err(Unchosen::None)),
            (TokenSelector::SlotId(0), Err(Unchosen::None)),
            // Two tokens under one label: neither is opened.
            (
                TokenSelector::Label("twin".into()),
                Err(Unchosen::Ambiguous(vec![4, 5])),
            ),
            (TokenSelector::Serial("EEEE".into()), Ok(5)),
        ] {
            assert_eq!(
                choose_slot(&selector, slots()),
                (chosen, skipped.clone()),
                "{selector}"
            );
        }
    }

    #[test]
    fn a_token_not_found_names_the_slots_that_could_not_be_read() {
        let error = CustodyError::TokenNotFound {
            selector: TokenSelector::SlotId(0),
            skipped: vec![SkippedSlot {
                slot: 0,
                error: "invalid time".into(),
            }],
        };
        assert_eq!(
            error.to_string(),
            "no initialized PKCS#11 token in slot 0 (pkcs11.slot_id); slot 0's token \
             information cannot be read (invalid time)"
        );
        assert_eq!(unpadded("processor\0\0  "), "processor");
    }
}
