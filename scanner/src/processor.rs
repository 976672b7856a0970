//! The processor: the scanner, the enclave and the coordinator link in one loop. Each step
//! delivers the outbox, scans the finalized blocks, starts signing new Batches, then handles
//! the coordinator's messages strictly in id order: each message's effects, the outbound
//! messages it causes and its "handled" marker commit in one write batch, and only then is it
//! acked. A message whose enclave call could not be made (enclave down) is not marked handled
//! and is tried again; a refusal is logged, counted and the message is skipped without harm.
//!
//! Handled so far: key generation (forwarded to the enclave), `ConfirmKeyPair` (enclave
//! confirmation, scanning from the activation block), and the Batch signing rounds
//! (`BatchPreprocess` when a Batch is built, `BatchShare`, then `Update`). Burns, plans and
//! transaction signing are logged and counted as not handled yet.

use std::time::Duration;

use prometheus::IntCounterVec;
use rocksdb::WriteBatch;
use schema::{
    batch::Batch,
    ids::Attempt,
    messages::{
        coordinator::{CoordinatorMessage as Coordinator, ProcessorMessage as CoordinatorOut},
        substrate::{CoordinatorMessage as Substrate, ProcessorMessage as SubstrateOut},
        CoordinatorEnvelope, CoordinatorMessage, ProcessorMessage,
    },
    sign_id::{BatchSignId, BatchSignTarget},
};
use thiserror::Error;

use crate::{
    bitcoin_network::BitcoinNetwork,
    db::DbError,
    link::{LinkClient, LinkError},
    network::{Network, NetworkError},
    scan::{ScanError, Scanner},
    signer::{SignerClient, SignerError},
};

/// A processor step stopped.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ProcessorError {
    /// The coordinator link failed: reconnect and resume.
    #[error(transparent)]
    Link(#[from] LinkError),
    /// The enclave could not be reached: reconnect and resume (the message is not handled).
    #[error("enclave unavailable: {0}")]
    Enclave(SignerError),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// Scanning failed.
    #[error(transparent)]
    Scan(#[from] ScanError),
    /// The node failed.
    #[error(transparent)]
    Network(#[from] NetworkError),
    /// The coordinator sent a message id at or below one already handled: its queue was reset
    /// or rewound. The link halts instead of handling anything twice.
    #[error("coordinator sent message {got} after {handled} was handled: queue rewound; halting")]
    Rewound {
        /// The last id handled.
        handled: u64,
        /// The id received.
        got: u64,
    },
}

/// The processor of one validator.
pub struct Processor {
    scanner: Scanner<BitcoinNetwork>,
    signer: SignerClient,
    link: LinkClient,
    /// `processor_messages_total{kind,outcome}`.
    messages: IntCounterVec,
}

/// What handling one message produced.
enum Handled {
    /// Effects in the batch, messages to send.
    Done(Vec<ProcessorMessage>),
    /// Refused or not applicable: skipped without harm.
    Skipped(&'static str),
}

fn kind(message: &CoordinatorMessage) -> &'static str {
    match message {
        CoordinatorMessage::KeyGen(_) => "key_gen",
        CoordinatorMessage::Sign(_) => "sign",
        CoordinatorMessage::Coordinator(_) => "coordinator",
        CoordinatorMessage::Substrate(_) => "substrate",
    }
}

impl Processor {
    /// A processor over a scanner, an enclave connection and a coordinator link, counting
    /// messages in `messages` (from `messages_metric`).
    pub fn new(
        scanner: Scanner<BitcoinNetwork>,
        signer: SignerClient,
        link: LinkClient,
        messages: IntCounterVec,
    ) -> Self {
        Processor {
            scanner,
            signer,
            link,
            messages,
        }
    }

    /// `processor_messages_total{kind,outcome}`, registered in `registry`.
    ///
    /// # Errors
    /// The metric is already registered there.
    pub fn messages_metric(
        registry: &prometheus::Registry,
    ) -> Result<IntCounterVec, prometheus::Error> {
        let messages = IntCounterVec::new(
            prometheus::Opts::new(
                "processor_messages_total",
                "Coordinator messages handled, by kind and outcome.",
            ),
            &["kind", "outcome"],
        )?;
        registry.register(Box::new(messages.clone()))?;
        Ok(messages)
    }

    /// Gives the scanner back (when a connection is lost, to keep scanning alone).
    pub fn into_scanner(self) -> Scanner<BitcoinNetwork> {
        self.scanner
    }

    /// One step: deliver, scan, sign new Batches, handle what the coordinator sent (waiting up
    /// to `wait` for it).
    ///
    /// # Errors
    /// See `ProcessorError`; every error leaves the state consistent, to resume from.
    pub async fn step(&mut self, wait: Duration) -> Result<(), ProcessorError> {
        self.deliver().await?;
        match self.scanner.tick() {
            Ok(_) | Err(ScanError::ReorgBelowFinality { .. }) => {}
            Err(error) => tracing::warn!(%error, "scan failed; retrying"),
        }
        self.sign_new_batches().await?;
        self.deliver().await?;
        let handled = self.scanner.db().last_handled()?;
        for envelope in self.link.next(handled, wait).await? {
            let handled = self.scanner.db().last_handled()?;
            if envelope.id <= handled {
                return Err(ProcessorError::Rewound {
                    handled: handled.0,
                    got: envelope.id.0,
                });
            }
            self.handle(envelope).await?;
        }
        self.deliver().await
    }

    /// Sends every queued outbound message, in order, deleting each once delivered.
    async fn deliver(&self) -> Result<(), ProcessorError> {
        for envelope in self.scanner.db().outbox()? {
            self.link.send(&envelope).await?;
            self.scanner.db().delivered(envelope.id)?;
        }
        Ok(())
    }

    async fn handle(&mut self, envelope: CoordinatorEnvelope) -> Result<(), ProcessorError> {
        let kind = kind(&envelope.message);
        let mut batch = WriteBatch::default();
        let handled = self.apply(envelope.message, &mut batch).await?;
        let outcome = match handled {
            Handled::Done(out) => {
                self.scanner.db().put_outbox(&mut batch, out)?;
                "handled"
            }
            Handled::Skipped(why) => why,
        };
        self.scanner.db().put_handled(&mut batch, envelope.id)?;
        self.scanner.db().commit(batch)?;
        self.messages.with_label_values(&[kind, outcome]).inc();
        self.link.ack(envelope.id).await?;
        Ok(())
    }

    /// A refusal skips the message; the enclave being unreachable stops the step.
    fn refused(&self, error: SignerError, what: &str) -> Result<Handled, ProcessorError> {
        match error {
            SignerError::Refused { reason, detail } => {
                tracing::warn!(?reason, %detail, what, "enclave refused; message skipped");
                Ok(Handled::Skipped("refused"))
            }
            other => Err(ProcessorError::Enclave(other)),
        }
    }

    async fn apply(
        &mut self,
        message: CoordinatorMessage,
        batch: &mut WriteBatch,
    ) -> Result<Handled, ProcessorError> {
        match message {
            CoordinatorMessage::KeyGen(message) => match self.signer.key_gen(&message).await {
                Ok(out) => Ok(Handled::Done(
                    out.into_iter().map(ProcessorMessage::KeyGen).collect(),
                )),
                Err(error) => self.refused(error, "key generation"),
            },
            CoordinatorMessage::Substrate(Substrate::ConfirmKeyPair {
                context,
                set,
                key_pair,
            }) => {
                let Some(block) = context.latest_finalized_block() else {
                    tracing::warn!("ConfirmKeyPair without an activation block; skipped");
                    return Ok(Handled::Skipped("no_activation_block"));
                };
                let Some(activation) = self.scanner.network().height_of(block.0)? else {
                    tracing::warn!("ConfirmKeyPair names a block our node does not have; skipped");
                    return Ok(Handled::Skipped("unknown_block"));
                };
                if let Err(error) = self.signer.confirm_key_pair(set, &key_pair).await {
                    return self.refused(error, "confirm key pair");
                }
                self.scanner.add_key_in(batch, &key_pair, activation)?;
                tracing::info!(activation, "key pair confirmed");
                Ok(Handled::Done(Vec::new()))
            }
            CoordinatorMessage::Coordinator(Coordinator::BatchPreprocesses {
                id,
                preprocesses,
            }) => match self.signer.share_batch(&id, &preprocesses).await {
                Ok(share) => Ok(Handled::Done(vec![ProcessorMessage::Coordinator(
                    CoordinatorOut::BatchShare { id, share },
                )])),
                Err(error) => self.refused(error, "batch share"),
            },
            CoordinatorMessage::Coordinator(Coordinator::BatchShares { id, shares }) => {
                match self.signer.complete_batch(&id, &shares).await {
                    Ok(signed) => Ok(Handled::Done(vec![ProcessorMessage::Substrate(
                        SubstrateOut::Update { batch: signed },
                    )])),
                    Err(error) => self.refused(error, "batch completion"),
                }
            }
            CoordinatorMessage::Coordinator(Coordinator::BatchReattempt { id }) => {
                let Some(to_sign) = self
                    .scanner
                    .db()
                    .batches()?
                    .into_iter()
                    .find(|batch| batch.network == id.id.network && batch.id == id.id.batch)
                else {
                    return Ok(Handled::Skipped("unknown_batch"));
                };
                match self.preprocess_batch(id, &to_sign).await {
                    Ok(message) => Ok(Handled::Done(vec![message])),
                    Err(error) => self.refused(error, "batch reattempt"),
                }
            }
            other => {
                tracing::info!(
                    kind = kind(&other),
                    "message not handled by this processor yet"
                );
                Ok(Handled::Skipped("not_handled_yet"))
            }
        }
    }

    async fn preprocess_batch(
        &self,
        id: BatchSignId,
        batch: &Batch,
    ) -> Result<ProcessorMessage, SignerError> {
        let preprocess = self.signer.preprocess_batch(&id, batch).await?;
        Ok(ProcessorMessage::Coordinator(
            CoordinatorOut::BatchPreprocess {
                id,
                block: batch.block,
                batch_id: batch.id,
                preprocess,
            },
        ))
    }

    /// Starts signing every Batch built since the last step, with attempt 0, each with its
    /// outbound preprocess and the new watermark in one commit.
    async fn sign_new_batches(&mut self) -> Result<(), ProcessorError> {
        let Some(batch_key) = self.scanner.db().batch_key()? else {
            return Ok(());
        };
        let next = self.scanner.db().next_batch_to_sign()?;
        for batch in self
            .scanner
            .db()
            .batches()?
            .into_iter()
            .filter(|batch| batch.id.0 >= next)
        {
            let id = BatchSignId {
                key: batch_key,
                id: BatchSignTarget {
                    network: batch.network,
                    batch: batch.id,
                },
                attempt: Attempt(0),
            };
            let mut write = WriteBatch::default();
            match self.preprocess_batch(id, &batch).await {
                Ok(message) => self.scanner.db().put_outbox(&mut write, [message])?,
                Err(SignerError::Refused { reason, detail }) => {
                    tracing::warn!(?reason, %detail, batch = batch.id.0, "enclave refused to preprocess a Batch");
                }
                Err(other) => return Err(ProcessorError::Enclave(other)),
            }
            self.scanner
                .db()
                .put_next_batch_to_sign(&mut write, batch.id.0.saturating_add(1))?;
            self.scanner.db().commit(write)?;
        }
        Ok(())
    }
}
