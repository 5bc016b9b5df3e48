//! The binary that starts commands, and its spares: launchers started
//! ahead of the commands that will use them (see
//! [`crate::launch::spare`]), so that a command's start does not wait for
//! a process to start and enter its cgroup.
//!
//! [`Launcher::take_spare`] hands out a waiting spare and has another
//! started in the background; a command that finds none waiting (several
//! starting at once) is started through a fresh launcher, as before
//! spares. A spare is this server's child like any launcher: tokio reaps
//! it, the reaper of orphans leaves it alone, and it is killed when
//! dropped unused. Should the server die, the spare's socket closes and
//! the spare exits.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use rustix::process::Pid;
use tokio::process::{Child, Command};

use crate::launch::spare::{Order, SPARE_ARG, send};

/// Spares kept waiting: two commands may start back to back (a user's and
/// another's, or a pipeline of `ssh` calls) before the first replacement
/// is ready.
pub(crate) const SPARES: usize = 2;

/// The binary that starts commands, and the spares started from it.
pub(crate) struct Launcher {
    path: PathBuf,
    keep: usize,
    /// The size of a command's `/tmp`, which a spare mounts ahead.
    tmp_size: u64,
    spares: Mutex<Vec<Spare>>,
    /// A task is starting spares now.
    refilling: AtomicBool,
}

/// A launcher waiting for its command.
pub(crate) struct Spare {
    child: Option<Child>,
    pid: Pid,
    orders: UnixStream,
}

impl Launcher {
    /// Commands start through `path`, with `keep` spares waiting (none: a
    /// fresh launcher each), which build ahead a sandbox whose `/tmp` has
    /// `tmp_size` bytes.
    pub(crate) fn new(path: PathBuf, keep: usize, tmp_size: u64) -> Arc<Launcher> {
        Arc::new(Launcher {
            path,
            keep,
            tmp_size,
            spares: Mutex::new(Vec::new()),
            refilling: AtomicBool::new(false),
        })
    }

    /// The launcher binary.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    fn spares(&self) -> MutexGuard<'_, Vec<Spare>> {
        self.spares.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A spare waiting for a command (those that died meanwhile passed
    /// over), with another started in its place in the background.
    pub(crate) fn take_spare(self: &Arc<Self>) -> Option<Spare> {
        let taken = loop {
            let Some(mut spare) = self.spares().pop() else {
                break None;
            };
            if spare.waiting() {
                break Some(spare);
            }
        };
        self.refill();
        taken
    }

    /// Starts spares in the background until `keep` wait; one task at a
    /// time. Needs a tokio runtime (one without: nothing is started).
    pub(crate) fn refill(self: &Arc<Self>) {
        if self.keep == 0 || self.refilling.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            self.refilling.store(false, Ordering::Release);
            return;
        };
        let me = Arc::clone(self);
        rt.spawn_blocking(move || {
            while me.spares().len() < me.keep {
                match me.start_spare() {
                    Ok(spare) => me.spares().push(spare),
                    Err(e) => {
                        tracing::debug!(launcher = %me.path.display(), error = %e, "cannot start a spare launcher; commands start through fresh ones");
                        break;
                    }
                }
            }
            me.refilling.store(false, Ordering::Release);
        });
    }

    fn start_spare(&self) -> std::io::Result<Spare> {
        let (orders, theirs) = UnixStream::pair()?;
        let mut cmd = Command::new(&self.path);
        cmd.arg(SPARE_ARG)
            .arg(self.tmp_size.to_string())
            .env_clear()
            .current_dir("/")
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let (child, pid) = super::orphans::spawn_launcher(&mut cmd)?;
        Ok(Spare {
            child: Some(child),
            pid,
            orders,
        })
    }
}

impl Spare {
    /// True while the spare has not exited.
    fn waiting(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Sends the spare its command, with its standard input, output and
    /// error (and its home's mount, when there is one); it is then that
    /// command's launcher, the process and its pid (its group's id)
    /// returned. On failure the spare is killed.
    pub(crate) fn order(
        mut self,
        order: &Order,
        stdio: [&OwnedFd; 3],
        home: Option<&OwnedFd>,
    ) -> std::io::Result<(Child, Pid)> {
        send(
            self.orders.as_fd(),
            order,
            stdio.map(|fd| fd.as_fd()),
            home.map(|fd| fd.as_fd()),
        )?;
        let child = self
            .child
            .take()
            .ok_or_else(|| std::io::Error::other("the spare was already used"))?;
        Ok((child, self.pid))
    }
}

impl Drop for Spare {
    /// An unused spare is killed (tokio reaps it), and its cgroup removed.
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            drop(child);
            if let (Ok(pid), Ok(rt)) = (
                u32::try_from(self.pid.as_raw_nonzero().get()),
                tokio::runtime::Handle::try_current(),
            ) {
                rt.spawn(crate::launch::cgroup::remove(pid));
            }
            super::orphans::launchers().remove(&self.pid.as_raw_nonzero().get());
        }
    }
}
