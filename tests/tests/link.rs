//! The coordinator link as an attacker on the path and an operator with a wrong key would find
//! it: the scanner's real link client against the coordinator harness over TCP, through a
//! proxy that records, flips bytes and replays sessions. Every refusal is named, counted, and
//! nothing the attacker sent is returned, handled or acked.

// Test code: a failed unwrap is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unwrap_in_result
)]

use std::{net::SocketAddr, rc::Rc, time::Duration};

use processor_tests::{
    coordinator::{CoordinatorHarness, Listen},
    proxy::{Direction, Proxy},
};
use prometheus::Registry;
use scanner::coordinate::link::{LinkClient, LinkError, LinkMetrics, LinkSecurity, LinkSettings};
use schema::{
    hashes::BlockHash,
    ids::{
        Attempt, KeyGenId, MessageId, NetworkId, Participant, SeraiBlockNumber, SeraiTime, Session,
        ThresholdParams, ValidatorSet,
    },
    keys::NetworkKey,
    link::{
        channel::HandshakeError,
        identity::{LinkPublicKey, LinkSecretKey},
        signed::SignatureError,
    },
    messages::{
        key_gen,
        substrate::{self, SubstrateContext},
        CoordinatorMessage, ProcessorEnvelope, ProcessorMessage,
    },
    strategies,
};

const DEADLINE: Duration = Duration::from_secs(5);
const VALIDATOR: &[u8] = &[1];

fn local<T>(future: impl std::future::Future<Output = T>) -> T {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tokio::task::LocalSet::new().block_on(&runtime, future)
}

/// A message the processor would act on.
fn message(session: u32) -> CoordinatorMessage {
    CoordinatorMessage::KeyGen(key_gen::CoordinatorMessage::GenerateKey {
        id: KeyGenId {
            set: ValidatorSet {
                session: Session(session),
                network: NetworkId::Bitcoin,
            },
            attempt: Attempt(0),
        },
        params: ThresholdParams::new(3, 4, Participant::new(1).unwrap()).unwrap(),
    })
}

struct LinkEnd {
    key: Rc<LinkSecretKey>,
    metrics: LinkMetrics,
    registry: Registry,
}

impl LinkEnd {
    /// A processor whose key the coordinator registered for `VALIDATOR`.
    fn registered(coordinator: &CoordinatorHarness) -> Self {
        let processor = Self::unknown();
        coordinator
            .register(VALIDATOR, processor.key.public())
            .unwrap();
        processor
    }

    /// A processor the coordinator does not know.
    fn unknown() -> Self {
        let registry = Registry::new();
        LinkEnd {
            key: Rc::new(LinkSecretKey::generate()),
            metrics: LinkMetrics::new(&registry).unwrap(),
            registry,
        }
    }

    fn settings(
        &self,
        coordinator: &CoordinatorHarness,
        endpoint: SocketAddr,
        pinned: LinkPublicKey,
    ) -> LinkSettings {
        LinkSettings {
            endpoint,
            security: LinkSecurity::Noise {
                key: Rc::clone(&self.key),
                coordinator: pinned,
            },
            validator: VALIDATOR.to_vec(),
            message_key: coordinator.message_public_key(),
        }
    }

    async fn connect(
        &self,
        coordinator: &CoordinatorHarness,
        endpoint: SocketAddr,
    ) -> Result<LinkClient, LinkError> {
        let settings = self.settings(coordinator, endpoint, coordinator.link_public_key());
        LinkClient::connect(&settings, DEADLINE, &self.metrics).await
    }

    /// The value of one exported series, zero when absent.
    fn metric(&self, name: &str, reason: &str) -> u64 {
        self.registry
            .gather()
            .iter()
            .filter(|family| family.name() == name)
            .flat_map(|family| family.get_metric())
            .filter(|metric| {
                reason.is_empty()
                    || metric
                        .get_label()
                        .iter()
                        .any(|label| label.name() == "reason" && label.value() == reason)
            })
            .map(|metric| {
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let value = metric.get_counter().get_value() as u64;
                value
            })
            .sum()
    }
}

#[test]
fn both_ends_prove_their_keys_and_signed_messages_flow_both_ways() {
    let coordinator = CoordinatorHarness::start().unwrap();
    let processor = LinkEnd::registered(&coordinator);
    let first = coordinator.push(VALIDATOR, message(0)).unwrap();
    local(async {
        let link = processor
            .connect(&coordinator, coordinator.address())
            .await
            .unwrap();
        let inbound = link.next(MessageId(0), DEADLINE).await.unwrap();
        assert_eq!(inbound.len(), 1);
        assert_eq!(inbound[0].id, first);
        assert_eq!(inbound[0].message.as_ref().unwrap(), &message(0));
        link.ack(first).await.unwrap();
        link.send(&ProcessorEnvelope {
            id: MessageId(1),
            message: ProcessorMessage::KeyGen(key_gen::ProcessorMessage::Blame {
                id: KeyGenId {
                    set: ValidatorSet {
                        session: Session(0),
                        network: NetworkId::Bitcoin,
                    },
                    attempt: Attempt(0),
                },
                participant: Participant::new(2).unwrap(),
                evidence: vec![1, 2, 3],
            }),
        })
        .await
        .unwrap();
    });
    assert_eq!(coordinator.acked(VALIDATOR).unwrap(), first.0);
    assert_eq!(coordinator.received(VALIDATOR).unwrap().len(), 1);
    assert_eq!(coordinator.logins(VALIDATOR).unwrap(), 1);
    assert_eq!(processor.metric("scanner_link_handshakes_total", ""), 1);
    assert_eq!(coordinator.refusals().unwrap(), Default::default());
}

/// A processor that drops its link (to reconnect after an error) closes the connection, even
/// though the coordinator keeps its end open.
#[test]
fn a_dropped_link_closes_its_connection() {
    let coordinator = CoordinatorHarness::start().unwrap();
    let processor = LinkEnd::registered(&coordinator);
    let proxy = Proxy::forward(coordinator.address()).unwrap();
    local(async {
        let link = processor
            .connect(&coordinator, proxy.address())
            .await
            .unwrap();
        link.next(MessageId(0), Duration::ZERO).await.unwrap();
        assert!(!proxy.recordings().unwrap()[0].up_ended);
        drop(link);
        let until = std::time::Instant::now() + DEADLINE;
        while !proxy.recordings().unwrap()[0].up_ended {
            assert!(
                std::time::Instant::now() < until,
                "the connection stayed open"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
}

/// A coordinator that takes the connection and never answers the handshake: the wait ends at
/// the deadline, named and counted.
#[test]
fn a_handshake_that_never_finishes_ends_at_the_deadline() {
    let coordinator = CoordinatorHarness::start().unwrap();
    let processor = LinkEnd::registered(&coordinator);
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let deadline = Duration::from_millis(300);
    let error = local(async {
        let settings = processor.settings(
            &coordinator,
            silent.local_addr().unwrap(),
            coordinator.link_public_key(),
        );
        LinkClient::connect(&settings, deadline, &processor.metrics)
            .await
            .err()
            .unwrap()
    });
    assert!(
        matches!(error, LinkError::HandshakeTimeout { deadline: waited, .. } if waited == deadline),
        "{error}"
    );
    assert_eq!(
        processor.metric("scanner_link_handshakes_refused_total", "timeout"),
        1
    );
}

#[test]
fn a_coordinator_other_than_the_pinned_one_is_named_and_nothing_is_read() {
    let coordinator = CoordinatorHarness::start().unwrap();
    let processor = LinkEnd::registered(&coordinator);
    coordinator.push(VALIDATOR, message(0)).unwrap();
    let pinned = LinkSecretKey::generate().public();
    let error = local(async {
        let settings = processor.settings(&coordinator, coordinator.address(), pinned);
        LinkClient::connect(&settings, DEADLINE, &processor.metrics)
            .await
            .err()
            .unwrap()
    });
    match &error {
        LinkError::Handshake {
            source:
                HandshakeError::WrongCoordinator {
                    presented,
                    pinned: named,
                },
            ..
        } => {
            assert_eq!(*presented, coordinator.link_public_key());
            assert_eq!(*named, pinned);
        }
        other => panic!("{other}"),
    }
    assert!(
        error.to_string().contains("coordinator.link_key"),
        "{error}"
    );
    assert_eq!(
        processor.metric(
            "scanner_link_handshakes_refused_total",
            "wrong_coordinator_key"
        ),
        1
    );
    assert_eq!(coordinator.logins(VALIDATOR).unwrap(), 0);
    assert_eq!(coordinator.acked(VALIDATOR).unwrap(), 0);
}

#[test]
fn a_processor_key_the_coordinator_does_not_know_is_told_why_and_never_logs_in() {
    let coordinator = CoordinatorHarness::start().unwrap();
    let stranger = LinkEnd::unknown();
    let error = local(async {
        stranger
            .connect(&coordinator, coordinator.address())
            .await
            .err()
            .unwrap()
    });
    match &error {
        LinkError::Handshake {
            source: HandshakeError::RefusedByCoordinator { key, reason },
            ..
        } => {
            assert_eq!(*key, stranger.key.public());
            assert!(reason.contains("not registered"), "{reason}");
        }
        other => panic!("{other}"),
    }
    assert_eq!(
        stranger.metric(
            "scanner_link_handshakes_refused_total",
            "refused_by_coordinator"
        ),
        1
    );
    // The coordinator records its refusal once it has sent it.
    coordinator
        .wait_until(DEADLINE, |c| Ok(!c.refusals()?.handshakes.is_empty()))
        .unwrap();
    let refusals = coordinator.refusals().unwrap();
    assert_eq!(refusals.handshakes.len(), 1);
    assert!(refusals.handshakes[0].contains(&stranger.key.public().to_string()));
    assert_eq!(coordinator.logins(VALIDATOR).unwrap(), 0);
}

#[test]
fn a_registered_key_cannot_log_in_as_another_validator() {
    let coordinator = CoordinatorHarness::start().unwrap();
    let processor = LinkEnd::registered(&coordinator);
    coordinator.push(&[2], message(0)).unwrap();
    let error = local(async {
        let mut settings = processor.settings(
            &coordinator,
            coordinator.address(),
            coordinator.link_public_key(),
        );
        settings.validator = vec![2];
        LinkClient::connect(&settings, DEADLINE, &processor.metrics)
            .await
            .err()
            .unwrap()
    });
    assert!(matches!(error, LinkError::LoginRefused { .. }), "{error}");
    assert!(
        error.to_string().contains("registered for validator 01"),
        "{error}"
    );
    assert_eq!(
        processor.metric("scanner_link_handshakes_refused_total", "login_refused"),
        1
    );
    assert_eq!(coordinator.refusals().unwrap().logins.len(), 1);
    assert_eq!(coordinator.logins(&[2]).unwrap(), 0);
    assert_eq!(coordinator.acked(&[2]).unwrap(), 0);
}

#[test]
fn a_flipped_byte_either_way_drops_the_connection_and_nothing_it_carried_counts() {
    let coordinator = CoordinatorHarness::start().unwrap();
    let processor = LinkEnd::registered(&coordinator);
    let proxy = Proxy::forward(coordinator.address()).unwrap();
    let first = coordinator.push(VALIDATOR, message(0)).unwrap();
    local(async {
        // Down: the answer carrying message 1 is altered; the processor drops the connection
        // and never sees the message.
        let link = processor
            .connect(&coordinator, proxy.address())
            .await
            .unwrap();
        proxy.flip_next(Direction::Down).unwrap();
        let error = link.next(MessageId(0), DEADLINE).await.err().unwrap();
        assert!(matches!(error, LinkError::Rpc(_)), "{error}");
        assert_eq!(
            processor.metric("scanner_link_frames_refused_total", "unauthenticated"),
            1
        );

        // Up: the ack is altered; the coordinator drops the connection and acks nothing.
        let link = processor
            .connect(&coordinator, proxy.address())
            .await
            .unwrap();
        let inbound = link.next(MessageId(0), DEADLINE).await.unwrap();
        assert_eq!(inbound[0].id, first);
        proxy.flip_next(Direction::Up).unwrap();
        assert!(link.ack(first).await.is_err());
        assert_eq!(coordinator.acked(VALIDATOR).unwrap(), 0);
        assert_eq!(coordinator.refusals().unwrap().frames, 1);

        // Untouched, the same message arrives and is acked: nothing was lost.
        let link = processor
            .connect(&coordinator, proxy.address())
            .await
            .unwrap();
        let inbound = link.next(MessageId(0), DEADLINE).await.unwrap();
        assert_eq!(inbound[0].message.as_ref().unwrap(), &message(0));
        link.ack(first).await.unwrap();
    });
    assert_eq!(coordinator.acked(VALIDATOR).unwrap(), first.0);
}

#[test]
fn a_recorded_session_played_again_is_refused_either_way() {
    let coordinator = CoordinatorHarness::start().unwrap();
    let processor = LinkEnd::registered(&coordinator);
    let proxy = Proxy::forward(coordinator.address()).unwrap();
    let first = coordinator.push(VALIDATOR, message(0)).unwrap();
    // A session the attacker records: login, message 1, its ack.
    local(async {
        let link = processor
            .connect(&coordinator, proxy.address())
            .await
            .unwrap();
        link.next(MessageId(0), DEADLINE).await.unwrap();
        link.ack(first).await.unwrap();
    });
    std::thread::sleep(Duration::from_millis(100));
    let recording = proxy.recordings().unwrap().remove(0);
    assert!(!recording.up.is_empty() && !recording.down.is_empty());
    assert_eq!(coordinator.logins(VALIDATOR).unwrap(), 1);

    // The processor's half played to the coordinator: no login, no ack.
    let mut replay = std::net::TcpStream::connect(coordinator.address()).unwrap();
    std::io::Write::write_all(&mut replay, &recording.up).unwrap();
    coordinator
        .wait_until(DEADLINE, |c| Ok(c.refusals()?.handshakes.len() == 1))
        .unwrap();
    assert!(
        coordinator.refusals().unwrap().handshakes[0].contains("does not authenticate"),
        "{:?}",
        coordinator.refusals()
    );
    assert_eq!(coordinator.logins(VALIDATOR).unwrap(), 1);

    // The coordinator's half played to the processor: refused at the handshake.
    let replaying = Proxy::replay(recording.down).unwrap();
    let error = local(async {
        processor
            .connect(&coordinator, replaying.address())
            .await
            .err()
            .unwrap()
    });
    assert!(
        matches!(
            error,
            LinkError::Handshake {
                source: HandshakeError::Noise(_),
                ..
            }
        ),
        "{error}"
    );
    assert_eq!(
        processor.metric("scanner_link_handshakes_refused_total", "unauthenticated"),
        1
    );
}

/// Each forgery changes one thing the signature binds: the id (a replay), the validator (a
/// message moved between queues at the same id), the content (altered in place).
#[test]
fn a_queued_message_replayed_moved_or_altered_is_refused_over_an_authenticated_session() {
    let coordinator = CoordinatorHarness::start().unwrap();
    let processor = LinkEnd::registered(&coordinator);
    let first = coordinator.push(VALIDATOR, message(0)).unwrap();
    let replayed = coordinator.push_replayed(VALIDATOR, first).unwrap();
    // Validator 9's queue, as long as validator 1's will be.
    for session in 1..=replayed.0 + 1 {
        coordinator
            .push(&[9], message(u32::try_from(session).unwrap()))
            .unwrap();
    }
    let moved = coordinator
        .push_moved(VALIDATOR, &[9], MessageId(replayed.0 + 1))
        .unwrap();
    let altered = coordinator.push(VALIDATOR, message(5)).unwrap();
    coordinator.alter(VALIDATOR, altered, &message(7)).unwrap();
    local(async {
        let link = processor
            .connect(&coordinator, coordinator.address())
            .await
            .unwrap();
        // The good message before them is returned; each forgery, once it comes first, is
        // refused and never returned.
        let inbound = link.next(MessageId(0), DEADLINE).await.unwrap();
        assert_eq!(inbound.len(), 1);
        assert_eq!(inbound[0].id, first);
        let mut after = first;
        for forged in [replayed, moved, altered] {
            match link.next(after, DEADLINE).await {
                Err(LinkError::Forged(SignatureError::Invalid { id })) => assert_eq!(id, forged),
                other => panic!("{:?}", other.map(|inbound| inbound.len())),
            }
            after = forged;
        }
    });
    assert_eq!(
        processor.metric("scanner_link_messages_refused_total", "bad_signature"),
        3
    );
}

/// Four messages as large as a message may be, queued at once: more than one answer may carry
/// (the coordinator answers no more than fit one message's limit), each checked and decoded
/// within the read limits (the processor decodes its own checked copy).
#[test]
fn the_largest_messages_are_checked_and_decoded_within_the_read_limits() {
    let coordinator = CoordinatorHarness::start().unwrap();
    let processor = LinkEnd::registered(&coordinator);
    let key = NetworkKey::from_slice(
        &bitcoin::secp256k1::PublicKey::from_secret_key(
            &bitcoin::secp256k1::Secp256k1::new(),
            &bitcoin::secp256k1::SecretKey::from_slice(&[5; 32]).unwrap(),
        )
        .serialize(),
    )
    .unwrap();
    // The largest message there is: a Serai block of the most burns, each of the longest
    // address and data (5.6 MB).
    let largest = |block: u64| {
        CoordinatorMessage::Substrate(substrate::CoordinatorMessage::SubstrateBlock {
            context: SubstrateContext {
                serai_time: SeraiTime(1),
                network_latest_finalized_block: BlockHash([0xff; 32]),
            },
            block: SeraiBlockNumber(block),
            key,
            burns: strategies::fullest_burns(),
        })
    };
    let ids: Vec<MessageId> = (1..=4)
        .map(|block| coordinator.push(VALIDATOR, largest(block)).unwrap())
        .collect();
    local(async {
        let link = processor
            .connect(&coordinator, coordinator.address())
            .await
            .unwrap();
        let mut after = MessageId(0);
        for (block, id) in (1..=4).zip(ids) {
            // Generous: copying 5.6 MB messages in a debug build on a busy machine is slow,
            // and the deadline is not what this checks.
            let inbound = link.next(after, 12 * DEADLINE).await.unwrap();
            assert_eq!(inbound.len(), 1);
            assert_eq!(inbound[0].id, id);
            assert_eq!(inbound[0].message.as_ref().unwrap(), &largest(block));
            after = id;
        }
    });
}

#[test]
fn plain_tcp_is_refused_to_another_host_and_still_checks_signatures_on_loopback() {
    let processor = LinkEnd::unknown();
    let plain = CoordinatorHarness::start_with(Listen::Plain).unwrap();
    let first = plain.push(VALIDATOR, message(0)).unwrap();
    let forged = plain.push(VALIDATOR, message(1)).unwrap();
    plain.alter(VALIDATOR, forged, &message(3)).unwrap();
    local(async {
        let settings = |endpoint| LinkSettings {
            endpoint,
            security: LinkSecurity::PlainLoopback,
            validator: VALIDATOR.to_vec(),
            message_key: plain.message_public_key(),
        };
        let remote = settings("192.0.2.1:7000".parse().unwrap());
        let error = LinkClient::connect(&remote, DEADLINE, &processor.metrics)
            .await
            .err()
            .unwrap();
        assert!(matches!(error, LinkError::PlainNotLoopback(_)), "{error}");
        assert_eq!(
            processor.metric(
                "scanner_link_handshakes_refused_total",
                "plain_not_loopback"
            ),
            1
        );

        let link = LinkClient::connect(&settings(plain.address()), DEADLINE, &processor.metrics)
            .await
            .unwrap();
        let inbound = link.next(MessageId(0), DEADLINE).await.unwrap();
        assert_eq!(inbound.len(), 1);
        assert!(matches!(
            link.next(first, DEADLINE).await,
            Err(LinkError::Forged(SignatureError::Invalid { id })) if id == forged
        ));
    });
}
