//! `wharf-exec-launch`: the command launcher alone (see
//! `wharf_execd::launch`), a small binary a daemon starts each command
//! through when it lies beside the daemon's own. It starts far faster than
//! the daemon's binary, which stays the fallback (it launches the same way).

fn main() {
    wharf_execd::launch::launch_if_asked();
    eprintln!(
        "wharf-exec-launch: this program starts the commands of Wharf's daemons (wharf-execd, wharf-sshd, wharfd), which run it themselves; it is not run by hand"
    );
    std::process::exit(2);
}
