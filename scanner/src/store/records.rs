//! The scanner database's own record formats (the values `db` stores that are not Cap'n Proto
//! messages): received outputs, eventualities and their outcomes, spending transactions and
//! plan families in flight. Pure: every decoder
//! takes bytes read back from disk, which may be damaged, and answers `None` rather than
//! panicking or allocating more than the bytes hold.

use schema::{
    amount::Amount,
    hashes::{PlanId, TransactionId},
    instruction::RefundableInInstruction,
    keys::NetworkKey,
    plan::{OutputId, OutputKind, PaymentAddress},
};

use crate::{
    chain::{ChainOutput, ChainTransaction},
    scan::eventuality::{Eventuality, Member, Outcome},
    scan::outputs::ReceivedOutput,
    store::{InFlight, Spend},
};

fn kind_code(kind: OutputKind) -> u8 {
    match kind {
        OutputKind::External => 0,
        OutputKind::Branch => 1,
        OutputKind::Change => 2,
    }
}

fn kind_of_code(code: u8) -> Option<OutputKind> {
    match code {
        0 => Some(OutputKind::External),
        1 => Some(OutputKind::Branch),
        2 => Some(OutputKind::Change),
        _ => None,
    }
}

/// An output as stored: `key (33) || kind (1) || amount (u64 BE)`, then its instruction (its
/// OP_RETURN encoding, which starts with its version, 1) if it has one, or `0 || the refund
/// origin's script` if it is to be refunded, or nothing.
pub fn encode_output(output: &ReceivedOutput) -> Vec<u8> {
    let mut value = Vec::with_capacity(42 + 80);
    value.extend_from_slice(&output.key.to_bytes());
    value.push(kind_code(output.kind));
    value.extend_from_slice(&output.amount.to_sat().to_be_bytes());
    if let Some(instruction) = &output.instruction {
        value.extend_from_slice(&instruction.encode());
    } else if let Some(refund) = &output.refund {
        value.push(REFUND_TAG);
        value.extend_from_slice(refund.script().as_bytes());
    }
    value
}

/// Marks a stored output's refund origin; an instruction's encoding starts with its version (1)
/// instead.
const REFUND_TAG: u8 = 0;

/// Reads a stored output back; `None` for bytes `encode_output` did not write.
pub fn decode_output(id: OutputId, value: &[u8]) -> Option<ReceivedOutput> {
    let (key, rest) = value.split_first_chunk::<33>()?;
    let (kind, rest) = rest.split_first()?;
    let (amount, rest) = rest.split_first_chunk::<8>()?;
    Some(ReceivedOutput {
        id,
        key: NetworkKey::from_slice(key).ok()?,
        kind: kind_of_code(*kind)?,
        amount: Amount::from_sat(u64::from_be_bytes(*amount)).ok()?,
        instruction: match rest.first() {
            None | Some(&REFUND_TAG) => None,
            Some(_) => Some(RefundableInInstruction::decode(rest).ok()?),
        },
        refund: match rest.split_first() {
            Some((&REFUND_TAG, script)) => Some(PaymentAddress::from_bytes(script).ok()?),
            _ => None,
        },
    })
}

/// An eventuality as stored: `key (33) || the original's inputs and outputs (see encode_io)
/// || replacements (u32 BE count; each its plan id (32) and outputs, as encode_io with no
/// inputs)`.
pub fn encode_eventuality(eventuality: &Eventuality) -> Vec<u8> {
    let mut value = [
        &eventuality.key.to_bytes()[..],
        &encode_io(&eventuality.inputs, &eventuality.outputs),
    ]
    .concat();
    value.extend_from_slice(&count_bytes(eventuality.replacements.len()));
    for member in &eventuality.replacements {
        value.extend_from_slice(member.plan.as_bytes());
        value.extend_from_slice(&encode_io(&[], &member.outputs));
    }
    value
}

/// Reads a stored eventuality back; `None` for bytes `encode_eventuality` did not write.
pub fn decode_eventuality(plan: PlanId, value: &[u8]) -> Option<Eventuality> {
    let (key, mut rest) = value.split_first_chunk::<33>()?;
    let (inputs, outputs) = read_io(&mut rest)?;
    let mut replacements = Vec::new();
    for _ in 0..read_count(&mut rest)? {
        let id = <[u8; 32]>::try_from(take(&mut rest, 32)?).ok()?;
        let (none, outputs) = read_io(&mut rest)?;
        if !none.is_empty() {
            return None;
        }
        replacements.push(Member {
            plan: PlanId(id),
            outputs,
        });
    }
    rest.is_empty().then_some(Eventuality {
        plan,
        key: NetworkKey::from_slice(key).ok()?,
        inputs,
        outputs,
        replacements,
    })
}

/// An outcome as stored: `0 || member plan id (32) || transaction id (32)` for a completion,
/// `1 || transaction id (32)` for a conflict.
pub fn encode_outcome(outcome: &Outcome) -> Vec<u8> {
    match outcome {
        Outcome::Completed { plan, tx } => [&[0u8][..], plan.as_bytes(), &tx.0].concat(),
        Outcome::Conflict(tx) => [&[1u8][..], &tx.0].concat(),
    }
}

/// Reads a stored outcome back; `None` for bytes `encode_outcome` did not write.
pub fn decode_outcome(value: &[u8]) -> Option<Outcome> {
    match value.split_first()? {
        (0, rest) => {
            let (plan, tx) = rest.split_first_chunk::<32>()?;
            Some(Outcome::Completed {
                plan: PlanId(*plan),
                tx: TransactionId(<[u8; 32]>::try_from(tx).ok()?),
            })
        }
        (1, tx) => Some(Outcome::Conflict(TransactionId(
            <[u8; 32]>::try_from(tx).ok()?,
        ))),
        _ => None,
    }
}

/// The spend of one of our outputs as stored: `height (u64 BE) || transaction id (32) || its
/// inputs and outputs (see encode_io)`.
pub fn encode_spend(spend: &Spend) -> Vec<u8> {
    [
        &spend.height.to_be_bytes()[..],
        &spend.transaction.id.0,
        &encode_io(&spend.transaction.inputs, &spend.transaction.outputs),
    ]
    .concat()
}

/// Reads a stored spend back; `None` for bytes `encode_spend` did not write.
pub fn decode_spend(value: &[u8]) -> Option<Spend> {
    let (height, rest) = value.split_first_chunk::<8>()?;
    let (id, rest) = rest.split_first_chunk::<32>()?;
    let (inputs, outputs) = decode_io(rest)?;
    Some(Spend {
        height: u64::from_be_bytes(*height),
        transaction: ChainTransaction {
            id: TransactionId(*id),
            inputs,
            outputs,
            data: None,
        },
    })
}

/// A plan family in flight as stored, by its original's id: `key (33) || latest member (32)
/// || made at (u64 BE) || latest made at (u64 BE) [|| child (32)]`, the child only when one
/// was made (so a family stored before children existed reads as one without).
pub fn encode_flight(flight: &InFlight) -> Vec<u8> {
    [
        &flight.key.to_bytes()[..],
        flight.latest.as_bytes(),
        &flight.made_at.to_be_bytes(),
        &flight.since.to_be_bytes(),
        flight
            .child
            .as_ref()
            .map_or(&[][..], |child| child.as_bytes()),
    ]
    .concat()
}

/// Reads a stored family in flight back; `None` for bytes `encode_flight` did not write.
pub fn decode_flight(family: PlanId, value: &[u8]) -> Option<InFlight> {
    let (key, rest) = value.split_first_chunk::<33>()?;
    let (latest, rest) = rest.split_first_chunk::<32>()?;
    let (made_at, rest) = rest.split_first_chunk::<8>()?;
    let (since, rest) = rest.split_first_chunk::<8>()?;
    let child = match rest.len() {
        0 => None,
        _ => Some(PlanId(<[u8; 32]>::try_from(rest).ok()?)),
    };
    Some(InFlight {
        family,
        key: NetworkKey::from_slice(key).ok()?,
        latest: PlanId(*latest),
        made_at: u64::from_be_bytes(*made_at),
        since: u64::from_be_bytes(*since),
        child,
    })
}

fn count_bytes(len: usize) -> [u8; 4] {
    u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes()
}

fn take<'a>(rest: &mut &'a [u8], len: usize) -> Option<&'a [u8]> {
    let (taken, left) = (rest.get(..len)?, rest.get(len..)?);
    *rest = left;
    Some(taken)
}

fn read_count(rest: &mut &[u8]) -> Option<usize> {
    let bytes = <[u8; 4]>::try_from(take(rest, 4)?).ok()?;
    usize::try_from(u32::from_be_bytes(bytes)).ok()
}

/// A transaction's inputs and outputs as stored: `inputs (u32 BE count, 36 each) || outputs
/// (u32 BE count; amount u64 BE, script length u32 BE, script)`.
pub fn encode_io(inputs: &[OutputId], outputs: &[ChainOutput]) -> Vec<u8> {
    let mut value = Vec::new();
    value.extend_from_slice(&count_bytes(inputs.len()));
    for input in inputs {
        value.extend_from_slice(&input.to_bytes());
    }
    value.extend_from_slice(&count_bytes(outputs.len()));
    for output in outputs {
        value.extend_from_slice(&output.amount.to_sat().to_be_bytes());
        value.extend_from_slice(&count_bytes(output.script.len()));
        value.extend_from_slice(&output.script);
    }
    value
}

/// Reads stored inputs and outputs back; `None` for bytes `encode_io` did not write. Counts
/// are checked against the bytes as they are read, so a count allocates nothing by itself.
pub fn decode_io(value: &[u8]) -> Option<(Vec<OutputId>, Vec<ChainOutput>)> {
    let mut rest = value;
    let io = read_io(&mut rest)?;
    rest.is_empty().then_some(io)
}

/// Reads one `encode_io` encoding off the front of `rest`.
fn read_io(rest: &mut &[u8]) -> Option<(Vec<OutputId>, Vec<ChainOutput>)> {
    let mut inputs = Vec::new();
    for _ in 0..read_count(rest)? {
        let bytes = take(rest, 36)?;
        inputs.push(OutputId {
            txid: TransactionId(<[u8; 32]>::try_from(bytes.get(..32)?).ok()?),
            vout: u32::from_le_bytes(<[u8; 4]>::try_from(bytes.get(32..)?).ok()?),
        });
    }
    let mut outputs = Vec::new();
    for _ in 0..read_count(rest)? {
        let amount = u64::from_be_bytes(<[u8; 8]>::try_from(take(rest, 8)?).ok()?);
        let len = read_count(rest)?;
        outputs.push(ChainOutput {
            amount: Amount::from_sat(amount).ok()?,
            script: take(rest, len)?.to_vec(),
        });
    }
    Some((inputs, outputs))
}
