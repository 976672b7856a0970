//! Every Cap'n Proto decoder of `schema::wire` (messages between the coordinator, the scanner and
//! the enclave, and the values stored as messages): the first byte picks the type, the rest is
//! the message. Whatever decodes must encode and decode again to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use processor_fuzz::wire_round_trip;
use schema::{
    batch::{Batch, SignedBatch},
    keys::KeyPair,
    messages::{
        coordinator::{PlansAcknowledged, SubstrateBlockAck},
        CoordinatorEnvelope, CoordinatorMessage, ProcessorEnvelope, ProcessorMessage,
    },
    plan::Plan,
    sign_id::{BatchSignId, PlanSignId},
};

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    match which % 11 {
        0 => wire_round_trip::<CoordinatorEnvelope>(bytes),
        1 => wire_round_trip::<ProcessorEnvelope>(bytes),
        2 => wire_round_trip::<CoordinatorMessage>(bytes),
        3 => wire_round_trip::<ProcessorMessage>(bytes),
        4 => wire_round_trip::<Plan>(bytes),
        5 => wire_round_trip::<SignedBatch>(bytes),
        6 => wire_round_trip::<Batch>(bytes),
        7 => wire_round_trip::<PlansAcknowledged>(bytes),
        8 => wire_round_trip::<SubstrateBlockAck>(bytes),
        9 => wire_round_trip::<PlanSignId>(bytes),
        _ => {
            wire_round_trip::<BatchSignId>(bytes);
            wire_round_trip::<KeyPair>(bytes);
        }
    }
});
