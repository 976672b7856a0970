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

/// The label of a kryoptic token that offers no AES-GCM (`has_token_without_gcm`).
pub const NO_GCM_TOKEN: &str = "processor-no-gcm";

/// The label of a second token in the same module: where key pairs move to a new token.
pub const NEXT_TOKEN: &str = "processor-next";

/// Whether the tests run against kryoptic (`PROCESSOR_TEST_KRYOPTIC` names its module;
/// `ops/test` runs the custody tests with it as well as with SoftHSM2).
fn kryoptic() -> Option<std::path::PathBuf> {
    std::env::var_os("PROCESSOR_TEST_KRYOPTIC")
        .filter(|path| !path.is_empty())
        .map(Into::into)
}

/// A fresh token under `dir`, initialized with a user PIN, as an operator would make one, and
/// a second one (`NEXT_TOKEN`, the same PIN): in SoftHSM2 (their own token directory), or in
/// kryoptic when `PROCESSOR_TEST_KRYOPTIC` is set (a database each, beside a third token,
/// `NO_GCM_TOKEN`, whose slot denies AES-GCM). A module reads its configuration variable once
/// per process: call this once per test binary.
pub fn test_token(dir: &Path) -> (Arc<Pkcs11>, AuthPin) {
    let module = match kryoptic() {
        Some(module) => {
            let conf = dir.join("kryoptic.conf");
            std::fs::write(
                &conf,
                format!(
                    "[[slots]]\nslot = 1\ndbtype = \"sqlite\"\ndbargs = \"{}\"\n\n\
                     [[slots]]\nslot = 2\ndbtype = \"sqlite\"\ndbargs = \"{}\"\n\n\
                     [[slots]]\nslot = 3\ndbtype = \"sqlite\"\ndbargs = \"{}\"\n\
                     mechanisms = [\"DENY\", \"CKM_AES_GCM\"]\n",
                    dir.join("token.sql").display(),
                    dir.join("next.sql").display(),
                    dir.join("no-gcm.sql").display()
                ),
            )
            .unwrap();
            std::env::set_var("KRYOPTIC_CONF", &conf);
            module
        }
        None => {
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
            "/usr/lib/softhsm/libsofthsm2.so".into()
        }
    };
    let pkcs11 = load_module(&module).unwrap();
    let pin = AuthPin::new("user-secret".into());
    init_token(&pkcs11, TOKEN, &pin);
    init_token(&pkcs11, NEXT_TOKEN, &pin);
    if kryoptic().is_some() {
        init_token(&pkcs11, NO_GCM_TOKEN, &pin);
    }
    (pkcs11, pin)
}

/// Whether `test_token` made `NO_GCM_TOKEN` (only kryoptic can deny a mechanism).
pub fn has_token_without_gcm() -> bool {
    kryoptic().is_some()
}

/// Initializes the first free token as `label` with a user PIN.
fn init_token(pkcs11: &Pkcs11, label: &str, pin: &AuthPin) {
    let so_pin = AuthPin::new("so-secret".into());
    let slot = pkcs11
        .get_all_slots()
        .unwrap()
        .into_iter()
        .find(|slot| !pkcs11.get_token_info(*slot).unwrap().token_initialized())
        .unwrap();
    pkcs11.init_token(slot, &so_pin, label).unwrap();
    let session = pkcs11.open_rw_session(slot).unwrap();
    session.login(UserType::So, Some(&so_pin)).unwrap();
    session.init_pin(pin).unwrap();
    session.logout().unwrap();
}

/// A participant map without `me`: what the coordinator relays to `me`.
pub fn others(map: &ParticipantMap, me: Participant) -> ParticipantMap {
    map.iter()
        .filter(|(k, _)| **k != me)
        .map(|(k, v)| (*k, v.clone()))
        .collect()
}

/// Signs `message` (BIP340, the enclave's algorithm) with `signers`, each with the keys given
/// for it, every preprocess and share through its serialized form; `None` if a step fails
/// (the shares do not combine).
pub fn frost_bip340_sign(
    signers: &std::collections::HashMap<
        modular_frost::Participant,
        modular_frost::ThresholdKeys<modular_frost::curve::Secp256k1>,
    >,
    message: &[u8; 32],
) -> Option<[u8; 64]> {
    use modular_frost::sign::{
        AlgorithmMachine, PreprocessMachine, SignMachine, SignatureMachine, Writable,
    };
    use rand_core::OsRng;
    use signer_enclave::bip340::{algorithm, bip340_signature};

    let mut machines = std::collections::HashMap::new();
    let mut preprocesses = std::collections::HashMap::new();
    for (i, keys) in signers {
        let (machine, preprocess) =
            AlgorithmMachine::new(algorithm(), keys.clone()).preprocess(&mut OsRng);
        let mut bytes = vec![];
        preprocess.write(&mut bytes).ok()?;
        preprocesses.insert(*i, machine.read_preprocess(&mut bytes.as_slice()).ok()?);
        machines.insert(*i, machine);
    }
    let mut completing = std::collections::HashMap::new();
    let mut shares = std::collections::HashMap::new();
    for (i, machine) in machines {
        let mut others = preprocesses.clone();
        others.remove(&i);
        let (machine, share) = machine.sign(others, message).ok()?;
        let mut bytes = vec![];
        share.write(&mut bytes).ok()?;
        shares.insert(i, machine.read_share(&mut bytes.as_slice()).ok()?);
        completing.insert(i, machine);
    }
    let (i, machine) = completing.into_iter().next()?;
    shares.remove(&i);
    let signature = machine.complete(shares).ok()?;
    Some(bip340_signature(&signature.R, &signature.s))
}
