//! Three of four enclaves sign a three-input plan (one input of each kind) end to end: DKG,
//! acknowledgement in the real policy database, approval, preprocess, share, complete. Every
//! signer ends with the same fully signed transaction; a bad share or a truncated preprocess
//! is refused and nothing is released.

// Test code: a failed unwrap is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unwrap_in_result
)]

mod common;

use std::collections::BTreeMap;

use rand_core::OsRng;
use schema::{
    amount::Amount,
    hashes::TransactionId,
    ids::{Attempt, Participant, SeraiBlockNumber},
    limits::{PREPROCESS_BYTES_PER_INPUT, SHARE_BYTES_PER_INPUT},
    messages::{
        coordinator::{Attestation, PlansAcknowledged},
        ParticipantMap,
    },
    plan::{OutputId, OutputKind, Payment, PaymentAddress, Plan, PlanInput},
    protocol::FeeCaps,
    sign_id::PlanSignId,
    transaction::FeeRate,
};
use signer_enclave::{
    bip340::network_key,
    db::EnclaveDb,
    plan_signing::{PlanSigning, SigningError},
    policy::{plan_preprocess, Decision},
};

const CAPS: FeeCaps = FeeCaps::PROTOCOL;

#[test]
fn three_of_four_sign_a_plan_and_refuse_bad_shares() {
    let keys = common::generate_keys(3, 4);
    let p = |i| Participant::new(i).unwrap();
    let group = network_key(&keys[&p(1)].network.group_key()).unwrap();
    let kinds = [OutputKind::External, OutputKind::Branch, OutputKind::Change];
    let plan = Plan {
        key: group,
        inputs: kinds
            .iter()
            .zip(0u32..)
            .map(|(kind, vout)| PlanInput {
                id: OutputId {
                    txid: TransactionId([0x44; 32]),
                    vout,
                },
                kind: *kind,
                amount: Amount::from_sat(300_000).unwrap(),
            })
            .collect(),
        payments: vec![Payment {
            address: PaymentAddress::from_bytes(&[&[0x00, 0x14][..], &[2; 20]].concat()).unwrap(),
            data: None,
            amount: Amount::from_sat(500_000).unwrap(),
        }],
        change: Some(group),
        fee_rate: FeeRate(8),
        replaces: None,
    };
    let id = PlanSignId {
        key: group,
        id: plan.id(),
        attempt: Attempt(0),
    };

    let signers = [p(1), p(3), p(4)];
    let mut sessions: BTreeMap<Participant, PlanSigning> = BTreeMap::new();
    let mut preprocesses = ParticipantMap::new();
    let dirs: Vec<_> = signers
        .iter()
        .map(|_| tempfile::tempdir().unwrap())
        .collect();
    for (signer, dir) in signers.iter().zip(&dirs) {
        let db = EnclaveDb::open(dir.path()).unwrap();
        db.record_acknowledgement(&PlansAcknowledged {
            block: SeraiBlockNumber(1),
            key: group,
            plans: vec![plan.id()],
            attestation: Attestation([0; 64]),
        })
        .unwrap();
        let Decision::Approve(approval) = plan_preprocess(&db, CAPS, &id, &plan) else {
            panic!("refused");
        };
        db.record_plan_approval(&approval).unwrap();
        let mut signing = PlanSigning::default();
        let preprocess = signing
            .preprocess(approval, &plan, &keys[signer].network, &mut OsRng)
            .unwrap();
        preprocesses.insert(*signer, preprocess);
        sessions.insert(*signer, signing);
    }

    // A truncated preprocess is refused; the failed step ends signer 1's attempt.
    let mut truncated = common::others(&preprocesses, p(1));
    let blob = truncated.get_mut(&p(3)).unwrap();
    blob.truncate(blob.len() - 1);
    assert_eq!(
        sessions
            .get_mut(&p(1))
            .unwrap()
            .share(&id, &truncated)
            .err(),
        Some(SigningError::Malformed(3))
    );

    // So the coordinator re-attempts: every signer approves and preprocesses attempt 1.
    let id = PlanSignId {
        attempt: Attempt(1),
        ..id
    };
    let mut preprocesses = ParticipantMap::new();
    for (signer, dir) in signers.iter().zip(&dirs) {
        let db = EnclaveDb::open(dir.path()).unwrap();
        let Decision::Approve(approval) = plan_preprocess(&db, CAPS, &id, &plan) else {
            panic!("refused");
        };
        db.record_plan_approval(&approval).unwrap();
        let preprocess = sessions
            .get_mut(signer)
            .unwrap()
            .preprocess(approval, &plan, &keys[signer].network, &mut OsRng)
            .unwrap();
        // The size every blob limit is derived from.
        assert_eq!(
            preprocess.len(),
            PREPROCESS_BYTES_PER_INPUT * plan.inputs.len()
        );
        preprocesses.insert(*signer, preprocess);
    }
    let mut shares = ParticipantMap::new();
    for signer in signers {
        let share = sessions
            .get_mut(&signer)
            .unwrap()
            .share(&id, &common::others(&preprocesses, signer))
            .unwrap();
        assert_eq!(share.len(), SHARE_BYTES_PER_INPUT * plan.inputs.len());
        shares.insert(signer, share);
    }
    // Asked again with the same preprocesses (its caller crashed before recording the answer),
    // a signer answers the same share; with other preprocesses it refuses: a second share from
    // the same nonces would reveal its key share.
    let again = sessions
        .get_mut(&p(3))
        .unwrap()
        .share(&id, &common::others(&preprocesses, p(3)))
        .unwrap();
    assert_eq!(again, shares[&p(3)]);
    let mut other = common::others(&preprocesses, p(3));
    other.remove(&p(4));
    assert_eq!(
        sessions.get_mut(&p(3)).unwrap().share(&id, &other).err(),
        Some(SigningError::ConflictingRepeat)
    );

    // A corrupted share from signer 4 makes signer 1's completion fail: nothing released.
    let mut bad = common::others(&shares, p(1));
    bad.get_mut(&p(4)).unwrap()[40] ^= 1;
    assert!(matches!(
        sessions.get_mut(&p(1)).unwrap().complete(&id, &bad),
        Err(SigningError::Frost(_))
    ));

    // Signers 3 and 4 complete with honest shares: the same, fully signed transaction.
    let signed: Vec<_> = [p(3), p(4)]
        .into_iter()
        .map(|signer| {
            sessions
                .get_mut(&signer)
                .unwrap()
                .complete(&id, &common::others(&shares, signer))
                .unwrap()
        })
        .collect();
    assert_eq!(signed[0], signed[1]);
    let transaction = &signed[0];
    assert!(transaction
        .input
        .iter()
        .all(|input| input.witness.len() == 1));
    // Fee at the signed size is exactly the planned 8 sat/vB.
    let outputs: u64 = transaction.output.iter().map(|o| o.value.to_sat()).sum();
    assert_eq!(900_000 - outputs, transaction.vsize() as u64 * 8);

    // Completing again with the same shares gives the same transaction; other shares are
    // refused.
    assert_eq!(
        sessions
            .get_mut(&p(3))
            .unwrap()
            .complete(&id, &common::others(&shares, p(3)))
            .unwrap(),
        *transaction
    );
    assert_eq!(
        sessions.get_mut(&p(3)).unwrap().complete(&id, &bad).err(),
        Some(SigningError::ConflictingRepeat)
    );
    // An attempt never preprocessed is unknown.
    let unknown = PlanSignId {
        attempt: Attempt(7),
        ..id
    };
    assert_eq!(
        sessions
            .get_mut(&p(3))
            .unwrap()
            .complete(&unknown, &common::others(&shares, p(3)))
            .err(),
        Some(SigningError::UnknownSession)
    );
}
