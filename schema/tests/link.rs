//! The coordinator link's security, end to end over in-memory sockets: the Noise XX channel
//! (both ends proven, wrong keys named, tampering and replays dropped) and the signatures that
//! keep queued messages authentic at rest.

// Test code: a failed unwrap is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unwrap_in_result
)]

use std::{cell::RefCell, rc::Rc};

use bitcoin::secp256k1::{Keypair, Secp256k1, SecretKey};
use capnp::message::{Builder, HeapAllocator};
use proptest::prelude::*;
use schema::{
    generated::messages_capnp::coordinator_envelope,
    ids::MessageId,
    link::{
        channel::{self, ChannelFault, HandshakeError, SecureStream},
        identity::{LinkPublicKey, LinkSecretKey},
        signed::{self, SignatureError},
    },
    messages::{CoordinatorEnvelope, CoordinatorMessage},
    strategies,
    wire::Wire,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

fn local<T>(future: impl std::future::Future<Output = T>) -> T {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tokio::task::LocalSet::new().block_on(&runtime, future)
}

type Faults = Rc<RefCell<Vec<String>>>;

fn recorder(faults: &Faults) -> impl FnOnce(ChannelFault) + 'static {
    let faults = Rc::clone(faults);
    move |fault| faults.borrow_mut().push(fault.to_string())
}

/// Copies `from` into `to`, passing each chunk through `change` (which sees the offset of the
/// chunk in the stream), and keeps a copy of everything it read.
fn relay(
    mut from: tokio::io::ReadHalf<DuplexStream>,
    mut to: tokio::io::WriteHalf<DuplexStream>,
    mut change: impl FnMut(usize, &mut [u8]) + 'static,
) -> Rc<RefCell<Vec<u8>>> {
    let recorded = Rc::new(RefCell::new(Vec::new()));
    let keep = Rc::clone(&recorded);
    tokio::task::spawn_local(async move {
        let mut buffer = vec![0u8; 4096];
        let mut offset = 0;
        loop {
            let len = match from.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(len) => len,
            };
            keep.borrow_mut().extend_from_slice(&buffer[..len]);
            change(offset, &mut buffer[..len]);
            offset += len;
            if to.write_all(&buffer[..len]).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    });
    recorded
}

struct Ends {
    coordinator: LinkSecretKey,
    processor: LinkSecretKey,
}

fn ends() -> Ends {
    Ends {
        coordinator: LinkSecretKey::generate(),
        processor: LinkSecretKey::generate(),
    }
}

/// Runs both handshakes over one in-memory socket whose two directions pass through `up`
/// (processor to coordinator) and `down`; returns both results and what each direction carried.
async fn handshake(
    ends: &Ends,
    pinned: LinkPublicKey,
    authorize: impl FnOnce(&LinkPublicKey) -> Result<(), String>,
    up: impl FnMut(usize, &mut [u8]) + 'static,
    down: impl FnMut(usize, &mut [u8]) + 'static,
    faults: &Faults,
) -> (
    Result<SecureStream, HandshakeError>,
    Result<SecureStream, HandshakeError>,
) {
    let (processor_socket, processor_wire) = tokio::io::duplex(1 << 20);
    let (coordinator_socket, coordinator_wire) = tokio::io::duplex(1 << 20);
    let (processor_out, processor_in) = tokio::io::split(processor_wire);
    let (coordinator_out, coordinator_in) = tokio::io::split(coordinator_wire);
    relay(processor_out, coordinator_in, up);
    relay(coordinator_out, processor_in, down);
    tokio::join!(
        channel::initiate(processor_socket, &ends.processor, pinned, recorder(faults)),
        channel::accept(
            coordinator_socket,
            &ends.coordinator,
            authorize,
            recorder(faults)
        ),
    )
}

fn untouched(_: usize, _: &mut [u8]) {}

#[test]
fn both_ends_prove_their_keys_and_bytes_cross_both_ways_in_many_frames() {
    local(async {
        let ends = ends();
        let faults = Faults::default();
        let expected = ends.processor.public();
        let (processor, coordinator) = handshake(
            &ends,
            ends.coordinator.public(),
            |key| {
                (*key == expected)
                    .then_some(())
                    .ok_or_else(|| "unknown".into())
            },
            untouched,
            untouched,
            &faults,
        )
        .await;
        let (mut processor, mut coordinator) = (processor.unwrap(), coordinator.unwrap());
        assert_eq!(processor.peer, ends.coordinator.public());
        assert_eq!(coordinator.peer, ends.processor.public());
        assert_eq!(processor.handshake_hash, coordinator.handshake_hash);
        let large: Vec<u8> = (0..3 * channel::MAX_PLAINTEXT + 7)
            .map(|i| u8::try_from(i % 251).unwrap())
            .collect();
        let sent = large.clone();
        let writer = tokio::task::spawn_local(async move {
            processor.stream.write_all(&sent).await.unwrap();
            processor
        });
        let mut received = vec![0u8; large.len()];
        coordinator.stream.read_exact(&mut received).await.unwrap();
        assert_eq!(received, large);
        let mut processor = writer.await.unwrap();
        coordinator.stream.write_all(b"answer").await.unwrap();
        let mut answer = [0u8; 6];
        processor.stream.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"answer");
        assert!(faults.borrow().is_empty());
    });
}

#[test]
fn a_coordinator_other_than_the_pinned_one_is_named_and_refused() {
    local(async {
        let ends = ends();
        let pinned = LinkSecretKey::generate().public();
        let (processor, _) = handshake(
            &ends,
            pinned,
            |_| Ok(()),
            untouched,
            untouched,
            &Faults::default(),
        )
        .await;
        match processor {
            Err(HandshakeError::WrongCoordinator {
                presented,
                pinned: named,
            }) => {
                assert_eq!(presented, ends.coordinator.public());
                assert_eq!(named, pinned);
            }
            other => panic!("{:?}", other.err()),
        }
    });
}

#[test]
fn a_processor_key_the_coordinator_does_not_know_is_told_why() {
    local(async {
        let ends = ends();
        let (processor, coordinator) = handshake(
            &ends,
            ends.coordinator.public(),
            |_| Err("this key is not registered for any validator".into()),
            untouched,
            untouched,
            &Faults::default(),
        )
        .await;
        match processor {
            Err(HandshakeError::RefusedByCoordinator { key, reason }) => {
                assert_eq!(key, ends.processor.public());
                assert_eq!(reason, "this key is not registered for any validator");
            }
            other => panic!("{:?}", other.err()),
        }
        assert!(matches!(
            coordinator,
            Err(HandshakeError::RefusedInitiator { key, .. }) if key == ends.processor.public()
        ));
    });
}

/// A refusal reason longer than the verdict carries arrives cut to its limit, and a control
/// character in it (a terminal escape in an operator's log) never arrives.
#[test]
fn a_long_or_hostile_refusal_reason_is_cut_and_cleaned() {
    local(async {
        let ends = ends();
        let reason = format!("\u{1b}[2J{}", "r".repeat(channel::MAX_REASON + 1));
        let (processor, _) = handshake(
            &ends,
            ends.coordinator.public(),
            move |_| Err(reason),
            untouched,
            untouched,
            &Faults::default(),
        )
        .await;
        match processor {
            Err(HandshakeError::RefusedByCoordinator { reason, .. }) => {
                assert!(!reason.contains('\u{1b}'), "{reason}");
                // The limit counts bytes sent: the escape (1 byte) is dropped on arrival.
                assert_eq!(
                    reason,
                    format!("[2J{}", "r".repeat(channel::MAX_REASON - 4))
                );
            }
            other => panic!("{:?}", other.err()),
        }
    });
}

/// The handshake is 2 messages up to the coordinator (100 bytes) and 2 down (its message and
/// its verdict): offsets beyond what the handshake takes are transport frames.
const AFTER_HANDSHAKE: usize = 200;

#[test]
fn a_flipped_byte_after_the_handshake_drops_the_connection_and_nothing_is_read() {
    local(async {
        let ends = ends();
        let faults = Faults::default();
        let flip = |offset: usize, chunk: &mut [u8]| {
            for (at, byte) in chunk.iter_mut().enumerate() {
                if offset + at == AFTER_HANDSHAKE + 10 {
                    *byte ^= 1;
                }
            }
        };
        let (processor, coordinator) = handshake(
            &ends,
            ends.coordinator.public(),
            |_| Ok(()),
            flip,
            untouched,
            &faults,
        )
        .await;
        let (mut processor, mut coordinator) = (processor.unwrap(), coordinator.unwrap());
        // The first frame passes the flip point only once the handshake bytes are behind.
        let payload = vec![7u8; 1000];
        processor.stream.write_all(&payload).await.unwrap();
        processor.stream.flush().await.unwrap();
        let mut received = Vec::new();
        coordinator.stream.read_to_end(&mut received).await.unwrap();
        assert!(
            received.len() < payload.len(),
            "the altered frame was read: {} bytes",
            received.len()
        );
        assert_eq!(
            *faults.borrow(),
            vec![ChannelFault::Unauthenticated.to_string()]
        );
    });
}

#[test]
fn a_recorded_session_played_again_fails_in_either_direction() {
    local(async {
        let ends = ends();
        let faults = Faults::default();
        // Session one, recorded by a passive proxy.
        let (processor_socket, processor_wire) = tokio::io::duplex(1 << 20);
        let (coordinator_socket, coordinator_wire) = tokio::io::duplex(1 << 20);
        let (processor_out, processor_in) = tokio::io::split(processor_wire);
        let (coordinator_out, coordinator_in) = tokio::io::split(coordinator_wire);
        let up = relay(processor_out, coordinator_in, untouched);
        let down = relay(coordinator_out, processor_in, untouched);
        let (processor, coordinator) = tokio::join!(
            channel::initiate(
                processor_socket,
                &ends.processor,
                ends.coordinator.public(),
                recorder(&faults)
            ),
            channel::accept(
                coordinator_socket,
                &ends.coordinator,
                |_| Ok(()),
                recorder(&faults)
            ),
        );
        let (mut processor, mut coordinator) = (processor.unwrap(), coordinator.unwrap());
        processor.stream.write_all(b"ack 41").await.unwrap();
        let mut ack = [0u8; 6];
        coordinator.stream.read_exact(&mut ack).await.unwrap();
        coordinator.stream.write_all(b"message 42").await.unwrap();
        let mut message = [0u8; 10];
        processor.stream.read_exact(&mut message).await.unwrap();
        drop((processor, coordinator));
        tokio::task::yield_now().await;
        let (up, down) = (up.borrow().clone(), down.borrow().clone());

        // The processor's recorded bytes, played to the coordinator: its fresh ephemeral key
        // makes the recorded third handshake message fail.
        let (mut attacker, coordinator_socket) = tokio::io::duplex(1 << 20);
        attacker.write_all(&up).await.unwrap();
        let coordinator = channel::accept(
            coordinator_socket,
            &ends.coordinator,
            |_| Ok(()),
            recorder(&faults),
        )
        .await;
        assert!(
            matches!(coordinator, Err(HandshakeError::Noise(_))),
            "{:?}",
            coordinator.err()
        );

        // The coordinator's recorded bytes, played to the processor: its second message was
        // made for another ephemeral key and does not decrypt.
        let (mut attacker, processor_socket) = tokio::io::duplex(1 << 20);
        attacker.write_all(&down).await.unwrap();
        let processor = channel::initiate(
            processor_socket,
            &ends.processor,
            ends.coordinator.public(),
            recorder(&faults),
        )
        .await;
        assert!(
            matches!(processor, Err(HandshakeError::Noise(_))),
            "{:?}",
            processor.err()
        );
    });
}

fn written(envelope: &CoordinatorEnvelope, first_segment_words: u32) -> Builder<HeapAllocator> {
    let mut message = Builder::new(HeapAllocator::new().first_segment_words(first_segment_words));
    envelope
        .write(message.init_root::<coordinator_envelope::Builder<'_>>())
        .unwrap();
    message
}

fn coordinator_key() -> Keypair {
    Keypair::from_secret_key(
        &Secp256k1::new(),
        &SecretKey::from_slice(&[0x42; 32]).unwrap(),
    )
}

fn verify(
    message: &Builder<HeapAllocator>,
    validator: &[u8],
    key: &Keypair,
) -> Result<(), SignatureError> {
    let envelope = message
        .get_root_as_reader::<coordinator_envelope::Reader<'_>>()
        .unwrap();
    signed::verify_envelope(&key.x_only_public_key().0, validator, envelope).map(|_| ())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A signed message verifies however it was laid out in segments (the signature covers the
    /// canonical encoding), and only for its validator, id, content and key.
    #[test]
    fn a_queued_message_verifies_only_as_it_was_signed(
        envelope in strategies::coordinator_envelope(),
        other in strategies::coordinator_message(),
    ) {
        let key = coordinator_key();
        let mut signed_message = written(&envelope, 1024);
        signed::sign_envelope(&key, b"validator-1", signed_message.get_root().unwrap()).unwrap();
        let signature = signed_message
            .get_root_as_reader::<coordinator_envelope::Reader<'_>>()
            .unwrap()
            .get_signature()
            .unwrap()
            .to_vec();
        prop_assert!(verify(&signed_message, b"validator-1", &key).is_ok());

        // What is handed on to decode is the message that was signed.
        let checked = signed::verify_envelope(
            &key.x_only_public_key().0,
            b"validator-1",
            signed_message.get_root_as_reader::<coordinator_envelope::Reader<'_>>().unwrap(),
        )
        .unwrap();
        prop_assert_eq!(
            &CoordinatorMessage::read(checked.reader().unwrap()).unwrap(),
            &envelope.message
        );

        // The same message in many small segments (far pointers): still the same signature.
        let mut fragmented = written(&envelope, 1);
        fragmented.get_root::<coordinator_envelope::Builder<'_>>().unwrap().set_signature(&signature);
        prop_assert!(verify(&fragmented, b"validator-1", &key).is_ok());

        // Moved to another validator's queue, or to another id, or by another key: refused.
        prop_assert_eq!(verify(&signed_message, b"validator-2", &key).map_err(|error| error.label()), Err("bad_signature"));
        let mut moved = written(&CoordinatorEnvelope { id: MessageId(envelope.id.0 ^ 1), ..envelope.clone() }, 1024);
        moved.get_root::<coordinator_envelope::Builder<'_>>().unwrap().set_signature(&signature);
        prop_assert_eq!(verify(&moved, b"validator-1", &key).map_err(|error| error.label()), Err("bad_signature"));
        let stranger = Keypair::from_secret_key(&Secp256k1::new(), &SecretKey::from_slice(&[0x43; 32]).unwrap());
        prop_assert_eq!(verify(&signed_message, b"validator-1", &stranger).map_err(|error| error.label()), Err("bad_signature"));

        // Altered content under the old signature: refused.
        if other != envelope.message {
            let mut altered = written(&CoordinatorEnvelope { message: other, ..envelope.clone() }, 1024);
            altered.get_root::<coordinator_envelope::Builder<'_>>().unwrap().set_signature(&signature);
            prop_assert_eq!(verify(&altered, b"validator-1", &key).map_err(|error| error.label()), Err("bad_signature"));
        }

        // No signature, or a truncated one: refused as unsigned.
        let unsigned = written(&envelope, 1024);
        prop_assert_eq!(verify(&unsigned, b"validator-1", &key).map_err(|error| error.label()), Err("unsigned"));
        let mut truncated = written(&envelope, 1024);
        truncated.get_root::<coordinator_envelope::Builder<'_>>().unwrap().set_signature(&signature[..63]);
        prop_assert_eq!(verify(&truncated, b"validator-1", &key).map_err(|error| error.label()), Err("unsigned"));
    }
}

#[test]
fn a_signed_message_this_build_cannot_decode_still_verifies_as_the_coordinators() {
    let key = coordinator_key();
    let mut message = Builder::new_default();
    {
        let mut envelope = message.init_root::<coordinator_envelope::Builder<'_>>();
        envelope.set_id(9);
        let mut params = envelope
            .reborrow()
            .init_message()
            .init_key_gen()
            .init_generate_key()
            .init_params();
        params.set_t(5);
        params.set_n(4);
        signed::sign_envelope(&key, b"v", envelope).unwrap();
    }
    assert!(verify(&message, b"v", &key).is_ok());
    let envelope = message
        .get_root_as_reader::<coordinator_envelope::Reader<'_>>()
        .unwrap();
    assert!(CoordinatorEnvelope::read(envelope).is_err());
}
