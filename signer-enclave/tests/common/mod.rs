//! Helpers shared by the enclave's integration tests. Each test binary uses some of them.
#![allow(dead_code)]

use std::{collections::BTreeMap, path::Path, sync::Arc};

use cryptoki::{context::Pkcs11, session::UserType, types::AuthPin};
use signer_enclave::custody::load_module;

use schema::{ids::Participant, messages::ParticipantMap};
use signer_enclave::key_gen::GeneratedKeys;

/// Runs a whole t-of-n key generation among n `KeyGen`s, relaying as the coordinator does.
pub fn generate_keys(t: u16, n: u16) -> BTreeMap<Participant, GeneratedKeys> {
    signer_enclave::local_key_gen::generate_keys(t, n, &mut rand_core::OsRng)
        .expect("a key generation among honest participants")
}

/// The token label of the test tokens.
pub const TOKEN: &str = "processor-test";

/// A fresh SoftHSM2 token in its own directory under `dir`, initialized with a user PIN, as
/// an operator would make one. SoftHSM reads `SOFTHSM2_CONF` once per process: call this once
/// per test binary.
pub fn softhsm_token(dir: &Path) -> (Arc<Pkcs11>, AuthPin) {
    let tokens = dir.join("tokens");
    std::fs::create_dir(&tokens).unwrap();
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\n",
            tokens.display()
        ),
    )
    .unwrap();
    std::env::set_var("SOFTHSM2_CONF", &conf);
    let pkcs11 = load_module(Path::new("/usr/lib/softhsm/libsofthsm2.so")).unwrap();
    let so_pin = AuthPin::new("so-secret".into());
    let pin = AuthPin::new("user-secret".into());
    let slot = pkcs11
        .get_all_slots()
        .unwrap()
        .into_iter()
        .find(|slot| !pkcs11.get_token_info(*slot).unwrap().token_initialized())
        .unwrap();
    pkcs11.init_token(slot, &so_pin, TOKEN).unwrap();
    let slot = pkcs11.get_slots_with_initialized_token().unwrap()[0];
    let session = pkcs11.open_rw_session(slot).unwrap();
    session.login(UserType::So, Some(&so_pin)).unwrap();
    session.init_pin(&pin).unwrap();
    session.logout().unwrap();
    (pkcs11, pin)
}

/// A participant map without `me`: what the coordinator relays to `me`.
pub fn others(map: &ParticipantMap, me: Participant) -> ParticipantMap {
    map.iter()
        .filter(|(k, _)| **k != me)
        .map(|(k, v)| (*k, v.clone()))
        .collect()
}
