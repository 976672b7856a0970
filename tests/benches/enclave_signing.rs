//! What a signature costs through the enclaves: four real `signer-enclave` processes (each with
//! its own SoftHSM2 token, RPC over Unix sockets from the scanner's client), timing a 3-of-4
//! key generation, a 3-of-4 signature of a 16-input Taproot transaction and one of the largest
//! plan the scheduler makes (`MAX_INPUTS` inputs): three rounds, each sent to every signer at
//! once as a coordinator does, so that the enclaves work concurrently. Next to it, the same
//! FROST signing in one process with no RPC, database or policy.
//!
//! Run: `cargo build --release --workspace --bins && cargo bench -p processor-tests --bench
//! enclave_signing` (the release binaries must be next to the benchmark).

// Benchmark code: a failed unwrap is a failed run, and the report goes to stdout.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::{
    collections::BTreeMap,
    os::unix::fs::MetadataExt,
    time::{Duration, Instant},
};

use bitcoin::{
    key::Keypair,
    secp256k1::{Message, Secp256k1, SecretKey},
};
use processor_tests::{
    enclave::EnclaveProcess,
    relay::{key_gen, others, sign_plan},
};
use rand_core::OsRng;
use scanner::coordinate::enclave_client::EnclaveClient;
use schema::{
    amount::Amount,
    hashes::TransactionId,
    ids::{Attempt, KeyGenId, NetworkId, Participant, SeraiBlockNumber, Session, ValidatorSet},
    keys::{KeyPair, NetworkKey},
    messages::{
        coordinator::{Attestation, PlansAcknowledged},
        key_gen::ProcessorMessage,
        ParticipantMap,
    },
    plan::{OutputId, OutputKind, Payment, PaymentAddress, Plan, PlanInput},
    protocol::MAX_INPUTS,
    sign_id::PlanSignId,
    transaction::{build, Built, FeeRate},
};
use signer_enclave::{
    key_gen::{GeneratedKeys, KeyGen},
    plan_signing::PlanSigning,
    policy::PlanApproval,
};
use tokio::task::LocalSet;

const ROUNDS: u32 = 30;
const KEY_GENS: u32 = 5;
const INPUTS: u32 = 16;
/// Signatures of the largest plan timed.
const LARGEST_ROUNDS: u32 = 5;
const FEE_RATE: FeeRate = FeeRate(10);

fn p(i: u16) -> Participant {
    Participant::new(i).unwrap()
}

fn set() -> ValidatorSet {
    ValidatorSet {
        session: Session(0),
        network: NetworkId::Bitcoin,
    }
}

fn report(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    // Percentile by rank: index = (len - 1) * percent / 100.
    let at = |percent: usize| samples[(samples.len() - 1) * percent / 100].as_secs_f64() * 1000.0;
    println!(
        "{what}: median {:.2} ms, p90 {:.2} ms, min {:.2} ms ({} runs)",
        at(50),
        at(90),
        at(0),
        samples.len()
    );
}

/// A plan spending `inputs` outputs of the transaction `from` (plans spending the same outputs
/// are refused: one input, one signed transaction).
fn plan(key: NetworkKey, from: u8, inputs: u32) -> Plan {
    let kinds = [OutputKind::External, OutputKind::Branch, OutputKind::Change];
    Plan {
        key,
        inputs: (0..inputs)
            .map(|vout| PlanInput {
                id: OutputId {
                    txid: TransactionId([from; 32]),
                    vout,
                },
                kind: kinds[vout as usize % 3],
                amount: Amount::from_sat(100_000).unwrap(),
            })
            .collect(),
        payments: vec![Payment {
            address: PaymentAddress::from_bytes(&[&[0x00, 0x14][..], &[2; 20]].concat()).unwrap(),
            data: None,
            amount: Amount::from_sat(1_000_000).unwrap(),
        }],
        change: Some(key),
        fee_rate: FEE_RATE,
        replaces: None,
    }
}

fn pair(message: &ProcessorMessage) -> KeyPair {
    match message {
        ProcessorMessage::GeneratedKeyPair {
            batch_key,
            network_key,
            ..
        } => KeyPair {
            batch_key: *batch_key,
            network_key: *network_key,
        },
        other => panic!("{other:?}"),
    }
}

async fn through_enclaves() {
    let dir = tempfile::tempdir().unwrap();
    let uid = std::fs::metadata(dir.path()).unwrap().uid();
    let coordinator = Keypair::from_secret_key(
        &Secp256k1::new(),
        &SecretKey::from_slice(&[0x77; 32]).unwrap(),
    );
    let mut enclaves = Vec::new();
    let mut clients = BTreeMap::new();
    for i in 1..=4 {
        let mut enclave = EnclaveProcess::provision(
            &dir.path().join(format!("e{i}")),
            &coordinator.x_only_public_key().0,
            uid,
        )
        .unwrap();
        enclave.start().unwrap();
        clients.insert(
            p(i),
            EnclaveClient::connect(enclave.socket(), Duration::from_secs(60))
                .await
                .unwrap(),
        );
        enclaves.push(enclave);
    }

    let mut samples = Vec::new();
    let mut last = BTreeMap::new();
    for attempt in 0..KEY_GENS {
        let id = KeyGenId {
            set: set(),
            attempt: Attempt(attempt),
        };
        let mut parties = clients.clone();
        let started = Instant::now();
        last = key_gen(&mut parties, id, 3, None).await.unwrap();
        samples.push(started.elapsed());
    }
    report(
        "3-of-4 DKG through 4 enclaves (both keys, sealed and recorded)",
        samples,
    );
    let pair = pair(&last[&p(1)]);
    let plan_16 = plan(pair.network_key, 0x44, INPUTS);
    let largest = plan(pair.network_key, 0x45, u32::try_from(MAX_INPUTS).unwrap());
    let plans = vec![plan_16.id(), largest.id()];
    let block = SeraiBlockNumber(1);
    let digest = PlansAcknowledged::attestation_message(
        NetworkId::Bitcoin,
        &pair.network_key,
        block,
        &plans,
    );
    let acknowledged = PlansAcknowledged {
        block,
        key: pair.network_key,
        plans,
        attestation: Attestation(
            Secp256k1::new()
                .sign_schnorr_no_aux_rand(&Message::from_digest(digest), &coordinator)
                .serialize(),
        ),
    };
    for client in clients.values() {
        client.confirm_key_pair(set(), &pair).await.unwrap();
        client.acknowledge_plans(&acknowledged).await.unwrap();
    }
    for (plan, rounds, what) in [
        (
            &plan_16,
            ROUNDS,
            format!("3-of-4 signature of a {INPUTS}-input transaction through the enclaves"),
        ),
        (
            &largest,
            LARGEST_ROUNDS,
            format!(
                "3-of-4 signature of the largest plan ({MAX_INPUTS} inputs) through the enclaves"
            ),
        ),
    ] {
        let mut samples = Vec::new();
        for attempt in 0..rounds {
            let id = PlanSignId {
                key: pair.network_key,
                id: plan.id(),
                attempt: Attempt(attempt),
            };
            let started = Instant::now();
            sign_plan(&clients, &[p(1), p(2), p(3)], id, plan)
                .await
                .unwrap();
            samples.push(started.elapsed());
        }
        report(&what, samples);
    }
}

fn generate_in_process() -> BTreeMap<Participant, GeneratedKeys> {
    let mut parties: BTreeMap<Participant, InProcess> = (1..=4)
        .map(|i| (p(i), InProcess(KeyGen::default(), None)))
        .collect();
    let id = KeyGenId {
        set: set(),
        attempt: Attempt(0),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime
        .block_on(key_gen(&mut parties, id, 3, None))
        .unwrap();
    parties
        .into_iter()
        .map(|(i, party)| (i, party.1.unwrap()))
        .collect()
}

struct InProcess(KeyGen, Option<GeneratedKeys>);

impl processor_tests::relay::KeyGenParty for InProcess {
    async fn handle(
        &mut self,
        message: schema::messages::key_gen::CoordinatorMessage,
    ) -> Result<ProcessorMessage, processor_tests::HarnessError> {
        let (mut messages, keys) = self.0.handle(message, &mut OsRng).unwrap();
        if keys.is_some() {
            self.1 = keys;
        }
        Ok(messages.remove(0))
    }
}

fn in_process() {
    let keys = generate_in_process();
    let key = NetworkKey::from_slice(
        ciphersuite::group::GroupEncoding::to_bytes(&keys[&p(1)].network.group_key()).as_ref(),
    )
    .unwrap();
    let plan = plan(key, 0x44, INPUTS);
    let Ok(Built::Transaction(built)) = build(&plan) else {
        panic!("plan does not build");
    };
    let signers = [p(1), p(2), p(3)];
    let mut samples = Vec::new();
    for attempt in 0..ROUNDS {
        let id = PlanSignId {
            key,
            id: plan.id(),
            attempt: Attempt(attempt),
        };
        let started = Instant::now();
        let mut sessions: BTreeMap<Participant, PlanSigning> = BTreeMap::new();
        let mut preprocesses = ParticipantMap::new();
        for signer in signers {
            let approval = PlanApproval {
                built: built.clone(),
                marker: id,
                inputs: plan.inputs.iter().map(|input| input.id).collect(),
                family: plan.family(),
            };
            let mut session = PlanSigning::default();
            preprocesses.insert(
                signer,
                session
                    .preprocess(approval, &plan, &keys[&signer].network, &mut OsRng)
                    .unwrap(),
            );
            sessions.insert(signer, session);
        }
        let mut shares = ParticipantMap::new();
        for signer in signers {
            let session = sessions.get_mut(&signer).unwrap();
            shares.insert(
                signer,
                session.share(&id, &others(&preprocesses, signer)).unwrap(),
            );
        }
        for signer in signers {
            let session = sessions.get_mut(&signer).unwrap();
            session.complete(&id, &others(&shares, signer)).unwrap();
        }
        samples.push(started.elapsed());
    }
    report(
        "the same 16-input 3-of-4 FROST signing in one process, one signer after another (no RPC, HSM or database)",
        samples,
    );
}

fn main() {
    if std::env::args().any(|arg| arg == "--list") {
        return;
    }
    in_process();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    LocalSet::new().block_on(&runtime, through_enclaves());
}
