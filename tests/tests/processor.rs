//! Four validators' processors (a real `scanner` process and a real `signer-enclave` process
//! each, own SoftHSM token each) against the coordinator harness and the regtest node: key
//! generation relayed through the coordinator link, the key pair confirmed, a deposit scanned
//! into Batch 0, the Batch signed by three of them and verified with `schnorrkel`; a Serai
//! block with a burn, the same plan acknowledged by all four before any signing, attested,
//! signed by three, published, mined: the payout arrives, and every processor reports the
//! completion. Then a coordinator that rewinds its queue: the processors halt their link
//! instead of handling any message twice.

// Test code: a failed unwrap is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unwrap_in_result
)]

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use bitcoin::{
    hashes::Hash,
    key::Keypair,
    script::PushBytesBuf,
    secp256k1::{Secp256k1, SecretKey},
    Amount, ScriptBuf, TxOut,
};
use processor_tests::{
    binary,
    coordinator::CoordinatorHarness,
    enclave::{Caps, EnclaveProcess},
    regtest::{harness::RegtestNode, wallet::TestWallet},
    relay::others,
};
use schema::{
    batch::SignedBatch,
    hashes::{BlockHash, SeraiAddress},
    ids::{
        Attempt, KeyGenId, NetworkId, Participant, SeraiBlockNumber, SeraiTime, Session,
        ThresholdParams, ValidatorSet,
    },
    instruction::{InInstruction, OutInstructionWithBalance, RefundableInInstruction},
    keys::KeyPair,
    messages::{
        coordinator::{
            Attestation, CoordinatorMessage as Coordinator, PlansAcknowledged,
            ProcessorMessage as CoordinatorOut,
        },
        key_gen, sign,
        substrate::{self, SubstrateContext},
        CoordinatorMessage, ParticipantMap, ProcessorMessage,
    },
    plan::OutputKind,
    sign_id::BatchSignId,
    taproot::KeyScripts,
};
use serde_json::json;
use signer_enclave::batch_signing::BATCH_SIGNING_CONTEXT;

const CONFIRMATIONS: u64 = 2;
const WAIT: Duration = Duration::from_secs(90);

struct Validator {
    id: Vec<u8>,
    enclave: EnclaveProcess,
    scanner: Child,
    dir: PathBuf,
}

impl Validator {
    fn start(dir: &Path, index: u16, node: &RegtestNode, coordinator: &CoordinatorHarness) -> Self {
        let dir = dir.join(format!("validator-{index}"));
        std::fs::create_dir_all(&dir).unwrap();
        let uid = std::fs::metadata(&dir).unwrap().uid();
        let attestor = Keypair::from_secret_key(
            &Secp256k1::new(),
            &SecretKey::from_slice(&[0x77; 32]).unwrap(),
        );
        let mut enclave = EnclaveProcess::provision(
            &dir.join("enclave"),
            &attestor.x_only_public_key().0,
            uid,
            Caps {
                max_fee_rate: 100,
                max_fee_share_basis_points: 500,
            },
        )
        .unwrap();
        enclave.start().unwrap();
        let config = dir.join("scanner.toml");
        std::fs::write(
            &config,
            format!(
                r#"network = "regtest"
confirmations = {CONFIRMATIONS}
poll_interval_ms = 50
db_path = "{db}"

[bitcoin_rpc]
url = "{url}"
cookie_file = "{cookie}"
timeout_seconds = 30

[coordinator]
endpoint = "{coordinator}"
validator = "{validator:02x}"

[enclave]
socket = "{socket}"

[metrics]
listen = "127.0.0.1:0"
"#,
                db = dir.join("scanner-db").display(),
                url = node.url(),
                cookie = node.cookie_file().display(),
                coordinator = coordinator.address(),
                validator = index,
                socket = enclave.socket().display(),
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("scanner.log")).unwrap();
        let scanner = Command::new(binary("scanner").unwrap())
            .arg("run")
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Validator {
            id: vec![u8::try_from(index).unwrap()],
            enclave,
            scanner,
            dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("scanner.log")).unwrap_or_default()
    }
}

impl Drop for Validator {
    fn drop(&mut self) {
        let _ = self.scanner.kill();
        let _ = self.scanner.wait();
        self.enclave.kill();
    }
}

fn p(i: u16) -> Participant {
    Participant::new(i).unwrap()
}

/// The messages a validator sent that `pick` selects, in id order.
fn sent<T>(
    coordinator: &CoordinatorHarness,
    validator: &[u8],
    pick: impl Fn(&ProcessorMessage) -> Option<T>,
) -> Vec<T> {
    coordinator
        .received(validator)
        .unwrap()
        .values()
        .filter_map(pick)
        .collect()
}

/// Waits until every validator in `from` sent one message `pick` selects; returns them.
fn collect<T>(
    coordinator: &CoordinatorHarness,
    validators: &[(Participant, &Validator)],
    pick: impl Fn(&ProcessorMessage) -> Option<T> + Copy,
) -> Vec<(Participant, T)> {
    let waited = coordinator.wait_until(WAIT, |coordinator| {
        Ok(validators
            .iter()
            .all(|(_, validator)| !sent(coordinator, &validator.id, pick).is_empty()))
    });
    if let Err(error) = waited {
        let logs: Vec<String> = validators.iter().map(|(_, v)| v.log()).collect();
        panic!("{error}: scanner logs: {logs:#?}");
    }
    validators
        .iter()
        .map(|(participant, validator)| {
            (
                *participant,
                sent(coordinator, &validator.id, pick).remove(0),
            )
        })
        .collect()
}

#[test]
fn the_whole_story_through_four_processors() {
    let dir = tempfile::tempdir().unwrap();
    let node = RegtestNode::start(&dir.path().join("node")).unwrap();
    let miner = TestWallet::new([0x42; 32]).unwrap();
    node.mine(101, miner.address()).unwrap();
    let coordinator = CoordinatorHarness::start().unwrap();
    let validators: Vec<Validator> = (1..=4)
        .map(|i| Validator::start(dir.path(), i, &node, &coordinator))
        .collect();
    let all: Vec<(Participant, &Validator)> = (1u16..).map(p).zip(validators.iter()).collect();

    // Key generation, relayed as the coordinator does.
    let id = KeyGenId {
        set: ValidatorSet {
            session: Session(0),
            network: NetworkId::Bitcoin,
        },
        attempt: Attempt(0),
    };
    for (participant, validator) in &all {
        let params = ThresholdParams::new(3, 4, *participant).unwrap();
        coordinator
            .push(
                &validator.id,
                CoordinatorMessage::KeyGen(key_gen::CoordinatorMessage::GenerateKey { id, params }),
            )
            .unwrap();
    }
    let commitments: ParticipantMap = collect(&coordinator, &all, |message| match message {
        ProcessorMessage::KeyGen(key_gen::ProcessorMessage::Commitments {
            commitments, ..
        }) => Some(commitments.clone()),
        _ => None,
    })
    .into_iter()
    .collect();
    for (participant, validator) in &all {
        coordinator
            .push(
                &validator.id,
                CoordinatorMessage::KeyGen(key_gen::CoordinatorMessage::Commitments {
                    id,
                    commitments: others(&commitments, *participant),
                }),
            )
            .unwrap();
    }
    let shares = collect(&coordinator, &all, |message| match message {
        ProcessorMessage::KeyGen(key_gen::ProcessorMessage::Shares { shares, .. }) => {
            Some(shares.clone())
        }
        _ => None,
    });
    for (participant, validator) in &all {
        let mine: ParticipantMap = shares
            .iter()
            .filter_map(|(from, sent)| Some((*from, sent.get(participant)?.clone())))
            .collect();
        coordinator
            .push(
                &validator.id,
                CoordinatorMessage::KeyGen(key_gen::CoordinatorMessage::Shares {
                    id,
                    shares: mine,
                }),
            )
            .unwrap();
    }
    let pairs = collect(&coordinator, &all, |message| match message {
        ProcessorMessage::KeyGen(key_gen::ProcessorMessage::GeneratedKeyPair {
            batch_key,
            network_key,
            ..
        }) => Some(KeyPair {
            batch_key: *batch_key,
            network_key: *network_key,
        }),
        _ => None,
    });
    let key_pair = pairs[0].1;
    assert!(pairs.iter().all(|(_, pair)| *pair == key_pair));

    // The chain votes the pair in, naming the current finalized block as activation block.
    let tip = node
        .rpc("getblockcount", json!([]))
        .unwrap()
        .as_u64()
        .unwrap();
    let activation = node
        .block_at(u32::try_from(tip + 1 - CONFIRMATIONS).unwrap())
        .unwrap();
    for (_, validator) in &all {
        coordinator
            .push(
                &validator.id,
                CoordinatorMessage::Substrate(substrate::CoordinatorMessage::ConfirmKeyPair {
                    context: SubstrateContext {
                        serai_time: SeraiTime(1),
                        network_latest_finalized_block: BlockHash(
                            activation.block_hash().to_byte_array(),
                        ),
                    },
                    set: id.set,
                    key_pair,
                }),
            )
            .unwrap();
    }
    coordinator
        .wait_until(WAIT, |coordinator| {
            Ok(all
                .iter()
                .all(|(_, validator)| coordinator.acked(&validator.id).unwrap_or(0) >= 4))
        })
        .unwrap();

    // A deposit to the new key, made final.
    let external = KeyScripts::derive(&key_pair.network_key)
        .unwrap()
        .script(OutputKind::External)
        .clone();
    let data = RefundableInInstruction {
        origin: None,
        instruction: InInstruction::Transfer {
            to: SeraiAddress([5; 32]),
        },
    }
    .encode();
    let coin = node.coinbase_output(1).unwrap();
    let deposit = miner
        .spend(
            std::slice::from_ref(&coin),
            vec![
                TxOut {
                    value: Amount::from_sat(2_500_000),
                    script_pubkey: external,
                },
                TxOut {
                    value: Amount::ZERO,
                    script_pubkey: ScriptBuf::new_op_return(PushBytesBuf::try_from(data).unwrap()),
                },
                TxOut {
                    value: coin.1.value - Amount::from_sat(2_600_000),
                    script_pubkey: miner.script_pubkey(),
                },
            ],
        )
        .unwrap();
    node.send(&deposit).unwrap();
    node.mine(u32::try_from(CONFIRMATIONS).unwrap(), miner.address())
        .unwrap();

    // Every processor builds Batch 0 and preprocesses it; 1, 2 and 3 sign.
    let preprocesses = collect(&coordinator, &all, |message| match message {
        ProcessorMessage::Coordinator(CoordinatorOut::BatchPreprocess {
            id,
            batch_id,
            preprocess,
            ..
        }) => Some((*id, *batch_id, preprocess.clone())),
        _ => None,
    });
    let batch_sign_id: BatchSignId = preprocesses[0].1 .0;
    assert!(preprocesses
        .iter()
        .all(|(_, (id, batch, _))| *id == batch_sign_id && batch.0 == 0));
    let signers: Vec<(Participant, &Validator)> = all.iter().take(3).copied().collect();
    let preprocess_map: ParticipantMap = preprocesses
        .iter()
        .take(3)
        .map(|(participant, (_, _, preprocess))| (*participant, preprocess.clone()))
        .collect();
    for (participant, validator) in &signers {
        coordinator
            .push(
                &validator.id,
                CoordinatorMessage::Coordinator(Coordinator::BatchPreprocesses {
                    id: batch_sign_id,
                    preprocesses: others(&preprocess_map, *participant),
                }),
            )
            .unwrap();
    }
    let batch_shares: ParticipantMap = collect(&coordinator, &signers, |message| match message {
        ProcessorMessage::Coordinator(CoordinatorOut::BatchShare { share, .. }) => {
            Some(share.clone())
        }
        _ => None,
    })
    .into_iter()
    .collect();
    for (participant, validator) in &signers {
        coordinator
            .push(
                &validator.id,
                CoordinatorMessage::Coordinator(Coordinator::BatchShares {
                    id: batch_sign_id,
                    shares: others(&batch_shares, *participant),
                }),
            )
            .unwrap();
    }
    let updates: Vec<(Participant, SignedBatch)> =
        collect(&coordinator, &signers, |message| match message {
            ProcessorMessage::Substrate(substrate::ProcessorMessage::Update { batch }) => {
                Some(batch.clone())
            }
            _ => None,
        });
    let signed = &updates[0].1;
    assert!(updates.iter().all(|(_, update)| update == signed));
    assert_eq!(signed.batch.instructions.len(), 1);
    assert_eq!(signed.batch.instructions[0].amount.to_sat(), 2_500_000);
    let public = schnorrkel::PublicKey::from_bytes(&key_pair.batch_key.0).unwrap();
    public
        .verify_simple(
            BATCH_SIGNING_CONTEXT,
            &signed.batch.message(),
            &schnorrkel::Signature::from_bytes(&signed.signature.0).unwrap(),
        )
        .unwrap();

    // A Serai block acknowledging the deposit block, with a burn paying Bob.
    let bob = TestWallet::new([0x0b; 32]).unwrap();
    let serai_block = SeraiBlockNumber(1);
    for (_, validator) in &all {
        coordinator
            .push(
                &validator.id,
                CoordinatorMessage::Substrate(substrate::CoordinatorMessage::SubstrateBlock {
                    context: SubstrateContext {
                        serai_time: SeraiTime(2),
                        network_latest_finalized_block: signed.batch.block,
                    },
                    block: serai_block,
                    key: key_pair.network_key,
                    burns: vec![OutInstructionWithBalance {
                        address: bob.address().to_string().into_bytes(),
                        data: None,
                        amount: schema::amount::Amount::from_sat(1_000_000).unwrap(),
                    }],
                }),
            )
            .unwrap();
    }
    // Every processor made the same plans and says so before any signing.
    let acks = collect(&coordinator, &all, |message| match message {
        ProcessorMessage::Coordinator(CoordinatorOut::SubstrateBlockAck(ack)) => Some(ack.clone()),
        _ => None,
    });
    let ack = &acks[0].1;
    assert!(acks.iter().all(|(_, other)| other == ack));
    assert_eq!(ack.plans.len(), 1);
    assert!(
        all.iter()
            .all(|(_, v)| sent(&coordinator, &v.id, |m| matches!(
                m,
                ProcessorMessage::Sign(_)
            )
            .then_some(()))
            .is_empty()),
        "no signing before the acknowledgement"
    );
    // The coordinator attests the identical acks.
    let attestor = Keypair::from_secret_key(
        &Secp256k1::new(),
        &SecretKey::from_slice(&[0x77; 32]).unwrap(),
    );
    let digest =
        PlansAcknowledged::attestation_message(NetworkId::Bitcoin, &ack.key, ack.block, &ack.plans);
    let attestation = Secp256k1::new()
        .sign_schnorr_no_aux_rand(&bitcoin::secp256k1::Message::from_digest(digest), &attestor);
    for (_, validator) in &all {
        coordinator
            .push(
                &validator.id,
                CoordinatorMessage::Coordinator(Coordinator::PlansAcknowledged(
                    PlansAcknowledged {
                        block: ack.block,
                        key: ack.key,
                        plans: ack.plans.clone(),
                        attestation: Attestation(attestation.serialize()),
                    },
                )),
            )
            .unwrap();
    }
    let plan_preprocesses = collect(&coordinator, &all, |message| match message {
        ProcessorMessage::Sign(sign::ProcessorMessage::Preprocess { id, preprocess }) => {
            Some((*id, preprocess.clone()))
        }
        _ => None,
    });
    let plan_sign_id = plan_preprocesses[0].1 .0;
    let map: ParticipantMap = plan_preprocesses
        .iter()
        .take(3)
        .map(|(participant, (_, preprocess))| (*participant, preprocess.clone()))
        .collect();
    for (participant, validator) in &signers {
        coordinator
            .push(
                &validator.id,
                CoordinatorMessage::Sign(sign::CoordinatorMessage::Preprocesses {
                    id: plan_sign_id,
                    preprocesses: others(&map, *participant),
                }),
            )
            .unwrap();
    }
    let plan_shares: ParticipantMap = collect(&coordinator, &signers, |message| match message {
        ProcessorMessage::Sign(sign::ProcessorMessage::Share { share, .. }) => Some(share.clone()),
        _ => None,
    })
    .into_iter()
    .collect();
    for (participant, validator) in &signers {
        coordinator
            .push(
                &validator.id,
                CoordinatorMessage::Sign(sign::CoordinatorMessage::Shares {
                    id: plan_sign_id,
                    shares: others(&plan_shares, *participant),
                }),
            )
            .unwrap();
    }
    let completed = collect(&coordinator, &signers, |message| match message {
        ProcessorMessage::Sign(sign::ProcessorMessage::Completed { tx, .. }) => Some(*tx),
        _ => None,
    });
    let txid = completed[0].1;
    assert!(completed.iter().all(|(_, tx)| *tx == txid));
    // The payout is in the node's mempool, then mined: Bob receives the burn minus its fee.
    let txid_hex: String = txid.0.iter().rev().map(|b| format!("{b:02x}")).collect();
    assert!(node
        .rpc("getrawmempool", json!([]))
        .unwrap()
        .as_array()
        .unwrap()
        .contains(&json!(txid_hex)));
    node.mine(u32::try_from(CONFIRMATIONS).unwrap(), miner.address())
        .unwrap();
    let payout = node
        .rpc("getrawtransaction", json!([txid_hex, true]))
        .unwrap();
    let paid: Vec<f64> = payout["vout"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|output| output["scriptPubKey"]["address"] == json!(bob.address().to_string()))
        .map(|output| output["value"].as_f64().unwrap())
        .collect();
    assert_eq!(paid.len(), 1);
    let paid = Amount::from_btc(paid[0]).unwrap().to_sat();
    assert!(paid < 1_000_000 && paid > 995_000, "paid {paid}");
    // Every processor, the one that did not sign included, reports the completion it saw.
    let seen = collect(&coordinator, &all, |message| match message {
        ProcessorMessage::Sign(sign::ProcessorMessage::Completed { tx, .. }) => Some(*tx),
        _ => None,
    });
    assert!(seen.iter().all(|(_, tx)| *tx == txid));
    // The signers report it twice: when they signed, and when their scan saw it final.
    coordinator
        .wait_until(WAIT, |coordinator| {
            Ok(signers.iter().all(|(_, validator)| {
                sent(coordinator, &validator.id, |message| match message {
                    ProcessorMessage::Sign(sign::ProcessorMessage::Completed { .. }) => Some(()),
                    _ => None,
                })
                .len()
                    == 2
            }))
        })
        .unwrap();

    // A coordinator whose queue was rewound redelivers old ids: the processors halt their link
    // rather than handle anything twice.
    let acked: Vec<u64> = all
        .iter()
        .map(|(_, validator)| coordinator.acked(&validator.id).unwrap())
        .collect();
    let sent_before: Vec<usize> = all
        .iter()
        .map(|(_, validator)| coordinator.received(&validator.id).unwrap().len())
        .collect();
    coordinator.misbehave_rewind(true).unwrap();
    coordinator
        .wait_until(WAIT, |_| {
            Ok(all
                .iter()
                .all(|(_, validator)| validator.log().contains("coordinator link halted")))
        })
        .unwrap();
    for ((_, validator), (acked, sent_before)) in all.iter().zip(acked.iter().zip(&sent_before)) {
        assert_eq!(coordinator.acked(&validator.id).unwrap(), *acked);
        assert_eq!(
            coordinator.received(&validator.id).unwrap().len(),
            *sent_before
        );
    }
}
