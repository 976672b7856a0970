//! InInstructions (what a deposit asks of the Serai chain) and their compact encoding in a
//! deposit's `OP_RETURN`; and burns (what the Serai chain asks of us).
//!
//! The `OP_RETURN` encoding, version 1:
//!
//! ```text
//! 0x01                       version
//! then one of
//!   0x00 to[32]              Transfer
//!   0x01 len origin[len] I   Refundable: 1 <= len <= 42, origin a standard output script,
//!                            I a non-refundable instruction (0x00 to[32])
//! ```
//!
//! At most `MAX_IN_INSTRUCTION_LEN` (80) bytes. Decoding is strict: unknown versions or kinds,
//! truncation, trailing bytes and nested wrappers are errors, so each instruction has exactly
//! one encoding.

use thiserror::Error;

use crate::{
    amount::Amount, hashes::SeraiAddress, limits::MAX_IN_INSTRUCTION_LEN, limits::MAX_SCRIPT_LEN,
    plan::PaymentAddress,
};

/// The only encoding version this processor writes and reads.
pub const IN_INSTRUCTION_VERSION: u8 = 1;

const KIND_TRANSFER: u8 = 0;
const KIND_REFUNDABLE: u8 = 1;

/// What a deposit asks the Serai chain to do with its funds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InInstruction {
    /// Credit the deposit to a Serai account.
    Transfer {
        /// The account.
        to: SeraiAddress,
    },
}

/// An InInstruction as a deposit carries it: optionally with an address to refund to should
/// the instruction fail on Serai. The origin stays with the processor; the Batch carries only
/// the instruction.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RefundableInInstruction {
    /// Where to send the funds back, if the depositor named a place.
    pub origin: Option<PaymentAddress>,
    /// What to do.
    pub instruction: InInstruction,
}

/// Why `OP_RETURN` data is not a valid InInstruction. The deposit's funds are kept either way;
/// only the instruction is not reported.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum InInstructionError {
    /// Longer than `MAX_IN_INSTRUCTION_LEN`.
    #[error("instruction of {0} bytes exceeds the 80 byte limit")]
    TooLong(usize),
    /// Ended before a complete instruction.
    #[error("instruction truncated")]
    Truncated,
    /// A version this processor does not know.
    #[error("unknown instruction version {0}")]
    UnknownVersion(u8),
    /// A kind this version does not know.
    #[error("unknown instruction kind {0}")]
    UnknownKind(u8),
    /// A refundable wrapper inside another one.
    #[error("refundable instruction nested in a refundable instruction")]
    NestedRefundable,
    /// The refund origin is empty, too long, or no standard address script.
    #[error("invalid refund origin")]
    InvalidOrigin,
    /// Bytes after a complete instruction.
    #[error("{0} trailing bytes after the instruction")]
    TrailingBytes(usize),
}

impl InInstruction {
    fn write(&self, out: &mut Vec<u8>) {
        match self {
            InInstruction::Transfer { to } => {
                out.push(KIND_TRANSFER);
                out.extend_from_slice(to.as_bytes());
            }
        }
    }

    /// Reads a non-refundable instruction off the front of `bytes`, returning the rest.
    fn read(bytes: &[u8]) -> Result<(Self, &[u8]), InInstructionError> {
        let (&kind, rest) = bytes.split_first().ok_or(InInstructionError::Truncated)?;
        match kind {
            KIND_TRANSFER => {
                let (to, rest) = rest
                    .split_first_chunk::<32>()
                    .ok_or(InInstructionError::Truncated)?;
                Ok((
                    InInstruction::Transfer {
                        to: SeraiAddress(*to),
                    },
                    rest,
                ))
            }
            KIND_REFUNDABLE => Err(InInstructionError::NestedRefundable),
            other => Err(InInstructionError::UnknownKind(other)),
        }
    }
}

impl RefundableInInstruction {
    /// The `OP_RETURN` payload. Never longer than 80 bytes: the longest origin (42 bytes) with
    /// a transfer is 78.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MAX_IN_INSTRUCTION_LEN);
        out.push(IN_INSTRUCTION_VERSION);
        if let Some(origin) = &self.origin {
            let script = origin.script().as_bytes();
            out.push(KIND_REFUNDABLE);
            // A standard address script is at most MAX_SCRIPT_LEN (42) bytes.
            out.push(u8::try_from(script.len()).unwrap_or(u8::MAX));
            out.extend_from_slice(script);
        }
        self.instruction.write(&mut out);
        out
    }

    /// Reads an `OP_RETURN` payload.
    pub fn decode(bytes: &[u8]) -> Result<Self, InInstructionError> {
        if bytes.len() > MAX_IN_INSTRUCTION_LEN {
            return Err(InInstructionError::TooLong(bytes.len()));
        }
        let (&version, rest) = bytes.split_first().ok_or(InInstructionError::Truncated)?;
        if version != IN_INSTRUCTION_VERSION {
            return Err(InInstructionError::UnknownVersion(version));
        }
        let (origin, rest) = match rest.split_first() {
            Some((&KIND_REFUNDABLE, rest)) => {
                let (&len, rest) = rest.split_first().ok_or(InInstructionError::Truncated)?;
                let len = usize::from(len);
                if len == 0 || len > MAX_SCRIPT_LEN {
                    return Err(InInstructionError::InvalidOrigin);
                }
                if rest.len() < len {
                    return Err(InInstructionError::Truncated);
                }
                let (script, rest) = rest.split_at(len);
                let origin = PaymentAddress::from_bytes(script)
                    .map_err(|_| InInstructionError::InvalidOrigin)?;
                (Some(origin), rest)
            }
            _ => (None, rest),
        };
        let (instruction, rest) = InInstruction::read(rest)?;
        if !rest.is_empty() {
            return Err(InInstructionError::TrailingBytes(rest.len()));
        }
        Ok(RefundableInInstruction {
            origin,
            instruction,
        })
    }
}

/// The refund origin a deposit's `OP_RETURN` payload names, read from its header alone
/// (version, the refundable kind, the origin) whatever follows: the origin of a deposit whose
/// instruction is invalid or too long is still where its funds go back to. `None` when the
/// payload has no refundable header with a standard address script.
pub fn refund_origin(bytes: &[u8]) -> Option<PaymentAddress> {
    let (&IN_INSTRUCTION_VERSION, rest) = bytes.split_first()? else {
        return None;
    };
    let (&KIND_REFUNDABLE, rest) = rest.split_first()? else {
        return None;
    };
    let (&len, rest) = rest.split_first()?;
    let len = usize::from(len);
    if len == 0 || len > MAX_SCRIPT_LEN {
        return None;
    }
    PaymentAddress::from_bytes(rest.get(..len)?).ok()
}

/// A deposit's instruction with the amount it credits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct InInstructionWithBalance {
    /// What to do.
    pub instruction: InInstruction,
    /// With how much.
    pub amount: Amount,
}

/// A burn on the Serai chain: pay `amount` to `address` on this network.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OutInstructionWithBalance {
    /// The address string in the network's own encoding (for Bitcoin, base58 or bech32),
    /// unparsed: the processor parses it for its configured network and drops burns it
    /// cannot parse.
    pub address: Vec<u8>,
    /// Instruction data for the recipient, if any.
    pub data: Option<Vec<u8>>,
    /// How much.
    pub amount: Amount,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transfer(byte: u8) -> InInstruction {
        InInstruction::Transfer {
            to: SeraiAddress([byte; 32]),
        }
    }

    #[test]
    fn transfer_encoding_is_fixed() {
        let plain = RefundableInInstruction {
            origin: None,
            instruction: transfer(0xab),
        };
        let mut expected = vec![1, 0];
        expected.extend_from_slice(&[0xab; 32]);
        assert_eq!(plain.encode(), expected);
        assert_eq!(RefundableInInstruction::decode(&expected), Ok(plain));
    }

    #[test]
    fn a_refund_origin_is_read_from_the_header_whatever_follows() {
        let origin = PaymentAddress::from_bytes(&[&[0x00, 0x14][..], &[7; 20]].concat()).unwrap();
        let valid = RefundableInInstruction {
            origin: Some(origin.clone()),
            instruction: InInstruction::Transfer {
                to: SeraiAddress([1; 32]),
            },
        }
        .encode();
        assert_eq!(refund_origin(&valid), Some(origin.clone()));
        // An unknown instruction kind, a truncated one, one far too long: the origin stands.
        let header = &valid[..3 + 22];
        for tail in [&[0x07, 1, 2][..], &[0x00, 1][..], &[0x00; 200][..]] {
            let payload = [header, tail].concat();
            assert!(RefundableInInstruction::decode(&payload).is_err());
            assert_eq!(refund_origin(&payload), Some(origin.clone()));
        }
        // No refundable header, a cut origin, an origin that is no address: nothing to refund.
        let plain = RefundableInInstruction {
            origin: None,
            instruction: InInstruction::Transfer {
                to: SeraiAddress([1; 32]),
            },
        }
        .encode();
        assert_eq!(refund_origin(&plain), None);
        assert_eq!(refund_origin(&valid[..3 + 21]), None);
        assert_eq!(refund_origin(&[1, 1, 3, 0x51, 0x51, 0x51, 0]), None);
        assert_eq!(refund_origin(&[2, 1, 22]), None);
        assert_eq!(refund_origin(&[]), None);
    }

    #[test]
    fn the_longest_refundable_instruction_fits_80_bytes() {
        let mut script = vec![0x00, 0x20];
        script.extend_from_slice(&[9; 32]);
        let refundable = RefundableInInstruction {
            origin: Some(PaymentAddress::from_bytes(&script).unwrap()),
            instruction: transfer(1),
        };
        let encoded = refundable.encode();
        assert_eq!(encoded.len(), 1 + 1 + 1 + 34 + 1 + 32);
        assert!(encoded.len() <= MAX_IN_INSTRUCTION_LEN);
        assert_eq!(RefundableInInstruction::decode(&encoded), Ok(refundable));
    }

    #[test]
    fn malformed_payloads_are_errors() {
        let mut valid = vec![1, 0];
        valid.extend_from_slice(&[0; 32]);
        let cases: Vec<(Vec<u8>, InInstructionError)> = vec![
            (vec![], InInstructionError::Truncated),
            (vec![1], InInstructionError::Truncated),
            (vec![2, 0], InInstructionError::UnknownVersion(2)),
            (vec![1, 7], InInstructionError::UnknownKind(7)),
            (valid[..33].to_vec(), InInstructionError::Truncated),
            (
                [valid.as_slice(), &[0]].concat(),
                InInstructionError::TrailingBytes(1),
            ),
            (vec![0; 81], InInstructionError::TooLong(81)),
            (vec![1, 1, 0], InInstructionError::InvalidOrigin),
            (vec![1, 1, 43], InInstructionError::InvalidOrigin),
            (vec![1, 1, 22, 0x00], InInstructionError::Truncated),
            // An OP_RETURN script is no standard address.
            (
                [&[1u8, 1, 2, 0x6a, 0x00][..], &valid[1..]].concat(),
                InInstructionError::InvalidOrigin,
            ),
        ];
        for (bytes, error) in cases {
            assert_eq!(
                RefundableInInstruction::decode(&bytes),
                Err(error),
                "{bytes:?}"
            );
        }

        let mut script = vec![0x00, 0x14];
        script.extend_from_slice(&[3; 20]);
        let mut nested = vec![1, 1, 22];
        nested.extend_from_slice(&script);
        nested.extend_from_slice(&[1, 22]);
        assert_eq!(
            RefundableInInstruction::decode(&nested),
            Err(InInstructionError::NestedRefundable)
        );
    }
}
