//! The pin file, `known_servers`: one `HOST:PORT FINGERPRINT` a line.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use super::{TlsError, host_of};

/// How `addr` is written in the known-servers file.
pub(super) fn pin_key(addr: &str) -> String {
    addr.trim().to_ascii_lowercase()
}

/// The known-servers file's text; a missing file is empty.
pub(super) fn read_pins(file: &Path) -> Result<String, TlsError> {
    match std::fs::read_to_string(file) {
        Ok(t) => Ok(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(source) => Err(TlsError::KnownServers {
            action: "read",
            path: file.to_path_buf(),
            source,
        }),
    }
}

/// The pinned fingerprint of `key` and its line, if any.
pub(super) fn find_pin(file: &Path, key: &str) -> Result<Option<(String, usize)>, TlsError> {
    let text = read_pins(file)?;
    for (i, line) in text.lines().enumerate() {
        let mut words = line.split_whitespace();
        if let (Some(k), Some(fp)) = (words.next(), words.next())
            && !k.starts_with('#')
            && k == key
        {
            return Ok(Some((fp.to_ascii_uppercase(), i + 1)));
        }
    }
    Ok(None)
}

/// Another `HOST:PORT` of the same host as `addr` that `fp` is pinned for,
/// if any.
pub(super) fn same_certificate_pinned(
    file: &Path,
    addr: &str,
    fp: &str,
) -> Result<Option<String>, TlsError> {
    let key = pin_key(addr);
    let Ok(host) = host_of(&key) else {
        return Ok(None);
    };
    let text = read_pins(file)?;
    Ok(text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        let (k, pinned) = (words.next()?, words.next()?);
        let same = !k.starts_with('#')
            && k != key
            && host_of(k).is_ok_and(|h| h == host)
            && pinned.eq_ignore_ascii_case(fp);
        same.then(|| k.to_owned())
    }))
}

pub(super) fn add_pin(file: &Path, key: &str, fp: &str) -> Result<(), TlsError> {
    let failed = |source| TlsError::KnownServers {
        action: "add to",
        path: file.to_path_buf(),
        source,
    };
    if let Some(dir) = file.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(failed)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(file)
        .map_err(failed)?;
    writeln!(f, "{key} {fp}").map_err(failed)
}
