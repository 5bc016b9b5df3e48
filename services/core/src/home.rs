//! Home directories: creating them, and measuring what is in them.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

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
    /// Total size of regular files, in bytes.
    pub bytes: u64,
    /// Number of regular files.
    pub files: u64,
}

/// Walks `home` without following symbolic links and adds up its regular
/// files. Blocking: call it from `spawn_blocking` in async code.
pub fn scan_home(home: &Path) -> Result<HomeUsage> {
    let mut usage = HomeUsage::default();
    let mut pending = vec![home.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| Error::io("read directory", &dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("read directory", &dir, e))?;
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
        assert_eq!(scan_home(&home)?, HomeUsage { bytes: 8, files: 2 });
        assert!(!ensure_home(&home)?.1, "second call finds it");
        Ok(())
    }
}
