//! The enclave database's records: a key pair's record (under the 5-byte set key older builds
//! wrote, or the set and the candidate's network key), and an audit record. Both canonical:
//! whatever decodes re-encodes to the same bytes, and a candidate's record is keyed by its own
//! network key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use signer_enclave::{
    audit::Record,
    db::{candidate_key, decode_record, encode_record},
};

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    if which & 1 == 1 {
        if let Ok(record) = Record::decode(bytes, 0) {
            assert_eq!(
                record.encode(),
                bytes,
                "an audit record re-encodes differently"
            );
        }
        return;
    }
    let key_len = if which & 2 == 0 { 5 } else { 38 };
    if bytes.len() < key_len {
        return;
    }
    let (key, value) = bytes.split_at(key_len);
    if let Some(record) = decode_record(key, value) {
        assert_eq!(
            encode_record(&record),
            value,
            "a key record re-encodes differently"
        );
        if key_len == 38 {
            assert_eq!(candidate_key(record.set, &record.pair), key);
        }
    }
});
