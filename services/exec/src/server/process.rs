//! One command: `sh -c` in its own process group, with a scrubbed
//! environment and resource limits, started through the launcher (see
//! [`crate::launch`]).
//!
//! The shell's exit is noticed with `waitid(WNOWAIT)` on each SIGCHLD,
//! *without reaping it*. While the shell is an unreaped zombie its pid,
//! which is also the group's id, cannot be reused, so killing the group
//! afterwards can only ever hit this command's processes (a background
//! grandchild holding the pipes open, say). [`Running::finish`] kills the
//! group, then reaps the shell.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use rustix::process::{
    Pid, Signal, WaitId, WaitIdOptions, kill_process, kill_process_group, waitid,
};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};
use tokio::signal::unix::{Signal as SignalStream, SignalKind, signal};

use super::output::OutPipe;
use crate::launch::Launch;

/// `PATH` of every command.
pub const COMMAND_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Pipe buffer asked for the command's output: fewer, larger reads.
const PIPE_SIZE: usize = 1024 * 1024;

/// Kernel limits set on every command (and inherited by what it starts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceLimits {
    /// CPU time of each process (`RLIMIT_CPU`); past it, SIGXCPU, then SIGKILL.
    pub cpu: Duration,
    /// Largest file a process may write (`RLIMIT_FSIZE`); past it, SIGXFSZ.
    pub file_size: u64,
    /// Processes and threads the command's user may have at once
    /// (`RLIMIT_NPROC`; counted by the kernel over every process of the
    /// user's uid, or of the command's user namespace when the server is
    /// not root).
    pub processes: u64,
    /// Address space of each process (`RLIMIT_AS`): allocations past it fail.
    pub memory: u64,
    /// Size of the command's private `/tmp` (memory, not quota).
    pub tmp_size: u64,
}

impl Default for ResourceLimits {
    fn default() -> Self {
        ResourceLimits {
            cpu: Duration::from_secs(60),
            file_size: 1 << 30,
            processes: 512,
            memory: 1 << 30,
            tmp_size: 64 << 20,
        }
    }
}

/// What to run and how.
pub struct Spawn<'a> {
    /// A daemon binary that calls [`crate::launch::launch_if_asked`].
    pub launcher: &'a Path,
    /// The command line, for `sh -c`.
    pub command: &'a str,
    /// The home on the server's disk (the command sees it at
    /// `/home/USER`).
    pub home: &'a Path,
    /// The Wharf user, for `USER`.
    pub user: &'a str,
    /// Who the command runs as (uid, gid); `None`: as the server.
    pub identity: Option<(u32, u32)>,
    /// Kernel limits.
    pub limits: ResourceLimits,
    /// Run even if part of the sandbox is missing.
    pub unconfined_ok: bool,
    /// True to give the command a pipe for its input; false gives it
    /// /dev/null.
    pub stdin: bool,
}

/// A running command.
pub struct Running {
    child: Child,
    pgid: Pid,
    sigchld: SignalStream,
    /// A SIGCHLD came (or none was looked for yet): look again.
    look: bool,
    exited: bool,
    finished: bool,
    /// The command's input, when asked for.
    pub stdin: Option<ChildStdin>,
    /// Its output.
    pub stdout: Option<OutPipe>,
    /// Its error output.
    pub stderr: Option<OutPipe>,
}

impl Running {
    /// Starts the command.
    pub fn spawn(s: &Spawn<'_>) -> std::io::Result<Running> {
        // Listening before the spawn: no exit can be missed.
        let sigchld = signal(SignalKind::child())?;
        let launch = Launch {
            cpu_secs: s.limits.cpu.as_secs().max(1),
            file_size: s.limits.file_size,
            processes: s.limits.processes,
            memory: s.limits.memory,
            tmp_size: s.limits.tmp_size,
            identity: s.identity,
            home: s.home.to_owned(),
            name: s.user.to_owned(),
            unconfined_ok: s.unconfined_ok,
        };
        // The launcher starts a session of its own (so its pid is the
        // group's id), sets HOME and the working directory.
        let mut cmd = Command::new(s.launcher);
        cmd.args(launch.args(s.command))
            .env_clear()
            .env("PATH", COMMAND_PATH)
            .env("USER", s.user)
            .env("LANG", "C.UTF-8")
            .env("TERM", "dumb")
            .current_dir("/")
            .stdin(if s.stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // Registered as a launcher before anything can take it for an
        // orphan to reap.
        let mut launchers = super::orphans::launchers();
        let mut child = cmd.spawn()?;
        let pgid = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .and_then(Pid::from_raw)
            .ok_or_else(|| std::io::Error::other("the new process has no pid"))?;
        launchers.insert(pgid.as_raw_nonzero().get());
        drop(launchers);
        let stdout = child.stdout.take().map(ChildStdout::into_owned_fd);
        let stderr = child.stderr.take().map(ChildStderr::into_owned_fd);
        let [stdout, stderr] = [stdout, stderr].map(|pipe| {
            pipe.transpose()?
                .map(|fd| {
                    // Best effort: the default 64 KiB works, only slower.
                    let _ = rustix::pipe::fcntl_setpipe_size(&fd, PIPE_SIZE);
                    OutPipe::new(fd)
                })
                .transpose()
        });
        let (stdout, stderr) = (stdout?, stderr?);
        Ok(Running {
            stdin: child.stdin.take(),
            stdout,
            stderr,
            child,
            pgid,
            sigchld,
            look: true,
            exited: false,
            finished: false,
        })
    }

    /// Resolves when the shell has exited; it stays unreaped until
    /// [`Running::finish`].
    pub async fn exited(&mut self) -> std::io::Result<()> {
        let peek = WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT;
        // Called again and again from a loop: look only after a SIGCHLD.
        while !self.exited {
            if self.look {
                self.look = false;
                self.exited = waitid(WaitId::Pid(self.pgid), peek)?.is_some();
                continue;
            }
            if self.sigchld.recv().await.is_none() {
                return Err(std::io::Error::other("SIGCHLD is no longer delivered"));
            }
            self.look = true;
        }
        Ok(())
    }

    /// Sends `signal` to every process of the command's group.
    pub fn signal_group(&self, signal: i32) {
        if let Some(sig) = Signal::from_named_raw(signal) {
            // ESRCH: the group is gone already.
            let _ = kill_process_group(self.pgid, sig);
        }
    }

    /// Kills the shell and its group (the shell itself too, in case it has
    /// not started its session yet). Its PID namespace goes with it: that
    /// namespace's init dies with its parent, the shell.
    fn kill_all(&self) {
        let _ = kill_process(self.pgid, Signal::KILL);
        let _ = kill_process_group(self.pgid, Signal::KILL);
    }

    /// Kills every process of the group that is left, reaps the shell and
    /// returns how it ended.
    pub async fn finish(mut self) -> std::io::Result<ExitStatus> {
        self.kill_all();
        let status = self.child.wait().await;
        self.finished = true;
        self.remove_cgroup();
        super::orphans::launchers().remove(&self.pgid.as_raw_nonzero().get());
        status
    }

    /// Removes the command's memory cgroup once the kernel is done with it,
    /// in the background.
    fn remove_cgroup(&self) {
        if let (Ok(pid), Ok(rt)) = (
            u32::try_from(self.pgid.as_raw_nonzero().get()),
            tokio::runtime::Handle::try_current(),
        ) {
            rt.spawn(crate::launch::cgroup::remove(pid));
        }
    }
}

impl Drop for Running {
    /// A command abandoned without [`Running::finish`] (its session's task
    /// was dropped) still takes its whole group down (tokio reaps the
    /// shell) and its cgroup with it.
    fn drop(&mut self) {
        if !self.finished {
            self.kill_all();
            self.remove_cgroup();
            // tokio reaps it; should the reaper of orphans come first,
            // tokio finds it gone, which it takes in its stride.
            super::orphans::launchers().remove(&self.pgid.as_raw_nonzero().get());
        }
    }
}

/// A shell's status for how a process ended: the exit code, or 128 + the
/// signal number; and the signal, if one ended it.
pub fn shell_status(status: ExitStatus) -> (i32, Option<i32>) {
    match (status.code(), status.signal()) {
        (Some(code), _) => (code, None),
        (None, Some(sig)) => (128 + sig, Some(sig)),
        (None, None) => (255, None),
    }
}
