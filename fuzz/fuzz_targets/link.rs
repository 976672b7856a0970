//! The coordinator link's own decoders, fed by whoever reaches the socket or the queue:
//! - first byte even: the rest is a Cap'n Proto message read as a `CoordinatorEnvelope` whose
//!   signature is checked (which brings the message to its canonical encoding first: that
//!   copy must never outgrow its segment, whatever the input);
//! - first byte 1 mod 4: the rest is what a processor sends a coordinator's Noise responder;
//! - first byte 3 mod 4: the rest is what a coordinator answers a processor's initiator.
//!
//! Random bytes never complete a handshake; both ends must refuse them with an error, never
//! panic, and return once the input ends.
#![no_main]

use bitcoin::secp256k1::XOnlyPublicKey;
use capnp::serialize;
use libfuzzer_sys::fuzz_target;
use schema::{
    generated::messages_capnp::coordinator_envelope,
    link::{channel, identity::LinkSecretKey, signed},
    wire,
};
use tokio::io::AsyncWriteExt;

/// BIP341's unspendable point H: a valid key whose secret no one knows, so nothing may verify.
const KEY: [u8; 32] = [
    0x50, 0x92, 0x9b, 0x74, 0xc1, 0xa0, 0x49, 0x54, 0xb7, 0x8b, 0x4b, 0x60, 0x35, 0xe9, 0x7a, 0x5e,
    0x07, 0x8a, 0x5a, 0x0f, 0x28, 0xec, 0x96, 0xd5, 0x47, 0xbf, 0xee, 0x9a, 0xce, 0x80, 0x3a, 0xc0,
];

fn envelope(bytes: &[u8]) {
    let Ok(key) = XOnlyPublicKey::from_slice(&KEY) else {
        panic!("H is not an x-only key");
    };
    let mut rest = bytes;
    let Ok(message) = serialize::read_message(&mut rest, wire::reader_options()) else {
        return;
    };
    let Ok(envelope) = message.get_root::<coordinator_envelope::Reader<'_>>() else {
        return;
    };
    if signed::verify_envelope(&key, b"validator", envelope).is_ok() {
        panic!("a fuzzed envelope verified under a key no one here holds");
    }
}

fn handshake(bytes: &[u8], responder: bool) {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        panic!("no runtime");
    };
    let key = LinkSecretKey::generate();
    let peer = LinkSecretKey::generate().public();
    tokio::task::LocalSet::new().block_on(&runtime, async {
        let (attacker, socket) = tokio::io::duplex(1 << 17);
        let (mut hears, mut says) = tokio::io::split(attacker);
        if says.write_all(bytes).await.is_err() {
            return;
        }
        // End of input: the peer stops talking, so a handshake waiting for more bytes ends;
        // what the handshake writes is still taken, so it reads the input first.
        if says.shutdown().await.is_err() {
            return;
        }
        tokio::task::spawn_local(async move {
            let _ = tokio::io::copy(&mut hears, &mut tokio::io::sink()).await;
        });
        let secured = if responder {
            channel::accept(socket, &key, |_| Ok(()), |_| {}).await
        } else {
            channel::initiate(socket, &key, peer, |_| {}).await
        };
        if secured.is_ok() {
            panic!("a fuzzed peer completed a handshake");
        }
    });
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    match which % 4 {
        0 | 2 => envelope(bytes),
        1 => handshake(bytes, true),
        _ => handshake(bytes, false),
    }
});
