//! A validator's enclave in the simulation: the real `Enclave` (policy, key store, FROST, its
//! RocksDB history) in process, with the in-memory custody twin instead of a PKCS#11 token.
//! It can be unreachable (every call fails as a timeout would) or crash (dropped and opened
//! again from its database and custody, losing what it held in memory). Everything it
//! produced is logged for the invariants.

use std::{
    cell::{Cell, RefCell},
    collections::BTreeMap,
    path::PathBuf,
    rc::Rc,
    time::Duration,
};

use bitcoin::{consensus, Transaction};
use scanner::{coordinate::enclave_client::EnclaveError, coordinate::parts::EnclaveCalls};
use schema::{
    batch::{Batch, SignedBatch},
    hashes::PlanId,
    ids::ValidatorSet,
    keys::KeyPair,
    messages::{
        coordinator::{Attestation, PlansAcknowledged},
        key_gen, ParticipantMap,
    },
    plan::Plan,
    sign_id::{BatchSignId, PlanSignId},
};
use signer_enclave::{
    custody::{CustodyError, Purpose, Seal},
    db::EnclaveDb,
    enclave::{Enclave, Refused},
    key_gen::GeneratedKeys,
    key_store,
    memory_custody::MemoryCustody,
    metrics::Metrics,
};
use zeroize::Zeroizing;

use crate::rng::Rng;

/// What an enclave produced, kept across its crashes.
#[derive(Debug, Default)]
pub struct EnclaveLog {
    /// Every preprocess it gave, with what it was for.
    pub preprocesses: Vec<(String, Vec<u8>)>,
    /// Every plan it completed, with the transaction.
    pub completed: Vec<(PlanId, Transaction)>,
    /// The family (original plan) of every plan it preprocessed: a replacement may reuse its
    /// family's inputs, nothing else may.
    pub families: BTreeMap<PlanId, PlanId>,
    /// Every Batch it completed.
    pub batches: Vec<SignedBatch>,
}

/// The custody twin, shared by an enclave's incarnations (its key is the "token").
struct SharedCustody(Rc<MemoryCustody>);

impl Seal for SharedCustody {
    fn seal(&self, key_id: &[u8], purpose: Purpose, share: &[u8]) -> Result<Vec<u8>, CustodyError> {
        self.0.seal(key_id, purpose, share)
    }

    fn unseal(
        &self,
        key_id: &[u8],
        purpose: Purpose,
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CustodyError> {
        self.0.unseal(key_id, purpose, sealed)
    }
}

/// One validator's enclave.
pub struct SimEnclave {
    dir: PathBuf,
    custody: Rc<MemoryCustody>,
    enclave: RefCell<Option<Enclave>>,
    /// Unreachable while set.
    pub down: Cell<bool>,
    /// Per mille of calls that do their work but whose answer is lost (the caller sees a
    /// timeout and asks again).
    pub lost_replies: Cell<u64>,
    rng: RefCell<Rng>,
    /// What it produced.
    pub log: RefCell<EnclaveLog>,
}

/// Why the enclave could not be set up.
#[derive(Debug)]
pub struct SetupError(pub String);

impl SimEnclave {
    /// Provisions an enclave in `dir` trusting `coordinator`, holding `keys` (generated, not
    /// yet confirmed: the coordinator's `ConfirmKeyPair` confirms them), and opens it; `rng`
    /// decides which answers are lost.
    ///
    /// # Errors
    /// The database or sealing failed.
    pub fn provision(
        dir: PathBuf,
        coordinator: &bitcoin::secp256k1::XOnlyPublicKey,
        set: ValidatorSet,
        pair: KeyPair,
        keys: &GeneratedKeys,
        rng: Rng,
    ) -> Result<Self, SetupError> {
        let failed = |error: &dyn std::fmt::Display| SetupError(error.to_string());
        let custody = Rc::new(MemoryCustody::default());
        let db = EnclaveDb::open(&dir).map_err(|error| failed(&error))?;
        db.set_coordinator_key(coordinator)
            .map_err(|error| failed(&error))?;
        let sealed = key_store::seal(custody.as_ref(), keys).map_err(|error| failed(&error))?;
        db.record_generated(set, pair, sealed)
            .map_err(|error| failed(&error))?;
        let enclave = SimEnclave {
            dir,
            custody,
            enclave: RefCell::new(None),
            down: Cell::new(false),
            lost_replies: Cell::new(0),
            rng: RefCell::new(rng),
            log: RefCell::new(EnclaveLog::default()),
        };
        enclave.open(db)?;
        Ok(enclave)
    }

    /// Crashes the enclave (what it held in memory is lost) and opens it again.
    ///
    /// # Errors
    /// It cannot be opened again.
    pub fn restart(&self) -> Result<(), SetupError> {
        // The old incarnation closes its database before the new one opens it.
        self.enclave.borrow_mut().take();
        let db = EnclaveDb::open(&self.dir).map_err(|error| SetupError(error.to_string()))?;
        self.open(db)
    }

    fn open(&self, db: EnclaveDb) -> Result<(), SetupError> {
        let failed = |error: &dyn std::fmt::Display| SetupError(error.to_string());
        let metrics = Metrics::new().map_err(|error| failed(&error))?;
        let enclave = Enclave::open(
            db,
            Box::new(SharedCustody(Rc::clone(&self.custody))),
            metrics,
        )
        .map_err(|error| failed(&error))?;
        *self.enclave.borrow_mut() = Some(enclave);
        Ok(())
    }

    fn call<T>(
        &self,
        call: impl FnOnce(&mut Enclave) -> Result<T, Refused>,
    ) -> Result<T, EnclaveError> {
        if self.down.get() {
            return Err(EnclaveError::Timeout(Duration::from_secs(30)));
        }
        let mut enclave = self.enclave.borrow_mut();
        let Some(enclave) = enclave.as_mut() else {
            return Err(EnclaveError::Timeout(Duration::from_secs(30)));
        };
        call(enclave).map_err(|refused| EnclaveError::Refused {
            reason: refused.reason,
            detail: refused.detail,
        })
    }

    /// The answer of a call that did its work, unless it is lost on the way.
    fn answer<T>(&self, answer: Result<T, EnclaveError>) -> Result<T, EnclaveError> {
        if answer.is_ok() && self.rng.borrow_mut().chance(self.lost_replies.get()) {
            return Err(EnclaveError::Timeout(Duration::from_secs(30)));
        }
        answer
    }
}

/// The processor's handle on its enclave.
#[derive(Clone)]
pub struct EnclaveHandle(pub Rc<SimEnclave>);

impl EnclaveCalls for EnclaveHandle {
    async fn key_gen(
        &self,
        message: &key_gen::CoordinatorMessage,
    ) -> Result<Vec<key_gen::ProcessorMessage>, EnclaveError> {
        self.0
            .answer(self.0.call(|enclave| enclave.key_gen(message.clone())))
    }

    async fn confirm_key_pair(
        &self,
        set: ValidatorSet,
        pair: &KeyPair,
    ) -> Result<(), EnclaveError> {
        self.0
            .answer(self.0.call(|enclave| enclave.confirm_key_pair(set, *pair)))
    }

    async fn acknowledge_plans(
        &self,
        acknowledged: &PlansAcknowledged,
    ) -> Result<(), EnclaveError> {
        self.0.answer(
            self.0
                .call(|enclave| enclave.acknowledge_plans(acknowledged)),
        )
    }

    async fn preprocess_plan(&self, id: &PlanSignId, plan: &Plan) -> Result<Vec<u8>, EnclaveError> {
        let preprocess = self.0.call(|enclave| enclave.preprocess_plan(*id, plan))?;
        let mut log = self.0.log.borrow_mut();
        log.preprocesses
            .push((format!("plan {id:?}"), preprocess.clone()));
        log.families.insert(id.id, plan.family());
        drop(log);
        self.0.answer(Ok(preprocess))
    }

    async fn share_plan(
        &self,
        id: &PlanSignId,
        preprocesses: &ParticipantMap,
    ) -> Result<Vec<u8>, EnclaveError> {
        self.0
            .answer(self.0.call(|enclave| enclave.share_plan(id, preprocesses)))
    }

    async fn complete_plan(
        &self,
        id: &PlanSignId,
        shares: &ParticipantMap,
    ) -> Result<Transaction, EnclaveError> {
        let bytes = self.0.call(|enclave| enclave.complete_plan(id, shares))?;
        let transaction: Transaction = consensus::deserialize(&bytes)
            .map_err(|error| EnclaveError::Transaction(error.to_string()))?;
        self.0
            .log
            .borrow_mut()
            .completed
            .push((id.id, transaction.clone()));
        self.0.answer(Ok(transaction))
    }

    async fn preprocess_batch(
        &self,
        id: &BatchSignId,
        batch: &Batch,
    ) -> Result<Vec<u8>, EnclaveError> {
        let preprocess = self
            .0
            .call(|enclave| enclave.preprocess_batch(*id, batch.clone()))?;
        self.0
            .log
            .borrow_mut()
            .preprocesses
            .push((format!("batch {id:?}"), preprocess.clone()));
        self.0.answer(Ok(preprocess))
    }

    async fn share_batch(
        &self,
        id: &BatchSignId,
        preprocesses: &ParticipantMap,
    ) -> Result<Vec<u8>, EnclaveError> {
        self.0
            .answer(self.0.call(|enclave| enclave.share_batch(id, preprocesses)))
    }

    async fn complete_batch(
        &self,
        id: &BatchSignId,
        shares: &ParticipantMap,
    ) -> Result<SignedBatch, EnclaveError> {
        let signed = self.0.call(|enclave| enclave.complete_batch(id, shares))?;
        self.0.log.borrow_mut().batches.push(signed.clone());
        self.0.answer(Ok(signed))
    }

    async fn batch_included(
        &self,
        signed: &SignedBatch,
        attestation: &Attestation,
    ) -> Result<(), EnclaveError> {
        self.0.answer(
            self.0
                .call(|enclave| enclave.batch_included(signed, attestation)),
        )
    }
}
