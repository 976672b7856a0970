//! The enclave's Prometheus metrics and the loopback-only endpoint that serves them.
//!
//! What an operator alerts on: refusals by reason (a signer refusing means someone asked for
//! what the validator set did not agree on), connections from other users, HSM latency and
//! errors, and signing rounds and key generations as they happen.

use std::net::SocketAddr;

use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use thiserror::Error;

/// The metrics could not be set up or served.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum MetricsError {
    /// A metric could not be registered.
    #[error("metrics: {0}")]
    Prometheus(#[from] prometheus::Error),
    /// The listen address is not a loopback address.
    #[error("metrics address {0} is not a loopback address")]
    NotLoopback(SocketAddr),
    /// The endpoint could not bind.
    #[error("cannot serve metrics on {address}: {reason}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// Why.
        reason: String,
    },
}

/// Every metric the enclave exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// `signer_enclave_refusals_total{reason}`: requests refused, by `RefusalReason`.
    pub refusals: IntCounterVec,
    /// `signer_enclave_signing_rounds_total{kind,step}`: signing steps completed.
    pub signing_rounds: IntCounterVec,
    /// `signer_enclave_dkg_runs_total{outcome}`: key generations completed or ended by blame.
    pub dkg_runs: IntCounterVec,
    /// `signer_enclave_reshare_steps_total{step}`: repair and refresh steps taken.
    pub reshare_steps: IntCounterVec,
    /// `signer_enclave_refreshes_pending`: refreshed shares sealed and waiting for the
    /// coordinator's confirmation (the old shares sign until it comes).
    pub refreshes_pending: IntGauge,
    /// `signer_enclave_hsm_operation_seconds{operation}`: PKCS#11 seal and unseal latency.
    pub hsm_seconds: HistogramVec,
    /// `signer_enclave_hsm_errors_total{operation}`: PKCS#11 operations that failed.
    pub hsm_errors: IntCounterVec,
    /// `signer_enclave_rejected_connections_total`: connections from a uid not allowed.
    pub rejected_connections: IntCounter,
    /// `signer_enclave_confirmed_keys`: confirmed key pairs held, unsealed, for signing.
    pub confirmed_keys: IntGauge,
    /// `signer_enclave_open_sessions{kind}`: signing, key generation and repair or refresh sessions in memory.
    pub open_sessions: IntGaugeVec,
    /// `signer_enclave_sessions_evicted_total{kind}`: sessions dropped to make room.
    pub sessions_evicted: IntCounterVec,
    /// `signer_enclave_open_connections`: scanner connections being served.
    pub open_connections: IntGauge,
    /// `signer_enclave_connections_dropped_total{reason}`: connections ended by the enclave
    /// (too many, idle, or a peer not reading its answers).
    pub connections_dropped: IntCounterVec,
    /// `signer_enclave_accept_errors_total`: failed accepts, after which serving goes on.
    pub accept_errors: IntCounter,
    /// `signer_enclave_pkcs11_slots_unreadable`: slots whose token information could not be
    /// read when the token was looked for at start (skipped, each logged).
    pub slots_unreadable: IntGauge,
}

impl Metrics {
    /// Registers every metric in a fresh registry.
    ///
    /// # Errors
    /// A metric's definition is invalid (a programming error caught by the tests).
    pub fn new() -> Result<Self, MetricsError> {
        let registry = Registry::new();
        let refusals = IntCounterVec::new(
            Opts::new(
                "signer_enclave_refusals_total",
                "Requests the enclave refused, by reason.",
            ),
            &["reason"],
        )?;
        let signing_rounds = IntCounterVec::new(
            Opts::new(
                "signer_enclave_signing_rounds_total",
                "Signing steps completed, by kind (plan, batch) and step.",
            ),
            &["kind", "step"],
        )?;
        let dkg_runs = IntCounterVec::new(
            Opts::new(
                "signer_enclave_dkg_runs_total",
                "Key generations that ended, by outcome (completed, blamed).",
            ),
            &["outcome"],
        )?;
        let reshare_steps = IntCounterVec::new(
            Opts::new(
                "signer_enclave_reshare_steps_total",
                "Share repair and refresh steps taken, by step (repair_begin, repair_help, \
                 repair_answer, repaired, refresh_key, refresh_deal, refreshed, \
                 refresh_confirmed).",
            ),
            &["step"],
        )?;
        let refreshes_pending = IntGauge::new(
            "signer_enclave_refreshes_pending",
            "Refreshed shares sealed and waiting for the coordinator's confirmation.",
        )?;
        let hsm_seconds = HistogramVec::new(
            HistogramOpts::new(
                "signer_enclave_hsm_operation_seconds",
                "Latency of PKCS#11 operations, by operation.",
            )
            .buckets(vec![
                0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05,
                0.1, 0.25, 1.0,
            ]),
            &["operation"],
        )?;
        let hsm_errors = IntCounterVec::new(
            Opts::new(
                "signer_enclave_hsm_errors_total",
                "PKCS#11 operations that failed, by operation.",
            ),
            &["operation"],
        )?;
        let rejected_connections = IntCounter::new(
            "signer_enclave_rejected_connections_total",
            "Connections refused because the peer's uid is not the allowed one.",
        )?;
        let confirmed_keys = IntGauge::new(
            "signer_enclave_confirmed_keys",
            "Confirmed key pairs the enclave holds for signing.",
        )?;
        let open_sessions = IntGaugeVec::new(
            Opts::new(
                "signer_enclave_open_sessions",
                "Sessions in memory, by kind (plan, batch, key_gen, reshare).",
            ),
            &["kind"],
        )?;
        let sessions_evicted = IntCounterVec::new(
            Opts::new(
                "signer_enclave_sessions_evicted_total",
                "Sessions dropped to make room for newer ones, by kind.",
            ),
            &["kind"],
        )?;
        let open_connections = IntGauge::new(
            "signer_enclave_open_connections",
            "Scanner connections being served.",
        )?;
        let connections_dropped = IntCounterVec::new(
            Opts::new(
                "signer_enclave_connections_dropped_total",
                "Connections the enclave ended, by reason (too_many, idle, not_reading).",
            ),
            &["reason"],
        )?;
        let accept_errors = IntCounter::new(
            "signer_enclave_accept_errors_total",
            "Connections that could not be accepted (serving goes on).",
        )?;
        registry.register(Box::new(open_sessions.clone()))?;
        registry.register(Box::new(sessions_evicted.clone()))?;
        registry.register(Box::new(open_connections.clone()))?;
        registry.register(Box::new(connections_dropped.clone()))?;
        let slots_unreadable = IntGauge::new(
            "signer_enclave_pkcs11_slots_unreadable",
            "PKCS#11 slots skipped at start because their token information could not be read.",
        )?;
        registry.register(Box::new(accept_errors.clone()))?;
        registry.register(Box::new(slots_unreadable.clone()))?;
        registry.register(Box::new(refusals.clone()))?;
        registry.register(Box::new(signing_rounds.clone()))?;
        registry.register(Box::new(dkg_runs.clone()))?;
        registry.register(Box::new(reshare_steps.clone()))?;
        registry.register(Box::new(refreshes_pending.clone()))?;
        registry.register(Box::new(hsm_seconds.clone()))?;
        registry.register(Box::new(hsm_errors.clone()))?;
        registry.register(Box::new(rejected_connections.clone()))?;
        registry.register(Box::new(confirmed_keys.clone()))?;
        Ok(Metrics {
            registry,
            refusals,
            signing_rounds,
            dkg_runs,
            reshare_steps,
            refreshes_pending,
            hsm_seconds,
            hsm_errors,
            rejected_connections,
            confirmed_keys,
            open_sessions,
            sessions_evicted,
            open_connections,
            connections_dropped,
            accept_errors,
            slots_unreadable,
        })
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        telemetry::render(&self.registry)
    }

    /// Serves `GET /metrics` on `address` (loopback only) from a thread of its own.
    ///
    /// # Errors
    /// The address is not loopback or cannot be bound.
    pub fn serve(&self, address: SocketAddr) -> Result<SocketAddr, MetricsError> {
        if !address.ip().is_loopback() {
            return Err(MetricsError::NotLoopback(address));
        }
        telemetry::serve(self.registry.clone(), address).map_err(|error| MetricsError::Bind {
            address,
            reason: error.reason,
        })
    }
}
