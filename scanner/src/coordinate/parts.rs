//! The parts a `Processor` is generic over, so that its decisions run the same against the
//! real ones (Core's RPC, RocksDB, the enclave over Cap'n Proto, the coordinator link, the
//! system clock: `NodeParts`) and against in-process twins in the simulation: the chain
//! (`Network`), the state (`ProcessorStore`), the enclave (`EnclaveCalls`), the coordinator
//! (`CoordinatorLink`) and time (`Clock`).
//!
//! The calls are `async fn`s in traits without a `Send` bound: the processor runs on one
//! thread (the Cap'n Proto RPC system is `!Send`), and the simulation is single-threaded.
#![allow(async_fn_in_trait)]

use std::time::{Duration, Instant};

use bitcoin::Transaction;
use schema::{
    batch::{Batch, SignedBatch},
    ids::{MessageId, ValidatorSet},
    keys::KeyPair,
    messages::{
        coordinator::{Attestation, PlansAcknowledged},
        key_gen, ParticipantMap, ProcessorEnvelope,
    },
    plan::Plan,
    sign_id::{BatchSignId, PlanSignId},
};

use crate::{
    chain::bitcoin_core::BitcoinCore,
    chain::Network,
    coordinate::enclave_client::{EnclaveClient, EnclaveError},
    coordinate::link::{Inbound, LinkClient, LinkError},
    store::db::Db,
    store::ProcessorStore,
};

/// The enclave's calls, as the processor makes them. A refusal is
/// `EnclaveError::Refused` with the enclave's reason; any other error means the call could not
/// be made, and the processor tries again later.
pub trait EnclaveCalls {
    /// One key generation message.
    ///
    /// # Errors
    /// Refused, or the call failed.
    async fn key_gen(
        &self,
        message: &key_gen::CoordinatorMessage,
    ) -> Result<Vec<key_gen::ProcessorMessage>, EnclaveError>;

    /// Confirms a generated key pair.
    ///
    /// # Errors
    /// Refused, or the call failed.
    async fn confirm_key_pair(&self, set: ValidatorSet, pair: &KeyPair)
        -> Result<(), EnclaveError>;

    /// Hands over the coordinator's attestation of acknowledged plans.
    ///
    /// # Errors
    /// Refused, or the call failed.
    async fn acknowledge_plans(&self, acknowledged: &PlansAcknowledged)
        -> Result<(), EnclaveError>;

    /// A plan's preprocess.
    ///
    /// # Errors
    /// Refused, or the call failed.
    async fn preprocess_plan(&self, id: &PlanSignId, plan: &Plan) -> Result<Vec<u8>, EnclaveError>;

    /// A plan's signature share.
    ///
    /// # Errors
    /// Refused, or the call failed.
    async fn share_plan(
        &self,
        id: &PlanSignId,
        preprocesses: &ParticipantMap,
    ) -> Result<Vec<u8>, EnclaveError>;

    /// A plan's signed transaction.
    ///
    /// # Errors
    /// Refused, or the call failed.
    async fn complete_plan(
        &self,
        id: &PlanSignId,
        shares: &ParticipantMap,
    ) -> Result<Transaction, EnclaveError>;

    /// A Batch's preprocess.
    ///
    /// # Errors
    /// Refused, or the call failed.
    async fn preprocess_batch(
        &self,
        id: &BatchSignId,
        batch: &Batch,
    ) -> Result<Vec<u8>, EnclaveError>;

    /// A Batch's signature share.
    ///
    /// # Errors
    /// Refused, or the call failed.
    async fn share_batch(
        &self,
        id: &BatchSignId,
        preprocesses: &ParticipantMap,
    ) -> Result<Vec<u8>, EnclaveError>;

    /// A Batch's signature.
    ///
    /// # Errors
    /// Refused, or the call failed.
    async fn complete_batch(
        &self,
        id: &BatchSignId,
        shares: &ParticipantMap,
    ) -> Result<SignedBatch, EnclaveError>;

    /// Serai included a Batch.
    ///
    /// # Errors
    /// Refused, or the call failed.
    async fn batch_included(
        &self,
        signed: &SignedBatch,
        attestation: &Attestation,
    ) -> Result<(), EnclaveError>;
}

/// The coordinator, as the processor reads and writes it: messages after an id (waiting up to
/// `wait` for one), acks, and the processor's own messages.
pub trait CoordinatorLink {
    /// The messages after `after`, in id order.
    ///
    /// # Errors
    /// The link failed: reconnect.
    async fn next(&self, after: MessageId, wait: Duration) -> Result<Vec<Inbound>, LinkError>;

    /// Message `id` is handled.
    ///
    /// # Errors
    /// As `next`.
    async fn ack(&self, id: MessageId) -> Result<(), LinkError>;

    /// Sends one of the processor's messages.
    ///
    /// # Errors
    /// As `next`.
    async fn send(&self, envelope: &ProcessorEnvelope) -> Result<(), LinkError>;
}

/// Time, as far as the processor measures it: how long a message has waited.
pub trait Clock {
    /// Time since some fixed start; never goes backwards.
    fn now(&self) -> Duration;
}

/// The system's monotonic clock.
#[derive(Clone, Copy, Debug)]
pub struct SystemClock {
    start: Instant,
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock {
            start: Instant::now(),
        }
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.start.elapsed()
    }
}

/// One choice of every part.
pub trait Parts {
    /// The chain.
    type Chain: Network;
    /// The state.
    type Store: ProcessorStore;
    /// The enclave.
    type Enclave: EnclaveCalls;
    /// The coordinator.
    type Link: CoordinatorLink;
    /// Time.
    type Clock: Clock;
}

/// The validator's node: Bitcoin through Core, RocksDB, the enclave process, the coordinator
/// over the network, the system clock.
#[derive(Debug)]
pub enum NodeParts {}

impl Parts for NodeParts {
    type Chain = BitcoinCore;
    type Store = Db;
    type Enclave = EnclaveClient;
    type Link = LinkClient;
    type Clock = SystemClock;
}

impl EnclaveCalls for EnclaveClient {
    async fn key_gen(
        &self,
        message: &key_gen::CoordinatorMessage,
    ) -> Result<Vec<key_gen::ProcessorMessage>, EnclaveError> {
        EnclaveClient::key_gen(self, message).await
    }

    async fn confirm_key_pair(
        &self,
        set: ValidatorSet,
        pair: &KeyPair,
    ) -> Result<(), EnclaveError> {
        EnclaveClient::confirm_key_pair(self, set, pair).await
    }

    async fn acknowledge_plans(
        &self,
        acknowledged: &PlansAcknowledged,
    ) -> Result<(), EnclaveError> {
        EnclaveClient::acknowledge_plans(self, acknowledged).await
    }

    async fn preprocess_plan(&self, id: &PlanSignId, plan: &Plan) -> Result<Vec<u8>, EnclaveError> {
        EnclaveClient::preprocess_plan(self, id, plan).await
    }

    async fn share_plan(
        &self,
        id: &PlanSignId,
        preprocesses: &ParticipantMap,
    ) -> Result<Vec<u8>, EnclaveError> {
        EnclaveClient::share_plan(self, id, preprocesses).await
    }

    async fn complete_plan(
        &self,
        id: &PlanSignId,
        shares: &ParticipantMap,
    ) -> Result<Transaction, EnclaveError> {
        EnclaveClient::complete_plan(self, id, shares).await
    }

    async fn preprocess_batch(
        &self,
        id: &BatchSignId,
        batch: &Batch,
    ) -> Result<Vec<u8>, EnclaveError> {
        EnclaveClient::preprocess_batch(self, id, batch).await
    }

    async fn share_batch(
        &self,
        id: &BatchSignId,
        preprocesses: &ParticipantMap,
    ) -> Result<Vec<u8>, EnclaveError> {
        EnclaveClient::share_batch(self, id, preprocesses).await
    }

    async fn complete_batch(
        &self,
        id: &BatchSignId,
        shares: &ParticipantMap,
    ) -> Result<SignedBatch, EnclaveError> {
        EnclaveClient::complete_batch(self, id, shares).await
    }

    async fn batch_included(
        &self,
        signed: &SignedBatch,
        attestation: &Attestation,
    ) -> Result<(), EnclaveError> {
        EnclaveClient::batch_included(self, signed, attestation).await
    }
}

impl CoordinatorLink for LinkClient {
    async fn next(&self, after: MessageId, wait: Duration) -> Result<Vec<Inbound>, LinkError> {
        LinkClient::next(self, after, wait).await
    }

    async fn ack(&self, id: MessageId) -> Result<(), LinkError> {
        LinkClient::ack(self, id).await
    }

    async fn send(&self, envelope: &ProcessorEnvelope) -> Result<(), LinkError> {
        LinkClient::send(self, envelope).await
    }
}
