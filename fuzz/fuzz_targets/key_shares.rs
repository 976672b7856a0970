//! Unsealed key shares (`ThresholdKeys` serializations, as custody hands them back): read and
//! checked against their own verification share, for both curves. Whatever is accepted
//! re-serializes to the same bytes.
#![no_main]

use ciphersuite::Ristretto;
use libfuzzer_sys::fuzz_target;
use modular_frost::curve::Secp256k1;
use signer_enclave::key_store::read_checked;

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    if which & 1 == 0 {
        if let Ok(keys) = read_checked::<Ristretto>(bytes, "batch") {
            assert_eq!(keys.serialize().as_slice(), bytes);
        }
    } else if let Ok(keys) = read_checked::<Secp256k1>(bytes, "network") {
        assert_eq!(keys.serialize().as_slice(), bytes);
    }
});
