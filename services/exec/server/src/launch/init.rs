//! PID 1 of a command's PID namespace.
//!
//! The launcher forks it right after entering the namespaces (it is the
//! namespace's first process, so its PID 1), with no file of the
//! launcher's open but the three below: not a binary run again, a copy of
//! the small single-threaded launcher (starting the daemon's binary again
//! cost a millisecond of every command). It mounts the namespace's own
//! `/proc` in the command's root being built (in a private mount namespace
//! only: the processes of other users' commands and of the host stay
//! invisible) and says it is ready; then waits to be told whose command
//! the namespace is for (a spare launcher starts its init before it has a
//! command, see [`super::spare`]), gives up root for the user's uid, and
//! reaps orphans until its parent (the launcher, by then the command's
//! shell) is gone; then it exits. When it dies the kernel kills every
//! process left in the namespace: nothing a command starts outlives it.
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

/// Bytes of the message that tells init whose the namespace is: a tag
/// ([`AS_USER`] or [`AS_IS`]), then the uid and gid (little-endian).
pub(super) const TOLD: usize = 9;

/// The tag of a message that tells init to become the user.
const AS_USER: u8 = b'U';

/// The tag of a message that tells init to stay as it is (the server is
/// not root).
const AS_IS: u8 = b'S';

/// The message that tells init to become `identity` (none: to stay as it
/// is).
pub(super) fn told(identity: Option<(u32, u32)>) -> [u8; TOLD] {
    let mut message = [0u8; TOLD];
    match identity {
        Some((uid, gid)) => {
            message[0] = AS_USER;
            message[1..5].copy_from_slice(&uid.to_le_bytes());
            message[5..9].copy_from_slice(&gid.to_le_bytes());
        }
        None => message[0] = AS_IS,
    }
    message
}

/// What a message made by [`told`] says; `None`: not such a message.
fn identity_of(message: &[u8; TOLD]) -> Option<Option<(u32, u32)>> {
    let word = |at: usize| {
        u32::from_le_bytes([
            message[at],
            message[at + 1],
            message[at + 2],
            message[at + 3],
        ])
    };
    match message[0] {
        AS_USER => Some(Some((word(1), word(5)))),
        AS_IS => Some(None),
        _ => None,
    }
}

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
/// process): mounts `/proc` at `proc_at` when given, writes its readiness
/// to `ready`, reads from `told` whose the namespace is (a message made by
/// [`told`]) and becomes that user, then reaps orphans until the process
/// `parent` (a pidfd: readable once it has exited) is gone; never returns.
/// Should the launcher end before it says (its end of `told` closes),
/// init ends, and the namespace with it.
pub(super) fn serve(parent: OwnedFd, ready: OwnedFd, told: OwnedFd, proc_at: Option<&Path>) -> ! {
    let flags = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    let proc = proc_at.is_some_and(|at| mount("proc", at, "proc", flags, c"").is_ok());
    // A second guard, where the kernel delivers it (no Landlock scope).
    let _ = set_parent_process_death_signal(Some(Signal::KILL));
    let said = if proc { PROC_MOUNTED } else { NO_PROC };
    if rustix::io::write(&ready, &[said]) != Ok(1) {
        std::process::exit(0);
    }
    drop(ready);
    let mut message = [0u8; TOLD];
    let mut have = 0;
    while have < TOLD {
        match rustix::io::read(&told, &mut message[have..]) {
            Ok(0) => std::process::exit(0),
            Ok(n) => have += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => std::process::exit(0),
        }
    }
    drop(told);
    match identity_of(&message) {
        Some(Some((uid, gid))) => {
            if drop_to(uid, gid).is_err() {
                std::process::exit(super::CANNOT_RUN);
            }
        }
        Some(None) => {}
        None => std::process::exit(super::CANNOT_RUN),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_init_is_told_round_trips() {
        for identity in [
            None,
            Some((0, 0)),
            Some((1_900_000_001, 7)),
            Some((u32::MAX, 65534)),
        ] {
            assert_eq!(identity_of(&told(identity)), Some(identity));
        }
        assert_eq!(identity_of(&[0; TOLD]), None);
    }
}
