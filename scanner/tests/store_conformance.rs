//! One conformance suite for both stores: the RocksDB store (`Db`) and the memory twin
//! (`MemoryStore`) are given the same random sequences of scanning changes, processor commits
//! and deliveries, and every read the scanner and the processor make must answer the same
//! after each one. The pool of ids is small, so
//! that changes overlap: outputs re-recorded, eventualities replaced through a shared input
//! and closed by outcomes, outbox ids continuing after deliveries.

// Test code: a failed unwrap is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unwrap_in_result
)]

use proptest::prelude::*;
use scanner::{
    chain::{ChainOutput, ChainTransaction},
    rotation::Rotation,
    scan::eventuality::{Eventuality, Member, Outcome},
    scan::outputs::ReceivedOutput,
    schedule::{Limits, Scheduler},
    store::db::{Db, ScannedKey, Unsettled},
    store::{
        memory::MemoryStore, InFlight, ProcessorChanges, ProcessorStore, ScanChanges, ScanStore,
        ScanView, Spend,
    },
};
use schema::{
    hashes::{PlanId, TransactionId},
    ids::{Attempt, BatchId, MessageId, SeraiBlockNumber, Session},
    keys::{BatchKey, KeyPair, NetworkKey},
    plan::{OutputId, OutputKind, Plan, PlanInput},
    strategies::{
        amount, batch, network_key, output_kind, payment_address, plan, processor_message,
        refundable_in_instruction,
    },
    transaction::FeeRate,
};

const HEIGHTS: u64 = 6;

fn pool_output(index: u8) -> OutputId {
    OutputId {
        txid: TransactionId([index / 2; 32]),
        vout: u32::from(index % 2),
    }
}

fn pool_outputs() -> Vec<OutputId> {
    (0..6).map(pool_output).collect()
}

fn pool_plan(index: u8) -> PlanId {
    PlanId([0xa0 | index; 32])
}

fn output_in_pool() -> impl Strategy<Value = OutputId> {
    (0u8..6).prop_map(pool_output)
}

fn chain_outputs() -> impl Strategy<Value = Vec<ChainOutput>> {
    prop::collection::vec(
        (prop::collection::vec(any::<u8>(), 0..40), amount())
            .prop_map(|(script, amount)| ChainOutput { script, amount }),
        0..3,
    )
}

fn received(keys: Vec<NetworkKey>) -> impl Strategy<Value = (u64, ReceivedOutput)> {
    (
        0..HEIGHTS,
        output_in_pool(),
        prop::sample::select(keys),
        output_kind(),
        amount(),
        prop::option::of(refundable_in_instruction()),
        prop::option::of(payment_address()),
    )
        .prop_map(|(height, id, key, kind, amount, instruction, refund)| {
            (
                height,
                ReceivedOutput {
                    id,
                    key,
                    kind,
                    amount,
                    // A deposit is refunded only when its instruction is invalid.
                    refund: refund.filter(|_| instruction.is_none()),
                    instruction,
                },
            )
        })
}

fn eventuality(keys: Vec<NetworkKey>) -> impl Strategy<Value = Eventuality> {
    (
        0u8..3,
        prop::sample::select(keys),
        prop::collection::vec(output_in_pool(), 1..3),
        chain_outputs(),
        prop::collection::vec((3u8..6, chain_outputs()), 0..2),
    )
        .prop_map(|(plan, key, inputs, outputs, replacements)| Eventuality {
            plan: pool_plan(plan),
            key,
            inputs,
            outputs,
            replacements: replacements
                .into_iter()
                .map(|(plan, outputs)| Member {
                    plan: pool_plan(plan),
                    outputs,
                })
                .collect(),
        })
}

fn flight(keys: Vec<NetworkKey>) -> impl Strategy<Value = InFlight> {
    (
        0u8..3,
        prop::sample::select(keys),
        0u8..6,
        0..HEIGHTS,
        0..HEIGHTS,
        prop::option::of(0u8..6),
    )
        .prop_map(|(family, key, latest, made_at, since, child)| InFlight {
            family: pool_plan(family),
            key,
            latest: pool_plan(latest),
            made_at,
            since,
            child: child.map(pool_plan),
        })
}

fn transaction() -> impl Strategy<Value = ChainTransaction> {
    (
        any::<[u8; 32]>(),
        prop::collection::vec(output_in_pool(), 1..3),
        chain_outputs(),
        prop::option::of(prop::collection::vec(any::<u8>(), 0..8)),
    )
        .prop_map(|(id, inputs, outputs, data)| ChainTransaction {
            id: TransactionId(id),
            inputs,
            outputs,
            data,
        })
}

fn outcome() -> impl Strategy<Value = Outcome> {
    (any::<bool>(), 0u8..6, any::<[u8; 32]>()).prop_map(|(completed, plan, id)| {
        if completed {
            Outcome::Completed {
                plan: pool_plan(plan),
                tx: TransactionId(id),
            }
        } else {
            Outcome::Conflict(TransactionId(id))
        }
    })
}

/// A rotation through the pairs of `batch_keys` and `network_keys` (none when `batch_keys` is
/// empty), the older keys forwarding.
fn rotation_of(batch_keys: &[[u8; 32]], network_keys: &[NetworkKey]) -> Option<Rotation> {
    if batch_keys.is_empty() {
        return None;
    }
    let mut rotation = Rotation::default();
    for (index, (batch, network)) in (0_u32..).zip(batch_keys.iter().zip(network_keys)) {
        let pair = KeyPair {
            batch_key: BatchKey(*batch),
            network_key: *network,
        };
        // A pair reusing a half is refused, as a processor refuses it.
        let _ = rotation.confirm(pair, Session(index), 1 + u64::from(index), index == 0);
    }
    Some(rotation)
}

#[derive(Clone, Debug)]
enum Op {
    Apply(Box<ScanChanges>),
    Commit(Box<ProcessorChanges>),
    Delivered(u64),
}

fn processor_changes(keys: Vec<NetworkKey>) -> impl Strategy<Value = ProcessorChanges> {
    (
        changes(keys.clone()),
        (
            prop::option::of(1u64..10),
            prop::collection::vec(any::<[u8; 32]>(), 0..3),
            prop::option::of(0u32..4),
            prop::collection::vec((0u32..4, prop::option::of(0u32..3)), 0..3),
        ),
        (
            prop::collection::vec((prop::sample::select(keys.clone()), 0..HEIGHTS), 0..2),
            Just(keys.clone()),
        ),
        prop::collection::vec((prop::sample::select(keys.clone()), amount()), 0..2),
        prop::option::of(0u64..5),
        prop::collection::vec(plan(), 0..2),
        prop::collection::vec(
            (
                0u8..6,
                0..HEIGHTS,
                prop::collection::vec(any::<u8>(), 0..20),
            ),
            0..2,
        ),
        (
            prop::collection::vec(flight(keys), 0..2),
            prop::collection::vec((0u8..3).prop_map(pool_plan), 0..2),
        ),
    )
        .prop_map(
            |(
                scan,
                (handled, batch_keys, next_batch_to_sign, attempts),
                (acknowledged, keys),
                schedulers,
                last_serai_block,
                plans,
                signed,
                (in_flight, landed),
            )| ProcessorChanges {
                scan,
                handled: handled.map(MessageId),
                rotation: rotation_of(&batch_keys, &keys),
                next_batch_to_sign,
                batch_attempts: attempts
                    .into_iter()
                    .map(|(id, attempt)| (BatchId(id), attempt.map(Attempt)))
                    .collect(),
                acknowledged,
                schedulers: schedulers
                    .into_iter()
                    .map(|(key, kept)| {
                        let mut scheduler = Scheduler::new(key, Limits::BITCOIN);
                        scheduler.keep(kept);
                        scheduler
                    })
                    .collect(),
                last_serai_block: last_serai_block.map(SeraiBlockNumber),
                plans,
                signed: signed
                    .into_iter()
                    .map(|(plan, signed_at, transaction)| Unsettled {
                        plan: pool_plan(plan),
                        signed_at,
                        transaction,
                    })
                    .collect(),
                in_flight,
                landed,
            },
        )
}

fn changes(keys: Vec<NetworkKey>) -> impl Strategy<Value = ScanChanges> {
    (
        prop::option::of((0..HEIGHTS, any::<[u8; 32]>())),
        prop::collection::vec(
            (prop::sample::select(keys.clone()), 0..HEIGHTS, 0..HEIGHTS),
            0..2,
        ),
        prop::collection::vec(received(keys.clone()), 0..3),
        prop::collection::vec(batch(), 0..2),
        prop::collection::vec(
            (
                prop::collection::vec(output_in_pool(), 1..3),
                (0..HEIGHTS, transaction()).prop_map(|(height, transaction)| Spend {
                    height,
                    transaction,
                }),
            ),
            0..2,
        ),
        prop::collection::vec(eventuality(keys.clone()), 0..2),
        prop::collection::vec((eventuality(keys), outcome()), 0..2),
        prop::collection::vec(processor_message(), 0..3),
    )
        .prop_map(
            |(block, keys, outputs, batches, spends, eventualities, outcomes, outbox)| {
                ScanChanges {
                    block,
                    keys: keys
                        .into_iter()
                        .map(|(key, activation, next)| ScannedKey {
                            key,
                            activation,
                            next,
                        })
                        .collect(),
                    outputs,
                    batches,
                    spends,
                    eventualities,
                    outcomes,
                    outbox,
                }
            },
        )
}

fn ops() -> impl Strategy<Value = (Vec<Op>, Vec<NetworkKey>)> {
    prop::collection::vec(network_key(), 1..3).prop_flat_map(|keys| {
        let probes = keys.clone();
        (
            prop::collection::vec(
                prop_oneof![
                    3 => changes(keys.clone()).prop_map(|changes| Op::Apply(Box::new(changes))),
                    3 => processor_changes(keys.clone())
                        .prop_map(|changes| Op::Commit(Box::new(changes))),
                    1 => (1u64..8).prop_map(Op::Delivered),
                ],
                1..12,
            ),
            Just(probes),
        )
    })
}

/// Every read the scanner and the processor make, for the ids the operations can touch.
fn reads<S: ProcessorStore>(store: &S, keys: &[NetworkKey], plans: &[PlanId]) -> String {
    let mut seen = Vec::new();
    for plan in plans {
        seen.push(format!("plan {plan:?}: {:?}", store.plan(plan).unwrap()));
    }
    seen.push(format!(
        "handled {:?}, outbox {:?}, rotation {:?}, next to sign {:?}, Serai block {:?}",
        store.last_handled().unwrap(),
        store.outbox_len().unwrap(),
        store.rotation().unwrap(),
        store.next_batch_to_sign().unwrap(),
        store.last_serai_block().unwrap(),
    ));
    for id in 0..4 {
        seen.push(format!(
            "batch {id}: attempt {:?}, {:?}",
            store.batch_attempt(BatchId(id)).unwrap(),
            store.batch(BatchId(id)).unwrap()
        ));
    }
    for key in keys {
        seen.push(format!(
            "{key}: acknowledged {:?}, scheduler {:?}",
            store.acknowledged(key).unwrap(),
            store.scheduler(key).unwrap()
        ));
    }
    seen.push(format!("unsettled {:?}", store.unsettled().unwrap()));
    seen.push(format!("in flight {:?}", store.in_flight().unwrap()));
    seen.push(scan_reads(store));
    seen.join("\n")
}

/// Every read scanning makes, for the ids the operations can touch.
fn scan_reads(store: &dyn ScanView) -> String {
    let mut seen = Vec::new();
    seen.push(format!("keys {:?}", store.keys().unwrap()));
    seen.push(format!("next batch {:?}", store.next_batch_id().unwrap()));
    for height in 0..HEIGHTS {
        seen.push(format!(
            "block {height} {:?}",
            store.block_hash(height).unwrap()
        ));
    }
    for output in pool_outputs() {
        seen.push(format!(
            "{output:?}: ours {:?}, spent by {:?}, eventuality {:?}",
            store.is_ours(&output).unwrap(),
            store.spent_by(&output).unwrap(),
            store.eventuality_spending(&output).unwrap(),
        ));
    }
    for (from, to) in [(0, HEIGHTS), (1, 3), (2, 2), (4, 1), (HEIGHTS, u64::MAX)] {
        seen.push(format!(
            "outputs {from}..={to} {:?}",
            store.outputs(from, to).unwrap()
        ));
    }
    for first in [0, 2, u32::MAX] {
        seen.push(format!(
            "batches from {first} {:?}",
            store.batches_from(BatchId(first)).unwrap()
        ));
    }
    for plan in 0..3 {
        seen.push(format!(
            "outcome {plan} {:?}",
            store.outcome(&pool_plan(plan)).unwrap()
        ));
    }
    seen.push(format!("outbox {:?}", store.outbox().unwrap()));
    seen.join("\n")
}

/// The outputs of the pool that are ours or an open eventuality's input but not watched: the
/// inputs whose spends scanning would miss. `watches` may say more than the exact reads (a
/// stale fingerprint), never less, so it is checked apart from `scan_reads`.
fn unwatched(store: &dyn ScanView) -> Vec<OutputId> {
    pool_outputs()
        .into_iter()
        .filter(|output| {
            (store.is_ours(output).unwrap()
                || store.eventuality_spending(output).unwrap().is_some())
                && !store.watches(output).unwrap()
        })
        .collect()
}

fn run<S: ProcessorStore>(store: &S, op: &Op) {
    match op {
        Op::Apply(changes) => store.apply(changes).unwrap(),
        Op::Commit(changes) => store.commit_changes(changes).unwrap(),
        Op::Delivered(id) => store.delivered(MessageId(*id)).unwrap(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn both_stores_answer_alike_after_every_change((ops, keys) in ops()) {
        let plans: Vec<PlanId> = ops
            .iter()
            .filter_map(|op| match op {
                Op::Commit(changes) => Some(changes.plans.iter().map(|plan| plan.id())),
                _ => None,
            })
            .flatten()
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let rocks = Db::open(dir.path()).unwrap();
        let memory = MemoryStore::new();
        prop_assert_eq!(reads(&rocks, &keys, &plans), reads(&memory, &keys, &plans));
        for op in &ops {
            run(&rocks, op);
            run(&memory, op);
            prop_assert_eq!(
                reads(&rocks, &keys, &plans),
                reads(&memory, &keys, &plans),
                "after {:?}",
                op
            );
            prop_assert_eq!(unwatched(&rocks), vec![], "after {:?}", op);
            prop_assert_eq!(unwatched(&memory), vec![], "after {:?}", op);
        }
        // And what RocksDB answers survives closing and reopening it.
        let before = reads(&rocks, &keys, &plans);
        drop(rocks);
        let reopened = Db::open(dir.path()).unwrap();
        prop_assert_eq!(reads(&reopened, &keys, &plans), before);
        prop_assert_eq!(unwatched(&reopened), vec![]);
    }
}

/// The cases the random sequences may miss, written out: an eventuality's input taken over by
/// a later eventuality, an outcome closing it, outbox ids going on after a delivery.
#[test]
fn shared_inputs_outcomes_and_outbox_ids_behave_alike() {
    let dir = tempfile::tempdir().unwrap();
    let rocks = Db::open(dir.path()).unwrap();
    let memory = MemoryStore::new();
    let key = NetworkKey::from_slice(&[2; 33]).unwrap();
    let first = Eventuality {
        plan: pool_plan(0),
        key,
        inputs: vec![pool_output(0), pool_output(1)],
        outputs: Vec::new(),
        replacements: Vec::new(),
    };
    let second = Eventuality {
        plan: pool_plan(1),
        inputs: vec![pool_output(1)],
        ..first.clone()
    };
    let message = schema::messages::ProcessorMessage::Sign(
        schema::messages::sign::ProcessorMessage::Completed {
            key,
            id: pool_plan(0),
            tx: TransactionId([9; 32]),
        },
    );
    let completed = Outcome::Completed {
        plan: pool_plan(0),
        tx: TransactionId([9; 32]),
    };
    let steps = [
        ScanChanges {
            eventualities: vec![first.clone(), second.clone()],
            outbox: vec![message.clone(), message.clone()],
            ..ScanChanges::default()
        },
        ScanChanges {
            outcomes: vec![(first, completed)],
            outbox: vec![message],
            ..ScanChanges::default()
        },
    ];
    for store in [&rocks as &dyn ScanStore, &memory as &dyn ScanStore] {
        store.apply(&steps[0]).unwrap();
        assert_eq!(
            store
                .eventuality_spending(&pool_output(1))
                .unwrap()
                .map(|e| e.plan),
            Some(pool_plan(1)),
            "the later eventuality holds the shared input"
        );
        store.delivered(MessageId(1)).unwrap();
        store.apply(&steps[1]).unwrap();
        assert_eq!(store.eventuality_spending(&pool_output(0)).unwrap(), None);
        assert_eq!(store.outcome(&pool_plan(0)).unwrap(), Some(completed));
        let ids: Vec<u64> = store.outbox().unwrap().iter().map(|e| e.id.0).collect();
        assert_eq!(ids, vec![2, 3], "ids go on after a delivery, never reused");
    }
    assert_eq!(reads(&rocks, &[key], &[]), reads(&memory, &[key], &[]));
}

/// A signed transaction is kept only for a plan that has not settled: not when the commit
/// that records it also settles the plan, nor when the plan settled earlier.
#[test]
fn a_settled_plans_signed_transaction_is_not_kept() {
    let dir = tempfile::tempdir().unwrap();
    let rocks = Db::open(dir.path()).unwrap();
    let memory = MemoryStore::new();
    let key = NetworkKey::from_slice(&[2; 33]).unwrap();
    let eventuality = |plan: u8| Eventuality {
        plan: pool_plan(plan),
        key,
        inputs: vec![pool_output(plan)],
        outputs: Vec::new(),
        replacements: Vec::new(),
    };
    let signed = |plan: u8| Unsettled {
        plan: pool_plan(plan),
        signed_at: 7,
        transaction: vec![plan; 10],
    };
    let settled = Outcome::Completed {
        plan: pool_plan(0),
        tx: TransactionId([9; 32]),
    };
    for store in [&rocks as &dyn ProcessorStoreObject, &memory] {
        store.commit(&ProcessorChanges {
            scan: ScanChanges {
                eventualities: vec![eventuality(0), eventuality(1), eventuality(2)],
                ..ScanChanges::default()
            },
            ..ProcessorChanges::default()
        });
        // Plan 0 settles in the same commit that records its signed transaction.
        store.commit(&ProcessorChanges {
            scan: ScanChanges {
                outcomes: vec![(eventuality(0), settled)],
                ..ScanChanges::default()
            },
            signed: vec![signed(0), signed(1)],
            ..ProcessorChanges::default()
        });
        // Plan 2 settled before its signed transaction arrives.
        store.commit(&ProcessorChanges {
            scan: ScanChanges {
                outcomes: vec![(eventuality(2), settled)],
                ..ScanChanges::default()
            },
            ..ProcessorChanges::default()
        });
        store.commit(&ProcessorChanges {
            signed: vec![signed(2)],
            ..ProcessorChanges::default()
        });
        assert_eq!(store.unsettled(), vec![signed(1)]);
    }
}

/// A family's signed transactions go when it settles, whichever member settled it: the
/// original's and the replacement's, and a member's signature arriving afterwards is not kept
/// (the store finds its family through the recorded plan).
#[test]
fn a_familys_signed_transactions_go_when_any_member_settles_it() {
    let dir = tempfile::tempdir().unwrap();
    let rocks = Db::open(dir.path()).unwrap();
    let memory = MemoryStore::new();
    let key = NetworkKey::from_slice(&[2; 33]).unwrap();
    let original = Plan {
        key,
        inputs: vec![PlanInput {
            id: pool_output(0),
            kind: OutputKind::External,
            amount: schema::amount::Amount::from_sat(100_000).unwrap(),
        }],
        payments: Vec::new(),
        change: Some(key),
        fee_rate: FeeRate(5),
        replaces: None,
    };
    let replacement = original.replaced_at(FeeRate(9));
    let second = original.replaced_at(FeeRate(12));
    let eventuality = Eventuality {
        plan: original.id(),
        key,
        inputs: vec![pool_output(0)],
        outputs: Vec::new(),
        replacements: vec![Member {
            plan: replacement.id(),
            outputs: Vec::new(),
        }],
    };
    let signed = |plan: &Plan| Unsettled {
        plan: plan.id(),
        signed_at: 7,
        transaction: vec![1; 10],
    };
    for store in [&rocks as &dyn ProcessorStoreObject, &memory] {
        store.commit(&ProcessorChanges {
            scan: ScanChanges {
                eventualities: vec![eventuality.clone()],
                ..ScanChanges::default()
            },
            plans: vec![original.clone(), replacement.clone(), second.clone()],
            signed: vec![signed(&original), signed(&replacement)],
            ..ProcessorChanges::default()
        });
        assert_eq!(store.unsettled().len(), 2);
        store.commit(&ProcessorChanges {
            scan: ScanChanges {
                outcomes: vec![(
                    eventuality.clone(),
                    Outcome::Completed {
                        plan: replacement.id(),
                        tx: TransactionId([9; 32]),
                    },
                )],
                ..ScanChanges::default()
            },
            ..ProcessorChanges::default()
        });
        assert_eq!(store.unsettled(), vec![]);
        store.commit(&ProcessorChanges {
            signed: vec![signed(&second)],
            ..ProcessorChanges::default()
        });
        assert_eq!(store.unsettled(), vec![]);
    }
}

/// What the fixed cases need of either store, as one object.
trait ProcessorStoreObject {
    fn commit(&self, changes: &ProcessorChanges);
    fn unsettled(&self) -> Vec<Unsettled>;
}

impl<S: ProcessorStore> ProcessorStoreObject for S {
    fn commit(&self, changes: &ProcessorChanges) {
        self.commit_changes(changes).unwrap();
    }
    fn unsettled(&self) -> Vec<Unsettled> {
        ProcessorStore::unsettled(self).unwrap()
    }
}
