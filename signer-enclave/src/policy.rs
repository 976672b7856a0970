//! The enclave's signing policy: pure functions that return a verdict, `Approve` with what
//! must be persisted before anything leaves the enclave, or `Refuse` with the reason. No I/O:
//! what the policy needs to know of the past comes through `PolicyHistory`, which the
//! enclave's database implements, and the caller commits an approval's records atomically
//! before it lets a preprocess out.
//!
//! A plan is signed only if, in this order: the plan hashes to the id it is signed under, for
//! the key it is signed with; that id is in an attested acknowledgement for that key; this
//! attempt was never preprocessed; the plan's fee rate is under its cap; the enclave's own
//! builder yields a transaction from the plan; the fee is under its share cap; and no input
//! was signed into a different plan family. A plan's family is the plan itself, or for a
//! fee-bumping replacement the original plan it names (`Plan::replaces`): a replacement may
//! reuse the inputs of its family only, and only if it is that original at a higher fee rate
//! (so the same inputs, payments and change, which its id proves), the original was
//! acknowledged too, it pays the same payments, and it outbids the original as BIP125
//! demands. Every member of a family spends the same inputs, so at most one is ever final. The caps are the protocol's (`schema::protocol`), the
//! ones every scanner's scheduler plans within, so an honest plan is never refused. A Batch is
//! signed only if it is for the enclave's network; the session names the batch; this attempt
//! was never preprocessed; and either the same content was preprocessed under its id before,
//! or its id is the next one and at most `BATCH_WINDOW` past the last one Serai included.

use bitcoin::{
    hashes::{sha256, Hash},
    key::XOnlyPublicKey,
    secp256k1::{schnorr, Message, Secp256k1},
};
use schema::{
    amount::Amount,
    batch::Batch,
    hashes::PlanId,
    ids::{BatchId, NetworkId},
    keys::NetworkKey,
    messages::{
        coordinator::{Attestation, PlansAcknowledged},
        substrate::inclusion_message,
    },
    plan::{OutputId, Plan},
    protocol::{outbids, FeeCapExceeded, FeeCaps, BATCH_WINDOW},
    sign_id::{BatchSignId, PlanSignId},
    transaction::{build, Built, BuiltTransaction, FeeRate},
};

/// The enclave's history could not be read. The policy fails closed: it refuses.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("policy history unavailable: {0}")]
pub struct HistoryError(pub String);

/// What the policy needs to know of the enclave's past decisions.
pub trait PolicyHistory {
    /// Whether an attested acknowledgement named this plan for this key.
    fn acknowledged(&self, key: &NetworkKey, plan: &PlanId) -> Result<bool, HistoryError>;
    /// The plan family (`Plan::family`) an output was signed into, if any.
    fn input_signed_into(&self, input: &OutputId) -> Result<Option<PlanId>, HistoryError>;
    /// Whether this plan signing attempt already produced a preprocess.
    fn plan_attempt_preprocessed(&self, id: &PlanSignId) -> Result<bool, HistoryError>;
    /// Whether this batch signing attempt already produced a preprocess.
    fn batch_attempt_preprocessed(&self, id: &BatchSignId) -> Result<bool, HistoryError>;
    /// The hash of the batch message signed for this network and batch id, if any.
    fn batch_signed(
        &self,
        network: NetworkId,
        batch: BatchId,
    ) -> Result<Option<[u8; 32]>, HistoryError>;
    /// The id of the next Batch to sign for this network: one after the highest signed (0
    /// before any).
    fn next_batch(&self, network: NetworkId) -> Result<BatchId, HistoryError>;
    /// One past the highest Batch id of this network Serai is attested to have included (0
    /// before any): the start of the window of ids new content is preprocessed for.
    fn batch_floor(&self, network: NetworkId) -> Result<BatchId, HistoryError>;
}

/// The answer of a history query, or a refusal when the history cannot be read.
macro_rules! ask {
    ($query:expr) => {
        match $query {
            Ok(answer) => answer,
            Err(HistoryError(error)) => return Decision::Refuse(Refusal::HistoryUnavailable(error)),
        }
    };
}

/// Why the enclave refuses. Each maps to a `RefusalReason` of `signer.capnp` (see
/// `enclave`), which labels the refusals metric.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// A coordinator attestation (of plans acknowledged, or of a Batch included) does not
    /// verify under the coordinator key.
    AttestationInvalid,
    /// The plan does not hash to the id (or key) it is to be signed under.
    PlanIdMismatch {
        /// The id the request named.
        claimed: PlanId,
        /// The id the plan hashes to.
        actual: PlanId,
    },
    /// The plan id is in no attested acknowledgement for its key.
    PlanNotAcknowledged(PlanId),
    /// This signing attempt already produced a preprocess.
    AttemptAlreadyPreprocessed,
    /// The fee rate is above the cap.
    FeeRateTooHigh {
        /// Asked.
        rate: FeeRate,
        /// Allowed.
        cap: FeeRate,
    },
    /// The fee is above its share cap.
    FeeShareTooHigh {
        /// The fee.
        fee: Amount,
        /// The inputs' value.
        inputs: Amount,
    },
    /// An input was already signed into a different plan family.
    InputAlreadySigned {
        /// The input.
        input: OutputId,
        /// The family it was signed into.
        plan: PlanId,
    },
    /// A replacement is not the plan it names at another fee rate (other inputs, payments or
    /// change, or another fee rate named for the original).
    ReplacementMismatch {
        /// The original the replacement names.
        named: PlanId,
        /// The id the replacement at the named fee rate hashes to.
        actual: PlanId,
    },
    /// A replacement does not outbid its original (BIP125: a higher fee rate, and the fee
    /// plus the incremental relay fee for its size).
    ReplacementUnderbids {
        /// The original's fee.
        replaced: Amount,
        /// The replacement's fee.
        replacement: Amount,
    },
    /// At the replacement's higher fee, a payment the original pays falls below dust and would
    /// not be paid.
    ReplacementDropsPayment,
    /// No transaction can be built from the plan.
    Unbuildable(String),
    /// The batch session does not name this batch.
    BatchMismatch,
    /// A different batch with this batch id was already signed.
    BatchIdReused(BatchId),
    /// A Batch for another network than the enclave's.
    WrongNetwork(NetworkId),
    /// A new Batch whose id is not the next one to sign.
    BatchOutOfOrder {
        /// The id asked.
        got: BatchId,
        /// The next id to sign.
        expected: BatchId,
    },
    /// A new Batch more than `BATCH_WINDOW` ids past the last one included.
    BatchAhead {
        /// The id asked.
        got: BatchId,
        /// One past the last id included.
        floor: BatchId,
    },
    /// The enclave's history could not be read.
    HistoryUnavailable(String),
}

/// A verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision<A> {
    /// Go ahead, after persisting what the approval says.
    Approve(A),
    /// Do nothing, and report why.
    Refuse(Refusal),
}

/// What a plan approval lets the enclave sign, and what it must persist first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanApproval {
    /// The transaction the enclave built itself; its sighashes are what gets signed.
    pub built: BuiltTransaction,
    /// The attempt marker to persist before the preprocess leaves.
    pub marker: PlanSignId,
    /// The inputs to record as signed into `family`.
    pub inputs: Vec<OutputId>,
    /// The plan's family: the plan itself, or the original a replacement replaces.
    pub family: PlanId,
}

/// What a batch approval lets the enclave sign, and what it must persist first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchApproval {
    /// The bytes to sign (`Batch::message`).
    pub message: Vec<u8>,
    /// Their hash, to record against the batch id.
    pub message_hash: [u8; 32],
    /// The attempt marker to persist before the preprocess leaves.
    pub marker: BatchSignId,
}

/// Checks an acknowledgement's attestation: the coordinator's BIP340 signature over
/// `PlansAcknowledged::attestation_message` for our network.
pub fn acknowledgement(
    acknowledged: &PlansAcknowledged,
    network: NetworkId,
    coordinator: &XOnlyPublicKey,
) -> Decision<()> {
    let digest = PlansAcknowledged::attestation_message(
        network,
        &acknowledged.key,
        acknowledged.block,
        &acknowledged.plans,
    );
    attested(digest, &acknowledged.attestation, coordinator)
}

/// Decides whether to take `batch` as included by Serai: the coordinator attests it (the
/// network is the enclave's). The Batch's own signature is not what counts: a compromised
/// scanner can confirm a key pair it generated alone, knows that key, and could sign any
/// Batch under it; and a validator new in a set holds no key the earlier Batches were signed
/// with.
pub fn inclusion(
    batch: &Batch,
    attestation: &Attestation,
    network: NetworkId,
    coordinator: &XOnlyPublicKey,
) -> Decision<()> {
    if batch.network != network {
        return Decision::Refuse(Refusal::WrongNetwork(batch.network));
    }
    attested(inclusion_message(batch), attestation, coordinator)
}

/// Whether `attestation` is the coordinator's BIP340 signature over `digest`.
pub fn attested(
    digest: [u8; 32],
    attestation: &Attestation,
    coordinator: &XOnlyPublicKey,
) -> Decision<()> {
    let verified = schnorr::Signature::from_slice(&attestation.0)
        .and_then(|signature| {
            Secp256k1::verification_only().verify_schnorr(
                &signature,
                &Message::from_digest(digest),
                coordinator,
            )
        })
        .is_ok();
    if verified {
        Decision::Approve(())
    } else {
        Decision::Refuse(Refusal::AttestationInvalid)
    }
}

/// Decides whether to preprocess a plan signing attempt.
pub fn plan_preprocess(
    history: &impl PolicyHistory,
    caps: FeeCaps,
    id: &PlanSignId,
    plan: &Plan,
) -> Decision<PlanApproval> {
    let actual = plan.id();
    if actual != id.id || plan.key != id.key {
        return Decision::Refuse(Refusal::PlanIdMismatch {
            claimed: id.id,
            actual,
        });
    }
    if !ask!(history.acknowledged(&plan.key, &actual)) {
        return Decision::Refuse(Refusal::PlanNotAcknowledged(actual));
    }
    if ask!(history.plan_attempt_preprocessed(id)) {
        return Decision::Refuse(Refusal::AttemptAlreadyPreprocessed);
    }
    if let Err(FeeCapExceeded::Rate { rate, cap }) = caps.check_rate(plan.fee_rate) {
        return Decision::Refuse(Refusal::FeeRateTooHigh { rate, cap });
    }
    let built = match build(plan) {
        Ok(Built::Transaction(built)) => built,
        Ok(Built::NoTransaction { .. }) => {
            return Decision::Refuse(Refusal::Unbuildable("no transaction".into()))
        }
        Err(error) => return Decision::Refuse(Refusal::Unbuildable(error.to_string())),
    };
    if let Err(FeeCapExceeded::Share { fee, inputs }) = caps.check_share(&built) {
        return Decision::Refuse(Refusal::FeeShareTooHigh { fee, inputs });
    }
    if plan.replaces.is_some() {
        if let Err(refusal) = replacement(history, plan, &built) {
            return Decision::Refuse(refusal);
        }
    }
    let family = plan.family();
    for input in &plan.inputs {
        if let Some(other) = ask!(history.input_signed_into(&input.id)) {
            if other != family {
                return Decision::Refuse(Refusal::InputAlreadySigned {
                    input: input.id,
                    plan: other,
                });
            }
        }
    }
    Decision::Approve(PlanApproval {
        built,
        marker: *id,
        inputs: plan.inputs.iter().map(|input| input.id).collect(),
        family,
    })
}

/// Checks a replacement (`plan.replaces` is set) against the original it names: the plan at
/// the named fee rate is that original (same inputs, payments and change), which was
/// acknowledged too; its transaction pays the same payments; and it outbids the original's.
/// Whatever the fee, the replacement is under the caps like any plan, and since one family's
/// transactions all spend the same inputs, only one fee is ever paid: the caps bound it.
fn replacement(
    history: &impl PolicyHistory,
    plan: &Plan,
    built: &BuiltTransaction,
) -> Result<(), Refusal> {
    let original = plan.original();
    let actual = original.id();
    let named = plan.family();
    if actual != named {
        return Err(Refusal::ReplacementMismatch { named, actual });
    }
    match history.acknowledged(&plan.key, &actual) {
        Ok(true) => {}
        Ok(false) => return Err(Refusal::PlanNotAcknowledged(actual)),
        Err(HistoryError(error)) => return Err(Refusal::HistoryUnavailable(error)),
    }
    let original_built = match build(&original) {
        Ok(Built::Transaction(built)) => built,
        Ok(Built::NoTransaction { .. }) => {
            return Err(Refusal::Unbuildable(
                "the original yields no transaction".into(),
            ))
        }
        Err(error) => return Err(Refusal::Unbuildable(error.to_string())),
    };
    if !built.pays_as(&original_built) {
        return Err(Refusal::ReplacementDropsPayment);
    }
    if !outbids(&original_built, built) {
        return Err(Refusal::ReplacementUnderbids {
            replaced: original_built.fee,
            replacement: built.fee,
        });
    }
    Ok(())
}

/// Decides whether to preprocess a batch signing attempt for `network` (the enclave's).
///
/// A Batch's content comes from the scanners, t of which must agree for it to be signed; the
/// enclave cannot check it against the chain. What it holds is order: only its own network, a
/// new Batch only under the next id and at most `BATCH_WINDOW` ids past the last one Serai
/// included (as the coordinator attests, which no scanner alone can), and an id once
/// preprocessed only ever again with the same content. A compromised scanner can make its own
/// enclave claim at most `BATCH_WINDOW` ids with junk; the honest Batches under them are
/// refused there until a later included Batch is shown, and it cannot claim ids further ahead
/// to block them for good.
pub fn batch_preprocess(
    history: &impl PolicyHistory,
    network: NetworkId,
    id: &BatchSignId,
    batch: &Batch,
) -> Decision<BatchApproval> {
    if batch.network != network || id.id.network != network {
        return Decision::Refuse(Refusal::WrongNetwork(batch.network));
    }
    if id.id.batch != batch.id {
        return Decision::Refuse(Refusal::BatchMismatch);
    }
    if ask!(history.batch_attempt_preprocessed(id)) {
        return Decision::Refuse(Refusal::AttemptAlreadyPreprocessed);
    }
    let message = batch.message();
    let message_hash = sha256::Hash::hash(&message).to_byte_array();
    match ask!(history.batch_signed(batch.network, batch.id)) {
        Some(signed) if signed != message_hash => {
            return Decision::Refuse(Refusal::BatchIdReused(batch.id));
        }
        Some(_) => {}
        None => {
            let floor = ask!(history.batch_floor(batch.network));
            let expected = ask!(history.next_batch(batch.network)).max(floor);
            if batch.id != expected {
                return Decision::Refuse(Refusal::BatchOutOfOrder {
                    got: batch.id,
                    expected,
                });
            }
            if batch.id.0 >= floor.0.saturating_add(BATCH_WINDOW) {
                return Decision::Refuse(Refusal::BatchAhead {
                    got: batch.id,
                    floor,
                });
            }
        }
    }
    Decision::Approve(BatchApproval {
        message,
        message_hash,
        marker: *id,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use bitcoin::{key::Keypair, secp256k1::SecretKey};
    use schema::{
        hashes::{BlockHash, SeraiAddress, TransactionId},
        ids::{Attempt, SeraiBlockNumber},
        instruction::{InInstruction, InInstructionWithBalance},
        messages::coordinator::Attestation,
        plan::{OutputKind, Payment, PaymentAddress, PlanInput, Replaces},
        sign_id::BatchSignTarget,
    };

    use super::*;

    /// The enclave database's answers, in memory: the fake this unit test needs.
    #[derive(Default)]
    struct History {
        acknowledged: BTreeSet<(NetworkKey, PlanId)>,
        signed_inputs: BTreeMap<OutputId, PlanId>,
        plan_markers: BTreeSet<PlanSignId>,
        batch_markers: BTreeSet<BatchSignId>,
        batches: BTreeMap<(NetworkId, BatchId), [u8; 32]>,
        floors: BTreeMap<NetworkId, BatchId>,
    }

    impl PolicyHistory for History {
        fn acknowledged(&self, key: &NetworkKey, plan: &PlanId) -> Result<bool, HistoryError> {
            Ok(self.acknowledged.contains(&(*key, *plan)))
        }
        fn input_signed_into(&self, input: &OutputId) -> Result<Option<PlanId>, HistoryError> {
            Ok(self.signed_inputs.get(input).copied())
        }
        fn plan_attempt_preprocessed(&self, id: &PlanSignId) -> Result<bool, HistoryError> {
            Ok(self.plan_markers.contains(id))
        }
        fn batch_attempt_preprocessed(&self, id: &BatchSignId) -> Result<bool, HistoryError> {
            Ok(self.batch_markers.contains(id))
        }
        fn batch_signed(
            &self,
            network: NetworkId,
            batch: BatchId,
        ) -> Result<Option<[u8; 32]>, HistoryError> {
            Ok(self.batches.get(&(network, batch)).copied())
        }
        fn next_batch(&self, network: NetworkId) -> Result<BatchId, HistoryError> {
            Ok(self
                .batches
                .keys()
                .filter(|(of, _)| *of == network)
                .map(|(_, id)| BatchId(id.0 + 1))
                .max()
                .unwrap_or(BatchId(0)))
        }
        fn batch_floor(&self, network: NetworkId) -> Result<BatchId, HistoryError> {
            Ok(self.floors.get(&network).copied().unwrap_or(BatchId(0)))
        }
    }

    /// A history that cannot be read.
    struct Broken;

    impl PolicyHistory for Broken {
        fn acknowledged(&self, _: &NetworkKey, _: &PlanId) -> Result<bool, HistoryError> {
            Err(HistoryError("disk".into()))
        }
        fn input_signed_into(&self, _: &OutputId) -> Result<Option<PlanId>, HistoryError> {
            Err(HistoryError("disk".into()))
        }
        fn plan_attempt_preprocessed(&self, _: &PlanSignId) -> Result<bool, HistoryError> {
            Err(HistoryError("disk".into()))
        }
        fn batch_attempt_preprocessed(&self, _: &BatchSignId) -> Result<bool, HistoryError> {
            Err(HistoryError("disk".into()))
        }
        fn batch_signed(&self, _: NetworkId, _: BatchId) -> Result<Option<[u8; 32]>, HistoryError> {
            Err(HistoryError("disk".into()))
        }
        fn next_batch(&self, _: NetworkId) -> Result<BatchId, HistoryError> {
            Err(HistoryError("disk".into()))
        }
        fn batch_floor(&self, _: NetworkId) -> Result<BatchId, HistoryError> {
            Err(HistoryError("disk".into()))
        }
    }

    #[test]
    fn an_unreadable_history_fails_closed() {
        let plan = plan_paying(500_000);
        assert_eq!(
            refusal(plan_preprocess(&Broken, CAPS, &sign_id(&plan, 0), &plan)),
            Refusal::HistoryUnavailable("disk".into())
        );
        let id = batch_sign_id();
        assert_eq!(
            refusal(batch_preprocess(
                &Broken,
                NetworkId::Bitcoin,
                &id,
                &batch(50_000)
            )),
            Refusal::HistoryUnavailable("disk".into())
        );
    }

    const CAPS: FeeCaps = FeeCaps {
        max_fee_rate: FeeRate(100),
        max_fee_share_basis_points: 500,
    };

    fn key(byte: u8) -> NetworkKey {
        let secret = SecretKey::from_slice(&[byte; 32]).unwrap();
        NetworkKey::from(secret.public_key(&Secp256k1::new()))
    }

    fn plan_paying(payment: u64) -> Plan {
        Plan {
            key: key(1),
            inputs: vec![PlanInput {
                id: OutputId {
                    txid: TransactionId([9; 32]),
                    vout: 1,
                },
                kind: OutputKind::External,
                amount: Amount::from_sat(1_000_000).unwrap(),
            }],
            payments: vec![Payment {
                address: PaymentAddress::from_bytes(&[&[0x00, 0x14][..], &[5; 20]].concat())
                    .unwrap(),
                data: None,
                amount: Amount::from_sat(payment).unwrap(),
            }],
            change: Some(key(1)),
            fee_rate: FeeRate(10),
            replaces: None,
        }
    }

    /// `plan` at another fee rate (another plan, with its own id).
    fn at(plan: &Plan, rate: u64) -> Plan {
        Plan {
            fee_rate: FeeRate(rate),
            ..plan.clone()
        }
    }

    fn sign_id(plan: &Plan, attempt: u32) -> PlanSignId {
        PlanSignId {
            key: plan.key,
            id: plan.id(),
            attempt: Attempt(attempt),
        }
    }

    fn acknowledging(plan: &Plan) -> History {
        let mut history = History::default();
        history.acknowledged.insert((plan.key, plan.id()));
        history
    }

    fn refusal<A: core::fmt::Debug>(decision: Decision<A>) -> Refusal {
        match decision {
            Decision::Refuse(refusal) => refusal,
            Decision::Approve(approval) => panic!("approved: {approval:?}"),
        }
    }

    #[test]
    fn an_acknowledged_plan_within_caps_is_approved_with_what_to_persist() {
        let plan = plan_paying(500_000);
        let id = sign_id(&plan, 0);
        let Decision::Approve(approval) = plan_preprocess(&acknowledging(&plan), CAPS, &id, &plan)
        else {
            panic!("refused");
        };
        assert_eq!(approval.marker, id);
        assert_eq!(approval.inputs, vec![plan.inputs[0].id]);
        assert_eq!(
            approval.built,
            match build(&plan).unwrap() {
                Built::Transaction(built) => built,
                Built::NoTransaction { .. } => panic!(),
            }
        );
    }

    #[test]
    fn every_rule_refuses_on_its_own() {
        let plan = plan_paying(500_000);
        let id = sign_id(&plan, 0);

        // Not acknowledged.
        assert_eq!(
            refusal(plan_preprocess(&History::default(), CAPS, &id, &plan)),
            Refusal::PlanNotAcknowledged(plan.id())
        );

        // The content does not hash to the id: a changed payment under the old id.
        let history = acknowledging(&plan);
        let altered = Plan {
            payments: vec![Payment {
                amount: Amount::from_sat(900_000).unwrap(),
                ..plan.payments[0].clone()
            }],
            ..plan.clone()
        };
        assert!(matches!(
            refusal(plan_preprocess(&history, CAPS, &id, &altered)),
            Refusal::PlanIdMismatch { .. }
        ));
        // The right id under another key.
        let other_key = PlanSignId { key: key(2), ..id };
        assert!(matches!(
            refusal(plan_preprocess(&history, CAPS, &other_key, &plan)),
            Refusal::PlanIdMismatch { .. }
        ));

        // Preprocessed before.
        let mut history = acknowledging(&plan);
        history.plan_markers.insert(id);
        assert_eq!(
            refusal(plan_preprocess(&history, CAPS, &id, &plan)),
            Refusal::AttemptAlreadyPreprocessed
        );
        // A new attempt is fine.
        assert!(matches!(
            plan_preprocess(&history, CAPS, &sign_id(&plan, 1), &plan),
            Decision::Approve(_)
        ));

        // Fee rate above the cap.
        let expensive = at(&plan, 101);
        let history = acknowledging(&expensive);
        assert_eq!(
            refusal(plan_preprocess(
                &history,
                CAPS,
                &sign_id(&expensive, 0),
                &expensive
            )),
            Refusal::FeeRateTooHigh {
                rate: FeeRate(101),
                cap: FeeRate(100)
            }
        );

        // Fee share above the cap: 100 sat/vB on 1,000,000 sat is 1.7%; cap it at 1%.
        let tight = FeeCaps {
            max_fee_share_basis_points: 100,
            ..CAPS
        };
        let at_cap = at(&plan, 100);
        let history = acknowledging(&at_cap);
        let id_at_cap = sign_id(&at_cap, 0);
        assert!(matches!(
            plan_preprocess(&history, CAPS, &id_at_cap, &at_cap),
            Decision::Approve(_)
        ));
        assert!(matches!(
            refusal(plan_preprocess(&history, tight, &id_at_cap, &at_cap)),
            Refusal::FeeShareTooHigh { .. }
        ));

        // The same plan at another fee rate is another plan: its own acknowledgement is needed.
        let history = acknowledging(&plan);
        let cheaper = at(&plan, 9);
        assert_ne!(cheaper.id(), plan.id());
        assert!(matches!(
            refusal(plan_preprocess(&history, CAPS, &id, &cheaper)),
            Refusal::PlanIdMismatch { .. }
        ));
        assert_eq!(
            refusal(plan_preprocess(
                &history,
                CAPS,
                &sign_id(&cheaper, 0),
                &cheaper
            )),
            Refusal::PlanNotAcknowledged(cheaper.id())
        );

        // An input already signed into another plan; the same plan again is fine.
        let mut history = acknowledging(&plan);
        history
            .signed_inputs
            .insert(plan.inputs[0].id, PlanId([7; 32]));
        assert!(matches!(
            refusal(plan_preprocess(&history, CAPS, &id, &plan)),
            Refusal::InputAlreadySigned { .. }
        ));
        history.signed_inputs.insert(plan.inputs[0].id, plan.id());
        assert!(matches!(
            plan_preprocess(&history, CAPS, &id, &plan),
            Decision::Approve(_)
        ));

        // Payments above the inputs: nothing can be built.
        let overspent = plan_paying(2_000_000);
        let history = acknowledging(&overspent);
        assert!(matches!(
            refusal(plan_preprocess(
                &history,
                CAPS,
                &sign_id(&overspent, 0),
                &overspent
            )),
            Refusal::Unbuildable(_)
        ));
    }

    /// The verdict on the first attempt of `plan`, in a history in which `acknowledged` are
    /// acknowledged and `signed`'s inputs were signed into its family.
    fn verdict(signed: &Plan, acknowledged: &[&Plan], plan: &Plan) -> Decision<PlanApproval> {
        let mut history = History::default();
        for acknowledged in acknowledged {
            history
                .acknowledged
                .insert((acknowledged.key, acknowledged.id()));
        }
        for input in &signed.inputs {
            history.signed_inputs.insert(input.id, signed.family());
        }
        plan_preprocess(&history, CAPS, &sign_id(plan, 0), plan)
    }

    #[test]
    fn a_replacement_reuses_its_familys_inputs_only_paying_the_same_at_a_higher_fee() {
        let original = plan_paying(500_000);
        let bumped = original.replaced_at(FeeRate(20));
        assert_eq!(bumped.family(), original.id());
        assert_eq!(bumped.original(), original);

        // Acknowledged, the original signed: approved, and its inputs recorded to the family.
        let Decision::Approve(approval) = verdict(&original, &[&original, &bumped], &bumped) else {
            panic!("refused");
        };
        assert_eq!(approval.family, original.id());
        // A replacement of the replacement names the same original, and may follow it.
        let again = bumped.replaced_at(FeeRate(30));
        assert_eq!(again.replaces, bumped.replaces);
        assert!(matches!(
            verdict(&bumped, &[&original, &again], &again),
            Decision::Approve(_)
        ));
        // A plan this enclave never signed may be replaced (its inputs are free).
        let mut elsewhere = original.clone();
        elsewhere.inputs[0].id.vout += 1;
        assert!(matches!(
            verdict(&elsewhere, &[&original, &bumped], &bumped),
            Decision::Approve(_)
        ));

        // The same payments but no link: an ordinary plan whose inputs are taken.
        let unlinked = at(&original, 20);
        assert_eq!(
            refusal(verdict(&original, &[&original, &unlinked], &unlinked)),
            Refusal::InputAlreadySigned {
                input: original.inputs[0].id,
                plan: original.id()
            }
        );

        // Not the named original at the named rate: another address, another amount, a
        // misnamed fee rate, or a link naming a replacement rather than the original.
        let mut diverted = bumped.clone();
        diverted.payments[0].address =
            PaymentAddress::from_bytes(&[&[0x00, 0x14][..], &[6; 20]].concat()).unwrap();
        let mut larger = bumped.clone();
        larger.payments[0].amount = Amount::from_sat(600_000).unwrap();
        let mut misnamed = bumped.clone();
        misnamed.replaces = Some(Replaces {
            fee_rate: FeeRate(11),
            ..bumped.replaces.unwrap()
        });
        let chained = Plan {
            replaces: Some(Replaces {
                plan: bumped.id(),
                fee_rate: bumped.fee_rate,
            }),
            fee_rate: FeeRate(30),
            ..original.clone()
        };
        for plan in [&diverted, &larger, &misnamed, &chained] {
            assert!(matches!(
                refusal(verdict(&original, &[&original, &bumped, plan], plan)),
                Refusal::ReplacementMismatch { named, .. } if named == plan.family()
            ));
        }

        // A lower or equal fee rate does not outbid the original.
        for rate in [5, 10] {
            let cheaper = original.replaced_at(FeeRate(rate));
            assert!(matches!(
                refusal(verdict(&original, &[&original, &cheaper], &cheaper)),
                Refusal::ReplacementUnderbids { .. }
            ));
        }

        // A payment the original pays that the higher fee takes below dust.
        let small = Plan {
            payments: vec![
                plan_paying(500_000).payments[0].clone(),
                Payment {
                    amount: Amount::from_sat(12_000).unwrap(),
                    ..plan_paying(0).payments[0].clone()
                },
            ],
            fee_rate: FeeRate(2),
            ..original.clone()
        };
        let shrunk = small.replaced_at(FeeRate(40));
        assert_eq!(
            refusal(verdict(&small, &[&small, &shrunk], &shrunk)),
            Refusal::ReplacementDropsPayment
        );

        // Not acknowledged itself, or its original never acknowledged.
        assert_eq!(
            refusal(verdict(&original, &[&original], &bumped)),
            Refusal::PlanNotAcknowledged(bumped.id())
        );
        assert_eq!(
            refusal(verdict(&original, &[&bumped], &bumped)),
            Refusal::PlanNotAcknowledged(original.id())
        );

        // Over the caps like any plan, whatever it replaces.
        let capped = original.replaced_at(FeeRate(101));
        assert!(matches!(
            refusal(verdict(&original, &[&original, &capped], &capped)),
            Refusal::FeeRateTooHigh { .. }
        ));

        // Its inputs signed into another family: refused.
        let other = Plan {
            payments: vec![],
            ..plan_paying(500_000)
        };
        assert!(matches!(
            refusal(verdict(&other, &[&original, &bumped], &bumped)),
            Refusal::InputAlreadySigned { plan, .. } if plan == other.id()
        ));
    }

    fn attested(secret: [u8; 32], plans: Vec<PlanId>) -> (PlansAcknowledged, XOnlyPublicKey) {
        let secp = Secp256k1::new();
        let keypair = Keypair::from_seckey_slice(&secp, &secret).unwrap();
        let mut acknowledged = PlansAcknowledged {
            block: SeraiBlockNumber(12),
            key: key(1),
            plans,
            attestation: Attestation([0; 64]),
        };
        let digest = PlansAcknowledged::attestation_message(
            NetworkId::Bitcoin,
            &acknowledged.key,
            acknowledged.block,
            &acknowledged.plans,
        );
        let signature = secp.sign_schnorr_no_aux_rand(&Message::from_digest(digest), &keypair);
        acknowledged.attestation = Attestation(*signature.as_ref());
        (acknowledged, keypair.x_only_public_key().0)
    }

    #[test]
    fn only_the_coordinators_attestation_over_exactly_these_plans_is_accepted() {
        let (acknowledged, coordinator) = attested([4; 32], vec![PlanId([1; 32]), PlanId([2; 32])]);
        assert_eq!(
            acknowledgement(&acknowledged, NetworkId::Bitcoin, &coordinator),
            Decision::Approve(())
        );
        // Another network.
        assert_eq!(
            acknowledgement(&acknowledged, NetworkId::Ethereum, &coordinator),
            Decision::Refuse(Refusal::AttestationInvalid)
        );
        // A plan added.
        let mut more = acknowledged.clone();
        more.plans.push(PlanId([3; 32]));
        assert_eq!(
            acknowledgement(&more, NetworkId::Bitcoin, &coordinator),
            Decision::Refuse(Refusal::AttestationInvalid)
        );
        // One flipped bit of the signature.
        let mut flipped = acknowledged.clone();
        flipped.attestation.0[10] ^= 1;
        assert_eq!(
            acknowledgement(&flipped, NetworkId::Bitcoin, &coordinator),
            Decision::Refuse(Refusal::AttestationInvalid)
        );
        // Signed by someone else.
        let (forged, _) = attested([5; 32], acknowledged.plans.clone());
        assert_eq!(
            acknowledgement(&forged, NetworkId::Bitcoin, &coordinator),
            Decision::Refuse(Refusal::AttestationInvalid)
        );
    }

    fn batch(amount: u64) -> Batch {
        Batch {
            network: NetworkId::Bitcoin,
            id: BatchId(0),
            block: BlockHash([8; 32]),
            instructions: vec![InInstructionWithBalance {
                instruction: InInstruction::Transfer {
                    to: SeraiAddress([6; 32]),
                },
                amount: Amount::from_sat(amount).unwrap(),
            }],
        }
    }

    /// Attempt 0 of signing batch 0 of Bitcoin.
    fn batch_sign_id() -> BatchSignId {
        BatchSignId {
            key: schema::keys::BatchKey([2; 32]),
            id: BatchSignTarget {
                network: NetworkId::Bitcoin,
                batch: BatchId(0),
            },
            attempt: Attempt(0),
        }
    }

    #[test]
    fn batches_are_signed_once_per_id() {
        let id = batch_sign_id();
        let mut history = History::default();
        let Decision::Approve(approval) =
            batch_preprocess(&history, NetworkId::Bitcoin, &id, &batch(50_000))
        else {
            panic!("refused");
        };
        assert_eq!(approval.message, batch(50_000).message());
        history
            .batches
            .insert((NetworkId::Bitcoin, BatchId(0)), approval.message_hash);
        history.batch_markers.insert(id);

        // The same attempt again.
        assert_eq!(
            refusal(batch_preprocess(
                &history,
                NetworkId::Bitcoin,
                &id,
                &batch(50_000)
            )),
            Refusal::AttemptAlreadyPreprocessed
        );
        // The same batch, a new attempt: fine.
        let next = BatchSignId {
            attempt: Attempt(1),
            ..id
        };
        assert!(matches!(
            batch_preprocess(&history, NetworkId::Bitcoin, &next, &batch(50_000)),
            Decision::Approve(_)
        ));
        // A different batch under the same id.
        assert_eq!(
            refusal(batch_preprocess(
                &history,
                NetworkId::Bitcoin,
                &next,
                &batch(60_000)
            )),
            Refusal::BatchIdReused(BatchId(0))
        );
        // A session naming another batch.
        let elsewhere = BatchSignId {
            id: BatchSignTarget {
                network: NetworkId::Bitcoin,
                batch: BatchId(4),
            },
            ..next
        };
        assert_eq!(
            refusal(batch_preprocess(
                &history,
                NetworkId::Bitcoin,
                &elsewhere,
                &batch(50_000)
            )),
            Refusal::BatchMismatch
        );
    }

    #[test]
    fn batches_are_signed_in_order_and_for_our_network_only() {
        let history = History::default();
        let ahead = |id: u32| {
            let mut batch = batch(50_000);
            batch.id = BatchId(id);
            let mut sign = batch_sign_id();
            sign.id.batch = BatchId(id);
            (sign, batch)
        };
        // A compromised scanner claiming an id ahead of the next one: refused, nothing claimed.
        let (sign, claim) = ahead(5);
        assert_eq!(
            refusal(batch_preprocess(
                &history,
                NetworkId::Bitcoin,
                &sign,
                &claim
            )),
            Refusal::BatchOutOfOrder {
                got: BatchId(5),
                expected: BatchId(0)
            }
        );
        let (sign, next) = ahead(0);
        assert!(matches!(
            batch_preprocess(&history, NetworkId::Bitcoin, &sign, &next),
            Decision::Approve(_)
        ));
        // Another network's Batch, even under the next id.
        let mut ethereum = next.clone();
        ethereum.network = NetworkId::Ethereum;
        let mut sign_ethereum = sign;
        sign_ethereum.id.network = NetworkId::Ethereum;
        assert_eq!(
            refusal(batch_preprocess(
                &history,
                NetworkId::Bitcoin,
                &sign_ethereum,
                &ethereum
            )),
            Refusal::WrongNetwork(NetworkId::Ethereum)
        );
    }

    #[test]
    fn new_batches_stay_within_the_window_past_the_last_one_known_signed() {
        let mut history = History::default();
        let claim = |history: &mut History, id: u32, amount: u64| {
            let mut batch = batch(amount);
            batch.id = BatchId(id);
            let mut sign = batch_sign_id();
            sign.id.batch = BatchId(id);
            let decision = batch_preprocess(history, NetworkId::Bitcoin, &sign, &batch);
            if let Decision::Approve(approval) = &decision {
                history
                    .batches
                    .insert((NetworkId::Bitcoin, BatchId(id)), approval.message_hash);
                history.batch_markers.insert(sign);
            }
            decision
        };
        // A compromised scanner claims ids one after another with junk: the window's worth.
        for id in 0..BATCH_WINDOW {
            assert!(matches!(claim(&mut history, id, 1), Decision::Approve(_)));
        }
        assert_eq!(
            refusal(claim(&mut history, BATCH_WINDOW, 1)),
            Refusal::BatchAhead {
                got: BatchId(BATCH_WINDOW),
                floor: BatchId(0)
            }
        );
        // Batch 40 known signed (Serai included it): the window moves past it, the ids up to
        // it are others' to sign, and the next new one is 41.
        history.floors.insert(NetworkId::Bitcoin, BatchId(41));
        assert_eq!(
            refusal(claim(&mut history, BATCH_WINDOW, 2)),
            Refusal::BatchOutOfOrder {
                got: BatchId(BATCH_WINDOW),
                expected: BatchId(41)
            }
        );
        assert!(matches!(claim(&mut history, 41, 2), Decision::Approve(_)));
        assert!(matches!(
            claim(&mut history, 41 + BATCH_WINDOW - 1, 2),
            Decision::Refuse(Refusal::BatchOutOfOrder { .. })
        ));
    }
}
