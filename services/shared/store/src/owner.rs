//! Who owns a user's files on disk.
//!
//! Every Wharf user has a kernel identity of their own: uid and gid
//! [`UID_BASE`] + the user's database id. Servers started as root hand the
//! home and everything they write into it to that identity (directories
//! 0700, files 0600), and the exec service runs the user's commands as it,
//! so one user's commands can never read, write or signal another's.
//! Started as anyone else, servers cannot give files away: everything stays
//! the server's own, and the exec sandbox (not the uid) keeps users apart.
//!
//! The base is fixed rather than a flag, so that `admin-cli`, separate
//! daemons and containers can never disagree about whose files are whose.
//! It lies above the ranges Linux distributions give to accounts (below
//! 60,000), to systemd's dynamic users (61,184 to 65,519) and to containers
//! (systemd-nspawn's 524,288 to 1,879,048,191), and below 2^31, so tools
//! that hold a uid in a signed 32-bit integer still show it right.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{AtFlags, CWD, Dir, FileType, Mode, OFlags, chownat, fstat, openat};
use rustix::process::{Gid, Uid, geteuid};

use crate::error::{Error, Result};
use crate::home::INTERNAL_DIR;

/// The first uid (and gid) of Wharf users: user N runs as `UID_BASE + N`.
pub const UID_BASE: u32 = 1_900_000_000;

/// The highest database id that still maps below 2^31.
const MAX_ID: i64 = (i32::MAX as u32 - UID_BASE) as i64;

/// A kernel identity: uid and primary gid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    /// User id.
    pub uid: u32,
    /// Group id (the same number: each user has a group of their own).
    pub gid: u32,
}

impl Owner {
    /// The identity of the Wharf user with database id `user_id`; `None`
    /// for an id that does not map into the range.
    pub fn of_user(user_id: i64) -> Option<Owner> {
        if !(1..=MAX_ID).contains(&user_id) {
            return None;
        }
        let uid = UID_BASE + u32::try_from(user_id).ok()?;
        Some(Owner { uid, gid: uid })
    }

    /// The owner this process gives a user's files: the user's identity
    /// when running as root (only root can give files away), else `None`
    /// (files stay the process's own).
    pub fn for_files(user_id: i64) -> Option<Owner> {
        if geteuid().is_root() {
            Owner::of_user(user_id)
        } else {
            None
        }
    }

    fn ids(self) -> (Uid, Gid) {
        (Uid::from_raw(self.uid), Gid::from_raw(self.gid))
    }

    /// Gives the file or directory `name` in `dir` to this owner, without
    /// following a link.
    pub fn give_at<Fd: AsFd>(self, dir: Fd, name: &str) -> std::io::Result<()> {
        let (uid, gid) = self.ids();
        chownat(dir, name, Some(uid), Some(gid), AtFlags::SYMLINK_NOFOLLOW)?;
        Ok(())
    }

    /// Gives the open file `fd` to this owner.
    pub fn give<Fd: AsFd>(self, fd: Fd) -> std::io::Result<()> {
        let (uid, gid) = self.ids();
        rustix::fs::fchown(fd, Some(uid), Some(gid))?;
        Ok(())
    }
}

fn open_at<Fd: AsFd>(dir: Fd, name: &str, flags: OFlags) -> std::io::Result<OwnedFd> {
    let flags = flags | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
    Ok(openat(dir, name, flags | OFlags::NOCTTY, Mode::empty())?)
}

/// Gives `fd` to `owner` (owner-only permissions) if `me` owns it.
fn adopt(fd: &OwnedFd, me: Uid, owner: Owner) -> std::io::Result<()> {
    let st = fstat(fd)?;
    if st.st_uid == me.as_raw() {
        owner.give(fd)?;
        rustix::fs::fchmod(fd, Mode::from_raw_mode(st.st_mode & 0o700))?;
    }
    Ok(())
}

/// Hands `home` over to `owner`: the home itself (mode 0700) and every
/// directory and file beneath it that this process owns (written before the
/// owner was known), except the servers' internal directory, which stays
/// theirs. Entries that belong to someone else are left alone.
///
/// The walk goes from handle to handle, opening each entry with
/// `O_NOFOLLOW` and changing it through its handle, so a user who swaps a
/// directory for a link while it runs cannot make root change anything
/// outside the home. Blocking: call it from `spawn_blocking`.
pub fn hand_over(home: &Path, owner: Owner) -> Result<()> {
    let me = geteuid();
    let fail = |what: &'static str, e: std::io::Error| Error::io(what, home, e);
    let root = open_at(CWD, &home.to_string_lossy(), OFlags::DIRECTORY)
        .map_err(|e| fail("open the home", e))?;
    owner.give(&root).map_err(|e| fail("hand over", e))?;
    rustix::fs::fchmod(&root, Mode::from_raw_mode(0o700)).map_err(|e| fail("chmod", e.into()))?;
    let mut pending = vec![(root, true)];
    while let Some((dir, is_home)) = pending.pop() {
        let entries = Dir::read_from(&dir).map_err(|e| fail("read a directory of", e.into()))?;
        for entry in entries {
            let entry = entry.map_err(|e| fail("read a directory of", e.into()))?;
            let Ok(name) = entry.file_name().to_str() else {
                continue;
            };
            if name == "." || name == ".." || (is_home && name == INTERNAL_DIR) {
                continue;
            }
            let Ok(st) = rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) else {
                continue;
            };
            let flags = match FileType::from_raw_mode(st.st_mode) {
                FileType::Directory => OFlags::DIRECTORY,
                FileType::RegularFile => OFlags::empty(),
                _ => continue,
            };
            // Gone or swapped since the look: skip it.
            let Ok(fd) = open_at(&dir, name, flags) else {
                continue;
            };
            adopt(&fd, me, owner).map_err(|e| fail("hand over an entry of", e))?;
            if flags == OFlags::DIRECTORY {
                pending.push((fd, false));
            }
        }
    }
    Ok(())
}

/// Hands `home` over to `owner` (see [`hand_over`]) unless it is the
/// owner's and private already: the walk happens once, the first time.
pub fn ensure_owned(home: &Path, owner: Owner) -> Result<()> {
    use std::os::unix::fs::MetadataExt;

    let meta = std::fs::metadata(home).map_err(|e| Error::io("inspect the home", home, e))?;
    if meta.uid() != owner.uid || meta.mode() & 0o077 != 0 {
        hand_over(home, owner)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_map_into_the_range() {
        assert_eq!(
            Owner::of_user(1),
            Some(Owner {
                uid: 1_900_000_001,
                gid: 1_900_000_001
            })
        );
        assert_eq!(Owner::of_user(0), None);
        assert_eq!(Owner::of_user(-3), None);
        assert!(Owner::of_user(MAX_ID).is_some_and(|o| o.uid == i32::MAX as u32));
        assert_eq!(Owner::of_user(MAX_ID + 1), None);
    }

    #[test]
    fn hand_over_gives_the_home_and_never_follows_a_link() -> std::io::Result<()> {
        use std::os::unix::fs::MetadataExt;
        if !geteuid().is_root() {
            eprintln!("skipped: giving files away needs root");
            return Ok(());
        }
        let tmp = tempfile::tempdir()?;
        let home = tmp.path().join("alice");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(home.join("sub"))?;
        std::fs::create_dir_all(home.join(INTERNAL_DIR))?;
        std::fs::write(home.join("sub/f"), b"x")?;
        std::fs::write(&outside, b"root's")?;
        std::os::unix::fs::symlink(&outside, home.join("link"))?;
        std::os::unix::fs::symlink(tmp.path(), home.join("sub/dirlink"))?;
        let owner = Owner {
            uid: UID_BASE + 7,
            gid: UID_BASE + 7,
        };
        hand_over(&home, owner).map_err(std::io::Error::other)?;
        for p in ["", "sub", "sub/f"] {
            let meta = std::fs::metadata(home.join(p))?;
            assert_eq!((p, meta.uid(), meta.gid()), (p, owner.uid, owner.gid));
            assert_eq!(meta.mode() & 0o077, 0, "{p}: owner only");
        }
        assert_eq!(std::fs::metadata(&outside)?.uid(), 0, "a link's target");
        assert_eq!(std::fs::metadata(tmp.path())?.uid(), 0, "a link's target");
        assert_eq!(std::fs::metadata(home.join(INTERNAL_DIR))?.uid(), 0);
        Ok(())
    }
}
