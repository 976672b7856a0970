//! Scanning one finalized block, without I/O: from a read view of the state and the block to
//! the changes it causes (`ScanChanges`) and what to report, or the verdict that the chain
//! reorganized below finality. The adapter (`Scanner`) fetches the block, applies the changes
//! atomically, then counts and logs; the simulation drives this same function.

use std::collections::BTreeSet;

use schema::{
    hashes::PlanId,
    ids::NetworkId,
    keys::NetworkKey,
    messages::{sign, ProcessorMessage},
    plan::OutputId,
    protocol::EMPTY_BATCH_INTERVAL,
};

use super::ScanError;
use crate::{
    chain::{BlockView, OutputTyping, TransactionView},
    scan::batches::batches_for,
    scan::eventuality::Outcome,
    scan::outputs::{hex_id, receive, Received},
    store::db::ScannedKey,
    store::{ScanChanges, ScanView, Spend},
};

/// What scanning one block does.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BlockScan {
    /// The changes, for the store to apply at once.
    pub changes: ScanChanges,
    /// The keys scanned at this block.
    pub keys: Vec<ScannedKey>,
    /// What the block holds for those keys, with what was ignored.
    pub received: Received,
    /// Eventualities settled, in the order their transactions appear.
    pub outcomes: Vec<(PlanId, Outcome)>,
}

/// Whether `block` continues the finalized chain stored in `view`: `Ok(true)` on its first
/// visit, `Ok(false)` when it was scanned already (for another key), and the verdict
/// `ReorgBelowFinality` when its parent, or the block stored at its height, differs.
///
/// # Errors
/// The verdict, or the view failed.
pub fn continues<V: ScanView + ?Sized, B: BlockView>(
    view: &V,
    block: &B,
) -> Result<bool, ScanError> {
    let halt = |height: u64, expected: &[u8; 32], found: &[u8; 32]| ScanError::ReorgBelowFinality {
        height,
        expected: hex_id(expected),
        found: hex_id(found),
    };
    let (height, hash) = (block.height(), block.hash());
    if let Some(parent_height) = height.checked_sub(1) {
        if let Some(parent) = view.block_hash(parent_height)? {
            if parent != block.parent() {
                return Err(halt(parent_height, &parent, &block.parent()));
            }
        }
    }
    match view.block_hash(height)? {
        Some(stored) if stored != hash => Err(halt(height, &stored, &hash)),
        Some(_) => Ok(false),
        None => Ok(true),
    }
}

/// Scans `block` for `keys` (each with how its outputs are recognized): the keys whose next
/// block it is. Our outputs are recorded, the block's Batches built under the next batch ids,
/// the keys moved past it; on the block's first visit, spends of our outputs are recorded and
/// eventualities settled, each completed plan queued as `Completed` for the coordinator.
///
/// # Errors
/// The chain reorganized below finality (nothing changes), or the view failed.
pub fn scan_block<V: ScanView + ?Sized, B: BlockView, T: OutputTyping>(
    view: &V,
    network: NetworkId,
    block: &B,
    keys: &[(ScannedKey, T)],
) -> Result<BlockScan, ScanError> {
    let first_visit = continues(view, block)?;
    let typings: Vec<(NetworkKey, &T)> =
        keys.iter().map(|(key, typing)| (key.key, typing)).collect();
    let received = receive(block, &typings)?;
    let (height, hash) = (block.height(), block.hash());
    let mut changes = ScanChanges {
        block: Some((height, hash)),
        outputs: received
            .outputs
            .iter()
            .map(|output| (height, output.clone()))
            .collect(),
        keys: keys
            .iter()
            .map(|(key, _)| ScannedKey {
                next: height.saturating_add(1),
                ..*key
            })
            .collect(),
        ..ScanChanges::default()
    };
    // Every `EMPTY_BATCH_INTERVAL`th height is reported, decided on the block's first visit: a
    // rule of the chain alone, so that every validator gives the same blocks Batches whenever
    // it started or restarted.
    let due = first_visit && height % EMPTY_BATCH_INTERVAL == 0;
    changes.batches = batches_for(network, view.next_batch_id()?, hash, &received.outputs, due);
    let mut outcomes = Vec::new();
    if first_visit {
        let mut settled = BTreeSet::new();
        // Ours although the store does not know them yet: a child (CPFP) confirmed beside its
        // parent spends the parent's change in the block that creates it.
        let created_here: BTreeSet<OutputId> =
            received.outputs.iter().map(|output| output.id).collect();
        for transaction in block.transactions() {
            let mut ours = Vec::new();
            for input in transaction.spends() {
                let made_here = created_here.contains(&input);
                // Almost no input is watched: one check from memory, then the exact answers.
                if !made_here && !view.watches(&input)? {
                    continue;
                }
                if made_here || view.is_ours(&input)? {
                    ours.push(input);
                }
                let Some(eventuality) = view.eventuality_spending(&input)? else {
                    continue;
                };
                if !settled.insert(eventuality.plan) {
                    continue;
                }
                if let Some(outcome) = eventuality.check(transaction) {
                    // The coordinator hears of it from the outbox, committed with the scan,
                    // whoever published the transaction: for every member of the family, whose
                    // signing is over whichever member's transaction it is, or once a conflict
                    // spent the inputs (which the next Serai block takes back).
                    let (Outcome::Completed { tx, .. } | Outcome::Conflict(tx)) = outcome;
                    for plan in eventuality.plans() {
                        changes.outbox.push(ProcessorMessage::Sign(
                            sign::ProcessorMessage::Completed {
                                key: eventuality.key,
                                id: plan,
                                tx,
                            },
                        ));
                    }
                    outcomes.push((eventuality.plan, outcome));
                    changes.outcomes.push((eventuality, outcome));
                }
            }
            if !ours.is_empty() {
                changes.spends.push((
                    ours,
                    Spend {
                        height,
                        transaction: transaction.to_chain()?,
                    },
                ));
            }
        }
    }
    Ok(BlockScan {
        changes,
        keys: keys.iter().map(|(key, _)| *key).collect(),
        received,
        outcomes,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use schema::{amount::Amount, hashes::TransactionId, taproot::KeyScripts};

    use super::*;
    use crate::{
        chain::{ChainBlock, ChainOutput, ChainTransaction},
        store::{memory::MemoryStore, ScanStore},
    };

    fn key() -> NetworkKey {
        NetworkKey::from_slice(
            &bitcoin::secp256k1::PublicKey::from_secret_key(
                &bitcoin::secp256k1::Secp256k1::new(),
                &bitcoin::secp256k1::SecretKey::from_slice(&[9; 32]).unwrap(),
            )
            .serialize(),
        )
        .unwrap()
    }

    /// A child confirmed beside its parent spends the parent's change in the block creating it:
    /// the spend is recorded (with the block's height), as one of an older output of ours is.
    #[test]
    fn a_spend_of_an_output_made_in_the_same_block_is_recorded() {
        let store = MemoryStore::new();
        let scripts = KeyScripts::derive(&key()).unwrap();
        let change = scripts.script(schema::plan::OutputKind::Change).to_bytes();
        let parent = ChainTransaction {
            id: TransactionId([1; 32]),
            inputs: vec![OutputId {
                txid: TransactionId([7; 32]),
                vout: 0,
            }],
            outputs: vec![ChainOutput {
                script: change.clone(),
                amount: Amount::from_sat(500_000).unwrap(),
            }],
            data: None,
        };
        let made = OutputId {
            txid: parent.id,
            vout: 0,
        };
        let child = ChainTransaction {
            id: TransactionId([2; 32]),
            inputs: vec![made],
            outputs: vec![ChainOutput {
                script: change,
                amount: Amount::from_sat(490_000).unwrap(),
            }],
            data: None,
        };
        let block = ChainBlock {
            height: 0,
            hash: [3; 32],
            parent: [0; 32],
            time: 0,
            transactions: vec![parent, child.clone()],
        };
        let scanned = ScannedKey {
            key: key(),
            activation: 0,
            next: 0,
        };
        let scan = scan_block(&store, NetworkId::Bitcoin, &block, &[(scanned, scripts)]).unwrap();
        store.apply(&scan.changes).unwrap();
        let spend = store.spent_by(&made).unwrap().unwrap();
        assert_eq!((spend.height, spend.transaction.id), (0, child.id));
    }
}
