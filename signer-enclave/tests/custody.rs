//! Custody through a real SoftHSM2 token (its own token directory, made for this test):
//! provisioning creates one sealing key that the token will not reveal, shares round-trip
//! through sealing, and every way a blob or a configuration can be wrong is refused by name.
//!
//! One test function uses the token: a PKCS#11 module is initialized once per process. The
//! in-memory twin is held to the same sealing behaviour.

// Test code: a failed unwrap is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unwrap_in_result
)]

use std::path::Path;

mod common;

use common::TOKEN as LABEL;
use cryptoki::{
    object::{Attribute, ObjectClass},
    types::AuthPin,
};
use signer_enclave::{
    custody::{load_module, Custody, CustodyError, Purpose, Seal, SealingKey, TokenSelector},
    memory_custody::MemoryCustody,
};

/// What every custody (the token, and the in-memory twin the fast tests and fuzz targets use)
/// must do: sealing round-trips, never shows the share, differs each time (fresh IV); another
/// key id, another purpose, a flipped bit anywhere, a truncation, an overlong key id: refused.
fn seals_like_a_token(custody: &dyn Seal) {
    let share = b"a 184-byte ThresholdKeys serialization stands here in the test".to_vec();
    let sealed = custody
        .seal(b"key-1", Purpose::NetworkKeyShare, &share)
        .unwrap();
    assert!(!sealed
        .windows(16)
        .any(|w| share.windows(16).any(|s| s == w)));
    assert_ne!(
        sealed,
        custody
            .seal(b"key-1", Purpose::NetworkKeyShare, &share)
            .unwrap()
    );
    let unsealed = custody
        .unseal(b"key-1", Purpose::NetworkKeyShare, &sealed)
        .unwrap();
    assert_eq!(unsealed.as_slice(), share.as_slice());
    let empty = custody.seal(b"key-1", Purpose::BatchKeyShare, &[]).unwrap();
    assert!(custody
        .unseal(b"key-1", Purpose::BatchKeyShare, &empty)
        .unwrap()
        .is_empty());

    assert!(matches!(
        custody.unseal(b"key-2", Purpose::NetworkKeyShare, &sealed),
        Err(CustodyError::Unseal)
    ));
    assert!(matches!(
        custody.unseal(b"key-1", Purpose::BatchKeyShare, &sealed),
        Err(CustodyError::Unseal)
    ));
    for at in 0..sealed.len() {
        let mut tampered = sealed.clone();
        tampered[at] ^= 1;
        assert!(matches!(
            custody.unseal(b"key-1", Purpose::NetworkKeyShare, &tampered),
            Err(CustodyError::Unseal)
        ));
    }
    for len in [0, 20, 27, 28, sealed.len() - 1] {
        assert!(matches!(
            custody.unseal(b"key-1", Purpose::NetworkKeyShare, &sealed[..len]),
            Err(CustodyError::Unseal)
        ));
    }
    assert!(matches!(
        custody.seal(&[0; 256], Purpose::NetworkKeyShare, &share),
        Err(CustodyError::KeyIdTooLong)
    ));
}

#[test]
fn the_memory_twin_seals_like_the_token() {
    seals_like_a_token(&MemoryCustody::default());
    // Each twin has its own key: another one's blobs are not its own.
    let sealed = MemoryCustody::default()
        .seal(b"key-1", Purpose::NetworkKeyShare, b"share")
        .unwrap();
    assert!(matches!(
        MemoryCustody::default().unseal(b"key-1", Purpose::NetworkKeyShare, &sealed),
        Err(CustodyError::Unseal)
    ));
}

/// Through SoftHSM2, or kryoptic with `PROCESSOR_TEST_KRYOPTIC` (`ops/test` runs both).
#[test]
fn custody_through_a_token() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        load_module(Path::new("/nonexistent/libpkcs11.so")),
        Err(CustodyError::ModuleMissing(_))
    ));
    let (pkcs11, pin) = common::test_token(dir.path());

    // Not provisioned yet: running refuses; provisioning creates the key.
    assert!(matches!(
        Custody::open(
            &pkcs11,
            &TokenSelector::Label(LABEL.into()),
            &pin,
            SealingKey::MustExist
        ),
        Err(CustodyError::SealingKeyMissing)
    ));
    let custody = Custody::open(
        &pkcs11,
        &TokenSelector::Label(LABEL.into()),
        &pin,
        SealingKey::CreateIfMissing,
    )
    .unwrap();

    // The sealing key is sensitive and never extractable, and there is exactly one.
    let attributes = custody.sealing_key_attributes().unwrap();
    assert!(attributes.sensitive && attributes.always_sensitive);
    assert!(!attributes.extractable && attributes.never_extractable);
    assert!(attributes.token && attributes.local);
    assert_eq!(attributes.value_len, 32);
    let again = Custody::open(
        &pkcs11,
        &TokenSelector::Label(LABEL.into()),
        &pin,
        SealingKey::CreateIfMissing,
    )
    .unwrap();
    let keys = again
        .with_session(|session| {
            session
                .find_objects(&[Attribute::Class(ObjectClass::SECRET_KEY)])
                .unwrap()
                .len()
        })
        .unwrap();
    assert_eq!(keys, 1, "provisioning twice made a second key");

    seals_like_a_token(&custody);
    // The other session of the same token unseals what this one sealed.
    let share = b"a share sealed in one session".to_vec();
    let sealed = custody
        .seal(b"key-1", Purpose::NetworkKeyShare, &share)
        .unwrap();
    assert_eq!(
        again
            .unseal(b"key-1", Purpose::NetworkKeyShare, &sealed)
            .unwrap()
            .as_slice(),
        share.as_slice()
    );

    // The same token named by its serial number and by its slot id.
    let (slot, serial) = custody
        .with_session(|session| {
            let info = session.get_session_info().unwrap();
            let token = pkcs11.get_token_info(info.slot_id()).unwrap();
            (
                info.slot_id().id(),
                token.serial_number().trim_end().to_owned(),
            )
        })
        .unwrap();
    for selector in [TokenSelector::Serial(serial), TokenSelector::SlotId(slot)] {
        Custody::open(&pkcs11, &selector, &pin, SealingKey::MustExist).unwrap();
    }

    // A token that cannot seal (no AES-GCM) is refused at open, naming what it lacks.
    if common::has_token_without_gcm() {
        let no_gcm = TokenSelector::Label(common::NO_GCM_TOKEN.into());
        assert!(matches!(
            Custody::open(&pkcs11, &no_gcm, &pin, SealingKey::CreateIfMissing),
            Err(CustodyError::MissingMechanism("CKM_AES_GCM"))
        ));
    }

    // Configuration mistakes are named.
    assert!(matches!(
        Custody::open(
            &pkcs11,
            &TokenSelector::Label("no-such-token".into()),
            &pin,
            SealingKey::MustExist
        ),
        Err(CustodyError::TokenNotFound { skipped, .. }) if skipped.is_empty()
    ));
    // While this process is logged in, the token answers a second login without checking its
    // PIN: a wrong one is still refused.
    assert!(matches!(
        Custody::open(
            &pkcs11,
            &TokenSelector::Label(LABEL.into()),
            &AuthPin::new("wrong".into()),
            SealingKey::MustExist
        ),
        Err(CustodyError::WrongPin)
    ));
    // A second key under the sealing key's label (planted, or left by a botched restore):
    // which one seals is ambiguous, so nothing opens. A sealing key that could leave the
    // token is refused too.
    let planted = plant(&custody, false, 32);
    assert!(matches!(
        Custody::open(
            &pkcs11,
            &TokenSelector::Label(LABEL.into()),
            &pin,
            SealingKey::MustExist
        ),
        Err(CustodyError::AmbiguousSealingKey(2))
    ));
    custody
        .with_session(|session| {
            let genuine = session
                .find_objects(&[Attribute::Class(ObjectClass::SECRET_KEY)])
                .unwrap()
                .into_iter()
                .find(|key| *key != planted)
                .unwrap();
            session.destroy_object(genuine).unwrap();
        })
        .unwrap();
    assert!(matches!(
        Custody::open(&pkcs11, &TokenSelector::Label(LABEL.into()), &pin, SealingKey::MustExist),
        Err(CustodyError::UnsafeSealingKey(attributes)) if attributes.extractable
    ));
    // A planted key that never leaves the token but is only 128 bits: refused too.
    custody
        .with_session(|session| session.destroy_object(planted).unwrap())
        .unwrap();
    plant(&custody, true, 16);
    assert!(matches!(
        Custody::open(&pkcs11, &TokenSelector::Label(LABEL.into()), &pin, SealingKey::MustExist),
        Err(CustodyError::UnsafeSealingKey(attributes))
            if attributes.value_len == 16 && !attributes.extractable
    ));
    drop(custody);
    drop(again);
    assert!(matches!(
        Custody::open(
            &pkcs11,
            &TokenSelector::Label(LABEL.into()),
            &AuthPin::new("wrong".into()),
            SealingKey::MustExist
        ),
        Err(CustodyError::WrongPin)
    ));
}

/// A key planted in the token under the sealing key's label: sensitive and never extractable,
/// or neither; of `bytes` bytes.
fn plant(custody: &Custody, safe: bool, bytes: u64) -> cryptoki::object::ObjectHandle {
    custody
        .with_session(|session| {
            session
                .generate_key(
                    &cryptoki::mechanism::Mechanism::AesKeyGen,
                    &[
                        Attribute::Token(true),
                        Attribute::Private(true),
                        Attribute::Sensitive(safe),
                        Attribute::Extractable(!safe),
                        Attribute::ValueLen(bytes.into()),
                        Attribute::Label(signer_enclave::custody::SEALING_KEY_LABEL.into()),
                    ],
                )
                .unwrap()
        })
        .unwrap()
}
