//! Reaping what commands leave: each command's sandbox init outlives its
//! shell for a moment, as an orphan, and an orphan is reaped by the nearest
//! "child subreaper" above it, else by PID 1. PID 1 may be slow to reap (or,
//! in a container without an init, be this daemon, which would never reap
//! it), and unreaped processes count against the user's process limit: past
//! `--max-procs` of them, the user's commands fail. So the daemon is the
//! subreaper of its commands and reaps the orphans it adopts: exited
//! processes of Wharf users' uids, leaving its own launchers (whose
//! statuses tokio collects) and any other child alone. (Without root,
//! commands run under the server's uid and PID 1 reaps them, as before.)

use std::collections::BTreeSet;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rustix::process::{Pid, WaitOptions, getpid, set_child_subreaper, waitpid};
use wharf_store::owner::UID_BASE;

/// How often adopted orphans are looked for and reaped: a user's command
/// loop leaves at most this long's worth of them waiting.
const LOOK_EVERY: Duration = Duration::from_millis(200);

/// The pids of the launchers that run commands now: children whose exit
/// tokio reaps. Held while a launcher is spawned, so none can be mistaken
/// for an orphan before its pid is here.
static LAUNCHERS: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

/// The set of live launchers, locked.
pub(super) fn launchers() -> MutexGuard<'static, BTreeSet<i32>> {
    LAUNCHERS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Spawns a launcher, registered as one before anything can take it for
/// an orphan to reap; returns it and its pid (its group's id: launchers
/// start a session of their own).
pub(super) fn spawn_launcher(
    cmd: &mut tokio::process::Command,
) -> std::io::Result<(tokio::process::Child, Pid)> {
    let mut launchers = launchers();
    let child = cmd.spawn()?;
    let pid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .and_then(Pid::from_raw)
        .ok_or_else(|| std::io::Error::other("the new process has no pid"))?;
    launchers.insert(pid.as_raw_nonzero().get());
    Ok((child, pid))
}

/// Makes this process the reaper of its commands' orphans and reaps them
/// from now on, on a thread of its own (it outlives any one runtime);
/// once per process.
pub(super) fn adopt() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Err(e) = set_child_subreaper(Some(getpid())) {
            tracing::warn!(error = %e, "cannot become the reaper of commands' orphans; PID 1 reaps them");
            return;
        }
        let spawned = std::thread::Builder::new()
            .name("wharf-reaper".into())
            .spawn(|| {
                loop {
                    std::thread::sleep(LOOK_EVERY);
                    reap();
                }
            });
        if let Err(e) = spawned {
            // Nobody would reap what is adopted: leave it to PID 1.
            let _ = set_child_subreaper(None);
            tracing::warn!(error = %e, "cannot start the reaper of commands' orphans; PID 1 reaps them");
        }
    });
}

/// This process's children, from every thread's `children` list.
fn children() -> Vec<i32> {
    let mut pids = Vec::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return pids;
    };
    for task in tasks.flatten() {
        if let Ok(list) = std::fs::read_to_string(task.path().join("children")) {
            pids.extend(
                list.split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok()),
            );
        }
    }
    pids
}

/// True when `pid` has exited, waits to be reaped, and ran as a Wharf
/// user (as each command's sandbox init does when the server is root):
/// never a process this program started for itself.
fn is_users_zombie(pid: i32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
    };
    field("State:") == Some("Z")
        && field("Uid:")
            .and_then(|u| u.parse::<u32>().ok())
            .is_some_and(|uid| uid >= UID_BASE)
}

/// Reaps every exited child that ran as a Wharf user and is not a
/// launcher; returns how many.
pub(super) fn reap() -> usize {
    let launchers = launchers();
    let mut reaped = 0;
    for pid in children() {
        if launchers.contains(&pid) || !is_users_zombie(pid) {
            continue;
        }
        if let Some(pid) = Pid::from_raw(pid)
            && let Ok(Some(_)) = waitpid(Some(pid), WaitOptions::NOHANG)
        {
            reaped += 1;
        }
    }
    reaped
}
