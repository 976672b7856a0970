//! What the fuzz targets share: the round-trip check every Cap'n Proto type gets, and the one
//! network key whose scripts the deposit and block targets pay.
//!
//! A fuzz target fails by panicking, so the checks here assert: a decoder that accepts bytes
//! must give a value that encodes, and decodes again to itself.

use std::fmt::Debug;

use schema::{keys::NetworkKey, taproot::KeyScripts, wire};

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
