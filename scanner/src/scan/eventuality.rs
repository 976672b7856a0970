//! What a plan family's transaction must look like on chain, and whether a transaction fulfils
//! it. A family is a plan and its replacements at higher fees (fee bumping): they spend the
//! same inputs and pay the same payments, each at its own amounts, and whichever confirms
//! settles the family. A completion spends exactly the family's inputs and pays exactly the
//! outputs of one member; any other transaction spending one of its inputs is a conflict,
//! reported loudly and never counted as completion. Pure.

use std::collections::BTreeSet;

use schema::{
    hashes::{PlanId, TransactionId},
    keys::NetworkKey,
    plan::OutputId,
};

use crate::chain::{ChainOutput, TransactionView};

/// A plan family's expected transactions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Eventuality {
    /// The family's original plan: what the eventuality is known by.
    pub plan: PlanId,
    /// The key it spends from.
    pub key: NetworkKey,
    /// The outputs every member spends.
    pub inputs: Vec<OutputId>,
    /// The outputs the original creates, in order.
    pub outputs: Vec<ChainOutput>,
    /// The replacements made so far, oldest first.
    pub replacements: Vec<Member>,
}

/// A replacement in a family: its plan and the outputs its transaction creates, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// The replacement plan.
    pub plan: PlanId,
    /// Its transaction's outputs, in order.
    pub outputs: Vec<ChainOutput>,
}

/// What a transaction means for an eventuality.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The family is settled by this transaction, the transaction of member `plan`.
    Completed {
        /// The member whose transaction it is (the original, or a replacement).
        plan: PlanId,
        /// The transaction.
        tx: TransactionId,
    },
    /// This transaction spends a planned input but is no member's transaction.
    Conflict(TransactionId),
}

impl Eventuality {
    /// The family's members, the original first, with the outputs each creates.
    fn members(&self) -> impl Iterator<Item = (PlanId, &[ChainOutput])> {
        std::iter::once((self.plan, self.outputs.as_slice())).chain(
            self.replacements
                .iter()
                .map(|member| (member.plan, member.outputs.as_slice())),
        )
    }

    /// Adds a replacement (again: a no-op).
    pub fn add_replacement(&mut self, member: Member) {
        if self.members().all(|(plan, _)| plan != member.plan) {
            self.replacements.push(member);
        }
    }

    /// Every plan id in the family, the original first.
    pub fn plans(&self) -> impl Iterator<Item = PlanId> + '_ {
        self.members().map(|(plan, _)| plan)
    }

    /// What `transaction` means for this family, if it spends any of its inputs. Its id is
    /// computed only then.
    pub fn check<T: TransactionView + ?Sized>(&self, transaction: &T) -> Option<Outcome> {
        let ours: BTreeSet<OutputId> = self.inputs.iter().copied().collect();
        if !transaction.spends().any(|input| ours.contains(&input)) {
            return None;
        }
        let spent: BTreeSet<OutputId> = transaction.spends().collect();
        let spends_ours = spent == ours && transaction.spends().count() == self.inputs.len();
        let member = spends_ours
            .then(|| {
                self.members()
                    .find(|(_, outputs)| pays(transaction, outputs))
                    .map(|(plan, _)| plan)
            })
            .flatten();
        Some(match member {
            Some(plan) => Outcome::Completed {
                plan,
                tx: transaction.id(),
            },
            None => Outcome::Conflict(transaction.id()),
        })
    }
}

/// Whether `transaction` creates exactly `expected`, in order.
fn pays<T: TransactionView + ?Sized>(transaction: &T, expected: &[ChainOutput]) -> bool {
    let mut expected = expected.iter();
    transaction.outputs().all(|output| {
        expected.next().is_some_and(|planned| {
            planned.script == output.script && planned.amount.to_sat() == output.value
        })
    }) && expected.next().is_none()
}
