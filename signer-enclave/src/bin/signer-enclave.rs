//! The signer enclave's command line: provision a token and database, run the RPC server,
//! and report what the enclave holds.

use std::{
    cell::RefCell,
    io::Write,
    os::unix::fs::{FileTypeExt, PermissionsExt},
    path::{Path, PathBuf},
    process::ExitCode,
    rc::Rc,
    time::Duration,
};

use anyhow::{bail, Context};
use bitcoin::key::XOnlyPublicKey;
use clap::{Parser, Subcommand};
use rand_core::OsRng;
use signer_enclave::{
    config::{Config, EXAMPLE},
    custody::{
        load_module, Custody, CustodyError, Purpose, Seal, SealingKey, SealingKeyAttributes,
        TokenSelector,
    },
    db::{EnclaveDb, KeyStatus},
    enclave::Enclave,
    identity::{self, Identity},
    key_store,
    metrics::Metrics,
    resharing::verification_digest,
    rpc::{serve, ConnectionLimits, SignerService},
    secrets::{disable_core_dumps, read_pin},
};

/// The isolated signer of a validator's Bitcoin processor.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print a complete configuration file, every setting documented.
    ExampleConfig,
    /// Check a configuration file and say what is wrong with it, if anything.
    CheckConfig {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Create (or find) the sealing key in the token and record the coordinator key whose
    /// attestations acknowledge plans. Run once per enclave; running it again with the same
    /// key changes nothing.
    Provision {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
        /// The coordinator's attestation key: 32-byte x-only public key, hex.
        #[arg(long)]
        coordinator_key: String,
        /// Create a new sealing key even though the database holds key pairs sealed under
        /// another (a replaced or reset token): those pairs can no longer be unsealed.
        #[arg(long)]
        new_sealing_key: bool,
    },
    /// Move the key pairs to another token (a new HSM, or another module): every pair is
    /// unsealed from the configured token, checked, sealed under the other token's sealing key
    /// (created there if missing) and written back in one commit. The enclave must be stopped;
    /// afterwards, run it with the other configuration. The old token can then be retired.
    MigrateToken {
        /// The current configuration file.
        #[arg(long)]
        config: PathBuf,
        /// The configuration naming the other token (the same `db_path`).
        #[arg(long)]
        to: PathBuf,
    },
    /// Serve the scanner node on the configured Unix socket until SIGTERM or Ctrl-C.
    Run {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Verify the audit trail (every approval, refusal, released share and signature, key
    /// generation and confirmation, hash-chained) and print it; fails naming where it was
    /// edited or truncated. Works while the enclave runs.
    Audit {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Show the key pairs held, their public keys, and the sealing key's attributes as the
    /// token reports them. Works while the enclave runs.
    Status {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    if let Err(error) = disable_core_dumps() {
        eprintln!("signer-enclave: cannot disable core dumps: {error}");
        return ExitCode::FAILURE;
    }
    telemetry::init_logging();
    let cli = Cli::parse();
    let mut stdout = std::io::stdout().lock();
    let result = match cli.command {
        Command::ExampleConfig => stdout
            .write_all(EXAMPLE.as_bytes())
            .map_err(anyhow::Error::from),
        Command::CheckConfig { config } => Config::load(&config)
            .map_err(anyhow::Error::from)
            .and_then(|_| {
                writeln!(stdout, "{}: configuration is valid", config.display())
                    .map_err(anyhow::Error::from)
            }),
        Command::Provision {
            config,
            coordinator_key,
            new_sealing_key,
        } => provision(&config, &coordinator_key, new_sealing_key, &mut stdout),
        Command::MigrateToken { config, to } => migrate_token(&config, &to, &mut stdout),
        Command::Run { config } => run(&config, &mut stdout),
        Command::Status { config } => status(&config, &mut stdout),
        Command::Audit { config } => audit(&config, &mut stdout),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!(
                "signer-enclave: {}",
                telemetry::error_report(error.as_ref())
            );
            ExitCode::FAILURE
        }
    }
}

/// The token the configuration names (`Config::load` refuses one naming none, or several).
fn token(config: &Config) -> anyhow::Result<TokenSelector> {
    config
        .pkcs11
        .token()
        .context("pkcs11: name the token by exactly one of token_label, token_serial and slot_id")
}

fn open_custody(config: &Config, sealing_key: SealingKey) -> anyhow::Result<Custody> {
    let pin = read_pin(&config.pkcs11.pin_file)?;
    let pkcs11 = load_module(&config.pkcs11.module)?;
    Ok(Custody::open(&pkcs11, &token(config)?, &pin, sealing_key)?)
}

fn write_attributes(out: &mut impl Write, attributes: SealingKeyAttributes) -> anyhow::Result<()> {
    writeln!(
        out,
        "sealing key: AES-{} sensitive={} always_sensitive={} extractable={} never_extractable={} token={} local={}",
        attributes.value_len * 8,
        attributes.sensitive,
        attributes.always_sensitive,
        attributes.extractable,
        attributes.never_extractable,
        attributes.token,
        attributes.local,
    )?;
    Ok(())
}

fn provision(
    path: &Path,
    coordinator_key: &str,
    new_sealing_key: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let key = hex::decode(coordinator_key)
        .ok()
        .and_then(|bytes| XOnlyPublicKey::from_slice(&bytes).ok())
        .context("--coordinator-key must be a 32-byte x-only public key in hex")?;
    let db = EnclaveDb::open(&config.db_path)
        .with_context(|| format!("database {} (db_path)", config.db_path.display()))?;
    let sealed = db.key_records()?.len();
    let identity = db.identity()?.is_some();
    let pin = read_pin(&config.pkcs11.pin_file)?;
    let pkcs11 = load_module(&config.pkcs11.module)?;
    let selector = &token(&config)?;
    let custody = match Custody::open(&pkcs11, selector, &pin, SealingKey::MustExist) {
        Ok(custody) => custody,
        Err(CustodyError::SealingKeyMissing) => {
            if (sealed > 0 || identity) && !new_sealing_key {
                bail!(
                    "the token has no sealing key, but the database holds {sealed} sealed key \
                     pair(s) and the enclave identity, which only the old token's key unseals: \
                     restore that token, or, to give them up and seal anew in this token, run \
                     provision again with --new-sealing-key"
                );
            }
            if sealed > 0 || identity {
                // Before the new key exists: an interrupted run is resumed by running it again.
                let retired = db.retire_key_records()?;
                tracing::warn!(
                    retired,
                    "a new sealing key: the key pairs sealed under the old one are retired (kept \
                     in retired_key_pairs, never used); the enclave starts without them"
                );
            }
            Custody::open(&pkcs11, selector, &pin, SealingKey::CreateIfMissing)?
        }
        Err(error) => return Err(error.into()),
    };
    let attributes = custody.sealing_key_attributes()?;
    db.set_coordinator_key(&key)?;
    let identity = Identity::load_or_create(&db, &custody, &mut OsRng)?;
    write_attributes(out, attributes)?;
    writeln!(out, "coordinator key: {key}")?;
    writeln!(
        out,
        "enclave identity: {} (register it with the coordinator)",
        identity.public()
    )?;
    writeln!(out, "provisioned")?;
    Ok(())
}

fn migrate_token(path: &Path, to: &Path, out: &mut impl Write) -> anyhow::Result<()> {
    let current = Config::load(path)?;
    let next = Config::load(to)?;
    if current.db_path != next.db_path {
        bail!(
            "--to names database {} but the enclave's is {} (db_path): the key pairs move between tokens, not databases",
            next.db_path.display(),
            current.db_path.display()
        );
    }
    // One module is loaded and initialized once, whichever tokens it holds.
    let module = load_module(&current.pkcs11.module)?;
    let next_module = if next.pkcs11.module == current.pkcs11.module {
        module.clone()
    } else {
        load_module(&next.pkcs11.module)?
    };
    let from = Custody::open(
        &module,
        &token(&current)?,
        &read_pin(&current.pkcs11.pin_file)?,
        SealingKey::MustExist,
    )?;
    let into = Custody::open(
        &next_module,
        &token(&next)?,
        &read_pin(&next.pkcs11.pin_file)?,
        SealingKey::CreateIfMissing,
    )?;
    // The same token under two names would be resealed into itself: a blob one seals that
    // the other unseals means one sealing key.
    let probe = into.seal(b"migrate-token probe", Purpose::NetworkKeyShare, &[0; 32])?;
    if from
        .unseal(b"migrate-token probe", Purpose::NetworkKeyShare, &probe)
        .is_ok()
    {
        bail!("--to names the token the enclave uses already");
    }
    let db = EnclaveDb::open(&current.db_path)
        .with_context(|| format!("database {} (db_path)", current.db_path.display()))?;
    let mut records = db.key_records()?;
    for record in &mut records {
        record.sealed = key_store::reseal(&from, &into, &record.sealed)?;
    }
    let mut pending = db.pending_refreshes()?;
    for (_, refresh) in &mut pending {
        refresh.sealed = key_store::reseal(&from, &into, &refresh.sealed)?;
    }
    let resealed_identity = identity::reseal(&db, &from, &into)?;
    let moved = db.reseal_key_records(&records, &pending, resealed_identity.as_deref())?;
    writeln!(out, "from token: {}", from.token())?;
    writeln!(out, "to token: {}", into.token())?;
    write_attributes(out, into.sealing_key_attributes()?)?;
    writeln!(
        out,
        "{moved} key pair(s), {} pending refresh(es){} sealed into the new token; run the \
         enclave with {}",
        pending.len(),
        if resealed_identity.is_some() {
            " and the enclave identity"
        } else {
            ""
        },
        to.display()
    )?;
    Ok(())
}

fn audit(path: &Path, out: &mut impl Write) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let db = EnclaveDb::open_read_only(&config.db_path)
        .with_context(|| format!("database {} (db_path)", config.db_path.display()))?;
    let records = db.audit_records()?;
    for record in &records {
        let entry = &record.entry;
        writeln!(
            out,
            "{} {} {} subject={} attempt={} key={} {}",
            record.seq,
            record.time,
            entry.event.label(),
            hex::encode(&entry.subject),
            entry.attempt,
            hex::encode(&entry.key),
            entry.detail,
        )?;
    }
    writeln!(
        out,
        "audit trail verified: {} records, head {}",
        records.len(),
        hex::encode(db.audit_head()?.hash)
    )?;
    Ok(())
}

fn status(path: &Path, out: &mut impl Write) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let custody = open_custody(&config, SealingKey::MustExist)?;
    writeln!(
        out,
        "token: {} (module {})",
        custody.token(),
        config.pkcs11.module.display()
    )?;
    write_attributes(out, custody.sealing_key_attributes()?)?;
    let db = EnclaveDb::open_read_only(&config.db_path)
        .with_context(|| format!("database {} (db_path)", config.db_path.display()))?;
    match db.coordinator_key()? {
        Some(key) => writeln!(out, "coordinator key: {key}")?,
        None => writeln!(out, "coordinator key: none (not provisioned)")?,
    }
    match Identity::load(&db, &custody) {
        Ok(Some(identity)) => writeln!(out, "enclave identity: {}", identity.public())?,
        Ok(None) => writeln!(
            out,
            "enclave identity: none yet (made by provision or the next start)"
        )?,
        Err(error) => writeln!(
            out,
            "enclave identity: cannot be read by this token: {error}"
        )?,
    }
    let records = db.key_records()?;
    let pending = db.pending_refreshes()?;
    writeln!(out, "key pairs: {}", records.len())?;
    for record in records {
        let status = match record.status {
            KeyStatus::Generated => "generated",
            KeyStatus::Confirmed => "confirmed",
        };
        writeln!(
            out,
            "  session {} {:?} {status}: batch key {} network key {}",
            record.set.session.0,
            record.set.network,
            hex::encode(record.pair.batch_key.0),
            hex::encode(record.pair.network_key.to_bytes()),
        )?;
        match key_store::unseal(&custody, &record.sealed) {
            Ok(keys) => {
                let params = keys.network.params();
                writeln!(
                    out,
                    "    share of participant {} ({}-of-{}), refresh epoch {}, verification \
                     shares {}, sealed in the token above",
                    u16::from(params.i()),
                    params.t(),
                    params.n(),
                    record.epoch,
                    hex::encode(verification_digest(&keys)),
                )?;
            }
            Err(error) => writeln!(
                out,
                "    refresh epoch {}; shares cannot be unsealed by this token: {error}",
                record.epoch
            )?,
        }
        for (_, refresh) in pending.iter().filter(|(of, _)| of.pair == record.pair) {
            writeln!(
                out,
                "    refresh pending (attempt {}): verification shares {}, waiting for \
                 the coordinator's confirmation",
                refresh.attempt,
                hex::encode(refresh.digest),
            )?;
        }
    }
    Ok(())
}

fn run(path: &Path, out: &mut impl Write) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let custody = open_custody(&config, SealingKey::MustExist)?;
    let db = EnclaveDb::open(&config.db_path)
        .with_context(|| format!("database {} (db_path)", config.db_path.display()))?;
    let metrics = Metrics::new()?;
    metrics
        .slots_unreadable
        .set(i64::try_from(custody.skipped_slots().len()).unwrap_or(i64::MAX));
    let enclave = Enclave::open(db, Box::new(custody), metrics.clone())?;
    let metrics_address = metrics.serve(config.metrics.listen)?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async {
        let socket = &config.rpc.socket;
        let listener = bind(socket)?;
        writeln!(
            out,
            "signer-enclave ready: socket {} metrics http://{metrics_address}/metrics",
            socket.display()
        )?;
        out.flush()?;
        let service = SignerService::new(Rc::new(RefCell::new(enclave)));
        serve(
            listener,
            config.rpc.allowed_uid,
            service,
            metrics,
            ConnectionLimits {
                max_connections: config.rpc.max_connections,
                idle_timeout: Duration::from_secs(config.rpc.idle_timeout_seconds),
            },
            telemetry::shutdown_signal(),
        )
        .await;
        std::fs::remove_file(socket).with_context(|| format!("removing {}", socket.display()))?;
        tracing::info!("stopped");
        Ok(())
    })
}

/// Binds the socket, replacing a stale one left by a killed enclave, readable and writable by
/// owner and group only: the group decides who may connect at all, `SO_PEERCRED` who is served.
fn bind(socket: &Path) -> anyhow::Result<tokio::net::UnixListener> {
    match std::fs::symlink_metadata(socket) {
        Ok(metadata) if metadata.file_type().is_socket() => std::fs::remove_file(socket)
            .with_context(|| format!("removing stale socket {}", socket.display()))?,
        Ok(_) => bail!(
            "{} exists and is not a socket (rpc.socket)",
            socket.display()
        ),
        Err(_) => {}
    }
    let listener = tokio::net::UnixListener::bind(socket)
        .with_context(|| format!("binding {} (rpc.socket)", socket.display()))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o660))?;
    Ok(listener)
}
