//! Handling of the enclave's own secrets outside the HSM: the PIN, read from a file only its
//! owner can read (never from argv, never logged), and the process made undumpable so that no
//! core file or debugger of the same user sees unsealed shares.

use std::{
    io,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use cryptoki::types::AuthPin;
use thiserror::Error;
use zeroize::Zeroizing;

/// The PIN file cannot be used.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PinError {
    /// The file cannot be read.
    #[error("cannot read PIN file {path} (pkcs11.pin_file): {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Others than the owner may read or write the file.
    #[error("PIN file {path} has mode {mode:o}: make it readable by its owner only (chmod 600)")]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file holds no PIN, or one that is not UTF-8.
    #[error("PIN file {0} holds no valid PIN")]
    Invalid(PathBuf),
}

/// Reads the PIN from `path`: the whole file less one trailing newline. Every buffer that held
/// the PIN is zeroized.
///
/// # Errors
/// The file is missing, readable by others, empty or not UTF-8.
pub fn read_pin(path: &Path) -> Result<AuthPin, PinError> {
    let read_error = |source| PinError::Read {
        path: path.to_owned(),
        source,
    };
    let mode = std::fs::metadata(path)
        .map_err(read_error)?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(PinError::Permissions {
            path: path.to_owned(),
            mode: mode & 0o777,
        });
    }
    let contents = Zeroizing::new(std::fs::read(path).map_err(read_error)?);
    let mut pin: &[u8] = &contents;
    if let Some(rest) = pin.strip_suffix(b"\n") {
        pin = rest.strip_suffix(b"\r").unwrap_or(rest);
    }
    if pin.is_empty() {
        return Err(PinError::Invalid(path.to_owned()));
    }
    // Copied into a buffer of exactly its size, so that turning it into the secret box moves
    // it without leaving an unzeroized copy behind.
    let mut exact = Vec::with_capacity(pin.len());
    exact.extend_from_slice(pin);
    let pin = String::from_utf8(exact).map_err(|error| {
        drop(Zeroizing::new(error.into_bytes()));
        PinError::Invalid(path.to_owned())
    })?;
    Ok(AuthPin::new(pin.into_boxed_str()))
}

/// Makes the process produce no core file and refuse ptrace from processes of the same user.
/// Called first thing at start.
///
/// # Errors
/// The kernel refused either setting.
#[allow(unsafe_code)]
pub fn disable_core_dumps() -> io::Result<()> {
    let none = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit reads the rlimit struct we pass by reference and nothing else.
    if unsafe { libc::setrlimit(libc::RLIMIT_CORE, &none) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: prctl(PR_SET_DUMPABLE, 0) takes plain integers and touches no memory of ours.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use cryptoki::types::AuthPin;
    use secrecy::ExposeSecret;

    use super::*;

    fn pin_file(contents: &[u8], mode: u32) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pin");
        std::fs::write(&path, contents).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        (dir, path)
    }

    fn exposed(pin: &AuthPin) -> String {
        pin.expose_secret().to_owned()
    }

    #[test]
    fn a_private_pin_file_is_read_without_its_newline() {
        let (_dir, path) = pin_file(b"1234\n", 0o600);
        assert_eq!(exposed(&read_pin(&path).unwrap()), "1234");
        let (_dir, path) = pin_file(b"abcd\r\n", 0o400);
        assert_eq!(exposed(&read_pin(&path).unwrap()), "abcd");
    }

    #[test]
    fn unsafe_or_unusable_pin_files_are_refused_by_name() {
        let (_dir, path) = pin_file(b"1234\n", 0o644);
        let error = read_pin(&path).unwrap_err();
        assert!(matches!(error, PinError::Permissions { mode: 0o644, .. }));
        assert!(error.to_string().contains("chmod 600"));
        let (_dir, path) = pin_file(b"\n", 0o600);
        assert!(matches!(read_pin(&path), Err(PinError::Invalid(_))));
        let (_dir, path) = pin_file(&[0xff, 0xfe], 0o600);
        assert!(matches!(read_pin(&path), Err(PinError::Invalid(_))));
        let missing = Path::new("/nonexistent/enclave.pin");
        assert!(read_pin(missing)
            .unwrap_err()
            .to_string()
            .contains("/nonexistent/enclave.pin"));
    }

    #[test]
    fn core_dumps_are_disabled() {
        disable_core_dumps().unwrap();
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
        let core = limits
            .lines()
            .find(|line| line.starts_with("Max core file size"))
            .unwrap();
        let fields: Vec<&str> = core.split_whitespace().collect();
        assert_eq!(&fields[4..6], &["0", "0"], "{core}");
    }
}
