//! The command launcher: the last step between the server and `sh -c`.
//!
//! The server starts each command as `DAEMON --wharf-exec-launch ...`
//! (the daemon binary itself, which calls [`launch_if_asked`] first thing)
//! with `posix_spawn`, already in its own process group, in the home, with
//! the scrubbed environment. The launcher sets the resource limits on
//! itself, drops to the command user when asked, and replaces itself with
//! `sh -c COMMAND`. Doing this in a fresh small process, rather than
//! between fork and exec of the server, keeps the server on `posix_spawn`
//! (a fork copies the server's page tables: milliseconds for a server with
//! tens of MiB in use) and needs no unsafe code.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::process::Command;

use rustix::process::{Resource, Rlimit, setrlimit};

/// The first argument that makes a daemon binary a launcher.
pub const LAUNCH_ARG: &str = "--wharf-exec-launch";

/// Exit status when the launcher itself fails (as a shell's for "cannot
/// execute").
const CANNOT_RUN: i32 = 126;

/// What the launcher is told, in argument order after [`LAUNCH_ARG`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// CPU seconds (`RLIMIT_CPU` soft limit; the hard limit is one more).
    pub cpu_secs: u64,
    /// Largest file, in bytes (`RLIMIT_FSIZE`).
    pub file_size: u64,
    /// Processes of the user (`RLIMIT_NPROC`).
    pub processes: u64,
    /// User and group to become, if any.
    pub identity: Option<(u32, u32)>,
    /// The command line for `sh -c`.
    pub command: OsString,
}

impl Launch {
    /// The arguments that ask a daemon binary for this launch.
    pub fn args(&self) -> Vec<OsString> {
        let (uid, gid) = match self.identity {
            Some((u, g)) => (u.to_string(), g.to_string()),
            None => ("-".to_owned(), "-".to_owned()),
        };
        let mut args: Vec<OsString> = [
            LAUNCH_ARG.to_owned(),
            self.cpu_secs.to_string(),
            self.file_size.to_string(),
            self.processes.to_string(),
            uid,
            gid,
        ]
        .into_iter()
        .map(OsString::from)
        .collect();
        args.push(self.command.clone());
        args
    }

    fn parse(mut args: impl Iterator<Item = OsString>) -> Option<Launch> {
        let mut num = |any: bool| -> Option<Option<u64>> {
            let arg = args.next()?;
            let text = arg.to_str()?;
            if any && text == "-" {
                return Some(None);
            }
            text.parse().ok().map(Some)
        };
        let cpu_secs = num(false)??;
        let file_size = num(false)??;
        let processes = num(false)??;
        let uid = num(true)?;
        let gid = num(true)?;
        let identity = match (uid, gid) {
            (Some(u), Some(g)) => Some((u32::try_from(u).ok()?, u32::try_from(g).ok()?)),
            (None, None) => None,
            _ => return None,
        };
        let command = args.next()?;
        args.next().is_none().then_some(Launch {
            cpu_secs,
            file_size,
            processes,
            identity,
            command,
        })
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
    setrlimit(Resource::Fsize, hard(l.file_size))?;
    setrlimit(Resource::Nproc, hard(l.processes))?;
    setrlimit(Resource::Core, hard(0))?;
    Ok(())
}

/// When this process was started with [`LAUNCH_ARG`], becomes the command
/// and never returns; otherwise returns at once. Daemons that serve exec
/// call it first thing in `main`.
pub fn launch_if_asked() {
    let mut args = std::env::args_os();
    args.next();
    if args.next().as_deref() != Some(LAUNCH_ARG.as_ref()) {
        return;
    }
    let Some(launch) = Launch::parse(args) else {
        eprintln!("wharf-exec launcher: malformed arguments (this mode is for wharf-execd only)");
        std::process::exit(CANNOT_RUN);
    };
    if let Err(e) = set_limits(&launch) {
        eprintln!("wharf-exec launcher: cannot set resource limits: {e}");
        std::process::exit(CANNOT_RUN);
    }
    let mut sh = Command::new("/bin/sh");
    sh.arg0("sh").arg("-c").arg(&launch.command);
    if let Some((uid, gid)) = launch.identity {
        // std drops the supplementary groups when root changes uid.
        sh.gid(gid).uid(uid);
    }
    let err = sh.exec();
    eprintln!("wharf-exec launcher: cannot run /bin/sh: {err}");
    std::process::exit(CANNOT_RUN);
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
                identity,
                command: "echo 'a b' | wc -c".into(),
            };
            let args = l.args();
            assert_eq!(args[0], LAUNCH_ARG);
            assert_eq!(Launch::parse(args.into_iter().skip(1)), Some(l));
        }
        let bad = ["60", "x", "1", "-", "-", "true"].map(OsString::from);
        assert_eq!(Launch::parse(bad.into_iter()), None);
        let half = ["60", "1", "1", "5", "-", "true"].map(OsString::from);
        assert_eq!(Launch::parse(half.into_iter()), None);
    }
}
