//! The scheduler's stored state (`scanner::scheduler_state`): whatever decodes re-encodes; a
//! state of the current version to exactly its bytes, an older one to a current state that
//! decodes to the same scheduler.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scanner::schedule::state::{decode, encode};

fuzz_target!(|data: &[u8]| {
    let Ok(scheduler) = decode(data) else {
        return;
    };
    let encoded = encode(&scheduler);
    if encoded.first() == data.first() {
        assert_eq!(encoded, data, "a current state re-encodes differently");
    } else {
        match decode(&encoded) {
            Ok(again) => assert_eq!(encode(&again), encoded, "a migrated state is unstable"),
            Err(error) => panic!("a migrated state does not decode: {error}"),
        }
    }
});
