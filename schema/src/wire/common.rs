//! `Wire` for the identifiers and value types of `common.capnp`.

use super::{check_read_len, read_amount, read_array, read_bytes, require, write_len, Wire};
use crate::{
    batch::{Batch, BatchSignature, SignedBatch},
    error::{DecodeError, EncodeError},
    generated::common_capnp as capnp_common,
    hashes::{BlockHash, PlanId, SeraiAddress, TransactionId},
    ids::{
        Attempt, BatchId, KeyGenId, NetworkId, Participant, SeraiTime, Session, ThresholdParams,
        ValidatorSet,
    },
    instruction::{InInstruction, InInstructionWithBalance, OutInstructionWithBalance},
    keys::{BatchKey, KeyPair, NetworkKey},
    limits::{
        MAX_ADDRESS_LEN, MAX_BATCH_INSTRUCTIONS, MAX_DATA_LEN, MAX_PARTICIPANTS, MAX_PLAN_INPUTS,
        MAX_PLAN_PAYMENTS, MAX_SCRIPT_LEN,
    },
    messages::{key_gen::ShareRepair, substrate::SubstrateContext},
    plan::{OutputId, OutputKind, Payment, PaymentAddress, Plan, PlanInput, Replaces},
    sign_id::{SignId, SignIdPart},
    transaction::FeeRate,
};

impl From<NetworkId> for capnp_common::NetworkId {
    fn from(network: NetworkId) -> Self {
        match network {
            NetworkId::Serai => capnp_common::NetworkId::Serai,
            NetworkId::Bitcoin => capnp_common::NetworkId::Bitcoin,
            NetworkId::Ethereum => capnp_common::NetworkId::Ethereum,
            NetworkId::Monero => capnp_common::NetworkId::Monero,
        }
    }
}

impl From<capnp_common::NetworkId> for NetworkId {
    fn from(network: capnp_common::NetworkId) -> Self {
        match network {
            capnp_common::NetworkId::Serai => NetworkId::Serai,
            capnp_common::NetworkId::Bitcoin => NetworkId::Bitcoin,
            capnp_common::NetworkId::Ethereum => NetworkId::Ethereum,
            capnp_common::NetworkId::Monero => NetworkId::Monero,
        }
    }
}

impl From<OutputKind> for capnp_common::OutputKind {
    fn from(kind: OutputKind) -> Self {
        match kind {
            OutputKind::External => capnp_common::OutputKind::External,
            OutputKind::Branch => capnp_common::OutputKind::Branch,
            OutputKind::Change => capnp_common::OutputKind::Change,
        }
    }
}

impl From<capnp_common::OutputKind> for OutputKind {
    fn from(kind: capnp_common::OutputKind) -> Self {
        match kind {
            capnp_common::OutputKind::External => OutputKind::External,
            capnp_common::OutputKind::Branch => OutputKind::Branch,
            capnp_common::OutputKind::Change => OutputKind::Change,
        }
    }
}

impl Wire for ValidatorSet {
    type Capnp = capnp_common::validator_set::Owned;

    fn write(&self, mut b: capnp_common::validator_set::Builder<'_>) -> Result<(), EncodeError> {
        b.set_session(self.session.0);
        b.set_network(self.network.into());
        Ok(())
    }

    fn read(r: capnp_common::validator_set::Reader<'_>) -> Result<Self, DecodeError> {
        Ok(ValidatorSet {
            session: Session(r.get_session()),
            network: r.get_network()?.into(),
        })
    }
}

impl Wire for KeyGenId {
    type Capnp = capnp_common::key_gen_id::Owned;

    fn write(&self, mut b: capnp_common::key_gen_id::Builder<'_>) -> Result<(), EncodeError> {
        self.set.write(b.reborrow().init_set())?;
        b.set_attempt(self.attempt.0);
        Ok(())
    }

    fn read(r: capnp_common::key_gen_id::Reader<'_>) -> Result<Self, DecodeError> {
        require(r.has_set(), "key gen id set")?;
        Ok(KeyGenId {
            set: ValidatorSet::read(r.get_set()?)?,
            attempt: Attempt(r.get_attempt()),
        })
    }
}

impl Wire for ThresholdParams {
    type Capnp = capnp_common::threshold_params::Owned;

    fn write(&self, mut b: capnp_common::threshold_params::Builder<'_>) -> Result<(), EncodeError> {
        b.set_t(self.t());
        b.set_n(self.n());
        b.set_i(self.i().get());
        Ok(())
    }

    fn read(r: capnp_common::threshold_params::Reader<'_>) -> Result<Self, DecodeError> {
        let i = Participant::new(r.get_i())?;
        Ok(ThresholdParams::new(r.get_t(), r.get_n(), i)?)
    }
}

impl<K: SignIdPart, I: SignIdPart> Wire for SignId<K, I> {
    type Capnp = capnp_common::sign_id::Owned;

    fn write(&self, mut b: capnp_common::sign_id::Builder<'_>) -> Result<(), EncodeError> {
        b.set_key(&self.key.to_part_bytes());
        b.set_id(&self.id.to_part_bytes());
        b.set_attempt(self.attempt.0);
        Ok(())
    }

    fn read(r: capnp_common::sign_id::Reader<'_>) -> Result<Self, DecodeError> {
        Ok(SignId {
            key: K::from_part_bytes(r.get_key()?)?,
            id: I::from_part_bytes(r.get_id()?)?,
            attempt: Attempt(r.get_attempt()),
        })
    }
}

impl Wire for SubstrateContext {
    type Capnp = capnp_common::substrate_context::Owned;

    fn write(
        &self,
        mut b: capnp_common::substrate_context::Builder<'_>,
    ) -> Result<(), EncodeError> {
        b.set_serai_time(self.serai_time.0);
        b.set_network_latest_finalized_block(self.network_latest_finalized_block.as_bytes());
        Ok(())
    }

    fn read(r: capnp_common::substrate_context::Reader<'_>) -> Result<Self, DecodeError> {
        Ok(SubstrateContext {
            serai_time: SeraiTime(r.get_serai_time()),
            network_latest_finalized_block: BlockHash::from_slice(
                r.get_network_latest_finalized_block()?,
            )?,
        })
    }
}

impl Wire for KeyPair {
    type Capnp = capnp_common::key_pair::Owned;

    fn write(&self, mut b: capnp_common::key_pair::Builder<'_>) -> Result<(), EncodeError> {
        b.set_batch_key(self.batch_key.as_bytes());
        b.set_network_key(&self.network_key.to_bytes());
        Ok(())
    }

    fn read(r: capnp_common::key_pair::Reader<'_>) -> Result<Self, DecodeError> {
        Ok(KeyPair {
            batch_key: BatchKey::from_slice(r.get_batch_key()?)?,
            network_key: NetworkKey::from_slice(r.get_network_key()?)?,
        })
    }
}

impl Wire for ShareRepair {
    type Capnp = capnp_common::share_repair::Owned;

    fn write(&self, mut b: capnp_common::share_repair::Builder<'_>) -> Result<(), EncodeError> {
        self.pair.write(b.reborrow().init_key_pair())?;
        b.set_repaired(self.repaired.get());
        let len = write_len("repair helpers", self.helpers.len(), MAX_PARTICIPANTS)?;
        b.set_participants(self.participants);
        b.set_identity(&self.identity);
        b.set_shares(&self.shares);
        let mut helpers = b.init_helpers(len);
        for (index, helper) in (0u32..).zip(&self.helpers) {
            helpers.set(index, helper.get());
        }
        Ok(())
    }

    fn read(r: capnp_common::share_repair::Reader<'_>) -> Result<Self, DecodeError> {
        require(r.has_key_pair(), "repair key pair")?;
        let helpers = r.get_helpers()?;
        check_read_len("repair helpers", helpers.len() as usize, MAX_PARTICIPANTS)?;
        Ok(ShareRepair {
            pair: KeyPair::read(r.get_key_pair()?)?,
            repaired: Participant::new(r.get_repaired())?,
            helpers: helpers
                .iter()
                .map(Participant::new)
                .collect::<Result<_, _>>()?,
            participants: r.get_participants(),
            identity: read_array(r.get_identity()?, "repair identity")?,
            shares: read_array(r.get_shares()?, "repair shares digest")?,
        })
    }
}

impl Wire for OutInstructionWithBalance {
    type Capnp = capnp_common::out_instruction_with_balance::Owned;

    fn write(
        &self,
        mut b: capnp_common::out_instruction_with_balance::Builder<'_>,
    ) -> Result<(), EncodeError> {
        write_len("burn address", self.address.len(), MAX_ADDRESS_LEN)?;
        b.set_address(&self.address);
        match &self.data {
            Some(data) => {
                write_len("burn data", data.len(), MAX_DATA_LEN)?;
                b.reborrow().init_data().set_some(data);
            }
            None => b.reborrow().init_data().set_none(()),
        }
        b.set_amount(self.amount.to_sat());
        Ok(())
    }

    fn read(
        r: capnp_common::out_instruction_with_balance::Reader<'_>,
    ) -> Result<Self, DecodeError> {
        use capnp_common::out_instruction_with_balance::data::Which;
        Ok(OutInstructionWithBalance {
            address: read_bytes(r.get_address(), "burn address", MAX_ADDRESS_LEN)?,
            data: match r.get_data().which()? {
                Which::None(()) => None,
                Which::Some(data) => Some(read_bytes(data, "burn data", MAX_DATA_LEN)?),
            },
            amount: read_amount(r.get_amount())?,
        })
    }
}

impl Wire for InInstructionWithBalance {
    type Capnp = capnp_common::in_instruction_with_balance::Owned;

    fn write(
        &self,
        mut b: capnp_common::in_instruction_with_balance::Builder<'_>,
    ) -> Result<(), EncodeError> {
        match self.instruction {
            InInstruction::Transfer { to } => {
                b.reborrow().init_instruction().set_transfer(to.as_bytes());
            }
        }
        b.set_amount(self.amount.to_sat());
        Ok(())
    }

    fn read(r: capnp_common::in_instruction_with_balance::Reader<'_>) -> Result<Self, DecodeError> {
        require(r.has_instruction(), "in instruction")?;
        let to = SeraiAddress::from_slice(r.get_instruction()?.get_transfer()?)?;
        Ok(InInstructionWithBalance {
            instruction: InInstruction::Transfer { to },
            amount: read_amount(r.get_amount())?,
        })
    }
}

impl Wire for Batch {
    type Capnp = capnp_common::batch::Owned;

    fn write(&self, mut b: capnp_common::batch::Builder<'_>) -> Result<(), EncodeError> {
        b.set_network(self.network.into());
        b.set_id(self.id.0);
        b.set_block(self.block.as_bytes());
        let len = write_len(
            "batch instructions",
            self.instructions.len(),
            MAX_BATCH_INSTRUCTIONS,
        )?;
        let mut list = b.init_instructions(len);
        for (index, instruction) in (0u32..).zip(&self.instructions) {
            instruction.write(list.reborrow().get(index))?;
        }
        Ok(())
    }

    fn read(r: capnp_common::batch::Reader<'_>) -> Result<Self, DecodeError> {
        let list = r.get_instructions()?;
        check_read_len(
            "batch instructions",
            list.len() as usize,
            MAX_BATCH_INSTRUCTIONS,
        )?;
        Ok(Batch {
            network: r.get_network()?.into(),
            id: BatchId(r.get_id()),
            block: BlockHash::from_slice(r.get_block()?)?,
            instructions: list
                .iter()
                .map(InInstructionWithBalance::read)
                .collect::<Result<_, _>>()?,
        })
    }
}

impl Wire for SignedBatch {
    type Capnp = capnp_common::signed_batch::Owned;

    fn write(&self, mut b: capnp_common::signed_batch::Builder<'_>) -> Result<(), EncodeError> {
        self.batch.write(b.reborrow().init_batch())?;
        b.set_signature(&self.signature.0);
        Ok(())
    }

    fn read(r: capnp_common::signed_batch::Reader<'_>) -> Result<Self, DecodeError> {
        require(r.has_batch(), "signed batch batch")?;
        let signature = r.get_signature()?;
        let signature = <[u8; 64]>::try_from(signature).map_err(|_| DecodeError::WrongLength {
            what: "batch signature",
            expected: 64,
            actual: signature.len(),
        })?;
        Ok(SignedBatch {
            batch: Batch::read(r.get_batch()?)?,
            signature: BatchSignature(signature),
        })
    }
}

impl Wire for OutputId {
    type Capnp = capnp_common::output_id::Owned;

    fn write(&self, mut b: capnp_common::output_id::Builder<'_>) -> Result<(), EncodeError> {
        b.set_txid(self.txid.as_bytes());
        b.set_vout(self.vout);
        Ok(())
    }

    fn read(r: capnp_common::output_id::Reader<'_>) -> Result<Self, DecodeError> {
        Ok(OutputId {
            txid: TransactionId::from_slice(r.get_txid()?)?,
            vout: r.get_vout(),
        })
    }
}

impl Wire for PlanInput {
    type Capnp = capnp_common::plan_input::Owned;

    fn write(&self, mut b: capnp_common::plan_input::Builder<'_>) -> Result<(), EncodeError> {
        self.id.write(b.reborrow().init_id())?;
        b.set_kind(self.kind.into());
        b.set_amount(self.amount.to_sat());
        Ok(())
    }

    fn read(r: capnp_common::plan_input::Reader<'_>) -> Result<Self, DecodeError> {
        require(r.has_id(), "plan input id")?;
        Ok(PlanInput {
            id: OutputId::read(r.get_id()?)?,
            kind: r.get_kind()?.into(),
            amount: read_amount(r.get_amount())?,
        })
    }
}

impl Wire for Payment {
    type Capnp = capnp_common::payment::Owned;

    fn write(&self, mut b: capnp_common::payment::Builder<'_>) -> Result<(), EncodeError> {
        b.set_address(self.address.script().as_bytes());
        match &self.data {
            Some(data) => {
                write_len("payment data", data.len(), MAX_DATA_LEN)?;
                b.reborrow().init_data().set_some(data);
            }
            None => b.reborrow().init_data().set_none(()),
        }
        b.set_amount(self.amount.to_sat());
        Ok(())
    }

    fn read(r: capnp_common::payment::Reader<'_>) -> Result<Self, DecodeError> {
        use capnp_common::payment::data::Which;
        let script = r.get_address()?;
        check_read_len("payment address", script.len(), MAX_SCRIPT_LEN)?;
        Ok(Payment {
            address: PaymentAddress::from_bytes(script)?,
            data: match r.get_data().which()? {
                Which::None(()) => None,
                Which::Some(data) => Some(read_bytes(data, "payment data", MAX_DATA_LEN)?),
            },
            amount: read_amount(r.get_amount())?,
        })
    }
}

impl Wire for Plan {
    type Capnp = capnp_common::plan::Owned;

    fn write(&self, mut b: capnp_common::plan::Builder<'_>) -> Result<(), EncodeError> {
        b.set_key(&self.key.to_bytes());
        let inputs = write_len("plan inputs", self.inputs.len(), MAX_PLAN_INPUTS)?;
        let mut list = b.reborrow().init_inputs(inputs);
        for (index, input) in (0u32..).zip(&self.inputs) {
            input.write(list.reborrow().get(index))?;
        }
        let payments = write_len("plan payments", self.payments.len(), MAX_PLAN_PAYMENTS)?;
        let mut list = b.reborrow().init_payments(payments);
        for (index, payment) in (0u32..).zip(&self.payments) {
            payment.write(list.reborrow().get(index))?;
        }
        match &self.change {
            Some(change) => b.reborrow().init_change().set_some(&change.to_bytes()),
            None => b.reborrow().init_change().set_none(()),
        }
        b.set_fee_rate(self.fee_rate.0);
        match &self.replaces {
            Some(replaces) => {
                let mut some = b.reborrow().init_replaces().init_some();
                some.set_plan(replaces.plan.as_bytes());
                some.set_fee_rate(replaces.fee_rate.0);
            }
            None => b.reborrow().init_replaces().set_none(()),
        }
        Ok(())
    }

    fn read(r: capnp_common::plan::Reader<'_>) -> Result<Self, DecodeError> {
        use capnp_common::plan::change::Which;
        let inputs = r.get_inputs()?;
        check_read_len("plan inputs", inputs.len() as usize, MAX_PLAN_INPUTS)?;
        let payments = r.get_payments()?;
        check_read_len("plan payments", payments.len() as usize, MAX_PLAN_PAYMENTS)?;
        Ok(Plan {
            key: NetworkKey::from_slice(r.get_key()?)?,
            inputs: inputs
                .iter()
                .map(PlanInput::read)
                .collect::<Result<_, _>>()?,
            payments: payments
                .iter()
                .map(Payment::read)
                .collect::<Result<_, _>>()?,
            change: match r.get_change().which()? {
                Which::None(()) => None,
                Which::Some(key) => Some(NetworkKey::from_slice(key?)?),
            },
            fee_rate: FeeRate(r.get_fee_rate()),
            replaces: match r.get_replaces().which()? {
                capnp_common::plan::replaces::Which::None(()) => None,
                capnp_common::plan::replaces::Which::Some(replaces) => {
                    let replaces = replaces?;
                    Some(Replaces {
                        plan: PlanId::from_slice(replaces.get_plan()?)?,
                        fee_rate: FeeRate(replaces.get_fee_rate()),
                    })
                }
            },
        })
    }
}
