//! The transaction builder, checked against the finished, signed transaction: sizes and fees
//! are what the `bitcoin` crate computes, the sighashes verify under the derived keys, value
//! is conserved, and a fixed plan gives a fixed txid.

// Test code: a failed unwrap is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unwrap_in_result
)]

use bitcoin::{
    key::{Keypair, Secp256k1, TapTweak},
    secp256k1::{Message, SecretKey},
    taproot::Signature,
    Witness,
};
use proptest::prelude::*;
use schema::{
    amount::Amount,
    hashes::TransactionId,
    keys::NetworkKey,
    plan::{OutputId, OutputKind, Payment, PaymentAddress, Plan, PlanInput},
    protocol::{bump_fee_rate, outbids, DUST, MAX_FEE_RATE},
    strategies::payment_address,
    taproot::kind_offset,
    transaction::{
        build, BuildError, Built, BuiltTransaction, FeeRate, PaymentOutcome, KEY_PATH_INPUT_WEIGHT,
    },
};

fn secret() -> SecretKey {
    SecretKey::from_slice(&[0x42; 32]).unwrap()
}

fn group() -> NetworkKey {
    NetworkKey::from(secret().public_key(&Secp256k1::new()))
}

fn sat(sats: u64) -> Amount {
    Amount::from_sat(sats).unwrap()
}

fn input(byte: u8, kind: OutputKind, amount: u64) -> PlanInput {
    PlanInput {
        id: OutputId {
            txid: TransactionId([byte; 32]),
            vout: u32::from(byte),
        },
        kind,
        amount: sat(amount),
    }
}

fn p2wpkh(byte: u8) -> PaymentAddress {
    PaymentAddress::from_bytes(&[&[0x00, 0x14][..], &[byte; 20]].concat()).unwrap()
}

fn pay(address: PaymentAddress, amount: u64) -> Payment {
    Payment {
        address,
        data: None,
        amount: sat(amount),
    }
}

/// `plan` at another fee rate.
fn at(plan: &Plan, rate: u64) -> Plan {
    Plan {
        fee_rate: FeeRate(rate),
        ..plan.clone()
    }
}

fn built(plan: &Plan, rate: u64) -> BuiltTransaction {
    match build(&at(plan, rate)).unwrap() {
        Built::Transaction(built) => built,
        Built::NoTransaction { .. } => panic!("no transaction"),
    }
}

/// Signs every input the way the enclave's threshold signature must: with the group secret,
/// made even, offset for the input's kind, and tweaked per BIP341.
fn sign(plan: &Plan, built: &BuiltTransaction) -> bitcoin::Transaction {
    let secp = Secp256k1::new();
    let mut transaction = built.transaction.clone();
    for (index, (input, sighash)) in plan.inputs.iter().zip(&built.sighashes).enumerate() {
        let mut keypair = Keypair::from_secret_key(&secp, &secret());
        if keypair.x_only_public_key().1 == bitcoin::key::Parity::Odd {
            keypair = Keypair::from_secret_key(&secp, &secret().negate());
        }
        if let Some(offset) = kind_offset(input.kind).unwrap() {
            keypair = keypair.add_xonly_tweak(&secp, &offset).unwrap();
        }
        let tweaked = keypair.tap_tweak(&secp, None).to_keypair();
        let signature = secp.sign_schnorr_no_aux_rand(&Message::from_digest(*sighash), &tweaked);
        // The signature verifies under the output key of the script being spent.
        let program = &built.prevouts[index].script_pubkey.as_bytes()[2..];
        let output_key = bitcoin::key::XOnlyPublicKey::from_slice(program).unwrap();
        secp.verify_schnorr(&signature, &Message::from_digest(*sighash), &output_key)
            .unwrap();
        transaction.input[index].witness = Witness::p2tr_key_spend(&Signature {
            signature,
            sighash_type: bitcoin::TapSighashType::Default,
        });
    }
    transaction
}

fn sum_outputs(transaction: &bitcoin::Transaction) -> u64 {
    transaction.output.iter().map(|o| o.value.to_sat()).sum()
}

#[test]
fn fee_is_split_over_the_payments_with_exact_numbers() {
    let plan = Plan {
        key: group(),
        inputs: vec![input(1, OutputKind::External, 100_000)],
        payments: (1..=3).map(|i| pay(p2wpkh(i), 20_000)).collect(),
        change: Some(group()),
        fee_rate: FeeRate(1),
        replaces: None,
    };
    let built = built(&plan, 10);
    // 1 key-path input, 3 P2WPKH outputs, 1 P2TR change: base 187 bytes, witness 68 bytes,
    // weight 816, 204 vbytes, 2,040 sat at 10 sat/vB, 680 per payment.
    assert_eq!(built.fee, sat(2_040));
    for (vout, outcome) in built.payments.iter().enumerate() {
        assert_eq!(
            *outcome,
            PaymentOutcome::Paid {
                vout: u32::try_from(vout).unwrap(),
                amount: sat(19_320)
            }
        );
    }
    assert_eq!(built.change, Some((3, sat(40_000))));
    let signed = sign(&plan, &built);
    assert_eq!(signed.vsize(), 204);
    assert_eq!(signed.weight().to_wu(), 816);
}

#[test]
fn the_fee_remainder_goes_to_the_first_payment() {
    let plan = Plan {
        key: group(),
        inputs: vec![input(1, OutputKind::External, 100_000)],
        payments: (1..=3).map(|i| pay(p2wpkh(i), 20_000)).collect(),
        change: Some(group()),
        fee_rate: FeeRate(1),
        replaces: None,
    };
    // 204 vbytes is a multiple of 3, so add an input (+58 vbytes: 262, remainder 1 at odd
    // rates) to have remainders at all.
    let plan = Plan {
        inputs: vec![
            input(1, OutputKind::External, 100_000),
            input(2, OutputKind::Branch, 10_000),
        ],
        ..plan
    };
    let mut remainders = 0;
    for rate in 1..40 {
        let built = built(&plan, rate);
        let amounts: Vec<u64> = built
            .payments
            .iter()
            .map(|o| match o {
                PaymentOutcome::Paid { amount, .. } => amount.to_sat(),
                PaymentOutcome::Dropped => panic!("dropped"),
            })
            .collect();
        let fee = built.fee.to_sat();
        assert_eq!(fee, 262 * rate);
        remainders += usize::from(fee % 3 != 0);
        let share = fee / 3;
        assert_eq!(amounts[1], 20_000 - share);
        assert_eq!(amounts[2], 20_000 - share);
        assert_eq!(amounts[0], 20_000 - share - fee % 3);
    }
    assert!(remainders > 10);
}

#[test]
fn payments_falling_below_dust_are_dropped_and_the_value_kept() {
    let plan = Plan {
        key: group(),
        inputs: vec![input(1, OutputKind::External, 200_000)],
        payments: vec![pay(p2wpkh(1), 100_000), pay(p2wpkh(2), DUST.to_sat() + 100)],
        change: Some(group()),
        fee_rate: FeeRate(1),
        replaces: None,
    };
    let built = built(&plan, 5);
    assert_eq!(built.payments[1], PaymentOutcome::Dropped);
    let PaymentOutcome::Paid { amount, vout: 0 } = built.payments[0] else {
        panic!("first payment not paid first");
    };
    // The one remaining payment bears the whole fee; the dropped one's value is change.
    assert_eq!(amount.to_sat(), 100_000 - built.fee.to_sat());
    assert_eq!(built.change, Some((1, sat(100_000))));
    let signed = sign(&plan, &built);
    assert_eq!(built.fee.to_sat(), signed.vsize() as u64 * 5);
}

#[test]
fn a_plan_that_cannot_pay_its_fee_yields_no_transaction() {
    let plan = Plan {
        key: group(),
        inputs: vec![input(1, OutputKind::Change, 10_500)],
        payments: vec![],
        change: Some(group()),
        fee_rate: FeeRate(1),
        replaces: None,
    };
    assert_eq!(
        build(&at(&plan, 10)),
        Ok(Built::NoTransaction { payments: vec![] })
    );

    // Both payments fall below dust at this rate. With a change key their value is kept as
    // change; without one, nothing can be built.
    let mut tiny = Plan {
        key: group(),
        inputs: vec![input(1, OutputKind::Change, 25_000)],
        payments: vec![pay(p2wpkh(1), 12_000), pay(p2wpkh(2), 13_000)],
        change: Some(group()),
        fee_rate: FeeRate(1),
        replaces: None,
    };
    let kept = built(&tiny, 50);
    assert_eq!(kept.payments, vec![PaymentOutcome::Dropped; 2]);
    assert_eq!(
        kept.change.map(|(_, a)| a.to_sat()),
        Some(25_000 - kept.fee.to_sat())
    );
    tiny.change = None;
    assert_eq!(
        build(&at(&tiny, 50)),
        Ok(Built::NoTransaction {
            payments: vec![PaymentOutcome::Dropped; 2]
        })
    );
}

#[test]
fn malformed_plans_are_errors() {
    let no_inputs = Plan {
        key: group(),
        inputs: vec![],
        payments: vec![],
        change: None,
        fee_rate: FeeRate(1),
        replaces: None,
    };
    assert_eq!(build(&no_inputs), Err(BuildError::NoInputs));
    let overspent = Plan {
        key: group(),
        inputs: vec![input(1, OutputKind::External, 50_000)],
        payments: vec![pay(p2wpkh(1), 50_001)],
        change: None,
        fee_rate: FeeRate(1),
        replaces: None,
    };
    assert!(matches!(
        build(&overspent),
        Err(BuildError::InsufficientInputs { .. })
    ));
    let huge_rate = Plan {
        key: group(),
        inputs: vec![input(1, OutputKind::External, 50_000)],
        payments: vec![pay(p2wpkh(1), 40_000)],
        change: None,
        fee_rate: FeeRate(1),
        replaces: None,
    };
    assert_eq!(build(&at(&huge_rate, u64::MAX)), Err(BuildError::Overflow));
}

#[test]
fn a_replacement_outbids_as_bip125_demands_and_its_signed_size_is_exact() {
    let plan = Plan {
        key: group(),
        inputs: vec![input(1, OutputKind::External, 1_000_000)],
        payments: vec![pay(p2wpkh(3), 400_000)],
        change: Some(group()),
        fee_rate: FeeRate(10),
        replaces: None,
    };
    let original = built(&plan, 10);
    assert_eq!(
        original.signed_vsize(),
        sign(&plan, &original).vsize() as u64
    );
    assert_eq!(original.fee.to_sat(), 10 * original.signed_vsize());
    // One sat/vB more pays the incremental relay fee for the same size: the least that outbids.
    assert!(outbids(&original, &built(&plan, 11)));
    assert!(!outbids(&original, &built(&plan, 10)));
    assert!(!outbids(&built(&plan, 11), &original));
    // A fee rate higher but an absolute fee short of the relay increment does not outbid: the
    // same fee in a smaller transaction (no change output).
    let smaller = Plan {
        change: None,
        payments: vec![pay(p2wpkh(3), 990_000)],
        ..plan.clone()
    };
    let mut squeezed = built(&smaller, 10);
    squeezed.fee = original.fee;
    assert!(squeezed.signed_vsize() < original.signed_vsize());
    assert!(!outbids(&original, &squeezed));
    // The replacement pays the same payments; one that drops a payment does not.
    assert!(built(&plan, 50).pays_as(&original));
    let tiny = Plan {
        payments: vec![pay(p2wpkh(3), 400_000), pay(p2wpkh(4), 12_000)],
        ..plan
    };
    assert!(!built(&tiny, 50).pays_as(&built(&tiny, 2)));
}

#[test]
fn stuck_plans_are_bumped_by_a_quarter_at_least_up_to_the_ceiling() {
    let rate = FeeRate;
    // An unmoved market: a quarter more each time, up to twice the original rate, then none.
    assert_eq!(bump_fee_rate(rate(2), rate(2), rate(2)), Some(rate(3)));
    assert_eq!(
        bump_fee_rate(rate(100), rate(50), rate(100)),
        Some(rate(125))
    );
    assert_eq!(
        bump_fee_rate(rate(160), rate(50), rate(100)),
        Some(rate(200))
    );
    assert_eq!(bump_fee_rate(rate(200), rate(50), rate(100)), None);
    // A market that moved: its rate, and a ceiling twice it.
    assert_eq!(
        bump_fee_rate(rate(100), rate(300), rate(100)),
        Some(rate(300))
    );
    assert_eq!(
        bump_fee_rate(rate(500), rate(300), rate(100)),
        Some(rate(600))
    );
    // Never above the protocol's cap.
    assert_eq!(
        bump_fee_rate(rate(999), rate(800), rate(2)),
        Some(MAX_FEE_RATE)
    );
    assert_eq!(bump_fee_rate(MAX_FEE_RATE, rate(2_000), rate(2)), None);
}

#[test]
fn a_key_path_input_weighs_what_the_scheduler_assumes() {
    let one = Plan {
        key: group(),
        inputs: vec![input(1, OutputKind::External, 100_000)],
        payments: vec![],
        change: Some(group()),
        fee_rate: FeeRate(1),
        replaces: None,
    };
    let two = Plan {
        inputs: vec![
            input(1, OutputKind::External, 100_000),
            input(2, OutputKind::Change, 100_000),
        ],
        ..one.clone()
    };
    let signed = |plan: &Plan| sign(plan, &built(plan, 1)).weight().to_wu();
    assert_eq!(signed(&two) - signed(&one), KEY_PATH_INPUT_WEIGHT);
}

#[test]
fn a_fixed_plan_gives_a_fixed_transaction() {
    let plan = Plan {
        key: group(),
        inputs: vec![
            input(1, OutputKind::External, 150_000),
            input(2, OutputKind::Branch, 60_000),
            input(3, OutputKind::Change, 40_000),
        ],
        payments: vec![pay(p2wpkh(7), 120_000), pay(p2wpkh(8), 30_000)],
        change: Some(group()),
        fee_rate: FeeRate(1),
        replaces: None,
    };
    let built = built(&plan, 3);
    assert_eq!(
        built.transaction.compute_txid().to_string(),
        "19078d0078bc949320f86b43d0cf766b8814b7a2d4f07e6c0c8bb192deec77b3"
    );
}

proptest! {
    #[test]
    fn built_transactions_conserve_value_and_their_fee_matches_the_signed_size(
        amounts in prop::collection::vec(20_000u64..5_000_000, 1..6),
        payments in prop::collection::vec((payment_address(), 10_000u64..1_000_000), 0..6),
        kinds in prop::collection::vec(0u8..3, 6),
        rate in 1u64..200,
        with_change in any::<bool>(),
    ) {
        let inputs: Vec<PlanInput> = amounts
            .iter()
            .zip(&kinds)
            .enumerate()
            .map(|(i, (amount, kind))| {
                let kind = [OutputKind::External, OutputKind::Branch, OutputKind::Change][usize::from(*kind)];
                input(u8::try_from(i).unwrap(), kind, *amount)
            })
            .collect();
        let total: u64 = amounts.iter().sum();
        let payments: Vec<Payment> = payments
            .into_iter()
            .scan(0u64, |spent, (address, amount)| {
                *spent += amount;
                Some((*spent <= total).then(|| pay(address, amount)))
            })
            .flatten()
            .collect();
        let plan = Plan { key: group(), inputs, payments, change: with_change.then(group), fee_rate: FeeRate(rate), replaces: None };
        match build(&plan).unwrap() {
            Built::Transaction(built) => {
                let signed = sign(&plan, &built);
                prop_assert_eq!(total, sum_outputs(&signed) + built.fee.to_sat());
                prop_assert!(signed.output.iter().all(|o| o.value.to_sat() >= DUST.to_sat()));
                let exact = signed.vsize() as u64 * rate;
                prop_assert!(built.fee.to_sat() >= exact);
                if built.change.is_some() {
                    // Change absorbs everything: the fee is exactly rate x vsize.
                    prop_assert_eq!(built.fee.to_sat(), exact);
                } else if with_change {
                    // Only what was too little for a change output goes to the miners.
                    prop_assert!(built.fee.to_sat() - exact < DUST.to_sat());
                }
                prop_assert_eq!(built.transaction.version, bitcoin::transaction::Version::TWO);
                let paid = built.payments.iter().filter(|o| matches!(o, PaymentOutcome::Paid { .. })).count();
                prop_assert_eq!(signed.output.len(), paid + usize::from(built.change.is_some()));
            }
            Built::NoTransaction { payments } => {
                prop_assert!(payments.iter().all(|o| *o == PaymentOutcome::Dropped));
            }
        }
    }
}
