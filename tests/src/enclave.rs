//! A signer enclave as its own process, the way an operator runs one: a fresh token in a
//! private directory (SoftHSM2's, or kryoptic's with `PROCESSOR_TEST_KRYOPTIC`; made by
//! `test-token`, PINs in owner-only files), a configuration file, `signer-enclave provision`,
//! then `signer-enclave run` until killed or stopped.

use std::{
    fs,
    net::SocketAddr,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output},
};

use bitcoin::key::XOnlyPublicKey;

use crate::{binary, metric_value, pkcs11::TestModule, scrape, start_until_ready, HarnessError};

/// The label every test token carries (each enclave has its own token directory).
pub const TOKEN_LABEL: &str = "processor";
const USER_PIN: &str = "user-pin-for-tests";
const SO_PIN: &str = "so-pin-for-tests";

/// One enclave's directory and, while it runs, its process.
pub struct EnclaveProcess {
    dir: PathBuf,
    module: TestModule,
    /// The module's configuration: the environment variable and its value.
    module_env: (&'static str, PathBuf),
    config: PathBuf,
    socket: PathBuf,
    child: Option<Child>,
    metrics: Option<SocketAddr>,
}

/// Makes a token labelled `label` for the enclave in `dir` (its module's configuration and PIN
/// files there).
fn make_token(
    dir: &Path,
    label: &str,
    module: &TestModule,
    (variable, conf): &(&'static str, PathBuf),
) -> Result<(), HarnessError> {
    checked(
        Command::new(binary("test-token")?)
            .env(variable, conf)
            .arg("--module")
            .arg(module.path())
            .arg("--label")
            .arg(label)
            .arg("--so-pin-file")
            .arg(dir.join("so.pin"))
            .arg("--pin-file")
            .arg(dir.join("user.pin"))
            .output()?,
        "test-token",
    )?;
    Ok(())
}

fn write_private(path: &Path, contents: &str) -> Result<(), HarnessError> {
    fs::write(path, contents)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    Ok(())
}

fn checked(output: Output, what: &str) -> Result<Output, HarnessError> {
    if output.status.success() {
        Ok(output)
    } else {
        Err(HarnessError::Failed(format!(
            "{what}: {}",
            String::from_utf8_lossy(&output.stderr)
        )))
    }
}

impl EnclaveProcess {
    /// Makes a token, a configuration and a provisioned database under `dir`, for an enclave
    /// serving `allowed_uid` and trusting `coordinator`'s attestations.
    ///
    /// # Errors
    /// A binary is missing or a step failed.
    pub fn provision(
        dir: &Path,
        coordinator: &XOnlyPublicKey,
        allowed_uid: u32,
    ) -> Result<Self, HarnessError> {
        fs::create_dir_all(dir)?;
        let module = TestModule::from_env();
        let module_env = module.configure(dir)?;
        write_private(&dir.join("so.pin"), SO_PIN)?;
        write_private(&dir.join("user.pin"), USER_PIN)?;
        make_token(dir, TOKEN_LABEL, &module, &module_env)?;
        let socket = dir.join("signer.sock");
        let config = dir.join("enclave.toml");
        fs::write(
            &config,
            format!(
                r#"db_path = "{db}"

[pkcs11]
module = "{module}"
token_label = "{TOKEN_LABEL}"
pin_file = "{pin}"

[rpc]
socket = "{socket}"
allowed_uid = {allowed_uid}

[metrics]
listen = "127.0.0.1:0"
"#,
                db = dir.join("db").display(),
                module = module.path().display(),
                pin = dir.join("user.pin").display(),
                socket = socket.display(),
            ),
        )?;
        let enclave = EnclaveProcess {
            dir: dir.to_owned(),
            module,
            module_env,
            config,
            socket,
            child: None,
            metrics: None,
        };
        checked(
            enclave.provision_again(coordinator, &[])?,
            "signer-enclave provision",
        )?;
        Ok(enclave)
    }

    /// Runs `provision` again with `extra` arguments, returning what it said.
    ///
    /// # Errors
    /// The binary could not be run.
    pub fn provision_again(
        &self,
        coordinator: &XOnlyPublicKey,
        extra: &[&str],
    ) -> Result<Output, HarnessError> {
        Ok(self
            .command()?
            .arg("provision")
            .arg("--config")
            .arg(&self.config)
            .arg("--coordinator-key")
            .arg(coordinator.to_string())
            .args(extra)
            .output()?)
    }

    /// Replaces the token with a fresh one under the same label and PINs (an HSM replaced or
    /// reset): the sealing key is gone.
    ///
    /// # Errors
    /// The token directory cannot be replaced.
    pub fn replace_token(&self) -> Result<(), HarnessError> {
        self.module.destroy(&self.dir)?;
        self.module.configure(&self.dir)?;
        make_token(&self.dir, TOKEN_LABEL, &self.module, &self.module_env)
    }

    /// Makes a second token, labelled `label`, in the same module (a new HSM beside the old
    /// one), and writes a configuration naming it; returns that configuration's path.
    ///
    /// # Errors
    /// The token or the configuration could not be made.
    pub fn add_token(&self, label: &str) -> Result<PathBuf, HarnessError> {
        make_token(&self.dir, label, &self.module, &self.module_env)?;
        let config = fs::read_to_string(&self.config)?.replace(
            &format!("token_label = \"{TOKEN_LABEL}\""),
            &format!("token_label = \"{label}\""),
        );
        let path = self.dir.join(format!("{label}.toml"));
        fs::write(&path, config)?;
        Ok(path)
    }

    /// Runs `signer-enclave migrate-token` from the current configuration to the one at `to`.
    ///
    /// # Errors
    /// The binary could not be run.
    pub fn migrate_token(&self, to: &Path) -> Result<Output, HarnessError> {
        Ok(self
            .command()?
            .arg("migrate-token")
            .arg("--config")
            .arg(&self.config)
            .arg("--to")
            .arg(to)
            .output()?)
    }

    /// The enclave's identity key, as `status` prints it for its operator to register with
    /// the coordinator (x-only, 32 bytes).
    ///
    /// # Errors
    /// `status` failed or printed no identity.
    pub fn identity(&self) -> Result<[u8; 32], HarnessError> {
        self.status_field("", "enclave identity: ")
    }

    /// The digest of the verification shares of the (first) confirmed key pair, as `status`
    /// prints it.
    ///
    /// # Errors
    /// `status` failed or printed no confirmed shares.
    pub fn shares_digest(&self) -> Result<[u8; 32], HarnessError> {
        self.status_field(" confirmed: ", "verification shares ")
    }

    /// The 32 bytes in hex after the first `label` that follows `after` in `status`.
    fn status_field(&self, after: &str, label: &str) -> Result<[u8; 32], HarnessError> {
        let status = checked(self.cli("status")?, "signer-enclave status")?;
        let status = String::from_utf8_lossy(&status.stdout);
        status
            .split_once(after)
            .and_then(|(_, rest)| rest.split(label).nth(1))
            .and_then(|rest| rest.get(..64))
            .and_then(|value| <[u8; 32] as bitcoin::hex::FromHex>::from_hex(value).ok())
            .ok_or_else(|| HarnessError::Failed(format!("status shows no {label}: {status}")))
    }

    /// Runs the enclave with the configuration at `path` from its next start.
    pub fn use_config(&mut self, path: PathBuf) {
        self.config = path;
    }

    fn command(&self) -> Result<Command, HarnessError> {
        let mut command = Command::new(binary("signer-enclave")?);
        command.env(self.module_env.0, &self.module_env.1);
        Ok(command)
    }

    /// Starts `signer-enclave run` and waits for its ready line. Its log goes to
    /// `enclave.log` in the directory.
    ///
    /// # Errors
    /// It did not start, or exited before it was ready (its stderr is in the error).
    pub fn start(&mut self) -> Result<(), HarnessError> {
        let mut command = self.command()?;
        command.arg("run").arg("--config").arg(&self.config);
        let (child, metrics) = start_until_ready(command, &self.dir.join("enclave.log"))?;
        self.metrics = Some(metrics);
        self.child = Some(child);
        Ok(())
    }

    /// The enclave's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("enclave.log")).unwrap_or_default()
    }

    /// `kill -9`: no chance to clean up.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.metrics = None;
    }

    /// SIGTERM, then waits for the exit.
    ///
    /// # Errors
    /// Not running, or waiting failed.
    pub fn terminate(&mut self) -> Result<ExitStatus, HarnessError> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| HarnessError::Failed("not running".into()))?;
        checked(
            Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .output()?,
            "kill -TERM",
        )?;
        self.metrics = None;
        Ok(child.wait()?)
    }

    /// Runs another subcommand (`status`, ...) against this enclave's configuration.
    ///
    /// # Errors
    /// The binary could not be run.
    pub fn cli(&self, subcommand: &str) -> Result<Output, HarnessError> {
        Ok(self
            .command()?
            .arg(subcommand)
            .arg("--config")
            .arg(&self.config)
            .output()?)
    }

    /// The Unix socket the enclave serves.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The enclave's whole directory: token, database, configuration, PIN files, log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Sets the RPC limits in the configuration (takes effect at the next start).
    ///
    /// # Errors
    /// The configuration cannot be rewritten.
    pub fn set_rpc_limits(
        &self,
        max_connections: usize,
        idle_timeout_seconds: u64,
    ) -> Result<(), HarnessError> {
        let config = fs::read_to_string(&self.config)?;
        let updated = config.replacen(
            "[rpc]\n",
            &format!(
                "[rpc]\nmax_connections = {max_connections}\nidle_timeout_seconds = {idle_timeout_seconds}\n"
            ),
            1,
        );
        fs::write(&self.config, updated)?;
        Ok(())
    }

    /// The configuration file.
    pub fn config(&self) -> &Path {
        &self.config
    }

    /// Where the enclave serves its metrics, while it runs.
    pub fn metrics_address(&self) -> Option<SocketAddr> {
        self.metrics
    }

    /// Scrapes `/metrics` once.
    ///
    /// # Errors
    /// Not running, or the scrape failed.
    pub fn metrics(&self) -> Result<String, HarnessError> {
        scrape(
            self.metrics
                .ok_or_else(|| HarnessError::Failed("not running".into()))?,
        )
    }

    /// The value of one series (`name{labels}` exactly as exported), zero when absent.
    ///
    /// # Errors
    /// The scrape failed.
    pub fn metric(&self, series: &str) -> Result<f64, HarnessError> {
        Ok(metric_value(&self.metrics()?, series))
    }
}

impl Drop for EnclaveProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
