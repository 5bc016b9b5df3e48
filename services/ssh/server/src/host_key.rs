//! The server's host key: an Ed25519 key made on first start in
//! `DATA_DIR/ssh/` (0600, as the TLS key), or the file `--ssh-host-key`
//! names; its SHA256 fingerprint as `ssh-keygen -lf` prints it.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use russh::keys::PrivateKey;
use russh::keys::ssh_key::LineEnding;
use russh::keys::ssh_key::private::Ed25519Keypair;

/// The made key's file, beneath the data directory.
pub const MADE_KEY: &str = "ssh/ssh_host_ed25519_key";

/// Why the host key cannot be made, read or used.
#[derive(Debug, thiserror::Error)]
pub enum HostKeyError {
    /// The key file cannot be read or is not a private key.
    #[error(
        "cannot use the SSH host key {path}: {why}; give an OpenSSH private key without a passphrase (ssh-keygen -t ed25519 -N '' -f FILE), or leave --ssh-host-key out to have one made"
    )]
    Unusable {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The key cannot be written.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The made key's path in `data_dir`.
pub fn made_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join(MADE_KEY)
}

/// The host key: the one in `given`, else the one made in `data_dir` (made
/// now if missing).
pub fn load(data_dir: &Path, given: Option<&Path>) -> Result<PrivateKey, HostKeyError> {
    let path = match given {
        Some(path) => path.to_path_buf(),
        None => {
            let path = made_key_path(data_dir);
            if !path.exists() {
                make(&path)?;
            }
            path
        }
    };
    let unusable = |why: String| HostKeyError::Unusable {
        path: path.clone(),
        why,
    };
    let text = std::fs::read_to_string(&path).map_err(|e| unusable(e.to_string()))?;
    let key = PrivateKey::from_openssh(&text).map_err(|e| unusable(e.to_string()))?;
    if key.is_encrypted() {
        return Err(unusable("it is protected by a passphrase".into()));
    }
    Ok(key)
}

/// `256 SHA256:... wharf-sshd (ED25519)`: the key's fingerprint as
/// `ssh-keygen -lf` prints it, and `admin-cli ssh fingerprint` too.
pub fn fingerprint_line(key: &PrivateKey) -> String {
    wharf_store::keys::fingerprint_line(key.public_key())
}

/// Makes a new Ed25519 key at `path`, readable by this user only, in a
/// folder of its own (0700); a key another process made first is kept.
fn make(path: &Path) -> Result<(), HostKeyError> {
    let io = |action: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| HostKeyError::Io {
            action,
            path,
            source,
        }
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io("create", dir))?;
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| HostKeyError::Io {
        action: "get randomness for",
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let mut key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
    key.set_comment("wharf-sshd");
    let text = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| HostKeyError::Io {
            action: "encode",
            path: path.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        })?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io("create", &tmp))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io("write", &tmp))?;
    // Another process may have made one meanwhile: the first stays.
    match std::fs::hard_link(&tmp, path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(io("put in place", path)(e));
        }
    }
    let _ = std::fs::remove_file(&tmp);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_key_is_made_once_private_and_read_back() {
        let dir = tempfile::tempdir().expect("dir");
        let key = load(dir.path(), None).expect("made");
        let file = made_key_path(dir.path());
        let mode = std::fs::metadata(&file)
            .expect("key file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = load(dir.path(), None).expect("read");
        assert_eq!(key.public_key(), again.public_key());
        let line = fingerprint_line(&key);
        assert!(
            line.starts_with("256 SHA256:") && line.ends_with(" (ED25519)"),
            "{line}"
        );
    }

    #[test]
    fn a_given_file_that_is_no_key_is_refused_saying_what_to_give() {
        let dir = tempfile::tempdir().expect("dir");
        let bad = dir.path().join("bad");
        std::fs::write(&bad, "not a key").expect("write");
        let err = load(dir.path(), Some(&bad))
            .expect_err("refused")
            .to_string();
        assert!(err.contains("ssh-keygen -t ed25519"), "{err}");
    }
}
