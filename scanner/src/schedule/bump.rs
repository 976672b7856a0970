//! Fee bumping: the replacement (RBF) or the child (CPFP) a stuck plan gets, or why it gets
//! none. Pure and deterministic: every validator asks it at the same Serai block with the same
//! plan and market rate, and gets the same plan with the same id.
//!
//! A replacement is the latest member of a family rebuilt at `bump_fee_rate` (the market rate,
//! at least a quarter above the stuck rate, at most twice the higher of the market and the
//! family's original rate): the same inputs, payments and change, each payment
//! bearing its share of the higher fee. Where that rate would drop a payment below dust or
//! cross a fee cap, the highest rate below it that does neither is taken, if it still outbids
//! the stuck transaction. Its transaction is checked here as the enclave checks it: it pays as
//! the stuck one, outbids it (BIP125), and stays within the protocol's fee caps.
//!
//! A child (`child`) is for what cannot be replaced but has change: a plan paying no one, which
//! spends the stuck transaction's change back to our change address at the rate that lifts the
//! two together (the package a miner scores) to the same `bump_fee_rate`. RBF is the rule
//! whenever it is possible: it costs less (the package pays for one transaction, not two) and
//! its fee is borne by the payments as every plan's is, while a child's is an operating cost.

use bitcoin::hashes::Hash;
use schema::{
    hashes::TransactionId,
    plan::{OutputId, OutputKind, Plan, PlanInput},
    protocol::{bump_fee_rate, outbids, FeeCaps},
    taproot::DerivedKey,
    transaction::{build, Built, BuiltTransaction, FeeRate},
};

/// Why a stuck plan gets no replacement (or, where one was tried, no child either); it stays
/// stuck, counted and alerted on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Held {
    /// Its fee rate is at the ceiling (`MAX_BUMP_FACTOR` times the higher of the market and
    /// the original rate, or `MAX_FEE_RATE`): more fee is not what it lacks.
    AtCeiling,
    /// It funds a branch, whose output the scheduler recognises by its exact amount: a
    /// replacement would change that amount and strand the branch's payments.
    FundsBranch,
    /// It pays no one (an aggregation): its change bears the fee, which the scheduler booked
    /// at the original's rate. It waits for the market to come back.
    PaysNoOne,
    /// No rate above the stuck one keeps every payment above dust, stays within the fee caps
    /// and outbids the stuck transaction.
    NoRate,
    /// The plan yields no transaction (a defect: every plan made does).
    Unbuildable,
    /// It cannot be replaced and has no change of its own key a child could spend.
    NoChange,
    /// A child already pays for it (CPFP): a replacement would evict the child, and one child
    /// is all a family gets.
    ChildPays,
}

impl Held {
    /// Every reason, for a gauge per reason.
    pub const ALL: [Held; 7] = [
        Held::AtCeiling,
        Held::FundsBranch,
        Held::PaysNoOne,
        Held::NoRate,
        Held::Unbuildable,
        Held::NoChange,
        Held::ChildPays,
    ];

    /// The metric label and log word.
    pub fn label(self) -> &'static str {
        match self {
            Held::AtCeiling => "at_ceiling",
            Held::FundsBranch => "funds_branch",
            Held::PaysNoOne => "pays_no_one",
            Held::NoRate => "no_rate",
            Held::Unbuildable => "unbuildable",
            Held::NoChange => "no_change",
            Held::ChildPays => "child_pays",
        }
    }
}

/// The replacement of `stuck` (a family's latest member) when plans are made at `market`.
///
/// # Errors
/// Why it gets none.
pub fn replacement(stuck: &Plan, market: FeeRate, caps: &FeeCaps) -> Result<Plan, Held> {
    if stuck.payments.is_empty() {
        return Err(Held::PaysNoOne);
    }
    let branch = DerivedKey::derive(&stuck.key, OutputKind::Branch)
        .map_err(|_| Held::Unbuildable)?
        .script_pubkey();
    if stuck
        .payments
        .iter()
        .any(|payment| payment.address.script() == branch.as_script())
    {
        return Err(Held::FundsBranch);
    }
    let stuck_built = built(stuck).ok_or(Held::Unbuildable)?;
    let original = stuck
        .replaces
        .map_or(stuck.fee_rate, |replaces| replaces.fee_rate);
    let target = bump_fee_rate(stuck.fee_rate, market, original).ok_or(Held::AtCeiling)?;
    // Keeping every payment and staying within the caps holds up to some rate and not above
    // it (a higher rate only takes more fee): find the highest such rate up to the target.
    let keeps = |rate: u64| -> Option<(Plan, BuiltTransaction)> {
        let plan = stuck.replaced_at(FeeRate(rate));
        let transaction = built(&plan)?;
        (transaction.pays_as(&stuck_built) && caps.check(plan.fee_rate, &transaction).is_ok())
            .then_some((plan, transaction))
    };
    let (mut low, mut high) = (stuck.fee_rate.0, target.0);
    let mut best = None;
    while low < high {
        let middle = high - (high - low) / 2;
        match keeps(middle) {
            Some(found) => {
                best = Some(found);
                low = middle;
            }
            None => high = middle - 1,
        }
    }
    match best {
        Some((plan, transaction)) if outbids(&stuck_built, &transaction) => Ok(plan),
        _ => Err(Held::NoRate),
    }
}

/// The child paying for `stuck` (which no replacement can bump; the caller makes sure it is its
/// family's only member, so that no other member can confirm in its place) when plans are made
/// at `market`: one input, the stuck transaction's change, and no payments; its
/// change returns to the same key. Its fee rate lifts the package (the stuck transaction and
/// the child) to `bump_fee_rate`, or to the highest package rate below that the child's fee
/// caps and its change above dust allow, provided the child still pays more per vbyte than
/// the stuck transaction (otherwise it lifts nothing).
///
/// # Errors
/// Why it gets none.
pub fn child(stuck: &Plan, market: FeeRate, caps: &FeeCaps) -> Result<Plan, Held> {
    let parent = built(stuck).ok_or(Held::Unbuildable)?;
    let (vout, amount) = parent.change.ok_or(Held::NoChange)?;
    // The child is signed by the key its input pays, and its output is claimed in that key's
    // scheduler: change to another key (a rotation's) is not ours to spend here.
    let change = stuck
        .change
        .filter(|change| *change == stuck.key)
        .ok_or(Held::NoChange)?;
    let original = stuck
        .replaces
        .map_or(stuck.fee_rate, |replaces| replaces.fee_rate);
    let target = bump_fee_rate(stuck.fee_rate, market, original).ok_or(Held::AtCeiling)?;
    let at = |rate: u64| Plan {
        key: stuck.key,
        inputs: vec![PlanInput {
            id: OutputId {
                txid: TransactionId(parent.transaction.compute_txid().to_byte_array()),
                vout,
            },
            kind: OutputKind::Change,
            amount,
        }],
        payments: Vec::new(),
        change: Some(change),
        fee_rate: FeeRate(rate),
        replaces: None,
    };
    let keeps = |rate: u64| -> bool {
        built(&at(rate)).is_some_and(|transaction| {
            transaction.change.is_some() && caps.check(FeeRate(rate), &transaction).is_ok()
        })
    };
    // The child's size does not depend on its rate while it keeps its change.
    let child_vsize = built(&at(stuck.fee_rate.0))
        .filter(|transaction| transaction.change.is_some())
        .ok_or(Held::NoRate)?
        .signed_vsize();
    let package = parent.signed_vsize().saturating_add(child_vsize);
    let wanted = target
        .0
        .saturating_mul(package)
        .saturating_sub(parent.fee.to_sat())
        .div_ceil(child_vsize.max(1));
    let (mut low, mut high) = (stuck.fee_rate.0, wanted);
    let mut best = None;
    while low < high {
        let middle = high - (high - low) / 2;
        if keeps(middle) {
            best = Some(middle);
            low = middle;
        } else {
            high = middle - 1;
        }
    }
    best.map(at).ok_or(Held::NoRate)
}

fn built(plan: &Plan) -> Option<BuiltTransaction> {
    match build(plan) {
        Ok(Built::Transaction(built)) => Some(built),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use bitcoin::hashes::Hash;
    use schema::{
        amount::Amount,
        hashes::TransactionId,
        keys::NetworkKey,
        plan::{OutputId, Payment, PaymentAddress, PlanInput, Replaces},
        protocol::{FeeCaps, DUST, MAX_FEE_RATE},
    };

    use super::*;
    use schema::transaction::PaymentOutcome;

    fn key() -> NetworkKey {
        NetworkKey::from_slice(
            &bitcoin::secp256k1::PublicKey::from_secret_key(
                &bitcoin::secp256k1::Secp256k1::new(),
                &bitcoin::secp256k1::SecretKey::from_slice(&[7; 32]).unwrap(),
            )
            .serialize(),
        )
        .unwrap()
    }

    fn payee(byte: u8) -> PaymentAddress {
        PaymentAddress::new(bitcoin::ScriptBuf::new_p2wpkh(
            &bitcoin::WPubkeyHash::from_byte_array([byte; 20]),
        ))
        .unwrap()
    }

    fn plan(input: u64, payments: &[(PaymentAddress, u64)], fee_rate: u64) -> Plan {
        Plan {
            key: key(),
            inputs: vec![PlanInput {
                id: OutputId {
                    txid: TransactionId([1; 32]),
                    vout: 0,
                },
                kind: OutputKind::External,
                amount: Amount::from_sat(input).unwrap(),
            }],
            payments: payments
                .iter()
                .map(|(address, amount)| Payment {
                    address: address.clone(),
                    data: None,
                    amount: Amount::from_sat(*amount).unwrap(),
                })
                .collect(),
            change: Some(key()),
            fee_rate: FeeRate(fee_rate),
            replaces: None,
        }
    }

    #[test]
    fn a_stuck_payment_is_replaced_at_the_market_rate_linked_to_its_original() {
        let stuck = plan(1_000_000, &[(payee(1), 500_000)], 5);
        let replaced = replacement(&stuck, FeeRate(40), &FeeCaps::PROTOCOL).unwrap();
        assert_eq!(replaced.fee_rate, FeeRate(40));
        assert_eq!(
            replaced.replaces,
            Some(Replaces {
                plan: stuck.id(),
                fee_rate: FeeRate(5)
            })
        );
        assert_eq!(replaced.inputs, stuck.inputs);
        assert_eq!(replaced.payments, stuck.payments);
        // A market that has not moved still gets a quarter more, and a replacement of the
        // replacement stays linked to the original.
        let again = replacement(&replaced, FeeRate(40), &FeeCaps::PROTOCOL).unwrap();
        assert_eq!(again.fee_rate, FeeRate(50));
        assert_eq!(again.replaces, replaced.replaces);
        assert!(outbids(&built(&replaced).unwrap(), &built(&again).unwrap()));
        // Up to twice the market (or the original's rate, were it higher), then no more.
        let third = replacement(&again, FeeRate(40), &FeeCaps::PROTOCOL).unwrap();
        assert_eq!(third.fee_rate, FeeRate(62));
        let fourth = replacement(&third, FeeRate(40), &FeeCaps::PROTOCOL).unwrap();
        assert_eq!(fourth.fee_rate, FeeRate(77));
        let last = replacement(&fourth, FeeRate(40), &FeeCaps::PROTOCOL).unwrap();
        assert_eq!(last.fee_rate, FeeRate(80));
        assert_eq!(
            replacement(&last, FeeRate(40), &FeeCaps::PROTOCOL),
            Err(Held::AtCeiling)
        );
    }

    #[test]
    fn a_rate_that_would_drop_a_payment_is_lowered_to_the_highest_that_keeps_it() {
        // 20,000 sat to one payee: at 1,000 sat/vB its fee share would take it below dust.
        let stuck = plan(1_000_000, &[(payee(1), 20_000)], 10);
        let replaced = replacement(&stuck, FeeRate(1_000), &FeeCaps::PROTOCOL).unwrap();
        assert!(replaced.fee_rate > FeeRate(10) && replaced.fee_rate < FeeRate(1_000));
        let kept = built(&replaced).unwrap();
        assert!(kept.pays_as(&built(&stuck).unwrap()));
        // One sat/vB more would drop the payment.
        let over = built(&stuck.replaced_at(FeeRate(replaced.fee_rate.0 + 1))).unwrap();
        assert!(!over.pays_as(&built(&stuck).unwrap()));
    }

    /// A family's member is recognised from the original plan and the transaction alone, at
    /// any rate, whether or not the node knew that replacement; anything else is not one.
    #[test]
    fn a_members_transaction_is_recognised_from_the_original_alone() {
        use crate::chain::bitcoin_core::{chain_transaction, family_member};
        let original = plan(1_000_000, &[(payee(1), 500_000), (payee(2), 200_000)], 5);
        let seen = |plan: &Plan| chain_transaction(&built(plan).unwrap().transaction).unwrap();
        for member in [
            original.clone(),
            original.replaced_at(FeeRate(6)),
            original.replaced_at(FeeRate(23)),
            replacement(&original, FeeRate(40), &FeeCaps::PROTOCOL).unwrap(),
        ] {
            assert_eq!(
                family_member(&original, &seen(&member)).unwrap(),
                Some(member.id())
            );
        }
        // The same inputs paying someone else, or a member's outputs a satoshi off: conflicts.
        let diverted = Plan {
            payments: vec![Payment {
                address: payee(3),
                data: None,
                amount: Amount::from_sat(700_000).unwrap(),
            }],
            ..original.clone()
        };
        assert_eq!(family_member(&original, &seen(&diverted)).unwrap(), None);
        let mut off = seen(&original.replaced_at(FeeRate(9)));
        off.outputs[0].amount = Amount::from_sat(off.outputs[0].amount.to_sat() - 1).unwrap();
        assert_eq!(family_member(&original, &off).unwrap(), None);
    }

    #[test]
    fn what_cannot_be_replaced_says_why() {
        let at_cap = plan(100_000_000, &[(payee(1), 50_000_000)], MAX_FEE_RATE.0);
        assert_eq!(
            replacement(&at_cap, FeeRate(2_000), &FeeCaps::PROTOCOL),
            Err(Held::AtCeiling)
        );
        let aggregation = plan(1_000_000, &[], 5);
        assert_eq!(
            replacement(&aggregation, FeeRate(40), &FeeCaps::PROTOCOL),
            Err(Held::PaysNoOne)
        );
        let branch = PaymentAddress::new(
            DerivedKey::derive(&key(), OutputKind::Branch)
                .unwrap()
                .script_pubkey(),
        )
        .unwrap();
        let funds_branch = plan(1_000_000, &[(payee(1), 100_000), (branch, 300_000)], 5);
        assert_eq!(
            replacement(&funds_branch, FeeRate(40), &FeeCaps::PROTOCOL),
            Err(Held::FundsBranch)
        );
        // Paid exactly dust at its rate: no higher rate keeps the payment.
        let fee = built(&plan(1_000_000, &[(payee(1), 50_000)], 5))
            .unwrap()
            .fee;
        let at_dust = plan(1_000_000, &[(payee(1), DUST.to_sat() + fee.to_sat())], 5);
        assert!(matches!(
            built(&at_dust).unwrap().payments[..],
            [PaymentOutcome::Paid { .. }]
        ));
        assert_eq!(
            replacement(&at_dust, FeeRate(40), &FeeCaps::PROTOCOL),
            Err(Held::NoRate)
        );
    }

    /// The package a child and its parent make: their fees over their sizes, in sat/vB.
    fn package_rate(parent: &Plan, child: &Plan) -> f64 {
        let (parent, child) = (built(parent).unwrap(), built(child).unwrap());
        (parent.fee.to_sat() + child.fee.to_sat()) as f64
            / (parent.signed_vsize() + child.signed_vsize()) as f64
    }

    #[test]
    fn a_child_spends_the_stuck_change_and_lifts_the_package_to_the_bump_rate() {
        // Paid at dust: no replacement keeps the payment, so a child pays for it.
        let fee = built(&plan(1_000_000, &[(payee(1), 50_000)], 5))
            .unwrap()
            .fee;
        let stuck = plan(1_000_000, &[(payee(1), DUST.to_sat() + fee.to_sat())], 5);
        assert_eq!(
            replacement(&stuck, FeeRate(40), &FeeCaps::PROTOCOL),
            Err(Held::NoRate)
        );
        let paid_for = child(&stuck, FeeRate(40), &FeeCaps::PROTOCOL).unwrap();
        let parent = built(&stuck).unwrap();
        let (vout, change) = parent.change.unwrap();
        assert_eq!(
            paid_for.inputs,
            vec![PlanInput {
                id: OutputId {
                    txid: TransactionId(parent.transaction.compute_txid().to_byte_array()),
                    vout,
                },
                kind: OutputKind::Change,
                amount: change,
            }]
        );
        assert!(paid_for.payments.is_empty());
        assert_eq!(paid_for.change, Some(key()));
        assert_eq!(paid_for.replaces, None);
        // The package pays the bump rate (40: the market, above a quarter more than 5), to
        // within the child's rounding up to a whole sat/vB.
        let lifted = package_rate(&stuck, &paid_for);
        assert!((40.0..41.0).contains(&lifted), "{lifted}");
        assert!(paid_for.fee_rate > FeeRate(40));
        // Deterministic: every validator makes the same child.
        assert_eq!(
            child(&stuck, FeeRate(40), &FeeCaps::PROTOCOL).unwrap().id(),
            paid_for.id()
        );
    }

    #[test]
    fn a_child_is_cut_to_its_fee_share_and_refused_when_it_would_lift_nothing() {
        // 30,000 sat of change: its 5% share (1,500 sat) over ~110 vB cannot lift the package
        // to 40, but lifts it as far as the share allows.
        let small = plan(1_000_000, &[(payee(1), 965_000)], 5);
        let (_, change) = built(&small).unwrap().change.unwrap();
        assert!(change.to_sat() < 40_000, "{change:?}");
        let cut = child(&small, FeeRate(40), &FeeCaps::PROTOCOL).unwrap();
        let cut_built = built(&cut).unwrap();
        assert!(FeeCaps::PROTOCOL.check(cut.fee_rate, &cut_built).is_ok());
        assert!(FeeCaps::PROTOCOL
            .check(
                FeeRate(cut.fee_rate.0 + 1),
                &built(&Plan {
                    fee_rate: FeeRate(cut.fee_rate.0 + 1),
                    ..cut.clone()
                })
                .unwrap()
            )
            .is_err());
        let lifted = package_rate(&small, &cut);
        assert!(lifted > 5.0 && lifted < 40.0, "{lifted}");
        // Change 50 sat above dust (payments bear the fee): a child at any rate above the
        // stuck one leaves less.
        let no_room = plan(1_000_000, &[(payee(1), 1_000_000 - DUST.to_sat() - 50)], 2);
        assert_eq!(
            built(&no_room).unwrap().change.unwrap().1.to_sat(),
            DUST.to_sat() + 50
        );
        assert_eq!(
            child(&no_room, FeeRate(40), &FeeCaps::PROTOCOL),
            Err(Held::NoRate)
        );
        // Change to another key (a rotation's): not this key's to spend.
        let other = NetworkKey::from_slice(
            &bitcoin::secp256k1::PublicKey::from_secret_key(
                &bitcoin::secp256k1::Secp256k1::new(),
                &bitcoin::secp256k1::SecretKey::from_slice(&[8; 32]).unwrap(),
            )
            .serialize(),
        )
        .unwrap();
        let elsewhere = Plan {
            change: Some(other),
            ..small.clone()
        };
        assert!(built(&elsewhere).unwrap().change.is_some());
        assert_eq!(
            child(&elsewhere, FeeRate(40), &FeeCaps::PROTOCOL),
            Err(Held::NoChange)
        );
        // No change at all: nothing for a child to spend.
        let whole = plan(1_000_000, &[(payee(1), 999_000)], 5);
        assert_eq!(built(&whole).unwrap().change, None);
        assert_eq!(
            child(&whole, FeeRate(40), &FeeCaps::PROTOCOL),
            Err(Held::NoChange)
        );
    }
}
