//! The signer enclave as the scanner sees it: real `signer-enclave` processes, each with its own
//! SoftHSM2 token, over their Unix sockets through the scanner's `EnclaveClient`.
//!
//! Key generation across four enclaves (with a corrupted share blamed first), Taproot
//! transactions signed by every 3-of-4 subset and checked by secp256k1 and by Bitcoin Core's
//! interpreter (`bitcoinkernel`), a Batch checked by `schnorrkel`, every policy refusal with
//! proof that nothing was signed, kill -9 and restart, a foreign uid, configuration mistakes
//! (wrong PIN, missing token, missing module), and a search
//! of every file the enclaves wrote for their secret shares.

// Test code: a failed unwrap is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unwrap_in_result
)]

use std::{collections::BTreeMap, os::unix::fs::MetadataExt, path::Path, time::Duration};

use bitcoin::{
    consensus,
    hashes::Hash,
    key::{Keypair, XOnlyPublicKey},
    secp256k1::{schnorr, Message, Secp256k1, SecretKey},
    sighash::{Prevouts, SighashCache},
    TapSighashType, Transaction, TxOut,
};
use ciphersuite::{group::ff::PrimeField, Ciphersuite};
use processor_tests::{
    enclave::EnclaveProcess,
    relay::{self, key_gen, KeyGenParty},
    HarnessError,
};
use rand_core::OsRng;
use scanner::{
    coordinate::enclave_client::{EnclaveClient, EnclaveError},
    schedule::{Limits, Scheduler},
};
use schema::{
    amount::Amount,
    batch::Batch,
    generated::signer_capnp::RefusalReason,
    hashes::{BlockHash, SeraiAddress, TransactionId},
    ids::{
        Attempt, BatchId, KeyGenId, NetworkId, Participant, SeraiBlockNumber, Session, ValidatorSet,
    },
    instruction::{InInstruction, InInstructionWithBalance},
    keys::{BatchKey, KeyPair, NetworkKey},
    messages::{
        coordinator::{Attestation, PlansAcknowledged},
        key_gen::{
            refresh_attestation_message, repair_attestation_message, CoordinatorMessage,
            ProcessorMessage, ShareRepair,
        },
        ParticipantMap,
    },
    plan::{OutputId, OutputKind, Payment, PaymentAddress, Plan, PlanInput},
    protocol::{MAX_FEE_RATE, MAX_INPUTS, MAX_OUTPUTS},
    sign_id::{BatchSignId, BatchSignTarget, PlanSignId},
    transaction::{build, Built, FeeRate},
};
use signer_enclave::{
    batch_signing::BATCH_SIGNING_CONTEXT,
    key_gen::{GeneratedKeys, KeyGen},
};
use tokio::task::LocalSet;

const DEADLINE: Duration = Duration::from_secs(60);
const FEE_RATE: FeeRate = FeeRate(10);

fn p(i: u16) -> Participant {
    Participant::new(i).unwrap()
}

fn my_uid(dir: &Path) -> u32 {
    std::fs::metadata(dir).unwrap().uid()
}

fn set() -> ValidatorSet {
    ValidatorSet {
        session: Session(0),
        network: NetworkId::Bitcoin,
    }
}

fn coordinator_key(seed: u8) -> Keypair {
    Keypair::from_secret_key(
        &Secp256k1::new(),
        &SecretKey::from_slice(&[seed; 32]).unwrap(),
    )
}

/// What the coordinator sends once the validators agreed on `plans` for `key`.
fn attest(coordinator: &Keypair, key: NetworkKey, plans: &[&Plan]) -> PlansAcknowledged {
    let plans: Vec<_> = plans.iter().map(|plan| plan.id()).collect();
    let block = SeraiBlockNumber(7);
    let digest = PlansAcknowledged::attestation_message(NetworkId::Bitcoin, &key, block, &plans);
    let signature =
        Secp256k1::new().sign_schnorr_no_aux_rand(&Message::from_digest(digest), coordinator);
    PlansAcknowledged {
        block,
        key,
        plans,
        attestation: Attestation(signature.serialize()),
    }
}

/// A participant this test plays with the library, to know its share.
struct Local(KeyGen, Option<GeneratedKeys>);

impl KeyGenParty for Local {
    async fn handle(
        &mut self,
        message: CoordinatorMessage,
    ) -> Result<ProcessorMessage, HarnessError> {
        let (mut messages, keys) = self.0.handle(message, &mut OsRng).unwrap();
        if keys.is_some() {
            self.1 = keys;
        }
        assert_eq!(messages.len(), 1);
        Ok(messages.remove(0))
    }
}

/// One DKG participant: an enclave process, or the library in this test.
enum Party {
    Enclave(EnclaveClient),
    Local(Box<Local>),
}

impl KeyGenParty for Party {
    async fn handle(
        &mut self,
        message: CoordinatorMessage,
    ) -> Result<ProcessorMessage, HarnessError> {
        match self {
            Party::Enclave(client) => client.handle(message).await,
            Party::Local(local) => local.handle(message).await,
        }
    }
}

fn attempt(attempt: u32) -> KeyGenId {
    KeyGenId {
        set: set(),
        attempt: Attempt(attempt),
    }
}

fn generated_pair(message: &ProcessorMessage) -> KeyPair {
    relay::generated_pair(message)
        .unwrap_or_else(|| panic!("expected GeneratedKeyPair, got {message:?}"))
}

fn plan(key: NetworkKey, txid: u8, inputs: &[(OutputKind, u64)], pay: u64) -> Plan {
    Plan {
        key,
        inputs: inputs
            .iter()
            .zip(0u32..)
            .map(|((kind, amount), vout)| PlanInput {
                id: OutputId {
                    txid: TransactionId([txid; 32]),
                    vout,
                },
                kind: *kind,
                amount: Amount::from_sat(*amount).unwrap(),
            })
            .collect(),
        payments: vec![Payment {
            address: PaymentAddress::from_bytes(&[&[0x00, 0x14][..], &[2; 20]].concat()).unwrap(),
            data: None,
            amount: Amount::from_sat(pay).unwrap(),
        }],
        change: Some(key),
        fee_rate: FEE_RATE,
        replaces: None,
    }
}

async fn sign_plan(
    clients: &BTreeMap<Participant, EnclaveClient>,
    signers: &[Participant],
    id: PlanSignId,
    plan: &Plan,
) -> Transaction {
    relay::sign_plan(clients, signers, id, plan).await.unwrap()
}

/// Checks every input's signature twice, independently of the enclave's own check: with
/// `secp256k1` over a sighash computed here, and with Bitcoin Core's interpreter.
fn verify_transaction(transaction: &Transaction, prevouts: &[TxOut]) -> Result<(), String> {
    verify_secp256k1(transaction, prevouts)?;
    verify_core(transaction, prevouts)
}

fn verify_secp256k1(transaction: &Transaction, prevouts: &[TxOut]) -> Result<(), String> {
    let secp = Secp256k1::verification_only();
    let mut cache = SighashCache::new(transaction);
    for (index, (input, prevout)) in transaction.input.iter().zip(prevouts).enumerate() {
        let sighash = cache
            .taproot_key_spend_signature_hash(
                index,
                &Prevouts::All(prevouts),
                TapSighashType::Default,
            )
            .map_err(|error| error.to_string())?;
        let signature = input.witness.nth(0).ok_or("no witness")?;
        let signature = schnorr::Signature::from_slice(signature).map_err(|e| e.to_string())?;
        let key = XOnlyPublicKey::from_slice(&prevout.script_pubkey.as_bytes()[2..34])
            .map_err(|e| e.to_string())?;
        secp.verify_schnorr(
            &signature,
            &Message::from_digest(sighash.to_byte_array()),
            &key,
        )
        .map_err(|error| format!("input {index}: secp256k1: {error}"))?;
    }
    Ok(())
}

/// Bitcoin Core's interpreter, with every spent output and every consensus flag (Taproot
/// included: without them a bad Taproot signature would pass).
fn verify_core(transaction: &Transaction, prevouts: &[TxOut]) -> Result<(), String> {
    let bytes = consensus::serialize(transaction);
    let kernel_transaction = bitcoinkernel::Transaction::new(&bytes).map_err(|e| e.to_string())?;
    let spent: Vec<_> = prevouts
        .iter()
        .map(|prevout| {
            bitcoinkernel::TxOut::new(
                &bitcoinkernel::ScriptPubkey::new(prevout.script_pubkey.as_bytes()).unwrap(),
                i64::try_from(prevout.value.to_sat()).unwrap(),
            )
        })
        .collect();
    let precomputed = bitcoinkernel::PrecomputedTransactionData::new(&kernel_transaction, &spent)
        .map_err(|e| e.to_string())?;
    for (index, prevout) in prevouts.iter().enumerate() {
        bitcoinkernel::verify(
            &bitcoinkernel::ScriptPubkey::new(prevout.script_pubkey.as_bytes()).unwrap(),
            Some(i64::try_from(prevout.value.to_sat()).unwrap()),
            &kernel_transaction,
            index,
            Some(bitcoinkernel::VERIFY_ALL),
            &precomputed,
        )
        .map_err(|error| format!("input {index}: Core's interpreter: {error:?}"))?;
    }
    Ok(())
}

fn refusal<T: std::fmt::Debug>(result: Result<T, EnclaveError>) -> RefusalReason {
    match result {
        Err(error) => error
            .refusal()
            .unwrap_or_else(|| panic!("not a refusal: {error}")),
        Ok(value) => panic!("signed what it must refuse: {value:?}"),
    }
}

fn preprocesses(enclave: &EnclaveProcess) -> f64 {
    enclave
        .metric("signer_enclave_signing_rounds_total{kind=\"plan\",step=\"preprocess\"}")
        .unwrap()
}

fn refusals(enclave: &EnclaveProcess, reason: &str) -> f64 {
    enclave
        .metric(&format!(
            "signer_enclave_refusals_total{{reason=\"{reason}\"}}"
        ))
        .unwrap()
}

/// The one answer an enclave gives `message`.
async fn answer_to(message: &CoordinatorMessage, client: &EnclaveClient) -> ProcessorMessage {
    let mut answers = client.key_gen(message).await.unwrap();
    assert_eq!(answers.len(), 1);
    answers.remove(0)
}

/// Where enclave `i` of a test lives under `dir`.
fn enclave_dir(dir: &Path, i: u16) -> std::path::PathBuf {
    dir.join(format!("enclave-{i}"))
}

/// Four enclave processes under `dir`, each with its own token, trusting `coordinator`,
/// serving `uid`, started.
fn start_enclaves(
    dir: &Path,
    coordinator: &Keypair,
    uid: u32,
) -> BTreeMap<Participant, EnclaveProcess> {
    (1..=4)
        .map(|i| {
            let mut enclave = EnclaveProcess::provision(
                &enclave_dir(dir, i),
                &coordinator.x_only_public_key().0,
                uid,
            )
            .unwrap();
            enclave.start().unwrap();
            (p(i), enclave)
        })
        .collect()
}

/// A client of each enclave.
async fn connect_all(
    enclaves: &BTreeMap<Participant, EnclaveProcess>,
) -> BTreeMap<Participant, EnclaveClient> {
    let mut clients = BTreeMap::new();
    for (i, enclave) in enclaves {
        clients.insert(*i, connect(enclave).await);
    }
    clients
}

async fn connect(enclave: &EnclaveProcess) -> EnclaveClient {
    EnclaveClient::connect(enclave.socket(), DEADLINE)
        .await
        .unwrap()
}

#[tokio::test(flavor = "current_thread")]
async fn four_enclaves_generate_keys_sign_and_refuse() {
    LocalSet::new()
        .run_until(four_enclaves_generate_keys_sign_and_refuse_inner())
        .await;
}

async fn four_enclaves_generate_keys_sign_and_refuse_inner() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = coordinator_key(0x77);
    let uid = my_uid(dir.path());
    let mut enclaves = start_enclaves(dir.path(), &coordinator, uid);
    let clients = connect_all(&enclaves).await;

    // Attempt 0: participant 2's share to participant 1 is corrupted; 1 blames 2.
    let mut parties = clients.clone();
    let last = key_gen(&mut parties, attempt(0), 3, Some((p(2), p(1))))
        .await
        .unwrap();
    match &last[&p(1)] {
        ProcessorMessage::Blame { participant, .. } => assert_eq!(*participant, p(2)),
        other => panic!("expected Blame, got {other:?}"),
    }
    assert_eq!(
        enclaves[&p(1)]
            .metric("signer_enclave_dkg_runs_total{outcome=\"blamed\"}")
            .unwrap(),
        1.0
    );

    // Attempt 1 replaces it: every enclave reports the same key pair.
    let last = key_gen(&mut parties, attempt(1), 3, None).await.unwrap();
    let pair = generated_pair(&last[&p(1)]);
    for message in last.values() {
        assert_eq!(generated_pair(message), pair);
    }
    let key = pair.network_key;
    let spend = plan(
        key,
        0x44,
        &[
            (OutputKind::External, 300_000),
            (OutputKind::Branch, 300_000),
            (OutputKind::Change, 300_000),
        ],
        500_000,
    );
    let id = |attempt| PlanSignId {
        key,
        id: spend.id(),
        attempt: Attempt(attempt),
    };

    // Not confirmed yet: nothing signs with it, not even an acknowledgement is taken.
    assert_eq!(
        refusal(clients[&p(1)].preprocess_plan(&id(99), &spend).await),
        RefusalReason::UnknownKey
    );
    assert_eq!(
        refusal(
            clients[&p(1)]
                .acknowledge_plans(&attest(&coordinator, key, &[&spend]))
                .await
        ),
        RefusalReason::UnknownKey
    );
    for client in clients.values() {
        client.confirm_key_pair(set(), &pair).await.unwrap();
        assert_eq!(client.status().await.unwrap().keys, vec![pair]);
    }
    // A key pair nobody generated is not confirmed; one of a set this enclave generated
    // nothing for says so (a set this validator is not in), and is not confirmed either.
    let mut forged = pair;
    forged.batch_key = BatchKey([1; 32]);
    assert_eq!(
        refusal(clients[&p(1)].confirm_key_pair(set(), &forged).await),
        RefusalReason::UnknownKey
    );
    let other_set = ValidatorSet {
        session: Session(set().session.0 + 1),
        ..set()
    };
    assert_eq!(
        refusal(clients[&p(1)].confirm_key_pair(other_set, &forged).await),
        RefusalReason::NotInSet
    );
    assert_eq!(clients[&p(1)].status().await.unwrap().keys, vec![pair]);

    for client in clients.values() {
        client
            .acknowledge_plans(&attest(&coordinator, key, &[&spend]))
            .await
            .unwrap();
    }
    let Ok(Built::Transaction(built)) = build(&spend) else {
        panic!("plan does not build");
    };

    // Every 3-of-4 subset signs (each its own attempt); both checkers accept every input.
    let all = [p(1), p(2), p(3), p(4)];
    for (attempt, left_out) in (0u32..).zip(all) {
        let signers: Vec<_> = all.iter().copied().filter(|s| *s != left_out).collect();
        let signed = sign_plan(&clients, &signers, id(attempt), &spend).await;
        assert_eq!(signed.compute_txid(), built.transaction.compute_txid());
        verify_transaction(&signed, &built.prevouts).unwrap();

        // The checkers are not blind: one flipped signature bit fails both.
        let mut forged = signed.clone();
        let mut witness = forged.input[1].witness.to_vec();
        witness[0][5] ^= 1;
        forged.input[1].witness = witness.into();
        assert!(verify_secp256k1(&forged, &built.prevouts).is_err());
        assert!(verify_core(&forged, &built.prevouts).is_err());
    }

    // Refusals, each with the preprocess count unchanged: nothing was signed.
    let one = &clients[&p(1)];
    let enclave = &enclaves[&p(1)];
    let before = preprocesses(enclave);
    assert_eq!(before, 3.0, "enclave 1 signed three subsets");

    // The same attempt again (attempt 0 left enclave 1 out; attempt 1 did not).
    assert_eq!(
        refusal(one.preprocess_plan(&id(1), &spend).await),
        RefusalReason::AttemptAlreadyPreprocessed
    );
    // A plan never acknowledged.
    let other = plan(key, 0x55, &[(OutputKind::External, 400_000)], 100_000);
    let other_id = PlanSignId {
        key,
        id: other.id(),
        attempt: Attempt(0),
    };
    assert_eq!(
        refusal(one.preprocess_plan(&other_id, &other).await),
        RefusalReason::PlanNotAcknowledged
    );
    // Acknowledgements the coordinator did not sign, or signed for another key.
    assert_eq!(
        refusal(
            one.acknowledge_plans(&attest(&coordinator_key(0x78), key, &[&other]))
                .await
        ),
        RefusalReason::AttestationInvalid
    );
    let mut for_another_key = attest(&coordinator, key, &[&other]);
    let another_key = NetworkKey::from_slice(
        &bitcoin::PublicKey::new(coordinator_key(0x79).public_key()).to_bytes(),
    )
    .unwrap();
    for_another_key.attestation = attest(&coordinator, another_key, &[&other]).attestation;
    assert_eq!(
        refusal(one.acknowledge_plans(&for_another_key).await),
        RefusalReason::AttestationInvalid
    );
    assert_eq!(
        refusal(one.preprocess_plan(&other_id, &other).await),
        RefusalReason::PlanNotAcknowledged
    );
    // The acknowledged plan's id with changed content.
    let mut changed = spend.clone();
    changed.payments[0].amount = Amount::from_sat(510_000).unwrap();
    assert_eq!(
        refusal(one.preprocess_plan(&id(50), &changed).await),
        RefusalReason::PlanIdMismatch
    );
    // The acknowledged plan at another fee rate is another plan, never acknowledged.
    let repriced = Plan {
        fee_rate: FeeRate(FEE_RATE.0 + 1),
        ..spend.clone()
    };
    assert_eq!(
        refusal(one.preprocess_plan(&id(51), &repriced).await),
        RefusalReason::PlanIdMismatch
    );
    // A fee rate over the protocol's cap, acknowledged.
    let expensive = Plan {
        fee_rate: FeeRate(MAX_FEE_RATE.0 + 1),
        ..plan(key, 0x67, &[(OutputKind::External, 100_000_000)], 60_000)
    };
    // A fee that is too large a share of a small plan.
    let small = Plan {
        fee_rate: FeeRate(100),
        ..plan(key, 0x66, &[(OutputKind::External, 100_000)], 60_000)
    };
    // An input of the signed plan, in a different plan.
    let mut double = plan(key, 0x44, &[(OutputKind::External, 300_000)], 200_000);
    double.payments[0].amount = Amount::from_sat(200_001).unwrap();
    one.acknowledge_plans(&attest(&coordinator, key, &[&small, &double, &expensive]))
        .await
        .unwrap();
    let attempt0 = |plan: &Plan| PlanSignId {
        key,
        id: plan.id(),
        attempt: Attempt(0),
    };
    assert_eq!(
        refusal(one.preprocess_plan(&attempt0(&expensive), &expensive).await),
        RefusalReason::FeeRateTooHigh
    );
    assert_eq!(
        refusal(one.preprocess_plan(&attempt0(&small), &small).await),
        RefusalReason::FeeShareTooHigh
    );
    assert_eq!(
        refusal(one.preprocess_plan(&attempt0(&double), &double).await),
        RefusalReason::InputAlreadySigned
    );
    assert_eq!(preprocesses(enclave), before);
    // A repeated request for an attempt still waiting for the others' preprocesses (a message
    // retried after a later part of it failed) gets the same preprocess, and none is made.
    let waiting = one.preprocess_plan(&id(20), &spend).await.unwrap();
    assert_eq!(one.preprocess_plan(&id(20), &spend).await.unwrap(), waiting);
    assert_eq!(preprocesses(enclave), before + 1.0);
    for (reason, count) in [
        ("attempt_already_preprocessed", 1.0),
        ("plan_not_acknowledged", 2.0),
        ("attestation_invalid", 2.0),
        ("plan_id_mismatch", 2.0),
        ("fee_rate_too_high", 1.0),
        ("fee_share_too_high", 1.0),
        ("input_already_signed", 1.0),
        ("unknown_key", 3.0),
    ] {
        assert_eq!(refusals(enclave, reason), count, "{reason}");
    }

    // A Batch, signed by 1, 2 and 3 and verified as sr25519; then a different batch under the
    // same id is refused by an enclave that signed the first.
    let batch = Batch {
        network: NetworkId::Bitcoin,
        id: BatchId(0),
        block: BlockHash([5; 32]),
        instructions: vec![InInstructionWithBalance {
            instruction: InInstruction::Transfer {
                to: SeraiAddress([9; 32]),
            },
            amount: Amount::from_sat(123_456).unwrap(),
        }],
    };
    let batch_id = |attempt| BatchSignId {
        key: pair.batch_key,
        id: BatchSignTarget {
            network: NetworkId::Bitcoin,
            batch: BatchId(0),
        },
        attempt: Attempt(attempt),
    };
    let signed = relay::sign_batch(&clients, &[p(1), p(2), p(3)], batch_id(0), &batch)
        .await
        .unwrap();
    assert_eq!(signed.batch, batch);
    let public = schnorrkel::PublicKey::from_bytes(&pair.batch_key.0).unwrap();
    let signature = schnorrkel::Signature::from_bytes(&signed.signature.0).unwrap();
    public
        .verify_simple(BATCH_SIGNING_CONTEXT, &batch.message(), &signature)
        .unwrap();
    let mut different = batch.clone();
    different.block = BlockHash([6; 32]);
    assert_eq!(
        refusal(one.preprocess_batch(&batch_id(1), &different).await),
        RefusalReason::BatchIdReused
    );
    assert_eq!(
        enclaves[&p(1)]
            .metric("signer_enclave_signing_rounds_total{kind=\"batch\",step=\"preprocess\"}")
            .unwrap(),
        1.0
    );

    // `status` from the command line while the enclave runs: keys and sealing key attributes.
    let status = enclaves[&p(1)].cli("status").unwrap();
    let status = String::from_utf8(status.stdout).unwrap();
    assert!(status.contains("sensitive=true"), "{status}");
    assert!(status.contains("extractable=false"), "{status}");
    assert!(
        status.contains(&format!(
            "confirmed: batch key {} network key {}",
            hex::encode(pair.batch_key.0),
            hex::encode(key.to_bytes())
        )),
        "{status}"
    );

    // kill -9 and restart: the sealed keys come back, a used attempt stays used, and a new
    // attempt signs.
    drop(clients);
    let enclave = enclaves.get_mut(&p(1)).unwrap();
    enclave.kill();
    enclave.start().unwrap();
    let clients = connect_all(&enclaves).await;
    assert_eq!(clients[&p(1)].status().await.unwrap().keys, vec![pair]);
    assert_eq!(
        refusal(clients[&p(1)].preprocess_plan(&id(1), &spend).await),
        RefusalReason::AttemptAlreadyPreprocessed
    );
    let signed = sign_plan(&clients, &[p(1), p(2), p(4)], id(10), &spend).await;
    verify_transaction(&signed, &built.prevouts).unwrap();

    // SIGTERM: a clean exit that removes the socket.
    drop(clients);
    for enclave in enclaves.values_mut() {
        let socket = enclave.socket().to_owned();
        assert!(enclave.terminate().unwrap().success());
        assert!(!socket.exists());
    }
}

#[tokio::test(flavor = "current_thread")]
async fn foreign_uid_and_wrong_pin_are_refused() {
    LocalSet::new()
        .run_until(async {
            let dir = tempfile::tempdir().unwrap();
            let coordinator = coordinator_key(0x77).x_only_public_key().0;
            let not_me = my_uid(dir.path()) + 1;
            let mut enclave =
                EnclaveProcess::provision(&dir.path().join("e"), &coordinator, not_me).unwrap();
            enclave.start().unwrap();
            let client = connect(&enclave).await;
            let error = client.status().await.unwrap_err();
            assert!(matches!(error, EnclaveError::Rpc(_)), "{error}");
            assert_eq!(
                enclave
                    .metric("signer_enclave_rejected_connections_total")
                    .unwrap(),
                1.0
            );
            drop(client);
            enclave.kill();

            // A wrong PIN: `run` and `status` stop and name the setting.
            std::fs::write(enclave.dir().join("user.pin"), "wrong-pin").unwrap();
            let error = enclave.start().unwrap_err().to_string();
            assert!(
                error.contains("refused the PIN (pkcs11.pin_file)"),
                "{error}"
            );
            let status = enclave.cli("status").unwrap();
            assert!(!status.status.success());
            assert!(String::from_utf8_lossy(&status.stderr).contains("pkcs11.pin_file"));

            // A missing token and a missing module are named too.
            let config = std::fs::read_to_string(enclave.config()).unwrap();
            for (from, to, named) in [
                (
                    "token_label = \"processor\"",
                    "token_label = \"elsewhere\"",
                    "no initialized PKCS#11 token labelled \"elsewhere\" (pkcs11.token_label)",
                ),
                ("libsofthsm2.so", "libmissing.so", "(pkcs11.module)"),
            ] {
                std::fs::write(enclave.config(), config.replace(from, to)).unwrap();
                let error = enclave.start().unwrap_err().to_string();
                assert!(error.contains(named), "{error}");
            }
            // A file that is no module: the loader's reason is printed once, not once per
            // level of the error chain.
            let module = config
                .lines()
                .find_map(|line| line.strip_prefix("module = "))
                .unwrap();
            std::fs::write(
                enclave.config(),
                config.replace(
                    module,
                    &format!("{:?}", enclave.config().display().to_string()),
                ),
            )
            .unwrap();
            let error = enclave.start().unwrap_err().to_string();
            assert!(error.contains("could not be loaded"), "{error}");
            assert_eq!(error.matches("libloading error").count(), 1, "{error}");
        })
        .await;
}

/// An operator moves an enclave's key pairs to a new token (`migrate-token`): the enclave,
/// stopped, is started on the new token and unseals its confirmed pair there; the old token's
/// key no longer opens it, so the old configuration does not start; the move is audited.
#[tokio::test(flavor = "current_thread")]
async fn key_pairs_move_to_a_new_token() {
    LocalSet::new()
        .run_until(async {
            let dir = tempfile::tempdir().unwrap();
            let coordinator = coordinator_key(0x77).x_only_public_key().0;
            let uid = my_uid(dir.path());
            let mut enclave =
                EnclaveProcess::provision(&dir.path().join("e1"), &coordinator, uid).unwrap();
            enclave.start().unwrap();
            let mut parties = BTreeMap::new();
            parties.insert(p(1), Party::Enclave(connect(&enclave).await));
            for i in 2..=4 {
                parties.insert(p(i), Party::Local(Box::new(Local(KeyGen::default(), None))));
            }
            let last = key_gen(&mut parties, attempt(0), 3, None).await.unwrap();
            let pair = generated_pair(&last[&p(1)]);
            if let Party::Enclave(client) = &parties[&p(1)] {
                client.confirm_key_pair(set(), &pair).await.unwrap();
            }
            drop(parties);

            // While the enclave runs its database is locked: nothing moves.
            let old_config = enclave.config().to_owned();
            let next = enclave.add_token("processor-next").unwrap();
            let refused = enclave.migrate_token(&next).unwrap();
            assert!(!refused.status.success());
            assert!(String::from_utf8_lossy(&refused.stderr).contains("(db_path)"));

            // Stopped, the move goes through, the identity with the pair.
            enclave.terminate().unwrap();
            let identity = enclave.identity().unwrap();
            let moved = enclave.migrate_token(&next).unwrap();
            let said = String::from_utf8_lossy(&moved.stdout);
            assert!(
                moved.status.success(),
                "{}",
                String::from_utf8_lossy(&moved.stderr)
            );
            assert!(
                said.contains(
                    "1 key pair(s), 0 pending refresh(es) and the enclave identity sealed into \
                     the new token"
                ),
                "{said}"
            );
            // Again, to the same token: refused, nothing changes.
            enclave.use_config(next.clone());
            let again = enclave.migrate_token(&next).unwrap();
            assert!(!again.status.success());
            assert!(String::from_utf8_lossy(&again.stderr)
                .contains("names the token the enclave uses already"));

            // The new token unseals the confirmed pair at start and serves it.
            enclave.start().unwrap();
            let client = connect(&enclave).await;
            let status = client.status().await.unwrap();
            assert_eq!(status.keys, vec![pair]);
            drop(client);
            enclave.terminate().unwrap();
            let audit = enclave.cli("audit").unwrap();
            assert!(String::from_utf8_lossy(&audit.stdout).contains("keys_resealed"));
            let status = enclave.cli("status").unwrap();
            let shown = String::from_utf8_lossy(&status.stdout);
            assert!(shown.contains("label \"processor-next\""), "{shown}");
            assert!(shown.contains("key pairs: 1"), "{shown}");
            assert_eq!(enclave.identity().unwrap(), identity);

            // The old token's key no longer opens what was moved (the identity or the pair): the
            // old configuration does not start.
            enclave.use_config(old_config);
            let error = enclave.start().unwrap_err().to_string();
            assert!(error.contains("does not unseal"), "{error}");
        })
        .await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_lost_share_is_repaired_by_three_peers_and_every_share_refreshed() {
    LocalSet::new()
        .run_until(a_lost_share_is_repaired_by_three_peers_and_every_share_refreshed_inner())
        .await;
}

async fn a_lost_share_is_repaired_by_three_peers_and_every_share_refreshed_inner() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = coordinator_key(0x77);
    let impostor = coordinator_key(0x78);
    let uid = my_uid(dir.path());
    let path = |i: u16| enclave_dir(dir.path(), i);
    let mut enclaves = start_enclaves(dir.path(), &coordinator, uid);
    let mut clients = connect_all(&enclaves).await;
    let last = key_gen(&mut clients, attempt(0), 3, None).await.unwrap();
    let pair = generated_pair(&last[&p(1)]);
    for client in clients.values() {
        client.confirm_key_pair(set(), &pair).await.unwrap();
    }
    let key = pair.network_key;
    let spend = plan(key, 0x44, &[(OutputKind::External, 300_000)], 200_000);
    let id = |attempt| PlanSignId {
        key,
        id: spend.id(),
        attempt: Attempt(attempt),
    };
    let Ok(Built::Transaction(built)) = build(&spend) else {
        panic!("plan does not build");
    };
    let acknowledge = |client: EnclaveClient| {
        let acknowledged = attest(&coordinator, key, &[&spend]);
        async move { client.acknowledge_plans(&acknowledged).await.unwrap() }
    };
    for client in clients.values() {
        acknowledge(client.clone()).await;
    }

    // Validator 2 loses its enclave: the process, its database and its token are gone. A new
    // token is provisioned in their place, holding nothing.
    drop(clients);
    let mut lost = enclaves.remove(&p(2)).unwrap();
    lost.kill();
    drop(lost);
    std::fs::remove_dir_all(path(2)).unwrap();
    let mut replacement =
        EnclaveProcess::provision(&path(2), &coordinator.x_only_public_key().0, uid).unwrap();
    replacement.start().unwrap();
    enclaves.insert(p(2), replacement);
    let mut clients = connect_all(&enclaves).await;
    assert!(clients[&p(2)].status().await.unwrap().keys.is_empty());
    let repair = ShareRepair {
        pair,
        repaired: p(2),
        helpers: vec![p(1), p(3), p(4)],
        participants: 4,
        // As its operator registers it with the coordinator: read on its host.
        identity: enclaves[&p(2)].identity().unwrap(),
        // The sharing the helpers hold, as their `status` shows it.
        shares: enclaves[&p(1)].shares_digest().unwrap(),
    };
    let repair_id = |attempt| KeyGenId {
        set: set(),
        attempt: Attempt(attempt),
    };
    let helped = "signer_enclave_reshare_steps_total{step=\"repair_help\"}";

    // A repair the coordinator did not attest: every helper refuses, nothing is repaired.
    let error = relay::repair(&mut clients, repair_id(1), &repair, &impostor)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("AttestationInvalid"), "{error}");
    for helper in [1, 3, 4] {
        assert_eq!(refusals(&enclaves[&p(helper)], "attestation_invalid"), 1.0);
        assert_eq!(enclaves[&p(helper)].metric(helped).unwrap_or(0.0), 0.0);
    }
    assert!(clients[&p(2)].status().await.unwrap().keys.is_empty());

    // A repair naming another enclave's identity: the new enclave refuses to begin it.
    let elsewhere = CoordinatorMessage::RepairBegin {
        id: repair_id(2),
        repair: ShareRepair {
            identity: enclaves[&p(1)].identity().unwrap(),
            ..repair.clone()
        },
    };
    assert_eq!(
        refusal(clients[&p(2)].key_gen(&elsewhere).await),
        RefusalReason::ReshareFailed
    );
    // A relay (the compromised scanner of validator 2) puts its own fresh key in the enclave's
    // place and has it attested: without the identity's signature over it, no helper answers.
    let relayed = answer_to(
        &CoordinatorMessage::RepairBegin {
            id: repair_id(3),
            repair: repair.clone(),
        },
        &clients[&p(2)],
    )
    .await;
    let ProcessorMessage::RepairKey {
        fresh_key,
        signature,
        ..
    } = relayed
    else {
        panic!("expected a fresh key, got {relayed:?}");
    };
    // The relay's: both curves' generators, whose secrets (1) it knows.
    let substituted = hex::decode(
        "e2f2ae0a6abc4e71a884a961c500515f58e30b6aa582dd8db6a65945e08d2d76\
         0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798",
    )
    .unwrap();
    let help = CoordinatorMessage::RepairHelp {
        id: repair_id(3),
        repair: repair.clone(),
        fresh_key: substituted.clone(),
        fresh_key_signature: signature,
        attestation: relay::attest(
            &coordinator,
            repair_attestation_message(repair_id(3), &repair, &substituted),
        ),
    };
    assert_eq!(
        refusal(clients[&p(1)].key_gen(&help).await),
        RefusalReason::ReshareFailed
    );
    assert_eq!(enclaves[&p(1)].metric(helped).unwrap_or(0.0), 0.0);
    // Answers handed to the repaired enclave under another key's attestation: refused before
    // anything is read.
    let forged = CoordinatorMessage::RepairAnswers {
        id: repair_id(3),
        answers: ParticipantMap::new(),
        attestation: relay::attest(
            &impostor,
            repair_attestation_message(repair_id(3), &repair, &fresh_key),
        ),
    };
    assert_eq!(
        refusal(clients[&p(2)].key_gen(&forged).await),
        RefusalReason::AttestationInvalid
    );
    assert!(clients[&p(2)].status().await.unwrap().keys.is_empty());

    // Attested, by 1, 3 and 4: validator 2 holds its share again and signs with 3 and 4.
    let started = std::time::Instant::now();
    let repaired = relay::repair(&mut clients, repair_id(4), &repair, &coordinator)
        .await
        .unwrap();
    eprintln!(
        "repair of one share by three peers: {:?}",
        started.elapsed()
    );
    assert!(
        matches!(repaired, ProcessorMessage::Repaired { pair: got, .. } if got == pair),
        "{repaired:?}"
    );
    assert_eq!(clients[&p(2)].status().await.unwrap().keys, vec![pair]);
    let shares = enclaves[&p(1)].shares_digest().unwrap();
    for enclave in enclaves.values() {
        assert_eq!(enclave.shares_digest().unwrap(), shares);
    }
    acknowledge(clients[&p(2)].clone()).await;
    let signed = sign_plan(&clients, &[p(2), p(3), p(4)], id(0), &spend).await;
    verify_transaction(&signed, &built.prevouts).unwrap();

    // A refresh the coordinator did not attest is refused by everyone.
    let refresh_id = |attempt| KeyGenId {
        set: set(),
        attempt: Attempt(attempt),
    };
    // Every validator's registered identity, as its operator read it on its host.
    let identities: Vec<[u8; 32]> = enclaves
        .values()
        .map(|enclave| enclave.identity().unwrap())
        .collect();
    let error = relay::refresh(
        &mut clients,
        refresh_id(1),
        (pair, shares),
        &identities,
        &impostor,
    )
    .await
    .unwrap_err();
    assert!(error.to_string().contains("AttestationInvalid"), "{error}");
    // One of other shares than they hold is refused by name.
    let error = relay::refresh(
        &mut clients,
        refresh_id(1),
        (pair, [7; 32]),
        &identities,
        &coordinator,
    )
    .await
    .unwrap_err();
    assert!(
        error.to_string().contains("other verification shares"),
        "{error}"
    );
    // One naming another identity at a participant's place: that participant refuses.
    let mut swapped = identities.clone();
    swapped.swap(0, 1);
    let error = relay::refresh(
        &mut clients,
        refresh_id(1),
        (pair, shares),
        &swapped,
        &coordinator,
    )
    .await
    .unwrap_err();
    assert!(error.to_string().contains("identities"), "{error}");

    // Attested: every share changes and the group keys stay. Enclave 3 is killed between
    // sealing its new shares and the confirmation: they wait in its database, the old shares
    // sign meanwhile, and the confirmation finds them after the restart.
    let before = enclaves[&p(1)].cli("status").unwrap();
    let started = std::time::Instant::now();
    let (digest, signatures) = relay::refresh_deals(
        &mut clients,
        refresh_id(2),
        (pair, shares),
        &identities,
        &coordinator,
    )
    .await
    .unwrap();
    let elapsed = started.elapsed();
    let pending = "signer_enclave_refreshes_pending";
    drop(clients);
    let crashed = enclaves.get_mut(&p(3)).unwrap();
    crashed.kill();
    crashed.start().unwrap();
    assert_eq!(crashed.metric(pending).unwrap(), 1.0);
    let mut clients = connect_all(&enclaves).await;
    // The deals sent again after the restart: answered from the recorded pending shares.
    let again = answer_to(
        &CoordinatorMessage::RefreshDeals {
            id: refresh_id(2),
            deals: ParticipantMap::new(),
        },
        &clients[&p(3)],
    )
    .await;
    assert!(
        matches!(again, ProcessorMessage::Refreshed { digest: same, .. } if same == digest),
        "{again:?}"
    );
    let signed = sign_plan(&clients, &[p(1), p(3), p(4)], id(1), &spend).await;
    verify_transaction(&signed, &built.prevouts).unwrap();
    // A replayed beginning of this refresh, or of an older one, leaves the pending shares be.
    for attempt in [1, 2] {
        let begin = CoordinatorMessage::RefreshBegin {
            id: refresh_id(attempt),
            pair,
            shares,
            identities: identities.clone(),
            attestation: relay::attest(
                &coordinator,
                refresh_attestation_message(refresh_id(attempt), &pair, &shares, &identities),
            ),
        };
        assert_eq!(
            refusal(clients[&p(3)].key_gen(&begin).await),
            RefusalReason::StaleAttempt
        );
    }
    // A confirmation missing a participant's signature, or attested by another key, switches
    // no one: the old shares still sign.
    let mut partial = signatures.clone();
    partial.remove(&p(4));
    for (signed_by, attestor, reason) in [
        (&partial, &coordinator, "Malformed"),
        (&signatures, &impostor, "AttestationInvalid"),
    ] {
        let error = relay::confirm_refresh(
            &mut clients,
            refresh_id(2),
            (pair, digest),
            &identities,
            signed_by,
            attestor,
        )
        .await
        .unwrap_err();
        assert!(error.to_string().contains(reason), "{error}");
    }
    for enclave in enclaves.values() {
        assert_eq!(enclave.metric(pending).unwrap(), 1.0);
    }
    let started = std::time::Instant::now();
    let but = |left_out: Participant, clients: &BTreeMap<Participant, EnclaveClient>| {
        clients
            .iter()
            .filter(|(i, _)| **i != left_out)
            .map(|(i, client)| (*i, client.clone()))
            .collect::<BTreeMap<_, _>>()
    };
    relay::confirm_refresh(
        &mut but(p(3), &clients),
        refresh_id(2),
        (pair, digest),
        &identities,
        &signatures,
        &coordinator,
    )
    .await
    .unwrap();
    eprintln!("refresh of four shares: {:?}", elapsed + started.elapsed());
    // Validator 3's confirmation has not come yet: its old share does not combine with the
    // others' new ones, and nothing is signed.
    assert!(
        relay::sign_plan(&clients, &[p(1), p(3), p(4)], id(9), &spend)
            .await
            .is_err()
    );
    // It comes (the coordinator sends it again to everyone): 3 switches too, the others answer
    // as before.
    let confirmed = relay::confirm_refresh(
        &mut clients,
        refresh_id(2),
        (pair, digest),
        &identities,
        &signatures,
        &coordinator,
    )
    .await
    .unwrap();
    // Confirmed again (the coordinator retrying): the same answer, nothing changes.
    let again = relay::confirm_refresh(
        &mut clients,
        refresh_id(2),
        (pair, digest),
        &identities,
        &signatures,
        &coordinator,
    )
    .await
    .unwrap();
    assert_eq!(again, confirmed);
    for message in confirmed.values() {
        assert!(
            matches!(message, ProcessorMessage::RefreshConfirmed { epoch: 1, pair: got, .. } if *got == pair),
            "{message:?}"
        );
    }
    let after = enclaves[&p(1)].cli("status").unwrap();
    let (before, after) = (
        String::from_utf8_lossy(&before.stdout),
        String::from_utf8_lossy(&after.stdout),
    );
    assert!(before.contains("refresh epoch 0"), "{before}");
    assert!(after.contains("refresh epoch 1"), "{after}");
    assert_ne!(before, after);
    for enclave in enclaves.values() {
        assert_eq!(enclave.shares_digest().unwrap(), digest);
    }
    for enclave in enclaves.values() {
        assert_eq!(enclave.metric(pending).unwrap(), 0.0);
    }
    let signed = sign_plan(&clients, &[p(1), p(2), p(4)], id(2), &spend).await;
    verify_transaction(&signed, &built.prevouts).unwrap();
    // After a restart the refreshed shares are what is unsealed.
    drop(clients);
    let restarted = enclaves.get_mut(&p(3)).unwrap();
    restarted.kill();
    restarted.start().unwrap();
    let mut clients = connect_all(&enclaves).await;
    let signed = sign_plan(&clients, &[p(1), p(3), p(4)], id(3), &spend).await;
    verify_transaction(&signed, &built.prevouts).unwrap();

    // A second refresh whose end validator 4 never hears of: 1, 2 and 3 move on, 4 is left on
    // the old shares and cannot sign with them. A repair by the three brings it to theirs.
    let (next, signatures) = relay::refresh_deals(
        &mut clients,
        refresh_id(3),
        (pair, digest),
        &identities,
        &coordinator,
    )
    .await
    .unwrap();
    relay::confirm_refresh(
        &mut but(p(4), &clients),
        refresh_id(3),
        (pair, next),
        &identities,
        &signatures,
        &coordinator,
    )
    .await
    .unwrap();
    assert!(
        relay::sign_plan(&clients, &[p(2), p(3), p(4)], id(10), &spend)
            .await
            .is_err()
    );
    let left_behind = ShareRepair {
        repaired: p(4),
        helpers: vec![p(1), p(2), p(3)],
        identity: identities[3],
        shares: next,
        ..repair.clone()
    };
    let repaired = relay::repair(&mut clients, repair_id(5), &left_behind, &coordinator)
        .await
        .unwrap();
    assert!(
        matches!(repaired, ProcessorMessage::Repaired { .. }),
        "{repaired:?}"
    );
    assert_eq!(enclaves[&p(4)].shares_digest().unwrap(), next);
    let signed = sign_plan(&clients, &[p(2), p(3), p(4)], id(4), &spend).await;
    verify_transaction(&signed, &built.prevouts).unwrap();
    // Now it holds the named shares: a repair of them would replace a working share.
    let error = relay::repair(&mut clients, repair_id(6), &left_behind, &coordinator)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("ReshareFailed"), "{error}");

    let audit = enclaves[&p(2)].cli("audit").unwrap();
    let audit = String::from_utf8_lossy(&audit.stdout);
    for event in ["key_repaired", "key_refreshed", "refresh_confirmed"] {
        assert!(audit.contains(event), "{event}: {audit}");
    }
}

/// Every file under `dir`, with its contents.
fn files(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files(&path));
        } else if path.is_file() {
            found.push((path.clone(), std::fs::read(&path).unwrap()));
        }
    }
    found
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// A 3-of-4 key generation with one enclave and three participants in this test: knowing three
/// shares of a degree-2 polynomial, the test computes the enclave's own secret shares, then
/// searches every file the enclave has (database, token, logs) for them.
#[tokio::test(flavor = "current_thread")]
async fn secret_shares_are_never_on_disk_unsealed() {
    LocalSet::new()
        .run_until(async {
            let dir = tempfile::tempdir().unwrap();
            let coordinator = coordinator_key(0x77).x_only_public_key().0;
            let uid = my_uid(dir.path());
            let mut enclaves = Vec::new();
            let mut parties = BTreeMap::new();
            let mut enclave =
                EnclaveProcess::provision(&dir.path().join("e1"), &coordinator, uid).unwrap();
            enclave.start().unwrap();
            parties.insert(p(1), Party::Enclave(connect(&enclave).await));
            enclaves.push(enclave);
            for i in 2..=4 {
                parties.insert(p(i), Party::Local(Box::new(Local(KeyGen::default(), None))));
            }
            let last = key_gen(&mut parties, attempt(0), 3, None).await.unwrap();
            let pair = generated_pair(&last[&p(1)]);
            for party in parties.values() {
                if let Party::Enclave(client) = party {
                    client.confirm_key_pair(set(), &pair).await.unwrap();
                }
            }
            let local = |i| match &parties[&p(i)] {
                Party::Local(local) => local.1.as_ref().expect("no local keys"),
                Party::Enclave(_) => panic!("not a local party"),
            };
            let (two, three, four) = (local(2), local(3), local(4));

            // Lagrange at x = 1 from x = 2, 3, 4: s1 = 3 s2 - 3 s3 + s4.
            fn share<C: Ciphersuite>(
                s2: C::F,
                s3: C::F,
                s4: C::F,
                verification: C::G,
            ) -> Vec<Vec<u8>> {
                let three = C::F::from(3u64);
                let one = three * s2 - three * s3 + s4;
                assert_eq!(C::generator() * one, verification, "the enclave's share");
                let repr = one.to_repr().as_ref().to_vec();
                let mut reversed = repr.clone();
                reversed.reverse();
                vec![repr, reversed]
            }
            let mut secrets = share::<ciphersuite::Ristretto>(
                **two.batch.original_secret_share(),
                **three.batch.original_secret_share(),
                **four.batch.original_secret_share(),
                three
                    .batch
                    .original_verification_share(dkg::Participant::new(1).unwrap()),
            );
            secrets.extend(share::<modular_frost::curve::Secp256k1>(
                **two.network.original_secret_share(),
                **three.network.original_secret_share(),
                **four.network.original_secret_share(),
                three
                    .network
                    .original_verification_share(dkg::Participant::new(1).unwrap()),
            ));

            // Positive control: the search finds a plaintext serialization where one is.
            let plaintext = three.network.serialize();
            let own = three.network.original_secret_share().to_repr();
            assert!(contains(&plaintext, own.as_ref()));

            let found: Vec<_> = enclaves
                .iter()
                .flat_map(|enclave| files(enclave.dir()))
                .collect();
            assert!(found.len() > 5, "the enclaves wrote files");
            assert!(
                found
                    .iter()
                    .any(|(_, bytes)| contains(bytes, &pair.network_key.to_bytes())),
                "the key pair is on disk, so the database was searched"
            );
            for (path, bytes) in &found {
                for secret in &secrets {
                    assert!(
                        !contains(bytes, secret),
                        "a secret share is in {}",
                        path.display()
                    );
                }
            }
        })
        .await;
}

#[tokio::test(flavor = "current_thread")]
async fn the_largest_plan_the_scheduler_makes_is_signed_through_the_enclaves() {
    LocalSet::new()
        .run_until(the_largest_plan_the_scheduler_makes_is_signed_through_the_enclaves_inner())
        .await;
}

/// Before, the scheduler made plans of 520 inputs while a preprocess of more than 248 inputs
/// exceeded the blob limit: such a plan was acknowledged and could never be signed.
async fn the_largest_plan_the_scheduler_makes_is_signed_through_the_enclaves_inner() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = coordinator_key(0x77);
    let uid = my_uid(dir.path());
    let mut enclaves = Vec::new();
    let mut clients = BTreeMap::new();
    for i in 1..=4 {
        let path = dir.path().join(format!("enclave-{i}"));
        let mut enclave =
            EnclaveProcess::provision(&path, &coordinator.x_only_public_key().0, uid).unwrap();
        enclave.start().unwrap();
        clients.insert(p(i), connect(&enclave).await);
        enclaves.push(enclave);
    }
    let mut parties = clients.clone();
    let last = key_gen(&mut parties, attempt(0), 3, None).await.unwrap();
    let pair = generated_pair(&last[&p(1)]);
    for client in clients.values() {
        client.confirm_key_pair(set(), &pair).await.unwrap();
    }

    // The scheduler's largest plan: every one of the largest outputs, and every output slot.
    let deposits: Vec<PlanInput> = (0..600u32)
        .map(|i| {
            let mut txid = [0u8; 32];
            txid[..4].copy_from_slice(&i.to_le_bytes());
            PlanInput {
                id: OutputId {
                    txid: TransactionId(txid),
                    vout: 0,
                },
                kind: [OutputKind::External, OutputKind::Branch, OutputKind::Change]
                    [usize::try_from(i % 3).unwrap()],
                amount: Amount::from_sat(1_000_000).unwrap(),
            }
        })
        .collect();
    let payments: Vec<Payment> = (0..2_000u32)
        .map(|i| {
            let mut program = [0u8; 32];
            program[..4].copy_from_slice(&i.to_le_bytes());
            Payment {
                address: PaymentAddress::from_bytes(&[&[0x51, 0x20][..], &program].concat())
                    .unwrap(),
                data: None,
                amount: Amount::from_sat(259_900).unwrap(),
            }
        })
        .collect();
    let mut scheduler = Scheduler::new(pair.network_key, Limits::BITCOIN);
    let scheduled = scheduler.schedule(deposits, payments, FeeRate(20)).unwrap();
    let largest = &scheduled.plans[0];
    assert_eq!(largest.inputs.len(), MAX_INPUTS);
    assert_eq!(largest.payments.len(), MAX_OUTPUTS - 1);

    for client in clients.values() {
        client
            .acknowledge_plans(&attest(&coordinator, pair.network_key, &[largest]))
            .await
            .unwrap();
    }
    let id = PlanSignId {
        key: pair.network_key,
        id: largest.id(),
        attempt: Attempt(0),
    };
    let signed = sign_plan(&clients, &[p(1), p(2), p(4)], id, largest).await;
    let Ok(Built::Transaction(built)) = build(largest) else {
        panic!("plan does not build");
    };
    assert_eq!(signed.compute_txid(), built.transaction.compute_txid());
    assert_eq!(signed.output.len(), MAX_OUTPUTS);
    assert!(signed.weight().to_wu() <= 400_000);
    verify_transaction(&signed, &built.prevouts).unwrap();
}
