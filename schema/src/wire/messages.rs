//! `Wire` for the messages of `messages.capnp`.

use super::{
    check_read_len, participant_map_len, read_array, read_attestation, read_bytes,
    read_participant_map, require, write_len, write_participant_map, Wire,
};
use crate::{
    batch::SignedBatch,
    error::{DecodeError, EncodeError},
    generated::messages_capnp as m,
    hashes::{BlockHash, PlanId, TransactionId},
    ids::{
        BatchId, KeyGenId, MessageId, Participant, SeraiBlockNumber, ThresholdParams, ValidatorSet,
    },
    instruction::OutInstructionWithBalance,
    keys::{BatchKey, KeyPair, NetworkKey},
    limits::{MAX_BLOB_LEN, MAX_BURNS, MAX_PARTICIPANTS, MAX_PLANS_PER_BLOCK},
    messages::{
        coordinator::{self, PlansAcknowledged, SubstrateBlockAck},
        key_gen::{self, ShareRepair},
        sign, substrate,
        substrate::SubstrateContext,
        CoordinatorEnvelope, CoordinatorMessage, ProcessorEnvelope, ProcessorMessage,
    },
    sign_id::{BatchSignId, PlanSignId},
};

fn write_plan_ids(plans: &[PlanId], mut list: capnp::data_list::Builder<'_>) {
    for (index, plan) in (0u32..).zip(plans) {
        list.set(index, plan.as_bytes());
    }
}

fn read_plan_ids(
    list: capnp::Result<capnp::data_list::Reader<'_>>,
) -> Result<Vec<PlanId>, DecodeError> {
    let list = list?;
    check_read_len("plan ids", list.len() as usize, MAX_PLANS_PER_BLOCK)?;
    list.iter().map(|id| PlanId::from_slice(id?)).collect()
}

fn read_blob(
    data: capnp::Result<capnp::data::Reader<'_>>,
    what: &'static str,
) -> Result<Vec<u8>, DecodeError> {
    read_bytes(data, what, MAX_BLOB_LEN)
}

/// The number of identities, refusing more than a set has participants.
fn identities_len(identities: &[[u8; 32]]) -> Result<u32, EncodeError> {
    write_len("identities", identities.len(), MAX_PARTICIPANTS)
}

fn write_identities(identities: &[[u8; 32]], mut list: capnp::data_list::Builder<'_>) {
    for (index, identity) in (0u32..).zip(identities) {
        list.set(index, identity);
    }
}

/// At most `MAX_PARTICIPANTS` identities of 32 bytes each.
fn read_identities(
    list: capnp::Result<capnp::data_list::Reader<'_>>,
) -> Result<Vec<[u8; 32]>, DecodeError> {
    let list = list?;
    check_read_len("identities", list.len() as usize, MAX_PARTICIPANTS)?;
    list.iter()
        .map(|identity| read_array(identity?, "identity"))
        .collect()
}

fn write_blob<'a>(what: &'static str, blob: &'a [u8]) -> Result<&'a [u8], EncodeError> {
    write_len(what, blob.len(), MAX_BLOB_LEN)?;
    Ok(blob)
}

impl Wire for key_gen::CoordinatorMessage {
    type Capnp = m::key_gen_to_processor::Owned;

    fn write(&self, b: m::key_gen_to_processor::Builder<'_>) -> Result<(), EncodeError> {
        match self {
            key_gen::CoordinatorMessage::GenerateKey { id, params } => {
                let mut g = b.init_generate_key();
                id.write(g.reborrow().init_id())?;
                params.write(g.init_params())
            }
            key_gen::CoordinatorMessage::Commitments { id, commitments } => {
                let mut g = b.init_commitments();
                id.write(g.reborrow().init_id())?;
                write_participant_map(
                    commitments,
                    g.init_commitments(participant_map_len(commitments)?),
                )
            }
            key_gen::CoordinatorMessage::Shares { id, shares } => {
                let mut g = b.init_shares();
                id.write(g.reborrow().init_id())?;
                write_participant_map(shares, g.init_shares(participant_map_len(shares)?))
            }
            key_gen::CoordinatorMessage::RepairBegin { id, repair } => {
                let mut g = b.init_repair_begin();
                id.write(g.reborrow().init_id())?;
                repair.write(g.init_repair())
            }
            key_gen::CoordinatorMessage::RepairHelp {
                id,
                repair,
                fresh_key,
                fresh_key_signature,
                attestation,
            } => {
                let mut g = b.init_repair_help();
                id.write(g.reborrow().init_id())?;
                repair.write(g.reborrow().init_repair())?;
                g.set_fresh_key(write_blob("fresh key", fresh_key)?);
                g.set_fresh_key_signature(fresh_key_signature);
                g.set_attestation(&attestation.0);
                Ok(())
            }
            key_gen::CoordinatorMessage::RepairParts { id, parts } => {
                let mut g = b.init_repair_parts();
                id.write(g.reborrow().init_id())?;
                write_participant_map(parts, g.init_parts(participant_map_len(parts)?))
            }
            key_gen::CoordinatorMessage::RepairAnswers {
                id,
                answers,
                attestation,
            } => {
                let mut g = b.init_repair_answers();
                id.write(g.reborrow().init_id())?;
                g.set_attestation(&attestation.0);
                write_participant_map(answers, g.init_answers(participant_map_len(answers)?))
            }
            key_gen::CoordinatorMessage::RefreshBegin {
                id,
                pair,
                shares,
                identities,
                attestation,
            } => {
                let mut g = b.init_refresh_begin();
                id.write(g.reborrow().init_id())?;
                pair.write(g.reborrow().init_key_pair())?;
                g.set_shares(shares);
                g.set_attestation(&attestation.0);
                write_identities(identities, g.init_identities(identities_len(identities)?));
                Ok(())
            }
            key_gen::CoordinatorMessage::RefreshKeys { id, keys } => {
                let mut g = b.init_refresh_keys();
                id.write(g.reborrow().init_id())?;
                write_participant_map(keys, g.init_keys(participant_map_len(keys)?))
            }
            key_gen::CoordinatorMessage::RefreshDeals { id, deals } => {
                let mut g = b.init_refresh_deals();
                id.write(g.reborrow().init_id())?;
                write_participant_map(deals, g.init_deals(participant_map_len(deals)?))
            }
            key_gen::CoordinatorMessage::RefreshConfirm {
                id,
                pair,
                digest,
                signatures,
                identities,
                attestation,
            } => {
                let mut g = b.init_refresh_confirm();
                id.write(g.reborrow().init_id())?;
                pair.write(g.reborrow().init_key_pair())?;
                g.set_digest(digest);
                g.set_attestation(&attestation.0);
                write_identities(
                    identities,
                    g.reborrow().init_identities(identities_len(identities)?),
                );
                write_participant_map(
                    signatures,
                    g.init_signatures(participant_map_len(signatures)?),
                )
            }
        }
    }

    fn read(r: m::key_gen_to_processor::Reader<'_>) -> Result<Self, DecodeError> {
        use m::key_gen_to_processor::Which;
        Ok(match r.which()? {
            Which::GenerateKey(g) => {
                require(g.has_id(), "generate key id")?;
                require(g.has_params(), "generate key params")?;
                key_gen::CoordinatorMessage::GenerateKey {
                    id: KeyGenId::read(g.get_id()?)?,
                    params: ThresholdParams::read(g.get_params()?)?,
                }
            }
            Which::Commitments(g) => {
                require(g.has_id(), "commitments id")?;
                key_gen::CoordinatorMessage::Commitments {
                    id: KeyGenId::read(g.get_id()?)?,
                    commitments: read_participant_map(g.get_commitments())?,
                }
            }
            Which::Shares(g) => {
                require(g.has_id(), "shares id")?;
                key_gen::CoordinatorMessage::Shares {
                    id: KeyGenId::read(g.get_id()?)?,
                    shares: read_participant_map(g.get_shares())?,
                }
            }
            Which::RepairBegin(g) => {
                require(g.has_id(), "repair begin id")?;
                require(g.has_repair(), "repair begin repair")?;
                key_gen::CoordinatorMessage::RepairBegin {
                    id: KeyGenId::read(g.get_id()?)?,
                    repair: ShareRepair::read(g.get_repair()?)?,
                }
            }
            Which::RepairHelp(g) => {
                require(g.has_id(), "repair help id")?;
                require(g.has_repair(), "repair help repair")?;
                key_gen::CoordinatorMessage::RepairHelp {
                    id: KeyGenId::read(g.get_id()?)?,
                    repair: ShareRepair::read(g.get_repair()?)?,
                    fresh_key: read_blob(g.get_fresh_key(), "fresh key")?,
                    fresh_key_signature: read_array(
                        g.get_fresh_key_signature()?,
                        "fresh key signature",
                    )?,
                    attestation: read_attestation(g.get_attestation()?)?,
                }
            }
            Which::RepairParts(g) => {
                require(g.has_id(), "repair parts id")?;
                key_gen::CoordinatorMessage::RepairParts {
                    id: KeyGenId::read(g.get_id()?)?,
                    parts: read_participant_map(g.get_parts())?,
                }
            }
            Which::RepairAnswers(g) => {
                require(g.has_id(), "repair answers id")?;
                key_gen::CoordinatorMessage::RepairAnswers {
                    id: KeyGenId::read(g.get_id()?)?,
                    answers: read_participant_map(g.get_answers())?,
                    attestation: read_attestation(g.get_attestation()?)?,
                }
            }
            Which::RefreshBegin(g) => {
                require(g.has_id(), "refresh begin id")?;
                require(g.has_key_pair(), "refresh begin key pair")?;
                key_gen::CoordinatorMessage::RefreshBegin {
                    id: KeyGenId::read(g.get_id()?)?,
                    pair: KeyPair::read(g.get_key_pair()?)?,
                    shares: read_array(g.get_shares()?, "shares digest")?,
                    identities: read_identities(g.get_identities())?,
                    attestation: read_attestation(g.get_attestation()?)?,
                }
            }
            Which::RefreshKeys(g) => {
                require(g.has_id(), "refresh keys id")?;
                key_gen::CoordinatorMessage::RefreshKeys {
                    id: KeyGenId::read(g.get_id()?)?,
                    keys: read_participant_map(g.get_keys())?,
                }
            }
            Which::RefreshDeals(g) => {
                require(g.has_id(), "refresh deals id")?;
                key_gen::CoordinatorMessage::RefreshDeals {
                    id: KeyGenId::read(g.get_id()?)?,
                    deals: read_participant_map(g.get_deals())?,
                }
            }
            Which::RefreshConfirm(g) => {
                require(g.has_id(), "refresh confirm id")?;
                require(g.has_key_pair(), "refresh confirm key pair")?;
                key_gen::CoordinatorMessage::RefreshConfirm {
                    id: KeyGenId::read(g.get_id()?)?,
                    pair: KeyPair::read(g.get_key_pair()?)?,
                    digest: read_array(g.get_digest()?, "digest")?,
                    signatures: read_participant_map(g.get_signatures())?,
                    identities: read_identities(g.get_identities())?,
                    attestation: read_attestation(g.get_attestation()?)?,
                }
            }
        })
    }
}

impl Wire for key_gen::ProcessorMessage {
    type Capnp = m::key_gen_from_processor::Owned;

    fn write(&self, b: m::key_gen_from_processor::Builder<'_>) -> Result<(), EncodeError> {
        match self {
            key_gen::ProcessorMessage::Commitments { id, commitments } => {
                let mut g = b.init_commitments();
                id.write(g.reborrow().init_id())?;
                g.set_commitments(write_blob("commitments", commitments)?);
            }
            key_gen::ProcessorMessage::Shares { id, shares } => {
                let mut g = b.init_shares();
                id.write(g.reborrow().init_id())?;
                write_participant_map(shares, g.init_shares(participant_map_len(shares)?))?;
            }
            key_gen::ProcessorMessage::GeneratedKeyPair {
                id,
                batch_key,
                network_key,
            } => {
                let mut g = b.init_generated_key_pair();
                id.write(g.reborrow().init_id())?;
                g.set_batch_key(batch_key.as_bytes());
                g.set_network_key(&network_key.to_bytes());
            }
            key_gen::ProcessorMessage::Blame {
                id,
                participant,
                evidence,
            } => {
                let mut g = b.init_blame();
                id.write(g.reborrow().init_id())?;
                g.set_participant(participant.get());
                g.set_evidence(write_blob("blame evidence", evidence)?);
            }
            key_gen::ProcessorMessage::RepairKey {
                id,
                fresh_key,
                signature,
            } => {
                let mut g = b.init_repair_key();
                id.write(g.reborrow().init_id())?;
                g.set_fresh_key(write_blob("fresh key", fresh_key)?);
                g.set_signature(signature);
            }
            key_gen::ProcessorMessage::RefreshKey { id, key } => {
                let mut g = b.init_refresh_key();
                id.write(g.reborrow().init_id())?;
                g.set_key(write_blob("refresh key", key)?);
            }
            key_gen::ProcessorMessage::RepairParts { id, parts } => {
                let mut g = b.init_repair_parts();
                id.write(g.reborrow().init_id())?;
                write_participant_map(parts, g.init_parts(participant_map_len(parts)?))?;
            }
            key_gen::ProcessorMessage::RepairAnswer { id, answer } => {
                let mut g = b.init_repair_answer();
                id.write(g.reborrow().init_id())?;
                g.set_answer(write_blob("repair answer", answer)?);
            }
            key_gen::ProcessorMessage::Repaired { id, pair } => {
                let mut g = b.init_repaired();
                id.write(g.reborrow().init_id())?;
                pair.write(g.init_key_pair())?;
            }
            key_gen::ProcessorMessage::RefreshDeal { id, deals } => {
                let mut g = b.init_refresh_deal();
                id.write(g.reborrow().init_id())?;
                write_participant_map(deals, g.init_deals(participant_map_len(deals)?))?;
            }
            key_gen::ProcessorMessage::Refreshed {
                id,
                pair,
                digest,
                signature,
            } => {
                let mut g = b.init_refreshed();
                id.write(g.reborrow().init_id())?;
                pair.write(g.reborrow().init_key_pair())?;
                g.set_digest(digest);
                g.set_signature(signature);
            }
            key_gen::ProcessorMessage::RefreshConfirmed { id, pair, epoch } => {
                let mut g = b.init_refresh_confirmed();
                id.write(g.reborrow().init_id())?;
                pair.write(g.reborrow().init_key_pair())?;
                g.set_epoch(*epoch);
            }
        }
        Ok(())
    }

    fn read(r: m::key_gen_from_processor::Reader<'_>) -> Result<Self, DecodeError> {
        use m::key_gen_from_processor::Which;
        Ok(match r.which()? {
            Which::Commitments(g) => {
                require(g.has_id(), "commitments id")?;
                key_gen::ProcessorMessage::Commitments {
                    id: KeyGenId::read(g.get_id()?)?,
                    commitments: read_blob(g.get_commitments(), "commitments")?,
                }
            }
            Which::Shares(g) => {
                require(g.has_id(), "shares id")?;
                key_gen::ProcessorMessage::Shares {
                    id: KeyGenId::read(g.get_id()?)?,
                    shares: read_participant_map(g.get_shares())?,
                }
            }
            Which::GeneratedKeyPair(g) => {
                require(g.has_id(), "generated key pair id")?;
                key_gen::ProcessorMessage::GeneratedKeyPair {
                    id: KeyGenId::read(g.get_id()?)?,
                    batch_key: BatchKey::from_slice(g.get_batch_key()?)?,
                    network_key: NetworkKey::from_slice(g.get_network_key()?)?,
                }
            }
            Which::Blame(g) => {
                require(g.has_id(), "blame id")?;
                key_gen::ProcessorMessage::Blame {
                    id: KeyGenId::read(g.get_id()?)?,
                    participant: Participant::new(g.get_participant())?,
                    evidence: read_blob(g.get_evidence(), "blame evidence")?,
                }
            }
            Which::RepairKey(g) => {
                require(g.has_id(), "repair key id")?;
                key_gen::ProcessorMessage::RepairKey {
                    id: KeyGenId::read(g.get_id()?)?,
                    fresh_key: read_blob(g.get_fresh_key(), "fresh key")?,
                    signature: read_array(g.get_signature()?, "fresh key signature")?,
                }
            }
            Which::RefreshKey(g) => {
                require(g.has_id(), "refresh key id")?;
                key_gen::ProcessorMessage::RefreshKey {
                    id: KeyGenId::read(g.get_id()?)?,
                    key: read_blob(g.get_key(), "refresh key")?,
                }
            }
            Which::RepairParts(g) => {
                require(g.has_id(), "repair parts id")?;
                key_gen::ProcessorMessage::RepairParts {
                    id: KeyGenId::read(g.get_id()?)?,
                    parts: read_participant_map(g.get_parts())?,
                }
            }
            Which::RepairAnswer(g) => {
                require(g.has_id(), "repair answer id")?;
                key_gen::ProcessorMessage::RepairAnswer {
                    id: KeyGenId::read(g.get_id()?)?,
                    answer: read_blob(g.get_answer(), "repair answer")?,
                }
            }
            Which::Repaired(g) => {
                require(g.has_id(), "repaired id")?;
                require(g.has_key_pair(), "repaired key pair")?;
                key_gen::ProcessorMessage::Repaired {
                    id: KeyGenId::read(g.get_id()?)?,
                    pair: KeyPair::read(g.get_key_pair()?)?,
                }
            }
            Which::RefreshDeal(g) => {
                require(g.has_id(), "refresh deal id")?;
                key_gen::ProcessorMessage::RefreshDeal {
                    id: KeyGenId::read(g.get_id()?)?,
                    deals: read_participant_map(g.get_deals())?,
                }
            }
            Which::Refreshed(g) => {
                require(g.has_id(), "refreshed id")?;
                require(g.has_key_pair(), "refreshed key pair")?;
                key_gen::ProcessorMessage::Refreshed {
                    id: KeyGenId::read(g.get_id()?)?,
                    pair: KeyPair::read(g.get_key_pair()?)?,
                    digest: read_array(g.get_digest()?, "digest")?,
                    signature: read_array(g.get_signature()?, "refreshed signature")?,
                }
            }
            Which::RefreshConfirmed(g) => {
                require(g.has_id(), "refresh confirmed id")?;
                require(g.has_key_pair(), "refresh confirmed key pair")?;
                key_gen::ProcessorMessage::RefreshConfirmed {
                    id: KeyGenId::read(g.get_id()?)?,
                    pair: KeyPair::read(g.get_key_pair()?)?,
                    epoch: g.get_epoch(),
                }
            }
        })
    }
}

impl Wire for sign::CoordinatorMessage {
    type Capnp = m::sign_to_processor::Owned;

    fn write(&self, b: m::sign_to_processor::Builder<'_>) -> Result<(), EncodeError> {
        match self {
            sign::CoordinatorMessage::Preprocesses { id, preprocesses } => {
                let mut g = b.init_preprocesses();
                id.write(g.reborrow().init_id())?;
                write_participant_map(
                    preprocesses,
                    g.init_preprocesses(participant_map_len(preprocesses)?),
                )
            }
            sign::CoordinatorMessage::Shares { id, shares } => {
                let mut g = b.init_shares();
                id.write(g.reborrow().init_id())?;
                write_participant_map(shares, g.init_shares(participant_map_len(shares)?))
            }
            sign::CoordinatorMessage::Reattempt { id } => id.write(b.init_reattempt().init_id()),
            sign::CoordinatorMessage::Completed { key, id, tx } => {
                let mut g = b.init_completed();
                g.set_key(&key.to_bytes());
                g.set_id(id.as_bytes());
                g.set_tx(tx.as_bytes());
                Ok(())
            }
        }
    }

    fn read(r: m::sign_to_processor::Reader<'_>) -> Result<Self, DecodeError> {
        use m::sign_to_processor::Which;
        Ok(match r.which()? {
            Which::Preprocesses(g) => {
                require(g.has_id(), "preprocesses id")?;
                sign::CoordinatorMessage::Preprocesses {
                    id: PlanSignId::read(g.get_id()?)?,
                    preprocesses: read_participant_map(g.get_preprocesses())?,
                }
            }
            Which::Shares(g) => {
                require(g.has_id(), "shares id")?;
                sign::CoordinatorMessage::Shares {
                    id: PlanSignId::read(g.get_id()?)?,
                    shares: read_participant_map(g.get_shares())?,
                }
            }
            Which::Reattempt(g) => {
                require(g.has_id(), "reattempt id")?;
                sign::CoordinatorMessage::Reattempt {
                    id: PlanSignId::read(g.get_id()?)?,
                }
            }
            Which::Completed(g) => sign::CoordinatorMessage::Completed {
                key: NetworkKey::from_slice(g.get_key()?)?,
                id: PlanId::from_slice(g.get_id()?)?,
                tx: TransactionId::from_slice(g.get_tx()?)?,
            },
        })
    }
}

impl Wire for sign::ProcessorMessage {
    type Capnp = m::sign_from_processor::Owned;

    fn write(&self, b: m::sign_from_processor::Builder<'_>) -> Result<(), EncodeError> {
        match self {
            sign::ProcessorMessage::Preprocess { id, preprocess } => {
                let mut g = b.init_preprocess();
                id.write(g.reborrow().init_id())?;
                g.set_preprocess(write_blob("preprocess", preprocess)?);
            }
            sign::ProcessorMessage::Share { id, share } => {
                let mut g = b.init_share();
                id.write(g.reborrow().init_id())?;
                g.set_share(write_blob("share", share)?);
            }
            sign::ProcessorMessage::Completed { key, id, tx } => {
                let mut g = b.init_completed();
                g.set_key(&key.to_bytes());
                g.set_id(id.as_bytes());
                g.set_tx(tx.as_bytes());
            }
        }
        Ok(())
    }

    fn read(r: m::sign_from_processor::Reader<'_>) -> Result<Self, DecodeError> {
        use m::sign_from_processor::Which;
        Ok(match r.which()? {
            Which::Preprocess(g) => {
                require(g.has_id(), "preprocess id")?;
                sign::ProcessorMessage::Preprocess {
                    id: PlanSignId::read(g.get_id()?)?,
                    preprocess: read_blob(g.get_preprocess(), "preprocess")?,
                }
            }
            Which::Share(g) => {
                require(g.has_id(), "share id")?;
                sign::ProcessorMessage::Share {
                    id: PlanSignId::read(g.get_id()?)?,
                    share: read_blob(g.get_share(), "share")?,
                }
            }
            Which::Completed(g) => sign::ProcessorMessage::Completed {
                key: NetworkKey::from_slice(g.get_key()?)?,
                id: PlanId::from_slice(g.get_id()?)?,
                tx: TransactionId::from_slice(g.get_tx()?)?,
            },
        })
    }
}

impl Wire for PlansAcknowledged {
    type Capnp = m::plans_acknowledged::Owned;

    fn write(&self, mut b: m::plans_acknowledged::Builder<'_>) -> Result<(), EncodeError> {
        b.set_block(self.block.0);
        b.set_key(&self.key.to_bytes());
        let len = write_len("plan ids", self.plans.len(), MAX_PLANS_PER_BLOCK)?;
        write_plan_ids(&self.plans, b.reborrow().init_plans(len));
        b.set_attestation(&self.attestation.0);
        Ok(())
    }

    fn read(r: m::plans_acknowledged::Reader<'_>) -> Result<Self, DecodeError> {
        Ok(PlansAcknowledged {
            block: SeraiBlockNumber(r.get_block()),
            key: NetworkKey::from_slice(r.get_key()?)?,
            plans: read_plan_ids(r.get_plans())?,
            attestation: read_attestation(r.get_attestation()?)?,
        })
    }
}

impl Wire for SubstrateBlockAck {
    type Capnp = m::substrate_block_ack::Owned;

    fn write(&self, mut b: m::substrate_block_ack::Builder<'_>) -> Result<(), EncodeError> {
        b.set_block(self.block.0);
        b.set_key(&self.key.to_bytes());
        let len = write_len("plan ids", self.plans.len(), MAX_PLANS_PER_BLOCK)?;
        write_plan_ids(&self.plans, b.init_plans(len));
        Ok(())
    }

    fn read(r: m::substrate_block_ack::Reader<'_>) -> Result<Self, DecodeError> {
        Ok(SubstrateBlockAck {
            block: SeraiBlockNumber(r.get_block()),
            key: NetworkKey::from_slice(r.get_key()?)?,
            plans: read_plan_ids(r.get_plans())?,
        })
    }
}

impl Wire for coordinator::CoordinatorMessage {
    type Capnp = m::coordinator_to_processor::Owned;

    fn write(&self, b: m::coordinator_to_processor::Builder<'_>) -> Result<(), EncodeError> {
        match self {
            coordinator::CoordinatorMessage::BatchPreprocesses { id, preprocesses } => {
                let mut g = b.init_batch_preprocesses();
                id.write(g.reborrow().init_id())?;
                write_participant_map(
                    preprocesses,
                    g.init_preprocesses(participant_map_len(preprocesses)?),
                )
            }
            coordinator::CoordinatorMessage::BatchShares { id, shares } => {
                let mut g = b.init_batch_shares();
                id.write(g.reborrow().init_id())?;
                write_participant_map(shares, g.init_shares(participant_map_len(shares)?))
            }
            coordinator::CoordinatorMessage::BatchReattempt { id } => {
                id.write(b.init_batch_reattempt().init_id())
            }
            coordinator::CoordinatorMessage::PlansAcknowledged(acknowledged) => {
                acknowledged.write(b.init_plans_acknowledged())
            }
        }
    }

    fn read(r: m::coordinator_to_processor::Reader<'_>) -> Result<Self, DecodeError> {
        use m::coordinator_to_processor::Which;
        Ok(match r.which()? {
            Which::BatchPreprocesses(g) => {
                require(g.has_id(), "batch preprocesses id")?;
                coordinator::CoordinatorMessage::BatchPreprocesses {
                    id: BatchSignId::read(g.get_id()?)?,
                    preprocesses: read_participant_map(g.get_preprocesses())?,
                }
            }
            Which::BatchShares(g) => {
                require(g.has_id(), "batch shares id")?;
                coordinator::CoordinatorMessage::BatchShares {
                    id: BatchSignId::read(g.get_id()?)?,
                    shares: read_participant_map(g.get_shares())?,
                }
            }
            Which::BatchReattempt(g) => {
                require(g.has_id(), "batch reattempt id")?;
                coordinator::CoordinatorMessage::BatchReattempt {
                    id: BatchSignId::read(g.get_id()?)?,
                }
            }
            Which::PlansAcknowledged(acknowledged) => {
                coordinator::CoordinatorMessage::PlansAcknowledged(PlansAcknowledged::read(
                    acknowledged?,
                )?)
            }
        })
    }
}

impl Wire for coordinator::ProcessorMessage {
    type Capnp = m::coordinator_from_processor::Owned;

    fn write(&self, b: m::coordinator_from_processor::Builder<'_>) -> Result<(), EncodeError> {
        match self {
            coordinator::ProcessorMessage::BatchPreprocess {
                id,
                block,
                batch_id,
                preprocess,
            } => {
                let mut g = b.init_batch_preprocess();
                id.write(g.reborrow().init_id())?;
                g.set_block(block.as_bytes());
                g.set_batch_id(batch_id.0);
                g.set_preprocess(write_blob("batch preprocess", preprocess)?);
                Ok(())
            }
            coordinator::ProcessorMessage::BatchShare { id, share } => {
                let mut g = b.init_batch_share();
                id.write(g.reborrow().init_id())?;
                g.set_share(write_blob("batch share", share)?);
                Ok(())
            }
            coordinator::ProcessorMessage::SubstrateBlockAck(ack) => {
                ack.write(b.init_substrate_block_ack())
            }
        }
    }

    fn read(r: m::coordinator_from_processor::Reader<'_>) -> Result<Self, DecodeError> {
        use m::coordinator_from_processor::Which;
        Ok(match r.which()? {
            Which::BatchPreprocess(g) => {
                require(g.has_id(), "batch preprocess id")?;
                coordinator::ProcessorMessage::BatchPreprocess {
                    id: BatchSignId::read(g.get_id()?)?,
                    block: BlockHash::from_slice(g.get_block()?)?,
                    batch_id: BatchId(g.get_batch_id()),
                    preprocess: read_blob(g.get_preprocess(), "batch preprocess")?,
                }
            }
            Which::BatchShare(g) => {
                require(g.has_id(), "batch share id")?;
                coordinator::ProcessorMessage::BatchShare {
                    id: BatchSignId::read(g.get_id()?)?,
                    share: read_blob(g.get_share(), "batch share")?,
                }
            }
            Which::SubstrateBlockAck(ack) => {
                coordinator::ProcessorMessage::SubstrateBlockAck(SubstrateBlockAck::read(ack?)?)
            }
        })
    }
}

impl Wire for substrate::CoordinatorMessage {
    type Capnp = m::substrate_to_processor::Owned;

    fn write(&self, b: m::substrate_to_processor::Builder<'_>) -> Result<(), EncodeError> {
        match self {
            substrate::CoordinatorMessage::ConfirmKeyPair {
                context,
                set,
                key_pair,
            } => {
                let mut g = b.init_confirm_key_pair();
                context.write(g.reborrow().init_context())?;
                set.write(g.reborrow().init_set())?;
                key_pair.write(g.init_key_pair())
            }
            substrate::CoordinatorMessage::SubstrateBlock {
                context,
                block,
                key,
                burns,
            } => {
                let mut g = b.init_substrate_block();
                context.write(g.reborrow().init_context())?;
                g.set_block(block.0);
                g.set_key(&key.to_bytes());
                let len = write_len("burns", burns.len(), MAX_BURNS)?;
                let mut list = g.init_burns(len);
                for (index, burn) in (0u32..).zip(burns) {
                    burn.write(list.reborrow().get(index))?;
                }
                Ok(())
            }
            substrate::CoordinatorMessage::BatchIncluded { batch, attestation } => {
                let mut g = b.init_batch_included();
                g.set_attestation(&attestation.0);
                batch.write(g.init_batch())
            }
        }
    }

    fn read(r: m::substrate_to_processor::Reader<'_>) -> Result<Self, DecodeError> {
        use m::substrate_to_processor::Which;
        Ok(match r.which()? {
            Which::ConfirmKeyPair(g) => {
                require(g.has_context(), "confirm key pair context")?;
                require(g.has_set(), "confirm key pair set")?;
                require(g.has_key_pair(), "confirm key pair key pair")?;
                substrate::CoordinatorMessage::ConfirmKeyPair {
                    context: SubstrateContext::read(g.get_context()?)?,
                    set: ValidatorSet::read(g.get_set()?)?,
                    key_pair: KeyPair::read(g.get_key_pair()?)?,
                }
            }
            Which::SubstrateBlock(g) => {
                require(g.has_context(), "substrate block context")?;
                let burns = g.get_burns()?;
                check_read_len("burns", burns.len() as usize, MAX_BURNS)?;
                substrate::CoordinatorMessage::SubstrateBlock {
                    context: SubstrateContext::read(g.get_context()?)?,
                    block: SeraiBlockNumber(g.get_block()),
                    key: NetworkKey::from_slice(g.get_key()?)?,
                    burns: burns
                        .iter()
                        .map(OutInstructionWithBalance::read)
                        .collect::<Result<_, _>>()?,
                }
            }
            Which::BatchIncluded(g) => {
                require(g.has_batch(), "included batch")?;
                substrate::CoordinatorMessage::BatchIncluded {
                    batch: SignedBatch::read(g.get_batch()?)?,
                    attestation: read_attestation(g.get_attestation()?)?,
                }
            }
        })
    }
}

impl Wire for substrate::ProcessorMessage {
    type Capnp = m::substrate_from_processor::Owned;

    fn write(&self, b: m::substrate_from_processor::Builder<'_>) -> Result<(), EncodeError> {
        match self {
            substrate::ProcessorMessage::Update { batch } => batch.write(b.init_update()),
        }
    }

    fn read(r: m::substrate_from_processor::Reader<'_>) -> Result<Self, DecodeError> {
        require(r.has_update(), "update batch")?;
        Ok(substrate::ProcessorMessage::Update {
            batch: SignedBatch::read(r.get_update()?)?,
        })
    }
}

impl Wire for CoordinatorMessage {
    type Capnp = m::coordinator_message::Owned;

    fn write(&self, b: m::coordinator_message::Builder<'_>) -> Result<(), EncodeError> {
        match self {
            CoordinatorMessage::KeyGen(message) => message.write(b.init_key_gen()),
            CoordinatorMessage::Sign(message) => message.write(b.init_sign()),
            CoordinatorMessage::Coordinator(message) => message.write(b.init_coordinator()),
            CoordinatorMessage::Substrate(message) => message.write(b.init_substrate()),
        }
    }

    fn read(r: m::coordinator_message::Reader<'_>) -> Result<Self, DecodeError> {
        use m::coordinator_message::Which;
        Ok(match r.which()? {
            Which::KeyGen(message) => CoordinatorMessage::KeyGen(Wire::read(message?)?),
            Which::Sign(message) => CoordinatorMessage::Sign(Wire::read(message?)?),
            Which::Coordinator(message) => CoordinatorMessage::Coordinator(Wire::read(message?)?),
            Which::Substrate(message) => CoordinatorMessage::Substrate(Wire::read(message?)?),
        })
    }
}

impl Wire for ProcessorMessage {
    type Capnp = m::processor_message::Owned;

    fn write(&self, b: m::processor_message::Builder<'_>) -> Result<(), EncodeError> {
        match self {
            ProcessorMessage::KeyGen(message) => message.write(b.init_key_gen()),
            ProcessorMessage::Sign(message) => message.write(b.init_sign()),
            ProcessorMessage::Coordinator(message) => message.write(b.init_coordinator()),
            ProcessorMessage::Substrate(message) => message.write(b.init_substrate()),
        }
    }

    fn read(r: m::processor_message::Reader<'_>) -> Result<Self, DecodeError> {
        use m::processor_message::Which;
        Ok(match r.which()? {
            Which::KeyGen(message) => ProcessorMessage::KeyGen(Wire::read(message?)?),
            Which::Sign(message) => ProcessorMessage::Sign(Wire::read(message?)?),
            Which::Coordinator(message) => ProcessorMessage::Coordinator(Wire::read(message?)?),
            Which::Substrate(message) => ProcessorMessage::Substrate(Wire::read(message?)?),
        })
    }
}

impl Wire for CoordinatorEnvelope {
    type Capnp = m::coordinator_envelope::Owned;

    fn write(&self, mut b: m::coordinator_envelope::Builder<'_>) -> Result<(), EncodeError> {
        b.set_id(self.id.0);
        self.message.write(b.init_message())
    }

    fn read(r: m::coordinator_envelope::Reader<'_>) -> Result<Self, DecodeError> {
        require(r.has_message(), "envelope message")?;
        Ok(CoordinatorEnvelope {
            id: MessageId(r.get_id()),
            message: CoordinatorMessage::read(r.get_message()?)?,
        })
    }
}

impl Wire for ProcessorEnvelope {
    type Capnp = m::processor_envelope::Owned;

    fn write(&self, mut b: m::processor_envelope::Builder<'_>) -> Result<(), EncodeError> {
        b.set_id(self.id.0);
        self.message.write(b.init_message())
    }

    fn read(r: m::processor_envelope::Reader<'_>) -> Result<Self, DecodeError> {
        require(r.has_message(), "envelope message")?;
        Ok(ProcessorEnvelope {
            id: MessageId(r.get_id()),
            message: ProcessorMessage::read(r.get_message()?)?,
        })
    }
}
