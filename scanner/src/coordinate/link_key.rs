//! The processor's link key on disk: one line of 64 hex digits in a file only its owner can
//! read, made once by `scanner link-key generate` and never overwritten. A key file that group
//! or others can read is refused, as ssh refuses such a private key.

use std::{
    fs::OpenOptions,
    io::{Read, Write},
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use schema::link::identity::{LinkKeyFormatError, LinkPublicKey, LinkSecretKey, LINK_KEY_LEN};
use thiserror::Error;
use zeroize::Zeroizing;

/// Why a link key file could not be made or read. Each names the file.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum LinkKeyFileError {
    /// The file exists: a link key is never overwritten (the coordinator knows its public half).
    #[error("link key file {0} already exists; a link key is never overwritten")]
    Exists(PathBuf),
    /// Reading or writing failed.
    #[error("link key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Group or others may read or write the file.
    #[error(
        "link key file {path} has mode {mode:o}: it must be readable by its owner only (chmod 600)"
    )]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The content is not a key.
    #[error("link key file {path}: {source}")]
    Format {
        /// The file.
        path: PathBuf,
        /// Why.
        source: LinkKeyFormatError,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LinkKeyFileError + '_ {
    move |source| LinkKeyFileError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Makes a new link key at `path` (owner read and write only, never over an existing file) and
/// returns its public half.
///
/// # Errors
/// The file exists or cannot be written.
pub fn generate(path: &Path) -> Result<LinkPublicKey, LinkKeyFileError> {
    let key = LinkSecretKey::generate();
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::AlreadyExists => LinkKeyFileError::Exists(path.to_owned()),
            _ => io(path)(source),
        })?;
    // Sized up front: a String that grows moves its bytes and frees the old buffer unzeroed.
    let mut line = Zeroizing::new(String::with_capacity(2 * LINK_KEY_LEN + 1));
    line.push_str(&key.to_hex());
    line.push('\n');
    file.write_all(line.as_bytes()).map_err(io(path))?;
    file.sync_all().map_err(io(path))?;
    // The file's name is durable only once its directory is.
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    std::fs::File::open(directory)
        .and_then(|directory| directory.sync_all())
        .map_err(io(directory))?;
    Ok(key.public())
}

/// Reads the link key at `path`.
///
/// # Errors
/// The file cannot be read, others may read it, or it holds no key.
pub fn load(path: &Path) -> Result<LinkSecretKey, LinkKeyFileError> {
    // The permissions of the file opened, not of whatever the name pointed to a moment before.
    let file = std::fs::File::open(path).map_err(io(path))?;
    let mode = file.metadata().map_err(io(path))?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(LinkKeyFileError::Permissions {
            path: path.to_owned(),
            mode: mode & 0o777,
        });
    }
    // Sized up front, as in `generate`; a longer file is no key anyway.
    let mut text = Zeroizing::new(String::with_capacity(4 * LINK_KEY_LEN));
    file.take(4 * LINK_KEY_LEN as u64)
        .read_to_string(&mut text)
        .map_err(io(path))?;
    LinkSecretKey::from_hex(&text).map_err(|source| LinkKeyFileError::Format {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_is_owner_only_loads_back_and_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("link.key");
        let public = generate(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load(&path).unwrap().public(), public);
        assert!(matches!(generate(&path), Err(LinkKeyFileError::Exists(_))));
        assert_eq!(load(&path).unwrap().public(), public);
    }

    #[test]
    fn a_key_others_can_read_or_that_is_no_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("link.key");
        generate(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(
            load(&path),
            Err(LinkKeyFileError::Permissions { mode: 0o640, .. })
        ));
        std::fs::write(&path, "not a key\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(load(&path), Err(LinkKeyFileError::Format { .. })));
        assert!(matches!(
            load(&dir.path().join("missing")),
            Err(LinkKeyFileError::Io { .. })
        ));
    }
}
