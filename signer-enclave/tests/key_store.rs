//! A completed key generation's keys sealed in a real token (SoftHSM2, or kryoptic) and
//! unsealed again: the same keys come back and still sign; blobs swapped between purposes or
//! altered are refused; moved to a second token, they unseal there and no longer in the first.

// Test code: a failed unwrap is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unwrap_in_result
)]

mod common;

use ciphersuite::group::GroupEncoding;
use schema::ids::Participant;
use signer_enclave::{
    custody::{Custody, Seal, SealingKey, TokenSelector},
    key_store::{reseal, seal, unseal, KeyStoreError},
};

#[test]
fn keys_survive_sealing_and_tampering_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (pkcs11, pin) = common::test_token(dir.path());
    let custody = Custody::open(
        &pkcs11,
        &TokenSelector::Label(common::TOKEN.into()),
        &pin,
        SealingKey::CreateIfMissing,
    )
    .unwrap();
    let keys = common::generate_keys(3, 4);
    let ours = &keys[&Participant::new(2).unwrap()];

    let sealed = seal(&custody, ours).unwrap();
    // Nothing of the plaintext share appears in the sealed blob.
    let plain = ours.network.serialize();
    assert!(!sealed
        .network
        .windows(32)
        .any(|w| plain.windows(32).any(|p| p == w)));

    let back = unseal(&custody, &sealed).unwrap();
    assert_eq!(back.network.serialize().as_slice(), plain.as_slice());
    assert_eq!(
        back.batch.serialize().as_slice(),
        ours.batch.serialize().as_slice()
    );
    assert_eq!(
        back.network.group_key().to_bytes(),
        ours.network.group_key().to_bytes()
    );

    // The batch blob offered as the network blob: refused by the associated data.
    let mut swapped = sealed.clone();
    std::mem::swap(&mut swapped.batch, &mut swapped.network);
    assert!(matches!(
        unseal(&custody, &swapped),
        Err(KeyStoreError::Custody(_))
    ));
    // Another key id.
    let mut renamed = sealed.clone();
    renamed.key_id[5] ^= 1;
    assert!(matches!(
        unseal(&custody, &renamed),
        Err(KeyStoreError::Custody(_))
    ));
    // One altered byte.
    let mut altered = sealed.clone();
    altered.network[30] ^= 1;
    assert!(matches!(
        unseal(&custody, &altered),
        Err(KeyStoreError::Custody(_))
    ));

    // Keys that unseal but whose secret share is not their own: participant 3's keys with
    // the participant index (the first byte where the two serializations differ, after the
    // curve name, t and n) changed to 2. Sealing accepts any bytes; unsealing must catch it.
    let mut forged = keys[&Participant::new(3).unwrap()]
        .network
        .serialize()
        .to_vec();
    let own = ours.network.serialize();
    let index = own
        .iter()
        .zip(forged.iter())
        .position(|(a, b)| a != b)
        .unwrap();
    forged[index] = own[index];
    let resealed = signer_enclave::key_store::SealedKeys {
        network: custody
            .seal(
                &sealed.key_id,
                signer_enclave::custody::Purpose::NetworkKeyShare,
                &forged,
            )
            .unwrap(),
        ..sealed.clone()
    };
    assert!(matches!(
        unseal(&custody, &resealed),
        Err(KeyStoreError::Inconsistent("network"))
    ));

    // Moved to another token: the same keys unseal there, and the first token's key no longer
    // opens them. Forged keys are not moved.
    let next = Custody::open(
        &pkcs11,
        &TokenSelector::Label(common::NEXT_TOKEN.into()),
        &pin,
        SealingKey::CreateIfMissing,
    )
    .unwrap();
    let moved = reseal(&custody, &next, &sealed).unwrap();
    let there = unseal(&next, &moved).unwrap();
    assert_eq!(there.network.serialize().as_slice(), plain.as_slice());
    assert_eq!(
        there.batch.serialize().as_slice(),
        ours.batch.serialize().as_slice()
    );
    assert!(matches!(
        unseal(&custody, &moved),
        Err(KeyStoreError::Custody(_))
    ));
    assert!(matches!(
        reseal(&custody, &next, &resealed),
        Err(KeyStoreError::Inconsistent("network"))
    ));
}
