//! The scheduler's state survives a restart exactly: through its byte format, and through
//! RocksDB with the database closed and reopened. A damaged state is an error, not a panic.

// Test code: a failed unwrap is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unwrap_in_result
)]

use bitcoin::{key::Secp256k1, secp256k1::SecretKey};
use proptest::prelude::*;
use rocksdb::WriteBatch;
use scanner::{
    schedule::state::{decode, encode, StateError},
    schedule::{BranchGroup, Carried, FundedBranch, Limits, Scheduler},
    store::db::Db,
};
use schema::{
    amount::Amount,
    hashes::TransactionId,
    keys::NetworkKey,
    plan::{OutputId, OutputKind, Payment, PaymentAddress, PlanInput},
    protocol::FeeCaps,
    strategies::{amount, network_key, payment, plan_input},
    transaction::FeeRate,
};

fn scheduler_state() -> impl Strategy<Value = Scheduler> {
    (
        (
            network_key(),
            1usize..1000,
            3usize..1000,
            any::<u64>(),
            any::<u16>(),
        ),
        prop::collection::vec(plan_input(), 0..20),
        prop::collection::vec(payment(), 0..20),
        prop::collection::vec((amount(), prop::collection::vec(payment(), 0..5)), 0..5),
        prop::collection::vec((plan_input(), prop::collection::vec(payment(), 0..5)), 0..5),
        any::<i64>(),
        prop::collection::vec(plan_input(), 0..5),
    )
        .prop_map(
            |(
                (key, max_inputs, max_outputs, rate, share),
                pool,
                queue,
                branches,
                funded,
                carried,
                claimed,
            )| {
                Scheduler::from_parts(
                    key,
                    Limits {
                        max_inputs,
                        max_outputs,
                        caps: FeeCaps {
                            max_fee_rate: FeeRate(rate),
                            max_fee_share_basis_points: share,
                        },
                    },
                    pool,
                    queue.into_iter().collect(),
                    branches
                        .into_iter()
                        .map(|(expected, payments)| BranchGroup { expected, payments })
                        .collect(),
                    funded
                        .into_iter()
                        .map(|(output, payments)| FundedBranch { output, payments })
                        .collect(),
                    Carried(carried),
                )
                .claiming(claimed.into_iter().map(|input| input.id).collect())
            },
        )
}

proptest! {
    #[test]
    fn states_round_trip_through_bytes(scheduler in scheduler_state()) {
        let bytes = encode(&scheduler);
        prop_assert_eq!(decode(&bytes), Ok(scheduler));
    }

    #[test]
    fn damaged_states_are_errors(
        scheduler in scheduler_state(),
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        garbage in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        let bytes = encode(&scheduler);
        let end = cut.index(bytes.len());
        prop_assert!(decode(&bytes[..end]).is_err());
        let mut flipped = bytes.clone();
        let at = flip.index(flipped.len());
        flipped[at] ^= 0xff;
        let _ = decode(&flipped);
        let _ = decode(&garbage);
    }
}

#[test]
fn unknown_versions_and_trailing_bytes_are_refused() {
    let key = NetworkKey::from(
        SecretKey::from_slice(&[3; 32])
            .unwrap()
            .public_key(&Secp256k1::new()),
    );
    let mut bytes = encode(&Scheduler::new(key, Limits::BITCOIN));
    bytes.push(0);
    assert_eq!(decode(&bytes), Err(StateError::TrailingBytes(1)));
    bytes.pop();
    bytes[0] = 4;
    assert_eq!(decode(&bytes), Err(StateError::UnknownVersion(4)));
    // A count claiming four billion outputs is refused before anything is allocated.
    let mut huge = encode(&Scheduler::new(key, Limits::BITCOIN));
    let at = 1 + 33 + 8 + 8 + 2 + 8;
    huge[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(decode(&huge), Err(StateError::Truncated));
}

#[test]
fn a_version_1_state_is_read_with_the_protocol_caps_and_nothing_carried() {
    let key = NetworkKey::from(
        SecretKey::from_slice(&[4; 32])
            .unwrap()
            .public_key(&Secp256k1::new()),
    );
    let output = output(1, OutputKind::Change, 50_000);
    // Version 1: key, limits, one pooled output, an empty queue, no branch groups.
    let mut v1 = vec![1u8];
    v1.extend_from_slice(&key.to_bytes());
    v1.extend_from_slice(&520u32.to_le_bytes());
    v1.extend_from_slice(&520u32.to_le_bytes());
    v1.extend_from_slice(&1u32.to_le_bytes());
    v1.extend_from_slice(&output.id.txid.0);
    v1.extend_from_slice(&output.id.vout.to_le_bytes());
    v1.push(2);
    v1.extend_from_slice(&50_000u64.to_le_bytes());
    v1.extend_from_slice(&0u32.to_le_bytes());
    v1.extend_from_slice(&0u32.to_le_bytes());
    let read = decode(&v1).unwrap();
    assert_eq!(read.limits(), Limits::BITCOIN);
    assert_eq!(read.pool(), &[output]);
    assert_eq!(read.carried(), Carried(0));
    assert!(read.funded().is_empty());
    assert!(read.claimed().is_empty());
}

#[test]
fn a_version_2_state_is_read_with_nothing_claimed() {
    let key = NetworkKey::from(
        SecretKey::from_slice(&[5; 32])
            .unwrap()
            .public_key(&Secp256k1::new()),
    );
    let mut scheduler = Scheduler::new(key, Limits::BITCOIN);
    scheduler
        .schedule(
            vec![output(1, OutputKind::Change, 50_000)],
            vec![],
            FeeRate(2),
        )
        .unwrap();
    // Version 3 with no claimed outputs is version 2 with an empty list appended.
    let v3 = encode(&scheduler);
    let mut v2 = v3[..v3.len() - 4].to_vec();
    v2[0] = 2;
    assert_eq!(decode(&v2).unwrap(), scheduler);
    assert_eq!(decode(&v3).unwrap(), scheduler);
}

fn output(index: u8, kind: OutputKind, sats: u64) -> PlanInput {
    PlanInput {
        id: OutputId {
            txid: TransactionId([index; 32]),
            vout: u32::from(index),
        },
        kind,
        amount: Amount::from_sat(sats).unwrap(),
    }
}

fn pay(index: u8, sats: u64) -> Payment {
    Payment {
        address: PaymentAddress::from_bytes(&[&[0x00, 0x14][..], &[index; 20]].concat()).unwrap(),
        data: (index % 2 == 0).then(|| vec![index; 3]),
        amount: Amount::from_sat(sats).unwrap(),
    }
}

#[test]
fn a_scheduler_survives_closing_and_reopening_the_database() {
    let key = NetworkKey::from(
        SecretKey::from_slice(&[9; 32])
            .unwrap()
            .public_key(&Secp256k1::new()),
    );
    let limits = Limits {
        max_inputs: 3,
        max_outputs: 3,
        caps: FeeCaps::PROTOCOL,
    };
    let mut scheduler = Scheduler::new(key, limits);
    // Leaves a pool, a queue and a waiting branch group behind.
    let scheduled = scheduler
        .schedule(
            (1..=7)
                .map(|i| output(i, OutputKind::External, 300_000))
                .collect(),
            (1..=8).map(|i| pay(i, 150_000)).collect(),
            FeeRate(4),
        )
        .unwrap();
    assert!(!scheduled.plans.is_empty());
    assert!(!scheduler.branches().is_empty());
    assert!(!scheduler.queue().is_empty());
    assert!(!scheduler.pool().is_empty());

    let dir = tempfile::tempdir().unwrap();
    {
        let db = Db::open(dir.path()).unwrap();
        assert_eq!(db.scheduler(&key).unwrap(), None);
        let mut batch = WriteBatch::default();
        db.put_scheduler(&mut batch, &scheduler).unwrap();
        db.commit(batch).unwrap();
    }
    let db = Db::open(dir.path()).unwrap();
    let mut restored = db.scheduler(&key).unwrap().unwrap();
    assert_eq!(restored, scheduler);

    // And it goes on exactly as the one that never stopped.
    let more = vec![output(9, OutputKind::External, 2_000_000)];
    let a = scheduler
        .schedule(more.clone(), vec![pay(20, 60_000)], FeeRate(7))
        .unwrap();
    let b = restored
        .schedule(more, vec![pay(20, 60_000)], FeeRate(7))
        .unwrap();
    assert_eq!(a, b);
    assert_eq!(restored, scheduler);
}

#[test]
fn a_database_of_another_format_is_refused_and_left_unchanged() {
    use scanner::store::db::{DbError, FORMAT};
    let dir = tempfile::tempdir().unwrap();
    drop(Db::open(dir.path()).unwrap());
    // Reopened as it is: the format recorded at creation.
    drop(Db::open(dir.path()).unwrap());

    let families = rocksdb::DB::list_cf(&rocksdb::Options::default(), dir.path()).unwrap();
    let rewrite = |value: Option<&[u8]>| {
        let raw =
            rocksdb::DB::open_cf(&rocksdb::Options::default(), dir.path(), &families).unwrap();
        let meta = raw.cf_handle("meta").unwrap();
        match value {
            Some(value) => raw.put_cf(meta, b"format", value).unwrap(),
            None => raw.delete_cf(meta, b"format").unwrap(),
        }
    };
    // A later build's format.
    rewrite(Some(&(FORMAT + 1).to_be_bytes()));
    assert!(matches!(
        Db::open(dir.path()),
        Err(DbError::Format { found: Some(found), expected: FORMAT }) if found == FORMAT + 1
    ));
    // Data from before formats were recorded (the database is not empty: the format was
    // written into `meta`, and the other records stay): refused, and not stamped.
    let raw = rocksdb::DB::open_cf(&rocksdb::Options::default(), dir.path(), &families).unwrap();
    raw.put_cf(
        raw.cf_handle("meta").unwrap(),
        b"last_handled",
        7u64.to_be_bytes(),
    )
    .unwrap();
    drop(raw);
    rewrite(None);
    for _ in 0..2 {
        assert!(matches!(
            Db::open(dir.path()),
            Err(DbError::Format { found: None, .. })
        ));
    }
}
