//! A local devnet: the regtest node, the coordinator harness, and n validators, each a real
//! `scanner` process and a real `signer-enclave` process with its own SoftHSM2 token. The
//! coordinator side of the story (key generation, confirmation, Batch signing, Serai blocks
//! with burns, attestation of identical acknowledgements, transaction signing) is played step by
//! step here, for the end-to-end tests and for `devnet` (the README's run command).

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::{Child, Command},
    sync::Mutex,
    time::Duration,
};

use bitcoin::{
    hashes::Hash,
    key::Keypair,
    script::PushBytesBuf,
    secp256k1::{Message, Secp256k1, SecretKey},
    Amount, ScriptBuf, TxOut, Txid,
};
use schema::{
    batch::{SignedBatch, BATCH_SIGNING_CONTEXT},
    hashes::{BlockHash, SeraiAddress, TransactionId},
    ids::{
        Attempt, KeyGenId, MessageId, NetworkId, Participant, SeraiBlockNumber, SeraiTime, Session,
        ThresholdParams, ValidatorSet,
    },
    instruction::{InInstruction, OutInstructionWithBalance, RefundableInInstruction},
    keys::{BatchKey, KeyPair, NetworkKey},
    messages::{
        coordinator::{
            Attestation, CoordinatorMessage as Coordinator, PlansAcknowledged,
            ProcessorMessage as CoordinatorOut, SubstrateBlockAck,
        },
        key_gen::{self, ShareRepair},
        sign,
        substrate::{self, SubstrateContext},
        CoordinatorMessage, ParticipantMap, ProcessorMessage,
    },
    plan::OutputKind,
    sign_id::{BatchSignId, PlanSignId},
    taproot::KeyScripts,
};
use serde_json::json;

use crate::{
    binary,
    coordinator::CoordinatorHarness,
    enclave::EnclaveProcess,
    metric_value,
    regtest::{harness::RegtestNode, wallet::TestWallet},
    relay::{self, others, KeyGenParty},
    scrape, start_until_ready, HarnessError,
};

/// Confirmations the devnet's scanners wait for.
pub const CONFIRMATIONS: u64 = 2;
/// How long a step may take before the devnet gives up on it.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(120);
/// The coordinator's attestation key (a devnet secret, not a real one).
const ATTESTOR: [u8; 32] = [0x77; 32];

fn failed(error: impl std::fmt::Display) -> HarnessError {
    HarnessError::Failed(error.to_string())
}

/// One validator's processes.
pub struct Validator {
    /// Its participant index.
    pub participant: Participant,
    /// How the coordinator names it.
    pub id: Vec<u8>,
    /// Its enclave.
    pub enclave: EnclaveProcess,
    scanner: Option<Child>,
    config: PathBuf,
    dir: PathBuf,
    metrics: Option<SocketAddr>,
}

impl Validator {
    fn start(
        dir: &Path,
        participant: Participant,
        node: &RegtestNode,
        coordinator: &CoordinatorHarness,
        attestor: &Keypair,
    ) -> Result<Self, HarnessError> {
        let index = participant.get();
        let dir = dir.join(format!("validator-{index}"));
        std::fs::create_dir_all(&dir)?;
        let uid = std::fs::metadata(&dir)?.uid();
        let mut enclave =
            EnclaveProcess::provision(&dir.join("enclave"), &attestor.x_only_public_key().0, uid)?;
        enclave.start()?;
        let link_key_file = dir.join("link.key");
        let link_key = match scanner::coordinate::link_key::load(&link_key_file) {
            Ok(key) => key.public(),
            Err(_) => scanner::coordinate::link_key::generate(&link_key_file).map_err(failed)?,
        };
        coordinator.register(&[u8::try_from(index).map_err(failed)?], link_key)?;
        let config = dir.join("scanner.toml");
        std::fs::write(
            &config,
            format!(
                r#"network = "regtest"
confirmations = {CONFIRMATIONS}
poll_interval_ms = 50
db_path = "{db}"

[bitcoin_rpc]
url = "{url}"
cookie_file = "{cookie}"
timeout_seconds = 30
rest = true

[coordinator]
endpoint = "{coordinator}"
validator = "{index:02x}"
link_key_file = "{link_key_file}"
link_key = "{coordinator_link_key}"
message_key = "{message_key}"

[enclave]
socket = "{socket}"

[metrics]
listen = "127.0.0.1:0"
"#,
                db = dir.join("scanner-db").display(),
                url = node.url(),
                cookie = node.cookie_file().display(),
                coordinator = coordinator.address(),
                link_key_file = link_key_file.display(),
                coordinator_link_key = coordinator.link_public_key(),
                message_key = coordinator.message_public_key(),
                socket = enclave.socket().display(),
            ),
        )?;
        let mut validator = Validator {
            participant,
            id: vec![u8::try_from(index).map_err(failed)?],
            enclave,
            scanner: None,
            config,
            dir,
            metrics: None,
        };
        validator.start_scanner()?;
        Ok(validator)
    }

    /// Starts (or restarts) the scanner process and waits for its ready line.
    ///
    /// # Errors
    /// It did not start.
    pub fn start_scanner(&mut self) -> Result<(), HarnessError> {
        let mut command = Command::new(binary("scanner")?);
        command.arg("run").arg("--config").arg(&self.config);
        let (child, metrics) = start_until_ready(command, &self.dir.join("scanner.log"))?;
        self.metrics = Some(metrics);
        self.scanner = Some(child);
        Ok(())
    }

    /// `kill -9` of the scanner process.
    pub fn kill_scanner(&mut self) {
        if let Some(mut child) = self.scanner.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Loses this validator's enclave, as when its host or HSM dies: the scanner and the
    /// enclave are killed, the enclave's directory (database, token, PINs) is deleted, and a
    /// new token and database are provisioned in its place, trusting `attestor`, holding no
    /// key; then both start again (the scanner keeps its own state).
    ///
    /// # Errors
    /// The directory could not be replaced or a process did not start.
    pub fn lose_enclave(&mut self, attestor: &Keypair) -> Result<(), HarnessError> {
        self.kill_scanner();
        self.enclave.kill();
        let path = self.dir.join("enclave");
        std::fs::remove_dir_all(&path)?;
        let uid = std::fs::metadata(&self.dir)?.uid();
        self.enclave = EnclaveProcess::provision(&path, &attestor.x_only_public_key().0, uid)?;
        self.enclave.start()?;
        self.start_scanner()
    }

    /// The scanner's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("scanner.log")).unwrap_or_default()
    }

    /// Where the scanner serves its metrics.
    pub fn scanner_metrics(&self) -> Option<SocketAddr> {
        self.metrics
    }

    /// The lowest height any key of this scanner scanned up to (0 before a key is scanned).
    ///
    /// # Errors
    /// The scanner is not running or the scrape failed.
    pub fn scanned_height(&self) -> Result<u64, HarnessError> {
        let address = self.metrics.ok_or_else(|| failed("scanner not running"))?;
        let metrics = scrape(address)?;
        let heights: Vec<u64> = metrics
            .lines()
            .filter(|line| line.starts_with("scanner_scanned_height{"))
            .filter_map(|line| line.rsplit(' ').next()?.parse().ok())
            .collect();
        Ok(heights.into_iter().min().unwrap_or(0))
    }

    /// The value of one series of the scanner's metrics (`name{labels}` exactly as exported),
    /// zero when absent.
    ///
    /// # Errors
    /// The scanner is not running or the scrape failed.
    pub fn scanner_metric(&self, series: &str) -> Result<f64, HarnessError> {
        let address = self.metrics.ok_or_else(|| failed("scanner not running"))?;
        Ok(metric_value(&scrape(address)?, series))
    }

    /// The stage this scanner reports for `pair`'s key: 0 active (or not reported), 1
    /// forwarding, 2 retired.
    ///
    /// # Errors
    /// As `scanner_metric`.
    pub fn key_stage(&self, pair: &KeyPair) -> Result<f64, HarnessError> {
        self.scanner_metric(&format!(
            "processor_key_stage{{key=\"{}\"}}",
            hex::encode(pair.network_key.to_bytes())
        ))
    }
}

impl Drop for Validator {
    fn drop(&mut self) {
        self.kill_scanner();
        self.enclave.kill();
    }
}

/// One validator, as the coordinator's key relays see it.
pub struct DevnetParty<'a> {
    devnet: &'a Devnet,
    participant: Participant,
}

fn key_gen_answer(message: &ProcessorMessage) -> Option<key_gen::ProcessorMessage> {
    match message {
        ProcessorMessage::KeyGen(message) => Some(message.clone()),
        _ => None,
    }
}

impl KeyGenParty for DevnetParty<'_> {
    /// Queues `message` for the validator and waits for its next key message.
    async fn handle(
        &mut self,
        message: key_gen::CoordinatorMessage,
    ) -> Result<key_gen::ProcessorMessage, HarnessError> {
        let validator = self
            .devnet
            .validators
            .iter()
            .find(|validator| validator.participant == self.participant)
            .ok_or_else(|| failed(format!("no validator {}", self.participant)))?;
        let before = self.devnet.sent(validator, key_gen_answer)?.len();
        self.devnet.push_to(&[self.participant], |_| {
            CoordinatorMessage::KeyGen(message.clone())
        })?;
        self.devnet
            .collect(&[self.participant], before + 1, key_gen_answer)?
            .remove(&self.participant)
            .ok_or_else(|| failed("no answer"))
    }
}

/// What the Serai chain included so far, as the devnet's coordinator follows it.
#[derive(Clone, Copy, Debug, Default)]
struct Included {
    /// The id the next Batch must have (Serai includes Batches in id order).
    next_batch: u32,
    /// The block of the last Batch included: the context of every Serai block.
    last_block: Option<BlockHash>,
    /// What the included Batches credited, in satoshis.
    credited: u64,
    /// The number of the last Serai block sent.
    last_serai_block: u64,
}

/// Every burn the devnet's Serai blocks carried, once per Serai block number.
#[derive(Debug, Default)]
struct Burned(Vec<OutInstructionWithBalance>);

/// The whole devnet.
pub struct Devnet {
    /// The Bitcoin node.
    pub node: RegtestNode,
    /// The coordinator.
    pub coordinator: CoordinatorHarness,
    /// The validators, by participant.
    pub validators: Vec<Validator>,
    /// A funded wallet for deposits.
    pub miner: TestWallet,
    attestor: Keypair,
    set: ValidatorSet,
    t: u16,
    next_coinbase: Mutex<u32>,
    included: Mutex<Included>,
    burned: Mutex<Burned>,
    /// The batch keys confirmed, with their activation heights, oldest first: Serai checks a
    /// Batch under the newest activated at or before its block.
    batch_keys: Mutex<Vec<(u64, BatchKey)>>,
}

impl Devnet {
    /// Starts the node (with a mature, funded miner), the coordinator and `n` validators.
    ///
    /// # Errors
    /// A process did not start.
    pub fn start(dir: &Path, t: u16, n: u16) -> Result<Self, HarnessError> {
        let node = RegtestNode::start(&dir.join("node"))?;
        let miner = TestWallet::new([0x42; 32]).map_err(failed)?;
        node.mine(101, miner.address()).map_err(failed)?;
        let coordinator = CoordinatorHarness::start()?;
        let attestor = Keypair::from_secret_key(
            &Secp256k1::new(),
            &SecretKey::from_slice(&ATTESTOR).map_err(failed)?,
        );
        let validators = (1..=n)
            .map(|i| {
                let participant = Participant::new(i).map_err(failed)?;
                Validator::start(dir, participant, &node, &coordinator, &attestor)
            })
            .collect::<Result<_, _>>()?;
        Ok(Devnet {
            node,
            coordinator,
            validators,
            miner,
            attestor,
            set: ValidatorSet {
                session: Session(0),
                network: NetworkId::Bitcoin,
            },
            t,
            next_coinbase: Mutex::new(1),
            included: Mutex::new(Included::default()),
            burned: Mutex::new(Burned::default()),
            batch_keys: Mutex::new(Vec::new()),
        })
    }

    /// What a validator sent that `pick` selects, in id order.
    ///
    /// # Errors
    /// The coordinator's state is poisoned.
    pub fn sent<T>(
        &self,
        validator: &Validator,
        pick: impl Fn(&ProcessorMessage) -> Option<T>,
    ) -> Result<Vec<T>, HarnessError> {
        Ok(self
            .coordinator
            .received(&validator.id)?
            .values()
            .filter_map(pick)
            .collect())
    }

    /// Waits until each of `participants` sent `count` messages `pick` selects; returns the
    /// last of them for each.
    ///
    /// # Errors
    /// It did not happen in time (the scanners' logs are in the error).
    pub fn collect<T>(
        &self,
        participants: &[Participant],
        count: usize,
        pick: impl Fn(&ProcessorMessage) -> Option<T> + Copy,
    ) -> Result<BTreeMap<Participant, T>, HarnessError> {
        let chosen: Vec<&Validator> = self
            .validators
            .iter()
            .filter(|validator| participants.contains(&validator.participant))
            .collect();
        let waited = self.coordinator.wait_until(STEP_TIMEOUT, |_| {
            Ok(chosen
                .iter()
                .map(|validator| self.sent(validator, pick).map(|sent| sent.len() >= count))
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .all(|done| done))
        });
        if let Err(error) = waited {
            let logs: Vec<String> = chosen.iter().map(|validator| validator.log()).collect();
            return Err(failed(format!("{error}; scanner logs: {logs:#?}")));
        }
        chosen
            .iter()
            .map(|validator| {
                let mut sent = self.sent(validator, pick)?;
                sent.truncate(count);
                let last = sent.pop().ok_or_else(|| failed("nothing sent"))?;
                Ok((validator.participant, last))
            })
            .collect()
    }

    /// Every participant.
    pub fn all(&self) -> Vec<Participant> {
        self.validators.iter().map(|v| v.participant).collect()
    }

    fn push_to(
        &self,
        participants: &[Participant],
        message: impl Fn(Participant) -> CoordinatorMessage,
    ) -> Result<(), HarnessError> {
        for validator in &self.validators {
            if participants.contains(&validator.participant) {
                self.coordinator
                    .push(&validator.id, message(validator.participant))?;
            }
        }
        Ok(())
    }

    /// Runs key generation through every processor; returns the key pair all reported.
    ///
    /// # Errors
    /// A round did not complete, or the processors disagree.
    pub fn key_generation(&self) -> Result<KeyPair, HarnessError> {
        self.key_generation_for(self.set, &self.all())
    }

    /// Runs key generation for `set` (a later session's, for a rotation) through the
    /// processors of `members` (each keeping its participant index), at the smallest threshold
    /// the protocol accepts (more than two thirds); returns the key pair all reported.
    ///
    /// # Errors
    /// As `key_generation`.
    pub fn key_generation_for(
        &self,
        set: ValidatorSet,
        members: &[Participant],
    ) -> Result<KeyPair, HarnessError> {
        let all = members.to_vec();
        let n = u16::try_from(all.len()).map_err(failed)?;
        let t = 2 * n / 3 + 1;
        let id = KeyGenId {
            set,
            attempt: Attempt(0),
        };
        let params = |i| ThresholdParams::new(t, n, i).map_err(failed);
        for participant in &all {
            let params = params(*participant)?;
            self.push_to(&[*participant], |_| {
                CoordinatorMessage::KeyGen(key_gen::CoordinatorMessage::GenerateKey { id, params })
            })?;
        }
        let commitments: ParticipantMap = self
            .collect(&all, 1, |message| match message {
                ProcessorMessage::KeyGen(key_gen::ProcessorMessage::Commitments {
                    id: sent,
                    commitments,
                }) if *sent == id => Some(commitments.clone()),
                _ => None,
            })?
            .into_iter()
            .collect();
        self.push_to(&all, |participant| {
            CoordinatorMessage::KeyGen(key_gen::CoordinatorMessage::Commitments {
                id,
                commitments: others(&commitments, participant),
            })
        })?;
        let shares = self.collect(&all, 1, |message| match message {
            ProcessorMessage::KeyGen(key_gen::ProcessorMessage::Shares { id: sent, shares })
                if *sent == id =>
            {
                Some(shares.clone())
            }
            _ => None,
        })?;
        self.push_to(&all, |participant| {
            let mine: ParticipantMap = shares
                .iter()
                .filter_map(|(from, sent)| Some((*from, sent.get(&participant)?.clone())))
                .collect();
            CoordinatorMessage::KeyGen(key_gen::CoordinatorMessage::Shares { id, shares: mine })
        })?;
        let pairs = self.collect(&all, 1, |message| match message {
            ProcessorMessage::KeyGen(key_gen::ProcessorMessage::GeneratedKeyPair {
                id: sent,
                batch_key,
                network_key,
            }) if *sent == id => Some(KeyPair {
                batch_key: *batch_key,
                network_key: *network_key,
            }),
            _ => None,
        })?;
        let mut distinct: Vec<KeyPair> = pairs.into_values().collect();
        distinct.dedup();
        match distinct.as_slice() {
            [pair] => Ok(*pair),
            _ => Err(failed("the processors generated different key pairs")),
        }
    }

    /// Every validator as a party to the coordinator's key relays (`relay::repair`,
    /// `relay::refresh`): each message goes through its scanner to its enclave, and the answer
    /// comes back through the coordinator.
    pub fn parties(&self) -> BTreeMap<Participant, DevnetParty<'_>> {
        self.all()
            .into_iter()
            .map(|participant| {
                (
                    participant,
                    DevnetParty {
                        devnet: self,
                        participant,
                    },
                )
            })
            .collect()
    }

    /// Repairs `repair.repaired`'s share with its helpers, attested by the devnet's
    /// coordinator; returns the repaired validator's answer (`Repaired`).
    ///
    /// # Errors
    /// A step did not complete in time.
    pub fn repair(
        &self,
        id: KeyGenId,
        repair: &ShareRepair,
    ) -> Result<key_gen::ProcessorMessage, HarnessError> {
        futures::executor::block_on(relay::repair(
            &mut self.parties(),
            id,
            repair,
            &self.attestor,
        ))
    }

    /// Refreshes every share of `pair`, attested by the devnet's coordinator, from the
    /// verification shares every validator's `status` shows (the same at all, or nothing
    /// starts); returns each validator's last answer (`RefreshConfirmed`).
    ///
    /// # Errors
    /// The validators hold different shares, a step did not complete in time, or they
    /// refreshed to different shares.
    pub fn refresh(
        &self,
        id: KeyGenId,
        pair: KeyPair,
    ) -> Result<BTreeMap<Participant, key_gen::ProcessorMessage>, HarnessError> {
        let mut digests = self
            .validators
            .iter()
            .map(|validator| validator.enclave.shares_digest())
            .collect::<Result<Vec<_>, _>>()?;
        digests.dedup();
        let [shares] = digests.as_slice() else {
            return Err(failed("the validators hold different verification shares"));
        };
        // As the operators registered them with the coordinator: read on each host.
        let identities = self
            .validators
            .iter()
            .map(|validator| validator.enclave.identity())
            .collect::<Result<Vec<_>, _>>()?;
        futures::executor::block_on(relay::refresh(
            &mut self.parties(),
            id,
            (pair, *shares),
            &identities,
            &self.attestor,
        ))
    }

    /// The node's highest finalized block (`CONFIRMATIONS` deep).
    ///
    /// # Errors
    /// The node did not answer.
    pub fn finalized_block(&self) -> Result<bitcoin::Block, HarnessError> {
        let height = u32::try_from(self.finalized_height()?).map_err(failed)?;
        self.node.block_at(height).map_err(failed)
    }

    /// The height of the node's highest finalized block (`CONFIRMATIONS` deep).
    ///
    /// # Errors
    /// The node did not answer.
    pub fn finalized_height(&self) -> Result<u64, HarnessError> {
        let tip = self
            .node
            .rpc("getblockcount", json!([]))
            .map_err(failed)?
            .as_u64()
            .ok_or_else(|| failed("no height"))?;
        Ok((tip + 1).saturating_sub(CONFIRMATIONS))
    }

    /// The chain votes the pair in, naming the current finalized block as activation block;
    /// waits until every processor handled it.
    ///
    /// # Errors
    /// Not handled in time.
    pub fn confirm(&self, pair: KeyPair) -> Result<(), HarnessError> {
        let ids = self.push_confirm(pair)?;
        self.wait_acked(&ids)
    }

    /// Sends everyone the chain's vote for `pair`, naming the current finalized block as the
    /// activation block; returns each validator's message id, without waiting.
    ///
    /// # Errors
    /// The node did not answer, or the coordinator's state is poisoned.
    pub fn push_confirm(&self, pair: KeyPair) -> Result<Vec<MessageId>, HarnessError> {
        let activation = self.finalized_block()?.block_hash();
        let height = self.finalized_height()?;
        self.record_batch_key(height, pair)?;
        self.push_confirm_for(self.set, pair, BlockHash(activation.to_byte_array()))
    }

    /// The chain votes in `pair` of a later session `set` (a rotation), with the block of the
    /// last Batch included as its context, as Serai sends it; waits until every processor
    /// handled it. The new batch key signs the Batches of blocks after that one.
    ///
    /// # Errors
    /// No Batch was included yet, or not handled in time.
    pub fn rotate_to(&self, set: ValidatorSet, pair: KeyPair) -> Result<(), HarnessError> {
        let context = self
            .last_included_block()?
            .ok_or_else(|| failed("a rotation needs a Batch included"))?;
        let height = self.height_of(context)?;
        self.record_batch_key(height + 1, pair)?;
        let ids = self.push_confirm_for(set, pair, context)?;
        self.wait_acked(&ids)
    }

    /// The height of `block` on the node.
    fn height_of(&self, block: BlockHash) -> Result<u64, HarnessError> {
        self.node
            .rpc(
                "getblockheader",
                json!([bitcoin::BlockHash::from_byte_array(block.0).to_string()]),
            )
            .map_err(failed)?
            .get("height")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| failed("no height"))
    }

    fn record_batch_key(&self, activation: u64, pair: KeyPair) -> Result<(), HarnessError> {
        self.batch_keys
            .lock()
            .map_err(|_| failed("devnet state poisoned"))?
            .push((activation, pair.batch_key));
        Ok(())
    }

    /// The batch key Serai checks the Batch of block `block` under.
    fn batch_key_of(&self, block: BlockHash) -> Result<BatchKey, HarnessError> {
        let height = self.height_of(block)?;
        self.batch_keys
            .lock()
            .map_err(|_| failed("devnet state poisoned"))?
            .iter()
            .rev()
            .find(|(activation, _)| *activation <= height)
            .map(|(_, key)| *key)
            .ok_or_else(|| failed("no batch key active at the Batch's block"))
    }

    fn push_confirm_for(
        &self,
        set: ValidatorSet,
        pair: KeyPair,
        context: BlockHash,
    ) -> Result<Vec<MessageId>, HarnessError> {
        let context = SubstrateContext {
            serai_time: SeraiTime(1),
            network_latest_finalized_block: context,
        };
        self.push_to_each(|_| {
            CoordinatorMessage::Substrate(substrate::CoordinatorMessage::ConfirmKeyPair {
                context,
                set,
                key_pair: pair,
            })
        })
    }

    /// Sends each validator its message; returns each one's message id.
    ///
    /// # Errors
    /// The coordinator's state is poisoned.
    pub fn push_to_each(
        &self,
        message: impl Fn(Participant) -> CoordinatorMessage,
    ) -> Result<Vec<MessageId>, HarnessError> {
        self.validators
            .iter()
            .map(|validator| {
                self.coordinator
                    .push(&validator.id, message(validator.participant))
            })
            .collect()
    }

    /// Waits until each validator acked its message of `ids` (as `push_to_each` returned them).
    ///
    /// # Errors
    /// Not acked in time.
    pub fn wait_acked(&self, ids: &[MessageId]) -> Result<(), HarnessError> {
        self.coordinator.wait_until(STEP_TIMEOUT, |coordinator| {
            Ok(self
                .validators
                .iter()
                .zip(ids)
                .map(|(validator, id)| coordinator.acked(&validator.id).map(|acked| acked >= id.0))
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .all(|done| done))
        })
    }

    /// Waits until every validator's processor handled (acked) everything queued for it.
    ///
    /// # Errors
    /// Not in time.
    pub fn wait_handled(&self) -> Result<(), HarnessError> {
        let ids = self
            .validators
            .iter()
            .map(|validator| self.coordinator.queued(&validator.id).map(MessageId))
            .collect::<Result<Vec<_>, _>>()?;
        self.wait_acked(&ids)
    }

    /// The validator set the devnet's keys are for.
    pub fn set(&self) -> ValidatorSet {
        self.set
    }

    /// A user's deposit of `amount` to the key's address, crediting `account`, mined to
    /// finality.
    ///
    /// # Errors
    /// The node refused it.
    pub fn deposit(
        &mut self,
        pair: &KeyPair,
        amount: u64,
        account: [u8; 32],
    ) -> Result<Txid, HarnessError> {
        let data = RefundableInInstruction {
            origin: None,
            instruction: InInstruction::Transfer {
                to: SeraiAddress(account),
            },
        }
        .encode();
        self.deposit_with_data(pair, amount, data)
    }

    /// A deposit of `amount` to the key's address carrying `data` in its `OP_RETURN`, whatever
    /// it holds, mined to finality.
    ///
    /// # Errors
    /// The node refused it.
    pub fn deposit_with_data(
        &mut self,
        pair: &KeyPair,
        amount: u64,
        data: Vec<u8>,
    ) -> Result<Txid, HarnessError> {
        let external = KeyScripts::derive(&pair.network_key)
            .map_err(failed)?
            .script(OutputKind::External)
            .clone();
        let coin = self.take_coinbase()?;
        // A fee of about 10 sat/vB: the rate plans acknowledging this block are built at.
        let change = coin.1.value - Amount::from_sat(amount + 2_000);
        let deposit = self
            .miner
            .spend(
                std::slice::from_ref(&coin),
                vec![
                    TxOut {
                        value: Amount::from_sat(amount),
                        script_pubkey: external,
                    },
                    TxOut {
                        value: Amount::ZERO,
                        script_pubkey: ScriptBuf::new_op_return(
                            PushBytesBuf::try_from(data).map_err(failed)?,
                        ),
                    },
                    TxOut {
                        value: change,
                        script_pubkey: self.miner.script_pubkey(),
                    },
                ],
            )
            .map_err(failed)?;
        self.node.send(&deposit).map_err(failed)?;
        self.mine(u32::try_from(CONFIRMATIONS).map_err(failed)?)?;
        Ok(deposit.compute_txid())
    }

    /// The outputs of the active chain's transactions paying `script`, in satoshis.
    ///
    /// # Errors
    /// The node did not answer.
    pub fn paid_to(&self, script: &ScriptBuf) -> Result<Vec<(Txid, u64)>, HarnessError> {
        let height = self
            .node
            .rpc("getblockcount", json!([]))
            .map_err(failed)?
            .as_u64()
            .ok_or_else(|| failed("no height"))?;
        let mut paid = Vec::new();
        for h in 1..=u32::try_from(height).map_err(failed)? {
            for transaction in self.node.block_at(h).map_err(failed)?.txdata {
                for output in &transaction.output {
                    if output.script_pubkey == *script {
                        paid.push((transaction.compute_txid(), output.value.to_sat()));
                    }
                }
            }
        }
        Ok(paid)
    }

    /// Mines blocks.
    ///
    /// # Errors
    /// The node refused.
    pub fn mine(&self, count: u32) -> Result<(), HarnessError> {
        self.node
            .mine(count, self.miner.address())
            .map(|_| ())
            .map_err(failed)
    }

    /// Signs the next Batch Serai expects (`sign_batch`).
    ///
    /// # Errors
    /// As `sign_batch`.
    pub fn sign_next_batch(&self, signers: &[Participant]) -> Result<SignedBatch, HarnessError> {
        let next = self.included()?.next_batch;
        self.sign_batch(next, signers)
    }

    /// Every burn the devnet's Serai blocks carried.
    ///
    /// # Errors
    /// The devnet's state is poisoned.
    pub fn burns(&self) -> Result<Vec<OutInstructionWithBalance>, HarnessError> {
        Ok(self
            .burned
            .lock()
            .map_err(|_| failed("devnet state poisoned"))?
            .0
            .clone())
    }

    /// The number the next Serai block gets.
    ///
    /// # Errors
    /// The devnet's state is poisoned.
    pub fn next_serai_block(&self) -> Result<u64, HarnessError> {
        Ok(self.included()?.last_serai_block + 1)
    }

    /// The id of the next Batch Serai includes.
    ///
    /// # Errors
    /// The devnet's state is poisoned.
    pub fn next_batch(&self) -> Result<u32, HarnessError> {
        Ok(self.included()?.next_batch)
    }

    /// What the included Batches credited to Serai accounts, in satoshis.
    ///
    /// # Errors
    /// The devnet's state is poisoned.
    pub fn credited(&self) -> Result<u64, HarnessError> {
        Ok(self.included()?.credited)
    }

    /// How many Batches validator 1's scanner built since it started.
    ///
    /// # Errors
    /// The scrape failed.
    pub fn batches_built(&self) -> Result<u32, HarnessError> {
        let built = self
            .validators
            .first()
            .ok_or_else(|| failed("no validators"))?
            .scanner_metric("scanner_batches_built_total")?;
        // A counter in the text format; far below u32::MAX.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Ok(built as u32)
    }

    /// Waits until every running scanner scanned the node's highest finalized block.
    ///
    /// # Errors
    /// Not in time, or the node did not answer.
    pub fn wait_scanned(&self) -> Result<(), HarnessError> {
        let finalized = self.finalized_height()?;
        self.coordinator.wait_until(STEP_TIMEOUT, |_| {
            for validator in &self.validators {
                if validator.scanner_metrics().is_none() {
                    continue;
                }
                if validator.scanned_height()? < finalized {
                    return Ok(false);
                }
            }
            Ok(true)
        })
    }

    /// The next mature coinbase output of the miner, to spend.
    ///
    /// # Errors
    /// The node did not answer, or the state is poisoned.
    pub fn take_coinbase(&self) -> Result<(bitcoin::OutPoint, TxOut), HarnessError> {
        let mut next = self
            .next_coinbase
            .lock()
            .map_err(|_| failed("devnet state poisoned"))?;
        let coin = self.node.coinbase_output(*next).map_err(failed)?;
        *next += 1;
        Ok(coin)
    }

    /// The block of the last Batch Serai included, if any.
    ///
    /// # Errors
    /// The devnet's state is poisoned.
    pub fn last_included_block(&self) -> Result<Option<BlockHash>, HarnessError> {
        Ok(self.included()?.last_block)
    }

    fn included(&self) -> Result<Included, HarnessError> {
        self.included
            .lock()
            .map(|included| *included)
            .map_err(|_| failed("devnet state poisoned"))
    }

    /// Waits for the preprocesses of Batch `batch` (attempt 0) from `signers`, then signs it
    /// with them; returns the signed Batch every signer reported, after checking its signature
    /// under the batch key as Serai would before including it. Serai includes Batches in id
    /// order only, and each included Batch's block becomes the context of later Serai blocks.
    ///
    /// # Errors
    /// `batch` is not the next id Serai expects, a round did not complete, or the signers
    /// disagree.
    pub fn sign_batch(
        &self,
        batch: u32,
        signers: &[Participant],
    ) -> Result<SignedBatch, HarnessError> {
        let expected = self.included()?.next_batch;
        if batch != expected {
            return Err(failed(format!(
                "Serai includes Batch {expected} next, not {batch}"
            )));
        }
        // Serai checks the Batch under the batch key of its block: a processor that started
        // signing it under the key before a rotation starts again under the new one.
        let block = self
            .collect(signers, 1, |message| match message {
                ProcessorMessage::Coordinator(CoordinatorOut::BatchPreprocess {
                    block,
                    batch_id,
                    ..
                }) if batch_id.0 == batch => Some(*block),
                _ => None,
            })?
            .into_values()
            .next()
            .ok_or_else(|| failed("no preprocess"))?;
        let key = self.batch_key_of(block)?;
        let preprocesses = self.collect(signers, 1, |message| match message {
            ProcessorMessage::Coordinator(CoordinatorOut::BatchPreprocess {
                id,
                batch_id,
                preprocess,
                ..
            }) if batch_id.0 == batch && id.key == key => Some((*id, preprocess.clone())),
            _ => None,
        })?;
        let id: BatchSignId = preprocesses
            .values()
            .next()
            .map(|(id, _)| *id)
            .ok_or_else(|| failed("no preprocess"))?;
        let map: ParticipantMap = preprocesses
            .into_iter()
            .map(|(participant, (_, preprocess))| (participant, preprocess))
            .collect();
        self.push_to(signers, |participant| {
            CoordinatorMessage::Coordinator(Coordinator::BatchPreprocesses {
                id,
                preprocesses: others(&map, participant),
            })
        })?;
        let shares: ParticipantMap = self
            .collect(signers, 1, |message| match message {
                ProcessorMessage::Coordinator(CoordinatorOut::BatchShare { id: sent, share })
                    if *sent == id =>
                {
                    Some(share.clone())
                }
                _ => None,
            })?
            .into_iter()
            .collect();
        self.push_to(signers, |participant| {
            CoordinatorMessage::Coordinator(Coordinator::BatchShares {
                id,
                shares: others(&shares, participant),
            })
        })?;
        let updates =
            self.collect(signers, 1, |message| match message {
                ProcessorMessage::Substrate(substrate::ProcessorMessage::Update {
                    batch: signed,
                }) if signed.batch.id.0 == batch => Some(signed.clone()),
                _ => None,
            })?;
        let mut distinct: Vec<SignedBatch> = updates.into_values().collect();
        distinct.dedup();
        let [signed] = distinct.as_slice() else {
            return Err(failed("the signers released different Batches"));
        };
        // Serai includes an Update only if it verifies under the confirmed batch key.
        let public = schnorrkel::PublicKey::from_bytes(&id.key.0).map_err(failed)?;
        let signature = schnorrkel::Signature::from_bytes(&signed.signature.0).map_err(failed)?;
        public
            .verify_simple(BATCH_SIGNING_CONTEXT, &signed.batch.message(), &signature)
            .map_err(|error| failed(format!("Update does not verify: {error}")))?;
        let mut included = self
            .included
            .lock()
            .map_err(|_| failed("devnet state poisoned"))?;
        included.next_batch = batch + 1;
        included.last_block = Some(signed.batch.block);
        included.credited += signed
            .batch
            .instructions
            .iter()
            .map(|instruction| instruction.amount.to_sat())
            .sum::<u64>();
        drop(included);
        // Every processor hears of it, attested: their enclaves preprocess new Batches only so
        // far past the last one included.
        let digest = substrate::inclusion_message(&signed.batch);
        let attestation = Secp256k1::new()
            .sign_schnorr_no_aux_rand(&Message::from_digest(digest), &self.attestor);
        self.push_to_each(|_| {
            CoordinatorMessage::Substrate(substrate::CoordinatorMessage::BatchIncluded {
                batch: signed.clone(),
                attestation: Attestation(attestation.serialize()),
            })
        })?;
        Ok(signed.clone())
    }

    /// A Serai block with `burns`, sent to everyone; as Serai does, its context is the block of
    /// the last Batch included. Waits for the `SubstrateBlockAck`s of `from` (the processors
    /// up) and returns the one at least t of them sent identically.
    ///
    /// # Errors
    /// Not every processor answered, or they disagree.
    pub fn substrate_block(
        &self,
        number: u64,
        pair: &KeyPair,
        burns: Vec<OutInstructionWithBalance>,
        from: &[Participant],
    ) -> Result<SubstrateBlockAck, HarnessError> {
        self.substrate_block_acks(number, pair, burns, &[(pair.network_key, from)])?
            .pop()
            .ok_or_else(|| failed("no SubstrateBlockAck"))
    }

    /// As `substrate_block`, during a rotation: waits for the acknowledgement of each key of
    /// `keys` from the processors listed with it (each answers one per key it holds) and
    /// returns, per key in that order, the one at least t of them sent identically.
    ///
    /// # Errors
    /// As `substrate_block`.
    pub fn substrate_block_acks(
        &self,
        number: u64,
        pair: &KeyPair,
        burns: Vec<OutInstructionWithBalance>,
        keys: &[(NetworkKey, &[Participant])],
    ) -> Result<Vec<SubstrateBlockAck>, HarnessError> {
        let acknowledged = {
            let mut included = self
                .included
                .lock()
                .map_err(|_| failed("devnet state poisoned"))?;
            if number > included.last_serai_block {
                self.burned
                    .lock()
                    .map_err(|_| failed("devnet state poisoned"))?
                    .0
                    .extend(burns.iter().cloned());
            }
            included.last_serai_block = included.last_serai_block.max(number);
            included.last_block.unwrap_or(BlockHash([0; 32]))
        };
        let block = SeraiBlockNumber(number);
        self.push_to(&self.all(), |_| {
            CoordinatorMessage::Substrate(substrate::CoordinatorMessage::SubstrateBlock {
                context: SubstrateContext {
                    serai_time: SeraiTime(number + 1),
                    network_latest_finalized_block: acknowledged,
                },
                block,
                key: pair.network_key,
                burns: burns.clone(),
            })
        })?;
        let mut agreed = Vec::new();
        for (key, from) in keys {
            let acks = self.collect(from, 1, |message| match message {
                ProcessorMessage::Coordinator(CoordinatorOut::SubstrateBlockAck(ack))
                    if ack.block == block && ack.key == *key =>
                {
                    Some(ack.clone())
                }
                _ => None,
            })?;
            // The coordinator attests only what at least t processors reported identically.
            let mut counts: Vec<(SubstrateBlockAck, usize)> = Vec::new();
            for ack in acks.into_values() {
                match counts.iter_mut().find(|(seen, _)| *seen == ack) {
                    Some((_, count)) => *count += 1,
                    None => counts.push((ack, 1)),
                }
            }
            agreed.push(
                counts
                    .into_iter()
                    .find(|(_, count)| *count >= usize::from(self.t))
                    .map(|(ack, _)| ack)
                    .ok_or_else(|| failed("fewer than t identical SubstrateBlockAcks"))?,
            );
        }
        Ok(agreed)
    }

    /// Attests `ack` with the coordinator's key and sends `PlansAcknowledged` to everyone.
    ///
    /// # Errors
    /// The coordinator's state is poisoned.
    pub fn acknowledge(&self, ack: &SubstrateBlockAck) -> Result<(), HarnessError> {
        let digest = PlansAcknowledged::attestation_message(
            NetworkId::Bitcoin,
            &ack.key,
            ack.block,
            &ack.plans,
        );
        let attestation = Secp256k1::new()
            .sign_schnorr_no_aux_rand(&Message::from_digest(digest), &self.attestor);
        self.push_to(&self.all(), |_| {
            CoordinatorMessage::Coordinator(Coordinator::PlansAcknowledged(PlansAcknowledged {
                block: ack.block,
                key: ack.key,
                plans: ack.plans.clone(),
                attestation: Attestation(attestation.serialize()),
            }))
        })
    }

    /// Signs plan attempt `id` with `signers` (preprocesses collected from them first);
    /// returns the transaction id every signer reported completed.
    ///
    /// # Errors
    /// A round did not complete, or the signers disagree.
    pub fn sign_plan(
        &self,
        id: PlanSignId,
        signers: &[Participant],
    ) -> Result<TransactionId, HarnessError> {
        let preprocesses: ParticipantMap = self
            .collect(signers, 1, |message| match message {
                ProcessorMessage::Sign(sign::ProcessorMessage::Preprocess {
                    id: sent,
                    preprocess,
                }) if *sent == id => Some(preprocess.clone()),
                _ => None,
            })?
            .into_iter()
            .collect();
        self.push_to(signers, |participant| {
            CoordinatorMessage::Sign(sign::CoordinatorMessage::Preprocesses {
                id,
                preprocesses: others(&preprocesses, participant),
            })
        })?;
        let shares: ParticipantMap = self
            .collect(signers, 1, |message| match message {
                ProcessorMessage::Sign(sign::ProcessorMessage::Share { id: sent, share })
                    if *sent == id =>
                {
                    Some(share.clone())
                }
                _ => None,
            })?
            .into_iter()
            .collect();
        self.push_to(signers, |participant| {
            CoordinatorMessage::Sign(sign::CoordinatorMessage::Shares {
                id,
                shares: others(&shares, participant),
            })
        })?;
        let completed =
            self.collect(signers, 1, |message| match message {
                ProcessorMessage::Sign(sign::ProcessorMessage::Completed {
                    id: plan, tx, ..
                }) if *plan == id.id => Some(*tx),
                _ => None,
            })?;
        let mut distinct: Vec<TransactionId> = completed.into_values().collect();
        distinct.dedup();
        match distinct.as_slice() {
            [tx] => Ok(*tx),
            _ => Err(failed("the signers completed different transactions")),
        }
    }

    /// Signs every plan of an attested `ack` under its key with `signers` (attempt 0); returns
    /// their transactions' ids, as the signers reported them.
    ///
    /// # Errors
    /// As `sign_plan`.
    pub fn sign_plans(
        &self,
        ack: &SubstrateBlockAck,
        signers: &[Participant],
    ) -> Result<Vec<TransactionId>, HarnessError> {
        ack.plans
            .iter()
            .map(|plan| {
                self.sign_plan(
                    PlanSignId {
                        key: ack.key,
                        id: *plan,
                        attempt: Attempt(0),
                    },
                    signers,
                )
            })
            .collect()
    }

    /// Signs Batches with `signers` until every Batch validator 1 built is included, so that
    /// the next Serai block names the latest finalized block that has one.
    ///
    /// # Errors
    /// A scanner is behind for too long, or a signing round failed.
    pub fn include_built_batches(&self, signers: &[Participant]) -> Result<(), HarnessError> {
        self.wait_scanned()?;
        while self.next_batch()? < self.batches_built()? {
            self.sign_next_batch(signers)?;
        }
        Ok(())
    }

    /// Asks `participants` to preprocess attempt `id` afresh (a re-attempt).
    ///
    /// # Errors
    /// The coordinator's state is poisoned.
    pub fn reattempt(
        &self,
        id: PlanSignId,
        participants: &[Participant],
    ) -> Result<(), HarnessError> {
        self.push_to(participants, |_| {
            CoordinatorMessage::Sign(sign::CoordinatorMessage::Reattempt { id })
        })
    }

    /// The coordinator's attestation key, for a processor's enclave configuration.
    pub fn attestor(&self) -> &Keypair {
        &self.attestor
    }
}
