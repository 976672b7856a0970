//! The real binaries, run as an operator would: each prints a documented configuration that
//! it then accepts, and refuses a broken one with a message naming the setting.

// Test code: a failed unwrap is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unwrap_in_result
)]

use std::{
    os::unix::fs::PermissionsExt,
    path::Path,
    process::{Command, Output},
};

use processor_tests::binary;

fn run(name: &str, args: &[&str]) -> Output {
    Command::new(binary(name).unwrap())
        .args(args)
        .output()
        .unwrap()
}

/// The example configuration, with the files it names made where `prepare` puts them.
fn check_example_round_trip(name: &str, prepare: impl FnOnce(String, &Path) -> String) {
    let example = run(name, &["example-config"]);
    assert!(example.status.success());
    let text = String::from_utf8(example.stdout).unwrap();
    assert!(
        text.lines().filter(|l| l.starts_with('#')).count() >= 5,
        "documented"
    );

    let dir = tempfile::tempdir().unwrap();
    let text = prepare(text, dir.path());
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
    check_refusal_of(name, &[(from, to)], expected);
}

fn check_refusal_of(name: &str, changes: &[(&str, &str)], expected: &str) {
    let mut text = String::from_utf8(run(name, &["example-config"]).stdout).unwrap();
    for (from, to) in changes {
        assert!(text.contains(from));
        text = text.replacen(from, to, 1);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).unwrap();
    let check = run(name, &["check-config", "--config", path.to_str().unwrap()]);
    assert!(!check.status.success());
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(stderr.contains(expected), "{stderr}");
}

/// Makes a link key with `scanner link-key generate` and returns its public half as printed.
fn generate_link_key(path: &Path) -> String {
    let generated = run(
        "scanner",
        &["link-key", "generate", "--out", path.to_str().unwrap()],
    );
    assert!(
        generated.status.success(),
        "{}",
        String::from_utf8_lossy(&generated.stderr)
    );
    let stdout = String::from_utf8(generated.stdout).unwrap();
    stdout
        .lines()
        .find_map(|line| line.strip_prefix("public key, for the coordinator: "))
        .unwrap()
        .to_owned()
}

const EXAMPLE_KEY_FILE: &str = "link_key_file = \"/var/lib/processor/link.key\"";

#[test]
fn scanner_prints_a_configuration_it_accepts() {
    check_example_round_trip("scanner", |text, dir| {
        let key = dir.join("link.key");
        generate_link_key(&key);
        assert!(text.contains(EXAMPLE_KEY_FILE));
        text.replacen(
            EXAMPLE_KEY_FILE,
            &format!("link_key_file = \"{}\"", key.display()),
            1,
        )
    });
}

#[test]
fn enclave_prints_a_configuration_it_accepts() {
    check_example_round_trip("signer-enclave", |text, _| text);
}

/// `link-key generate` makes an owner-only key and never overwrites it; `show` prints the same
/// public half; a key file others can read is refused by `check-config`, naming the file.
#[test]
fn a_link_key_is_made_once_owner_only_and_refused_when_others_can_read_it() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("link.key");
    let public = generate_link_key(&key);
    assert_eq!(public.len(), 64);
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let shown = run(
        "scanner",
        &["link-key", "show", "--key", key.to_str().unwrap()],
    );
    assert_eq!(String::from_utf8(shown.stdout).unwrap().trim(), public);
    let again = run(
        "scanner",
        &["link-key", "generate", "--out", key.to_str().unwrap()],
    );
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    let shown = run(
        "scanner",
        &["link-key", "show", "--key", key.to_str().unwrap()],
    );
    assert_eq!(String::from_utf8(shown.stdout).unwrap().trim(), public);

    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let text = String::from_utf8(run("scanner", &["example-config"]).stdout).unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        text.replacen(
            EXAMPLE_KEY_FILE,
            &format!("link_key_file = \"{}\"", key.display()),
            1,
        ),
    )
    .unwrap();
    let check = run(
        "scanner",
        &["check-config", "--config", config.to_str().unwrap()],
    );
    assert!(!check.status.success());
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(stderr.contains("has mode 644"), "{stderr}");
    assert!(stderr.contains(key.to_str().unwrap()), "{stderr}");
}

#[test]
fn scanner_refuses_plain_tcp_to_another_host() {
    check_refusal_of(
        "scanner",
        &[
            ("transport = \"noise\"", "transport = \"plain\""),
            (
                "endpoint = \"127.0.0.1:7000\"",
                "endpoint = \"10.0.0.2:7000\"",
            ),
        ],
        "setting `coordinator.transport`",
    );
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
