//! The enclave's key generation (`KeyGen::handle`) fed the coordinator's messages as they arrive
//! off the wire: other participants' commitments and encrypted shares are the most intricate
//! untrusted bytes the enclave parses. The input is a list of `key_gen::CoordinatorMessage`s
//! (`length (u16 LE) || Cap'n Proto message`), handled in order by one fresh participant whose
//! randomness is seeded, so that a finding reproduces, after the set-shape check the enclave
//! makes first. Keys it completes must name a pair.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rand_chacha::{rand_core::SeedableRng, ChaCha20Rng};
use schema::{messages::key_gen::CoordinatorMessage, protocol::accepts_set_shape, wire};
use signer_enclave::{enclave::pair_of, key_gen::KeyGen};

fuzz_target!(|data: &[u8]| {
    let mut key_gen = KeyGen::default();
    let mut rng = ChaCha20Rng::seed_from_u64(0);
    let mut rest = data;
    while let Some((len, tail)) = rest.split_first_chunk::<2>() {
        let len = usize::from(u16::from_le_bytes(*len)).min(tail.len());
        let (bytes, tail) = tail.split_at(len);
        rest = tail;
        let Ok(message) = wire::decode::<CoordinatorMessage>(bytes) else {
            continue;
        };
        // The enclave refuses set shapes the protocol does not accept before `KeyGen` sees
        // them (a t of 28,000 is 28,000 scalar multiplications, not a finding).
        if let CoordinatorMessage::GenerateKey { params, .. } = &message {
            if accepts_set_shape(*params).is_err() {
                continue;
            }
        }
        if let Ok((_, Some(keys))) = key_gen.handle(message, &mut rng) {
            assert!(pair_of(&keys).is_some(), "completed keys name no pair");
        }
    }
});
