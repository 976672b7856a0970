//! The coordinator and the Serai chain, played by Serai's rules: one numbered queue per
//! validator (delivered in order, after a delay, acked by id), messages from processors
//! deduplicated by id; signing rounds with the first t validators to preprocess, reattempted
//! after a timeout; Batches included on Serai in id order once their signature verifies under
//! the batch key, each inclusion attested to every processor; a Serai block after each
//! inclusion (or burn), whose context is the block of the last included Batch; plans attested
//! once t processors acknowledged them identically. It also records what the invariants
//! check: what was attested, included, burned and completed.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bitcoin::secp256k1::{Keypair, Message, Secp256k1};
use scanner::coordinate::link::{Inbound, LinkError};
use schema::{
    batch::{SignedBatch, BATCH_SIGNING_CONTEXT},
    hashes::{BlockHash, PlanId},
    ids::{Attempt, MessageId, NetworkId, Participant, SeraiBlockNumber, SeraiTime, ValidatorSet},
    instruction::OutInstructionWithBalance,
    keys::{KeyPair, NetworkKey},
    messages::{
        coordinator::{
            Attestation, CoordinatorMessage as CoordinatorIn, PlansAcknowledged,
            ProcessorMessage as CoordinatorOut, SubstrateBlockAck,
        },
        sign::{CoordinatorMessage as SignIn, ProcessorMessage as SignOut},
        substrate::{
            inclusion_message, CoordinatorMessage as SubstrateIn, ProcessorMessage as SubstrateOut,
            SubstrateContext,
        },
        CoordinatorEnvelope, CoordinatorMessage, ParticipantMap, ProcessorEnvelope,
        ProcessorMessage,
    },
    sign_id::{BatchSignId, BatchSignTarget, PlanSignId},
};

use crate::rng::Rng;

/// Steps a signing round may take before it is reattempted.
pub const ROUND_TIMEOUT: u64 = 16;

/// How the link between the coordinator and each processor misbehaves, within its contract.
#[derive(Clone, Debug, Default)]
pub struct LinkFaults {
    /// Steps a message may wait before it is visible (both ways), at most.
    pub max_delay: u64,
    /// Per mille of sends recorded but reported failed (the processor sends them again).
    pub lost_acks: u64,
    /// Validators whose link is down.
    pub down: BTreeSet<Participant>,
}

struct Queued {
    envelope: CoordinatorEnvelope,
    visible_at: u64,
}

enum Stage {
    Preprocess(ParticipantMap),
    Share {
        signers: Vec<Participant>,
        shares: ParticipantMap,
    },
    Signed,
}

struct Round {
    attempt: u32,
    stage: Stage,
    since: u64,
}

/// What happened on Serai.
#[derive(Debug, Default)]
pub struct Serai {
    /// The next Batch id Serai accepts.
    pub next_batch: u32,
    /// Batches included, in id order.
    pub included: Vec<SignedBatch>,
    /// Valid Updates ahead of `next_batch`.
    pending: BTreeMap<u32, SignedBatch>,
    /// The block of the last included Batch.
    pub last_block: Option<BlockHash>,
    /// The last Serai block number.
    pub block: u64,
    /// Burns waiting for the next Serai block.
    pub pending_burns: Vec<OutInstructionWithBalance>,
    /// Every burn made.
    pub burns: Vec<OutInstructionWithBalance>,
    /// Satoshis credited by included Batches.
    pub credited: u64,
    /// Satoshis burned.
    pub burned: u64,
    /// Satoshis burned in the Serai blocks up to each one sent, by its number.
    pub burned_through: BTreeMap<u64, u64>,
    /// Plans attested as acknowledged.
    pub attested: BTreeSet<PlanId>,
    /// Plans some processor reported completed.
    pub completed: BTreeSet<PlanId>,
    inclusions: bool,
}

/// The coordinator.
pub struct Coordinator {
    t: usize,
    validators: Vec<Participant>,
    set: ValidatorSet,
    attestor: Keypair,
    pair: KeyPair,
    rng: Rng,
    /// Link faults in force.
    pub faults: LinkFaults,
    queues: BTreeMap<Participant, Vec<Queued>>,
    acked: BTreeMap<Participant, u64>,
    inbox: VecDeque<(Participant, ProcessorMessage, u64)>,
    seen: BTreeSet<(Participant, u64)>,
    batch_rounds: BTreeMap<u32, Round>,
    batch_attempts: BTreeMap<u32, u32>,
    plan_rounds: BTreeMap<PlanId, Round>,
    plan_attempts: BTreeMap<PlanId, u32>,
    acks: BTreeMap<u64, BTreeMap<Participant, SubstrateBlockAck>>,
    attested_blocks: BTreeSet<u64>,
    /// Serai.
    pub serai: Serai,
    /// Broken rules seen, each a failure of the run.
    pub violations: Vec<String>,
    /// Batch signatures received, by Batch id (distinct signatures).
    pub signatures: BTreeMap<u32, BTreeSet<[u8; 64]>>,
    last_serai_block: Option<CoordinatorMessage>,
    now: u64,
}

fn others(map: &ParticipantMap, signers: &[Participant], me: Participant) -> ParticipantMap {
    map.iter()
        .filter(|(participant, _)| **participant != me && signers.contains(participant))
        .map(|(participant, blob)| (*participant, blob.clone()))
        .collect()
}

impl Coordinator {
    /// The network key of the set's key pair.
    pub fn network_key(&self) -> NetworkKey {
        self.pair.network_key
    }

    /// A coordinator of `validators` (threshold `t`) for key pair `pair` of `set`.
    pub fn new(
        t: usize,
        validators: Vec<Participant>,
        set: ValidatorSet,
        attestor: Keypair,
        pair: KeyPair,
        rng: Rng,
    ) -> Self {
        let queues = validators.iter().map(|v| (*v, Vec::new())).collect();
        Coordinator {
            t,
            validators,
            set,
            attestor,
            pair,
            rng,
            faults: LinkFaults::default(),
            queues,
            acked: BTreeMap::new(),
            inbox: VecDeque::new(),
            seen: BTreeSet::new(),
            batch_rounds: BTreeMap::new(),
            batch_attempts: BTreeMap::new(),
            plan_rounds: BTreeMap::new(),
            plan_attempts: BTreeMap::new(),
            acks: BTreeMap::new(),
            attested_blocks: BTreeSet::new(),
            serai: Serai::default(),
            violations: Vec::new(),
            signatures: BTreeMap::new(),
            last_serai_block: None,
            now: 0,
        }
    }

    fn delay(&mut self) -> u64 {
        self.rng.below(self.faults.max_delay.saturating_add(1))
    }

    /// Queues `message` for `validator`.
    pub fn push(&mut self, validator: Participant, message: CoordinatorMessage) {
        let visible_at = self.now + self.delay();
        let queue = self.queues.entry(validator).or_default();
        let id = MessageId(queue.len() as u64 + 1);
        queue.push(Queued {
            envelope: CoordinatorEnvelope { id, message },
            visible_at,
        });
    }

    fn push_all(&mut self, message: &CoordinatorMessage) {
        for validator in self.validators.clone() {
            self.push(validator, message.clone());
        }
    }

    /// The key pair is confirmed on Serai, activating at `block` (a finalized block).
    pub fn confirm_key_pair(&mut self, block: [u8; 32]) {
        let message = CoordinatorMessage::Substrate(SubstrateIn::ConfirmKeyPair {
            context: SubstrateContext {
                serai_time: SeraiTime(1),
                network_latest_finalized_block: BlockHash(block),
            },
            set: self.set,
            key_pair: self.pair,
        });
        self.push_all(&message);
    }

    /// `validator`'s messages after `after`, in order, as far as they are visible.
    ///
    /// # Errors
    /// Its link is down.
    pub fn next(
        &self,
        validator: Participant,
        after: MessageId,
    ) -> Result<Vec<Inbound>, LinkError> {
        if self.faults.down.contains(&validator) {
            return Err(LinkError::Timeout(std::time::Duration::from_secs(30)));
        }
        let Some(queue) = self.queues.get(&validator) else {
            return Ok(Vec::new());
        };
        Ok(queue
            .iter()
            .skip(usize::try_from(after.0).unwrap_or(usize::MAX))
            .take_while(|queued| queued.visible_at <= self.now)
            .take(64)
            .map(|queued| Inbound {
                id: queued.envelope.id,
                message: Ok(queued.envelope.message.clone()),
            })
            .collect())
    }

    /// `validator` handled message `id`.
    ///
    /// # Errors
    /// Its link is down.
    pub fn ack(&mut self, validator: Participant, id: MessageId) -> Result<(), LinkError> {
        if self.faults.down.contains(&validator) {
            return Err(LinkError::Timeout(std::time::Duration::from_secs(30)));
        }
        let acked = self.acked.entry(validator).or_default();
        *acked = (*acked).max(id.0);
        Ok(())
    }

    /// `validator` sends a message.
    ///
    /// # Errors
    /// Its link is down, or the message arrived but the answer was lost.
    pub fn receive(
        &mut self,
        validator: Participant,
        envelope: &ProcessorEnvelope,
    ) -> Result<(), LinkError> {
        if self.faults.down.contains(&validator) {
            return Err(LinkError::Timeout(std::time::Duration::from_secs(30)));
        }
        if self.seen.insert((validator, envelope.id.0)) {
            let at = self.now + self.delay();
            self.inbox
                .push_back((validator, envelope.message.clone(), at));
        }
        if self.rng.chance(self.faults.lost_acks) {
            return Err(LinkError::Timeout(std::time::Duration::from_secs(30)));
        }
        Ok(())
    }

    /// A restart: every round in progress is forgotten (the queues, attempts and Serai are
    /// durable) and reattempted. With `resend`, the last Serai block is sent again under new
    /// message ids, as a coordinator that lost track of what it sent would.
    pub fn restart(&mut self, resend: bool) {
        if resend {
            if let Some(message) = self.last_serai_block.clone() {
                self.push_all(&message);
            }
        }
        for batch in std::mem::take(&mut self.batch_rounds).into_keys() {
            self.reattempt_batch(batch);
        }
        for plan in std::mem::take(&mut self.plan_rounds).into_keys() {
            self.reattempt_plan(plan);
        }
    }

    /// One step at time `now`: messages that arrived handled, stalled rounds reattempted, and
    /// a Serai block made if something happened on Serai.
    pub fn step(&mut self, now: u64) {
        self.now = now;
        let mut later = VecDeque::new();
        while let Some((validator, message, at)) = self.inbox.pop_front() {
            if at > now {
                later.push_back((validator, message, at));
                continue;
            }
            self.handle(validator, message);
        }
        self.inbox = later;
        let stalled: Vec<u32> = self
            .batch_rounds
            .iter()
            .filter(|(_, round)| now.saturating_sub(round.since) > ROUND_TIMEOUT)
            .map(|(batch, _)| *batch)
            .collect();
        for batch in stalled {
            self.reattempt_batch(batch);
        }
        let stalled: Vec<PlanId> = self
            .plan_rounds
            .iter()
            .filter(|(_, round)| now.saturating_sub(round.since) > ROUND_TIMEOUT)
            .map(|(plan, _)| *plan)
            .collect();
        for plan in stalled {
            self.reattempt_plan(plan);
        }
        if self.serai.inclusions || !self.serai.pending_burns.is_empty() {
            self.serai_block();
        }
    }

    fn batch_id(&self, batch: u32, attempt: u32) -> BatchSignId {
        BatchSignId {
            key: self.pair.batch_key,
            id: BatchSignTarget {
                network: NetworkId::Bitcoin,
                batch: schema::ids::BatchId(batch),
            },
            attempt: Attempt(attempt),
        }
    }

    fn plan_id(&self, plan: PlanId, attempt: u32) -> PlanSignId {
        PlanSignId {
            key: self.pair.network_key,
            id: plan,
            attempt: Attempt(attempt),
        }
    }

    fn reattempt_batch(&mut self, batch: u32) {
        if batch < self.serai.next_batch {
            self.batch_rounds.remove(&batch);
            return;
        }
        let attempt = self.batch_attempts.entry(batch).or_default();
        *attempt += 1;
        let attempt = *attempt;
        self.batch_rounds.insert(
            batch,
            Round {
                attempt,
                stage: Stage::Preprocess(ParticipantMap::new()),
                since: self.now,
            },
        );
        let id = self.batch_id(batch, attempt);
        self.push_all(&CoordinatorMessage::Coordinator(
            CoordinatorIn::BatchReattempt { id },
        ));
    }

    fn reattempt_plan(&mut self, plan: PlanId) {
        if self.serai.completed.contains(&plan) {
            self.plan_rounds.remove(&plan);
            return;
        }
        let attempt = self.plan_attempts.entry(plan).or_default();
        *attempt += 1;
        let attempt = *attempt;
        self.plan_rounds.insert(
            plan,
            Round {
                attempt,
                stage: Stage::Preprocess(ParticipantMap::new()),
                since: self.now,
            },
        );
        let id = self.plan_id(plan, attempt);
        self.push_all(&CoordinatorMessage::Sign(SignIn::Reattempt { id }));
    }

    fn serai_block(&mut self) {
        self.serai.inclusions = false;
        self.serai.block += 1;
        let burns = std::mem::take(&mut self.serai.pending_burns);
        let before = self
            .serai
            .burned_through
            .last_key_value()
            .map_or(0, |(_, burned)| *burned);
        let these: u64 = burns.iter().map(|burn| burn.amount.to_sat()).sum();
        self.serai
            .burned_through
            .insert(self.serai.block, before + these);
        let message = CoordinatorMessage::Substrate(SubstrateIn::SubstrateBlock {
            context: SubstrateContext {
                serai_time: SeraiTime(self.serai.block + 1),
                network_latest_finalized_block: self.serai.last_block.unwrap_or(BlockHash([0; 32])),
            },
            block: SeraiBlockNumber(self.serai.block),
            key: self.pair.network_key,
            burns,
        });
        self.push_all(&message);
        self.last_serai_block = Some(message);
    }

    /// A Serai user burns `burn` (its value must have been credited).
    pub fn burn(&mut self, burn: OutInstructionWithBalance) {
        self.serai.burned += burn.amount.to_sat();
        self.serai.burns.push(burn.clone());
        self.serai.pending_burns.push(burn);
    }

    fn attest(&self, digest: [u8; 32]) -> Attestation {
        let signature = Secp256k1::new()
            .sign_schnorr_no_aux_rand(&Message::from_digest(digest), &self.attestor);
        Attestation(signature.serialize())
    }

    fn handle(&mut self, validator: Participant, message: ProcessorMessage) {
        match message {
            ProcessorMessage::Coordinator(CoordinatorOut::BatchPreprocess {
                id,
                batch_id,
                preprocess,
                ..
            }) => {
                let batch = batch_id.0;
                if batch < self.serai.next_batch
                    || id.attempt.0 != self.batch_attempts.get(&batch).copied().unwrap_or(0)
                {
                    return;
                }
                let now = self.now;
                let round = self.batch_rounds.entry(batch).or_insert(Round {
                    attempt: id.attempt.0,
                    stage: Stage::Preprocess(ParticipantMap::new()),
                    since: now,
                });
                if let Some((signers, map)) =
                    collect_preprocess(round, self.t, validator, preprocess)
                {
                    for signer in signers.clone() {
                        let message =
                            CoordinatorMessage::Coordinator(CoordinatorIn::BatchPreprocesses {
                                id,
                                preprocesses: others(&map, &signers, signer),
                            });
                        self.push(signer, message);
                    }
                }
            }
            ProcessorMessage::Coordinator(CoordinatorOut::BatchShare { id, share }) => {
                let Some(round) = self.batch_rounds.get_mut(&id.id.batch.0) else {
                    return;
                };
                if round.attempt != id.attempt.0 {
                    return;
                }
                if let Some((signers, shares)) = collect_share(round, validator, share) {
                    for signer in signers.clone() {
                        let message = CoordinatorMessage::Coordinator(CoordinatorIn::BatchShares {
                            id,
                            shares: others(&shares, &signers, signer),
                        });
                        self.push(signer, message);
                    }
                }
            }
            ProcessorMessage::Substrate(SubstrateOut::Update { batch: signed }) => {
                self.update(signed);
            }
            ProcessorMessage::Coordinator(CoordinatorOut::SubstrateBlockAck(ack)) => {
                self.substrate_block_ack(validator, ack);
            }
            ProcessorMessage::Sign(SignOut::Preprocess { id, preprocess }) => {
                if self.serai.completed.contains(&id.id)
                    || !self.serai.attested.contains(&id.id)
                    || id.attempt.0 != self.plan_attempts.get(&id.id).copied().unwrap_or(0)
                {
                    return;
                }
                let now = self.now;
                let round = self.plan_rounds.entry(id.id).or_insert(Round {
                    attempt: id.attempt.0,
                    stage: Stage::Preprocess(ParticipantMap::new()),
                    since: now,
                });
                if let Some((signers, map)) =
                    collect_preprocess(round, self.t, validator, preprocess)
                {
                    for signer in signers.clone() {
                        let message = CoordinatorMessage::Sign(SignIn::Preprocesses {
                            id,
                            preprocesses: others(&map, &signers, signer),
                        });
                        self.push(signer, message);
                    }
                }
            }
            ProcessorMessage::Sign(SignOut::Share { id, share }) => {
                let Some(round) = self.plan_rounds.get_mut(&id.id) else {
                    return;
                };
                if round.attempt != id.attempt.0 {
                    return;
                }
                if let Some((signers, shares)) = collect_share(round, validator, share) {
                    for signer in signers.clone() {
                        let message = CoordinatorMessage::Sign(SignIn::Shares {
                            id,
                            shares: others(&shares, &signers, signer),
                        });
                        self.push(signer, message);
                    }
                }
            }
            ProcessorMessage::Sign(SignOut::Completed { key, id, tx }) => {
                self.plan_rounds.remove(&id);
                if self.serai.completed.insert(id) {
                    // The other processors hear of it, and check it on their own nodes.
                    let message = CoordinatorMessage::Sign(SignIn::Completed { key, id, tx });
                    for other in self.validators.clone() {
                        if other != validator {
                            self.push(other, message.clone());
                        }
                    }
                }
            }
            ProcessorMessage::KeyGen(_) => {}
        }
    }

    fn update(&mut self, signed: SignedBatch) {
        let batch = signed.batch.id.0;
        let verified = schnorrkel::PublicKey::from_bytes(&self.pair.batch_key.0)
            .and_then(|public| {
                let signature = schnorrkel::Signature::from_bytes(&signed.signature.0)?;
                public.verify_simple(BATCH_SIGNING_CONTEXT, &signed.batch.message(), &signature)
            })
            .is_ok();
        if !verified {
            self.violations.push(format!(
                "Batch {batch}'s Update does not verify under the batch key"
            ));
            return;
        }
        self.signatures
            .entry(batch)
            .or_default()
            .insert(signed.signature.0);
        let earlier = usize::try_from(batch)
            .ok()
            .and_then(|index| self.serai.included.get(index))
            .or_else(|| self.serai.pending.get(&batch));
        if let Some(earlier) = earlier {
            if earlier.batch != signed.batch {
                self.violations.push(format!(
                    "two different Batches signed under id {batch}: {:?} and {:?}",
                    earlier.batch, signed.batch
                ));
            }
            return;
        }
        if batch < self.serai.next_batch {
            return;
        }
        self.serai.pending.insert(batch, signed);
        while let Some(signed) = self.serai.pending.remove(&self.serai.next_batch) {
            self.serai.next_batch += 1;
            self.serai.last_block = Some(signed.batch.block);
            self.serai.credited += signed
                .batch
                .instructions
                .iter()
                .map(|instruction| instruction.amount.to_sat())
                .sum::<u64>();
            self.serai.inclusions = true;
            self.batch_rounds.remove(&signed.batch.id.0);
            let attestation = self.attest(inclusion_message(&signed.batch));
            self.push_all(&CoordinatorMessage::Substrate(SubstrateIn::BatchIncluded {
                batch: signed.clone(),
                attestation,
            }));
            self.serai.included.push(signed);
        }
    }

    fn substrate_block_ack(&mut self, validator: Participant, ack: SubstrateBlockAck) {
        let block = ack.block.0;
        let acks = self.acks.entry(block).or_default();
        if let Some(other) = acks.values().find(|other| **other != ack) {
            self.violations.push(format!(
                "validators acknowledged Serai block {block} differently: {other:?} and {ack:?}"
            ));
        }
        acks.insert(validator, ack.clone());
        let agreeing = acks.values().filter(|other| **other == ack).count();
        if agreeing < self.t || !self.attested_blocks.insert(block) {
            return;
        }
        let digest = PlansAcknowledged::attestation_message(
            NetworkId::Bitcoin,
            &ack.key,
            ack.block,
            &ack.plans,
        );
        let attestation = self.attest(digest);
        self.serai.attested.extend(ack.plans.iter().copied());
        for plan in &ack.plans {
            self.plan_attempts.entry(*plan).or_insert(0);
            // The round starts now, so that it is reattempted even if no preprocess arrives.
            self.plan_rounds.entry(*plan).or_insert(Round {
                attempt: 0,
                stage: Stage::Preprocess(ParticipantMap::new()),
                since: self.now,
            });
        }
        self.push_all(&CoordinatorMessage::Coordinator(
            CoordinatorIn::PlansAcknowledged(PlansAcknowledged {
                block: ack.block,
                key: ack.key,
                plans: ack.plans,
                attestation,
            }),
        ));
    }

    /// Validators that have not acked a message visible to them for more than `age` steps:
    /// the system never stops (an empty Batch every few blocks), so the newest messages are
    /// always in flight.
    pub fn unacked(&self, age: u64) -> Vec<Participant> {
        self.queues
            .iter()
            .filter(|(validator, queue)| {
                let acked = self.acked.get(validator).copied().unwrap_or(0);
                queue.iter().any(|queued| {
                    queued.envelope.id.0 > acked && queued.visible_at.saturating_add(age) < self.now
                })
            })
            .map(|(validator, _)| *validator)
            .collect()
    }

    /// Plans attested and not reported completed.
    pub fn open_plans(&self) -> usize {
        self.serai
            .attested
            .difference(&self.serai.completed)
            .count()
    }
}

/// Adds a preprocess; when t are in, the round moves on to shares, and the signers (the
/// first t by index) and their preprocesses are returned.
fn collect_preprocess(
    round: &mut Round,
    t: usize,
    validator: Participant,
    preprocess: Vec<u8>,
) -> Option<(Vec<Participant>, ParticipantMap)> {
    let Stage::Preprocess(map) = &mut round.stage else {
        return None;
    };
    map.insert(validator, preprocess);
    if map.len() < t {
        return None;
    }
    let signers: Vec<Participant> = map.keys().take(t).copied().collect();
    let map = std::mem::take(map);
    round.stage = Stage::Share {
        signers: signers.clone(),
        shares: ParticipantMap::new(),
    };
    Some((signers, map))
}

fn collect_share(
    round: &mut Round,
    validator: Participant,
    share: Vec<u8>,
) -> Option<(Vec<Participant>, ParticipantMap)> {
    let Stage::Share { signers, shares } = &mut round.stage else {
        return None;
    };
    if !signers.contains(&validator) {
        return None;
    }
    shares.insert(validator, share);
    if shares.len() < signers.len() {
        return None;
    }
    let done = (signers.clone(), shares.clone());
    round.stage = Stage::Signed;
    Some(done)
}
