//! A Bitcoin regtest node whose blocks and scripts Bitcoin Core's engine (`bitcoinkernel`)
//! validates, speaking Core's JSON-RPC over HTTP. For tests and the devnet: there is no
//! `bitcoind` on this machine.

use std::{
    fs,
    io::Write,
    net::SocketAddr,
    os::unix::fs::PermissionsExt,
    path::PathBuf,
    process::ExitCode,
    sync::{Arc, Mutex},
};

use anyhow::{bail, Context};
use bitcoin::hex::DisplayHex;
use clap::Parser;
use processor_tests::regtest::{feerate::CoreFeeRate, node::Node, server::RpcServer, template};
use rand_core::{OsRng, RngCore};

/// A regtest node validated by Bitcoin Core's kernel.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Where the chain lives (created if missing).
    #[arg(long)]
    datadir: PathBuf,
    /// The JSON-RPC address; port 0 picks a free one (printed in the ready line).
    #[arg(long, default_value = "127.0.0.1:18443")]
    rpc_bind: SocketAddr,
    /// RPC user (with --rpc-password); without both, a cookie file is written.
    #[arg(long, requires = "rpc_password")]
    rpc_user: Option<String>,
    /// RPC password, as Core's -rpcpassword (prefer the cookie file).
    #[arg(long, requires = "rpc_user")]
    rpc_password: Option<String>,
    /// Where to write the cookie (`__cookie__:<hex>`, mode 0600); default DATADIR/.cookie.
    #[arg(long, conflicts_with = "rpc_user")]
    rpc_cookie_file: Option<PathBuf>,
    /// Serve Core's unauthenticated REST block endpoint (`/rest/block/<hash>.bin`), as -rest.
    #[arg(long)]
    rest: bool,
    /// The lowest package fee rate `generatetoaddress` mines, in BTC/kvB as Core's
    /// -blockmintxfee (0.0001 is 10 sat/vB; default 0.00001). The `setblockmintxfee` RPC (ours,
    /// in sat/vB) changes it until the next start.
    #[arg(long, value_parser = parse_blockmintxfee)]
    blockmintxfee: Option<CoreFeeRate>,
}

/// Core's check of -blockmintxfee (`ParseMoney`), with Core's message.
fn parse_blockmintxfee(text: &str) -> Result<CoreFeeRate, String> {
    text.parse()
        .map_err(|_| format!("Invalid amount for -blockmintxfee=<amount>: '{text}'"))
}

fn run(cli: Cli) -> anyhow::Result<()> {
    fs::create_dir_all(&cli.datadir)
        .with_context(|| format!("creating {}", cli.datadir.display()))?;
    let mut cookie = None;
    let (user, password) = match (cli.rpc_user, cli.rpc_password) {
        (Some(user), Some(password)) => (user, password),
        (None, None) => {
            let mut secret = [0u8; 32];
            OsRng.fill_bytes(&mut secret);
            let password = secret.to_lower_hex_string();
            let path = cli
                .rpc_cookie_file
                .unwrap_or_else(|| cli.datadir.join(".cookie"));
            let partial = path.with_extension("partial");
            fs::write(&partial, format!("__cookie__:{password}"))?;
            fs::set_permissions(&partial, fs::Permissions::from_mode(0o600))?;
            fs::rename(&partial, &path)?;
            cookie = Some(path);
            ("__cookie__".to_owned(), password)
        }
        _ => bail!("--rpc-user and --rpc-password go together"),
    };
    let mut node = Node::open(&cli.datadir).context("opening the chain")?;
    node.set_block_min_fee_rate(
        cli.blockmintxfee
            .unwrap_or(template::DEFAULT_BLOCK_MIN_TX_FEE),
    );
    let height = node.chain().height();
    let node = Mutex::new(node);
    let server = RpcServer::bind(cli.rpc_bind, &user, &password)
        .with_context(|| format!("binding {}", cli.rpc_bind))?;
    let server = Arc::new(if cli.rest { server.with_rest() } else { server });
    let address = server
        .address()
        .context("the RPC listener has no IP address")?;
    let signals = Arc::clone(&server);
    telemetry::on_shutdown_signal(move || signals.unblock())?;
    eprintln!("regtest-node: chain at height {height}");
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "regtest-node ready: rpc http://{address}")?;
    stdout.flush()?;
    server.serve(&node);
    if let Some(cookie) = cookie {
        let _ = fs::remove_file(cookie);
    }
    eprintln!("regtest-node: stopped");
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("regtest-node: {error:#}");
            ExitCode::FAILURE
        }
    }
}
