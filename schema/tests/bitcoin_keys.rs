//! Our Taproot keys and addresses: the BIP341 test vector, the vectors that `generate.py`
//! computes with its own curve arithmetic, and agreement with the `bitcoin` crate.

// Test code: a failed unwrap is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unwrap_in_result
)]

use bitcoin::{key::Secp256k1, Address, Network};
use proptest::prelude::*;
use schema::{
    keys::NetworkKey,
    plan::OutputKind,
    strategies::network_key,
    taproot::{DerivedKey, KeyScripts},
};
use serde::Deserialize;

const KINDS: [OutputKind; 3] = [OutputKind::External, OutputKind::Branch, OutputKind::Change];

#[test]
fn bip341_key_path_vector() {
    // BIP341 wallet test vectors, scriptPubKey[0]: key path only, no script tree.
    let group = NetworkKey::from_slice(
        &hex::decode("02d6889cb081036e0faefa3a35157ad71086b123b2b144b649798b494c300a961d").unwrap(),
    )
    .unwrap();
    let key = DerivedKey::derive(&group, OutputKind::External).unwrap();
    assert_eq!(
        hex::encode(key.output.serialize()),
        "53a1f6e454df1aa2776a2814a721372d6258050de330b3c6d10ee8f4e0dda343"
    );
    assert_eq!(
        key.address(Network::Bitcoin).to_string(),
        "bc1p2wsldez5mud2yam29q22wgfh9439spgduvct83k3pm50fcxa5dps59h4z5"
    );
}

#[derive(Deserialize)]
struct KeyVector {
    name: String,
    group: String,
    external: String,
    branch: String,
    change: String,
}

#[test]
fn derived_scripts_match_the_independent_vectors() {
    let vectors: Vec<KeyVector> =
        serde_json::from_str(include_str!("vectors/taproot_keys.json")).unwrap();
    assert!(
        vectors.iter().any(|v| v.group.starts_with("03")),
        "an odd-y group key"
    );
    for vector in vectors {
        let group = NetworkKey::from_slice(&hex::decode(&vector.group).unwrap()).unwrap();
        let scripts = KeyScripts::derive(&group).unwrap();
        assert_eq!(
            hex::encode(scripts.external.as_bytes()),
            vector.external,
            "{}",
            vector.name
        );
        assert_eq!(
            hex::encode(scripts.branch.as_bytes()),
            vector.branch,
            "{}",
            vector.name
        );
        assert_eq!(
            hex::encode(scripts.change.as_bytes()),
            vector.change,
            "{}",
            vector.name
        );
    }
}

proptest! {
    #[test]
    fn the_bitcoin_crate_derives_the_same_addresses(group in network_key()) {
        let secp = Secp256k1::verification_only();
        let scripts = KeyScripts::derive(&group).unwrap();
        for kind in KINDS {
            let key = DerivedKey::derive(&group, kind).unwrap();
            for network in [Network::Bitcoin, Network::Testnet, Network::Regtest] {
                let expected = Address::p2tr(&secp, key.internal, None, network);
                prop_assert_eq!(key.address(network), expected.clone());
                prop_assert_eq!(scripts.script(kind), &expected.script_pubkey());
                prop_assert_eq!(scripts.kind_of(&expected.script_pubkey()), Some(kind));
            }
        }
        // The three kinds pay three different scripts.
        prop_assert_ne!(&scripts.external, &scripts.branch);
        prop_assert_ne!(&scripts.external, &scripts.change);
        prop_assert_ne!(&scripts.branch, &scripts.change);
    }

    #[test]
    fn a_group_key_and_its_negation_share_addresses(group in network_key()) {
        let mut negated = group.to_bytes();
        negated[0] ^= 1; // 02 <-> 03: same x, other y
        let negated = NetworkKey::from_slice(&negated).unwrap();
        prop_assert_eq!(KeyScripts::derive(&group).unwrap(), KeyScripts::derive(&negated).unwrap());
        let key = DerivedKey::derive(&group, OutputKind::External).unwrap();
        let other = DerivedKey::derive(&negated, OutputKind::External).unwrap();
        prop_assert_ne!(key.group_negated, other.group_negated);
    }
}
