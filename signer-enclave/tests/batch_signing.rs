//! Three of four enclaves sign a Batch with the batch key from their DKG; the signature
//! verifies with `schnorrkel` (sr25519, Substrate's context) over exactly `Batch::message`,
//! and a bad share is refused.

// Test code: a failed unwrap is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unwrap_in_result
)]

mod common;

use ciphersuite::group::GroupEncoding;
use rand_core::OsRng;
use schema::{
    amount::Amount,
    batch::Batch,
    hashes::{BlockHash, SeraiAddress},
    ids::{Attempt, BatchId, NetworkId, Participant},
    instruction::{InInstruction, InInstructionWithBalance},
    keys::BatchKey,
    messages::ParticipantMap,
    sign_id::{BatchSignId, BatchSignTarget},
};
use signer_enclave::{
    batch_signing::{BatchSigning, BATCH_SIGNING_CONTEXT},
    db::EnclaveDb,
    plan_signing::SigningError,
    policy::{batch_preprocess, Decision},
};

#[test]
fn three_of_four_sign_a_batch_schnorrkel_verifies() {
    let keys = common::generate_keys(3, 4);
    let p = |i| Participant::new(i).unwrap();
    let group = keys[&p(1)].batch.group_key().to_bytes();
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
    let id = BatchSignId {
        key: BatchKey(group),
        id: BatchSignTarget {
            network: NetworkId::Bitcoin,
            batch: BatchId(0),
        },
        attempt: Attempt(0),
    };

    let signers = [p(1), p(2), p(3)];
    let mut sessions: Vec<BatchSigning> = Vec::new();
    let mut preprocesses = ParticipantMap::new();
    let dir = tempfile::tempdir().unwrap();
    for signer in signers {
        let db = EnclaveDb::open(&dir.path().join(signer.get().to_string())).unwrap();
        let Decision::Approve(approval) = batch_preprocess(&db, NetworkId::Bitcoin, &id, &batch)
        else {
            panic!("refused");
        };
        db.record_batch_approval(&approval).unwrap();
        let mut signing = BatchSigning::default();
        preprocesses.insert(
            signer,
            signing
                .preprocess(&approval, batch.clone(), &keys[&signer].batch, &mut OsRng)
                .unwrap(),
        );
        sessions.push(signing);
    }
    let mut shares = ParticipantMap::new();
    for (signer, signing) in signers.iter().zip(&mut sessions) {
        shares.insert(
            *signer,
            signing
                .share(&id, &common::others(&preprocesses, *signer))
                .unwrap(),
        );
    }

    let mut bad = common::others(&shares, p(1));
    bad.get_mut(&p(2)).unwrap()[3] ^= 1;
    assert!(matches!(
        sessions[0].complete(&id, &bad),
        Err(SigningError::Frost(_))
    ));

    // A repeated share answers the same; one with other preprocesses is refused.
    assert_eq!(
        sessions[1]
            .share(&id, &common::others(&preprocesses, p(2)))
            .unwrap(),
        shares[&p(2)]
    );
    assert_eq!(
        sessions[1].share(&id, &common::others(&shares, p(2))).err(),
        Some(SigningError::ConflictingRepeat)
    );

    let signed = sessions[1]
        .complete(&id, &common::others(&shares, p(2)))
        .unwrap();
    assert_eq!(signed.batch, batch);
    // So does a repeated completion.
    assert_eq!(
        sessions[1]
            .complete(&id, &common::others(&shares, p(2)))
            .unwrap(),
        signed
    );
    let key = schnorrkel::PublicKey::from_bytes(&group).unwrap();
    let signature = schnorrkel::Signature::from_bytes(&signed.signature.0).unwrap();
    key.verify_simple(BATCH_SIGNING_CONTEXT, &batch.message(), &signature)
        .unwrap();
    // Not a signature over any other batch.
    let mut other = batch.clone();
    other.id = BatchId(1);
    assert!(key
        .verify_simple(BATCH_SIGNING_CONTEXT, &other.message(), &signature)
        .is_err());
}
