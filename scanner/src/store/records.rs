//! The scanner database's own record formats (the values `db` stores that are not Cap'n Proto
//! messages): received outputs, eventualities and spending transactions. Pure: every decoder
//! takes bytes read back from disk, which may be damaged, and answers `None` rather than
//! panicking or allocating more than the bytes hold.

use schema::{
    amount::Amount,
    hashes::{PlanId, TransactionId},
    instruction::RefundableInInstruction,
    keys::NetworkKey,
    plan::{OutputId, OutputKind},
};

use crate::{chain::ChainOutput, scan::eventuality::Eventuality, scan::outputs::ReceivedOutput};

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

/// An output as stored: `key (33) || kind (1) || amount (u64 BE) || instruction (its
/// OP_RETURN encoding), if any`.
pub fn encode_output(output: &ReceivedOutput) -> Vec<u8> {
    let mut value = Vec::with_capacity(42 + 80);
    value.extend_from_slice(&output.key.to_bytes());
    value.push(kind_code(output.kind));
    value.extend_from_slice(&output.amount.to_sat().to_be_bytes());
    if let Some(instruction) = &output.instruction {
        value.extend_from_slice(&instruction.encode());
    }
    value
}

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
        instruction: if rest.is_empty() {
            None
        } else {
            Some(RefundableInInstruction::decode(rest).ok()?)
        },
    })
}

/// An eventuality as stored: `key (33) || inputs and outputs (see encode_io)`.
pub fn encode_eventuality(eventuality: &Eventuality) -> Vec<u8> {
    [
        &eventuality.key.to_bytes()[..],
        &encode_io(&eventuality.inputs, &eventuality.outputs),
    ]
    .concat()
}

/// Reads a stored eventuality back; `None` for bytes `encode_eventuality` did not write.
pub fn decode_eventuality(plan: PlanId, value: &[u8]) -> Option<Eventuality> {
    let (key, rest) = value.split_first_chunk::<33>()?;
    let (inputs, outputs) = decode_io(rest)?;
    Some(Eventuality {
        plan,
        key: NetworkKey::from_slice(key).ok()?,
        inputs,
        outputs,
    })
}

/// A transaction's inputs and outputs as stored: `inputs (u32 BE count, 36 each) || outputs
/// (u32 BE count; amount u64 BE, script length u32 BE, script)`.
pub fn encode_io(inputs: &[OutputId], outputs: &[ChainOutput]) -> Vec<u8> {
    let mut value = Vec::new();
    let count = |len: usize| u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
    value.extend_from_slice(&count(inputs.len()));
    for input in inputs {
        value.extend_from_slice(&input.to_bytes());
    }
    value.extend_from_slice(&count(outputs.len()));
    for output in outputs {
        value.extend_from_slice(&output.amount.to_sat().to_be_bytes());
        value.extend_from_slice(&count(output.script.len()));
        value.extend_from_slice(&output.script);
    }
    value
}

/// Reads stored inputs and outputs back; `None` for bytes `encode_io` did not write. Counts
/// are checked against the bytes as they are read, so a count allocates nothing by itself.
pub fn decode_io(value: &[u8]) -> Option<(Vec<OutputId>, Vec<ChainOutput>)> {
    fn take<'a>(rest: &mut &'a [u8], len: usize) -> Option<&'a [u8]> {
        let (taken, left) = (rest.get(..len)?, rest.get(len..)?);
        *rest = left;
        Some(taken)
    }
    fn count(rest: &mut &[u8]) -> Option<usize> {
        let bytes = <[u8; 4]>::try_from(take(rest, 4)?).ok()?;
        usize::try_from(u32::from_be_bytes(bytes)).ok()
    }
    let mut rest = value;
    let mut inputs = Vec::new();
    for _ in 0..count(&mut rest)? {
        let bytes = take(&mut rest, 36)?;
        inputs.push(OutputId {
            txid: TransactionId(<[u8; 32]>::try_from(bytes.get(..32)?).ok()?),
            vout: u32::from_le_bytes(<[u8; 4]>::try_from(bytes.get(32..)?).ok()?),
        });
    }
    let mut outputs = Vec::new();
    for _ in 0..count(&mut rest)? {
        let amount = u64::from_be_bytes(<[u8; 8]>::try_from(take(&mut rest, 8)?).ok()?);
        let len = count(&mut rest)?;
        outputs.push(ChainOutput {
            amount: Amount::from_sat(amount).ok()?,
            script: take(&mut rest, len)?.to_vec(),
        });
    }
    rest.is_empty().then_some((inputs, outputs))
}
