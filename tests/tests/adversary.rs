//! The enclave against a malicious coordinator and a compromised scanner: four real
//! `signer-enclave` processes, each with its own SoftHSM2 token, driven over their sockets the
//! way a compromised scanner host could drive them.
//!
//! One table of attacks. Every case names the attack, the refusal reason the enclave must give
//! and the label its refusal is counted under; the suite checks the reason, that the refusal
//! metric moved by one, and that nothing was signed or changed (no signing step counted, the
//! same keys, the same acknowledgements). Then what is not a refusal: a generated pair survives
//! later key generations until it is confirmed; every attempt of a plan signs the same bytes;
//! connection floods, idle connections and abandoned sessions are bounded; and the audit trail
//! records it all, and is caught when edited or truncated.

// Test code: a failed unwrap is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unwrap_in_result
)]

use std::{collections::BTreeMap, os::unix::fs::MetadataExt, time::Duration};

use bitcoin::{
    key::Keypair,
    secp256k1::{Message, Secp256k1, SecretKey},
};
use processor_tests::{
    enclave::EnclaveProcess,
    relay::{self, key_gen, others},
};
use scanner::coordinate::enclave_client::{EnclaveClient, EnclaveError, EnclaveStatus};
use schema::{
    amount::Amount,
    batch::Batch,
    generated::signer_capnp::RefusalReason,
    hashes::{BlockHash, SeraiAddress, TransactionId},
    ids::{
        Attempt, BatchId, KeyGenId, NetworkId, Participant, SeraiBlockNumber, Session,
        ThresholdParams, ValidatorSet,
    },
    instruction::{InInstruction, InInstructionWithBalance},
    keys::{KeyPair, NetworkKey},
    messages::{
        coordinator::{Attestation, PlansAcknowledged},
        key_gen::{
            refresh_attestation_message, refresh_confirm_message, repair_attestation_message,
            repair_fresh_key_message, CoordinatorMessage, ProcessorMessage, ShareRepair,
        },
        substrate::inclusion_message,
        ParticipantMap,
    },
    plan::{OutputId, OutputKind, Payment, PaymentAddress, Plan, PlanInput},
    protocol::BATCH_WINDOW,
    refusal::label,
    sign_id::{BatchSignId, BatchSignTarget, PlanSignId},
    transaction::FeeRate,
};
use tokio::task::LocalSet;

const DEADLINE: Duration = Duration::from_secs(60);
/// How long enclave 1 lets a connection sit idle before dropping it.
const IDLE_SECONDS: u64 = 5;

fn p(i: u16) -> Participant {
    Participant::new(i).unwrap()
}

fn set(session: u32) -> ValidatorSet {
    ValidatorSet {
        session: Session(session),
        network: NetworkId::Bitcoin,
    }
}

fn key_gen_id(session: u32, attempt: u32) -> KeyGenId {
    KeyGenId {
        set: set(session),
        attempt: Attempt(attempt),
    }
}

fn coordinator() -> Keypair {
    Keypair::from_secret_key(
        &Secp256k1::new(),
        &SecretKey::from_slice(&[0x77; 32]).unwrap(),
    )
}

fn attest(key: NetworkKey, block: u64, plans: &[&Plan]) -> PlansAcknowledged {
    let plans: Vec<_> = plans.iter().map(|plan| plan.id()).collect();
    let block = SeraiBlockNumber(block);
    let digest = PlansAcknowledged::attestation_message(NetworkId::Bitcoin, &key, block, &plans);
    let signature =
        Secp256k1::new().sign_schnorr_no_aux_rand(&Message::from_digest(digest), &coordinator());
    PlansAcknowledged {
        block,
        key,
        plans,
        attestation: Attestation(signature.serialize()),
    }
}

fn plan(key: NetworkKey, txid: u8, fee_rate: u64) -> Plan {
    Plan {
        key,
        inputs: vec![PlanInput {
            id: OutputId {
                txid: TransactionId([txid; 32]),
                vout: 0,
            },
            kind: OutputKind::External,
            amount: Amount::from_sat(2_000_000).unwrap(),
        }],
        payments: vec![Payment {
            address: PaymentAddress::from_bytes(&[&[0x00, 0x14][..], &[3; 20]].concat()).unwrap(),
            data: None,
            amount: Amount::from_sat(500_000).unwrap(),
        }],
        change: Some(key),
        fee_rate: FeeRate(fee_rate),
        replaces: None,
    }
}

/// The first signing attempt of `plan`.
fn sign_id_of(plan: &Plan) -> PlanSignId {
    PlanSignId {
        key: plan.key,
        id: plan.id(),
        attempt: Attempt(0),
    }
}

fn batch(id: u32, network: NetworkId, amount: u64) -> Batch {
    Batch {
        network,
        id: BatchId(id),
        block: BlockHash([5; 32]),
        instructions: vec![InInstructionWithBalance {
            instruction: InInstruction::Transfer {
                to: SeraiAddress([6; 32]),
            },
            amount: Amount::from_sat(amount).unwrap(),
        }],
    }
}

/// The coordinator's attestation (by `key`) that Serai included `batch`.
fn attest_inclusion(batch: &Batch, key: &Keypair) -> Attestation {
    let digest = inclusion_message(batch);
    Attestation(
        Secp256k1::new()
            .sign_schnorr_no_aux_rand(&Message::from_digest(digest), key)
            .serialize(),
    )
}

fn batch_sign_id(pair: &KeyPair, id: u32, network: NetworkId, attempt: u32) -> BatchSignId {
    BatchSignId {
        key: pair.batch_key,
        id: BatchSignTarget {
            network,
            batch: BatchId(id),
        },
        attempt: Attempt(attempt),
    }
}

fn generated_pair(message: &ProcessorMessage) -> KeyPair {
    relay::generated_pair(message)
        .unwrap_or_else(|| panic!("expected GeneratedKeyPair, got {message:?}"))
}

/// What one attack sends.
enum Attack {
    /// Key generation with the caller's parameters.
    GenerateKey {
        session: u32,
        attempt: u32,
        t: u16,
        n: u16,
    },
    /// Key generation for another network.
    GenerateKeyElsewhere,
    /// A plan signing attempt.
    Preprocess(PlanSignId, Plan),
    /// An attested acknowledgement.
    Acknowledge(PlansAcknowledged),
    /// A Batch signing attempt.
    PreprocessBatch(BatchSignId, Batch),
    /// A share asked again with other preprocesses.
    Share(PlanSignId, ParticipantMap),
    /// A key message: a repair or refresh step.
    KeyGen(Box<CoordinatorMessage>),
}

async fn perform(client: &EnclaveClient, attack: &Attack) -> Result<(), EnclaveError> {
    match attack {
        Attack::GenerateKey {
            session,
            attempt,
            t,
            n,
        } => {
            let params = ThresholdParams::new(*t, *n, p(1)).unwrap();
            client
                .key_gen(&CoordinatorMessage::GenerateKey {
                    id: key_gen_id(*session, *attempt),
                    params,
                })
                .await
                .map(|_| ())
        }
        Attack::GenerateKeyElsewhere => client
            .key_gen(&CoordinatorMessage::GenerateKey {
                id: KeyGenId {
                    set: ValidatorSet {
                        session: Session(0),
                        network: NetworkId::Ethereum,
                    },
                    attempt: Attempt(0),
                },
                params: ThresholdParams::new(3, 4, p(1)).unwrap(),
            })
            .await
            .map(|_| ()),
        Attack::Preprocess(id, plan) => client.preprocess_plan(id, plan).await.map(|_| ()),
        Attack::Acknowledge(acknowledged) => client.acknowledge_plans(acknowledged).await,
        Attack::PreprocessBatch(id, batch) => client.preprocess_batch(id, batch).await.map(|_| ()),
        Attack::Share(id, preprocesses) => client.share_plan(id, preprocesses).await.map(|_| ()),
        Attack::KeyGen(message) => client.key_gen(message).await.map(|_| ()),
    }
}

/// Every signing step the enclave counted, summed.
fn signing_steps(enclave: &EnclaveProcess) -> f64 {
    enclave
        .metrics()
        .unwrap()
        .lines()
        .filter(|line| line.starts_with("signer_enclave_signing_rounds_total{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn refusal_count(enclave: &EnclaveProcess, reason: RefusalReason) -> f64 {
    enclave
        .metric(&format!(
            "signer_enclave_refusals_total{{reason=\"{}\"}}",
            label(reason)
        ))
        .unwrap()
}

#[tokio::test(flavor = "current_thread")]
async fn the_enclave_holds_against_a_malicious_coordinator_and_a_compromised_scanner() {
    LocalSet::new().run_until(adversary()).await;
}

#[allow(clippy::too_many_lines)]
async fn adversary() {
    let dir = tempfile::tempdir().unwrap();
    let uid = std::fs::metadata(dir.path()).unwrap().uid();
    let mut enclaves = BTreeMap::new();
    let mut clients = BTreeMap::new();
    for i in 1..=4u16 {
        let mut enclave = EnclaveProcess::provision(
            &dir.path().join(format!("enclave-{i}")),
            &coordinator().x_only_public_key().0,
            uid,
        )
        .unwrap();
        if i == 1 {
            // Enclave 1 serves at most 3 connections and drops one idle for 5 seconds (long
            // enough that its own client, idle while the others work, survives a loaded machine).
            enclave.set_rpc_limits(3, IDLE_SECONDS).unwrap();
        }
        enclave.start().unwrap();
        clients.insert(
            p(i),
            EnclaveClient::connect(enclave.socket(), DEADLINE)
                .await
                .unwrap(),
        );
        enclaves.insert(p(i), enclave);
    }

    // A pair generated in attempt 1 (attempt 0 ran before and is left behind).
    let mut parties = clients.clone();
    key_gen(&mut parties, key_gen_id(0, 0), 3, None)
        .await
        .unwrap();
    let voted = generated_pair(
        &key_gen(&mut parties, key_gen_id(0, 1), 3, None)
            .await
            .unwrap()[&p(1)],
    );
    // A run the scanners play alone afterwards (attempt 2) completes a second candidate: the
    // pair the chain votes on must survive it.
    let stray = generated_pair(
        &key_gen(&mut parties, key_gen_id(0, 2), 3, None)
            .await
            .unwrap()[&p(1)],
    );
    assert_ne!(stray, voted);
    // A compromised scanner confirms its own run's pair on enclave 4 first (a confirmation is
    // not authenticated): the pair the chain voted on survives it, and is confirmed after.
    clients[&p(4)]
        .confirm_key_pair(set(0), &stray)
        .await
        .unwrap();
    for client in clients.values() {
        client.confirm_key_pair(set(0), &voted).await.unwrap();
    }
    assert!(clients[&p(4)].status().await.unwrap().keys.contains(&voted));
    let key = voted.network_key;

    // One plan signed once (attempt 0), to attack around.
    let signed = plan(key, 0x41, 10);
    for client in clients.values() {
        client
            .acknowledge_plans(&attest(key, 1, &[&signed]))
            .await
            .unwrap();
    }
    let first = relay::sign_plan(
        &clients,
        &[p(1), p(2), p(3)],
        PlanSignId {
            key,
            id: signed.id(),
            attempt: Attempt(0),
        },
        &signed,
    )
    .await
    .unwrap();
    // Every attempt of a plan signs the same bytes.
    let again = relay::sign_plan(
        &clients,
        &[p(2), p(3), p(4)],
        PlanSignId {
            key,
            id: signed.id(),
            attempt: Attempt(1),
        },
        &signed,
    )
    .await
    .unwrap();
    assert_eq!(first.compute_txid(), again.compute_txid());

    // The same plan at a higher fee rate is another plan; acknowledged on its own, it still
    // cannot spend the input a different plan was signed with: no second transaction.
    let repriced = plan(key, 0x41, 50);
    let repriced_acknowledged = attest(key, 2, &[&repriced]);
    // Replacements of the signed plan (fee bumping): one paying elsewhere and one underbidding
    // it, both attested; one never attested.
    let mut diverted = signed.replaced_at(FeeRate(50));
    diverted.payments[0].address =
        PaymentAddress::from_bytes(&[&[0x00, 0x14][..], &[4; 20]].concat()).unwrap();
    let underbid = signed.replaced_at(FeeRate(9));
    let unattested = signed.replaced_at(FeeRate(40));
    clients[&p(1)]
        .acknowledge_plans(&attest(key, 6, &[&diverted, &underbid]))
        .await
        .unwrap();
    // Batch 0 signed, so that the next is 1.
    let signers = [p(1), p(2), p(3)];
    relay::sign_batch(
        &clients,
        &signers,
        batch_sign_id(&voted, 0, NetworkId::Bitcoin, 0),
        &batch(0, NetworkId::Bitcoin, 70_000),
    )
    .await
    .unwrap();
    // A plan attempt preprocessed by enclave 1 only, whose share is then asked with other
    // preprocesses.
    let pending = plan(key, 0x42, 10);
    clients[&p(1)]
        .acknowledge_plans(&attest(key, 3, &[&pending]))
        .await
        .unwrap();
    let pending_id = PlanSignId {
        key,
        id: pending.id(),
        attempt: Attempt(0),
    };
    let mut preprocesses = ParticipantMap::new();
    for signer in [p(1), p(2), p(3)] {
        if signer != p(1) {
            clients[&signer]
                .acknowledge_plans(&attest(key, 3, &[&pending]))
                .await
                .unwrap();
        }
        preprocesses.insert(
            signer,
            clients[&signer]
                .preprocess_plan(&pending_id, &pending)
                .await
                .unwrap(),
        );
    }
    clients[&p(1)]
        .share_plan(&pending_id, &others(&preprocesses, p(1)))
        .await
        .unwrap();
    let mut other_preprocesses = others(&preprocesses, p(1));
    other_preprocesses.remove(&p(3));
    other_preprocesses.insert(p(4), preprocesses[&p(2)].clone());

    let forged = {
        let mut acknowledged = attest(key, 4, &[&plan(key, 0x43, 10)]);
        acknowledged.attestation.0[7] ^= 1;
        acknowledged
    };
    // Repairs and refreshes: the fresh keys are the two curves' generators (valid points).
    let fresh_key = hex::decode(
        "e2f2ae0a6abc4e71a884a961c500515f58e30b6aa582dd8db6a65945e08d2d76\
         0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798",
    )
    .unwrap();
    // The repaired enclave's identity, held here so that its signature over the fresh key
    // is valid and the helpers' other checks are reached.
    let identity = Keypair::from_secret_key(
        &Secp256k1::new(),
        &SecretKey::from_slice(&[0x55; 32]).unwrap(),
    );
    let repair_of_2 = |helpers: &[u16]| ShareRepair {
        pair: voted,
        repaired: p(2),
        helpers: helpers.iter().map(|&i| p(i)).collect(),
        participants: 4,
        identity: identity.x_only_public_key().0.serialize(),
        shares: enclaves[&p(1)].shares_digest().unwrap(),
    };
    let attested_help = |repair: ShareRepair| {
        let id = key_gen_id(0, 10);
        let attestation = relay::attest(
            &coordinator(),
            repair_attestation_message(id, &repair, &fresh_key),
        );
        let fresh_key_signature =
            relay::attest(&identity, repair_fresh_key_message(id, &repair, &fresh_key)).0;
        Attack::KeyGen(Box::new(CoordinatorMessage::RepairHelp {
            id,
            repair,
            fresh_key: fresh_key.clone(),
            fresh_key_signature,
            attestation,
        }))
    };
    let mut unattested_help = attested_help(repair_of_2(&[1, 3, 4]));
    if let Attack::KeyGen(message) = &mut unattested_help {
        if let CoordinatorMessage::RepairHelp { attestation, .. } = message.as_mut() {
            attestation.0[3] ^= 1;
        }
    }
    // The enclaves' identities, as their operators registered them.
    let identities: Vec<[u8; 32]> = enclaves
        .values()
        .map(|enclave: &EnclaveProcess| enclave.identity().unwrap())
        .collect();
    let refresh = |attestor: &Keypair, shares: [u8; 32]| {
        let id = key_gen_id(0, 11);
        let message = refresh_attestation_message(id, &voted, &shares, &identities);
        Attack::KeyGen(Box::new(CoordinatorMessage::RefreshBegin {
            id,
            pair: voted,
            shares,
            identities: identities.clone(),
            attestation: relay::attest(attestor, message),
        }))
    };
    let impostor = Keypair::from_secret_key(
        &Secp256k1::new(),
        &SecretKey::from_slice(&[0x78; 32]).unwrap(),
    );
    let confirm_nothing = {
        let id = key_gen_id(0, 12);
        Attack::KeyGen(Box::new(CoordinatorMessage::RefreshConfirm {
            id,
            pair: voted,
            digest: [0; 32],
            signatures: ParticipantMap::new(),
            identities: identities.clone(),
            attestation: relay::attest(
                &coordinator(),
                refresh_confirm_message(id, &voted, &[0; 32], &identities),
            ),
        }))
    };
    let cases: Vec<(&str, Attack, RefusalReason)> = vec![
        (
            "a 1-of-4 key any one holder could sign with",
            Attack::GenerateKey {
                session: 1,
                attempt: 0,
                t: 1,
                n: 4,
            },
            RefusalReason::SetShapeRefused,
        ),
        (
            "a threshold of two thirds or less",
            Attack::GenerateKey {
                session: 1,
                attempt: 0,
                t: 2,
                n: 3,
            },
            RefusalReason::SetShapeRefused,
        ),
        (
            "65,535 key shares, to exhaust memory",
            Attack::GenerateKey {
                session: 1,
                attempt: 0,
                t: 65_535,
                n: 65_535,
            },
            RefusalReason::SetShapeRefused,
        ),
        (
            "a replayed older key generation attempt",
            Attack::GenerateKey {
                session: 0,
                attempt: 1,
                t: 3,
                n: 4,
            },
            RefusalReason::StaleAttempt,
        ),
        (
            "key generation for another network",
            Attack::GenerateKeyElsewhere,
            RefusalReason::WrongNetwork,
        ),
        (
            "an acknowledgement the coordinator did not sign",
            Attack::Acknowledge(forged),
            RefusalReason::AttestationInvalid,
        ),
        (
            "a signed plan at another fee rate under its acknowledged id",
            Attack::Preprocess(
                PlanSignId {
                    key,
                    id: signed.id(),
                    attempt: Attempt(9),
                },
                repriced.clone(),
            ),
            RefusalReason::PlanIdMismatch,
        ),
        (
            "a signed plan at another fee rate, never acknowledged",
            Attack::Preprocess(
                PlanSignId {
                    key,
                    id: repriced.id(),
                    attempt: Attempt(0),
                },
                repriced.clone(),
            ),
            RefusalReason::PlanNotAcknowledged,
        ),
        (
            "a replacement of a signed plan paying another address",
            Attack::Preprocess(sign_id_of(&diverted), diverted.clone()),
            RefusalReason::ReplacementMismatch,
        ),
        (
            "a replacement of a signed plan at a lower fee",
            Attack::Preprocess(sign_id_of(&underbid), underbid.clone()),
            RefusalReason::ReplacementUnderbids,
        ),
        (
            "a replacement of a signed plan no attestation acknowledged",
            Attack::Preprocess(sign_id_of(&unattested), unattested.clone()),
            RefusalReason::PlanNotAcknowledged,
        ),
        (
            "a Batch id ahead of the next one, to block the honest Batches",
            Attack::PreprocessBatch(
                batch_sign_id(&voted, 7, NetworkId::Bitcoin, 0),
                batch(7, NetworkId::Bitcoin, 70_000),
            ),
            RefusalReason::BatchOutOfOrder,
        ),
        (
            "a Batch for another network",
            Attack::PreprocessBatch(
                batch_sign_id(&voted, 1, NetworkId::Ethereum, 0),
                batch(1, NetworkId::Ethereum, 70_000),
            ),
            RefusalReason::WrongNetwork,
        ),
        (
            "other content under a signed Batch id",
            Attack::PreprocessBatch(
                batch_sign_id(&voted, 0, NetworkId::Bitcoin, 5),
                batch(0, NetworkId::Bitcoin, 90_000),
            ),
            RefusalReason::BatchIdReused,
        ),
        (
            "a share asked again with other preprocesses (nonce reuse)",
            Attack::Share(pending_id, other_preprocesses),
            RefusalReason::ConflictingRepeat,
        ),
        (
            "help repairing a share, not attested",
            unattested_help,
            RefusalReason::AttestationInvalid,
        ),
        (
            "a refresh attested by another key",
            refresh(&impostor, [0; 32]),
            RefusalReason::AttestationInvalid,
        ),
        (
            "an attested refresh of other shares than the enclave holds",
            refresh(&coordinator(), [7; 32]),
            RefusalReason::ReshareFailed,
        ),
        (
            "help repairing a share whose fresh key its identity did not sign",
            {
                let mut help = attested_help(repair_of_2(&[1, 3, 4]));
                if let Attack::KeyGen(message) = &mut help {
                    if let CoordinatorMessage::RepairHelp {
                        fresh_key_signature,
                        ..
                    } = message.as_mut()
                    {
                        fresh_key_signature[5] ^= 1;
                    }
                }
                help
            },
            RefusalReason::ReshareFailed,
        ),
        (
            "an attested repair by fewer helpers than the threshold",
            attested_help(repair_of_2(&[1, 3])),
            RefusalReason::ReshareFailed,
        ),
        (
            "an attested repair the repaired participant helps",
            attested_help(repair_of_2(&[1, 2, 3])),
            RefusalReason::ReshareFailed,
        ),
        (
            "the repair of a share the enclave holds (to replace it)",
            Attack::KeyGen(Box::new(CoordinatorMessage::RepairBegin {
                id: key_gen_id(0, 13),
                repair: ShareRepair {
                    repaired: p(1),
                    identity: enclaves[&p(1)].identity().unwrap(),
                    ..repair_of_2(&[2, 3, 4])
                },
            })),
            RefusalReason::ReshareFailed,
        ),
        (
            "repair parts for no repair in progress",
            Attack::KeyGen(Box::new(CoordinatorMessage::RepairParts {
                id: key_gen_id(0, 14),
                parts: ParticipantMap::new(),
            })),
            RefusalReason::UnknownAttempt,
        ),
        (
            "an attested refresh confirmation without every participant's signature",
            confirm_nothing,
            RefusalReason::Malformed,
        ),
    ];

    let enclave = &enclaves[&p(1)];
    let client = &clients[&p(1)];
    let status = |status: EnclaveStatus| (status.keys, status.acknowledged_plans);
    for (name, attack, reason) in &cases {
        let steps = signing_steps(enclave);
        let refused = refusal_count(enclave, *reason);
        let before = status(client.status().await.unwrap());
        let result = perform(client, attack).await;
        assert_eq!(
            result.as_ref().err().and_then(EnclaveError::refusal),
            Some(*reason),
            "{name}: {result:?}"
        );
        assert_eq!(
            refusal_count(enclave, *reason),
            refused + 1.0,
            "{name}: not counted"
        );
        assert_eq!(
            signing_steps(enclave),
            steps,
            "{name}: something was signed"
        );
        assert_eq!(
            status(client.status().await.unwrap()),
            before,
            "{name}: state changed"
        );
    }

    // The repriced plan acknowledged on its own still cannot reuse the signed plan's input.
    client
        .acknowledge_plans(&repriced_acknowledged)
        .await
        .unwrap();
    let steps = signing_steps(enclave);
    assert_eq!(
        client
            .preprocess_plan(
                &PlanSignId {
                    key,
                    id: repriced.id(),
                    attempt: Attempt(0)
                },
                &repriced
            )
            .await
            .unwrap_err()
            .refusal(),
        Some(RefusalReason::InputAlreadySigned)
    );
    assert_eq!(signing_steps(enclave), steps);

    // An attested replacement at a higher fee for the same payments is signed: the same input
    // and payee as the signed plan's transaction, a higher fee, so at most one is ever final.
    let bumped = signed.replaced_at(FeeRate(50));
    for client in clients.values() {
        client
            .acknowledge_plans(&attest(key, 7, &[&bumped]))
            .await
            .unwrap();
    }
    let replacement = relay::sign_plan(&clients, &signers, sign_id_of(&bumped), &bumped)
        .await
        .unwrap();
    assert_ne!(replacement.compute_txid(), first.compute_txid());
    let outpoints = |transaction: &bitcoin::Transaction| -> Vec<_> {
        transaction
            .input
            .iter()
            .map(|input| input.previous_output)
            .collect()
    };
    assert_eq!(outpoints(&replacement), outpoints(&first));
    assert_eq!(
        replacement.output[0].script_pubkey,
        first.output[0].script_pubkey
    );
    assert!(replacement.output[0].value < first.output[0].value);

    // A compromised scanner claims new Batch ids one after another with junk on enclave 4
    // (which signed no Batch yet): the window's worth is approved, the next refused.
    let victim = &clients[&p(4)];
    let victim_enclave = &enclaves[&p(4)];
    for id in 0..BATCH_WINDOW {
        victim
            .preprocess_batch(
                &batch_sign_id(&voted, id, NetworkId::Bitcoin, 0),
                &batch(id, NetworkId::Bitcoin, 1_000),
            )
            .await
            .unwrap();
    }
    let steps = signing_steps(victim_enclave);
    let refusal_of = |result: Result<Vec<u8>, EnclaveError>| result.unwrap_err().refusal();
    let perform_junk = async |client: &EnclaveClient, id: u32| {
        refusal_of(
            client
                .preprocess_batch(
                    &batch_sign_id(&voted, id, NetworkId::Bitcoin, 0),
                    &batch(id, NetworkId::Bitcoin, 1_000),
                )
                .await,
        )
    };
    assert_eq!(
        perform_junk(victim, BATCH_WINDOW).await,
        Some(RefusalReason::BatchAhead)
    );
    assert_eq!(
        refusal_count(victim_enclave, RefusalReason::BatchAhead),
        1.0
    );
    // The honest Batch 1 is refused there, in any attempt, while the junk holds its id.
    let honest = |id: u32| batch(id, NetworkId::Bitcoin, 70_000);
    assert_eq!(
        refusal_of(
            victim
                .preprocess_batch(&batch_sign_id(&voted, 1, NetworkId::Bitcoin, 1), &honest(1))
                .await
        ),
        Some(RefusalReason::BatchIdReused)
    );
    assert_eq!(signing_steps(victim_enclave), steps);
    // What the scanner can make up does not move the window: the coordinator's attestation is
    // the evidence, not the Batch's signature (a scanner that confirmed a pair it generated
    // alone knows that key and could sign anything under it). A genuinely signed Batch 1 with
    // an attestation by another key, or flipped; an attested Batch of another network.
    let included = relay::sign_batch(
        &clients,
        &signers,
        batch_sign_id(&voted, 1, NetworkId::Bitcoin, 0),
        &honest(1),
    )
    .await
    .unwrap();
    let impostor = Keypair::from_secret_key(
        &Secp256k1::new(),
        &SecretKey::from_slice(&[0x78; 32]).unwrap(),
    );
    let mut flipped = attest_inclusion(&included.batch, &coordinator());
    flipped.0[9] ^= 1;
    let mut elsewhere = included.clone();
    elsewhere.batch.network = NetworkId::Ethereum;
    for (evidence, attestation, reason) in [
        (
            &included,
            attest_inclusion(&included.batch, &impostor),
            RefusalReason::AttestationInvalid,
        ),
        (&included, flipped, RefusalReason::AttestationInvalid),
        (
            &elsewhere,
            attest_inclusion(&elsewhere.batch, &coordinator()),
            RefusalReason::WrongNetwork,
        ),
    ] {
        assert_eq!(
            victim
                .batch_included(evidence, &attestation)
                .await
                .unwrap_err()
                .refusal(),
            Some(reason)
        );
    }
    assert_eq!(
        perform_junk(victim, BATCH_WINDOW).await,
        Some(RefusalReason::BatchAhead),
        "the window did not move"
    );
    // The others sign the honest Batches; Serai includes them, and the coordinator's attested
    // word of the newest, given to every enclave, moves their windows (enclave 4's past the
    // junk).
    let mut newest = included;
    for id in 2..BATCH_WINDOW {
        newest = relay::sign_batch(
            &clients,
            &signers,
            batch_sign_id(&voted, id, NetworkId::Bitcoin, 0),
            &honest(id),
        )
        .await
        .unwrap();
    }
    let attestation = attest_inclusion(&newest.batch, &coordinator());
    for client in clients.values() {
        client.batch_included(&newest, &attestation).await.unwrap();
    }
    // Enclave 4 signs the next honest Batch again.
    relay::sign_batch(
        &clients,
        &[p(1), p(2), p(4)],
        batch_sign_id(&voted, BATCH_WINDOW, NetworkId::Bitcoin, 0),
        &honest(BATCH_WINDOW),
    )
    .await
    .unwrap();

    // Key generations for more sets at once than allowed: the fifth is refused.
    for session in 10..14 {
        perform(
            client,
            &Attack::GenerateKey {
                session,
                attempt: 0,
                t: 3,
                n: 4,
            },
        )
        .await
        .unwrap();
    }
    assert_eq!(
        perform(
            client,
            &Attack::GenerateKey {
                session: 14,
                attempt: 0,
                t: 3,
                n: 4
            }
        )
        .await
        .unwrap_err()
        .refusal(),
        Some(RefusalReason::TooManySessions)
    );

    // A flood of connections: past the cap they are dropped and counted, and the enclave goes
    // on serving the scanner.
    let mut flood = Vec::new();
    for _ in 0..6 {
        flood.push(
            tokio::net::UnixStream::connect(enclave.socket())
                .await
                .unwrap(),
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        enclave
            .metric("signer_enclave_connections_dropped_total{reason=\"too_many\"}")
            .unwrap()
            >= 4.0
    );
    // Idle connections are dropped after the idle timeout, freeing their places.
    tokio::time::sleep(Duration::from_secs(IDLE_SECONDS + 1)).await;
    assert!(
        enclave
            .metric("signer_enclave_connections_dropped_total{reason=\"idle\"}")
            .unwrap()
            >= 2.0
    );
    drop(flood);
    let fresh = EnclaveClient::connect(enclave.socket(), DEADLINE)
        .await
        .unwrap();
    assert_eq!(fresh.status().await.unwrap().keys, vec![voted]);

    // Abandoned plan sessions are bounded: the oldest are evicted, and counted.
    for index in 0..40u8 {
        let abandoned = plan(key, 0x80 + index, 10);
        fresh
            .acknowledge_plans(&attest(key, 100 + u64::from(index), &[&abandoned]))
            .await
            .unwrap();
        fresh
            .preprocess_plan(
                &PlanSignId {
                    key,
                    id: abandoned.id(),
                    attempt: Attempt(0),
                },
                &abandoned,
            )
            .await
            .unwrap();
    }
    assert!(
        enclave
            .metric("signer_enclave_sessions_evicted_total{kind=\"plan\"}")
            .unwrap()
            >= 8.0
    );
    assert!(
        enclave
            .metric("signer_enclave_open_sessions{kind=\"plan\"}")
            .unwrap()
            <= 32.0
    );

    // The audit trail holds it all, chained; `audit` verifies and prints it.
    let audit = |enclave: &EnclaveProcess| enclave.cli("audit").unwrap();
    let output = audit(enclave);
    let printed = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(output.status.success(), "{printed}");
    for event in [
        "key_generated",
        "key_confirmed",
        "plans_acknowledged",
        "plan_approved",
        "plan_shared",
        "plan_signed",
        "batch_approved",
        "refused",
    ] {
        assert!(printed.contains(event), "no {event} in\n{printed}");
    }
    assert!(printed.contains("batch_out_of_order"));
    assert!(printed.contains("audit trail verified"));

    // Edited or truncated, it is caught.
    let mut enclave = enclaves.remove(&p(1)).unwrap();
    enclave.terminate().unwrap();
    let db_path = enclave.dir().join("db");
    let families = rocksdb::DB::list_cf(&rocksdb::Options::default(), &db_path).unwrap();
    {
        let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), &db_path, &families).unwrap();
        let cf = db.cf_handle("audit").unwrap();
        let mut value = db.get_cf(cf, 3u64.to_be_bytes()).unwrap().unwrap();
        value[20] ^= 1;
        db.put_cf(cf, 3u64.to_be_bytes(), value).unwrap();
    }
    let output = audit(&enclave);
    assert!(!output.status.success());
    let said = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(
        said.contains("record 3") && said.contains("edited"),
        "{said}"
    );
    {
        let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), &db_path, &families).unwrap();
        let cf = db.cf_handle("audit").unwrap();
        // Undo the edit, then cut the last record.
        let mut value = db.get_cf(cf, 3u64.to_be_bytes()).unwrap().unwrap();
        value[20] ^= 1;
        db.put_cf(cf, 3u64.to_be_bytes(), value).unwrap();
        let last = db
            .iterator_cf(cf, rocksdb::IteratorMode::End)
            .next()
            .unwrap()
            .unwrap()
            .0;
        db.delete_cf(cf, last).unwrap();
    }
    let output = audit(&enclave);
    assert!(!output.status.success());
    let said = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(said.contains("truncated"), "{said}");
}

#[tokio::test(flavor = "current_thread")]
async fn a_replaced_token_is_not_provisioned_over_sealed_shares_unless_asked() {
    LocalSet::new()
        .run_until(async {
            let dir = tempfile::tempdir().unwrap();
            let uid = std::fs::metadata(dir.path()).unwrap().uid();
            let coordinator = coordinator().x_only_public_key().0;
            let mut enclave = EnclaveProcess::provision(dir.path(), &coordinator, uid).unwrap();
            enclave.start().unwrap();
            let client = EnclaveClient::connect(enclave.socket(), DEADLINE)
                .await
                .unwrap();
            // A confirmed 1-of-1 key: a sealed key pair in the database, unsealed at every start.
            let mut parties = BTreeMap::from([(p(1), client)]);
            let pair = generated_pair(
                &key_gen(&mut parties, key_gen_id(0, 0), 1, None)
                    .await
                    .unwrap()[&p(1)],
            );
            parties[&p(1)]
                .confirm_key_pair(set(0), &pair)
                .await
                .unwrap();
            drop(parties);
            enclave.terminate().unwrap();

            // The HSM is replaced (or reset): the new token has no sealing key, and the sealed
            // pair can no longer be unsealed. Provisioning refuses to paper over that.
            enclave.replace_token().unwrap();
            let refused = enclave.provision_again(&coordinator, &[]).unwrap();
            assert!(!refused.status.success());
            let said = String::from_utf8_lossy(&refused.stderr).to_string();
            assert!(
                said.contains("1 sealed key pair") && said.contains("--new-sealing-key"),
                "{said}"
            );
            // Named explicitly, it goes ahead.
            let replaced = enclave
                .provision_again(&coordinator, &["--new-sealing-key"])
                .unwrap();
            assert!(
                replaced.status.success(),
                "{}",
                String::from_utf8_lossy(&replaced.stderr)
            );
            // The pair sealed under the old key is retired (and audited), so the enclave starts,
            // without it.
            enclave.start().unwrap();
            let client = EnclaveClient::connect(enclave.socket(), DEADLINE)
                .await
                .unwrap();
            assert!(client.status().await.unwrap().keys.is_empty());
            drop(client);
            enclave.terminate().unwrap();
            let printed =
                String::from_utf8_lossy(&enclave.cli("audit").unwrap().stdout).to_string();
            assert!(printed.contains("keys_retired"), "{printed}");
        })
        .await;
}
