//! Our outputs in a block: each output typed External, Branch or Change by the script it pays
//! (`OutputTyping`, from the keys `schema` derives), outputs below `DUST` ignored and counted,
//! and each deposit's InInstruction decoded from its transaction's data (or, when it is invalid,
//! the refund origin the data names). Pure.

use schema::{
    amount::Amount,
    instruction::{refund_origin, RefundableInInstruction},
    keys::NetworkKey,
    plan::{OutputId, OutputKind, PaymentAddress},
    protocol::DUST,
};

use crate::chain::{BlockView, NetworkError, OutputTyping, TransactionView};

/// An output paying one of our keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedOutput {
    /// Where it is.
    pub id: OutputId,
    /// The key it pays.
    pub key: NetworkKey,
    /// What kind of our outputs it is.
    pub kind: OutputKind,
    /// Its value.
    pub amount: Amount,
    /// For a deposit (External), its valid InInstruction, if it carried one.
    pub instruction: Option<RefundableInInstruction>,
    /// For a deposit whose instruction is invalid but names a refund origin: where its funds
    /// go back to, less the fee, once Serai acknowledged its block. Never set with
    /// `instruction`.
    pub refund: Option<PaymentAddress>,
}

/// What a block holds for our keys.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Received {
    /// Our outputs of at least `DUST`, in (transaction, output) order.
    pub outputs: Vec<ReceivedOutput>,
    /// Our outputs below `DUST`, ignored.
    pub dust: u64,
    /// Deposits without data.
    pub missing_instructions: u64,
    /// Deposits whose data is not a valid InInstruction and names no refund origin (funds
    /// kept, nothing reported).
    pub invalid_instructions: u64,
    /// Deposits whose data is not a valid InInstruction but names a refund origin (nothing
    /// reported; refunded once Serai acknowledged their block).
    pub refunds: u64,
}

/// Finds `keys`' outputs in `block`. Only our outputs are copied, and a transaction's id
/// and data are computed only when it pays us.
///
/// # Errors
/// One of our outputs is worth more than the chain's supply: the block is not valid chain
/// data.
pub fn receive<B: BlockView, T: OutputTyping>(
    block: &B,
    keys: &[(NetworkKey, T)],
) -> Result<Received, NetworkError> {
    let mut received = Received::default();
    for transaction in block.transactions() {
        // Computed at the transaction's first output of ours.
        let mut id = None;
        let mut data = None;
        for (vout, output) in (0u32..).zip(transaction.outputs()) {
            let Some((key, kind)) = keys
                .iter()
                .find_map(|(key, typing)| Some((*key, typing.kind_of(output.script)?)))
            else {
                continue;
            };
            let amount = Amount::from_sat(output.value)
                .map_err(|error| NetworkError::Invalid(error.to_string()))?;
            if amount < DUST {
                received.dust += 1;
                continue;
            }
            let txid = *id.get_or_insert_with(|| transaction.id());
            let (instruction, refund) = if kind == OutputKind::External {
                match data.get_or_insert_with(|| transaction.data()) {
                    None => {
                        received.missing_instructions += 1;
                        (None, None)
                    }
                    Some(data) => match RefundableInInstruction::decode(data) {
                        Ok(instruction) => (Some(instruction), None),
                        Err(error) => {
                            let refund = refund_origin(data);
                            if refund.is_some() {
                                received.refunds += 1;
                            } else {
                                received.invalid_instructions += 1;
                            }
                            tracing::info!(
                                txid = %hex_id(&txid.0),
                                vout,
                                %error,
                                refunded = refund.is_some(),
                                "deposit without a valid InInstruction: not reported; refunded to its origin if it names one, else kept"
                            );
                            (None, refund)
                        }
                    },
                }
            } else {
                (None, None)
            };
            received.outputs.push(ReceivedOutput {
                id: OutputId { txid, vout },
                key,
                kind,
                amount,
                instruction,
                refund,
            });
        }
    }
    Ok(received)
}

/// A 32-byte id as Bitcoin displays it (reversed hex).
pub fn hex_id(bytes: &[u8; 32]) -> String {
    bytes
        .iter()
        .rev()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use schema::{hashes::TransactionId, taproot::KeyScripts};

    use super::*;
    use crate::chain::{ChainBlock, ChainOutput, ChainTransaction};

    #[test]
    fn an_invalid_instruction_naming_an_origin_is_refunded_and_one_naming_none_kept() {
        let key = NetworkKey::from(
            bitcoin::secp256k1::SecretKey::from_slice(&[5; 32])
                .unwrap()
                .public_key(&bitcoin::secp256k1::Secp256k1::new()),
        );
        let scripts = KeyScripts::derive(&key).unwrap();
        let origin = PaymentAddress::from_bytes(&[&[0x00, 0x14][..], &[7; 20]].concat()).unwrap();
        // Version 1, refundable, the origin, then a kind no version knows.
        let refundable = [&[1, 1, 22][..], origin.script().as_bytes(), &[7]].concat();
        let deposit = |id: u8, data: Vec<u8>| ChainTransaction {
            id: TransactionId([id; 32]),
            inputs: Vec::new(),
            outputs: vec![ChainOutput {
                script: scripts.script(OutputKind::External).to_bytes(),
                amount: Amount::from_sat(50_000).unwrap(),
            }],
            data: Some(data),
        };
        let block = ChainBlock {
            height: 1,
            hash: [0; 32],
            parent: [0; 32],
            time: 0,
            transactions: vec![deposit(1, refundable), deposit(2, vec![0xff, 1])],
        };
        let received = receive(&block, &[(key, scripts.clone())]).unwrap();
        assert_eq!((received.refunds, received.invalid_instructions), (1, 1));
        assert_eq!(received.outputs[0].refund, Some(origin));
        assert_eq!(received.outputs[0].instruction, None);
        assert_eq!(received.outputs[1].refund, None);
        assert_eq!(received.outputs[1].instruction, None);
    }
}
