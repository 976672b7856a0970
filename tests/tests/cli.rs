//! The real binaries, run as an operator would: each prints a documented configuration that
//! it then accepts, and refuses a broken one with a message naming the setting.

// Test code: a failed unwrap is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unwrap_in_result
)]

use std::process::{Command, Output};

use processor_tests::binary;

fn run(name: &str, args: &[&str]) -> Output {
    Command::new(binary(name).unwrap())
        .args(args)
        .output()
        .unwrap()
}

fn check_example_round_trip(name: &str) {
    let example = run(name, &["example-config"]);
    assert!(example.status.success());
    let text = String::from_utf8(example.stdout).unwrap();
    assert!(
        text.lines().filter(|l| l.starts_with('#')).count() >= 5,
        "documented"
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, &text).unwrap();
    let check = run(name, &["check-config", "--config", path.to_str().unwrap()]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(String::from_utf8_lossy(&check.stdout).contains("configuration is valid"));
}

fn check_refusal(name: &str, from: &str, to: &str, expected: &str) {
    let text = String::from_utf8(run(name, &["example-config"]).stdout).unwrap();
    assert!(text.contains(from));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
    let check = run(name, &["check-config", "--config", path.to_str().unwrap()]);
    assert!(!check.status.success());
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(stderr.contains(expected), "{stderr}");
}

#[test]
fn scanner_prints_a_configuration_it_accepts() {
    check_example_round_trip("scanner");
}

#[test]
fn enclave_prints_a_configuration_it_accepts() {
    check_example_round_trip("signer-enclave");
}

#[test]
fn scanner_names_the_broken_setting() {
    check_refusal(
        "scanner",
        "confirmations = 1",
        "confirmations = 0",
        "setting `confirmations`",
    );
}

#[test]
fn enclave_refuses_public_metrics() {
    check_refusal(
        "signer-enclave",
        "listen = \"127.0.0.1:9101\"",
        "listen = \"0.0.0.0:9101\"",
        "setting `metrics.listen`",
    );
}

#[test]
fn a_missing_file_is_named() {
    let check = run(
        "scanner",
        &["check-config", "--config", "/nonexistent/scanner.toml"],
    );
    assert!(!check.status.success());
    assert!(String::from_utf8_lossy(&check.stderr).contains("/nonexistent/scanner.toml"));
}

/// The README's run command ends in this binary: the whole story, to the confirmed payout.
#[test]
fn the_devnet_tells_the_whole_story() {
    let dir = tempfile::tempdir().unwrap();
    let devnet = run(
        "devnet",
        &["--no-wait", "--dir", dir.path().to_str().unwrap()],
    );
    let log = String::from_utf8_lossy(&devnet.stderr);
    assert!(devnet.status.success(), "{log}");
    for line in [
        "key generation (3 of 4) done",
        "Batch 0 signed",
        "every processor acknowledged the same 1 plan(s)",
        "payout confirmed",
        "scanner metrics http://127.0.0.1:",
    ] {
        assert!(log.contains(line), "{line}: {log}");
    }
}
