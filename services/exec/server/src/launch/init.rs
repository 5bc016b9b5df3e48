//! PID 1 of a command's PID namespace.
//!
//! The launcher starts it right after entering the namespaces (it is the
//! namespace's first process, so its PID 1). It mounts the namespace's own
//! `/proc` in the command's root being built (in a private mount namespace
//! only: the processes of other users' commands and of the host stay
//! invisible), gives up root for the user's uid, says it is
//! ready, and reaps orphans until its parent (the launcher, by then the
//! command's shell) is gone; then it exits. When it dies the kernel kills
//! every process left in the namespace: nothing a command starts outlives
//! it.
//!
//! The parent is watched through a pidfd the launcher hands down as init's
//! standard input, not with
//! `PR_SET_PDEATHSIG` alone: the dying shell is inside Landlock's signal
//! scope and init is not, so the kernel refuses the death signal on the
//! shell's behalf.

use std::io::Write;
use std::time::Duration;

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::mount::{MountFlags, mount};
use rustix::process::{Gid, Signal, Uid, WaitOptions, set_parent_process_death_signal, wait};
use rustix::thread::{set_thread_groups, set_thread_res_gid, set_thread_res_uid};

/// The first argument that makes a daemon binary a sandbox's init.
pub const INIT_ARG: &str = "--wharf-exec-init";

/// What init writes when ready and the namespace has its own `/proc`.
pub const PROC_MOUNTED: u8 = b'P';

/// What init writes when ready without a `/proc` of its own.
const NO_PROC: u8 = b'N';

/// How often init looks for orphans to reap (it wakes at once when its
/// parent dies).
const REAP_EVERY: Duration = Duration::from_millis(100);

/// Asks init to mount the namespace's `/proc`.
const PROC: &str = "proc";

/// Asks init to leave `/proc` alone.
const NO_PROC_ARG: &str = "no-proc";

/// The arguments that start init, mounting `/proc` at `proc` when given,
/// dropping to `identity` when given. Its standard input must be a pidfd
/// of its parent.
pub fn args(proc: Option<&std::path::Path>, identity: Option<(u32, u32)>) -> Vec<String> {
    let mut args = vec![INIT_ARG.to_owned()];
    match proc {
        Some(at) => args.extend([PROC.to_owned(), at.to_string_lossy().into_owned()]),
        None => args.push(NO_PROC_ARG.to_owned()),
    }
    if let Some((uid, gid)) = identity {
        args.push(uid.to_string());
        args.push(gid.to_string());
    }
    args
}

/// Gives up root for `uid` and `gid`, with no supplementary groups.
pub(super) fn drop_to(uid: u32, gid: u32) -> rustix::io::Result<()> {
    set_thread_groups(&[])?;
    let gid = Gid::from_raw(gid);
    set_thread_res_gid(gid, gid, gid)?;
    let uid = Uid::from_raw(uid);
    set_thread_res_uid(uid, uid, uid)
}

/// Runs init with the arguments after [`INIT_ARG`]; never returns.
pub fn run(mut args: impl Iterator<Item = std::ffi::OsString>) -> ! {
    let proc_at = match args.next() {
        Some(a) if a == PROC => args.next(),
        _ => None,
    };
    let mut num = || args.next()?.to_str()?.parse::<u32>().ok();
    let identity = num().zip(num());
    // A pidfd of the parent: readable once the parent has exited.
    let parent = std::io::stdin();
    let flags = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    let proc = proc_at.is_some_and(|at| mount("proc", at.as_os_str(), "proc", flags, c"").is_ok());
    if let Some((uid, gid)) = identity
        && drop_to(uid, gid).is_err()
    {
        std::process::exit(super::CANNOT_RUN);
    }
    // A second guard, where the kernel delivers it (no Landlock scope).
    let _ = set_parent_process_death_signal(Some(Signal::KILL));
    let ready = if proc { PROC_MOUNTED } else { NO_PROC };
    let mut out = std::io::stdout();
    if out.write_all(&[ready]).and_then(|()| out.flush()).is_err() {
        std::process::exit(0);
    }
    let timeout = Timespec::try_from(REAP_EVERY).unwrap_or(Timespec {
        tv_sec: 0,
        tv_nsec: 100_000_000,
    });
    loop {
        while let Ok(Some(_)) = wait(WaitOptions::NOHANG) {}
        let mut fds = [PollFd::new(&parent, PollFlags::IN)];
        match poll(&mut fds, Some(&timeout)) {
            // The parent has exited: the namespace goes with init.
            Ok(n) if n > 0 => std::process::exit(0),
            _ => {}
        }
    }
}
