//! The scanner database's own record formats (`scanner::records`), as read back from a disk that
//! may be damaged: a received output, an eventuality (a plan family), a spending transaction's
//! inputs and outputs, an outcome, a spend with its height, a plan family in flight, the key
//! rotation. Each is canonical: whatever decodes re-encodes to exactly the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scanner::rotation::Rotation;
use scanner::store::records::{
    decode_eventuality, decode_flight, decode_io, decode_outcome, decode_output, decode_spend,
    encode_eventuality, encode_flight, encode_io, encode_outcome, encode_output, encode_spend,
};
use schema::{
    hashes::{PlanId, TransactionId},
    plan::OutputId,
};

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    match which % 7 {
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
        2 => {
            if let Some((inputs, outputs)) = decode_io(bytes) {
                assert_eq!(encode_io(&inputs, &outputs), bytes);
            }
        }
        3 => {
            if let Some(outcome) = decode_outcome(bytes) {
                assert_eq!(encode_outcome(&outcome), bytes);
            }
        }
        4 => {
            if let Some(spend) = decode_spend(bytes) {
                assert_eq!(encode_spend(&spend), bytes);
            }
        }
        5 => {
            if let Some(flight) = decode_flight(PlanId([9; 32]), bytes) {
                assert_eq!(flight.family, PlanId([9; 32]));
                assert_eq!(encode_flight(&flight), bytes);
            }
        }
        _ => {
            if let Some(rotation) = Rotation::decode(bytes) {
                assert_eq!(rotation.encode(), bytes);
            }
        }
    }
});
