//! The signer enclave's command line.

use std::{io::Write, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use signer_enclave::config::{Config, EXAMPLE};

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
}

fn main() -> ExitCode {
    if let Err(error) = signer_enclave::secrets::disable_core_dumps() {
        eprintln!("signer-enclave: cannot disable core dumps: {error}");
        return ExitCode::FAILURE;
    }
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
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("signer-enclave: {error:#}");
            ExitCode::FAILURE
        }
    }
}
