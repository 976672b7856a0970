//! Writes the committed seed corpora (`fuzz/corpus/<target>/`) from the project's own values:
//! messages drawn from `schema::strategies` with a fixed seed, the InInstruction test vectors,
//! stored records of real values, Core answers as Core gives them, and enclave calls with
//! well-formed parameters (some the enclave accepts), and key shares from a real key
//! generation. `ops/fuzz seeds` runs it; the output is the same each time.

use std::{fs, path::Path};

use bitcoin::{
    consensus,
    constants::genesis_block,
    secp256k1::{Keypair, Message, Secp256k1, SecretKey},
    Network,
};
use capnp::{message, serialize};
use proptest::{
    strategy::{Strategy, ValueTree},
    test_runner::TestRunner,
};
use rand_chacha::rand_core::SeedableRng;
use scanner::{
    chain::ChainOutput,
    chain::ChainTransaction,
    rotation::Rotation,
    scan::eventuality::{Eventuality, Member, Outcome},
    scan::outputs::ReceivedOutput,
    schedule::state as scheduler_state,
    schedule::{Limits, Scheduler},
    store::records::{
        encode_eventuality, encode_flight, encode_io, encode_outcome, encode_output, encode_spend,
    },
    store::{InFlight, Spend},
};
use schema::{
    batch::{Batch, SignedBatch},
    generated::{messages_capnp::coordinator_envelope, signer_capnp::signer},
    hashes::{BlockHash, PlanId},
    ids::{Attempt, BatchId, KeyGenId, NetworkId, Participant, Session, ValidatorSet},
    keys::KeyPair,
    link::signed,
    messages::{
        coordinator::{Attestation, PlansAcknowledged},
        key_gen,
    },
    plan::{OutputKind, Plan},
    sign_id::{BatchSignId, BatchSignTarget, PlanSignId, SignId},
    strategies,
    transaction::FeeRate,
    wire::{self, Wire},
};
use signer_enclave::{
    audit::{Entry, Event, Record},
    db::{candidate_key, encode_record, KeyRecord, KeyStatus},
    key_store::SealedKeys,
    resharing::verification_digest,
};

type Failure = Box<dyn std::error::Error>;

/// `count` values of `strategy`, the same ones every run.
fn draw<S: Strategy>(strategy: S, count: usize) -> Vec<S::Value> {
    let mut runner = TestRunner::deterministic();
    (0..count)
        .filter_map(|_| {
            strategy
                .new_tree(&mut runner)
                .ok()
                .map(|tree| tree.current())
        })
        .collect()
}

struct Corpus<'a> {
    root: &'a Path,
}

impl Corpus<'_> {
    fn write(&self, target: &str, name: &str, bytes: &[u8]) -> Result<(), Failure> {
        let dir = self.root.join(target);
        fs::create_dir_all(&dir)?;
        fs::write(dir.join(name), bytes)?;
        Ok(())
    }

    fn wire<T: Wire>(&self, selector: u8, values: &[T]) -> Result<(), Failure> {
        for (index, value) in values.iter().enumerate() {
            let bytes = [&[selector][..], &wire::encode(value)?].concat();
            self.write("wire", &format!("{selector:02}-{index}"), &bytes)?;
        }
        Ok(())
    }
}

/// One `Signer` call's parameters as a message, built by `fill`.
fn params<P: capnp::traits::Owned>(
    fill: impl FnOnce(P::Builder<'_>) -> Result<(), Failure>,
) -> Result<Vec<u8>, Failure> {
    let mut message = message::Builder::new_default();
    fill(message.init_root::<P::Builder<'_>>())?;
    Ok(serialize::write_message_to_words(&message))
}

fn call(method: u8, params: &[u8]) -> Result<Vec<u8>, Failure> {
    let len = u16::try_from(params.len())?;
    Ok([&[method][..], &len.to_le_bytes(), params].concat())
}

fn confirm_key_pair(set: ValidatorSet, pair: KeyPair) -> Result<Vec<u8>, Failure> {
    call(
        2,
        &params::<signer::confirm_key_pair_params::Owned>(|mut p| {
            set.write(p.reborrow().init_set())?;
            pair.write(p.init_key_pair())?;
            Ok(())
        })?,
    )
}

fn acknowledge_plans(acknowledged: &PlansAcknowledged) -> Result<Vec<u8>, Failure> {
    call(
        3,
        &params::<signer::acknowledge_plans_params::Owned>(|p| {
            Ok(acknowledged.write(p.init_acknowledged())?)
        })?,
    )
}

fn preprocess_plan(id: &PlanSignId, plan: &Plan) -> Result<Vec<u8>, Failure> {
    call(
        4,
        &params::<signer::preprocess_plan_params::Owned>(|mut p| {
            id.write(p.reborrow().init_id())?;
            plan.write(p.init_plan())?;
            Ok(())
        })?,
    )
}

fn preprocess_batch(id: &BatchSignId, batch: &Batch) -> Result<Vec<u8>, Failure> {
    call(
        7,
        &params::<signer::preprocess_batch_params::Owned>(|mut p| {
            id.write(p.reborrow().init_id())?;
            batch.write(p.init_batch())?;
            Ok(())
        })?,
    )
}

fn key_gen(message: &key_gen::CoordinatorMessage) -> Result<Vec<u8>, Failure> {
    call(
        1,
        &params::<signer::key_gen_params::Owned>(|p| Ok(message.write(p.init_message())?))?,
    )
}

/// The coordinator's attestation of `digest`, as the RPC target's enclave accepts it.
fn attested(digest: [u8; 32]) -> Attestation {
    let signature = Secp256k1::new().sign_schnorr_no_aux_rand(
        &Message::from_digest(digest),
        &processor_fuzz::coordinator(),
    );
    Attestation(signature.serialize())
}

fn batch_included(batch: &SignedBatch) -> Result<Vec<u8>, Failure> {
    call(
        10,
        &params::<signer::batch_included_params::Owned>(|mut p| {
            batch.write(p.reborrow().init_batch())?;
            p.set_attestation(&[3; 64]);
            Ok(())
        })?,
    )
}

fn main() -> Result<(), Failure> {
    let root = std::env::args()
        .nth(1)
        .ok_or("usage: seeds CORPUS_DIRECTORY")?;
    let corpus = Corpus {
        root: Path::new(&root),
    };

    corpus.wire(0, &draw(strategies::coordinator_envelope(), 12))?;
    corpus.wire(1, &draw(strategies::processor_envelope(), 12))?;
    corpus.wire(2, &draw(strategies::coordinator_message(), 6))?;
    corpus.wire(3, &draw(strategies::processor_message(), 6))?;
    corpus.wire(4, &draw(strategies::plan(), 4))?;
    corpus.wire(5, &draw(strategies::signed_batch(), 4))?;
    corpus.wire(6, &draw(strategies::batch(), 4))?;
    corpus.wire(7, &draw(strategies::plans_acknowledged(), 4))?;
    corpus.wire(8, &draw(strategies::substrate_block_ack(), 4))?;
    corpus.wire(9, &draw(strategies::plan_sign_id(), 2))?;
    corpus.wire(10, &draw(strategies::batch_sign_id(), 2))?;

    // The link: signed envelopes, and handshake messages of the right shapes.
    let coordinator =
        Keypair::from_secret_key(&Secp256k1::new(), &SecretKey::from_slice(&[3; 32])?);
    for (index, envelope) in draw(strategies::coordinator_envelope(), 6)
        .iter()
        .enumerate()
    {
        let mut message = message::Builder::new_default();
        let mut root = message.init_root::<coordinator_envelope::Builder<'_>>();
        envelope.write(root.reborrow())?;
        signed::sign_envelope(&coordinator, b"validator", root)?;
        let bytes = [&[0u8][..], &serialize::write_message_to_words(&message)].concat();
        corpus.write("link", &format!("envelope-{index}"), &bytes)?;
    }
    // A processor's first message (its ephemeral key), then its third (its static key and the
    // payload tag); a coordinator's second (ephemeral, encrypted static, tag).
    let frame =
        |len: u16, fill: u8| [&len.to_be_bytes()[..], &vec![fill; usize::from(len)]].concat();
    corpus.write("link", "responder-1", &[&[1u8][..], &frame(32, 9)].concat())?;
    corpus.write(
        "link",
        "responder-3",
        &[&[1u8][..], &frame(32, 9), &frame(64, 7)].concat(),
    )?;
    corpus.write("link", "initiator-2", &[&[3u8][..], &frame(96, 5)].concat())?;

    // The specification's InInstruction vectors, alone and in a transaction.
    let vectors: serde_json::Value = serde_json::from_str(&fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../schema/tests/vectors/in_instructions.json"),
    )?)?;
    for (index, vector) in vectors.as_array().ok_or("vectors")?.iter().enumerate() {
        let encoding = hex::decode(vector["encoding"].as_str().ok_or("encoding")?)?;
        corpus.write("in_instruction", &format!("vector-{index}"), &encoding)?;
        let split = u8::try_from(encoding.len().min(100) * 2)?;
        corpus.write(
            "deposit_transaction",
            &format!("vector-{index}"),
            &[&[split][..], &encoding].concat(),
        )?;
    }
    let genesis = genesis_block(Network::Regtest);
    corpus.write(
        "deposit_transaction",
        "coinbase",
        &[&[1u8][..], &consensus::serialize(&genesis.txdata[0])].concat(),
    )?;

    // Stored scanner records of drawn values.
    let key = processor_fuzz::network_key();
    let pairs = draw(strategies::key_pair(), 6);
    for (index, ((instruction, amount), id)) in draw(
        (
            proptest::option::of(strategies::refundable_in_instruction()),
            strategies::amount(),
        )
            .prop_flat_map(|value| (proptest::strategy::Just(value), strategies::output_id())),
        6,
    )
    .into_iter()
    .enumerate()
    {
        // Without an instruction, every other output is a refund to the origin's address.
        let refund = match (&instruction, index % 2) {
            (None, 1) => Some(schema::plan::PaymentAddress::from_bytes(
                &[&[0x51, 0x20][..], &[7; 32]].concat(),
            )?),
            _ => None,
        };
        let output = ReceivedOutput {
            id,
            key,
            kind: OutputKind::External,
            amount,
            instruction,
            refund,
        };
        corpus.write(
            "scanner_records",
            &format!("output-{index}"),
            &[&[0u8][..], &encode_output(&output)].concat(),
        )?;
        let outputs = vec![ChainOutput {
            script: vec![0x51, 0x20, 7, 7],
            amount,
        }];
        let plan = PlanId([u8::try_from(index)?; 32]);
        let replacement = PlanId([u8::try_from(index)? | 0x80; 32]);
        let eventuality = Eventuality {
            plan,
            key,
            inputs: vec![id],
            outputs: outputs.clone(),
            replacements: (index % 2 == 1)
                .then(|| Member {
                    plan: replacement,
                    outputs: outputs.clone(),
                })
                .into_iter()
                .collect(),
        };
        corpus.write(
            "scanner_records",
            &format!("eventuality-{index}"),
            &[&[1u8][..], &encode_eventuality(&eventuality)].concat(),
        )?;
        corpus.write(
            "scanner_records",
            &format!("io-{index}"),
            &[&[2u8][..], &encode_io(&[id, id], &outputs)].concat(),
        )?;
        let outcome = if index % 2 == 0 {
            Outcome::Completed {
                plan: replacement,
                tx: id.txid,
            }
        } else {
            Outcome::Conflict(id.txid)
        };
        corpus.write(
            "scanner_records",
            &format!("outcome-{index}"),
            &[&[3u8][..], &encode_outcome(&outcome)].concat(),
        )?;
        let spend = Spend {
            height: 100 + u64::try_from(index)?,
            transaction: ChainTransaction {
                id: id.txid,
                inputs: vec![id],
                outputs: outputs.clone(),
                data: None,
            },
        };
        corpus.write(
            "scanner_records",
            &format!("spend-{index}"),
            &[&[4u8][..], &encode_spend(&spend)].concat(),
        )?;
        let flight = InFlight {
            family: plan,
            key,
            latest: replacement,
            made_at: 100,
            since: 106,
            child: (index % 2 == 1).then_some(plan),
        };
        corpus.write(
            "scanner_records",
            &format!("flight-{index}"),
            &[&[5u8][..], &encode_flight(&flight)].concat(),
        )?;
        // A rotation through `index + 1` keys, the first two held (then this validator left):
        // the newest active, the others forwarding, the oldest retired once there are two.
        let mut rotation = Rotation::default();
        for (step, pair) in (0_u64..).zip(pairs.iter().take(index + 1)) {
            rotation.confirm(
                *pair,
                Session(u32::try_from(step)?),
                100 + step * 10,
                step < 2,
            )?;
        }
        if let Some(oldest) = rotation.keys().first().map(|key| key.pair.network_key) {
            rotation.retire_if_done(&oldest, true, 1_000);
        }
        corpus.write(
            "scanner_records",
            &format!("rotation-{index}"),
            &[&[6u8][..], &rotation.encode()].concat(),
        )?;
    }

    // Scheduler states: empty, and holding outputs and payments that wait at a fee rate above
    // the cap.
    let scheduler = Scheduler::new(key, Limits::BITCOIN);
    corpus.write(
        "scheduler_state",
        "empty",
        &scheduler_state::encode(&scheduler),
    )?;
    // The same state as version 2 wrote it (no claimed outputs): read, then migrated.
    let current = scheduler_state::encode(&scheduler);
    let mut version_2 = current[..current.len().saturating_sub(4)].to_vec();
    version_2[0] = 2;
    corpus.write("scheduler_state", "empty-v2", &version_2)?;
    let inputs = draw(strategies::plan_input(), 6);
    let payments = draw(strategies::payment(), 6);
    for rate in [1, 50, 1000] {
        let mut scheduler = Scheduler::new(key, Limits::BITCOIN);
        if scheduler
            .schedule(inputs.clone(), payments.clone(), FeeRate(rate))
            .is_ok()
        {
            corpus.write(
                "scheduler_state",
                &format!("after-{rate}"),
                &scheduler_state::encode(&scheduler),
            )?;
            // Claiming outputs a child spent before they arrived.
            let claimed = scheduler
                .clone()
                .claiming(inputs.iter().map(|input| input.id).collect());
            corpus.write(
                "scheduler_state",
                &format!("claimed-{rate}"),
                &scheduler_state::encode(&claimed),
            )?;
        }
    }

    // Key shares of both curves, from a real 3-of-4 key generation (from a fixed seed), and
    // what each participant was sent in it.
    let (keys, received) =
        signer_enclave::local_key_gen::relay(3, 4, &mut rand_chacha::ChaCha20Rng::seed_from_u64(1))
            .ok_or("key generation")?;
    for (participant, messages) in received {
        let mut session = Vec::new();
        for message in &messages {
            let bytes = wire::encode(message)?;
            session.extend_from_slice(&u16::try_from(bytes.len())?.to_le_bytes());
            session.extend_from_slice(&bytes);
        }
        corpus.write("key_gen", &format!("participant-{participant}"), &session)?;
    }
    for (index, keys) in keys.values().enumerate() {
        corpus.write(
            "key_shares",
            &format!("batch-{index}"),
            &[&[0u8][..], &keys.batch.serialize()].concat(),
        )?;
        corpus.write(
            "key_shares",
            &format!("network-{index}"),
            &[&[1u8][..], &keys.network.serialize()].concat(),
        )?;
    }

    // Enclave records.
    for (index, (set, pair)) in draw((strategies::validator_set(), strategies::key_pair()), 4)
        .into_iter()
        .enumerate()
    {
        let record = KeyRecord {
            set,
            status: if index % 2 == 0 {
                KeyStatus::Generated
            } else {
                KeyStatus::Confirmed
            },
            pair,
            epoch: u32::try_from(index).unwrap_or(0),
            sealed: SealedKeys {
                key_id: pair.network_key.to_bytes().to_vec(),
                batch: vec![1; 60],
                network: vec![2; 60],
            },
        };
        let key = candidate_key(set, &pair);
        let value = encode_record(&record);
        corpus.write(
            "enclave_records",
            &format!("key-{index}"),
            &[&[2u8][..], &key, &value].concat(),
        )?;
        // What the fuzzer found once: epoch 0 spelled with an epoch field (status 2 or 3),
        // which must not read, or it would re-encode as status 0 or 1.
        if record.epoch == 0 {
            let spelled = [&[value[0] + 2][..], &[0; 4], &value[1..]].concat();
            corpus.write(
                "enclave_records",
                &format!("key-{index}-epoch-0-spelled"),
                &[&[2u8][..], &key, &spelled].concat(),
            )?;
        }
    }
    for (index, event) in [Event::KeyGenerated, Event::KeyConfirmed]
        .into_iter()
        .enumerate()
    {
        let record = Record {
            seq: u64::try_from(index)?,
            time: 1_700_000_000,
            entry: Entry {
                event,
                subject: vec![u8::try_from(index)?; 5],
                attempt: 0,
                key: key.to_bytes().to_vec(),
                detail: "seed".into(),
            },
        };
        corpus.write(
            "enclave_records",
            &format!("audit-{index}"),
            &[&[1u8][..], &record.encode()].concat(),
        )?;
    }

    // Core's answers, shaped as Core sends them.
    let block_hex = consensus::encode::serialize_hex(&genesis);
    let transaction_hex = consensus::encode::serialize_hex(&genesis.txdata[0]);
    for (name, answer) in [
        (
            "getblockcount",
            r#"{"result":800000,"error":null,"id":1}"#.to_owned(),
        ),
        (
            "getblockhash",
            format!(
                r#"{{"result":"{}","error":null,"id":1}}"#,
                genesis.block_hash()
            ),
        ),
        (
            "getblockheader",
            r#"{"result":{"hash":"00","confirmations":3,"height":7},"error":null,"id":1}"#
                .to_owned(),
        ),
        (
            "getblockstats",
            r#"{"result":{"txs":12,"feerate_percentiles":[1,2,3,4,5]},"error":null,"id":1}"#
                .to_owned(),
        ),
        (
            "estimatesmartfee",
            r#"{"result":{"feerate":0.00012345,"blocks":6},"error":null,"id":1}"#.to_owned(),
        ),
        (
            "error",
            r#"{"result":null,"error":{"code":-5,"message":"Block not found"},"id":1}"#.to_owned(),
        ),
        (
            "getblock",
            format!(r#"{{"result":"{block_hex}","error":null,"id":1}}"#),
        ),
        (
            "getrawtransaction",
            format!(r#"{{"result":"{transaction_hex}","error":null,"id":1}}"#),
        ),
    ] {
        corpus.write("core_answers", name, answer.as_bytes())?;
    }

    // Enclave calls with well-formed parameters: one seed per call, and a session of them all.
    let mut calls = vec![(
        "status".to_owned(),
        call(0, &params::<signer::status_params::Owned>(|_| Ok(()))?)?,
    )];
    for (index, (set, pair)) in draw((strategies::validator_set(), strategies::key_pair()), 2)
        .into_iter()
        .enumerate()
    {
        calls.push((format!("confirm-{index}"), confirm_key_pair(set, pair)?));
    }
    for (index, acknowledged) in draw(strategies::plans_acknowledged(), 2)
        .into_iter()
        .enumerate()
    {
        calls.push((
            format!("acknowledge-{index}"),
            acknowledge_plans(&acknowledged)?,
        ));
    }
    for (index, (id, plan)) in draw((strategies::plan_sign_id(), strategies::plan()), 2)
        .into_iter()
        .enumerate()
    {
        calls.push((
            format!("preprocess-plan-{index}"),
            preprocess_plan(&id, &plan)?,
        ));
    }
    for (index, (id, batch)) in draw((strategies::batch_sign_id(), strategies::batch()), 2)
        .into_iter()
        .enumerate()
    {
        calls.push((
            format!("preprocess-batch-{index}"),
            preprocess_batch(&id, &batch)?,
        ));
    }
    for (index, batch) in draw(strategies::signed_batch(), 2).into_iter().enumerate() {
        calls.push((format!("batch-included-{index}"), batch_included(&batch)?));
    }
    // Calls the enclave accepts: for the key it holds, an attested acknowledgement followed by
    // the plan's preprocess, and a Batch's preprocess.
    let (pair, keys) = processor_fuzz::enclave_keys();
    let plan = processor_fuzz::plan(pair.network_key, 0x41, 10).ok_or("plan")?;
    let acknowledged = processor_fuzz::attest(pair.network_key, 1, &[plan.id()]);
    let plan_id = SignId {
        key: pair.network_key,
        id: plan.id(),
        attempt: Attempt(0),
    };
    let batch = Batch {
        network: NetworkId::Bitcoin,
        id: BatchId(0),
        block: BlockHash([5; 32]),
        instructions: Vec::new(),
    };
    let batch_id = SignId {
        key: pair.batch_key,
        id: BatchSignTarget {
            network: NetworkId::Bitcoin,
            batch: BatchId(0),
        },
        attempt: Attempt(0),
    };
    // An attested refresh of the pair the enclave holds, and an attested repair of
    // participant 2 it helps (the fresh keys are the two curves' generators: Ristretto's
    // compressed basepoint, and secp256k1's as `processor_fuzz::network_key`).
    let refresh_id = KeyGenId {
        set: processor_fuzz::SET,
        attempt: Attempt(1),
    };
    // The enclave's identity is drawn when the target starts: the identities here are a
    // stand-in, so the refresh is refused where the identities are checked.
    let shares = verification_digest(&keys);
    let identities = vec![processor_fuzz::coordinator_key().serialize(); 4];
    let refresh = key_gen::CoordinatorMessage::RefreshBegin {
        id: refresh_id,
        pair,
        shares,
        attestation: attested(key_gen::refresh_attestation_message(
            refresh_id,
            &pair,
            &shares,
            &identities,
        )),
        identities,
    };
    // The repaired enclave's identity is the coordinator's key here: any key whose
    // signature the seed can make.
    let repair = key_gen::ShareRepair {
        pair,
        repaired: Participant::new(2)?,
        helpers: [1, 3, 4]
            .into_iter()
            .map(Participant::new)
            .collect::<Result<_, _>>()?,
        participants: 4,
        identity: processor_fuzz::coordinator_key().serialize(),
        shares: verification_digest(&keys),
    };
    let fresh_key = [
        &[
            0xe2, 0xf2, 0xae, 0x0a, 0x6a, 0xbc, 0x4e, 0x71, 0xa8, 0x84, 0xa9, 0x61, 0xc5, 0x00,
            0x51, 0x5f, 0x58, 0xe3, 0x0b, 0x6a, 0xa5, 0x82, 0xdd, 0x8d, 0xb6, 0xa6, 0x59, 0x45,
            0xe0, 0x8d, 0x2d, 0x76,
        ][..],
        &processor_fuzz::network_key().to_bytes()[..],
    ]
    .concat();
    let help = key_gen::CoordinatorMessage::RepairHelp {
        id: refresh_id,
        attestation: attested(key_gen::repair_attestation_message(
            refresh_id, &repair, &fresh_key,
        )),
        fresh_key_signature: attested(key_gen::repair_fresh_key_message(
            refresh_id, &repair, &fresh_key,
        ))
        .0,
        repair,
        fresh_key,
    };
    let accepted = [
        ("refresh-begin", key_gen(&refresh)?),
        ("repair-help", key_gen(&help)?),
        (
            "acknowledged-plan",
            [
                acknowledge_plans(&acknowledged)?,
                preprocess_plan(&plan_id, &plan)?,
            ]
            .concat(),
        ),
        ("batch-0", preprocess_batch(&batch_id, &batch)?),
    ];
    // A leading even byte: the rest is calls.
    let mut session = vec![0u8];
    for (name, call) in &calls {
        corpus.write("enclave_rpc", name, &[&[0u8][..], call].concat())?;
        session.extend_from_slice(call);
    }
    corpus.write("enclave_rpc", "session", &session)?;
    for (name, calls) in accepted {
        corpus.write("enclave_rpc", name, &[&[0u8][..], &calls].concat())?;
    }
    Ok(())
}
