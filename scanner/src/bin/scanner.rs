//! The scanner node's command line.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::Context;
use clap::{Parser, Subcommand};
use scanner::{
    chain::bitcoin_core::BitcoinCore,
    chain::rpc::{Auth, CoreRpc, Retry},
    config::{Config, EXAMPLE},
    coordinate::enclave_client::EnclaveClient,
    coordinate::link::{LinkClient, LinkError, LinkMetrics, LinkSecurity, LinkSettings},
    coordinate::link_key,
    coordinate::parts::{NodeParts, SystemClock},
    processor::{Processor, ProcessorMetrics, BLOCKS_PER_STEP},
    scan::metrics::ScannerMetrics,
    scan::{ScanError, Scanner},
    store::db::Db,
};
use schema::ids::NetworkId;

/// The unprivileged scanner node of a validator's Bitcoin processor.
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
    /// The processor's coordinator link key.
    LinkKey {
        #[command(subcommand)]
        command: LinkKeyCommand,
    },
    /// Run the processor until SIGTERM or Ctrl-C: follow the Bitcoin node and scan finalized
    /// blocks, and, while the enclave and the coordinator are reachable, handle the
    /// coordinator's messages and sign through the enclave.
    Run {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum LinkKeyCommand {
    /// Make a new link key in a file readable by its owner only (never over an existing one)
    /// and print its public half, to register with the coordinator.
    Generate {
        /// The key file to create (`coordinator.link_key_file`).
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the public half of a link key.
    Show {
        /// The key file.
        #[arg(long)]
        key: PathBuf,
    },
}

fn link_key_command(command: LinkKeyCommand, out: &mut impl Write) -> anyhow::Result<()> {
    match command {
        LinkKeyCommand::Generate { out: path } => {
            let public = link_key::generate(&path)?;
            writeln!(
                out,
                "link key written to {} (readable by its owner only)\npublic key, for the coordinator: {public}",
                path.display()
            )?;
        }
        LinkKeyCommand::Show { key } => {
            writeln!(out, "{}", link_key::load(&key)?.public())?;
        }
    }
    Ok(())
}

/// Reads the configuration and the files it names (the link key), so that `check-config`
/// finds what `run` would stop on.
fn load(path: &Path) -> anyhow::Result<(Config, LinkSettings)> {
    let config = Config::load(path)?;
    let coordinator = &config.coordinator;
    let security = match coordinator.noise()? {
        Some((file, pinned)) => LinkSecurity::Noise {
            key: link_key::load(file)?.into(),
            coordinator: pinned,
        },
        None => LinkSecurity::PlainLoopback,
    };
    let settings = LinkSettings {
        endpoint: coordinator.endpoint,
        security,
        validator: hex::decode(&coordinator.validator)
            .context("coordinator.validator is not hex")?,
        message_key: coordinator.message_public_key()?,
    };
    Ok((config, settings))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut stdout = std::io::stdout().lock();
    let result = match cli.command {
        Command::ExampleConfig => stdout
            .write_all(EXAMPLE.as_bytes())
            .map_err(anyhow::Error::from),
        Command::LinkKey { command } => link_key_command(command, &mut stdout),
        Command::CheckConfig { config } => load(&config).and_then(|_| {
            writeln!(stdout, "{}: configuration is valid", config.display())
                .map_err(anyhow::Error::from)
        }),
        Command::Run { config } => {
            telemetry::init_logging();
            run(&config, &mut stdout)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("scanner: {}", telemetry::error_report(error.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// One scan while the coordinator or the enclave is away; the outbox gauge keeps moving, as
/// scanning queues messages for the coordinator.
fn scan_alone(scanner: &mut Scanner<BitcoinCore>, metrics: &ProcessorMetrics) {
    if let Err(error) = metrics.observe_outbox(scanner.store()) {
        tracing::warn!(%error, "cannot read the outbox");
    }
    match scanner.tick_at_most(BLOCKS_PER_STEP) {
        Ok(progress) if progress.scanned > 0 => tracing::debug!(
            scanned = progress.scanned,
            finalized = progress.finalized,
            "scanned"
        ),
        Ok(_) => {}
        // Logged and counted where it was found; scanning stays halted.
        Err(ScanError::ReorgBelowFinality { .. }) => {}
        Err(error) => tracing::warn!(%error, "scan failed; retrying"),
    }
}

/// Connects to the enclave and the coordinator; `None` (logged) while either is away. A
/// refused handshake is an error worth an operator's eye (and counted); an absent peer is not.
async fn connect(
    config: &Config,
    link: &LinkSettings,
    metrics: &LinkMetrics,
) -> Option<(EnclaveClient, LinkClient)> {
    let deadline = Duration::from_secs(30);
    let signer = match EnclaveClient::connect(&config.enclave.socket, deadline).await {
        Ok(signer) => signer,
        Err(error) => {
            tracing::debug!(%error, "enclave not reachable");
            return None;
        }
    };
    match LinkClient::connect(link, deadline, metrics).await {
        Ok(link) => Some((signer, link)),
        Err(
            error @ (LinkError::Handshake { .. }
            | LinkError::HandshakeTimeout { .. }
            | LinkError::LoginRefused { .. }
            | LinkError::PlainNotLoopback(_)),
        ) => {
            tracing::error!(error = %telemetry::error_report(&error), "coordinator link refused");
            None
        }
        Err(error) => {
            tracing::debug!(%error, "coordinator not reachable");
            None
        }
    }
}

fn run(path: &Path, out: &mut impl Write) -> anyhow::Result<()> {
    let (config, link_settings) = load(path)?;
    let rpc = &config.bitcoin_rpc;
    let auth = match (&rpc.cookie_file, &rpc.user, &rpc.password_file) {
        (Some(cookie), _, _) => Auth::Cookie(cookie.clone()),
        (None, Some(user), Some(password_file)) => Auth::UserPassword {
            user: user.clone(),
            password_file: password_file.clone(),
        },
        _ => anyhow::bail!("bitcoin_rpc: set either cookie_file, or user and password_file"),
    };
    let client = CoreRpc::new(
        &rpc.url,
        auth,
        Duration::from_secs(rpc.timeout_seconds),
        Retry::default(),
    );
    let client = if rpc.rest { client.with_rest() } else { client };
    let metrics = ScannerMetrics::new()?;
    let metrics_address = telemetry::serve(metrics.registry().clone(), config.metrics.listen)?;
    let db = Db::open(&config.db_path)
        .with_context(|| format!("database {} (db_path)", config.db_path.display()))?;
    let scanner = Scanner::new(
        BitcoinCore::new(client),
        NetworkId::Bitcoin,
        db,
        u64::from(config.confirmations),
        metrics,
    );
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    telemetry::on_shutdown_signal(move || flag.store(true, Ordering::SeqCst))?;
    let processor_metrics = ProcessorMetrics::new(scanner.metrics().registry())?;
    let link_metrics = LinkMetrics::new(scanner.metrics().registry())?;
    writeln!(
        out,
        "scanner ready: metrics http://{metrics_address}/metrics"
    )?;
    out.flush()?;
    let poll = Duration::from_millis(config.poll_interval_ms);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async {
        let mut scanner = Some(scanner);
        let mut link_halted = false;
        let mut backoff = poll.max(Duration::from_millis(100));
        while !stop.load(Ordering::SeqCst) {
            let Some(mut alone) = scanner.take() else {
                break;
            };
            let connected = if link_halted {
                None
            } else {
                connect(&config, &link_settings, &link_metrics).await
            };
            let Some((signer, link)) = connected else {
                // Without the enclave or the coordinator, keep scanning every poll, and try
                // them again later, backing off to every 10 seconds.
                let retry_at = tokio::time::Instant::now() + backoff;
                while !stop.load(Ordering::SeqCst) && tokio::time::Instant::now() < retry_at {
                    scan_alone(&mut alone, &processor_metrics);
                    tokio::time::sleep(poll).await;
                }
                scanner = Some(alone);
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            };
            backoff = poll.max(Duration::from_millis(100));
            let mut processor = Processor::<NodeParts>::new(
                alone,
                config.network.into(),
                signer,
                link,
                SystemClock::default(),
                processor_metrics.clone(),
            );
            while !stop.load(Ordering::SeqCst) {
                match processor.step(poll).await {
                    Ok(()) => {}
                    Err(error) if error.halts_link() => {
                        tracing::error!(%error, "coordinator link halted");
                        link_halted = true;
                        break;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "processor step failed; reconnecting");
                        break;
                    }
                }
            }
            scanner = Some(processor.into_scanner());
        }
    });
    tracing::info!("stopped");
    Ok(())
}
