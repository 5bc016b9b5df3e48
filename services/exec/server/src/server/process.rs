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

use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use rustix::fs::{Mode, Uid, fchmod, fchown};
use rustix::process::{
    Pid, Signal, WaitId, WaitIdOptions, kill_process, kill_process_group, waitid,
};
use rustix::pty::{OpenptFlags, grantpt, ioctl_tiocgptpeer, openpt, ptsname, unlockpt};
use rustix::termios::{Winsize, tcsetwinsize};
use tokio::process::{Child, Command};
use tokio::signal::unix::{Signal as SignalStream, SignalKind, signal};
use wharf_proto::exec::{Tty, WindowSize};

use super::output::{CommandInput, OutPipe};
use super::spare::Launcher;
use crate::launch::Launch;
use crate::launch::spare::Order;

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
    /// The binary that starts commands (one that calls
    /// [`crate::launch::launch_if_asked`]), and its spares.
    pub launcher: &'a Arc<Launcher>,
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
    /// Where it starts, as commands see it (relative to the home, or
    /// absolute); none: the home.
    pub cwd: Option<&'a str>,
    /// Run it on a pseudo-terminal like this (input, output and error all
    /// on it; `stdin` is then ignored).
    pub tty: Option<&'a Tty>,
    /// The network it runs in.
    pub net: &'a crate::launch::net::NetPlace,
}

/// A command's pseudo-terminal, as the server holds it (its input and
/// output are [`Running::input`] and [`Running::stdout`]).
pub struct Terminal {
    /// The near (master) end, for window sizes.
    control: OwnedFd,
}

impl Terminal {
    /// Tells the command its window is now `size`.
    pub fn resize(&self, size: WindowSize) -> std::io::Result<()> {
        tcsetwinsize(&self.control, winsize(size))?;
        Ok(())
    }
}

fn winsize(size: WindowSize) -> Winsize {
    Winsize {
        ws_row: size.rows.clamp(1, MAX_CELLS),
        ws_col: size.cols.clamp(1, MAX_CELLS),
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

/// Most rows or columns a window may claim.
const MAX_CELLS: u16 = 4096;

/// Opens a pseudo-terminal: its near end, its far end and the far end's
/// path. The far end goes to `identity`, readable and writable by it alone
/// (as sshd gives a login's terminal).
fn open_pty(
    size: WindowSize,
    identity: Option<(u32, u32)>,
) -> std::io::Result<(OwnedFd, OwnedFd, PathBuf)> {
    let flags = OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC;
    let master = openpt(flags)?;
    grantpt(&master)?;
    unlockpt(&master)?;
    let path = ptsname(&master, Vec::new())?;
    let path = PathBuf::from(std::ffi::OsStr::from_bytes(path.as_bytes()));
    let far = ioctl_tiocgptpeer(&master, flags)?;
    if let Some((uid, _)) = identity {
        fchown(&far, Some(Uid::from_raw(uid)), None)?;
        fchmod(&far, Mode::from_raw_mode(0o600))?;
    }
    tcsetwinsize(&master, winsize(size))?;
    Ok((master, far, path))
}

/// The home as a mount of its own, cloned from the server's tree as it is
/// now (`open_tree`), for a spare whose root is built and whose view of
/// the host's tree is gone (see [`crate::launch::sandbox::prepare`]).
/// Only root has spares that take one; where it cannot be made (a kernel
/// before 5.2, a seccomp profile that refuses it) the spare builds the
/// whole sandbox from the host's tree instead.
fn home_tree(s: &Spawn<'_>) -> Option<OwnedFd> {
    use rustix::mount::{OpenTreeFlags, open_tree};
    if s.identity.is_none() || s.tty.is_some() {
        return None;
    }
    let flags = OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC;
    open_tree(rustix::fs::CWD, s.home, flags)
        .inspect_err(|e| tracing::debug!(error = %e, home = %s.home.display(), "cannot clone the home's mount for a spare launcher"))
        .ok()
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
    /// The command's input, when asked for: a pipe, or its terminal.
    pub input: Option<CommandInput>,
    /// Its terminal, when it runs on one.
    pub terminal: Option<Terminal>,
    /// Its output (on a terminal: everything it shows).
    pub stdout: Option<OutPipe>,
    /// Its error output.
    pub stderr: Option<OutPipe>,
}

impl Running {
    /// Starts the command: through a spare launcher when one waits, else
    /// through a fresh one.
    pub fn spawn(s: &Spawn<'_>) -> std::io::Result<Running> {
        // Listening before the spawn: no exit can be missed.
        let sigchld = signal(SignalKind::child())?;
        let pty = s
            .tty
            .map(|tty| open_pty(tty.size, s.identity))
            .transpose()?;
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
            tty: pty.as_ref().map(|(_, _, path)| path.clone()),
            cwd: s.cwd.map(str::to_owned),
            net: s.net.clone(),
        };
        let env: Vec<(String, String)> = [
            ("PATH", COMMAND_PATH),
            ("USER", s.user),
            ("LANG", "C.UTF-8"),
            ("TERM", s.tty.map_or("dumb", |t| t.term.as_str())),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .into();
        // The command's ends of its standard streams, and the server's.
        let (stdio, terminal, input, stdout, stderr) = match pty {
            Some((master, far, _)) => {
                let stdio = [far.try_clone()?, far.try_clone()?, far];
                let terminal = Terminal {
                    control: master.try_clone()?,
                };
                let input = CommandInput::new(master.try_clone()?)?;
                let output = OutPipe::new(master)?;
                (stdio, Some(terminal), Some(input), Some(output), None)
            }
            None => {
                let (stdin, input) = if s.stdin {
                    let (theirs, ours) = pipe()?;
                    (theirs, Some(CommandInput::new(ours)?))
                } else {
                    (std::fs::File::open("/dev/null")?.into(), None)
                };
                let (stdout_ours, stdout) = pipe()?;
                let (stderr_ours, stderr) = pipe()?;
                let [stdout_ours, stderr_ours] = [stdout_ours, stderr_ours].map(|fd| {
                    // Best effort: the default 64 KiB works, only slower.
                    let _ = rustix::pipe::fcntl_setpipe_size(&fd, PIPE_SIZE);
                    OutPipe::new(fd)
                });
                (
                    [stdin, stdout, stderr],
                    None,
                    input,
                    Some(stdout_ours?),
                    Some(stderr_ours?),
                )
            }
        };
        let spare = s.launcher.take_spare().and_then(|spare| {
            let order = Order {
                launch: launch.clone(),
                command: s.command.to_owned(),
                env: env.clone(),
            };
            let home = home_tree(s);
            spare
                .order(&order, [&stdio[0], &stdio[1], &stdio[2]], home.as_ref())
                .inspect_err(|e| tracing::debug!(error = %e, "a spare launcher failed; starting a fresh one"))
                .ok()
        });
        let (child, pgid) = match spare {
            Some(started) => started,
            None => fresh(s.launcher.path(), &launch, s.command, env, stdio)?,
        };
        // The command's ends are its own now (dropped here, if not sent
        // to a fresh launcher already): when it and its processes end,
        // reads of the server's ends end too.
        Ok(Running {
            input,
            terminal,
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

    /// The shell's pid (the launcher's, which became the shell).
    pub fn pid(&self) -> u32 {
        u32::try_from(self.pgid.as_raw_nonzero().get()).unwrap_or(0)
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

/// A pipe: its reading end, then its writing end.
fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?)
}

/// Starts a launcher for this one command: `launcher --wharf-exec-launch
/// SPEC COMMAND`, with `stdio` as its standard streams.
fn fresh(
    launcher: &Path,
    launch: &Launch,
    command: &str,
    env: Vec<(String, String)>,
    stdio: [OwnedFd; 3],
) -> std::io::Result<(Child, Pid)> {
    let [stdin, stdout, stderr] = stdio;
    // The launcher starts a session of its own (so its pid is the group's
    // id), sets HOME and the working directory.
    let mut cmd = Command::new(launcher);
    cmd.args(launch.args(command))
        .env_clear()
        .envs(env)
        .current_dir("/")
        .stdin(stdin)
        .stdout(stdout)
        .stderr(stderr)
        .kill_on_drop(true);
    super::orphans::spawn_launcher(&mut cmd)
}
