//! Harnesses for tests that run the project's real binaries as separate processes: locating
//! the binaries, running signer enclaves with their own SoftHSM2 tokens, and relaying key
//! generation and signing rounds between them as the coordinator does.

pub mod blocks;
pub mod conformance;
pub mod coordinator;
pub mod devnet;
pub mod enclave;
pub mod pkcs11;
pub mod proxy;
pub mod regtest;
pub mod relay;
pub mod traffic;

use std::{
    fs,
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use thiserror::Error;

/// A binary the tests need was not found.
#[derive(Debug, Error)]
#[error(
    "binary `{name}` not found in {dir}: build the binaries in the tests' profile first \
     (`cargo build --workspace --bins`, with `--release` for benchmarks; ops/test does)"
)]
pub struct MissingBinary {
    /// The binary's name.
    pub name: String,
    /// Where it was looked for.
    pub dir: PathBuf,
}

/// A harness step failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum HarnessError {
    /// A binary is not built.
    #[error(transparent)]
    Binary(#[from] MissingBinary),
    /// A file or process operation failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A step did not do what it should (its output is in the message).
    #[error("{0}")]
    Failed(String),
}

/// The path of a workspace binary built by cargo next to the running program: a test or a
/// benchmark runs from `<target>/<profile>/deps/` and cargo puts binaries in
/// `<target>/<profile>/`; a binary (the devnet) runs from there itself.
///
/// # Errors
/// The binary has not been built.
pub fn binary(name: &str) -> Result<PathBuf, MissingBinary> {
    let exe = std::env::current_exe().unwrap_or_default();
    let own = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    let profile_dir = if own.file_name().is_some_and(|dir| dir == "deps") {
        own.parent().map(Path::to_path_buf).unwrap_or_default()
    } else {
        own
    };
    let path = profile_dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(MissingBinary {
            name: name.to_owned(),
            dir: profile_dir,
        })
    }
}

/// Scrapes a process's `/metrics` once.
///
/// # Errors
/// The scrape failed.
pub fn scrape(address: SocketAddr) -> Result<String, HarnessError> {
    let mut stream = TcpStream::connect(address)?;
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .ok_or_else(|| HarnessError::Failed("no HTTP body".into()))
}

/// The value of one series (`name{labels}` exactly as exported) in scraped metrics, zero when
/// absent.
pub fn metric_value(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| {
            line.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|value| value.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

/// Starts `command` with its stderr appended to `log`, and waits for its ready line on stdout,
/// which names an address after `http://`. If it exits or says nothing usable, it is killed
/// and its log is in the error.
///
/// # Errors
/// It did not start or did not get ready.
pub fn start_until_ready(
    mut command: Command,
    log: &Path,
) -> Result<(Child, SocketAddr), HarnessError> {
    let stderr = fs::OpenOptions::new().create(true).append(true).open(log)?;
    let mut child = command.stdout(Stdio::piped()).stderr(stderr).spawn()?;
    let mut line = String::new();
    if let Some(stdout) = child.stdout.take() {
        BufReader::new(stdout).read_line(&mut line)?;
    }
    let address = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|address| address.trim().parse().ok());
    match address {
        Some(address) => Ok((child, address)),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            Err(HarnessError::Failed(format!(
                "{} did not start: {}",
                command.get_program().to_string_lossy(),
                fs::read_to_string(log).unwrap_or_default()
            )))
        }
    }
}
