//! Virtual paths and the jail that maps them into a home.
//!
//! A client path is virtual: `/` is the user's home, absolute paths start
//! there, relative ones at the current directory. [`VPath::resolve`] is pure
//! and lexical: it refuses NUL bytes, backslashes, control characters,
//! over-long names and paths, the servers' internal directory, and any `..`
//! that would climb above the home. [`Jail`] then checks the real file
//! system: a symlink whose target lies outside the home is refused.
//!
//! Checking a path and then using it leaves a window in which the owner of
//! the home (through remote exec, say) could swap a directory for a link.
//! So every operation that reads, writes, creates or removes goes through a
//! directory opened with `openat2(RESOLVE_BENEATH)` from the home
//! ([`Jail::open_beneath`], [`Jail::parent_of`]) and the `*at` system calls:
//! the kernel refuses, at the moment of use, any resolution that leaves the
//! home.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use wharf_proto::ErrorCode;

use rustix::fs::{Mode, OFlags, ResolveFlags};

use wharf_store::home::INTERNAL_DIR;
use wharf_store::owner::Owner;
use wharf_store::owner::ensure_owned;

use crate::error::FtpError;

/// Longest path a client may send, in bytes.
pub const MAX_PATH_BYTES: usize = 4096;

/// Longest name of one path component, in bytes.
pub const MAX_NAME_BYTES: usize = 255;

/// A normalised path inside a home: a list of plain names.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VPath(Vec<String>);

/// What to do with a `..` at the top of the home.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AboveRoot {
    /// Refuse it (every command but `cd`).
    Refuse,
    /// Stay at `/`, as a shell's `cd ..` does.
    Clamp,
}

fn forbidden(msg: impl Into<String>) -> FtpError {
    FtpError::refuse(ErrorCode::ForbiddenPath, msg.into())
}

impl VPath {
    /// The home itself.
    pub fn root() -> VPath {
        VPath(Vec::new())
    }

    /// True for the home itself.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The path relative to the home (`.` for the home itself).
    pub fn relative(&self) -> PathBuf {
        if self.0.is_empty() {
            PathBuf::from(".")
        } else {
            self.0.iter().collect()
        }
    }

    /// Resolves `input` against `self` (the current directory).
    pub fn resolve(&self, input: &str, above_root: AboveRoot) -> Result<VPath, FtpError> {
        if input.len() > MAX_PATH_BYTES {
            return Err(forbidden(format!(
                "path is longer than {MAX_PATH_BYTES} bytes"
            )));
        }
        if input.contains('\0') {
            return Err(forbidden("path contains a NUL byte"));
        }
        if input.contains('\\') {
            return Err(forbidden(
                "path contains a backslash; separate directories with '/'",
            ));
        }
        if input.chars().any(char::is_control) {
            return Err(forbidden("path contains a control character"));
        }
        let mut parts = if input.starts_with('/') {
            Vec::new()
        } else {
            self.0.clone()
        };
        for name in input.split('/') {
            match name {
                "" | "." => {}
                ".." => {
                    if parts.pop().is_none() && above_root == AboveRoot::Refuse {
                        return Err(forbidden(format!(
                            "{input:?} leads above your home directory"
                        )));
                    }
                }
                _ if name.len() > MAX_NAME_BYTES => {
                    return Err(forbidden(format!(
                        "a name in the path is longer than {MAX_NAME_BYTES} bytes"
                    )));
                }
                INTERNAL_DIR => {
                    return Err(forbidden(format!(
                        "{INTERNAL_DIR:?} is reserved for the server"
                    )));
                }
                _ => parts.push(name.to_owned()),
            }
        }
        Ok(VPath(parts))
    }

    /// The parent directory (the root's parent is the root).
    pub fn parent(&self) -> VPath {
        let mut parts = self.0.clone();
        parts.pop();
        VPath(parts)
    }

    /// The last name, if not the root.
    pub fn file_name(&self) -> Option<&str> {
        self.0.last().map(String::as_str)
    }
}

impl std::fmt::Display for VPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            return f.write_str("/");
        }
        for part in &self.0 {
            write!(f, "/{part}")?;
        }
        Ok(())
    }
}

/// A user's home, and the checks that keep every real path inside it.
/// Its methods touch the file system: call them from blocking threads.
#[derive(Debug, Clone)]
pub struct Jail {
    home: PathBuf,
    /// The home, opened once: every operation resolves beneath it.
    dir: Arc<OwnedFd>,
    /// Who gets what the server creates here (a server run as root gives
    /// the user's files to the user's own uid); `None`: the server keeps it.
    owner: Option<Owner>,
    /// The home is a btrfs subvolume: the kernel counts every byte in it.
    kernel_quota: bool,
}

impl Jail {
    /// What an upload that would replace a file of `size` bytes (if there
    /// is one) may count on: that file's bytes and entry, which it frees
    /// when it takes its place; on a home whose quota the kernel enforces,
    /// nothing, as the kernel counts both copies until then.
    pub fn replace_credit(&self, size: Option<u64>) -> Option<u64> {
        size.filter(|_| !self.kernel_quota)
    }

    /// A jail rooted at `home`, which must exist.
    pub fn new(home: &Path) -> std::io::Result<Jail> {
        let home = std::fs::canonicalize(home)?;
        let dir = rustix::fs::open(
            &home,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let kernel_quota = wharf_store::home::btrfs::is_subvolume(&home);
        Ok(Jail {
            home,
            dir: Arc::new(dir),
            owner: None,
            kernel_quota,
        })
    }

    /// The jail of a user's home: when `owner` is given (a server run as
    /// root), the home is handed over to it first if it is not yet its,
    /// and what the server creates here is given to it. Blocking.
    pub fn for_user(home: &Path, owner: Option<Owner>) -> std::io::Result<Jail> {
        let mut jail = Jail::new(home)?;
        if let Some(owner) = owner {
            ensure_owned(&jail.home, owner).map_err(std::io::Error::other)?;
        }
        jail.owner = owner;
        Ok(jail)
    }

    /// Gives `name` in `dir`, just created by the server, to the user.
    pub fn adopt_at(&self, dir: &OwnedFd, name: &str) -> std::io::Result<()> {
        match self.owner {
            Some(owner) => owner.give_at(dir, name),
            None => Ok(()),
        }
    }

    /// Gives the file `fd`, just created by the server, to the user.
    pub fn adopt(&self, fd: &OwnedFd) -> std::io::Result<()> {
        match self.owner {
            Some(owner) => owner.give(fd),
            None => Ok(()),
        }
    }

    /// The canonical home directory.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// Where `v` lies on disk, without resolving links.
    pub fn real(&self, v: &VPath) -> PathBuf {
        let mut p = self.home.clone();
        p.extend(&v.0);
        p
    }

    fn check_inside(&self, v: &VPath, canonical: &Path) -> Result<(), FtpError> {
        let internal = self.home.join(INTERNAL_DIR);
        if !canonical.starts_with(&self.home) || canonical.starts_with(&internal) {
            return Err(forbidden(format!(
                "{v} is a link that leads outside your home directory"
            )));
        }
        Ok(())
    }

    /// An existing path: its real (unresolved) location and its canonical
    /// target, which must lie inside the home.
    pub fn existing(&self, v: &VPath) -> Result<(PathBuf, PathBuf), FtpError> {
        let real = self.real(v);
        let canonical = match std::fs::canonicalize(&real) {
            Ok(c) => c,
            Err(e) => {
                // Say "not found" only if the part that exists is inside the
                // home: a link must not tell what exists outside it.
                if let Some(ancestor) = real
                    .ancestors()
                    .skip(1)
                    .find_map(|a| std::fs::canonicalize(a).ok())
                {
                    self.check_inside(v, &ancestor)?;
                }
                return Err(FtpError::io(v.to_string(), e));
            }
        };
        self.check_inside(v, &canonical)?;
        Ok((real, canonical))
    }

    /// Opens `rel`, a path relative to the home, such that resolving it can
    /// never leave the home whatever links appear on the way meanwhile
    /// (links inside the home are followed). `what` names it in errors.
    pub fn open_beneath(
        &self,
        rel: &Path,
        flags: OFlags,
        mode: Mode,
        what: &str,
    ) -> Result<OwnedFd, FtpError> {
        rustix::fs::openat2(
            &*self.dir,
            rel,
            flags | OFlags::CLOEXEC,
            mode,
            ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
        )
        .map_err(|e| beneath_error(what, e))
    }

    /// The directory that holds `v`, opened beneath the home (so that it can
    /// be synced and used with the `*at` calls), and `v`'s name in it.
    pub fn parent_of(&self, v: &VPath) -> Result<(OwnedFd, String), FtpError> {
        let Some(name) = v.file_name() else {
            return Err(FtpError::refuse(
                ErrorCode::BadRequest,
                "that is your home directory itself",
            ));
        };
        let dir = self.open_beneath(
            &v.parent().relative(),
            OFlags::RDONLY | OFlags::DIRECTORY,
            Mode::empty(),
            &v.parent().to_string(),
        )?;
        Ok((dir, name.to_owned()))
    }

    /// A path to create or replace: its parent must exist inside the home
    /// and be a directory. Returns the real path (parent resolved).
    pub fn creatable(&self, v: &VPath) -> Result<PathBuf, FtpError> {
        let Some(name) = v.file_name() else {
            return Err(FtpError::refuse(
                ErrorCode::BadRequest,
                "that is your home directory itself",
            ));
        };
        let parent = v.parent();
        let (_, parent_dir) = self.existing(&parent)?;
        if !parent_dir.is_dir() {
            return Err(FtpError::refuse(
                ErrorCode::BadRequest,
                format!("{parent} is not a directory"),
            ));
        }
        let target = parent_dir.join(name);
        // An existing link in the last place must not lead outside either.
        if let Ok(meta) = std::fs::symlink_metadata(&target)
            && meta.file_type().is_symlink()
            && let Ok(canonical) = std::fs::canonicalize(&target)
        {
            self.check_inside(v, &canonical)?;
        }
        Ok(target)
    }
}

/// An `openat2` failure: leaving the home is a forbidden path, the rest
/// as other I/O errors.
fn beneath_error(what: &str, e: rustix::io::Errno) -> FtpError {
    if e == rustix::io::Errno::XDEV || e == rustix::io::Errno::LOOP {
        return forbidden(format!("{what} leads outside your home directory"));
    }
    FtpError::io(what.to_owned(), e.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(cwd: &str, input: &str) -> Result<String, FtpError> {
        let cwd = VPath::root().resolve(cwd, AboveRoot::Refuse)?;
        cwd.resolve(input, AboveRoot::Refuse).map(|v| v.to_string())
    }

    #[test]
    fn resolves_relative_absolute_dot_and_dotdot() {
        assert_eq!(p("/", "a/b").ok().as_deref(), Some("/a/b"));
        assert_eq!(p("/a", "b").ok().as_deref(), Some("/a/b"));
        assert_eq!(p("/a", "/c").ok().as_deref(), Some("/c"));
        assert_eq!(p("/a/b", "../c/./d//").ok().as_deref(), Some("/a/c/d"));
        assert_eq!(p("/a", "..").ok().as_deref(), Some("/"));
        assert_eq!(p("/", "").ok().as_deref(), Some("/"));
        assert_eq!(
            p("/", "name with spaces/ünï").ok().as_deref(),
            Some("/name with spaces/ünï")
        );
    }

    #[test]
    fn refuses_every_escape_and_oddity() {
        let long_name = "x".repeat(256);
        let long_path = "a/".repeat(2049);
        for (cwd, bad) in [
            ("/", ".."),
            ("/", "../etc/passwd"),
            ("/a", "../../x"),
            ("/", "a\0b"),
            ("/", "a\\..\\b"),
            ("/", "a\nb"),
            ("/", long_name.as_str()),
            ("/", long_path.as_str()),
            ("/", ".wharf/partial"),
            ("/", "a/.wharf"),
        ] {
            assert!(
                p(cwd, bad).is_err_and(|e| e.is(ErrorCode::ForbiddenPath)),
                "{bad:?}"
            );
        }
        assert!(p("/", &"x".repeat(255)).is_ok());
    }

    #[test]
    fn cd_dotdot_at_the_root_stays_there() {
        let v = VPath::root()
            .resolve("../..", AboveRoot::Clamp)
            .map(|v| v.to_string());
        assert_eq!(v.ok().as_deref(), Some("/"));
    }

    #[test]
    fn a_link_swapped_in_after_the_check_cannot_lead_out() -> Result<(), Box<dyn std::error::Error>>
    {
        let tmp = tempfile::tempdir()?;
        let home = tmp.path().join("home");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(home.join("d"))?;
        std::fs::create_dir_all(&outside)?;
        std::fs::write(outside.join("secret"), b"x")?;
        std::fs::write(home.join("d/secret"), b"mine")?;
        let jail = Jail::new(&home)?;
        let v = VPath::root().resolve("d/secret", AboveRoot::Refuse)?;
        // The check passes: d is a directory of the home...
        jail.existing(&v)?;
        jail.creatable(&v)?;
        // ...then its owner swaps d for a link out of the home.
        std::fs::rename(home.join("d"), home.join("d.old"))?;
        std::os::unix::fs::symlink(&outside, home.join("d"))?;
        assert!(
            jail.parent_of(&v)
                .is_err_and(|e| e.is(ErrorCode::ForbiddenPath))
        );
        assert!(
            jail.open_beneath(&v.relative(), OFlags::RDONLY, Mode::empty(), "d/secret")
                .is_err_and(|e| e.is(ErrorCode::ForbiddenPath))
        );
        // A link that stays inside the home is followed, as before.
        std::fs::remove_file(home.join("d"))?;
        std::os::unix::fs::symlink("d.old", home.join("d"))?;
        let (dir, name) = jail.parent_of(&v)?;
        assert_eq!(name, "secret");
        assert!(rustix::fs::statat(&dir, "secret", rustix::fs::AtFlags::empty()).is_ok());
        Ok(())
    }

    #[test]
    fn jail_refuses_symlinks_that_leave_the_home() -> Result<(), Box<dyn std::error::Error>> {
        let tmp = tempfile::tempdir()?;
        let home = tmp.path().join("home");
        std::fs::create_dir_all(home.join("sub"))?;
        std::fs::write(tmp.path().join("secret"), b"x")?;
        std::fs::write(home.join("sub/ok"), b"y")?;
        std::os::unix::fs::symlink(tmp.path().join("secret"), home.join("out"))?;
        std::os::unix::fs::symlink(tmp.path(), home.join("outdir"))?;
        std::os::unix::fs::symlink(home.join("sub/ok"), home.join("in"))?;
        let jail = Jail::new(&home)?;
        let v = |s: &str| VPath::root().resolve(s, AboveRoot::Refuse);
        assert!(
            jail.existing(&v("out")?)
                .is_err_and(|e| e.is(ErrorCode::ForbiddenPath))
        );
        assert!(
            jail.existing(&v("outdir/secret")?)
                .is_err_and(|e| e.is(ErrorCode::ForbiddenPath))
        );
        assert!(
            jail.creatable(&v("outdir/new")?)
                .is_err_and(|e| e.is(ErrorCode::ForbiddenPath))
        );
        assert!(
            jail.creatable(&v("out")?)
                .is_err_and(|e| e.is(ErrorCode::ForbiddenPath))
        );
        assert!(
            jail.existing(&v("in")?).is_ok(),
            "a link inside the home is fine"
        );
        assert!(
            jail.existing(&v("missing")?)
                .is_err_and(|e| e.is(ErrorCode::NotFound))
        );
        assert!(
            jail.creatable(&v("missing/new")?)
                .is_err_and(|e| e.is(ErrorCode::NotFound))
        );
        Ok(())
    }
}
