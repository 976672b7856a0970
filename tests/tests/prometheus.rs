//! A real Prometheus server (Debian's `prometheus`) scraping the devnet: every scanner and
//! every enclave is up, their metrics carry what the story did, and the alert rules shipped in
//! `ops/prometheus` load.

// Test code: a failed unwrap is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unwrap_in_result
)]

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use processor_tests::devnet::Devnet;
use serde_json::Value;

/// The result of an instant query; `None` while the server does not answer.
fn try_query(agent: &ureq::Agent, address: &str, promql: &str) -> Option<Vec<Value>> {
    let mut response = agent
        .get(&format!("http://{address}/api/v1/query"))
        .query("query", promql)
        .call()
        .ok()?;
    let body: Value = serde_json::from_str(&response.body_mut().read_to_string().ok()?).ok()?;
    Some(
        body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default(),
    )
}

fn query(agent: &ureq::Agent, address: &str, promql: &str) -> Vec<Value> {
    try_query(agent, address, promql).unwrap()
}

#[test]
fn prometheus_scrapes_every_process_and_loads_the_alert_rules() {
    let dir = tempfile::tempdir().unwrap();
    let devnet = Devnet::start(&dir.path().join("devnet"), 3, 4).unwrap();
    let pair = devnet.key_generation().unwrap();
    devnet.confirm(pair).unwrap();

    let mut scanners = Vec::new();
    let mut enclaves = Vec::new();
    for validator in &devnet.validators {
        scanners.push(format!("\"{}\"", validator.scanner_metrics().unwrap()));
        enclaves.push(format!(
            "\"{}\"",
            validator.enclave.metrics_address().unwrap()
        ));
    }
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ops/prometheus/alerts.yml");
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: scanner\n    static_configs:\n      - targets: [{}]\n  - job_name: signer-enclave\n    static_configs:\n      - targets: [{}]\n",
            rules.display(),
            scanners.join(", "),
            enclaves.join(", ")
        ),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = format!("127.0.0.1:{port}");
    let mut server = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address={address}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
        .spawn()
        .unwrap();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();

    // Every target up, as Prometheus sees it.
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let up = try_query(&agent, &address, "up == 1").unwrap_or_default();
        if up.len() == 8 {
            break;
        }
        assert!(
            Instant::now() < until,
            "targets not up: {up:?}; log: {}",
            std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // What the story did, in the scraped values.
    let keys = query(&agent, &address, "signer_enclave_confirmed_keys");
    assert_eq!(keys.len(), 4);
    assert!(keys.iter().all(|series| series["value"][1] == "1"));
    let dkg = query(
        &agent,
        &address,
        "signer_enclave_dkg_runs_total{outcome=\"completed\"}",
    );
    assert_eq!(dkg.len(), 4);
    let heights = query(&agent, &address, "scanner_node_height > 100");
    assert_eq!(heights.len(), 4);
    // The shipped rules are loaded, and none fires on a healthy devnet.
    let mut response = agent
        .get(&format!("http://{address}/api/v1/rules"))
        .call()
        .unwrap();
    let rules: Value =
        serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap();
    let loaded = rules["data"]["groups"][0]["rules"].as_array().unwrap();
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../ops/prometheus/alerts.yml"),
    )
    .unwrap()
    .matches("- alert:")
    .count();
    assert!(shipped >= 15);
    assert_eq!(loaded.len(), shipped);
    let firing = query(&agent, &address, "ALERTS{alertstate=\"firing\"}");
    assert!(firing.is_empty(), "{firing:?}");

    server.kill().unwrap();
    server.wait().unwrap();
}
