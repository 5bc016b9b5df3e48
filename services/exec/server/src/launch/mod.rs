//! The command launcher: the last step between the server and `sh -c`.
//!
//! The server starts each command as `wharf-exec-launch
//! --wharf-exec-launch SPEC COMMAND` (a small binary beside the daemon's,
//! which starts in a fraction of the daemon binary's time; where there is
//! none, the daemon binary itself; both call [`launch_if_asked`] first
//! thing) with `posix_spawn`, its pipes for stdio and the scrubbed
//! environment; or, most often, hands the command to a launcher started
//! ahead, a spare that took step 1's session and cgroup while it waited
//! and, when the server is root, did all of steps 2 to 5 that are the
//! same for every user (see [`spare`] and [`sandbox::prepare`]). The
//! launcher, a fresh single-threaded process:
//!
//! 1. starts a new session (no controlling terminal), sets the resource
//!    limits on itself, inherited by everything the command starts, and
//!    enters a memory cgroup of its own where it can (see [`cgroup`]);
//! 2. enters new mount and PID namespaces (and, when not root, a user
//!    namespace that maps the daemon's uid to itself), see [`sandbox`];
//! 3. builds the command's root on a tmpfs: the system directories
//!    (read-only), `/home/NAME` (bound from the real home), private `/tmp`,
//!    `/run` and `/dev/shm`, a few devices; nothing else of the host's;
//! 4. starts the namespace's init (see [`init`]), which is PID 1 and mounts
//!    the namespace's `/proc` in that root: when the command's shell ends,
//!    init is killed, and with it, by the kernel, every process left in the
//!    namespace, `setsid` and double forks included; then makes the built
//!    root `/` (`pivot_root`, or a move and `chroot` where a seccomp
//!    profile refuses that) and lets go of the host's;
//! 5. restricts itself with Landlock (read-write beneath the home, `/tmp`,
//!    `/run` and `/dev/shm`, read and execute on the system directories,
//!    nothing else; no signals or abstract sockets out of the sandbox);
//! 6. becomes the user's own uid and gid when run as root, and replaces
//!    itself with `sh -c COMMAND` in the home.
//!
//! On a pseudo-terminal (the server passes its far end as standard input,
//! output and error), the launcher makes that terminal the new session's
//! controlling terminal in step 1, lets the command open it (`/dev/tty`
//! and its own `/dev/pts/N`, nothing else of `/dev/pts`) in step 5, and
//! with an empty command starts a login shell (`bash`, else `sh`) instead
//! of `sh -c`.
//!
//! The shell is thus still the server's child (its status is the command's
//! status) and the leader of the group the server signals, while every
//! process it starts lives inside the PID namespace. Doing this in a fresh
//! small process keeps the server on `posix_spawn` (a fork of the server
//! would copy its page tables) and every step in safe code but one
//! `unshare`.

pub mod cgroup;
pub mod init;
pub mod net;
pub mod sandbox;
pub mod spare;

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

use rustix::process::{Resource, Rlimit, setrlimit};
use serde::{Deserialize, Serialize};

/// The first argument that makes a daemon binary a launcher.
pub const LAUNCH_ARG: &str = "--wharf-exec-launch";

/// Exit status when the launcher itself fails (as a shell's for "cannot
/// execute").
pub const CANNOT_RUN: i32 = 126;

/// What the launcher is told: one JSON argument after [`LAUNCH_ARG`], then
/// the command line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Launch {
    /// CPU seconds (`RLIMIT_CPU` soft limit; the hard limit is one more).
    pub cpu_secs: u64,
    /// Largest file, in bytes (`RLIMIT_FSIZE`).
    pub file_size: u64,
    /// Processes of the user (`RLIMIT_NPROC`).
    pub processes: u64,
    /// Address space of each process, in bytes (`RLIMIT_AS`).
    pub memory: u64,
    /// Size of the private `/tmp`, in bytes.
    pub tmp_size: u64,
    /// User and group to become (the user's own, when the server is root).
    pub identity: Option<(u32, u32)>,
    /// The home on the server's disk.
    pub home: PathBuf,
    /// The Wharf user: the home is shown at `/home/NAME`.
    pub name: String,
    /// Run even where a part of the sandbox is missing (the operator's
    /// `--allow-unconfined-exec`); otherwise a missing part is an error.
    pub unconfined_ok: bool,
    /// The pseudo-terminal on standard input, output and error, if any:
    /// its path, which the command may open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tty: Option<PathBuf>,
    /// Where to start, as the command sees it: absolute, or relative to the
    /// home; none: the home.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// The network the command sees.
    #[serde(default)]
    pub net: net::NetPlace,
}

/// Shells tried, in order, for an interactive login shell.
const LOGIN_SHELLS: &[&str] = &["/bin/bash", "/bin/sh"];

impl Launch {
    /// The arguments that ask a daemon binary for this launch of `command`.
    pub fn args(&self, command: &str) -> Vec<String> {
        vec![
            LAUNCH_ARG.to_owned(),
            serde_json::to_string(self).unwrap_or_default(),
            command.to_owned(),
        ]
    }

    fn parse(mut args: impl Iterator<Item = std::ffi::OsString>) -> Option<(Launch, String)> {
        let spec = args.next()?.into_string().ok()?;
        let command = args.next()?.into_string().ok()?;
        let launch = serde_json::from_str(&spec).ok()?;
        args.next().is_none().then_some((launch, command))
    }
}

fn hard(limit: u64) -> Rlimit {
    Rlimit {
        current: Some(limit),
        maximum: Some(limit),
    }
}

fn set_limits(l: &Launch) -> std::io::Result<()> {
    // SIGXCPU at the limit (the shell reports "CPU time limit exceeded"),
    // SIGKILL a second later if it is ignored. Hard limits are set, so the
    // command cannot raise them again.
    setrlimit(
        Resource::Cpu,
        Rlimit {
            current: Some(l.cpu_secs),
            maximum: Some(l.cpu_secs.saturating_add(1)),
        },
    )?;
    setrlimit(Resource::Core, hard(0))?;
    setrlimit(Resource::As, hard(l.memory))?;
    Ok(())
}

fn fail(what: impl std::fmt::Display) -> ! {
    eprintln!("wharf-exec: {what}");
    std::process::exit(CANNOT_RUN);
}

/// When this process was started with [`LAUNCH_ARG`] or
/// [`spare::SPARE_ARG`] (or as one of the network's helpers), becomes that
/// and never returns; otherwise returns at once. Daemons that serve exec
/// call it first thing in `main`.
pub fn launch_if_asked() {
    let mut args = std::env::args_os();
    args.next();
    let (launch, command, env, prepared, home) =
        match args.next().as_deref().and_then(|a| a.to_str()) {
            Some(LAUNCH_ARG) => {
                let Some((launch, command)) = Launch::parse(args) else {
                    fail("malformed launcher arguments (this mode is for wharf-execd only)");
                };
                new_session();
                take_terminal_and_limits(&launch);
                // Where it can be made; RLIMIT_AS above holds each process
                // regardless.
                cgroup::enter(launch.memory);
                // The environment the server started this process with.
                (launch, command, None, None, None)
            }
            Some(spare::SPARE_ARG) => {
                let tmp_size = args.next().and_then(|a| a.to_str()?.parse::<u64>().ok());
                new_session();
                let joined = cgroup::join();
                // In the cgroup already: what is built is the command's.
                // Where none could be made now but one can be, the command
                // tries again from the host's tree (`cgroup::enter`, by
                // path), which a prepared spare has let go.
                let prepared = if joined.is_some() || !cgroup::available() {
                    tmp_size.and_then(sandbox::prepare)
                } else {
                    None
                };
                let (order, home) = match spare::receive() {
                    Ok(Some(received)) => received,
                    // The server let this spare go.
                    Ok(None) => std::process::exit(0),
                    Err(e) => fail(format_args!("cannot take a command: {e}")),
                };
                let spare::Order {
                    launch,
                    command,
                    env,
                } = order;
                take_terminal_and_limits(&launch);
                match joined {
                    Some(joined) => {
                        joined.limit(launch.memory);
                    }
                    // None could be made while it waited: tried again now.
                    None => {
                        cgroup::enter(launch.memory);
                    }
                }
                (launch, command, Some(env), prepared, home)
            }
            Some(net::KEEPER_ARG) => net::run_keeper(args),
            Some(net::HOLDER_ARG) => net::run_holder(args),
            _ => return,
        };
    run(launch, command, env, prepared, home)
}

/// Starts the launcher's session, holding nothing but its standard streams
/// (and, for a spare, its socket on 0): a descriptor its parent left
/// inheritable by mistake (a library's, in a program that embeds the
/// server) reaches neither the command nor, for a spare, the hours it may
/// wait.
fn new_session() {
    #[allow(unsafe_code)]
    // SAFETY: the launcher is single-threaded and owns no descriptor above
    // 2 yet (std opens none before main); none is used after this.
    unsafe {
        libc::close_range(3, u32::MAX, 0);
    }
    if let Err(e) = rustix::process::setsid() {
        fail(format_args!("cannot start a new session: {e}"));
    }
}

fn take_terminal_and_limits(launch: &Launch) {
    if launch.tty.is_some()
        && let Err(e) = rustix::process::ioctl_tiocsctty(std::io::stdin())
    {
        fail(format_args!("cannot take the terminal: {e}"));
    }
    if let Err(e) = set_limits(launch) {
        fail(format_args!("cannot set resource limits: {e}"));
    }
}

/// The launcher's steps from the sandbox on: `env`, the command's whole
/// environment (none: this process's own); `prepared`, what a spare built
/// of the sandbox while it waited, and `home`, the home's mount the
/// server sent it.
fn run(
    launch: Launch,
    command: String,
    env: Option<Vec<(String, String)>>,
    prepared: Option<sandbox::Prepared>,
    home: Option<std::os::fd::OwnedFd>,
) -> ! {
    let place = match sandbox::enter(&launch, prepared, home) {
        Ok(place) => place,
        Err(e) => fail(e),
    };
    // After the sandbox, which writes files of its own (the user's entry
    // in /etc/passwd) whatever the user's free quota.
    if let Err(e) = setrlimit(Resource::Fsize, hard(launch.file_size)) {
        fail(format_args!("cannot set the file size limit: {e}"));
    }
    default_signals();
    let mut sh = if command.is_empty() && launch.tty.is_some() {
        let shell = LOGIN_SHELLS
            .iter()
            .find(|s| std::path::Path::new(s).exists())
            .copied()
            .unwrap_or("/bin/sh");
        let mut sh = Command::new(shell);
        // A login shell, as login(1) starts one, but asked with --login /
        // -l: bash started as "-bash" takes itself for /bin/sh ($BASH), and
        // the system's profile then skips its bashrc and prompt.
        sh.arg("-l");
        if let Some(env) = &env {
            sh.env_clear().envs(env.iter().map(|(k, v)| (k, v)));
        }
        sh.env("SHELL", shell);
        sh
    } else {
        let mut sh = Command::new("/bin/sh");
        sh.arg0("sh").arg("-c").arg(&command);
        if let Some(env) = &env {
            sh.env_clear().envs(env.iter().map(|(k, v)| (k, v)));
        }
        sh
    };
    // Like the shell's own `cd`: a directory that is not there is the
    // command's failure (status 1), said as the shell would.
    let dir = match &launch.cwd {
        Some(cwd) => place.home.join(cwd),
        None => place.home.clone(),
    };
    if let Err(e) = std::env::set_current_dir(&dir) {
        let shown = launch.cwd.as_deref().unwrap_or("~");
        let reason = e.to_string();
        let reason = reason.split(" (os error").next().unwrap_or(&reason);
        eprintln!("wharf-exec: cd: {shown}: {reason}");
        std::process::exit(1);
    }
    sh.env("HOME", &place.home).env("PWD", &dir);
    if let Some((uid, gid)) = launch.identity {
        // std drops the supplementary groups when root changes uid.
        sh.gid(gid).uid(uid);
    }
    if launch.tty.is_some() {
        wait_for(sh, launch.identity);
    }
    let err = sh.exec();
    fail(format_args!("cannot run /bin/sh: {err}"));
}

/// Every signal at its default and none blocked, as a login's shell
/// starts: whatever the server inherited stays out of the user's command
/// (a daemon started by a script's `&` ignores SIGINT and SIGQUIT, one
/// under `nohup` SIGHUP, and an ignored signal outlives `exec`).
fn default_signals() {
    #[allow(unsafe_code)]
    // SAFETY: the launcher is one thread here, about to exec the shell;
    // SIG_DFL installs no handler, and the mask is set from an empty set.
    unsafe {
        for signal in 1..libc::SIGRTMIN() {
            if signal != libc::SIGKILL && signal != libc::SIGSTOP {
                libc::signal(signal, libc::SIG_DFL);
            }
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
    }
}

/// On a terminal, the shell runs as a child, inside the PID namespace (as
/// `exec` would leave it outside, where its job control's process-group
/// ids would not be its children's); the launcher stays, as the user,
/// waits for it and exits with its status. Init watches the launcher: when
/// the launcher ends, or is killed, the namespace goes with it.
fn wait_for(mut sh: Command, identity: Option<(u32, u32)>) -> ! {
    let mut child = match sh.spawn() {
        Ok(child) => child,
        Err(e) => fail(format_args!("cannot start the shell: {e}")),
    };
    if let Some((uid, gid)) = identity
        && let Err(e) = init::drop_to(uid, gid)
    {
        let _ = child.kill();
        fail(format_args!("cannot give up root: {e}"));
    }
    match child.wait() {
        Ok(status) => {
            use std::os::unix::process::ExitStatusExt;
            let code = status
                .code()
                .or_else(|| status.signal().map(|n| 128 + n))
                .unwrap_or(CANNOT_RUN);
            std::process::exit(code)
        }
        Err(e) => fail(format_args!("cannot wait for the shell: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_round_trip() {
        for identity in [None, Some((65534, 65534))] {
            let l = Launch {
                cpu_secs: 60,
                file_size: 1 << 30,
                processes: 512,
                memory: 1 << 30,
                tmp_size: 1 << 26,
                identity,
                home: "/srv/wharf/homes/alice".into(),
                name: "alice".into(),
                unconfined_ok: false,
                tty: identity.map(|_| "/dev/pts/7".into()),
                cwd: identity.map(|_| "projects/a b".into()),
                net: Default::default(),
            };
            let args = l.args("echo 'a b' | wc -c");
            assert_eq!(args[0], LAUNCH_ARG);
            let parsed = Launch::parse(args.into_iter().skip(1).map(Into::into));
            assert_eq!(parsed, Some((l, "echo 'a b' | wc -c".to_owned())));
        }
        let bad = ["{", "true"].map(std::ffi::OsString::from);
        assert_eq!(Launch::parse(bad.into_iter()), None);
        let extra = ["{}", "true", "more"].map(std::ffi::OsString::from);
        assert_eq!(Launch::parse(extra.into_iter()), None);
    }
}
