//! What securing the coordinator link costs: the scanner's real link client against the
//! coordinator harness over loopback TCP, plain and Noise, in alternating rounds of the same
//! run so that both see the same machine. Per connection: TCP connect, (handshake,) login. Per
//! call: one `next` returning two signed messages (a small one and one of 12 KB), then one
//! returning the 12 KB one alone, signatures checked in both modes (signatures at rest do not
//! depend on the transport); and the signature check alone.
//!
//! Run: `ops/bench link` (or `cargo bench -p processor-tests --bench link`).

// Benchmark code: a failed unwrap is a failed run, and the report goes to stdout.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::{
    rc::Rc,
    time::{Duration, Instant},
};

use capnp::message::Builder;
use processor_tests::coordinator::{CoordinatorHarness, Listen};
use prometheus::Registry;
use scanner::coordinate::link::{LinkClient, LinkMetrics, LinkSecurity, LinkSettings};
use schema::{
    generated::messages_capnp::coordinator_envelope,
    ids::{Attempt, KeyGenId, MessageId, NetworkId, Participant, Session, ValidatorSet},
    link::{identity::LinkSecretKey, signed},
    messages::{key_gen, CoordinatorEnvelope, CoordinatorMessage},
    wire::Wire,
};

const ROUNDS: usize = 10;
const CONNECTS: usize = 20;
const CALLS: usize = 200;
const VALIDATOR: &[u8] = &[1];

fn commitments(each: usize) -> CoordinatorMessage {
    CoordinatorMessage::KeyGen(key_gen::CoordinatorMessage::Commitments {
        id: KeyGenId {
            set: ValidatorSet {
                session: Session(0),
                network: NetworkId::Bitcoin,
            },
            attempt: Attempt(0),
        },
        commitments: (1..=3)
            .map(|i| (Participant::new(i).unwrap(), vec![7u8; each]))
            .collect(),
    })
}

struct Side {
    coordinator: CoordinatorHarness,
    settings: LinkSettings,
}

fn side(listen: Listen, key: &Rc<LinkSecretKey>) -> Side {
    let coordinator = CoordinatorHarness::start_with(listen).unwrap();
    coordinator.register(VALIDATOR, key.public()).unwrap();
    coordinator.push(VALIDATOR, commitments(32)).unwrap();
    coordinator.push(VALIDATOR, commitments(4096)).unwrap();
    let security = match listen {
        Listen::Noise => LinkSecurity::Noise {
            key: Rc::clone(key),
            coordinator: coordinator.link_public_key(),
        },
        Listen::Plain => LinkSecurity::PlainLoopback,
    };
    let settings = LinkSettings {
        endpoint: coordinator.address(),
        security,
        validator: VALIDATOR.to_vec(),
        message_key: coordinator.message_public_key(),
    };
    Side {
        coordinator,
        settings,
    }
}

/// Microseconds per connection, per `next` of both messages, and per `next` of the large one.
async fn measure(side: &Side, metrics: &LinkMetrics) -> (f64, f64, f64) {
    let deadline = Duration::from_secs(5);
    let start = Instant::now();
    for _ in 0..CONNECTS {
        LinkClient::connect(&side.settings, deadline, metrics)
            .await
            .unwrap();
    }
    let connect = start.elapsed().as_secs_f64() * 1e6 / CONNECTS as f64;
    let link = LinkClient::connect(&side.settings, deadline, metrics)
        .await
        .unwrap();
    let mut per_call = [0.0; 2];
    for (after, cost) in [0u64, 1].into_iter().zip(per_call.iter_mut()) {
        let start = Instant::now();
        for _ in 0..CALLS {
            let inbound = link.next(MessageId(after), deadline).await.unwrap();
            assert_eq!(inbound.len(), usize::try_from(2 - after).unwrap());
        }
        *cost = start.elapsed().as_secs_f64() * 1e6 / CALLS as f64;
    }
    (connect, per_call[0], per_call[1])
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Microseconds to check one signed envelope's signature.
fn verify_cost(message: CoordinatorMessage) -> f64 {
    let key = bitcoin::secp256k1::Keypair::from_secret_key(
        &bitcoin::secp256k1::Secp256k1::new(),
        &bitcoin::secp256k1::SecretKey::from_slice(&[3; 32]).unwrap(),
    );
    let mut builder = Builder::new_default();
    let mut root = builder.init_root::<coordinator_envelope::Builder<'_>>();
    CoordinatorEnvelope {
        id: MessageId(1),
        message,
    }
    .write(root.reborrow())
    .unwrap();
    signed::sign_envelope(&key, VALIDATOR, root).unwrap();
    let reader = builder
        .get_root_as_reader::<coordinator_envelope::Reader<'_>>()
        .unwrap();
    let start = Instant::now();
    for _ in 0..1000 {
        signed::verify_envelope(&key.x_only_public_key().0, VALIDATOR, reader).unwrap();
    }
    start.elapsed().as_secs_f64() * 1e3
}

fn main() {
    let key = Rc::new(LinkSecretKey::generate());
    let plain = side(Listen::Plain, &key);
    let noise = side(Listen::Noise, &key);
    let metrics = LinkMetrics::new(&Registry::new()).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    let (mut plain_runs, mut noise_runs) = (Vec::new(), Vec::new());
    local.block_on(&runtime, async {
        for _ in 0..ROUNDS {
            plain_runs.push(measure(&plain, &metrics).await);
            noise_runs.push(measure(&noise, &metrics).await);
        }
    });
    assert!(plain.coordinator.refusals().unwrap().handshakes.is_empty());
    assert!(noise.coordinator.refusals().unwrap().handshakes.is_empty());
    let pick = |runs: &[(f64, f64, f64)], which: usize| {
        let mut values: Vec<f64> = runs
            .iter()
            .map(|run| [run.0, run.1, run.2][which])
            .collect();
        median(&mut values)
    };
    println!("coordinator link, loopback TCP, median of {ROUNDS} alternating rounds (µs)");
    println!("{:<40} {:>10} {:>10} {:>7}", "", "plain", "noise", "ratio");
    for (which, name) in [
        "connect and log in",
        "next: a small and a 12 KB message",
        "next: one 12 KB message",
    ]
    .iter()
    .enumerate()
    {
        let (a, b) = (pick(&plain_runs, which), pick(&noise_runs, which));
        println!("{name:<40} {a:>10.1} {b:>10.1} {:>6.2}x", b / a);
    }
    println!(
        "signature check alone: small {:.1} µs, 12 KB {:.1} µs",
        verify_cost(commitments(32)),
        verify_cost(commitments(4096))
    );
}
