//! The scanner database's own record formats (`scanner::records`), as read back from a disk that
//! may be damaged: a received output, an eventuality, a spending transaction's inputs and
//! outputs. Each is canonical: whatever decodes re-encodes to exactly the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scanner::store::records::{
    decode_eventuality, decode_io, decode_output, encode_eventuality, encode_io, encode_output,
};
use schema::{
    hashes::{PlanId, TransactionId},
    plan::OutputId,
};

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    match which % 3 {
        0 => {
            let id = OutputId {
                txid: TransactionId([7; 32]),
                vout: 3,
            };
            if let Some(output) = decode_output(id, bytes) {
                assert_eq!(output.id, id);
                assert_eq!(encode_output(&output), bytes);
            }
        }
        1 => {
            if let Some(eventuality) = decode_eventuality(PlanId([9; 32]), bytes) {
                assert_eq!(encode_eventuality(&eventuality), bytes);
            }
        }
        _ => {
            if let Some((inputs, outputs)) = decode_io(bytes) {
                assert_eq!(encode_io(&inputs, &outputs), bytes);
            }
        }
    }
});
