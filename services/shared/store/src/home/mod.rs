//! Home directories: creating them, their internal area, and measuring
//! what is in them.
//!
//! A home holds the user's files and one internal directory, [`INTERNAL_DIR`],
//! that servers keep for themselves (partial uploads) and never show or let a
//! client path reach. Partial uploads are named `<size>-<key>.part`, so the
//! bytes they reserve can be recomputed from the disk alone.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

pub mod btrfs;

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

/// Holds the home's subvolume to `quota`, where the kernel enforces the
/// quota (the home is a btrfs subvolume); returns whether it does.
pub fn apply_quota(home: &Path, quota: Option<u64>) -> Result<bool> {
    if !btrfs::is_subvolume(home) {
        return Ok(false);
    }
    btrfs::set_limit(home, quota)?;
    Ok(true)
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
            // On btrfs with quotas on, a home is a subvolume of its own, so
            // the kernel can hold it to its quota.
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| Error::io("create home directory", parent, e))?;
            }
            match path.parent() {
                Some(parent) if btrfs::quotas_on(parent) => btrfs::create_subvolume(path)?,
                _ => std::fs::create_dir(path)
                    .map_err(|e| Error::io("create home directory", path, e))?,
            }
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
    /// What the user's entries take, in bytes, as [`charge`] counts them.
    pub bytes: u64,
    /// Number of the user's entries: files (one for all names of a file),
    /// directories, links and anything else.
    pub files: u64,
    /// Bytes reserved by partial uploads: the sum of their target sizes.
    pub reserved: u64,
    /// Number of partial uploads (each holds an entry of the file quota).
    pub reserved_files: u64,
}

/// The least a directory, a symbolic link or any other entry that is not a
/// regular file counts for: one block, whatever the file system says
/// (btrfs reports none for a directory, ext4 none for a short link), so an
/// empty tree costs the same everywhere and is never free.
pub const ENTRY_COST: u64 = 4096;

/// Space a regular file may hold beyond its size without being charged for
/// it: the last block and a file system's own preallocation. Anything
/// beyond (`fallocate --keep-size`) is charged.
const PREALLOCATION_SLACK: u64 = 64 * 1024;

/// What one entry counts against the quota: a regular file its size, or
/// the space the disk holds for it when that is larger by more than
/// [`PREALLOCATION_SLACK`] (space allocated past the end); a sparse file
/// counts its full size. A directory, link or other entry counts the
/// blocks it takes, and at least [`ENTRY_COST`].
pub fn charge(st: &rustix::fs::Stat) -> u64 {
    let size = u64::try_from(st.st_size).unwrap_or(0);
    let allocated = u64::try_from(st.st_blocks).unwrap_or(0).saturating_mul(512);
    if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile {
        size.max(allocated.saturating_sub(PREALLOCATION_SLACK))
    } else {
        allocated.max(ENTRY_COST)
    }
}

/// Measures `home`: the [`charge`] of every entry beneath it (a file with
/// several names once), leaving out the internal directory, whose partial
/// uploads count as reserved bytes instead. Blocking: call it from
/// `spawn_blocking`.
///
/// The walk goes from directory handle to directory handle (`openat`,
/// `fstatat`, never a path), so no depth is too deep, and holds one
/// directory open at a time. An entry that vanishes while it is walked is
/// skipped. A directory moved while the walk is inside it is noticed when
/// the walk climbs back (its parent is not the one it came from) and the
/// walk starts again, three times at most; a home that still cannot be
/// measured is an error, which every caller must treat as a home over its
/// quota, never as an empty one.
pub fn scan_home(home: &Path) -> Result<HomeUsage> {
    let mut last = None;
    for _ in 0..3 {
        match walk(home) {
            Ok(usage) => return Ok(usage),
            Err(Walk::Moved) => last = Some("directories were moved while it was measured"),
            Err(Walk::Failed(e)) => return Err(e),
        }
    }
    Err(Error::io(
        "measure the home",
        home,
        std::io::Error::other(last.unwrap_or("it changed while it was measured")),
    ))
}

/// Why a home could not be measured, in words a user may read (no host
/// paths): what the system said.
pub fn unmeasured_reason(e: &Error) -> String {
    match e {
        Error::Io { source, .. } => source.to_string(),
        other => other.to_string(),
    }
}

/// Measures `home` and records it as `name`'s usage; a home that cannot be
/// measured is recorded as such (its writes are refused until it can be)
/// and logged for the administrator. Returns what was found, if anything.
pub async fn measure_and_record(
    store: &crate::Store,
    name: &str,
    home: PathBuf,
) -> Option<HomeUsage> {
    let shown = home.display().to_string();
    match tokio::task::spawn_blocking(move || scan_home(&home)).await {
        Ok(Ok(usage)) => {
            if let Err(e) = store.set_usage(name, &usage).await {
                tracing::warn!(user = %name, error = %e, "cannot record home usage");
            }
            Some(usage)
        }
        Ok(Err(e)) => {
            tracing::error!(user = %name, home = %shown, error = %e, "cannot measure a home; its writes are refused until it can be (admin-cli db check)");
            if let Err(e) = store.set_usage_problem(name, &unmeasured_reason(&e)).await {
                tracing::warn!(user = %name, error = %e, "cannot record that a home cannot be measured");
            }
            None
        }
        Err(e) => {
            tracing::warn!(user = %name, error = %e, "home scan task failed");
            None
        }
    }
}

enum Walk {
    /// A directory was moved under the walk: start again.
    Moved,
    Failed(Error),
}

/// One directory of the walk: its identity, and its subdirectories still
/// to visit.
struct Level {
    id: (u64, u64),
    pending: Vec<std::ffi::OsString>,
}

fn walk(home: &Path) -> std::result::Result<HomeUsage, Walk> {
    use rustix::fs::{Mode, OFlags};

    let fail = |action: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |e: rustix::io::Errno| Walk::Failed(Error::io(action, path.clone(), e.into()))
    };
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut usage = HomeUsage::default();
    let mut linked = std::collections::HashSet::new();
    let mut cur = rustix::fs::open(home, flags, Mode::empty()).map_err(fail("open", home))?;
    let st = rustix::fs::fstat(&cur).map_err(fail("inspect", home))?;
    let pending = read_level(&cur, true, &mut usage, &mut linked).map_err(fail("read", home))?;
    let mut stack = vec![Level {
        id: (st.st_dev, st.st_ino),
        pending,
    }];
    while let Some(top) = stack.last_mut() {
        if let Some(name) = top.pending.pop() {
            let dir = match rustix::fs::openat(&cur, &name, flags, Mode::empty()) {
                Ok(dir) => dir,
                // Gone, or no longer a directory, since it was listed.
                Err(
                    rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR | rustix::io::Errno::LOOP,
                ) => {
                    continue;
                }
                Err(e) => return Err(fail("open a directory in", home)(e)),
            };
            let st = rustix::fs::fstat(&dir).map_err(fail("inspect a directory in", home))?;
            let pending = read_level(&dir, false, &mut usage, &mut linked)
                .map_err(fail("read a directory in", home))?;
            stack.push(Level {
                id: (st.st_dev, st.st_ino),
                pending,
            });
            cur = dir;
        } else {
            stack.pop();
            let Some(parent) = stack.last() else {
                break;
            };
            let up =
                rustix::fs::openat(&cur, "..", flags, Mode::empty()).map_err(|_| Walk::Moved)?;
            let st = rustix::fs::fstat(&up).map_err(fail("inspect a directory in", home))?;
            if (st.st_dev, st.st_ino) != parent.id {
                return Err(Walk::Moved);
            }
            cur = up;
        }
    }
    (usage.reserved, usage.reserved_files) = reserved_by_partials(home).map_err(Walk::Failed)?;
    Ok(usage)
}

/// Charges the entries of `dir` to `usage` and returns its subdirectories.
fn read_level(
    dir: &std::os::fd::OwnedFd,
    is_home: bool,
    usage: &mut HomeUsage,
    linked: &mut std::collections::HashSet<(u64, u64)>,
) -> rustix::io::Result<Vec<std::ffi::OsString>> {
    use std::os::unix::ffi::OsStrExt;

    let mut subdirs = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let bytes = name.to_bytes();
        if bytes == b"." || bytes == b".." || (is_home && bytes == INTERNAL_DIR.as_bytes()) {
            continue;
        }
        let st = match rustix::fs::statat(dir, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(rustix::io::Errno::NOENT) => continue,
            Err(e) => return Err(e),
        };
        let kind = rustix::fs::FileType::from_raw_mode(st.st_mode);
        if kind != rustix::fs::FileType::Directory
            && st.st_nlink > 1
            && !linked.insert((st.st_dev, st.st_ino))
        {
            continue;
        }
        usage.bytes = usage.bytes.saturating_add(charge(&st));
        usage.files += 1;
        if kind == rustix::fs::FileType::Directory {
            subdirs.push(std::ffi::OsStr::from_bytes(bytes).to_owned());
        }
    }
    Ok(subdirs)
}

/// The bytes the partial uploads of `home` hold (the sum of the target
/// sizes their names record), and how many there are.
fn reserved_by_partials(home: &Path) -> Result<(u64, u64)> {
    let partials = partial_dir(home);
    let (mut reserved, mut count) = (0u64, 0u64);
    match std::fs::read_dir(&partials) {
        Ok(entries) => {
            for entry in entries.flatten() {
                if let Some(size) = entry.file_name().to_str().and_then(partial_target_size) {
                    reserved = reserved.saturating_add(size);
                    count += 1;
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("read directory", &partials, e)),
    }
    Ok((reserved, count))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_counts_files_links_and_directories() -> Result<()> {
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
        let sub =
            rustix::fs::lstat(home.join("sub")).map_err(|e| Error::io("stat", &home, e.into()))?;
        assert_eq!(
            scan_home(&home)?,
            HomeUsage {
                bytes: 8 + charge(&sub) + ENTRY_COST,
                files: 4,
                reserved: 1000,
                reserved_files: 1,
            }
        );
        assert!(!ensure_home(&home)?.1, "second call finds it");
        Ok(())
    }

    /// A tree deeper than PATH_MAX is measured whole, each directory
    /// charged; a file with two names counts once.
    #[test]
    fn scan_measures_trees_deeper_than_path_max() -> Result<()> {
        use rustix::fs::{Mode, OFlags};
        let tmp = tempfile::tempdir().map_err(|e| Error::Internal(e.to_string()))?;
        let (home, _) = ensure_home(&tmp.path().join("homes/deep"))?;
        let name = "d".repeat(200);
        let depth = 60; // 60 x 201 bytes: three times PATH_MAX
        let mut dir = rustix::fs::open(&home, OFlags::DIRECTORY, Mode::empty())
            .map_err(|e| Error::io("open", &home, e.into()))?;
        for _ in 0..depth {
            rustix::fs::mkdirat(&dir, name.as_str(), Mode::from_raw_mode(0o700))
                .map_err(|e| Error::io("mkdir", &home, e.into()))?;
            dir = rustix::fs::openat(&dir, name.as_str(), OFlags::DIRECTORY, Mode::empty())
                .map_err(|e| Error::io("open", &home, e.into()))?;
        }
        let file = rustix::fs::openat(
            &dir,
            "big",
            OFlags::WRONLY | OFlags::CREATE,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| Error::io("create", &home, e.into()))?;
        rustix::fs::ftruncate(&file, 5_000_000).map_err(|e| Error::io("size", &home, e.into()))?;
        rustix::fs::linkat(&dir, "big", &dir, "again", rustix::fs::AtFlags::empty())
            .map_err(|e| Error::io("link", &home, e.into()))?;
        let usage = scan_home(&home)?;
        assert_eq!(usage.files, depth + 1, "two names of one file count once");
        assert!(
            usage.bytes >= 5_000_000 + depth * ENTRY_COST,
            "a sparse file counts its size and every directory at least a block: {usage:?}"
        );
        Ok(())
    }

    /// Space allocated past a file's end is charged.
    #[test]
    fn scan_charges_space_allocated_past_the_end() -> Result<()> {
        let tmp = tempfile::tempdir().map_err(|e| Error::Internal(e.to_string()))?;
        let (home, _) = ensure_home(&tmp.path().join("homes/alloc"))?;
        let file =
            std::fs::File::create(home.join("f")).map_err(|e| Error::io("create", &home, e))?;
        match rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::KEEP_SIZE, 0, 8 << 20) {
            Ok(()) => {}
            // Not every file system allocates ahead (tmpfs does, overlay may not).
            Err(rustix::io::Errno::OPNOTSUPP) => return Ok(()),
            Err(e) => return Err(Error::io("allocate", &home, e.into())),
        }
        let usage = scan_home(&home)?;
        assert!(usage.bytes >= (8 << 20) - PREALLOCATION_SLACK, "{usage:?}");
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
