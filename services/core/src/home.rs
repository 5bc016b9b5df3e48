//! Home directories: creating them, their internal area, and measuring
//! what is in them.
//!
//! A home holds the user's files and one internal directory, [`INTERNAL_DIR`],
//! that servers keep for themselves (partial uploads) and never show or let a
//! client path reach. Partial uploads are named `<size>-<key>.part`, so the
//! bytes they reserve can be recomputed from the disk alone.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The servers' own directory inside each home.
pub const INTERNAL_DIR: &str = ".wharf";

/// Where partial uploads of a home are kept.
pub fn partial_dir(home: &Path) -> PathBuf {
    home.join(INTERNAL_DIR).join("partial")
}

/// File name of a partial upload of a `size`-byte file; `key` names the target.
pub fn partial_name(size: u64, key: &str) -> String {
    format!("{size}-{key}.part")
}

/// The target size a partial upload's file name records.
pub fn partial_target_size(name: &str) -> Option<u64> {
    name.strip_suffix(".part")?.split_once('-')?.0.parse().ok()
}

/// Where a user's home goes unless the administrator says otherwise.
pub fn default_home(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join("homes").join(name)
}

/// Creates `path` (and its parents) if missing, private to its owner, and
/// returns its canonical absolute form. The boolean is true when this call
/// created the directory itself.
pub fn ensure_home(path: &Path) -> Result<(PathBuf, bool)> {
    use std::os::unix::fs::PermissionsExt;

    let created = match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => false,
        Ok(_) => {
            return Err(Error::io(
                "use as home directory",
                path,
                std::io::Error::other("it exists and is not a directory"),
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(path)
                .map_err(|e| Error::io("create home directory", path, e))?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| Error::io("set permissions on home directory", path, e))?;
            true
        }
        Err(e) => return Err(Error::io("inspect home directory", path, e)),
    };
    let canonical =
        std::fs::canonicalize(path).map_err(|e| Error::io("resolve home directory", path, e))?;
    Ok((canonical, created))
}

/// What a home holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HomeUsage {
    /// Total size of the user's regular files, in bytes.
    pub bytes: u64,
    /// Number of the user's regular files.
    pub files: u64,
    /// Bytes reserved by partial uploads: the sum of their target sizes.
    pub reserved: u64,
}

/// Walks `home` without following symbolic links and adds up its regular
/// files, leaving out the internal directory, whose partial uploads count as
/// reserved bytes instead. Blocking: call it from `spawn_blocking`.
pub fn scan_home(home: &Path) -> Result<HomeUsage> {
    let mut usage = HomeUsage::default();
    let internal = home.join(INTERNAL_DIR);
    let mut pending = vec![home.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| Error::io("read directory", &dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("read directory", &dir, e))?;
            if entry.path() == internal {
                continue;
            }
            let meta = entry
                .metadata()
                .map_err(|e| Error::io("inspect", entry.path(), e))?;
            if meta.is_dir() {
                pending.push(entry.path());
            } else if meta.is_file() {
                usage.bytes = usage.bytes.saturating_add(meta.len());
                usage.files += 1;
            }
        }
    }
    let partials = partial_dir(home);
    match std::fs::read_dir(&partials) {
        Ok(entries) => {
            for entry in entries.flatten() {
                if let Some(size) = entry.file_name().to_str().and_then(partial_target_size) {
                    usage.reserved = usage.reserved.saturating_add(size);
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("read directory", &partials, e)),
    }
    Ok(usage)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_counts_files_and_ignores_symlinks() -> Result<()> {
        let tmp = tempfile::tempdir().map_err(|e| Error::Internal(e.to_string()))?;
        let (home, created) = ensure_home(&tmp.path().join("homes/alice"))?;
        assert!(created);
        std::fs::create_dir(home.join("sub")).map_err(|e| Error::io("mkdir", &home, e))?;
        std::fs::write(home.join("a"), b"12345").map_err(|e| Error::io("write", &home, e))?;
        std::fs::write(home.join("sub/b"), b"123").map_err(|e| Error::io("write", &home, e))?;
        std::os::unix::fs::symlink("/etc", home.join("escape"))
            .map_err(|e| Error::io("symlink", &home, e))?;
        let partials = partial_dir(&home);
        std::fs::create_dir_all(&partials).map_err(|e| Error::io("mkdir", &home, e))?;
        std::fs::write(partials.join(partial_name(1000, "k")), b"12")
            .map_err(|e| Error::io("write", &home, e))?;
        assert_eq!(
            scan_home(&home)?,
            HomeUsage {
                bytes: 8,
                files: 2,
                reserved: 1000
            }
        );
        assert!(!ensure_home(&home)?.1, "second call finds it");
        Ok(())
    }
}

#[cfg(test)]
mod partial_tests {
    use super::*;

    #[test]
    fn partial_names_carry_their_target_size() {
        assert_eq!(partial_target_size(&partial_name(1234, "abcd")), Some(1234));
        assert_eq!(partial_target_size("junk"), None);
        assert_eq!(partial_target_size("x-y.part"), None);
    }
}
