//! The scanner node's Prometheus metrics (conventional names, base units): how far the node,
//! finality and each key's scan are; what was found; what went wrong.

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// Every metric the scanner exports.
#[derive(Clone)]
pub struct ScannerMetrics {
    registry: Registry,
    /// `scanner_node_height`: the node's tip.
    pub node_height: IntGauge,
    /// `scanner_finalized_height`: the highest finalized block.
    pub finalized_height: IntGauge,
    /// `scanner_scanned_height{key}`: the last block scanned for each key.
    pub scanned_height: IntGaugeVec,
    /// `scanner_blocks_scanned_total`.
    pub blocks_scanned: IntCounter,
    /// `scanner_outputs_total{kind}`: our outputs found, by kind.
    pub outputs: IntCounterVec,
    /// `scanner_outputs_ignored_total{reason}`: our outputs ignored (below dust).
    pub outputs_ignored: IntCounterVec,
    /// `scanner_instructions_rejected_total{reason}`: deposits whose data was missing or invalid
    /// (`missing`, `invalid`: funds kept; `refunded`: invalid, but naming a refund origin).
    pub instructions_rejected: IntCounterVec,
    /// `scanner_batches_built_total`.
    pub batches_built: IntCounter,
    /// `scanner_eventualities_total{outcome}`: plans completed, or conflicts seen.
    pub eventualities: IntCounterVec,
    /// `scanner_rpc_errors_total{kind}`: node calls that failed.
    pub rpc_errors: IntCounterVec,
    /// `scanner_reorg_halts_total`: scans halted by a reorganization below finality.
    pub reorg_halts: IntCounter,
    /// `scanner_halted`: 1 while scanning is halted.
    pub halted: IntGauge,
}

impl ScannerMetrics {
    /// Registers every metric in a fresh registry.
    ///
    /// # Errors
    /// A definition is invalid (a programming error the tests catch).
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let gauge = |name: &str, help: &str| IntGauge::new(name, help);
        let counter = |name: &str, help: &str| IntCounter::new(name, help);
        let counters = |name: &str, help: &str, label: &str| {
            IntCounterVec::new(Opts::new(name, help), &[label])
        };
        let metrics = ScannerMetrics {
            node_height: gauge("scanner_node_height", "Height of the Bitcoin node's tip.")?,
            finalized_height: gauge(
                "scanner_finalized_height",
                "Height of the highest finalized block.",
            )?,
            scanned_height: IntGaugeVec::new(
                Opts::new(
                    "scanner_scanned_height",
                    "Height of the last block scanned, by key.",
                ),
                &["key"],
            )?,
            blocks_scanned: counter("scanner_blocks_scanned_total", "Finalized blocks scanned.")?,
            outputs: counters(
                "scanner_outputs_total",
                "Our outputs found, by kind.",
                "kind",
            )?,
            outputs_ignored: counters(
                "scanner_outputs_ignored_total",
                "Our outputs ignored, by reason.",
                "reason",
            )?,
            instructions_rejected: counters(
                "scanner_instructions_rejected_total",
                "Deposits reported without an instruction, by reason (missing, invalid).",
                "reason",
            )?,
            batches_built: counter("scanner_batches_built_total", "Batches built.")?,
            eventualities: counters(
                "scanner_eventualities_total",
                "Planned transactions seen on chain, by outcome (completed, conflict).",
                "outcome",
            )?,
            rpc_errors: counters(
                "scanner_rpc_errors_total",
                "Bitcoin node calls that failed, by kind.",
                "kind",
            )?,
            reorg_halts: counter(
                "scanner_reorg_halts_total",
                "Scans halted by a reorganization below finality.",
            )?,
            halted: gauge(
                "scanner_halted",
                "1 while scanning is halted by a deep reorganization.",
            )?,
            registry,
        };
        let registry = &metrics.registry;
        registry.register(Box::new(metrics.node_height.clone()))?;
        registry.register(Box::new(metrics.finalized_height.clone()))?;
        registry.register(Box::new(metrics.scanned_height.clone()))?;
        registry.register(Box::new(metrics.blocks_scanned.clone()))?;
        registry.register(Box::new(metrics.outputs.clone()))?;
        registry.register(Box::new(metrics.outputs_ignored.clone()))?;
        registry.register(Box::new(metrics.instructions_rejected.clone()))?;
        registry.register(Box::new(metrics.batches_built.clone()))?;
        registry.register(Box::new(metrics.eventualities.clone()))?;
        registry.register(Box::new(metrics.rpc_errors.clone()))?;
        registry.register(Box::new(metrics.reorg_halts.clone()))?;
        registry.register(Box::new(metrics.halted.clone()))?;
        Ok(metrics)
    }

    /// The registry, to serve.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The Prometheus text of every metric.
    pub fn render(&self) -> Vec<u8> {
        telemetry::render(&self.registry)
    }
}
