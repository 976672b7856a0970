//! What the fuzz targets and their seeds share: the round-trip check every Cap'n Proto type
//! gets, the network key whose scripts the deposit and block targets pay, and the enclave the
//! RPC target serves (its coordinator, its confirmed key pair) with the attestations and plans
//! its seeds carry, so that seeds reach the policy and signing, not only the refusals.
//!
//! A fuzz target fails by panicking, so the checks here assert: a decoder that accepts bytes
//! must give a value that encodes, and decodes again to itself.

use std::fmt::Debug;

use bitcoin::{
    key::{Keypair, XOnlyPublicKey},
    secp256k1::{Message, Secp256k1, SecretKey},
};
use rand_chacha::{rand_core::SeedableRng, ChaCha20Rng};
use schema::{
    amount::Amount,
    hashes::{PlanId, TransactionId},
    ids::{NetworkId, Participant, SeraiBlockNumber, Session, ValidatorSet},
    keys::{KeyPair, NetworkKey},
    messages::coordinator::{Attestation, PlansAcknowledged},
    plan::{OutputId, OutputKind, Payment, PaymentAddress, Plan, PlanInput},
    taproot::KeyScripts,
    transaction::FeeRate,
    wire,
};
use signer_enclave::{enclave::pair_of, key_gen::GeneratedKeys, local_key_gen::generate_keys};

/// Decodes `bytes` as `T`; if they decode, the value must encode within the limits and decode
/// again to the same value (Cap'n Proto's encoding is not canonical, so the bytes may differ).
pub fn wire_round_trip<T: wire::Wire + PartialEq + Debug>(bytes: &[u8]) {
    if let Ok(value) = wire::decode::<T>(bytes) {
        let encoded = match wire::encode(&value) {
            Ok(encoded) => encoded,
            Err(error) => panic!("a decoded {value:?} does not encode: {error}"),
        };
        match wire::decode::<T>(&encoded) {
            Ok(again) => assert_eq!(again, value, "decode(encode(value)) differs"),
            Err(error) => panic!("an encoded {value:?} does not decode: {error}"),
        }
    }
}

/// The secp256k1 generator as a network key: any valid key does, this one needs no secret.
pub fn network_key() -> NetworkKey {
    const GENERATOR: [u8; 33] = [
        0x02, 0x79, 0xbe, 0x66, 0x7e, 0xf9, 0xdc, 0xbb, 0xac, 0x55, 0xa0, 0x62, 0x95, 0xce, 0x87,
        0x0b, 0x07, 0x02, 0x9b, 0xfc, 0xdb, 0x2d, 0xce, 0x28, 0xd9, 0x59, 0xf2, 0x81, 0x5b, 0x16,
        0xf8, 0x17, 0x98,
    ];
    match NetworkKey::from_slice(&GENERATOR) {
        Ok(key) => key,
        Err(error) => panic!("the generator is not a network key: {error:?}"),
    }
}

/// The scripts of `network_key`.
pub fn key_scripts() -> KeyScripts {
    match KeyScripts::derive(&network_key()) {
        Ok(scripts) => scripts,
        Err(error) => panic!("the generator's scripts do not derive: {error:?}"),
    }
}

/// The coordinator whose attestations the RPC target's enclave accepts.
pub fn coordinator() -> Keypair {
    match SecretKey::from_slice(&[0x77; 32]) {
        Ok(secret) => Keypair::from_secret_key(&Secp256k1::new(), &secret),
        Err(error) => panic!("the coordinator's secret is not a key: {error}"),
    }
}

/// The coordinator's key, as the enclave is provisioned with it.
pub fn coordinator_key() -> XOnlyPublicKey {
    coordinator().x_only_public_key().0
}

/// The set the RPC target's enclave holds a confirmed key pair of.
pub const SET: ValidatorSet = ValidatorSet {
    session: Session(0),
    network: NetworkId::Bitcoin,
};

/// Participant 1's keys of a 3-of-4 key generation from a fixed seed: the same in every
/// process, so that seeds written by one run name the key of the enclave in another.
pub fn enclave_keys() -> (KeyPair, GeneratedKeys) {
    let keys = generate_keys(3, 4, &mut ChaCha20Rng::seed_from_u64(0))
        .and_then(|mut keys| keys.remove(&Participant::new(1).ok()?))
        .and_then(|keys| Some((pair_of(&keys)?, keys)));
    match keys {
        Some(keys) => keys,
        None => panic!("a key generation among honest participants failed"),
    }
}

/// The coordinator's acknowledgement of `plans` for `key` in Serai block `block`.
pub fn attest(key: NetworkKey, block: u64, plans: &[PlanId]) -> PlansAcknowledged {
    let block = SeraiBlockNumber(block);
    let digest = PlansAcknowledged::attestation_message(NetworkId::Bitcoin, &key, block, plans);
    let signature =
        Secp256k1::new().sign_schnorr_no_aux_rand(&Message::from_digest(digest), &coordinator());
    PlansAcknowledged {
        block,
        key,
        plans: plans.to_vec(),
        attestation: Attestation(signature.serialize()),
    }
}

/// A plan of `key` spending one deposit (`txid` repeated) to a P2WPKH address, with change.
pub fn plan(key: NetworkKey, txid: u8, fee_rate: u64) -> Option<Plan> {
    Some(Plan {
        key,
        inputs: vec![PlanInput {
            id: OutputId {
                txid: TransactionId([txid; 32]),
                vout: 0,
            },
            kind: OutputKind::External,
            amount: Amount::from_sat(2_000_000).ok()?,
        }],
        payments: vec![Payment {
            address: PaymentAddress::from_bytes(&[&[0x00, 0x14][..], &[3; 20]].concat()).ok()?,
            data: None,
            amount: Amount::from_sat(500_000).ok()?,
        }],
        change: Some(key),
        fee_rate: FeeRate(fee_rate),
        replaces: None,
    })
}
