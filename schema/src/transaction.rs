//! The deterministic plan-to-transaction builder, shared by the scanner (which publishes the
//! transaction and watches for it) and the enclave (which signs only sighashes it computed
//! here itself). The same plan and fee rate give byte-identical transactions everywhere.
//!
//! The transaction: version 2, lock time 0, the plan's inputs in order (sequence
//! `0xfffffffd`, opting in to replacement), then the payments in plan order, then change to
//! the change key's Change address if it is at least `DUST`. Payment data is part of the plan
//! id but not of the transaction. The fee is the fee rate times the exact virtual size with a
//! 64-byte key-path witness per input, and comes out of the payments: split evenly, the
//! remainder to the first. A payment that would fall below `DUST` is dropped (its value stays
//! with us, as change) and the fee is computed again; a plan without payments pays its fee
//! from its change. What cannot pay its fee yields no transaction.

use bitcoin::{
    absolute::LockTime,
    hashes::Hash,
    sighash::{Prevouts, SighashCache},
    transaction::Version,
    OutPoint, Sequence, TapSighashType, Transaction, TxIn, TxOut, Txid, Weight, Witness,
};
use thiserror::Error;

use crate::{
    amount::Amount,
    plan::Plan,
    protocol::DUST,
    taproot::{DerivedKey, KeyDerivationError, KeyScripts},
};

/// The weight one key-path input adds to a transaction: its outpoint, empty script and sequence
/// (41 bytes, times 4) and its witness (item count, length, 64-byte signature: 66), once the
/// input count's encoding does not grow.
pub const KEY_PATH_INPUT_WEIGHT: u64 = 41 * 4 + 66;

/// Bitcoin Core's largest standard transaction weight (`MAX_STANDARD_TX_WEIGHT`).
pub const MAX_STANDARD_TX_WEIGHT: Weight = Weight::from_wu(400_000);

/// A fee rate in satoshis per virtual byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FeeRate(pub u64);

/// What became of one payment of a plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PaymentOutcome {
    /// Paid at output `vout` with `amount`, its share of the fee taken.
    Paid {
        /// The output index.
        vout: u32,
        /// The amount the output carries.
        amount: Amount,
    },
    /// Below `DUST` after its share of the fee: not paid, the value kept.
    Dropped,
}

/// A transaction built from a plan, unsigned, with everything needed to sign it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuiltTransaction {
    /// The transaction, with empty witnesses.
    pub transaction: Transaction,
    /// The outputs the inputs spend, in input order.
    pub prevouts: Vec<TxOut>,
    /// Each input's BIP341 key-path sighash (`SIGHASH_DEFAULT`), in input order.
    pub sighashes: Vec<[u8; 32]>,
    /// The fee paid.
    pub fee: Amount,
    /// The outcome of each payment, in plan order.
    pub payments: Vec<PaymentOutcome>,
    /// The change output's index and amount, if there is one.
    pub change: Option<(u32, Amount)>,
}

impl BuiltTransaction {
    /// The virtual size of the transaction once signed (one 64-byte key-path signature per
    /// input), which its fee was computed for.
    pub fn signed_vsize(&self) -> u64 {
        let mut signed = self.transaction.clone();
        for input in &mut signed.input {
            input.witness = signed_input_template().witness;
        }
        signed.weight().to_vbytes_ceil()
    }

    /// Whether this transaction pays exactly the payments `other` pays, at the same outputs to
    /// the same scripts (amounts aside): none paid in one is dropped in the other.
    pub fn pays_as(&self, other: &BuiltTransaction) -> bool {
        let script = |built: &BuiltTransaction, vout: u32| {
            usize::try_from(vout)
                .ok()
                .and_then(|index| built.transaction.output.get(index))
                .map(|output| output.script_pubkey.clone())
        };
        self.payments.len() == other.payments.len()
            && self
                .payments
                .iter()
                .zip(&other.payments)
                .all(|pair| match pair {
                    (
                        PaymentOutcome::Paid { vout: a, .. },
                        PaymentOutcome::Paid { vout: b, .. },
                    ) => {
                        a == b
                            && script(self, *a).is_some()
                            && script(self, *a) == script(other, *b)
                    }
                    (PaymentOutcome::Dropped, PaymentOutcome::Dropped) => true,
                    _ => false,
                })
    }
}

/// The result of building: a transaction, or why none can exist, with what became of the
/// payments (so a scheduler releases the branch groups of a plan that yields nothing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Built {
    /// The transaction.
    Transaction(BuiltTransaction),
    /// The inputs cannot pay the fee of any transaction with an output above `DUST`; every
    /// payment is `Dropped`.
    NoTransaction {
        /// Every payment, dropped.
        payments: Vec<PaymentOutcome>,
    },
}

/// A plan no transaction can be built from. The scheduler never produces one; an enclave
/// refuses one.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildError {
    /// A plan spends nothing.
    #[error("plan has no inputs")]
    NoInputs,
    /// The payments exceed the inputs.
    #[error("payments of {payments} exceed inputs of {inputs}")]
    InsufficientInputs {
        /// Sum of the inputs.
        inputs: Amount,
        /// Sum of the payments.
        payments: Amount,
    },
    /// Amounts overflowed the money supply.
    #[error("amounts add up to more than 21 million BTC")]
    Overflow,
    /// The transaction would be non-standard.
    #[error("transaction weight {0} exceeds the standard limit")]
    TooHeavy(Weight),
    /// An output index does not fit a `u32`.
    #[error("too many outputs")]
    TooManyOutputs,
    /// Key derivation failed.
    #[error(transparent)]
    Key(#[from] KeyDerivationError),
    /// The sighash could not be computed.
    #[error("sighash: {0}")]
    Sighash(String),
}

/// Builds the transaction of `plan`, at its fee rate.
///
/// # Errors
/// The plan is malformed (see `BuildError`); a well-formed plan that cannot pay its fee is
/// `Ok(Built::NoTransaction)`.
pub fn build(plan: &Plan) -> Result<Built, BuildError> {
    let fee_rate = plan.fee_rate;
    if plan.inputs.is_empty() {
        return Err(BuildError::NoInputs);
    }
    let inputs = sum(plan.inputs.iter().map(|input| input.amount))?;
    let requested = sum(plan.payments.iter().map(|payment| payment.amount))?;
    if requested > inputs {
        return Err(BuildError::InsufficientInputs {
            inputs,
            payments: requested,
        });
    }
    let scripts = KeyScripts::derive(&plan.key)?;
    let input_scripts: Vec<bitcoin::ScriptBuf> = plan
        .inputs
        .iter()
        .map(|input| scripts.script(input.kind).clone())
        .collect();
    let change_script = plan
        .change
        .map(|key| DerivedKey::derive(&key, crate::plan::OutputKind::Change))
        .transpose()?
        .map(|key| key.script_pubkey());

    let mut live: Vec<usize> = (0..plan.payments.len()).collect();
    loop {
        let paid = sum(live
            .iter()
            .filter_map(|&i| plan.payments.get(i))
            .map(|p| p.amount))?;
        let layout = choose_layout(plan, &live, inputs, paid, fee_rate, change_script.as_ref())?;
        let Some(layout) = layout else {
            return Ok(Built::NoTransaction {
                payments: vec![PaymentOutcome::Dropped; plan.payments.len()],
            });
        };
        let shares = split_fee(layout.fee, live.len());
        let mut dropped = Vec::new();
        let mut amounts = Vec::with_capacity(live.len());
        for (&index, share) in live.iter().zip(&shares) {
            let amount = plan
                .payments
                .get(index)
                .map(|payment| payment.amount)
                .and_then(|amount| amount.checked_sub(*share))
                .filter(|amount| *amount >= DUST);
            match amount {
                Some(amount) => amounts.push((index, amount)),
                None => dropped.push(index),
            }
        }
        if !dropped.is_empty() {
            live.retain(|index| !dropped.contains(index));
            continue;
        }
        return assemble(plan, &input_scripts, change_script, layout, &amounts)
            .map(Built::Transaction);
    }
}

/// Whether the transaction has a change output (and its value), and the fee at that size.
struct Layout {
    change: Option<Amount>,
    fee: Amount,
}

/// Picks change or no change for the live payments: change when it is at least `DUST`. With
/// payments, they bear the fee and change is exactly what the inputs hold beyond them; without,
/// change bears the fee.
fn choose_layout(
    plan: &Plan,
    live: &[usize],
    inputs: Amount,
    paid: Amount,
    fee_rate: FeeRate,
    change_script: Option<&bitcoin::ScriptBuf>,
) -> Result<Option<Layout>, BuildError> {
    let payment_scripts: Vec<&bitcoin::Script> = live
        .iter()
        .filter_map(|&i| plan.payments.get(i))
        .map(|payment| payment.address.script())
        .collect();
    if let Some(change_script) = change_script {
        let mut scripts = payment_scripts.clone();
        scripts.push(change_script.as_script());
        let fee = fee_for(weight_of(plan.inputs.len(), &scripts), fee_rate)?;
        let change = if live.is_empty() {
            inputs.checked_sub(fee)
        } else {
            inputs.checked_sub(paid)
        };
        if let Some(change) = change.filter(|change| *change >= DUST) {
            return Ok(Some(Layout {
                change: Some(change),
                fee,
            }));
        }
    }
    if live.is_empty() {
        return Ok(None);
    }
    let fee = fee_for(weight_of(plan.inputs.len(), &payment_scripts), fee_rate)?;
    Ok(Some(Layout { change: None, fee }))
}

/// The weight of a transaction with `inputs` key-path inputs (64-byte witnesses) paying
/// `scripts`.
fn weight_of(inputs: usize, scripts: &[&bitcoin::Script]) -> Weight {
    let skeleton = Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![signed_input_template(); inputs],
        output: scripts
            .iter()
            .map(|script| TxOut {
                value: bitcoin::Amount::ZERO,
                script_pubkey: (*script).to_owned(),
            })
            .collect(),
    };
    skeleton.weight()
}

fn signed_input_template() -> TxIn {
    TxIn {
        previous_output: OutPoint::null(),
        script_sig: bitcoin::ScriptBuf::new(),
        sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
        witness: Witness::from_slice(&[[0u8; 64]]),
    }
}

/// `fee_rate` times the virtual size, rounded up.
fn fee_for(weight: Weight, fee_rate: FeeRate) -> Result<Amount, BuildError> {
    let sats = weight
        .to_vbytes_ceil()
        .checked_mul(fee_rate.0)
        .ok_or(BuildError::Overflow)?;
    Amount::from_sat(sats).map_err(|_| BuildError::Overflow)
}

/// `fee` split over `count` payments: evenly, the remainder to the first.
fn split_fee(fee: Amount, count: usize) -> Vec<Amount> {
    let Ok(count_u64) = u64::try_from(count) else {
        return Vec::new();
    };
    if count_u64 == 0 {
        return Vec::new();
    }
    let share = fee.to_sat() / count_u64;
    let remainder = fee.to_sat() % count_u64;
    (0..count_u64)
        .map(|i| {
            let sats = if i == 0 { share + remainder } else { share };
            Amount::from_sat(sats).unwrap_or(Amount::ZERO)
        })
        .collect()
}

fn sum(mut amounts: impl Iterator<Item = Amount>) -> Result<Amount, BuildError> {
    amounts.try_fold(Amount::ZERO, |total, amount| {
        total.checked_add(amount).ok_or(BuildError::Overflow)
    })
}

/// Builds the final transaction from the chosen layout.
fn assemble(
    plan: &Plan,
    input_scripts: &[bitcoin::ScriptBuf],
    change_script: Option<bitcoin::ScriptBuf>,
    layout: Layout,
    amounts: &[(usize, Amount)],
) -> Result<BuiltTransaction, BuildError> {
    let mut output = Vec::with_capacity(amounts.len() + 1);
    let mut outcomes = vec![PaymentOutcome::Dropped; plan.payments.len()];
    for &(index, amount) in amounts {
        let vout = u32::try_from(output.len()).map_err(|_| BuildError::TooManyOutputs)?;
        if let (Some(payment), Some(outcome)) = (plan.payments.get(index), outcomes.get_mut(index))
        {
            output.push(TxOut {
                value: bitcoin::Amount::from_sat(amount.to_sat()),
                script_pubkey: payment.address.script().to_owned(),
            });
            *outcome = PaymentOutcome::Paid { vout, amount };
        }
    }
    let mut change = None;
    if let (Some(value), Some(script)) = (layout.change, change_script) {
        let vout = u32::try_from(output.len()).map_err(|_| BuildError::TooManyOutputs)?;
        output.push(TxOut {
            value: bitcoin::Amount::from_sat(value.to_sat()),
            script_pubkey: script,
        });
        change = Some((vout, value));
    }
    let paid_out = sum(amounts.iter().map(|(_, amount)| *amount))?;
    let inputs = sum(plan.inputs.iter().map(|input| input.amount))?;

    let mut transaction = Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: plan
            .inputs
            .iter()
            .map(|input| TxIn {
                previous_output: OutPoint {
                    txid: Txid::from_byte_array(input.id.txid.0),
                    vout: input.id.vout,
                },
                script_sig: bitcoin::ScriptBuf::new(),
                sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                witness: Witness::from_slice(&[[0u8; 64]]),
            })
            .collect(),
        output,
    };

    let weight = transaction.weight();
    if weight > MAX_STANDARD_TX_WEIGHT {
        return Err(BuildError::TooHeavy(weight));
    }
    let change_value = change.map_or(Amount::ZERO, |(_, value)| value);
    let fee = inputs
        .checked_sub(paid_out)
        .and_then(|rest| rest.checked_sub(change_value))
        .ok_or(BuildError::Overflow)?;

    for input in &mut transaction.input {
        input.witness = Witness::new();
    }
    let prevouts: Vec<TxOut> = plan
        .inputs
        .iter()
        .zip(input_scripts)
        .map(|(input, script)| TxOut {
            value: bitcoin::Amount::from_sat(input.amount.to_sat()),
            script_pubkey: script.clone(),
        })
        .collect();
    let mut cache = SighashCache::new(&transaction);
    let sighashes = (0..prevouts.len())
        .map(|index| {
            cache
                .taproot_key_spend_signature_hash(
                    index,
                    &Prevouts::All(&prevouts),
                    TapSighashType::Default,
                )
                .map(|hash| hash.to_byte_array())
                .map_err(|error| BuildError::Sighash(error.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;

    Ok(BuiltTransaction {
        transaction,
        prevouts,
        sighashes,
        fee,
        payments: outcomes,
        change,
    })
}
