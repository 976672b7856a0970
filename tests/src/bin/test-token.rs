//! Creates a token for a test or a devnet validator, as an operator would with
//! `softhsm2-util`, but with both PINs read from files instead of argv or a terminal. The
//! module is SoftHSM2's unless `--module` names another (kryoptic's in `ops/test`); the
//! module's configuration variable (`SOFTHSM2_CONF`, `KRYOPTIC_CONF`) must name where the
//! token goes.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context;
use cryptoki::{
    context::{CInitializeArgs, CInitializeFlags, Pkcs11},
    session::UserType,
    types::AuthPin,
};

const SOFTHSM: &str = "/usr/lib/softhsm/libsofthsm2.so";

fn arg(args: &[String], name: &str) -> anyhow::Result<String> {
    args.iter()
        .position(|arg| arg == name)
        .and_then(|index| args.get(index + 1))
        .cloned()
        .with_context(|| {
            format!(
                "usage: test-token [--module PATH] --label L --so-pin-file F --pin-file F \
                 (missing {name})"
            )
        })
}

fn pin(path: &str) -> anyhow::Result<AuthPin> {
    let text =
        std::fs::read_to_string(PathBuf::from(path)).with_context(|| format!("reading {path}"))?;
    Ok(AuthPin::new(text.trim_end_matches('\n').into()))
}

fn create() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let label = arg(&args, "--label")?;
    let so_pin = pin(&arg(&args, "--so-pin-file")?)?;
    let user_pin = pin(&arg(&args, "--pin-file")?)?;
    let module = arg(&args, "--module").unwrap_or_else(|_| SOFTHSM.to_owned());
    let pkcs11 = Pkcs11::new(&module).with_context(|| format!("loading {module}"))?;
    pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))?;
    let free = pkcs11
        .get_all_slots()?
        .into_iter()
        .find(|slot| {
            pkcs11
                .get_token_info(*slot)
                .map(|info| !info.token_initialized())
                .unwrap_or(false)
        })
        .context("no free slot (a token not initialized yet)")?;
    pkcs11.init_token(free, &so_pin, &label)?;
    let slot = pkcs11
        .get_slots_with_initialized_token()?
        .into_iter()
        .find(|slot| {
            pkcs11
                .get_token_info(*slot)
                .map(|info| info.label().trim_end() == label)
                .unwrap_or(false)
        })
        .context("the new token is not listed")?;
    let session = pkcs11.open_rw_session(slot)?;
    session.login(UserType::So, Some(&so_pin))?;
    session.init_pin(&user_pin)?;
    session.logout()?;
    Ok(())
}

fn main() -> ExitCode {
    match create() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("test-token: {error:#}");
            ExitCode::FAILURE
        }
    }
}
