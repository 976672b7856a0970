//! The PKCS#11 module the test tokens live in: SoftHSM2, or kryoptic when
//! `PROCESSOR_TEST_KRYOPTIC` names its module (`ops/test` runs the custody tests and one
//! enclave signing test with each; `ops/kryoptic-module` builds kryoptic from crates.io).

use std::{
    fs, io,
    path::{Path, PathBuf},
};

/// The environment variable naming kryoptic's module.
pub const KRYOPTIC_ENV: &str = "PROCESSOR_TEST_KRYOPTIC";
const SOFTHSM: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// A PKCS#11 module the tests can keep tokens in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TestModule {
    /// SoftHSM2 from Debian, its tokens in a directory.
    SoftHsm,
    /// kryoptic, its token in a SQLite file.
    Kryoptic(PathBuf),
}

impl TestModule {
    /// kryoptic when `PROCESSOR_TEST_KRYOPTIC` is set, SoftHSM2 otherwise.
    pub fn from_env() -> Self {
        match std::env::var_os(KRYOPTIC_ENV) {
            Some(path) if !path.is_empty() => TestModule::Kryoptic(PathBuf::from(path)),
            _ => TestModule::SoftHsm,
        }
    }

    /// The module's file.
    pub fn path(&self) -> PathBuf {
        match self {
            TestModule::SoftHsm => PathBuf::from(SOFTHSM),
            TestModule::Kryoptic(path) => path.clone(),
        }
    }

    /// Writes the module's configuration for tokens kept under `dir` (room for two), and
    /// returns the environment variable (and its value) every process using them needs.
    ///
    /// # Errors
    /// The directory or the file could not be written.
    pub fn configure(&self, dir: &Path) -> io::Result<(&'static str, PathBuf)> {
        match self {
            TestModule::SoftHsm => {
                let tokens = dir.join("tokens");
                fs::create_dir_all(&tokens)?;
                let conf = dir.join("softhsm2.conf");
                fs::write(
                    &conf,
                    format!(
                        "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                        tokens.display()
                    ),
                )?;
                Ok(("SOFTHSM2_CONF", conf))
            }
            TestModule::Kryoptic(_) => {
                // Two slots: the token, and room for a second one (moving to a new token).
                let conf = dir.join("kryoptic.conf");
                fs::write(
                    &conf,
                    format!(
                        "[[slots]]\nslot = 1\ndbtype = \"sqlite\"\ndbargs = \"{}\"\n\n\
                         [[slots]]\nslot = 2\ndbtype = \"sqlite\"\ndbargs = \"{}\"\n",
                        dir.join("token.sql").display(),
                        dir.join("next.sql").display()
                    ),
                )?;
                Ok(("KRYOPTIC_CONF", conf))
            }
        }
    }

    /// Throws away the token kept under `dir` (an HSM replaced or reset).
    ///
    /// # Errors
    /// The token's files could not be removed.
    pub fn destroy(&self, dir: &Path) -> io::Result<()> {
        match self {
            TestModule::SoftHsm => fs::remove_dir_all(dir.join("tokens")),
            TestModule::Kryoptic(_) => fs::remove_file(dir.join("token.sql")),
        }
    }
}
