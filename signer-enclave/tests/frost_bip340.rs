//! A 3-of-4 key generation with dkg-pedpop, then FROST signatures of our transaction
//! builder's sighashes for every output kind, checked by libsecp256k1's BIP340 verifier under
//! the output key of the script being spent: threshold keys, the schema's key derivation and
//! the builder agree.

// Test code: a failed unwrap is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unwrap_in_result
)]

mod common;

use std::collections::HashMap;

use bitcoin::{
    key::XOnlyPublicKey,
    secp256k1::{schnorr, Message, Secp256k1},
};
use ciphersuite::Secp256k1 as Curve;
use dkg_pedpop::{EncryptedMessage, EncryptionKeyMessage, KeyGenMachine, SecretShare};
use modular_frost::{Participant, ThresholdKeys, ThresholdParams};
use rand_core::OsRng;
use schema::{
    amount::Amount,
    hashes::TransactionId,
    plan::{OutputId, OutputKind, Payment, PaymentAddress, Plan, PlanInput},
    transaction::{build, Built, FeeRate},
};
use signer_enclave::bip340::{network_key, taproot_keys};

const T: u16 = 3;
const N: u16 = 4;

fn participant(i: u16) -> Participant {
    Participant::new(i).unwrap()
}

/// Runs the DKG among all four, every message through its serialized form as the
/// coordinator would relay it.
fn key_gen() -> HashMap<Participant, ThresholdKeys<Curve>> {
    let context = *b"processor test dkg: set 0, try 0";
    let params = |i| ThresholdParams::new(T, N, participant(i)).unwrap();
    let mut machines = HashMap::new();
    let mut commitments = HashMap::new();
    for i in 1..=N {
        let (machine, message) =
            KeyGenMachine::<Curve>::new(params(i), context).generate_coefficients(&mut OsRng);
        let bytes = message.serialize();
        commitments.insert(
            participant(i),
            EncryptionKeyMessage::read::<&[u8]>(&mut bytes.as_ref(), params(i)).unwrap(),
        );
        machines.insert(participant(i), machine);
    }
    let mut shares: HashMap<Participant, HashMap<Participant, _>> = HashMap::new();
    let mut key_machines = HashMap::new();
    for (i, machine) in machines {
        let mut others = commitments.clone();
        others.remove(&i);
        let (machine, sent) = machine.generate_secret_shares(&mut OsRng, others).unwrap();
        for (to, share) in sent {
            let bytes = share.serialize();
            let share: EncryptedMessage<Curve, SecretShare<_>> =
                EncryptedMessage::read::<&[u8]>(&mut bytes.as_ref(), params(1)).unwrap();
            shares.entry(to).or_default().insert(i, share);
        }
        key_machines.insert(i, machine);
    }
    key_machines
        .into_iter()
        .map(|(i, machine)| {
            let received = shares.remove(&i).unwrap();
            let keys = machine
                .calculate_share(&mut OsRng, received)
                .unwrap()
                .complete();
            (i, keys)
        })
        .collect()
}

#[test]
fn threshold_signatures_spend_every_kind_of_our_outputs() {
    let keys = key_gen();
    let group = keys[&participant(1)].group_key();
    assert!(keys.values().all(|k| k.group_key() == group));
    let group_key = network_key(&group).unwrap();
    let secp = Secp256k1::verification_only();

    for kind in [OutputKind::External, OutputKind::Branch, OutputKind::Change] {
        let plan = Plan {
            key: group_key,
            inputs: vec![PlanInput {
                id: OutputId {
                    txid: TransactionId([0x33; 32]),
                    vout: 0,
                },
                kind,
                amount: Amount::from_sat(500_000).unwrap(),
            }],
            payments: vec![Payment {
                address: PaymentAddress::from_bytes(&[&[0x00, 0x14][..], &[1; 20]].concat())
                    .unwrap(),
                data: None,
                amount: Amount::from_sat(200_000).unwrap(),
            }],
            change: Some(group_key),
            fee_rate: FeeRate(5),
            replaces: None,
        };
        let Built::Transaction(built) = build(&plan).unwrap() else {
            panic!("no transaction");
        };
        // Signers 1, 2 and 4 of 4.
        let signers: HashMap<_, _> = [1, 2, 4]
            .into_iter()
            .map(|i| {
                let keys = taproot_keys(keys[&participant(i)].clone(), kind).unwrap();
                (participant(i), keys)
            })
            .collect();
        let signature = common::frost_bip340_sign(&signers, &built.sighashes[0]).unwrap();

        let program = &built.prevouts[0].script_pubkey.as_bytes()[2..];
        let output_key = XOnlyPublicKey::from_slice(program).unwrap();
        let message = Message::from_digest(built.sighashes[0]);
        let verified = schnorr::Signature::from_slice(&signature).unwrap();
        secp.verify_schnorr(&verified, &message, &output_key)
            .unwrap_or_else(|_| panic!("{kind:?}: signature does not verify"));

        // One flipped bit, and the same signature for another input's sighash, fail.
        let mut flipped = signature;
        flipped[40] ^= 1;
        let flipped = schnorr::Signature::from_slice(&flipped).unwrap();
        assert!(secp
            .verify_schnorr(&flipped, &message, &output_key)
            .is_err());
        let other = Message::from_digest([7; 32]);
        assert!(secp.verify_schnorr(&verified, &other, &output_key).is_err());
    }
}

#[test]
fn fewer_than_t_signers_cannot_sign() {
    let keys = key_gen();
    let prepared = taproot_keys(keys[&participant(1)].clone(), OutputKind::External).unwrap();
    // A view over two signers of a 3-of-4 key is refused before any nonce is used.
    assert!(prepared.view(vec![participant(1), participant(2)]).is_err());
}
