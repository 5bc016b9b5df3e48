//! The quota while a command runs.
//!
//! Where the kernel enforces the quota (homes on btrfs with qgroups), a
//! write past it fails with `EDQUOT` in the command itself and nothing here
//! is needed for the bytes; the file quota is still watched.
//!
//! Elsewhere the kernel caps each file a command writes at the user's free
//! space (`RLIMIT_FSIZE`), but not their sum, so two measures run beside
//! each other:
//!
//! - **a write meter**, read more often the less room is left (every 2 ms
//!   when the home is nearly full, up to every [`METER_TICK`]): the bytes the command's
//!   processes have put into files (`write_bytes` less `cancelled_write_bytes`
//!   of `/proc/PID/io`, which also holds what their reaped children wrote),
//!   read for the processes of the command's cgroup, or of its PID
//!   namespace where it has no cgroup. Writes to the private `/tmp` (tmpfs)
//!   and to pipes are not counted. Once the command has written more than
//!   was free at the last measurement, the home is measured at once.
//! - **a measurement of the home** ([`scan_home`]) at least every
//!   [`MAX_SCAN_EVERY`], and more often where it is cheap: four times the
//!   last measurement's duration, but not more often than [`MIN_SCAN_EVERY`].
//!
//! Past the quota (or a home that cannot be measured, which counts as past
//! it), the run ends. How far past a command can get is bounded by what it
//! writes in one tick and one measurement; the server prints the bound it
//! measured. The quotas are read again at every measurement, so an
//! administrator who lowers one reaches running commands at once.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use wharf_core::size::format_size;
use wharf_store::home::HomeUsage;
use wharf_store::home::scan_home;

/// How often the write meter is read when the home has plenty of room.
pub(crate) const METER_TICK: Duration = Duration::from_millis(50);
/// The longest time between two measurements of a running command's home.
pub(crate) const MAX_SCAN_EVERY: Duration = Duration::from_millis(500);
/// The shortest time between two measurements.
const MIN_SCAN_EVERY: Duration = Duration::from_millis(50);

/// The quotas at a moment: bytes and entries (`None`: unlimited).
pub(super) type Quotas = (Option<u64>, Option<u64>);

/// Why a run went past its quota, in the words its client gets. A home
/// that was over its quota already when the command started (`start`:
/// the bytes and entries it stored then, reservations aside) may stay
/// there, not grow: a command that makes room must be able to run.
pub(super) fn over(usage: &HomeUsage, (bytes, files): Quotas, start: (u64, u64)) -> Option<String> {
    if let Some(quota) = bytes
        && usage.bytes.saturating_add(usage.reserved) > quota.max(start.0)
    {
        return Some(format!("your quota of {}", format_size(quota)));
    }
    if let Some(quota) = files
        && usage.files.saturating_add(usage.reserved_files) > quota.max(start.1)
    {
        return Some(format!("your file quota of {quota} entries"));
    }
    None
}

/// Resolves with the reason once `home` holds more than the quotas
/// `quotas()` gives at that moment (its entries plus the reservations of
/// partial uploads), or cannot be measured; a home without quotas is not
/// measured. `command` is the launcher's pid (the shell's), whose
/// processes the write meter reads; `kernel` is true where the kernel
/// enforces the byte quota.
pub(super) async fn exceeded(
    home: PathBuf,
    command: Option<u32>,
    kernel: bool,
    start: (u64, u64),
    quotas: impl Fn() -> Quotas,
) -> String {
    let meter = command.filter(|_| !kernel).map(Meter::new);
    // The kernel holds the bytes; what is left to watch is the file quota.
    let quotas = move || {
        let (bytes, files) = quotas();
        (bytes.filter(|_| !kernel), files)
    };
    let mut every = MIN_SCAN_EVERY;
    let mut last_scan = Instant::now();
    // What the command may still write before the home is measured again:
    // the meter's reading then, and the bytes that were free.
    let free_at_start = quotas().0.map(|q| q.max(start.0).saturating_sub(start.0));
    let mut budget: Option<(u64, u64)> = free_at_start.filter(|_| meter.is_some()).map(|f| (0, f));
    loop {
        let tick = match (&meter, budget) {
            (Some(_), Some((_, free))) => meter_tick(free),
            (Some(_), None) => METER_TICK,
            (None, _) => every,
        };
        tokio::time::sleep(tick).await;
        let limits = quotas();
        if limits == (None, None) {
            continue;
        }
        let written = meter.as_ref().map(Meter::read);
        let tripped = match (budget, written) {
            (Some((base, free)), Some(now)) => now.saturating_sub(base) > free,
            _ => false,
        };
        if !tripped && last_scan.elapsed() < every {
            continue;
        }
        let dir = home.clone();
        let began = Instant::now();
        let measured = tokio::task::spawn_blocking(move || scan_home(&dir)).await;
        let took = began.elapsed();
        last_scan = Instant::now();
        every = (took * 4).clamp(MIN_SCAN_EVERY, MAX_SCAN_EVERY);
        let limits = quotas();
        match measured {
            Ok(Ok(usage)) => {
                if let Some(why) = over(&usage, limits, start) {
                    return why;
                }
                budget = limits.0.zip(written).map(|(quota, base)| {
                    let held = usage.bytes.saturating_add(usage.reserved);
                    (base, quota.max(start.0).saturating_sub(held))
                });
            }
            Ok(Err(e)) => {
                tracing::warn!(home = %home.display(), error = %e, "cannot measure a home while a command runs; stopping it");
                return "what your home can hold: it could not be measured".to_owned();
            }
            Err(e) => tracing::warn!(error = %e, "home scan task failed"),
        }
    }
}

/// How often to read the meter with `free` bytes left: often enough that a
/// command writing at [`FASTEST_WRITES`] cannot fill half of it between two
/// readings, never more often than every [`MIN_METER_TICK`], nor less
/// often than every [`METER_TICK`].
fn meter_tick(free: u64) -> Duration {
    let secs = free as f64 / 2.0 / FASTEST_WRITES as f64;
    Duration::from_secs_f64(secs).clamp(MIN_METER_TICK, METER_TICK)
}

/// Bytes a second a command can put into the page cache here (measured:
/// `head -c` into files, about 1.5 GB/s on this machine), with room.
const FASTEST_WRITES: u64 = 4 << 30;
/// The most often the meter is read (when the home is nearly full).
const MIN_METER_TICK: Duration = Duration::from_millis(2);

/// The bytes a command's processes have written to files so far.
struct Meter {
    /// The command's cgroup's list of processes, when it has a cgroup.
    procs: Option<PathBuf>,
    /// The shell's pid (outside the PID namespace) and its namespace for
    /// children, to find the processes without a cgroup.
    shell: u32,
    namespace: Option<std::ffi::OsString>,
}

impl Meter {
    fn new(shell: u32) -> Meter {
        let procs = crate::launch::cgroup::command_cgroup(shell)
            .map(|dir| dir.join("cgroup.procs"))
            .filter(|p| p.exists());
        let namespace = std::fs::read_link(format!("/proc/{shell}/ns/pid_for_children"))
            .ok()
            .map(PathBuf::into_os_string);
        Meter {
            procs,
            shell,
            namespace,
        }
    }

    /// The sum over the command's processes now.
    fn read(&self) -> u64 {
        let mut total = written_by(self.shell);
        if let Some(list) = self
            .procs
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
        {
            for pid in list.lines().filter_map(|l| l.trim().parse::<u32>().ok()) {
                if pid != self.shell {
                    total = total.saturating_add(written_by(pid));
                }
            }
            return total;
        }
        let (Some(ns), Ok(all)) = (&self.namespace, std::fs::read_dir("/proc")) else {
            return total;
        };
        for entry in all.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let same = std::fs::read_link(Path::new("/proc").join(pid.to_string()).join("ns/pid"))
                .is_ok_and(|link| link.as_os_str() == ns.as_os_str());
            if same {
                total = total.saturating_add(written_by(pid));
            }
        }
        total
    }
}

/// What process `pid` (and the children it reaped) put into files, less
/// what was truncated away before it reached the disk; 0 when it is gone.
fn written_by(pid: u32) -> u64 {
    let Ok(io) = std::fs::read_to_string(format!("/proc/{pid}/io")) else {
        return 0;
    };
    let field = |name: &str| {
        io.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    field("write_bytes:").saturating_sub(field("cancelled_write_bytes:"))
}

/// Which homes the kernel holds to their quota (a btrfs subvolume whose
/// qgroup limit is the user's quota), looked up at most every
/// [`KERNEL_RECHECK`] per home.
#[derive(Default)]
pub(super) struct KernelQuotas {
    seen: std::sync::Mutex<std::collections::HashMap<PathBuf, (Option<u64>, Instant)>>,
}

/// How long a home's qgroup limit is taken as read.
const KERNEL_RECHECK: Duration = Duration::from_secs(10);

impl KernelQuotas {
    /// True when the kernel holds `home` to exactly `quota` bytes.
    pub(super) async fn enforce(&self, home: &Path, quota: Option<u64>) -> bool {
        let Some(quota) = quota else {
            return false;
        };
        let cached = self
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(home)
            .filter(|(_, at)| at.elapsed() < KERNEL_RECHECK)
            .map(|(limit, _)| *limit);
        let limit = match cached {
            Some(limit) => limit,
            None => {
                let dir = home.to_path_buf();
                let limit = tokio::task::spawn_blocking(move || {
                    use wharf_store::home::btrfs;
                    btrfs::is_subvolume(&dir)
                        .then(|| btrfs::qgroup(&dir).ok().and_then(|q| q.limit))
                        .flatten()
                })
                .await
                .ok()
                .flatten();
                self.seen
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(home.to_path_buf(), (limit, Instant::now()));
                limit
            }
        };
        limit == Some(quota)
    }
}
