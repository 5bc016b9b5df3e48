//! PID 1 of a command's PID namespace.
//!
//! The launcher starts it right after entering the namespaces (it is the
//! namespace's first process, so its PID 1). It mounts the namespace's own
//! `/proc` (as root only: the processes of other users' commands and of
//! the host stay invisible), gives up root for the user's uid, asks to be
//! killed when its parent (the launcher, by then the command's shell) dies,
//! says it is ready, and reaps orphans until then. When it dies the kernel
//! kills every process left in the namespace: nothing a command starts
//! outlives it.

use std::io::Write;
use std::time::Duration;

use rustix::mount::{MountFlags, mount};
use rustix::process::{Gid, Signal, Uid, WaitOptions, set_parent_process_death_signal, wait};
use rustix::thread::{set_thread_groups, set_thread_res_gid, set_thread_res_uid};

/// The first argument that makes a daemon binary a sandbox's init.
pub const INIT_ARG: &str = "--wharf-exec-init";

/// What init writes when ready and the namespace has its own `/proc`.
pub const PROC_MOUNTED: u8 = b'P';

/// What init writes when ready without a `/proc` of its own.
const NO_PROC: u8 = b'N';

/// The arguments that start init, dropping to `identity` when given.
pub fn args(identity: Option<(u32, u32)>) -> Vec<String> {
    let mut args = vec![INIT_ARG.to_owned()];
    if let Some((uid, gid)) = identity {
        args.push(uid.to_string());
        args.push(gid.to_string());
    }
    args
}

fn drop_to(uid: u32, gid: u32) -> rustix::io::Result<()> {
    set_thread_groups(&[])?;
    let gid = Gid::from_raw(gid);
    set_thread_res_gid(gid, gid, gid)?;
    let uid = Uid::from_raw(uid);
    set_thread_res_uid(uid, uid, uid)
}

/// Runs init with the arguments after [`INIT_ARG`]; never returns.
pub fn run(mut args: impl Iterator<Item = std::ffi::OsString>) -> ! {
    let mut num = || args.next()?.to_str()?.parse::<u32>().ok();
    let identity = num().zip(num());
    let flags = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    let proc = mount("proc", "/proc", "proc", flags, c"").is_ok();
    if let Some((uid, gid)) = identity
        && drop_to(uid, gid).is_err()
    {
        std::process::exit(super::CANNOT_RUN);
    }
    // After the uid change, which would clear it.
    if set_parent_process_death_signal(Some(Signal::KILL)).is_err() {
        std::process::exit(super::CANNOT_RUN);
    }
    // The launcher reads this only while alive: once it is written, the
    // death signal is armed for a living parent. Should the launcher be gone
    // already, the write fails and init leaves.
    let ready = if proc { PROC_MOUNTED } else { NO_PROC };
    let mut out = std::io::stdout();
    if out.write_all(&[ready]).and_then(|()| out.flush()).is_err() {
        std::process::exit(0);
    }
    loop {
        match wait(WaitOptions::empty()) {
            Ok(_) => {}
            // No children yet: orphans may come later.
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}
