//! The scanner node's client of the signer enclave: `Signer` Cap'n Proto calls over the
//! enclave's Unix socket, with typed answers, refusals as typed errors carrying the enclave's
//! reason code, and a deadline on every call (capnp-rpc has none of its own).
//!
//! The RPC system is `!Send`: connect and call from a `LocalSet`. A call that fails with
//! `Disconnected` leaves the client unusable; connect again.

use std::{path::Path, time::Duration};

use bitcoin::{consensus, Transaction};
use schema::{
    batch::{Batch, SignedBatch},
    error::{DecodeError, EncodeError},
    generated::signer_capnp::{refusal, signer, RefusalReason},
    ids::ValidatorSet,
    keys::KeyPair,
    messages::{
        coordinator::{Attestation, PlansAcknowledged},
        key_gen, ParticipantMap,
    },
    plan::Plan,
    sign_id::{BatchSignId, PlanSignId},
    transport,
    wire::{participant_map_len, write_participant_map, Wire},
};
use thiserror::Error;
use tokio::net::UnixStream;

/// A call to the enclave did not give what was asked.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum EnclaveError {
    /// The enclave refused, with its reason.
    #[error("enclave refused ({reason:?}): {detail}")]
    Refused {
        /// The reason code.
        reason: RefusalReason,
        /// The enclave's detail, for logs.
        detail: String,
    },
    /// The socket could not be reached.
    #[error("cannot connect to the enclave at {path}: {source}")]
    Connect {
        /// The socket.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The RPC failed (disconnected, or the enclave failed the call).
    #[error("enclave RPC: {0}")]
    Rpc(#[from] capnp::Error),
    /// The call took longer than the deadline.
    #[error("enclave call timed out after {0:?}")]
    Timeout(Duration),
    /// The request could not be encoded within the schema's limits.
    #[error("request does not encode: {0}")]
    Encode(#[from] EncodeError),
    /// The answer does not decode.
    #[error("enclave answer does not decode: {0}")]
    Decode(#[from] DecodeError),
    /// The answer names a union variant this build does not know.
    #[error("enclave answer: {0}")]
    NotInSchema(#[from] capnp::NotInSchema),
    /// The signed transaction is not a valid Bitcoin transaction.
    #[error("enclave returned a transaction that does not decode: {0}")]
    Transaction(String),
}

impl EnclaveError {
    /// The enclave's reason, if it refused.
    pub fn refusal(&self) -> Option<RefusalReason> {
        match self {
            EnclaveError::Refused { reason, .. } => Some(*reason),
            _ => None,
        }
    }
}

/// What the enclave holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnclaveStatus {
    /// Confirmed key pairs.
    pub keys: Vec<KeyPair>,
    /// Key generations in progress.
    pub pending_key_gens: u32,
    /// Plan ids acknowledged so far.
    pub acknowledged_plans: u64,
}

/// A connection to the enclave.
#[derive(Clone)]
pub struct EnclaveClient {
    client: signer::Client,
    deadline: Duration,
}

fn refused(reader: refusal::Reader<'_>) -> EnclaveError {
    EnclaveError::Refused {
        reason: reader.get_reason().unwrap_or(RefusalReason::Malformed),
        detail: reader
            .get_detail()
            .ok()
            .and_then(|text| text.to_str().ok())
            .unwrap_or("")
            .to_owned(),
    }
}

macro_rules! bytes_answer {
    ($response:expr) => {{
        use schema::generated::signer_capnp::bytes_result::Which;
        match $response.get()?.get_result()?.which()? {
            Which::Ok(bytes) => Ok(bytes?.to_vec()),
            Which::Refused(reason) => Err(refused(reason?)),
        }
    }};
}

macro_rules! unit_answer {
    ($response:expr) => {{
        use schema::generated::signer_capnp::unit_result::Which;
        match $response.get()?.get_result()?.which()? {
            Which::Ok(()) => Ok(()),
            Which::Refused(reason) => Err(refused(reason?)),
        }
    }};
}

impl EnclaveClient {
    /// Connects to the enclave's socket. Call from a `LocalSet`: the connection's RPC system
    /// runs there until the connection ends.
    ///
    /// # Errors
    /// The socket cannot be reached.
    pub async fn connect(socket: &Path, deadline: Duration) -> Result<Self, EnclaveError> {
        let stream = UnixStream::connect(socket)
            .await
            .map_err(|source| EnclaveError::Connect {
                path: socket.display().to_string(),
                source,
            })?;
        let (read, write) = stream.into_split();
        let client: signer::Client = transport::connect(read, write, "enclave");
        Ok(EnclaveClient { client, deadline })
    }

    async fn within<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, EnclaveError>>,
    ) -> Result<T, EnclaveError> {
        tokio::time::timeout(self.deadline, call)
            .await
            .map_err(|_| EnclaveError::Timeout(self.deadline))?
    }

    /// What the enclave holds.
    ///
    /// # Errors
    /// The call failed or its answer does not decode.
    pub async fn status(&self) -> Result<EnclaveStatus, EnclaveError> {
        let request = self.client.status_request();
        self.within(async {
            let response = request.send().promise.await?;
            let status = response.get()?.get_status()?;
            let keys = status
                .get_keys()?
                .iter()
                .map(KeyPair::read)
                .collect::<Result<_, _>>()?;
            Ok(EnclaveStatus {
                keys,
                pending_key_gens: status.get_pending_key_gens(),
                acknowledged_plans: status.get_acknowledged_plans(),
            })
        })
        .await
    }

    /// Hands the enclave a key generation message; returns what to send to the coordinator.
    ///
    /// # Errors
    /// Refused, or the call failed.
    pub async fn key_gen(
        &self,
        message: &key_gen::CoordinatorMessage,
    ) -> Result<Vec<key_gen::ProcessorMessage>, EnclaveError> {
        let mut request = self.client.key_gen_request();
        message.write(request.get().init_message())?;
        self.within(async {
            use schema::generated::signer_capnp::key_gen_result::Which;
            let response = request.send().promise.await?;
            match response.get()?.get_result()?.which()? {
                Which::Ok(list) => Ok(list?
                    .iter()
                    .map(key_gen::ProcessorMessage::read)
                    .collect::<Result<_, _>>()?),
                Which::Refused(reason) => Err(refused(reason?)),
            }
        })
        .await
    }

    /// Confirms a key pair the chain voted in.
    ///
    /// # Errors
    /// Refused, or the call failed.
    pub async fn confirm_key_pair(
        &self,
        set: ValidatorSet,
        pair: &KeyPair,
    ) -> Result<(), EnclaveError> {
        let mut request = self.client.confirm_key_pair_request();
        set.write(request.get().init_set())?;
        pair.write(request.get().init_key_pair())?;
        self.within(async {
            let response = request.send().promise.await?;
            unit_answer!(response)
        })
        .await
    }

    /// Hands the enclave an attested acknowledgement.
    ///
    /// # Errors
    /// Refused, or the call failed.
    pub async fn acknowledge_plans(
        &self,
        acknowledged: &PlansAcknowledged,
    ) -> Result<(), EnclaveError> {
        let mut request = self.client.acknowledge_plans_request();
        acknowledged.write(request.get().init_acknowledged())?;
        self.within(async {
            let response = request.send().promise.await?;
            unit_answer!(response)
        })
        .await
    }

    /// Asks for this attempt's preprocess of a plan.
    ///
    /// # Errors
    /// Refused, or the call failed.
    pub async fn preprocess_plan(
        &self,
        id: &PlanSignId,
        plan: &Plan,
    ) -> Result<Vec<u8>, EnclaveError> {
        let mut request = self.client.preprocess_plan_request();
        id.write(request.get().init_id())?;
        plan.write(request.get().init_plan())?;
        self.within(async {
            let response = request.send().promise.await?;
            bytes_answer!(response)
        })
        .await
    }

    /// Asks for this attempt's signature shares, given the other signers' preprocesses.
    ///
    /// # Errors
    /// Refused, or the call failed.
    pub async fn share_plan(
        &self,
        id: &PlanSignId,
        preprocesses: &ParticipantMap,
    ) -> Result<Vec<u8>, EnclaveError> {
        let mut request = self.client.share_plan_request();
        id.write(request.get().init_id())?;
        let len = participant_map_len(preprocesses)?;
        write_participant_map(preprocesses, request.get().init_preprocesses(len))?;
        self.within(async {
            let response = request.send().promise.await?;
            bytes_answer!(response)
        })
        .await
    }

    /// Asks for the signed transaction, given the other signers' shares.
    ///
    /// # Errors
    /// Refused, the call failed, or the answer is not a transaction.
    pub async fn complete_plan(
        &self,
        id: &PlanSignId,
        shares: &ParticipantMap,
    ) -> Result<Transaction, EnclaveError> {
        let mut request = self.client.complete_plan_request();
        id.write(request.get().init_id())?;
        let len = participant_map_len(shares)?;
        write_participant_map(shares, request.get().init_shares(len))?;
        let bytes: Vec<u8> = self
            .within(async {
                let response = request.send().promise.await?;
                bytes_answer!(response)
            })
            .await?;
        consensus::deserialize(&bytes).map_err(|error| EnclaveError::Transaction(error.to_string()))
    }

    /// Asks for this attempt's preprocess of a Batch.
    ///
    /// # Errors
    /// Refused, or the call failed.
    pub async fn preprocess_batch(
        &self,
        id: &BatchSignId,
        batch: &Batch,
    ) -> Result<Vec<u8>, EnclaveError> {
        let mut request = self.client.preprocess_batch_request();
        id.write(request.get().init_id())?;
        batch.write(request.get().init_batch())?;
        self.within(async {
            let response = request.send().promise.await?;
            bytes_answer!(response)
        })
        .await
    }

    /// Asks for this attempt's Batch signature share, given the other preprocesses.
    ///
    /// # Errors
    /// Refused, or the call failed.
    pub async fn share_batch(
        &self,
        id: &BatchSignId,
        preprocesses: &ParticipantMap,
    ) -> Result<Vec<u8>, EnclaveError> {
        let mut request = self.client.share_batch_request();
        id.write(request.get().init_id())?;
        let len = participant_map_len(preprocesses)?;
        write_participant_map(preprocesses, request.get().init_preprocesses(len))?;
        self.within(async {
            let response = request.send().promise.await?;
            bytes_answer!(response)
        })
        .await
    }

    /// Asks for the signed Batch, given the other signers' shares.
    ///
    /// # Errors
    /// Refused, or the call failed.
    pub async fn complete_batch(
        &self,
        id: &BatchSignId,
        shares: &ParticipantMap,
    ) -> Result<SignedBatch, EnclaveError> {
        let mut request = self.client.complete_batch_request();
        id.write(request.get().init_id())?;
        let len = participant_map_len(shares)?;
        write_participant_map(shares, request.get().init_shares(len))?;
        self.within(async {
            use schema::generated::signer_capnp::batch_result::Which;
            let response = request.send().promise.await?;
            match response.get()?.get_result()?.which()? {
                Which::Ok(signed) => Ok(SignedBatch::read(signed?)?),
                Which::Refused(reason) => Err(refused(reason?)),
            }
        })
        .await
    }

    /// Shows the enclave a Batch Serai included, with the coordinator's attestation, so that
    /// its window of new Batch ids moves past it.
    ///
    /// # Errors
    /// Refused, or the call failed.
    pub async fn batch_included(
        &self,
        signed: &SignedBatch,
        attestation: &Attestation,
    ) -> Result<(), EnclaveError> {
        let mut request = self.client.batch_included_request();
        signed.write(request.get().init_batch())?;
        request.get().set_attestation(&attestation.0);
        self.within(async {
            let response = request.send().promise.await?;
            unit_answer!(response)
        })
        .await
    }
}
