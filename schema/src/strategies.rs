//! Proptest strategies for every type in this crate, for property tests here and in the other
//! crates (feature `testing`). Values stay inside the wire limits so that they encode.

use bitcoin::ScriptBuf;
use proptest::{collection::vec, option, prelude::*};

use crate::{
    amount::Amount,
    batch::{Batch, BatchSignature, SignedBatch},
    hashes::{BlockHash, PlanId, SeraiAddress, TransactionId},
    ids::{
        Attempt, BatchId, KeyGenId, MessageId, NetworkId, Participant, SeraiBlockNumber, SeraiTime,
        Session, ThresholdParams, ValidatorSet,
    },
    instruction::{
        InInstruction, InInstructionWithBalance, OutInstructionWithBalance, RefundableInInstruction,
    },
    keys::{BatchKey, KeyPair, NetworkKey},
    limits::{MAX_ADDRESS_LEN, MAX_BURNS, MAX_DATA_LEN, MAX_MONEY_SATS},
    messages::{
        coordinator::{Attestation, PlansAcknowledged, SubstrateBlockAck},
        key_gen::{self, ShareRepair},
        sign, substrate,
        substrate::SubstrateContext,
        CoordinatorEnvelope, CoordinatorMessage, ParticipantMap, ProcessorEnvelope,
        ProcessorMessage,
    },
    plan::{OutputId, OutputKind, Payment, PaymentAddress, Plan, PlanInput, Replaces},
    sign_id::{BatchSignTarget, SignId},
    transaction::FeeRate,
};

/// Few entries per list keeps the tests fast; the limits themselves have their own tests.
const LIST: usize = 6;
/// Blobs up to this size.
const BLOB: usize = 200;

/// A network.
pub fn network_id() -> impl Strategy<Value = NetworkId> {
    prop::sample::select(NetworkId::ALL.to_vec())
}

/// An amount up to the supply.
pub fn amount() -> impl Strategy<Value = Amount> {
    (0..=MAX_MONEY_SATS).prop_filter_map("amount", |sats| Amount::from_sat(sats).ok())
}

/// A participant.
pub fn participant() -> impl Strategy<Value = Participant> {
    (1u16..=u16::MAX).prop_filter_map("participant", |i| Participant::new(i).ok())
}

/// A valid threshold.
pub fn threshold_params() -> impl Strategy<Value = ThresholdParams> {
    (1u16..=150)
        .prop_flat_map(|n| (1..=n, Just(n), 1..=n))
        .prop_filter_map("params", |(t, n, i)| {
            ThresholdParams::new(t, n, Participant::new(i).ok()?).ok()
        })
}

/// A validator set.
pub fn validator_set() -> impl Strategy<Value = ValidatorSet> {
    (any::<u32>(), network_id()).prop_map(|(session, network)| ValidatorSet {
        session: Session(session),
        network,
    })
}

/// A key generation id.
pub fn key_gen_id() -> impl Strategy<Value = KeyGenId> {
    (validator_set(), any::<u32>()).prop_map(|(set, attempt)| KeyGenId {
        set,
        attempt: Attempt(attempt),
    })
}

/// A network key: a random x coordinate with a random parity, kept if it is on the curve.
pub fn network_key() -> impl Strategy<Value = NetworkKey> {
    (any::<bool>(), any::<[u8; 32]>()).prop_filter_map("point", |(odd, x)| {
        let mut bytes = [0u8; 33];
        bytes[0] = if odd { 3 } else { 2 };
        bytes[1..].copy_from_slice(&x);
        NetworkKey::from_slice(&bytes).ok()
    })
}

/// A batch key.
pub fn batch_key() -> impl Strategy<Value = BatchKey> {
    any::<[u8; 32]>().prop_map(BatchKey)
}

/// A key pair.
pub fn key_pair() -> impl Strategy<Value = KeyPair> {
    (batch_key(), network_key()).prop_map(|(batch_key, network_key)| KeyPair {
        batch_key,
        network_key,
    })
}

/// A blob.
pub fn blob() -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..BLOB)
}

/// A participant map.
pub fn participant_map() -> impl Strategy<Value = ParticipantMap> {
    prop::collection::btree_map(participant(), blob(), 0..LIST)
}

/// A plan signing session.
pub fn plan_sign_id() -> impl Strategy<Value = SignId<NetworkKey, PlanId>> {
    (network_key(), any::<[u8; 32]>(), any::<u32>()).prop_map(|(key, id, attempt)| SignId {
        key,
        id: PlanId(id),
        attempt: Attempt(attempt),
    })
}

/// A batch signing session.
pub fn batch_sign_id() -> impl Strategy<Value = SignId<BatchKey, BatchSignTarget>> {
    (batch_key(), network_id(), any::<u32>(), any::<u32>()).prop_map(
        |(key, network, batch, attempt)| SignId {
            key,
            id: BatchSignTarget {
                network,
                batch: BatchId(batch),
            },
            attempt: Attempt(attempt),
        },
    )
}

/// A Serai context.
pub fn substrate_context() -> impl Strategy<Value = SubstrateContext> {
    (any::<u64>(), any::<[u8; 32]>()).prop_map(|(time, block)| SubstrateContext {
        serai_time: SeraiTime(time),
        network_latest_finalized_block: BlockHash(block),
    })
}

/// A standard payment address of each kind.
pub fn payment_address() -> impl Strategy<Value = PaymentAddress> {
    let script = |prefix: &'static [u8], len: usize, suffix: &'static [u8]| {
        vec(any::<u8>(), len).prop_map(move |body| [prefix, &body, suffix].concat())
    };
    prop_oneof![
        script(&[0x76, 0xa9, 0x14], 20, &[0x88, 0xac]),
        script(&[0xa9, 0x14], 20, &[0x87]),
        script(&[0x00, 0x14], 20, &[]),
        script(&[0x00, 0x20], 32, &[]),
        script(&[0x51, 0x20], 32, &[]),
    ]
    .prop_filter_map("standard", |bytes| {
        PaymentAddress::new(ScriptBuf::from_bytes(bytes)).ok()
    })
}

fn data() -> impl Strategy<Value = Option<Vec<u8>>> {
    option::of(vec(any::<u8>(), 0..=MAX_DATA_LEN))
}

/// A burn.
pub fn out_instruction() -> impl Strategy<Value = OutInstructionWithBalance> {
    (vec(any::<u8>(), 0..=MAX_ADDRESS_LEN), data(), amount()).prop_map(|(address, data, amount)| {
        OutInstructionWithBalance {
            address,
            data,
            amount,
        }
    })
}

/// An InInstruction.
pub fn in_instruction() -> impl Strategy<Value = InInstruction> {
    any::<[u8; 32]>().prop_map(|to| InInstruction::Transfer {
        to: SeraiAddress(to),
    })
}

/// A deposit's instruction, with or without a refund origin.
pub fn refundable_in_instruction() -> impl Strategy<Value = RefundableInInstruction> {
    (option::of(payment_address()), in_instruction()).prop_map(|(origin, instruction)| {
        RefundableInInstruction {
            origin,
            instruction,
        }
    })
}

/// An InInstruction with its amount.
pub fn in_instruction_with_balance() -> impl Strategy<Value = InInstructionWithBalance> {
    (in_instruction(), amount()).prop_map(|(instruction, amount)| InInstructionWithBalance {
        instruction,
        amount,
    })
}

/// A Batch.
pub fn batch() -> impl Strategy<Value = Batch> {
    (
        network_id(),
        any::<u32>(),
        any::<[u8; 32]>(),
        vec(in_instruction_with_balance(), 0..LIST),
    )
        .prop_map(|(network, id, block, instructions)| Batch {
            network,
            id: BatchId(id),
            block: BlockHash(block),
            instructions,
        })
}

/// A signed Batch.
pub fn signed_batch() -> impl Strategy<Value = SignedBatch> {
    (batch(), vec(any::<u8>(), 64)).prop_filter_map("signature", |(batch, signature)| {
        Some(SignedBatch {
            batch,
            signature: BatchSignature(signature.try_into().ok()?),
        })
    })
}

/// An output id.
pub fn output_id() -> impl Strategy<Value = OutputId> {
    (any::<[u8; 32]>(), any::<u32>()).prop_map(|(txid, vout)| OutputId {
        txid: TransactionId(txid),
        vout,
    })
}

/// An output kind.
pub fn output_kind() -> impl Strategy<Value = OutputKind> {
    prop::sample::select(vec![
        OutputKind::External,
        OutputKind::Branch,
        OutputKind::Change,
    ])
}

/// A plan input.
pub fn plan_input() -> impl Strategy<Value = PlanInput> {
    (output_id(), output_kind(), amount()).prop_map(|(id, kind, amount)| PlanInput {
        id,
        kind,
        amount,
    })
}

/// A payment.
pub fn payment() -> impl Strategy<Value = Payment> {
    (payment_address(), data(), amount()).prop_map(|(address, data, amount)| Payment {
        address,
        data,
        amount,
    })
}

/// A plan.
pub fn plan() -> impl Strategy<Value = Plan> {
    (
        network_key(),
        vec(plan_input(), 0..LIST),
        vec(payment(), 0..LIST),
        option::of(network_key()),
        any::<u64>(),
        option::of((any::<[u8; 32]>(), any::<u64>())),
    )
        .prop_map(|(key, inputs, payments, change, fee_rate, replaces)| Plan {
            key,
            inputs,
            payments,
            change,
            fee_rate: FeeRate(fee_rate),
            replaces: replaces.map(|(plan, fee_rate)| Replaces {
                plan: PlanId(plan),
                fee_rate: FeeRate(fee_rate),
            }),
        })
}

fn plan_ids() -> impl Strategy<Value = Vec<PlanId>> {
    vec(any::<[u8; 32]>().prop_map(PlanId), 0..LIST)
}

/// A plan acknowledgement (its attestation is random bytes, not a valid signature).
pub fn plans_acknowledged() -> impl Strategy<Value = PlansAcknowledged> {
    (
        any::<u64>(),
        network_key(),
        plan_ids(),
        vec(any::<u8>(), 64),
    )
        .prop_filter_map("attestation", |(block, key, plans, attestation)| {
            Some(PlansAcknowledged {
                block: SeraiBlockNumber(block),
                key,
                plans,
                attestation: Attestation(attestation.try_into().ok()?),
            })
        })
}

/// A plan report.
pub fn substrate_block_ack() -> impl Strategy<Value = SubstrateBlockAck> {
    (any::<u64>(), network_key(), plan_ids()).prop_map(|(block, key, plans)| SubstrateBlockAck {
        block: SeraiBlockNumber(block),
        key,
        plans,
    })
}

/// Every key generation message to a processor.
pub fn key_gen_coordinator_message() -> impl Strategy<Value = key_gen::CoordinatorMessage> {
    prop_oneof![
        (key_gen_id(), threshold_params())
            .prop_map(|(id, params)| key_gen::CoordinatorMessage::GenerateKey { id, params }),
        (key_gen_id(), participant_map()).prop_map(|(id, commitments)| {
            key_gen::CoordinatorMessage::Commitments { id, commitments }
        }),
        (key_gen_id(), participant_map())
            .prop_map(|(id, shares)| key_gen::CoordinatorMessage::Shares { id, shares }),
        (key_gen_id(), share_repair())
            .prop_map(|(id, repair)| key_gen::CoordinatorMessage::RepairBegin { id, repair }),
        (
            key_gen_id(),
            share_repair(),
            blob(),
            any::<[u8; 64]>(),
            any::<[u8; 64]>()
        )
            .prop_map(
                |(id, repair, fresh_key, fresh_key_signature, attestation)| {
                    key_gen::CoordinatorMessage::RepairHelp {
                        id,
                        repair,
                        fresh_key,
                        fresh_key_signature,
                        attestation: Attestation(attestation),
                    }
                }
            ),
        (key_gen_id(), participant_map())
            .prop_map(|(id, parts)| key_gen::CoordinatorMessage::RepairParts { id, parts }),
        (key_gen_id(), participant_map(), any::<[u8; 64]>()).prop_map(
            |(id, answers, attestation)| key_gen::CoordinatorMessage::RepairAnswers {
                id,
                answers,
                attestation: Attestation(attestation),
            }
        ),
        (
            key_gen_id(),
            key_pair(),
            any::<[u8; 32]>(),
            vec(any::<[u8; 32]>(), 0..8),
            any::<[u8; 64]>()
        )
            .prop_map(|(id, pair, shares, identities, attestation)| {
                key_gen::CoordinatorMessage::RefreshBegin {
                    id,
                    pair,
                    shares,
                    identities,
                    attestation: Attestation(attestation),
                }
            }),
        (key_gen_id(), participant_map())
            .prop_map(|(id, keys)| key_gen::CoordinatorMessage::RefreshKeys { id, keys }),
        (key_gen_id(), participant_map())
            .prop_map(|(id, deals)| key_gen::CoordinatorMessage::RefreshDeals { id, deals }),
        (
            key_gen_id(),
            key_pair(),
            any::<[u8; 32]>(),
            participant_map(),
            vec(any::<[u8; 32]>(), 0..8),
            any::<[u8; 64]>()
        )
            .prop_map(|(id, pair, digest, signatures, identities, attestation)| {
                key_gen::CoordinatorMessage::RefreshConfirm {
                    id,
                    pair,
                    digest,
                    signatures,
                    identities,
                    attestation: Attestation(attestation),
                }
            }),
    ]
}

/// A repair of one participant by others.
pub fn share_repair() -> impl Strategy<Value = ShareRepair> {
    (
        key_pair(),
        participant(),
        vec(participant(), 0..8),
        any::<u16>(),
        any::<[u8; 32]>(),
        any::<[u8; 32]>(),
    )
        .prop_map(
            |(pair, repaired, helpers, participants, identity, shares)| ShareRepair {
                pair,
                repaired,
                helpers,
                participants,
                identity,
                shares,
            },
        )
}

/// Every key generation message from a processor.
pub fn key_gen_processor_message() -> impl Strategy<Value = key_gen::ProcessorMessage> {
    prop_oneof![
        (key_gen_id(), blob()).prop_map(|(id, commitments)| {
            key_gen::ProcessorMessage::Commitments { id, commitments }
        }),
        (key_gen_id(), participant_map())
            .prop_map(|(id, shares)| key_gen::ProcessorMessage::Shares { id, shares }),
        (key_gen_id(), key_pair()).prop_map(|(id, pair)| {
            key_gen::ProcessorMessage::GeneratedKeyPair {
                id,
                batch_key: pair.batch_key,
                network_key: pair.network_key,
            }
        }),
        (key_gen_id(), participant(), blob()).prop_map(|(id, participant, evidence)| {
            key_gen::ProcessorMessage::Blame {
                id,
                participant,
                evidence,
            }
        }),
        (key_gen_id(), blob(), any::<[u8; 64]>()).prop_map(|(id, fresh_key, signature)| {
            key_gen::ProcessorMessage::RepairKey {
                id,
                fresh_key,
                signature,
            }
        }),
        (key_gen_id(), participant_map())
            .prop_map(|(id, parts)| key_gen::ProcessorMessage::RepairParts { id, parts }),
        (key_gen_id(), blob())
            .prop_map(|(id, answer)| key_gen::ProcessorMessage::RepairAnswer { id, answer }),
        (key_gen_id(), key_pair())
            .prop_map(|(id, pair)| key_gen::ProcessorMessage::Repaired { id, pair }),
        (key_gen_id(), blob())
            .prop_map(|(id, key)| key_gen::ProcessorMessage::RefreshKey { id, key }),
        (key_gen_id(), participant_map())
            .prop_map(|(id, deals)| key_gen::ProcessorMessage::RefreshDeal { id, deals }),
        (
            key_gen_id(),
            key_pair(),
            any::<[u8; 32]>(),
            any::<[u8; 64]>()
        )
            .prop_map(|(id, pair, digest, signature)| {
                key_gen::ProcessorMessage::Refreshed {
                    id,
                    pair,
                    digest,
                    signature,
                }
            }),
        (key_gen_id(), key_pair(), any::<u32>()).prop_map(|(id, pair, epoch)| {
            key_gen::ProcessorMessage::RefreshConfirmed { id, pair, epoch }
        }),
    ]
}

/// Every signing message to a processor.
pub fn sign_coordinator_message() -> impl Strategy<Value = sign::CoordinatorMessage> {
    prop_oneof![
        (plan_sign_id(), participant_map()).prop_map(|(id, preprocesses)| {
            sign::CoordinatorMessage::Preprocesses { id, preprocesses }
        }),
        (plan_sign_id(), participant_map())
            .prop_map(|(id, shares)| sign::CoordinatorMessage::Shares { id, shares }),
        plan_sign_id().prop_map(|id| sign::CoordinatorMessage::Reattempt { id }),
        (network_key(), any::<[u8; 32]>(), any::<[u8; 32]>()).prop_map(|(key, id, tx)| {
            sign::CoordinatorMessage::Completed {
                key,
                id: PlanId(id),
                tx: TransactionId(tx),
            }
        }),
    ]
}

/// Every signing message from a processor.
pub fn sign_processor_message() -> impl Strategy<Value = sign::ProcessorMessage> {
    prop_oneof![
        (plan_sign_id(), blob())
            .prop_map(|(id, preprocess)| { sign::ProcessorMessage::Preprocess { id, preprocess } }),
        (plan_sign_id(), blob())
            .prop_map(|(id, share)| sign::ProcessorMessage::Share { id, share }),
        (network_key(), any::<[u8; 32]>(), any::<[u8; 32]>()).prop_map(|(key, id, tx)| {
            sign::ProcessorMessage::Completed {
                key,
                id: PlanId(id),
                tx: TransactionId(tx),
            }
        }),
    ]
}

/// Every batch and acknowledgement message to a processor.
pub fn coordinator_coordinator_message(
) -> impl Strategy<Value = crate::messages::coordinator::CoordinatorMessage> {
    use crate::messages::coordinator::CoordinatorMessage as M;
    prop_oneof![
        (batch_sign_id(), participant_map())
            .prop_map(|(id, preprocesses)| M::BatchPreprocesses { id, preprocesses }),
        (batch_sign_id(), participant_map()).prop_map(|(id, shares)| M::BatchShares { id, shares }),
        batch_sign_id().prop_map(|id| M::BatchReattempt { id }),
        plans_acknowledged().prop_map(M::PlansAcknowledged),
    ]
}

/// Every batch and plan report message from a processor.
pub fn coordinator_processor_message(
) -> impl Strategy<Value = crate::messages::coordinator::ProcessorMessage> {
    use crate::messages::coordinator::ProcessorMessage as M;
    prop_oneof![
        (batch_sign_id(), any::<[u8; 32]>(), any::<u32>(), blob()).prop_map(
            |(id, block, batch_id, preprocess)| M::BatchPreprocess {
                id,
                block: BlockHash(block),
                batch_id: BatchId(batch_id),
                preprocess,
            }
        ),
        (batch_sign_id(), blob()).prop_map(|(id, share)| M::BatchShare { id, share }),
        substrate_block_ack().prop_map(M::SubstrateBlockAck),
    ]
}

/// Every Serai event message to a processor.
pub fn substrate_coordinator_message() -> impl Strategy<Value = substrate::CoordinatorMessage> {
    prop_oneof![
        (substrate_context(), validator_set(), key_pair()).prop_map(|(context, set, key_pair)| {
            substrate::CoordinatorMessage::ConfirmKeyPair {
                context,
                set,
                key_pair,
            }
        }),
        (
            substrate_context(),
            any::<u64>(),
            network_key(),
            vec(out_instruction(), 0..LIST)
        )
            .prop_map(|(context, block, key, burns)| {
                substrate::CoordinatorMessage::SubstrateBlock {
                    context,
                    block: SeraiBlockNumber(block),
                    key,
                    burns,
                }
            }),
        (signed_batch(), vec(any::<u8>(), 64)).prop_filter_map(
            "attestation",
            |(batch, attestation)| {
                Some(substrate::CoordinatorMessage::BatchIncluded {
                    batch,
                    attestation: Attestation(attestation.try_into().ok()?),
                })
            }
        ),
    ]
}

/// Every Serai update message from a processor.
pub fn substrate_processor_message() -> impl Strategy<Value = substrate::ProcessorMessage> {
    signed_batch().prop_map(|batch| substrate::ProcessorMessage::Update { batch })
}

/// Any message to a processor.
pub fn coordinator_message() -> impl Strategy<Value = CoordinatorMessage> {
    prop_oneof![
        key_gen_coordinator_message().prop_map(CoordinatorMessage::KeyGen),
        sign_coordinator_message().prop_map(CoordinatorMessage::Sign),
        coordinator_coordinator_message().prop_map(CoordinatorMessage::Coordinator),
        substrate_coordinator_message().prop_map(CoordinatorMessage::Substrate),
    ]
}

/// Any message from a processor.
pub fn processor_message() -> impl Strategy<Value = ProcessorMessage> {
    prop_oneof![
        key_gen_processor_message().prop_map(ProcessorMessage::KeyGen),
        sign_processor_message().prop_map(ProcessorMessage::Sign),
        coordinator_processor_message().prop_map(ProcessorMessage::Coordinator),
        substrate_processor_message().prop_map(ProcessorMessage::Substrate),
    ]
}

/// A numbered message to a processor.
pub fn coordinator_envelope() -> impl Strategy<Value = CoordinatorEnvelope> {
    (any::<u64>(), coordinator_message()).prop_map(|(id, message)| CoordinatorEnvelope {
        id: MessageId(id),
        message,
    })
}

/// A numbered message from a processor.
pub fn processor_envelope() -> impl Strategy<Value = ProcessorEnvelope> {
    (any::<u64>(), processor_message()).prop_map(|(id, message)| ProcessorEnvelope {
        id: MessageId(id),
        message,
    })
}

/// The burns of the largest Serai block a message may carry: `MAX_BURNS` burns of the longest
/// address and data, each of every bitcoin there is.
///
/// # Panics
/// Never: 21 million BTC is an amount.
#[allow(clippy::unwrap_used)]
pub fn fullest_burns() -> Vec<OutInstructionWithBalance> {
    vec![
        OutInstructionWithBalance {
            address: vec![0xaa; MAX_ADDRESS_LEN],
            data: Some(vec![0xbb; MAX_DATA_LEN]),
            amount: Amount::from_sat(MAX_MONEY_SATS).unwrap(),
        };
        MAX_BURNS
    ]
}
