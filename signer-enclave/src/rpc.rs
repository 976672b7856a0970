//! The `Signer` Cap'n Proto interface over a Unix socket: decoding every request with the
//! schema's bounded readers, handing it to `Enclave`, and writing its answer or refusal.
//!
//! A connection is served only if the peer's uid (`SO_PEERCRED`, read before any byte) is the
//! configured one; others are dropped and counted. Each connection gets its own RPC system on
//! the current thread's `LocalSet`; all share one `Enclave`, and no handler holds it across an
//! await, so a dropped call leaves nothing half done.

use std::{cell::RefCell, future::Future, rc::Rc};

use schema::{
    batch::Batch,
    error::{DecodeError, EncodeError},
    generated::signer_capnp::{refusal, signer},
    ids::ValidatorSet,
    keys::KeyPair,
    messages::{coordinator::PlansAcknowledged, key_gen, ParticipantMap},
    plan::Plan,
    sign_id::{BatchSignId, PlanSignId},
    transport,
    wire::{read_participant_map, Wire},
};
use tokio::net::UnixListener;

use crate::{
    enclave::{Enclave, Refused},
    metrics::Metrics,
};

/// The `Signer` capability: every connection's handle on the one enclave.
#[derive(Clone)]
pub struct SignerService {
    enclave: Rc<RefCell<Enclave>>,
}

impl SignerService {
    /// Serves `enclave`.
    pub fn new(enclave: Rc<RefCell<Enclave>>) -> Self {
        SignerService { enclave }
    }

    /// Runs `handle` on a decoded request, or refuses a request that does not decode.
    fn with<T, R>(
        &self,
        decoded: Result<T, DecodeError>,
        handle: impl FnOnce(&mut Enclave, T) -> Result<R, Refused>,
    ) -> Result<R, Refused> {
        let mut enclave = self.enclave.borrow_mut();
        match decoded {
            Ok(request) => handle(&mut enclave, request),
            Err(error) => Err(enclave.malformed(&error)),
        }
    }
}

/// Accepts connections until `shutdown` resolves, serving each allowed one on the current
/// `LocalSet`.
///
/// # Errors
/// Accepting failed in a way that will not recover.
pub async fn serve(
    listener: UnixListener,
    allowed_uid: u32,
    service: SignerService,
    metrics: Metrics,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => accepted?.0,
            () = &mut shutdown => return Ok(()),
        };
        match stream.peer_cred() {
            Ok(credentials) if credentials.uid() == allowed_uid => {}
            Ok(credentials) => {
                metrics.rejected_connections.inc();
                tracing::warn!(uid = credentials.uid(), "connection from a uid not allowed");
                continue;
            }
            Err(error) => {
                metrics.rejected_connections.inc();
                tracing::warn!(%error, "connection without peer credentials");
                continue;
            }
        }
        let (read, write) = stream.into_split();
        let client: signer::Client = capnp_rpc::new_client(service.clone());
        transport::serve(read, write, client.client, "scanner");
    }
}

fn encode_failed(error: EncodeError) -> capnp::Error {
    capnp::Error::failed(format!("answer does not encode: {error}"))
}

fn write_refusal(mut builder: refusal::Builder<'_>, refused: &Refused) {
    builder.set_reason(refused.reason);
    builder.set_detail(refused.detail.as_str());
}

fn plan_id(
    id: capnp::Result<schema::generated::common_capnp::sign_id::Reader<'_>>,
) -> Result<PlanSignId, DecodeError> {
    PlanSignId::read(id?)
}

fn batch_id(
    id: capnp::Result<schema::generated::common_capnp::sign_id::Reader<'_>>,
) -> Result<BatchSignId, DecodeError> {
    BatchSignId::read(id?)
}

type Participants<'a> = capnp::Result<
    capnp::struct_list::Reader<'a, schema::generated::common_capnp::participant_data::Owned>,
>;

fn participants(list: Participants<'_>) -> Result<ParticipantMap, DecodeError> {
    read_participant_map(list)
}

macro_rules! bytes_answer {
    ($results:expr, $outcome:expr) => {{
        let mut result = $results.get().init_result();
        match $outcome {
            Ok(bytes) => result.set_ok(&bytes),
            Err(refused) => write_refusal(result.init_refused(), &refused),
        }
        futures::future::ready(Ok(()))
    }};
}

impl signer::Server for SignerService {
    fn status(
        self: Rc<Self>,
        _: signer::StatusParams,
        mut results: signer::StatusResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let mut answer = || -> Result<(), capnp::Error> {
            let status = self
                .enclave
                .borrow()
                .status()
                .map_err(|refused| capnp::Error::failed(refused.to_string()))?;
            let mut builder = results.get().init_status();
            builder.set_pending_key_gens(status.pending_key_gens);
            builder.set_acknowledged_plans(status.acknowledged_plans);
            let len = u32::try_from(status.keys.len())
                .map_err(|_| capnp::Error::failed("too many keys".into()))?;
            let mut keys = builder.init_keys(len);
            for (index, pair) in (0u32..).zip(&status.keys) {
                pair.write(keys.reborrow().get(index))
                    .map_err(encode_failed)?;
            }
            Ok(())
        };
        futures::future::ready(answer())
    }

    fn key_gen(
        self: Rc<Self>,
        params: signer::KeyGenParams,
        mut results: signer::KeyGenResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let decoded = params
            .get()
            .and_then(|p| p.get_message())
            .map_err(DecodeError::from)
            .and_then(key_gen::CoordinatorMessage::read);
        let outcome = self.with(decoded, |enclave, message| enclave.key_gen(message));
        let answer = || -> Result<(), capnp::Error> {
            let result = results.get().init_result();
            match outcome {
                Ok(messages) => {
                    let len = u32::try_from(messages.len())
                        .map_err(|_| capnp::Error::failed("too many messages".into()))?;
                    let mut list = result.init_ok(len);
                    for (index, message) in (0u32..).zip(&messages) {
                        message
                            .write(list.reborrow().get(index))
                            .map_err(encode_failed)?;
                    }
                }
                Err(refused) => write_refusal(result.init_refused(), &refused),
            }
            Ok(())
        };
        futures::future::ready(answer())
    }

    fn confirm_key_pair(
        self: Rc<Self>,
        params: signer::ConfirmKeyPairParams,
        mut results: signer::ConfirmKeyPairResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let decoded = (|| -> Result<(ValidatorSet, KeyPair), DecodeError> {
            let p = params.get()?;
            Ok((
                ValidatorSet::read(p.get_set()?)?,
                KeyPair::read(p.get_key_pair()?)?,
            ))
        })();
        let outcome = self.with(decoded, |enclave, (set, pair)| {
            enclave.confirm_key_pair(set, pair)
        });
        unit_answer(results.get().init_result(), outcome)
    }

    fn acknowledge_plans(
        self: Rc<Self>,
        params: signer::AcknowledgePlansParams,
        mut results: signer::AcknowledgePlansResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let decoded = params
            .get()
            .and_then(|p| p.get_acknowledged())
            .map_err(DecodeError::from)
            .and_then(PlansAcknowledged::read);
        let outcome = self.with(decoded, |enclave, acknowledged| {
            enclave.acknowledge_plans(&acknowledged)
        });
        unit_answer(results.get().init_result(), outcome)
    }

    fn preprocess_plan(
        self: Rc<Self>,
        params: signer::PreprocessPlanParams,
        mut results: signer::PreprocessPlanResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let decoded = (|| -> Result<(PlanSignId, Plan), DecodeError> {
            let p = params.get()?;
            Ok((plan_id(p.get_id())?, Plan::read(p.get_plan()?)?))
        })();
        let outcome = self.with(decoded, |enclave, (id, plan)| {
            enclave.preprocess_plan(id, &plan)
        });
        bytes_answer!(results, outcome)
    }

    fn share_plan(
        self: Rc<Self>,
        params: signer::SharePlanParams,
        mut results: signer::SharePlanResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let decoded = params
            .get()
            .map_err(DecodeError::from)
            .and_then(|p| Ok((plan_id(p.get_id())?, participants(p.get_preprocesses())?)));
        let outcome = self.with(decoded, |enclave, (id, preprocesses)| {
            enclave.share_plan(&id, &preprocesses)
        });
        bytes_answer!(results, outcome)
    }

    fn complete_plan(
        self: Rc<Self>,
        params: signer::CompletePlanParams,
        mut results: signer::CompletePlanResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let decoded = params
            .get()
            .map_err(DecodeError::from)
            .and_then(|p| Ok((plan_id(p.get_id())?, participants(p.get_shares())?)));
        let outcome = self.with(decoded, |enclave, (id, shares)| {
            enclave.complete_plan(&id, &shares)
        });
        bytes_answer!(results, outcome)
    }

    fn preprocess_batch(
        self: Rc<Self>,
        params: signer::PreprocessBatchParams,
        mut results: signer::PreprocessBatchResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let decoded = params
            .get()
            .map_err(DecodeError::from)
            .and_then(|p| Ok((batch_id(p.get_id())?, Batch::read(p.get_batch()?)?)));
        let outcome = self.with(decoded, |enclave, (id, batch)| {
            enclave.preprocess_batch(id, batch)
        });
        bytes_answer!(results, outcome)
    }

    fn share_batch(
        self: Rc<Self>,
        params: signer::ShareBatchParams,
        mut results: signer::ShareBatchResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let decoded = params
            .get()
            .map_err(DecodeError::from)
            .and_then(|p| Ok((batch_id(p.get_id())?, participants(p.get_preprocesses())?)));
        let outcome = self.with(decoded, |enclave, (id, preprocesses)| {
            enclave.share_batch(&id, &preprocesses)
        });
        bytes_answer!(results, outcome)
    }

    fn complete_batch(
        self: Rc<Self>,
        params: signer::CompleteBatchParams,
        mut results: signer::CompleteBatchResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let decoded = params
            .get()
            .map_err(DecodeError::from)
            .and_then(|p| Ok((batch_id(p.get_id())?, participants(p.get_shares())?)));
        let outcome = self.with(decoded, |enclave, (id, shares)| {
            enclave.complete_batch(&id, &shares)
        });
        let result = results.get().init_result();
        let answer = match outcome {
            Ok(signed) => signed.write(result.init_ok()).map_err(encode_failed),
            Err(refused) => {
                write_refusal(result.init_refused(), &refused);
                Ok(())
            }
        };
        futures::future::ready(answer)
    }
}

fn unit_answer(
    mut result: schema::generated::signer_capnp::unit_result::Builder<'_>,
    outcome: Result<(), Refused>,
) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
    match outcome {
        Ok(()) => result.set_ok(()),
        Err(refused) => write_refusal(result.init_refused(), &refused),
    }
    futures::future::ready(Ok(()))
}
