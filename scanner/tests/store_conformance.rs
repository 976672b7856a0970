//! One conformance suite for both scanning stores: the RocksDB store (`Db`) and the memory
//! twin (`MemoryStore`) are given the same random sequences of changes and deliveries, and
//! every read scanning makes must answer the same after each one. The pool of ids is small, so
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
    db::{Db, ScannedKey},
    eventuality::{Eventuality, Outcome},
    network::{ChainOutput, ChainTransaction},
    outputs::ReceivedOutput,
    store::{memory::MemoryStore, ScanChanges, ScanStore, ScanView},
};
use schema::{
    hashes::{PlanId, TransactionId},
    ids::{BatchId, MessageId},
    keys::NetworkKey,
    plan::OutputId,
    strategies::{
        amount, batch, network_key, output_kind, processor_message, refundable_in_instruction,
    },
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
    )
        .prop_map(|(height, id, key, kind, amount, instruction)| {
            (
                height,
                ReceivedOutput {
                    id,
                    key,
                    kind,
                    amount,
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
    )
        .prop_map(|(plan, key, inputs, outputs)| Eventuality {
            plan: pool_plan(plan),
            key,
            inputs,
            outputs,
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
    (any::<bool>(), any::<[u8; 32]>()).prop_map(|(completed, id)| {
        if completed {
            Outcome::Completed(TransactionId(id))
        } else {
            Outcome::Conflict(TransactionId(id))
        }
    })
}

#[derive(Clone, Debug)]
enum Op {
    Apply(Box<ScanChanges>),
    Delivered(u64),
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
            (prop::collection::vec(output_in_pool(), 1..3), transaction()),
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

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(network_key(), 1..3).prop_flat_map(|keys| {
        prop::collection::vec(
            prop_oneof![
                4 => changes(keys).prop_map(|changes| Op::Apply(Box::new(changes))),
                1 => (1u64..8).prop_map(Op::Delivered),
            ],
            1..12,
        )
    })
}

/// Every read scanning makes, for the ids the operations can touch.
fn reads(store: &dyn ScanView) -> String {
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

fn run(store: &dyn ScanStore, op: &Op) {
    match op {
        Op::Apply(changes) => store.apply(changes).unwrap(),
        Op::Delivered(id) => store.delivered(MessageId(*id)).unwrap(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn both_stores_answer_alike_after_every_change(ops in ops()) {
        let dir = tempfile::tempdir().unwrap();
        let rocks = Db::open(dir.path()).unwrap();
        let memory = MemoryStore::new();
        prop_assert_eq!(reads(&rocks), reads(&memory));
        for op in &ops {
            run(&rocks, op);
            run(&memory, op);
            prop_assert_eq!(reads(&rocks), reads(&memory), "after {:?}", op);
        }
        // And what RocksDB answers survives closing and reopening it.
        let before = reads(&rocks);
        drop(rocks);
        let reopened = Db::open(dir.path()).unwrap();
        prop_assert_eq!(reads(&reopened), before);
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
    let steps = [
        ScanChanges {
            eventualities: vec![first.clone(), second.clone()],
            outbox: vec![message.clone(), message.clone()],
            ..ScanChanges::default()
        },
        ScanChanges {
            outcomes: vec![(first, Outcome::Completed(TransactionId([9; 32])))],
            outbox: vec![message],
            ..ScanChanges::default()
        },
    ];
    for store in [&rocks as &dyn ScanStore, &memory] {
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
        assert_eq!(
            store.outcome(&pool_plan(0)).unwrap(),
            Some(Outcome::Completed(TransactionId([9; 32])))
        );
        let ids: Vec<u64> = store.outbox().unwrap().iter().map(|e| e.id.0).collect();
        assert_eq!(ids, vec![2, 3], "ids go on after a delivery, never reused");
    }
    assert_eq!(reads(&rocks), reads(&memory));
}
