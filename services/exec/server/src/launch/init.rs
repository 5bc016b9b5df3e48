//! PID 1 of a command's PID namespace.
//!
//! The launcher forks it right after entering the namespaces (it is the
//! namespace's first process, so its PID 1), with no file of the
//! launcher's open but the two below: not a binary run again, a copy of
//! the small single-threaded launcher (starting the daemon's binary again
//! cost a millisecond of every command). It mounts the namespace's own
//! `/proc` in the command's root being built (in a private mount namespace
//! only: the processes of other users' commands and of the host stay
//! invisible), gives up root for the user's uid, says it is
//! ready, and reaps orphans until its parent (the launcher, by then the
//! command's shell) is gone; then it exits. When it dies the kernel kills
//! every process left in the namespace: nothing a command starts outlives
//! it.
//!
//! The parent is watched through a pidfd the launcher hands down, not with
//! `PR_SET_PDEATHSIG` alone: the dying shell is inside Landlock's signal
//! scope and init is not, so the kernel refuses the death signal on the
//! shell's behalf.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::Duration;

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::mount::{MountFlags, mount};
use rustix::process::{Gid, Signal, Uid, WaitOptions, set_parent_process_death_signal, wait};
use rustix::thread::{set_thread_groups, set_thread_res_gid, set_thread_res_uid};

/// What init writes when ready and the namespace has its own `/proc`.
pub const PROC_MOUNTED: u8 = b'P';

/// What init writes when ready without a `/proc` of its own.
const NO_PROC: u8 = b'N';

/// How often init looks for orphans to reap (it wakes at once when its
/// parent dies).
const REAP_EVERY: Duration = Duration::from_millis(100);

/// Gives up root for `uid` and `gid`, with no supplementary groups.
pub(super) fn drop_to(uid: u32, gid: u32) -> rustix::io::Result<()> {
    set_thread_groups(&[])?;
    let gid = Gid::from_raw(gid);
    set_thread_res_gid(gid, gid, gid)?;
    let uid = Uid::from_raw(uid);
    set_thread_res_uid(uid, uid, uid)
}

/// Runs init in the launcher's child made for it (the namespace's first
/// process): mounts `/proc` at `proc_at` when given, drops to `identity`
/// when given, writes its readiness to `ready`, then reaps orphans until
/// the process `parent` (a pidfd: readable once it has exited) is gone;
/// never returns.
pub(super) fn serve(
    parent: OwnedFd,
    ready: OwnedFd,
    proc_at: Option<&Path>,
    identity: Option<(u32, u32)>,
) -> ! {
    let flags = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    let proc = proc_at.is_some_and(|at| mount("proc", at, "proc", flags, c"").is_ok());
    if let Some((uid, gid)) = identity
        && drop_to(uid, gid).is_err()
    {
        std::process::exit(super::CANNOT_RUN);
    }
    // A second guard, where the kernel delivers it (no Landlock scope).
    let _ = set_parent_process_death_signal(Some(Signal::KILL));
    let said = if proc { PROC_MOUNTED } else { NO_PROC };
    if rustix::io::write(&ready, &[said]) != Ok(1) {
        std::process::exit(0);
    }
    drop(ready);
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
