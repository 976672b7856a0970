//! A seeded, single-threaded, deterministic simulation of the whole processor: four validators
//! (each the real `Processor` over a memory store, with the real enclave in process), the
//! coordinator and Serai (`coordinator`), and a chain with a mempool, a fee market and
//! reorganizations (`chain`). Traffic is random deposits (dust, near dust, large; bursts and
//! quiet stretches) and burns (random sizes, some to invalid addresses); faults are crashes of
//! processors (between steps and between any two commits of a step) and enclaves, enclaves,
//! nodes and links that stop answering, delayed and duplicated messages, coordinator
//! restarts, and transactions no enclave signed spending an open plan's input (a conflict). The
//! chain's mempool replaces transactions (full RBF) and holds those paying less than a quarter
//! of its wandering fee market out of blocks, so stuck plans are replaced. After every step the invariants are checked (`World::check`); at the end, after
//! a quiet drain, that every payable burn was paid once and every deposit credited once.
//!
//! A seed decides everything: `run(seed, &config)` twice is the same run. A failure prints
//! the command that replays it.

pub mod chain;
pub mod coordinator;
pub mod enclave;
pub mod link;
pub mod rng;

use std::{
    cell::{Cell, RefCell},
    collections::{BTreeMap, BTreeSet},
    fmt,
    panic::{catch_unwind, AssertUnwindSafe},
    rc::Rc,
    time::Duration,
};

use bitcoin::{
    absolute::LockTime,
    hashes::Hash,
    opcodes::all::OP_RETURN,
    script::PushBytesBuf,
    secp256k1::{Keypair, Secp256k1, SecretKey},
    transaction::Version,
    Address, Amount as BtcAmount, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid,
    WPubkeyHash, Witness,
};
use scanner::{
    chain::bitcoin_core::op_return_payload,
    processor::{Processor, ProcessorMetrics},
    scan::metrics::ScannerMetrics,
    scan::Scanner,
    schedule::Scheduler,
    store::{memory::MemoryStore, ProcessorStore, ScanView},
};
use schema::{
    amount::Amount,
    hashes::{PlanId, SeraiAddress},
    ids::{NetworkId, Participant, Session, ValidatorSet},
    instruction::{InInstruction, OutInstructionWithBalance, RefundableInInstruction},
    keys::{KeyPair, NetworkKey},
    plan::{OutputKind, Plan},
    protocol::DUST,
    taproot::KeyScripts,
    transaction::{build, Built},
};
use signer_enclave::{enclave::pair_of, key_gen::GeneratedKeys, local_key_gen::generate_keys};

use crate::{
    chain::{Chain, SimNode},
    coordinator::Coordinator,
    enclave::{EnclaveHandle, SimEnclave},
    link::{LinkHandle, SimClock, SimParts},
    rng::Rng,
};

/// Blocks on top of a block for it to be final, itself included.
pub const CONFIRMATIONS: u64 = 3;
/// The threshold and the set size.
pub const T: u16 = 3;
/// The set size.
pub const N: u16 = 4;
/// Valid burns of at least this much must be paid by the end of a run.
pub const PAYABLE: u64 = 50_000;
/// Steps a visible coordinator message may stay unacked once every part is up.
pub const UNACKED_STEPS: u64 = 20;

/// What a run does.
#[derive(Clone, Debug)]
pub struct Config {
    /// Steps with traffic and faults.
    pub steps: u64,
    /// Quiet steps at most after them, for everything to settle.
    pub drain: u64,
    /// Whether faults are injected.
    pub faults: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            steps: 60,
            drain: 160,
            faults: true,
        }
    }
}

/// What a clean run did.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Steps run.
    pub steps: u64,
    /// Blocks on the final chain.
    pub blocks: u64,
    /// Deposits made.
    pub deposits: u64,
    /// Burns made, and those paid.
    pub burns: (u64, u64),
    /// Batches included.
    pub batches: u64,
    /// Plans attested.
    pub plans: u64,
    /// Processor crashes, enclave crashes, coordinator restarts, reorganizations.
    pub faults: (u64, u64, u64, u64),
    /// Plans attested but not reported completed at the end.
    pub open_plans: u64,
    /// Replacements of stuck plans preprocessed by some enclave.
    pub replaced: u64,
    /// Conflicting spends of plan inputs injected.
    pub conflicts: u64,
    /// Children paying for stuck plans (CPFP) made, by the validator that made the most (a
    /// Serai block a crash interrupted is handled again, and counted again).
    pub children: u64,
    /// The final chain's tip: two runs of a seed end on the same chain.
    pub tip: String,
}

/// A run that broke an invariant or panicked.
#[derive(Clone, Debug)]
pub struct Failure {
    /// The seed.
    pub seed: u64,
    /// The step it happened at.
    pub step: u64,
    /// What broke.
    pub what: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {} failed at step {}: {}\n  replay: ops/sim --seed {}",
            self.seed, self.step, self.what, self.seed
        )
    }
}

thread_local! {
    /// The set's keys, generated once per thread (a DKG takes a while in a debug build); the
    /// same for every seed, as the seed of their generation is fixed.
    static KEYS: RefCell<Option<Rc<BTreeMap<Participant, GeneratedKeys>>>> = const { RefCell::new(None) };
}

fn keys() -> Result<Rc<BTreeMap<Participant, GeneratedKeys>>, String> {
    KEYS.with(|cell| {
        if let Some(keys) = cell.borrow().as_ref() {
            return Ok(Rc::clone(keys));
        }
        let keys = generate_keys(
            T,
            N,
            &mut <rand_chacha::ChaCha20Rng as rand_chacha::rand_core::SeedableRng>::seed_from_u64(
                7,
            ),
        )
        .ok_or("the key generation failed")?;
        let keys = Rc::new(keys);
        *cell.borrow_mut() = Some(Rc::clone(&keys));
        Ok(keys)
    })
}

/// Runs one seed.
///
/// # Errors
/// An invariant broke, or something panicked.
pub fn run(seed: u64, config: &Config) -> Result<Report, Failure> {
    let step = Rc::new(Cell::new(0));
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let mut world = World::new(seed, config, Rc::clone(&step))?;
        world.run()
    }));
    match outcome {
        Ok(Ok(report)) => Ok(report),
        Ok(Err(what)) => Err(Failure {
            seed,
            step: step.get(),
            what,
        }),
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|text| (*text).to_owned()))
                .unwrap_or_else(|| "a panic".to_owned());
            Err(Failure {
                seed,
                step: step.get(),
                what: format!("panicked: {what}"),
            })
        }
    }
}

/// A deposit made, for the final accounting.
struct Deposit {
    txid: Txid,
}

/// A burn made.
struct Burn {
    script: Option<ScriptBuf>,
    amount: u64,
}

struct Validator {
    participant: Participant,
    processor: Option<Processor<SimParts>>,
    /// The store while the processor is down.
    store: Option<MemoryStore>,
    enclave: Rc<SimEnclave>,
    node_down: Rc<Cell<bool>>,
    /// Its processor's metrics, kept across its restarts for the report.
    metrics: ProcessorMetrics,
    /// Steps until the processor comes back (0: up).
    down_for: u64,
    enclave_down_for: u64,
    node_down_for: u64,
    link_down_for: u64,
}

impl Validator {
    /// What its books for `key` are kept from, whether its processor is up or down.
    fn books(&self, key: &NetworkKey) -> Result<Option<Books>, String> {
        let store: &dyn ProcessorStore = match (&self.processor, &self.store) {
            (Some(processor), _) => processor.scanner().store(),
            (None, Some(store)) => store,
            (None, None) => return Ok(None),
        };
        let (Some(scheduler), Some(acknowledged), Some(serai)) = (
            store.scheduler(key).map_err(failed)?,
            store.acknowledged(key).map_err(failed)?,
            store.last_serai_block().map_err(failed)?,
        ) else {
            return Ok(None);
        };
        let mut in_flight = Vec::new();
        for flight in store.in_flight().map_err(failed)? {
            if flight.key == *key {
                in_flight.push(
                    store
                        .plan(&flight.latest)
                        .map_err(failed)?
                        .ok_or("a family in flight without its plan")?,
                );
            }
        }
        Ok(Some(Books {
            scheduler,
            acknowledged,
            serai: serai.0,
            in_flight,
        }))
    }

    /// A plan its store recorded, whether its processor is up or down.
    fn plan(&self, id: &PlanId) -> Option<Plan> {
        let recorded = match (&self.processor, &self.store) {
            (Some(processor), _) => processor.scanner().store().plan(id),
            (None, Some(store)) => store.plan(id),
            (None, None) => return None,
        };
        recorded.ok().flatten()
    }
}

/// What a validator's books for one key are kept from.
struct Books {
    scheduler: Scheduler,
    /// The last network block acknowledged to the scheduler.
    acknowledged: u64,
    /// The last Serai block handled.
    serai: u64,
    /// The latest member of every plan family in flight.
    in_flight: Vec<Plan>,
}

struct World {
    config: Config,
    rng: Rng,
    step: Rc<Cell<u64>>,
    clock: SimClock,
    chain: Rc<RefCell<Chain>>,
    coordinator: Rc<RefCell<Coordinator>>,
    validators: Vec<Validator>,
    scripts: KeyScripts,
    deposits: Vec<Deposit>,
    burns: Vec<Burn>,
    report: Report,
    _dir: tempfile::TempDir,
    /// Every preprocess seen, by its bytes: what it was for.
    preprocesses: BTreeMap<Vec<u8>, String>,
    /// Every input of a signed transaction: the transaction, and its plan's family.
    spends: BTreeMap<OutPoint, (Txid, PlanId)>,
    /// Every plan signed: its transaction (one plan id, one transaction).
    signed: BTreeMap<PlanId, Txid>,
    /// Per-seed fault rates, per mille per step.
    rates: Rates,
}

#[derive(Clone, Copy, Debug)]
struct Rates {
    crash: u64,
    lost_replies: u64,
    enclave: u64,
    node: u64,
    link: u64,
    coordinator: u64,
    reorg: u64,
    block: u64,
    burn: u64,
    conflict: u64,
}

fn failed(error: impl fmt::Display) -> String {
    error.to_string()
}

impl World {
    fn new(seed: u64, config: &Config, step: Rc<Cell<u64>>) -> Result<Self, String> {
        let mut rng = Rng::new(seed);
        let keys = keys()?;
        let first = keys.values().next().ok_or("no keys")?;
        let pair: KeyPair = pair_of(first).ok_or("no key pair")?;
        let scripts = KeyScripts::derive(&pair.network_key).map_err(failed)?;
        let set = ValidatorSet {
            session: Session(0),
            network: NetworkId::Bitcoin,
        };
        let attestor = Keypair::from_secret_key(
            &Secp256k1::new(),
            &SecretKey::from_slice(&[0x5a; 32]).map_err(failed)?,
        );
        // The enclaves' databases sync every write: on a memory file system when there is one.
        let shm = std::path::Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::tempdir_in(shm)
        } else {
            tempfile::tempdir()
        }
        .map_err(failed)?;
        let chain = Rc::new(RefCell::new(Chain::new(&mut rng, 10)));
        let participants: Vec<Participant> = keys.keys().copied().collect();
        let mut coordinator = Coordinator::new(
            usize::from(T),
            participants.clone(),
            set,
            attestor,
            pair,
            Rng::new(rng.next_u64()),
        );
        let rates = if config.faults {
            coordinator.faults.max_delay = rng.below(3);
            coordinator.faults.lost_acks = rng.below(100);
            Rates {
                crash: rng.below(40),
                lost_replies: rng.below(40),
                enclave: rng.below(25),
                node: rng.below(25),
                link: rng.below(25),
                coordinator: rng.below(15),
                reorg: rng.below(80),
                block: rng.between(300, 900),
                burn: rng.between(50, 300),
                conflict: rng.below(15),
            }
        } else {
            Rates {
                crash: 0,
                lost_replies: 0,
                enclave: 0,
                node: 0,
                link: 0,
                coordinator: 0,
                reorg: 0,
                block: 600,
                burn: 150,
                conflict: 0,
            }
        };
        let activation = chain
            .borrow()
            .blocks
            .get(5)
            .map(|block| block.hash)
            .ok_or("no block 5")?;
        coordinator.confirm_key_pair(activation);
        let coordinator = Rc::new(RefCell::new(coordinator));
        let clock = SimClock::default();
        let mut validators = Vec::new();
        for (participant, generated) in keys.iter() {
            let enclave = SimEnclave::provision(
                dir.path().join(format!("enclave-{participant}")),
                &attestor.x_only_public_key().0,
                set,
                pair,
                generated,
                Rng::new(rng.next_u64()),
            )
            .map_err(|error| error.0)?;
            enclave.lost_replies.set(rates.lost_replies);
            validators.push(Validator {
                participant: *participant,
                processor: None,
                store: Some(MemoryStore::new()),
                enclave: Rc::new(enclave),
                node_down: Rc::new(Cell::new(false)),
                metrics: ProcessorMetrics::new(&prometheus::Registry::new()).map_err(failed)?,
                down_for: 0,
                enclave_down_for: 0,
                node_down_for: 0,
                link_down_for: 0,
            });
        }
        let mut world = World {
            config: config.clone(),
            rng,
            step,
            clock,
            chain,
            coordinator,
            validators,
            scripts,
            deposits: Vec::new(),
            burns: Vec::new(),
            report: Report::default(),
            _dir: dir,
            preprocesses: BTreeMap::new(),
            spends: BTreeMap::new(),
            signed: BTreeMap::new(),
            rates,
        };
        for index in 0..world.validators.len() {
            world.start(index)?;
        }
        Ok(world)
    }

    /// Builds validator `index`'s processor over its store.
    fn start(&mut self, index: usize) -> Result<(), String> {
        let coordinator = Rc::clone(&self.coordinator);
        let chain = Rc::clone(&self.chain);
        let clock = self.clock.clone();
        let validator = self.validators.get_mut(index).ok_or("no such validator")?;
        let Some(store) = validator.store.take() else {
            return Ok(());
        };
        store.fail_after_writes(None);
        let scanner = Scanner::new(
            SimNode::new(chain, Rc::clone(&validator.node_down)),
            NetworkId::Bitcoin,
            store,
            CONFIRMATIONS,
            ScannerMetrics::new().map_err(failed)?,
        );
        let metrics = validator.metrics.clone();
        validator.processor = Some(Processor::new(
            scanner,
            bitcoin::Network::Regtest,
            EnclaveHandle(Rc::clone(&validator.enclave)),
            LinkHandle {
                coordinator,
                validator: validator.participant,
            },
            clock,
            metrics,
        ));
        Ok(())
    }

    /// Crashes validator `index`'s processor: everything but its store is lost.
    fn crash(&mut self, index: usize, down_for: u64) {
        if let Some(validator) = self.validators.get_mut(index) {
            if let Some(processor) = validator.processor.take() {
                validator.store = Some(processor.into_scanner().into_store());
                validator.down_for = down_for;
                self.report.faults.0 += 1;
            }
        }
    }

    fn run(&mut self) -> Result<Report, String> {
        let total = self.config.steps + self.config.drain;
        for step in 1..=total {
            self.step.set(step);
            self.clock.0.set(step);
            let traffic = step <= self.config.steps;
            if traffic {
                self.inject_faults()?;
                self.traffic()?;
            } else {
                self.calm()?;
            }
            self.step_validators(traffic)?;
            self.coordinator.borrow_mut().step(step);
            self.check()?;
            self.report.steps = step;
            if !traffic && self.settled()? {
                break;
            }
        }
        self.final_check()?;
        if self.config.faults && self.rng.chance(100) {
            self.deep_reorganization()?;
        }
        let coordinator = self.coordinator.borrow();
        self.report.blocks = self.chain.borrow().blocks.len() as u64;
        self.report.batches = coordinator.serai.included.len() as u64;
        self.report.plans = coordinator.serai.attested.len() as u64;
        self.report.open_plans = coordinator.open_plans() as u64;
        let replacements: BTreeSet<PlanId> = self
            .validators
            .iter()
            .flat_map(|validator| {
                let log = validator.enclave.log.borrow();
                log.families
                    .iter()
                    .filter(|(plan, family)| plan != family)
                    .map(|(plan, _)| *plan)
                    .collect::<Vec<_>>()
            })
            .collect();
        self.report.replaced = replacements.len() as u64;
        self.report.children = self
            .validators
            .iter()
            .map(|validator| validator.metrics.plan_children.get())
            .max()
            .unwrap_or(0);
        self.report.tip = self
            .chain
            .borrow()
            .blocks
            .last()
            .map(|block| hex(&block.hash))
            .unwrap_or_default();
        Ok(self.report.clone())
    }

    fn inject_faults(&mut self) -> Result<(), String> {
        let rates = self.rates;
        let count = self.validators.len() as u64;
        if self.rng.chance(rates.crash) {
            let index = usize::try_from(self.rng.below(count)).map_err(failed)?;
            let down_for = self.rng.below(6);
            self.crash(index, down_for);
        }
        if self.rng.chance(rates.enclave) {
            let index = usize::try_from(self.rng.below(count)).map_err(failed)?;
            if let Some(validator) = self.validators.get_mut(index) {
                if self.rng.chance(500) {
                    validator.enclave.restart().map_err(|error| error.0)?;
                    self.report.faults.1 += 1;
                } else {
                    validator.enclave_down_for = self.rng.between(1, 8);
                }
            }
        }
        if self.rng.chance(rates.node) {
            let index = usize::try_from(self.rng.below(count)).map_err(failed)?;
            if let Some(validator) = self.validators.get_mut(index) {
                validator.node_down_for = self.rng.between(1, 8);
            }
        }
        if self.rng.chance(rates.link) {
            let index = usize::try_from(self.rng.below(count)).map_err(failed)?;
            if let Some(validator) = self.validators.get_mut(index) {
                validator.link_down_for = self.rng.between(1, 8);
            }
        }
        if self.rng.chance(rates.coordinator) {
            let resend = self.rng.chance(500);
            self.coordinator.borrow_mut().restart(resend);
            self.report.faults.2 += 1;
        }
        Ok(())
    }

    /// Everything comes back and stays up; fees fall; blocks keep coming.
    fn calm(&mut self) -> Result<(), String> {
        for index in 0..self.validators.len() {
            if let Some(validator) = self.validators.get_mut(index) {
                validator.down_for = 0;
                validator.enclave_down_for = 0;
                validator.node_down_for = 0;
                validator.link_down_for = 0;
                validator.enclave.lost_replies.set(0);
            }
            self.start(index)?;
        }
        {
            let mut coordinator = self.coordinator.borrow_mut();
            coordinator.faults.down.clear();
            coordinator.faults.lost_acks = 0;
        }
        let mut chain = self.chain.borrow_mut();
        chain.market = 2;
        chain.mine(&mut self.rng, Vec::new());
        Ok(())
    }

    fn traffic(&mut self) -> Result<(), String> {
        let rates = self.rates;
        {
            let mut chain = self.chain.borrow_mut();
            // The fee market wanders between 1 and 500 sat/vB.
            let market = chain.market;
            chain.market = match self.rng.below(10) {
                0 => (market * 2).min(500),
                1 => (market / 2).max(1),
                2 => self.rng.between(1, 500),
                _ => market,
            };
        }
        if self.rng.chance(rates.reorg) {
            let depth = self.rng.between(1, CONFIRMATIONS - 1);
            let mut rng = Rng::new(self.rng.next_u64());
            let mut chooser = Rng::new(self.rng.next_u64());
            let ours = self.scripts.script(OutputKind::External).clone();
            self.chain
                .borrow_mut()
                .reorganize(&mut rng, depth, |transaction| {
                    // A deposit may be double-spent away on the new branch.
                    let deposit = transaction
                        .output
                        .iter()
                        .any(|output| output.script_pubkey == ours);
                    !(deposit && chooser.chance(300))
                });
            self.report.faults.3 += 1;
        }
        if self.rng.chance(rates.conflict) {
            self.conflicting_spend();
        }
        if self.rng.chance(rates.block) {
            let count = match self.rng.below(1000) {
                0..=499 => 0,
                500..=949 => self.rng.between(1, 4),
                950..=998 => self.rng.between(20, 120),
                // Rarely, more deposits than one Batch holds (594).
                _ => self.rng.between(600, 800),
            };
            let mut deposits = Vec::new();
            for _ in 0..count {
                deposits.push(self.deposit());
            }
            self.chain.borrow_mut().mine(&mut self.rng, deposits);
        }
        if self.rng.chance(rates.burn) {
            for _ in 0..self.rng.between(1, 3) {
                let spendable = {
                    let coordinator = self.coordinator.borrow();
                    coordinator
                        .serai
                        .credited
                        .saturating_sub(coordinator.serai.burned)
                };
                if spendable < PAYABLE * 4 {
                    break;
                }
                self.burn(spendable)?;
            }
        }
        Ok(())
    }

    fn deposit(&mut self) -> Transaction {
        let amount = match self.rng.below(10) {
            0 => self.rng.between(1_000, DUST.to_sat() - 1),
            1 => self.rng.between(DUST.to_sat(), DUST.to_sat() * 2),
            2 => self.rng.between(100_000_000, 5_000_000_000),
            _ => self.rng.between(50_000, 20_000_000),
        };
        let mut output = vec![TxOut {
            value: BtcAmount::from_sat(amount),
            script_pubkey: self.scripts.script(OutputKind::External).clone(),
        }];
        let data = match self.rng.below(10) {
            0 => None,
            1 => Some(vec![0xff; 12]),
            _ => Some(
                RefundableInInstruction {
                    origin: None,
                    instruction: InInstruction::Transfer {
                        to: SeraiAddress(self.rng.bytes32()),
                    },
                }
                .encode(),
            ),
        };
        if let Some(data) = data {
            let mut script = ScriptBuf::builder().push_opcode(OP_RETURN);
            if let Ok(push) = PushBytesBuf::try_from(data) {
                script = script.push_slice(push);
            }
            output.push(TxOut {
                value: BtcAmount::ZERO,
                script_pubkey: script.into_script(),
            });
        }
        let funds = OutPoint {
            txid: Txid::from_byte_array(self.rng.bytes32()),
            vout: 0,
        };
        self.chain.borrow_mut().external.insert(funds);
        let transaction = Transaction {
            version: Version::TWO,
            lock_time: LockTime::ZERO,
            input: vec![TxIn {
                previous_output: funds,
                script_sig: ScriptBuf::new(),
                sequence: Sequence::MAX,
                witness: Witness::new(),
            }],
            output,
        };
        self.deposits.push(Deposit {
            txid: transaction.compute_txid(),
        });
        self.report.deposits += 1;
        transaction
    }

    fn burn(&mut self, spendable: u64) -> Result<(), String> {
        let mut hash = [0u8; 20];
        hash.copy_from_slice(&self.rng.bytes32()[..20]);
        let script = ScriptBuf::new_p2wpkh(&WPubkeyHash::from_byte_array(hash));
        let (address, payable) = match self.rng.below(20) {
            0 => (b"bcrt1-not-an-address".to_vec(), None),
            1 => (
                Address::from_script(&script, bitcoin::Network::Bitcoin)
                    .map_err(failed)?
                    .to_string()
                    .into_bytes(),
                None,
            ),
            _ => (
                Address::from_script(&script, bitcoin::Network::Regtest)
                    .map_err(failed)?
                    .to_string()
                    .into_bytes(),
                Some(script),
            ),
        };
        let amount = if self.rng.chance(100) {
            self.rng.between(1_000, DUST.to_sat() - 1)
        } else if self.rng.chance(100) {
            // Just above dust: once paid, no replacement keeps the payment, so a child pays
            // for its transaction when it is stuck.
            self.rng.between(DUST.to_sat(), DUST.to_sat() + 4_000)
        } else {
            self.rng.between(PAYABLE, (spendable / 4).max(PAYABLE))
        };
        self.burns.push(Burn {
            script: payable,
            amount,
        });
        self.coordinator
            .borrow_mut()
            .burn(OutInstructionWithBalance {
                address,
                data: None,
                amount: Amount::from_sat(amount).map_err(failed)?,
            });
        Ok(())
    }

    fn step_validators(&mut self, traffic: bool) -> Result<(), String> {
        for index in 0..self.validators.len() {
            let (participant, crash_mid_step) = {
                let Some(validator) = self.validators.get_mut(index) else {
                    continue;
                };
                if validator.processor.is_none() {
                    if validator.down_for > 0 {
                        validator.down_for -= 1;
                        continue;
                    }
                } else if validator.down_for > 0 {
                    validator.down_for = 0;
                }
                for counter in [
                    &mut validator.enclave_down_for,
                    &mut validator.node_down_for,
                    &mut validator.link_down_for,
                ] {
                    *counter = counter.saturating_sub(1);
                }
                validator.enclave.down.set(validator.enclave_down_for > 0);
                validator.node_down.set(validator.node_down_for > 0);
                (
                    validator.participant,
                    traffic && self.rng.chance(self.rates.crash),
                )
            };
            {
                let link_down = self
                    .validators
                    .get(index)
                    .is_some_and(|validator| validator.link_down_for > 0);
                let mut coordinator = self.coordinator.borrow_mut();
                if link_down {
                    coordinator.faults.down.insert(participant);
                } else {
                    coordinator.faults.down.remove(&participant);
                }
            }
            self.start(index)?;
            let writes = self.rng.below(4);
            let Some(validator) = self.validators.get_mut(index) else {
                continue;
            };
            let Some(processor) = validator.processor.as_mut() else {
                continue;
            };
            if crash_mid_step {
                processor.scanner().store().fail_after_writes(Some(writes));
            }
            let result = futures::executor::block_on(processor.step(Duration::ZERO));
            if let Err(error) = result {
                if error.halts_link() {
                    return Err(format!("validator {participant:?}'s link halted: {error}"));
                }
                // With every fault off, nothing may fail: an error then is a stuck processor.
                if !traffic {
                    return Err(format!(
                        "validator {participant:?}'s step failed with every part up: {error}"
                    ));
                }
            }
            if crash_mid_step {
                self.crash(index, 0);
            }
        }
        Ok(())
    }

    /// The invariants that hold after every step.
    fn check(&mut self) -> Result<(), String> {
        let coordinator = self.coordinator.borrow();
        if let Some(violation) = coordinator.violations.first() {
            return Err(violation.clone());
        }
        for validator in &self.validators {
            let log = validator.enclave.log.borrow();
            for (plan, transaction) in &log.completed {
                if !coordinator.serai.attested.contains(plan) {
                    return Err(format!(
                        "validator {:?} signed plan {} that was never acknowledged",
                        validator.participant,
                        hex(plan.as_bytes())
                    ));
                }
                let txid = transaction.compute_txid();
                let family = log.families.get(plan).copied().unwrap_or(*plan);
                let earlier = *self.signed.entry(*plan).or_insert(txid);
                if earlier != txid {
                    return Err(format!(
                        "plan {} signed into two transactions: {earlier} and {txid}",
                        hex(plan.as_bytes())
                    ));
                }
                for input in &transaction.input {
                    let (earlier, earlier_family) = *self
                        .spends
                        .entry(input.previous_output)
                        .or_insert((txid, family));
                    // Only the members of one family (a plan and its replacements) may sign
                    // one input into different transactions.
                    if earlier != txid && earlier_family != family {
                        return Err(format!(
                            "input {} signed into two transactions: {earlier} and {txid}",
                            input.previous_output
                        ));
                    }
                }
            }
            for (what, preprocess) in &log.preprocesses {
                let earlier = self
                    .preprocesses
                    .entry(preprocess.clone())
                    .or_insert_with(|| what.clone());
                if earlier != what {
                    return Err(format!(
                        "validator {:?} reused a nonce: the same preprocess for {earlier} and {what}",
                        validator.participant
                    ));
                }
            }
        }
        let chain = self.chain.borrow();
        for burn in &self.burns {
            if let Some(script) = &burn.script {
                let paid = chain.payments_to(script);
                if paid.len() > 1 {
                    return Err(format!("a burn of {} sats was paid twice", burn.amount));
                }
                if paid.iter().any(|amount| *amount > burn.amount) {
                    return Err(format!(
                        "a burn of {} sats was paid {paid:?}: more than burned",
                        burn.amount
                    ));
                }
            }
        }
        for signed in &coordinator.serai.included {
            if !chain
                .blocks
                .iter()
                .any(|block| block.hash == signed.batch.block.0)
            {
                return Err(format!(
                    "Batch {} reports a block no longer on the chain",
                    signed.batch.id.0
                ));
            }
        }
        // Every validator built the same Batches, each under ids consecutive from 0; every
        // enclave signed only Batches the validators built, so never two under one id.
        let mut built: BTreeMap<u32, schema::batch::Batch> = BTreeMap::new();
        for validator in &self.validators {
            let store = match (&validator.processor, &validator.store) {
                (Some(processor), _) => processor.scanner().store(),
                (None, Some(store)) => store,
                (None, None) => continue,
            };
            let batches = store
                .batches_from(schema::ids::BatchId(0))
                .map_err(failed)?;
            if batches
                .iter()
                .zip(0u32..)
                .any(|(batch, expected)| batch.id.0 != expected)
            {
                return Err(format!(
                    "validator {:?}'s Batch ids are not consecutive from 0",
                    validator.participant
                ));
            }
            for batch in batches {
                let earlier = built.entry(batch.id.0).or_insert_with(|| batch.clone());
                if *earlier != batch {
                    return Err(format!(
                        "validators built different Batches under id {}",
                        batch.id.0
                    ));
                }
            }
        }
        for validator in &self.validators {
            for signed in &validator.enclave.log.borrow().batches {
                if built.get(&signed.batch.id.0) != Some(&signed.batch) {
                    return Err(format!(
                        "validator {:?}'s enclave signed a Batch {} no validator built",
                        validator.participant, signed.batch.id.0
                    ));
                }
            }
        }
        Ok(())
    }

    /// Whether the run has settled: nothing left to sign, every payable burn paid, every
    /// message handled.
    fn settled(&self) -> Result<bool, String> {
        let coordinator = self.coordinator.borrow();
        if coordinator.open_plans() > 0
            || !coordinator.serai.pending_burns.is_empty()
            || !coordinator.unacked(UNACKED_STEPS).is_empty()
        {
            return Ok(false);
        }
        let chain = self.chain.borrow();
        Ok(self.unpaid(&chain).is_empty())
    }

    fn unpaid<'a>(&'a self, chain: &Chain) -> Vec<&'a Burn> {
        self.burns
            .iter()
            .filter(|burn| burn.amount >= PAYABLE)
            .filter(|burn| {
                burn.script
                    .as_ref()
                    .is_some_and(|script| chain.payments_to(script).len() != 1)
            })
            .collect()
    }

    /// After the drain: every payable burn paid once, every deposit in the acknowledged
    /// chain credited once.
    fn final_check(&mut self) -> Result<(), String> {
        let chain = self.chain.borrow();
        let unpaid = self.unpaid(&chain);
        let coordinator = self.coordinator.borrow();
        if !unpaid.is_empty() {
            return Err(format!(
                "{} payable burns unpaid after the drain ({} plans open, credited {}, burned {})",
                unpaid.len(),
                coordinator.open_plans(),
                coordinator.serai.credited,
                coordinator.serai.burned,
            ));
        }
        let unacked = coordinator.unacked(UNACKED_STEPS);
        if !unacked.is_empty() {
            return Err(format!(
                "validators {unacked:?} left a coordinator message unhandled for {UNACKED_STEPS} steps after the drain"
            ));
        }
        self.report.burns = (
            self.burns.len() as u64,
            self.burns
                .iter()
                .filter(|burn| {
                    burn.script
                        .as_ref()
                        .is_some_and(|script| chain.payments_to(script).len() == 1)
                })
                .count() as u64,
        );
        // Deposits credited: the instructions of the included Batches, block by block, are
        // exactly the valid deposits of at least DUST in those blocks.
        let ours = self.scripts.script(OutputKind::External);
        let made: BTreeSet<Txid> = self.deposits.iter().map(|deposit| deposit.txid).collect();
        let mut by_block: BTreeMap<[u8; 32], Vec<(u64, SeraiAddress)>> = BTreeMap::new();
        for signed in &coordinator.serai.included {
            by_block.entry(signed.batch.block.0).or_default().extend(
                signed.batch.instructions.iter().map(|instruction| {
                    let InInstruction::Transfer { to } = instruction.instruction;
                    (instruction.amount.to_sat(), to)
                }),
            );
        }
        let last = coordinator
            .serai
            .last_block
            .and_then(|last| chain.blocks.iter().position(|block| block.hash == last.0));
        let acknowledged = last.map_or(&[][..], |last| chain.blocks.get(..=last).unwrap_or(&[]));
        for block in acknowledged {
            let mut expected = Vec::new();
            for transaction in &block.transactions {
                if !made.contains(&transaction.compute_txid()) {
                    continue;
                }
                let instruction = transaction
                    .output
                    .iter()
                    .find_map(|output| op_return_payload(&output.script_pubkey))
                    .and_then(|payload| RefundableInInstruction::decode(&payload).ok());
                for output in &transaction.output {
                    if output.script_pubkey == *ours && output.value.to_sat() >= DUST.to_sat() {
                        if let Some(instruction) = &instruction {
                            let InInstruction::Transfer { to } = instruction.instruction;
                            expected.push((output.value.to_sat(), to));
                        }
                    }
                }
            }
            let credited = by_block.get(&block.hash).map_or(&[][..], Vec::as_slice);
            if credited != expected.as_slice() {
                return Err(format!(
                    "the Batches of a block credit {} deposits, the block holds {} valid ones",
                    credited.len(),
                    expected.len()
                ));
            }
        }
        let burned = coordinator.serai.burned_through.clone();
        let key = coordinator.network_key();
        drop(coordinator);
        self.check_books(&chain, &key, &burned)
    }

    /// Every validator's books balance, as the devnet's traffic audit checks them:
    /// `deposits − (burns − outstanding) = holdings + carried`. Deposits are our outputs of at
    /// least DUST that no spend of ours made, in the blocks acknowledged to the validator's
    /// scheduler; burns are those of the Serai blocks it handled (`burned` holds the running
    /// total by Serai block: a validator may still be handling the last one); holdings are our
    /// outputs unspent at the tip, less deposits after those blocks (the scheduler has not
    /// been given them), as the validator's plans in flight not yet on chain leave them (their
    /// inputs spent, their outputs to us made: the scheduler booked them when it made them). Conflicting spends count as spends of
    /// ours: their fee is lost, what they pay to our addresses is held.
    fn check_books(
        &self,
        chain: &Chain,
        key: &NetworkKey,
        burned: &BTreeMap<u64, u64>,
    ) -> Result<(), String> {
        for validator in &self.validators {
            let Some(Books {
                scheduler,
                acknowledged,
                serai,
                in_flight,
            }) = validator.books(key)?
            else {
                continue;
            };
            let burned = burned.get(&serai).copied().unwrap_or(0);
            let mut unspent: BTreeMap<OutPoint, u64> = BTreeMap::new();
            let mut deposited = 0_u64;
            for (height, block) in (0_u64..).zip(&chain.blocks) {
                for transaction in &block.transactions {
                    let spends_ours = transaction
                        .input
                        .iter()
                        .any(|input| unspent.contains_key(&input.previous_output));
                    for input in &transaction.input {
                        unspent.remove(&input.previous_output);
                    }
                    let txid = transaction.compute_txid();
                    for (vout, output) in (0_u32..).zip(&transaction.output) {
                        if self.scripts.kind_of(&output.script_pubkey).is_none() {
                            continue;
                        }
                        let value = output.value.to_sat();
                        if !spends_ours {
                            if value < DUST.to_sat() || height > acknowledged {
                                continue;
                            }
                            deposited += value;
                        }
                        unspent.insert(OutPoint { txid, vout }, value);
                    }
                }
            }
            let mut holdings: i128 = unspent.values().map(|value| i128::from(*value)).sum();
            for plan in &in_flight {
                let on_chain = plan.inputs.iter().any(|input| {
                    chain.spent_in_blocks(&OutPoint {
                        txid: Txid::from_byte_array(input.id.txid.0),
                        vout: input.id.vout,
                    })
                });
                if on_chain {
                    continue;
                }
                let Ok(Built::Transaction(built)) = build(plan) else {
                    return Err("a plan in flight does not build".into());
                };
                for input in &plan.inputs {
                    holdings -= i128::from(input.amount.to_sat());
                }
                for output in &built.transaction.output {
                    if self.scripts.kind_of(&output.script_pubkey).is_some() {
                        holdings += i128::from(output.value.to_sat());
                    }
                }
            }
            let credited = i128::from(deposited) - i128::from(burned)
                + i128::from(scheduler.outstanding().to_sat());
            let held = holdings + i128::from(scheduler.carried().0);
            if credited != held {
                return Err(format!(
                    "validator {}: deposits {deposited} - (burns {burned} - outstanding {}) != holdings {holdings} + carried {}",
                    validator.participant,
                    scheduler.outstanding().to_sat(),
                    scheduler.carried().0
                ));
            }
        }
        Ok(())
    }

    /// A transaction no enclave signed spends every input of an open plan (a key compromised,
    /// or a defect), and is mined at once: it pays them back to our change address less a fee.
    /// (A conflict spending only some inputs would leave the others out of the pool for good,
    /// a known gap: the enclaves sign them into no other family, and the burns they were to pay
    /// could wait forever.) The processors count the conflict, take the plan back at the next
    /// Serai block and pay its payments again; every invariant still holds, and every payable
    /// burn is paid once by the end.
    fn conflicting_spend(&mut self) {
        let open: Vec<PlanId> = {
            let coordinator = self.coordinator.borrow();
            coordinator
                .serai
                .attested
                .difference(&coordinator.serai.completed)
                .copied()
                .collect()
        };
        let pick = self.rng.below(u64::try_from(open.len()).unwrap_or(0));
        let Some(id) = usize::try_from(pick)
            .ok()
            .and_then(|index| open.get(index))
            .copied()
        else {
            return;
        };
        let Some(plan) = self
            .validators
            .iter()
            .find_map(|validator| validator.plan(&id))
        else {
            return;
        };
        let outpoints: Vec<OutPoint> = plan
            .inputs
            .iter()
            .map(|input| OutPoint {
                txid: Txid::from_byte_array(input.id.txid.0),
                vout: input.id.vout,
            })
            .collect();
        let total: u64 = plan.inputs.iter().map(|input| input.amount.to_sat()).sum();
        let Some(back) = total.checked_sub(10_000) else {
            return;
        };
        let mut chain = self.chain.borrow_mut();
        // Only outputs mined and unspent: a child's input (its parent's change) may not exist
        // yet.
        if outpoints
            .iter()
            .any(|outpoint| !chain.exists_in_blocks(outpoint) || chain.spent_in_blocks(outpoint))
        {
            return;
        }
        let conflict = Transaction {
            version: Version::TWO,
            lock_time: LockTime::ZERO,
            input: outpoints
                .into_iter()
                .map(|previous_output| TxIn {
                    previous_output,
                    script_sig: ScriptBuf::new(),
                    sequence: Sequence::MAX,
                    witness: Witness::new(),
                })
                .collect(),
            output: vec![TxOut {
                value: BtcAmount::from_sat(back),
                script_pubkey: self.scripts.script(OutputKind::Change).clone(),
            }],
        };
        chain.mine(&mut self.rng, vec![conflict]);
        self.report.conflicts += 1;
    }

    /// A reorganization below finality: every scanner halts and its state stays as it was.
    fn deep_reorganization(&mut self) -> Result<(), String> {
        let before: Vec<Option<[u8; 32]>> = self.scanned_tips()?;
        let mut rng = Rng::new(self.rng.next_u64());
        self.chain
            .borrow_mut()
            .reorganize(&mut rng, CONFIRMATIONS + 2, |_| true);
        self.report.faults.3 += 1;
        for _ in 0..3 {
            for validator in &mut self.validators {
                if let Some(processor) = validator.processor.as_mut() {
                    let result = futures::executor::block_on(processor.step(Duration::ZERO));
                    if let Err(error) = result {
                        if error.halts_link() {
                            return Err(format!("link halted on a deep reorganization: {error}"));
                        }
                    }
                }
            }
        }
        for validator in &self.validators {
            if let Some(processor) = &validator.processor {
                if processor.scanner().metrics().halted.get() != 1 {
                    return Err("a scanner went on past a reorganization below finality".into());
                }
            }
        }
        if self.scanned_tips()? != before {
            return Err("a reorganization below finality changed a scanner's state".into());
        }
        Ok(())
    }

    fn scanned_tips(&self) -> Result<Vec<Option<[u8; 32]>>, String> {
        let mut tips = Vec::new();
        for validator in &self.validators {
            if let Some(processor) = &validator.processor {
                let store = processor.scanner().store();
                let next = store
                    .keys()
                    .map_err(failed)?
                    .iter()
                    .map(|key| key.next)
                    .min()
                    .unwrap_or(0);
                tips.push(store.block_hash(next.saturating_sub(1)).map_err(failed)?);
            }
        }
        Ok(tips)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_seed_replays_exactly() {
        let config = Config {
            steps: 20,
            drain: 60,
            faults: true,
        };
        let first = run(3, &config).map(|report| format!("{report:?}"));
        let again = run(3, &config).map(|report| format!("{report:?}"));
        assert_eq!(
            first.as_ref().map_err(ToString::to_string),
            again.as_ref().map_err(ToString::to_string)
        );
    }
}
