//! Payments, plans and plan ids (PROTOCOL.md section 5).
//!
//! A plan says which of our outputs to spend, whom to pay and whether change returns to us.
//! Its id is what the validator set acknowledges and what the enclave recomputes before it
//! signs anything; it is defined here, once.

use bitcoin::{Script, ScriptBuf};

use crate::{
    amount::Amount,
    error::ValueError,
    hashes::{PlanId, TransactionId},
    keys::NetworkKey,
    transaction::FeeRate,
    transcript::Transcript,
};

/// The transcript tag of plan ids. Changing it changes every plan id.
pub const PLAN_ID_TAG: &str = "serai-processor/plan-id/v2";

/// One of our outputs on the network: the transaction that created it and its index there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OutputId {
    /// The creating transaction.
    pub txid: TransactionId,
    /// The output's index in it.
    pub vout: u32,
}

impl OutputId {
    /// The canonical 36 bytes: txid in internal order, then the index little endian (Bitcoin's
    /// outpoint serialization).
    pub fn to_bytes(&self) -> [u8; 36] {
        let mut bytes = [0u8; 36];
        let (txid, vout) = bytes.split_at_mut(32);
        txid.copy_from_slice(self.txid.as_bytes());
        vout.copy_from_slice(&self.vout.to_le_bytes());
        bytes
    }
}

/// Which of our addresses an output pays, and so what it is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OutputKind {
    /// A deposit from a user, reported in a Batch.
    External,
    /// Created by one of our plans to fund a branch group of payments.
    Branch,
    /// Change returned to ourselves.
    Change,
}

/// An output a plan spends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PlanInput {
    /// Where it is.
    pub id: OutputId,
    /// Which of our addresses it pays (it decides the key tweak that signs it).
    pub kind: OutputKind,
    /// Its value.
    pub amount: Amount,
}

/// A destination a payment may pay: the output script of a standard address (P2PKH, P2SH,
/// P2WPKH, P2WSH or P2TR). Anything else (`OP_RETURN`, bare scripts, malformed witness
/// programs) is refused, since funds sent there may be lost.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PaymentAddress(ScriptBuf);

impl PaymentAddress {
    /// The address of an output script, refusing scripts that are no standard address.
    pub fn new(script: ScriptBuf) -> Result<Self, ValueError> {
        let standard = script.is_p2pkh()
            || script.is_p2sh()
            || script.is_p2wpkh()
            || script.is_p2wsh()
            || script.is_p2tr();
        if !standard {
            return Err(ValueError {
                what: "payment address",
                reason: "not a standard address script",
            });
        }
        Ok(PaymentAddress(script))
    }

    /// Reads an output script from bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ValueError> {
        PaymentAddress::new(ScriptBuf::from_bytes(bytes.to_vec()))
    }

    /// The output script, the canonical binary form hashed into plan ids.
    pub fn script(&self) -> &Script {
        &self.0
    }
}

impl core::fmt::Debug for PaymentAddress {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "PaymentAddress({})", hex::encode(self.0.as_bytes()))
    }
}

/// A payment to make.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Payment {
    /// Where to.
    pub address: PaymentAddress,
    /// Instruction data for the recipient, if any.
    pub data: Option<Vec<u8>>,
    /// How much, before its share of the fee is taken.
    pub amount: Amount,
}

/// The plan a replacement replaces: the original plan of its family, never itself a
/// replacement. A replacement is its original with another fee rate, so the original is named
/// by its id and its fee rate alone, and anyone holding the replacement can rebuild the original
/// and check that it hashes to that id: same inputs, same payments, same change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Replaces {
    /// The original plan's id.
    pub plan: PlanId,
    /// The original plan's fee rate.
    pub fee_rate: FeeRate,
}

/// What to spend and whom to pay with it, for one key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Plan {
    /// The key whose outputs are spent.
    pub key: NetworkKey,
    /// The outputs spent, in transaction input order.
    pub inputs: Vec<PlanInput>,
    /// The payments made, in transaction output order.
    pub payments: Vec<Payment>,
    /// The key whose change address receives what is left, if anything is to be kept.
    pub change: Option<NetworkKey>,
    /// The fee rate the transaction pays. Part of the id, so that an acknowledged plan fixes
    /// its transaction byte for byte: every attempt signs the same transaction, and another
    /// fee rate is another plan, which needs its own acknowledgement.
    pub fee_rate: FeeRate,
    /// The plan this one replaces at a higher fee (fee bumping by RBF), if it is a replacement.
    /// Part of the id, so an attestation of the replacement's id names what it replaces.
    pub replaces: Option<Replaces>,
}

impl Plan {
    /// The plan's id: the tagged hash (`PLAN_ID_TAG`) of a transcript of, in order, the key,
    /// the number of inputs and each input's id, the number of payments and each payment's
    /// script, data (labelled `data`, or `no-data` when absent) and amount (u64 little
    /// endian), the change key (labelled `change`, or `no-change`), the fee rate (u64 little
    /// endian), and for a replacement only, the original's id (labelled `replaces`) and fee
    /// rate (`replaced_fee_rate`, u64 little endian): a plan that replaces nothing has the id
    /// it had before replacements existed.
    ///
    /// Input kinds and amounts are not part of the id: the BIP341 sighash commits to every
    /// spent output's amount and script, so a plan with wrong ones cannot yield a valid
    /// signature.
    pub fn id(&self) -> PlanId {
        let mut transcript = Transcript::new(PLAN_ID_TAG);
        transcript.append("key", &self.key.to_bytes());
        transcript.append("inputs", &(self.inputs.len() as u64).to_le_bytes());
        for input in &self.inputs {
            transcript.append("input", &input.id.to_bytes());
        }
        transcript.append("payments", &(self.payments.len() as u64).to_le_bytes());
        for payment in &self.payments {
            transcript.append("address", payment.address.script().as_bytes());
            match &payment.data {
                Some(data) => transcript.append("data", data),
                None => transcript.append("no-data", &[]),
            }
            transcript.append("amount", &payment.amount.to_sat().to_le_bytes());
        }
        match &self.change {
            Some(change) => transcript.append("change", &change.to_bytes()),
            None => transcript.append("no-change", &[]),
        }
        transcript.append("fee_rate", &self.fee_rate.0.to_le_bytes());
        if let Some(replaces) = &self.replaces {
            transcript.append("replaces", replaces.plan.as_bytes());
            transcript.append("replaced_fee_rate", &replaces.fee_rate.0.to_le_bytes());
        }
        PlanId(transcript.finish())
    }

    /// The original plan of this plan's family: itself if it replaces nothing, else itself at
    /// the replaced fee rate, without the link. For an honest replacement its id is
    /// `replaces.plan`; one whose is not differs from the plan it names (in what it spends or
    /// pays, or in the fee rate it names for it).
    pub fn original(&self) -> Plan {
        match self.replaces {
            None => self.clone(),
            Some(replaces) => Plan {
                fee_rate: replaces.fee_rate,
                replaces: None,
                ..self.clone()
            },
        }
    }

    /// The id of the family's original plan: what every member's transaction settles, and what
    /// the enclave records the inputs it signs against.
    pub fn family(&self) -> PlanId {
        match &self.replaces {
            Some(replaces) => replaces.plan,
            None => self.id(),
        }
    }

    /// This plan's replacement at `fee_rate`: the same inputs, payments and change, linked to
    /// the family's original.
    pub fn replaced_at(&self, fee_rate: FeeRate) -> Plan {
        let replaces = self.replaces.unwrap_or(Replaces {
            plan: self.id(),
            fee_rate: self.fee_rate,
        });
        Plan {
            fee_rate,
            replaces: Some(replaces),
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(hex_script: &str) -> ScriptBuf {
        ScriptBuf::from_bytes(hex::decode(hex_script).unwrap())
    }

    #[test]
    fn only_standard_address_scripts_are_payment_addresses() {
        let standard = [
            "76a914000102030405060708090a0b0c0d0e0f1011121388ac",
            "a914000102030405060708090a0b0c0d0e0f1011121387",
            "0014000102030405060708090a0b0c0d0e0f10111213",
            "0020000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
            "5120000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
        ];
        for hex_script in standard {
            assert!(
                PaymentAddress::new(script(hex_script)).is_ok(),
                "{hex_script}"
            );
        }
        let refused = [
            "",
            "6a0401020304",                                   // OP_RETURN
            "0015000102030405060708090a0b0c0d0e0f1011121314", // v0 program of 21 bytes
            "5220000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f", // v2
            "51",                                             // OP_TRUE
        ];
        for hex_script in refused {
            assert!(
                PaymentAddress::new(script(hex_script)).is_err(),
                "{hex_script}"
            );
        }
    }

    #[test]
    fn output_ids_serialize_as_outpoints() {
        let id = OutputId {
            txid: TransactionId([7; 32]),
            vout: 0x0102_0304,
        };
        let bytes = id.to_bytes();
        assert_eq!(&bytes[..32], &[7; 32]);
        assert_eq!(&bytes[32..], &[4, 3, 2, 1]);
    }
}
