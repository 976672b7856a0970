//! What a plan's transaction must look like on chain, and whether a transaction fulfils it: a
//! completion spends exactly the plan's inputs and pays exactly the planned outputs; any other
//! transaction spending one of its inputs is a conflict, reported loudly and never counted as
//! completion. Pure.

use std::collections::BTreeSet;

use schema::{
    hashes::{PlanId, TransactionId},
    keys::NetworkKey,
    plan::OutputId,
};

use crate::chain::{ChainOutput, TransactionView};

/// A plan's expected transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Eventuality {
    /// The plan.
    pub plan: PlanId,
    /// The key it spends from.
    pub key: NetworkKey,
    /// The outputs it spends.
    pub inputs: Vec<OutputId>,
    /// The outputs it creates, in order.
    pub outputs: Vec<ChainOutput>,
}

/// What a transaction means for an eventuality.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The plan is fulfilled by this transaction.
    Completed(TransactionId),
    /// This transaction spends a planned input but is not the plan's transaction.
    Conflict(TransactionId),
}

impl Eventuality {
    /// What `transaction` means for this plan, if it spends any of its inputs. Its id is
    /// computed only then.
    pub fn check<T: TransactionView + ?Sized>(&self, transaction: &T) -> Option<Outcome> {
        let ours: BTreeSet<OutputId> = self.inputs.iter().copied().collect();
        if !transaction.spends().any(|input| ours.contains(&input)) {
            return None;
        }
        let spent: BTreeSet<OutputId> = transaction.spends().collect();
        let mut expected = self.outputs.iter();
        let pays_the_plan = transaction.outputs().all(|output| {
            expected.next().is_some_and(|planned| {
                planned.script == output.script && planned.amount.to_sat() == output.value
            })
        }) && expected.next().is_none();
        if spent == ours && transaction.spends().count() == self.inputs.len() && pays_the_plan {
            Some(Outcome::Completed(transaction.id()))
        } else {
            Some(Outcome::Conflict(transaction.id()))
        }
    }
}
