//! A memory limit for a whole command: a memory cgroup of its own.
//!
//! `RLIMIT_AS` bounds each process of a command; a cgroup bounds all of
//! them together (and the files they keep in the private `/tmp`). The
//! launcher makes `wharf-PID` beside the daemon's own memory cgroup (cgroup
//! v1's memory hierarchy, or the unified v2 one when the daemon's cgroup
//! delegates the memory controller), sets the limit and moves itself in,
//! before anything of the command runs (a spare launcher moves in while it
//! waits, and sets the limit first thing once its command comes: see
//! [`join`]); past the limit the kernel's OOM
//! killer ends a process of the command. The server removes the cgroup once
//! the command is reaped, and each launcher sweeps away the empty ones a
//! stopped server left. Where no cgroup can be made (a daemon that is not
//! root, a container whose `/sys/fs/cgroup` is read-only), `RLIMIT_AS`
//! alone limits memory, per process; the server says so when it starts.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::Duration;

use rustix::fs::{AtFlags, Mode, OFlags};

/// The memory cgroup of the command whose launcher has pid `pid`.
pub fn command_cgroup(pid: u32) -> Option<PathBuf> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let name = format!("wharf-{pid}");
    let v1 = own.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers
            .split(',')
            .any(|c| c == "memory")
            .then(|| PathBuf::from("/sys/fs/cgroup/memory").join(path.trim_start_matches('/')))
    });
    let base = match v1 {
        Some(base) => base,
        None => {
            let path = own.lines().find_map(|line| line.strip_prefix("0::"))?;
            PathBuf::from("/sys/fs/cgroup").join(path.trim_start_matches('/'))
        }
    };
    // A launcher already inside its own cgroup looks from its parent's.
    let base = match base.file_name().and_then(|n| n.to_str()) {
        Some(n) if n.starts_with("wharf-") => base.parent()?.to_path_buf(),
        _ => base,
    };
    Some(base.join(name))
}

/// Moves this process into a new memory cgroup limited to `limit` bytes;
/// false when none can be made here.
pub fn enter(limit: u64) -> bool {
    let Some(dir) = command_cgroup(std::process::id()) else {
        return false;
    };
    sweep(&dir);
    // A sweep by another launcher may take the new, still empty cgroup
    // away before this process is in it: then make it again.
    (0..3).any(|_| make_and_join(&dir, limit))
}

/// Removes the empty cgroups of earlier commands beside `dir` (left when a
/// server stopped before it could remove them); busy ones stay.
fn sweep(dir: &std::path::Path) {
    let Some(parent) = dir.parent() else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let is_command = name
            .to_str()
            .and_then(|n| n.strip_prefix("wharf-"))
            .is_some_and(|rest| rest.bytes().all(|b| b.is_ascii_digit()));
        if is_command {
            let _ = std::fs::remove_dir(entry.path());
        }
    }
}

fn make_and_join(dir: &std::path::Path, limit: u64) -> bool {
    if std::fs::create_dir(dir).is_err() {
        return false;
    }
    let joined = open_dir(dir).is_some_and(|fd| write_limit(&fd, limit))
        && std::fs::write(dir.join("cgroup.procs"), "0").is_ok();
    if !joined {
        let _ = std::fs::remove_dir(dir);
    }
    joined
}

/// A cgroup's directory, opened for writing its files later from wherever
/// this process is then (a spare's root may be the command's by then).
fn open_dir(dir: &std::path::Path) -> Option<OwnedFd> {
    rustix::fs::open(
        dir,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()
}

/// Writes `text` to the file `name` of the cgroup `dir`.
fn write_at(dir: &OwnedFd, name: &str, text: &str) -> std::io::Result<()> {
    let file = rustix::fs::openat(
        dir,
        name,
        OFlags::WRONLY | OFlags::TRUNC | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    std::io::Write::write_all(&mut std::fs::File::from(file), text.as_bytes())
}

/// Sets the memory limit of the cgroup `dir` (and of swap, where it is
/// accounted: v1 with memsw, v2); false when it cannot be set.
fn write_limit(dir: &OwnedFd, limit: u64) -> bool {
    let limit = limit.to_string();
    let limited = write_at(dir, "memory.limit_in_bytes", &limit)
        .or_else(|_| write_at(dir, "memory.max", &limit))
        .is_ok();
    if limited {
        let _ = write_at(dir, "memory.memsw.limit_in_bytes", &limit);
        let _ = write_at(dir, "memory.swap.max", "0");
    }
    limited
}

/// A memory cgroup this process entered ahead of its command, with no
/// limit yet (a spare launcher's, see [`super::spare`]).
#[derive(Debug)]
pub struct Joined {
    /// Its directory.
    dir: OwnedFd,
    /// The directory of the cgroup it was made in.
    parent: OwnedFd,
    /// Its name there.
    name: String,
}

/// Moves this process into a new memory cgroup of its own with no limit
/// yet; `None` when none can be made here. Nothing of a command may run
/// before [`Joined::limit`].
pub fn join() -> Option<Joined> {
    let dir = command_cgroup(std::process::id())?;
    let name = dir.file_name()?.to_str()?.to_owned();
    let parent = open_dir(dir.parent()?)?;
    sweep(&dir);
    // As in `enter`: a sweep may take the empty cgroup before the move.
    (0..3).find_map(|_| {
        std::fs::create_dir(&dir).ok()?;
        let opened = open_dir(&dir);
        if let Some(fd) = opened
            && std::fs::write(dir.join("cgroup.procs"), "0").is_ok()
        {
            return Some(Joined {
                dir: fd,
                parent: parent.try_clone().ok()?,
                name: name.clone(),
            });
        }
        let _ = std::fs::remove_dir(&dir);
        None
    })
}

impl Joined {
    /// Limits the cgroup to `limit` bytes. Where that cannot be done, this
    /// process goes back to the cgroup it came from and the new one is
    /// removed (`RLIMIT_AS` alone limits memory, as where no cgroup can be
    /// made): false.
    pub fn limit(self, limit: u64) -> bool {
        if write_limit(&self.dir, limit) {
            return true;
        }
        let _ = write_at(&self.parent, "cgroup.procs", "0");
        let _ = rustix::fs::unlinkat(&self.parent, self.name.as_str(), AtFlags::REMOVEDIR);
        false
    }
}

/// Removes the cgroup of the command whose launcher had pid `pid`, once the
/// kernel has finished with its processes (a few tries, a moment apart).
pub async fn remove(pid: u32) {
    let Some(dir) = command_cgroup(pid) else {
        return;
    };
    for _ in 0..100 {
        match std::fs::remove_dir(&dir) {
            Err(e) if e.raw_os_error() == Some(16) => {
                // EBUSY: its last processes are still being torn down.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            _ => return,
        }
    }
    tracing::warn!(cgroup = %dir.display(), "a command's cgroup is still busy; left in place");
}

/// True when commands started from here get a memory cgroup of their own:
/// tried with a cgroup made and removed at once.
pub fn available() -> bool {
    let Some(dir) = command_cgroup(std::process::id()) else {
        return false;
    };
    static PROBES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = dir.with_file_name(format!("wharf-probe-{}-{n}", std::process::id()));
    if std::fs::create_dir(&dir).is_err() {
        return false;
    }
    let ok = std::fs::write(dir.join("memory.limit_in_bytes"), "1073741824")
        .or_else(|_| std::fs::write(dir.join("memory.max"), "1073741824"))
        .is_ok();
    let _ = std::fs::remove_dir(&dir);
    ok
}
