//! The kernel's quota, where the homes are on btrfs: each home a subvolume
//! whose qgroup is limited to the user's quota, so a write past it fails
//! with `EDQUOT` in whatever wrote it (a standard FTP upload, a command, a
//! program the administrator runs as the user), not only where Wharf looks.
//!
//! Quotas must be on for the file system (`btrfs quota enable MOUNTPOINT`,
//! once, by the administrator); Wharf then makes each new home a
//! subvolume, sets, changes and lifts its limit, and `admin-cli db check
//! --fix` turns existing homes into subvolumes. Everything goes through
//! Debian's `btrfs` command (btrfs-progs), as root: the limits are the
//! administrator's, and the ioctls would need `unsafe` here for no gain.
//!
//! The limit counts what the subvolume references on disk (data and its
//! own metadata), so a home holds a little less than its quota in files.
//! Wharf's own reservations stay in front of it for clear refusals and the
//! atomic commit of uploads; on such a home a replacement needs room for
//! the new copy beside the old one until it takes its place (the kernel
//! counts both), so no upload is ever cut by the kernel mid-way.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, Result};

/// `statfs`'s `f_type` of btrfs.
const BTRFS_SUPER_MAGIC: i64 = 0x9123_683e;
/// The inode number of every subvolume's root directory.
const SUBVOLUME_ROOT_INO: u64 = 256;

/// True when `path` is on btrfs.
// `f_type` is an i64 here, an i32 on 32-bit targets.
#[allow(clippy::useless_conversion)]
pub fn on_btrfs(path: &Path) -> bool {
    rustix::fs::statfs(path).is_ok_and(|st| i64::from(st.f_type) == BTRFS_SUPER_MAGIC)
}

/// True when `path` is the root of a btrfs subvolume.
pub fn is_subvolume(path: &Path) -> bool {
    on_btrfs(path)
        && rustix::fs::lstat(path).is_ok_and(|st| {
            st.st_ino == SUBVOLUME_ROOT_INO
                && rustix::fs::FileType::from_raw_mode(st.st_mode)
                    == rustix::fs::FileType::Directory
        })
}

/// What the kernel holds for a home's subvolume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Qgroup {
    /// Bytes the subvolume references (its files and metadata).
    pub referenced: u64,
    /// The limit on them, if any.
    pub limit: Option<u64>,
}

/// Runs `btrfs ARGS`, with the words of its error when it fails.
fn btrfs(action: &'static str, path: &Path, args: &[&std::ffi::OsStr]) -> Result<String> {
    let out = Command::new("btrfs").args(args).output().map_err(|e| {
        let e = if e.kind() == std::io::ErrorKind::NotFound {
            std::io::Error::other(
                "the btrfs command is not installed (Debian's btrfs-progs package)",
            )
        } else {
            e
        };
        Error::io(action, path, e)
    })?;
    if !out.status.success() {
        let said = String::from_utf8_lossy(&out.stderr);
        let said = said.lines().next().unwrap_or("").trim().to_owned();
        return Err(Error::io(
            action,
            path,
            std::io::Error::other(if said.is_empty() {
                format!("btrfs ended with {}", out.status)
            } else {
                said
            }),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The qgroup of the subvolume at `path`; an error when quotas are off on
/// its file system (or it is not a subvolume, or this is not root).
pub fn qgroup(path: &Path) -> Result<Qgroup> {
    let out = btrfs(
        "read the quota group of",
        path,
        &[
            "qgroup".as_ref(),
            "show".as_ref(),
            "-rf".as_ref(),
            "--raw".as_ref(),
            path.as_os_str(),
        ],
    )?;
    out.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let id = fields.next()?;
            id.starts_with("0/").then_some(())?;
            let referenced = fields.next()?.parse().ok()?;
            let _exclusive = fields.next()?;
            let limit = match fields.next()? {
                "none" => None,
                n => Some(n.parse().ok()?),
            };
            Some(Qgroup { referenced, limit })
        })
        .next()
        .ok_or_else(|| {
            Error::io(
                "read the quota group of",
                path,
                std::io::Error::other("btrfs listed no quota group for it"),
            )
        })
}

/// True when the file system under `dir` is btrfs with quotas on, so new
/// homes beneath it can be kernel-enforced.
pub fn quotas_on(dir: &Path) -> bool {
    on_btrfs(dir) && subvolume_of(dir).is_some_and(|sv| qgroup(&sv).is_ok())
}

/// The subvolume `path` is in (the closest ancestor that is one's root).
fn subvolume_of(path: &Path) -> Option<PathBuf> {
    let mut at = std::fs::canonicalize(path).ok()?;
    loop {
        if is_subvolume(&at) {
            return Some(at);
        }
        if !at.pop() {
            return None;
        }
    }
}

/// Makes `path` a new subvolume (its parent must exist).
pub fn create_subvolume(path: &Path) -> Result<()> {
    btrfs(
        "create the subvolume",
        path,
        &["subvolume".as_ref(), "create".as_ref(), path.as_os_str()],
    )?;
    Ok(())
}

/// Deletes the subvolume `path` and everything in it.
pub fn delete_subvolume(path: &Path) -> Result<()> {
    btrfs(
        "delete the subvolume",
        path,
        &["subvolume".as_ref(), "delete".as_ref(), path.as_os_str()],
    )?;
    Ok(())
}

/// Sets the limit of the subvolume `path` to `quota` (`None`: none).
pub fn set_limit(path: &Path, quota: Option<u64>) -> Result<()> {
    let limit = quota.map_or_else(|| "none".to_owned(), |q| q.to_string());
    btrfs(
        "limit the quota group of",
        path,
        &[
            "qgroup".as_ref(),
            "limit".as_ref(),
            limit.as_ref(),
            path.as_os_str(),
        ],
    )?;
    Ok(())
}

/// Turns the existing directory `home` into a subvolume of the same name,
/// its contents moved in with reflinks (no data copied), owners, modes,
/// times and links kept: `cp -a --reflink=always` into a new subvolume
/// beside it, then the two swapped and the old directory removed.
pub fn convert_to_subvolume(home: &Path) -> Result<()> {
    let name = home.file_name().unwrap_or_default().to_string_lossy();
    let fresh = home.with_file_name(format!(".{name}.wharf-subvolume"));
    let old = home.with_file_name(format!(".{name}.wharf-old"));
    create_subvolume(&fresh)?;
    let copied = Command::new("cp")
        .arg("-a")
        .arg("--reflink=always")
        .arg("-T")
        .arg(home)
        .arg(&fresh)
        .output()
        .map_err(|e| Error::io("copy into a subvolume", home, e))?;
    if !copied.status.success() {
        let _ = delete_subvolume(&fresh);
        let said = String::from_utf8_lossy(&copied.stderr).trim().to_owned();
        return Err(Error::io(
            "copy into a subvolume",
            home,
            std::io::Error::other(said),
        ));
    }
    std::fs::rename(home, &old).map_err(|e| Error::io("move aside", home, e))?;
    if let Err(e) = std::fs::rename(&fresh, home) {
        let _ = std::fs::rename(&old, home);
        return Err(Error::io("put the subvolume in place of", home, e));
    }
    std::fs::remove_dir_all(&old).map_err(|e| Error::io("remove the old copy", &old, e))
}

/// How the quota of the homes beneath a folder is enforced, as a daemon's
/// banner and `--print-config` say it.
pub fn describe(homes: &Path) -> String {
    if quotas_on(homes) {
        format!(
            "exact, enforced by the kernel (btrfs qgroups on {})",
            homes.display()
        )
    } else if on_btrfs(homes) {
        format!(
            "measured (the homes are on btrfs, but its quota groups cannot be used from here: quotas are off, or this is not root; `btrfs quota enable` on its mount point and `admin-cli db check --fix`, as root, make it exact, enforced by the kernel); a command can pass it by at most {}",
            OVERSHOOT
        )
    } else {
        format!("measured by Wharf; a command can pass it by at most {OVERSHOOT}")
    }
}

/// The worst a command could pass its quota by where the kernel does not
/// enforce it: what it writes between two readings of its write meter
/// (2 ms apart when the home is nearly full) and during one measurement of
/// the home; the most seen on a 2-core machine with commands racing to
/// write is 2.2 MiB (README: "Quotas").
pub const OVERSHOOT: &str =
    "what it writes in a few milliseconds (2.2 MiB at most seen here, in files of 1 MiB)";
