//! The sandbox of one command: namespaces, mounts and Landlock, set up by
//! the launcher on itself before it becomes the shell.

use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use landlock::{
    ABI, Access, AccessFs, CompatLevel, Compatible, Ruleset, RulesetAttr, RulesetCreatedAttr,
    RulesetStatus, Scope, path_beneath_rules,
};
use rustix::fs::{Mode, OFlags};
use rustix::mount::{
    MountFlags, MountPropagationFlags, mount, mount_bind, mount_bind_recursive, mount_change,
};
use rustix::process::{
    PidfdFlags, Resource, geteuid, getgid, getpid, getuid, pidfd_open, setrlimit,
};
use rustix::thread::{LinkNameSpaceType, UnshareFlags};

use wharf_store::home::INTERNAL_DIR;

use super::net::{self, NetPlace};
use super::{Launch, hard, init};

/// Directories a shell and its programs read and run from.
pub const SYSTEM_DIRS: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt",
];

/// Devices every program may open.
const DEVICES: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
];

/// A part of the sandbox the kernel (or the container) would not give.
#[derive(Debug, thiserror::Error)]
#[error(
    "the sandbox is incomplete: {what} failed: {source}; commands are not run unconfined unless the server is started with --allow-unconfined-exec"
)]
pub struct Missing {
    /// The mechanism, as an operator would search for it.
    pub what: &'static str,
    /// What the kernel said.
    pub source: std::io::Error,
}

fn missing(what: &'static str) -> impl FnOnce(rustix::io::Errno) -> Missing {
    move |e| Missing {
        what,
        source: e.into(),
    }
}

/// Where the command finds itself once inside.
#[derive(Debug)]
pub struct Place {
    /// Its home (and working directory), as the command sees it.
    pub home: PathBuf,
}

/// What a spare launcher builds of the sandbox before its command comes
/// (see [`prepare`]): everything that is the same for every user.
pub struct Prepared {
    /// The mount and PID namespaces the spare came from, to go back to
    /// when its command cannot use what was built.
    origin: [OwnedFd; 2],
    /// The size of `/tmp`, `/run` and `/dev/shm` as mounted.
    tmp_size: u64,
    /// The host's `/proc`, where the user's network namespace is found.
    host_proc: OwnedFd,
    /// The host's files the command's `/etc` is made from.
    host: HostFiles,
    /// The PID namespace's init, waiting to be told whose it is.
    init: Init,
    /// Landlock's rules for the built root, without the home's.
    rules: landlock::RulesetCreated,
    /// The seccomp filters, compiled.
    filters: Vec<seccompiler::BpfProgram>,
}

/// Builds, in a spare launcher run as root, the part of the sandbox that
/// needs no command yet: new mount and PID namespaces, the command's root
/// without the user's part (the system directories, `/tmp`, `/run` and
/// `/dev/shm` of `tmp_size` bytes, the devices), the namespace's init with
/// its `/proc`, Landlock's rules for all of that, the seccomp filters, and
/// the pivot into that root, the host's tree let go. Its command then
/// does only the user's part ([`enter`]), its home coming as a mount the
/// server cloned (`open_tree`) from the host's tree as it is then.
/// `None` when not root (a user namespace is made with the command's
/// network, so it waits for the command) or when a step fails (the spare
/// is then back where it began, and its command builds everything).
pub fn prepare(tmp_size: u64) -> Option<Prepared> {
    if !geteuid().is_root() {
        return None;
    }
    let open = |path: &str, flags: OFlags| {
        rustix::fs::open(path, flags | OFlags::CLOEXEC, Mode::empty()).ok()
    };
    let origin = [
        open("/proc/self/ns/mnt", OFlags::RDONLY)?,
        open("/proc/self/ns/pid", OFlags::RDONLY)?,
    ];
    let host_proc = open("/proc", OFlags::PATH | OFlags::DIRECTORY)?;
    let mut init = None;
    let built = (|| {
        unshare(UnshareFlags::NEWNS).map_err(missing("creating a mount namespace"))?;
        build_base(tmp_size)?;
        let host = HostFiles::read();
        unshare(UnshareFlags::NEWPID).map_err(missing("creating a PID namespace"))?;
        let started = start_init(Some(&Path::new(NEW_ROOT).join("proc")))?;
        let proc = started.proc;
        init = Some(started);
        if !proc {
            return Err(Missing {
                what: "mounting the PID namespace's /proc",
                source: std::io::Error::other("init could not mount it"),
            });
        }
        let rules = landlock_rules(Path::new(NEW_ROOT), true, true)?;
        let filters = seccomp_filters()?;
        pivot()?;
        Ok((host, rules, filters))
    })();
    match built {
        Ok((host, rules, filters)) => Some(Prepared {
            origin,
            tmp_size,
            host_proc,
            host,
            init: init?,
            rules,
            filters,
        }),
        Err(_) => {
            back_to(&origin, init);
            None
        }
    }
}

/// Leaves what a spare built: its init killed (and its PID namespace
/// with it), this process back in the namespaces it came from (its root
/// and working directory the host's `/`).
fn back_to(origin: &[OwnedFd; 2], init: Option<Init>) {
    if let Some(init) = init {
        init.kill();
    }
    for (ns, kind) in origin
        .iter()
        .zip([LinkNameSpaceType::Mount, LinkNameSpaceType::ProcessID])
    {
        if let Err(e) = rustix::thread::move_into_link_name_space(ns.as_fd(), Some(kind)) {
            // Not back: the command cannot be built from here.
            super::fail(format_args!("cannot leave a spare's namespaces: {e}"));
        }
    }
}

/// Puts this (single-threaded) process into the command's sandbox,
/// finishing what a spare `prepared` when there is that and the server
/// sent the home as a mount of its own (`home_tree`). A part that fails
/// is an error unless the operator allowed unconfined commands, then it
/// is left out.
pub fn enter(
    l: &Launch,
    prepared: Option<Prepared>,
    home_tree: Option<OwnedFd>,
) -> Result<Place, Missing> {
    if let Some(prepared) = prepared {
        match home_tree {
            Some(tree) if prepared.fits(l) => return enter_prepared(l, prepared, tree),
            // Built again from the host's tree, as a launcher started for
            // its command does.
            _ => back_to(&prepared.origin, Some(prepared.init)),
        }
    }
    let tolerate = |r: Result<(), Missing>| tolerated(l, r).map(|done| done.is_some());
    let isolated = tolerate(namespaces(&l.net))?;
    // The home, opened in the new mount namespace (a bind mount's source
    // must be of the caller's namespace) before anything is mounted over
    // the path to it.
    let home_fd = rustix::fs::open(
        &l.home,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(missing("opening the home"))?;
    // After the user namespace: its own count, not the daemon's account's.
    setrlimit(Resource::Nproc, hard(l.processes)).map_err(missing("the process limit"))?;
    let mut home = l.home.clone();
    let mut root = PathBuf::from("/");
    let mut tmp = false;
    let mut proc = false;
    let mut init = None;
    if isolated {
        let shown = Path::new("/home").join(&l.name);
        let built = tolerate(build_base(l.tmp_size).and_then(|()| {
            let host = HostFiles::read();
            build_user(l, Path::new(NEW_ROOT), Home::Bound(&home_fd), &shown, &host)
        }))?;
        // A PID namespace needs its init whatever else failed; it mounts a
        // `/proc` only in a mount namespace known to be private, in the
        // new root while the host's `/proc` is still there to spawn it
        // from (and, in a user namespace, to show that nothing is hidden).
        let proc_at = built.then(|| Path::new(NEW_ROOT).join("proc"));
        let started = start_init(proc_at.as_deref())?;
        started.tell(l.identity)?;
        let proc_mounted = started.proc;
        init = Some(started);
        if built {
            // Landlock's rules take the directories as they are now, and
            // hold them wherever they are seen from after the pivot.
            root = PathBuf::from(NEW_ROOT);
            tmp = true;
            proc = proc_mounted;
        }
    }
    let rules = tolerated(l, landlock_rules(&root, tmp, proc))?;
    if tmp && tolerate(pivot().and_then(|()| seal()))? {
        home = Path::new("/home").join(&l.name);
    }
    drop(init);
    if let Some(rules) = rules {
        tolerate(restrict(rules, &home, l.tty.as_deref()))?;
    }
    tolerate(seccomp_filters().and_then(apply_filters))?;
    Ok(Place { home })
}

/// What a part of the sandbox gave, or none where it failed and the
/// operator allowed running without it (said on the command's error
/// output).
fn tolerated<T>(l: &Launch, part: Result<T, Missing>) -> Result<Option<T>, Missing> {
    match part {
        Ok(done) => Ok(Some(done)),
        Err(e) if l.unconfined_ok => {
            eprintln!("wharf-exec: running unconfined: {}", e.source);
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// The command's part of a sandbox a spare prepared (its root is `/`
/// already): the network, the home (`tree`, a mount the server cloned)
/// and the rest of the user's part of the root, init told whose it is,
/// the root sealed, Landlock with the home, the filters.
fn enter_prepared(l: &Launch, p: Prepared, tree: OwnedFd) -> Result<Place, Missing> {
    let flags = net::join(&l.net, Some(&p.host_proc)).map_err(|source| Missing {
        what: "joining the user's private network",
        source,
    })?;
    if !flags.is_empty() {
        unshare(flags).map_err(missing("creating a network namespace"))?;
    }
    if l.net == NetPlace::Own {
        let _ = net::loopback_up();
    }
    setrlimit(Resource::Nproc, hard(l.processes)).map_err(missing("the process limit"))?;
    let shown = Path::new("/home").join(&l.name);
    build_user(l, Path::new("/"), Home::Tree(tree), &shown, &p.host)?;
    p.init.tell(l.identity)?;
    seal()?;
    drop((p.origin, p.host_proc, p.init));
    restrict(p.rules, &shown, l.tty.as_deref())?;
    apply_filters(p.filters)?;
    Ok(Place { home: shown })
}

impl Prepared {
    /// Whether what was built serves `l`: as root (the user's own uid),
    /// `/tmp` of its size, no terminal, a network that needs no user
    /// namespace.
    fn fits(&self, l: &Launch) -> bool {
        l.identity.is_some()
            && l.tmp_size == self.tmp_size
            && l.tty.is_none()
            && !matches!(l.net, NetPlace::Join { user: Some(_), .. })
    }
}

/// The host's files that the command's `/etc` is made from, read before
/// the host's tree is let go.
struct HostFiles {
    /// `/etc/passwd`, when there is one.
    passwd: Option<String>,
    /// `/etc/group`, when there is one.
    group: Option<String>,
    /// `/etc/resolv.conf`, when readable: its text, and where it leads
    /// when it is a link.
    resolv: Option<(String, Option<PathBuf>)>,
}

impl HostFiles {
    fn read() -> HostFiles {
        // A file there but unreadable: the user's entry alone.
        let text = |path: &str| {
            Path::new(path)
                .exists()
                .then(|| std::fs::read_to_string(path).unwrap_or_default())
        };
        let host = Path::new("/etc/resolv.conf");
        let resolv = std::fs::read_to_string(host).ok().map(|text| {
            let is_link = std::fs::symlink_metadata(host).is_ok_and(|m| m.is_symlink());
            let to = is_link
                .then(|| std::fs::read_link(host).ok())
                .flatten()
                .map(|to| normal(&Path::new("/etc").join(to)));
            (text, to)
        });
        HostFiles {
            passwd: text("/etc/passwd"),
            group: text("/etc/group"),
            resolv,
        }
    }
}

/// `path` with its `.` and `..` resolved by name.
fn normal(path: &Path) -> PathBuf {
    path.components().fold(PathBuf::new(), |mut path, part| {
        match part {
            std::path::Component::ParentDir => {
                path.pop();
            }
            std::path::Component::CurDir => {}
            other => path.push(other),
        }
        path
    })
}

/// The btrfs requests that make a subvolume or a snapshot, each `_IOW(0x94,
/// nr, 4096-byte args)`: a subvolume made inside a home would be outside
/// the home's quota group, and so outside the kernel's hold on the quota.
const BTRFS_SUBVOLUME_MAKERS: [u64; 4] = [
    btrfs_iow(1),  // BTRFS_IOC_SNAP_CREATE
    btrfs_iow(14), // BTRFS_IOC_SUBVOL_CREATE
    btrfs_iow(23), // BTRFS_IOC_SNAP_CREATE_V2
    btrfs_iow(24), // BTRFS_IOC_SUBVOL_CREATE_V2
];

const fn btrfs_iow(nr: u64) -> u64 {
    (1 << 30) | (4096 << 16) | (0x94 << 8) | nr
}

/// Two seccomp filters, for the command and all it starts:
///
/// - the ioctls making btrfs subvolumes and snapshots are refused
///   (`EPERM`), the request compared on its low 32 bits as the kernel
///   reads it;
/// - `fallocate` is refused (`EOPNOTSUPP`, as file systems without it say):
///   it takes disk space without writing a byte, so past the quota's write
///   meter. glibc's `posix_fallocate` then writes the zeros itself, which
///   the meter counts; where the kernel holds the quota it counts either.
///
/// A process of another architecture (a 32-bit program) is killed, so the
/// filters cannot be stepped around with other syscall numbers.
fn seccomp_filters() -> Result<Vec<seccompiler::BpfProgram>, Missing> {
    use seccompiler::{
        BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
        SeccompRule, TargetArch,
    };
    fn fail(e: impl std::fmt::Display) -> Missing {
        Missing {
            what: "seccomp",
            source: std::io::Error::other(e.to_string()),
        }
    }
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(fail)?;
    let rules = BTRFS_SUBVOLUME_MAKERS
        .iter()
        .map(|&request| {
            SeccompCondition::new(1, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, request)
                .and_then(|c| SeccompRule::new(vec![c]))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(fail)?;
    let filters = [
        ((libc::SYS_ioctl, rules), libc::EPERM),
        ((libc::SYS_fallocate, Vec::new()), libc::EOPNOTSUPP),
    ];
    filters
        .into_iter()
        .map(|(rule, errno)| {
            let filter = SeccompFilter::new(
                [rule].into_iter().collect(),
                SeccompAction::Allow,
                SeccompAction::Errno(errno as u32),
                arch,
            )
            .map_err(fail)?;
            BpfProgram::try_from(filter).map_err(fail)
        })
        .collect()
}

/// Applies the filters [`seccomp_filters`] made to this process (and all
/// it starts).
fn apply_filters(filters: Vec<seccompiler::BpfProgram>) -> Result<(), Missing> {
    for program in &filters {
        seccompiler::apply_filter(program).map_err(|e| Missing {
            what: "seccomp",
            source: std::io::Error::other(e.to_string()),
        })?;
    }
    Ok(())
}

/// New mount and PID namespaces, in the network `place` says; when not
/// root, inside a new user namespace where the daemon's uid and gid map to
/// themselves (or the private network's, which maps them so too).
fn namespaces(place: &NetPlace) -> Result<(), Missing> {
    let root = geteuid().is_root();
    let (uid, gid) = (getuid().as_raw(), getgid().as_raw());
    let joined = net::join(place, None).map_err(|source| Missing {
        what: "joining the user's private network",
        source,
    })?;
    let mut flags = UnshareFlags::NEWNS | UnshareFlags::NEWPID | joined;
    let own_user = !root && !matches!(place, NetPlace::Join { user: Some(_), .. });
    if own_user {
        flags |= UnshareFlags::NEWUSER;
    }
    unshare(flags).map_err(missing(if root {
        "creating mount and PID namespaces"
    } else {
        "creating user, mount and PID namespaces (unprivileged user namespaces)"
    }))?;
    if own_user {
        let write = |file: &str, text: String| {
            std::fs::write(file, text).map_err(|source| Missing {
                what: "mapping the user namespace",
                source,
            })
        };
        write("/proc/self/setgroups", "deny".into())?;
        write("/proc/self/uid_map", format!("{uid} {uid} 1"))?;
        write("/proc/self/gid_map", format!("{gid} {gid} 1"))?;
    }
    // Without CAP_NET_ADMIN (a container that drops it) the loopback
    // stays down: still no way out, only no 127.0.0.1 inside.
    if *place == NetPlace::Own {
        let _ = net::loopback_up();
    }
    Ok(())
}

#[allow(unsafe_code)]
fn unshare(flags: UnshareFlags) -> rustix::io::Result<()> {
    // SAFETY: the launcher is single-threaded and holds no state that the
    // new namespaces could invalidate: it only mounts, starts init and
    // execs the shell after this. (rustix marks unshare unsafe for
    // CLONE_FILES/CLONE_FS in threaded programs; those are not asked for.)
    unsafe { rustix::thread::unshare_unsafe(flags) }
}

/// Where the command's root is built, then made `/`: a directory every
/// system has, covered in the command's mount namespace only.
const NEW_ROOT: &str = "/tmp";

/// Builds the command's root on a tmpfs at [`NEW_ROOT`], holding only:
/// the system directories, read-only (or their symlinks, as on the host);
/// `/home/NAME`, the user's home, bound from the real one; private and
/// empty `/tmp`, `/run` and `/dev/shm` of the command's own (`/var/tmp`
/// and `/var/run` lead there); in `/dev`, the devices every program opens
/// and the command's terminal; an empty `/proc` for init to mount on.
/// Nothing else of the host is there: not its `/var`, its `/run` and their
/// sockets, not the data folder's path.
///
/// This is the part that is the same for every command (`/tmp`, `/run`
/// and `/dev/shm` of `tmp_size` bytes each, owned by this process's user
/// until [`build_user`] gives them to the command's); [`build_user`] adds
/// the rest.
fn build_base(tmp_size: u64) -> Result<(), Missing> {
    // Nothing mounted here reaches the host, and nothing of the host's later
    // mounts reaches here.
    mount_change(
        "/",
        MountPropagationFlags::REC | MountPropagationFlags::PRIVATE,
    )
    .map_err(missing("making the mount namespace private"))?;
    let private = MountFlags::NOSUID | MountFlags::NODEV;
    let root = Path::new(NEW_ROOT);
    mount("tmpfs", root, "tmpfs", private, c"mode=0755,size=1m")
        .map_err(missing("mounting the command's root"))?;
    for system in SYSTEM_DIRS.iter().copied() {
        let inside = root.join(system.trim_start_matches('/'));
        match std::fs::symlink_metadata(system) {
            Ok(m) if m.is_symlink() => {
                let to = std::fs::read_link(system).map_err(|source| Missing {
                    what: "reading a system directory's link",
                    source,
                })?;
                rustix::fs::symlink(&to, &inside).map_err(missing("linking a system directory"))?;
            }
            Ok(m) if m.is_dir() => {
                dir(&inside, 0o755)?;
                mount_bind_recursive(system, &inside)
                    .map_err(missing("binding a system directory"))?;
                read_only(&inside);
            }
            _ => {}
        }
    }
    for (path, mode) in [
        ("home", 0o755),
        ("home/.etc", 0o755),
        ("proc", 0o555),
        ("dev", 0o755),
        ("var", 0o755),
    ] {
        dir(&root.join(path), mode)?;
    }
    // The command's own writable places, empty, each within the size of
    // `/tmp`.
    let options =
        std::ffi::CString::new(format!("mode=0700,size={tmp_size}")).map_err(|_| Missing {
            what: "mounting /tmp",
            source: std::io::Error::other("a NUL in the mount options"),
        })?;
    for (path, what) in OWN_PLACES {
        let at = root.join(path);
        dir(&at, 0o755)?;
        mount("tmpfs", &at, "tmpfs", private, options.as_c_str()).map_err(missing(what))?;
    }
    let link = |to: &str, at: &str| {
        rustix::fs::symlink(to, root.join(at)).map_err(missing("linking in the command's root"))
    };
    link("../tmp", "var/tmp")?;
    link("../run", "var/run")?;
    link("/proc/self/fd", "dev/fd")?;
    for (n, name) in ["stdin", "stdout", "stderr"].iter().enumerate() {
        link(&format!("/proc/self/fd/{n}"), &format!("dev/{name}"))?;
    }
    bind_devices(root, DEVICES.iter().map(Path::new))
}

/// The command's own writable places in its root, and what making each is
/// called when it fails.
const OWN_PLACES: [(&str, &str); 3] = [
    ("tmp", "mounting /tmp"),
    ("run", "mounting /run"),
    ("dev/shm", "mounting /dev/shm"),
];

/// Makes a directory of the command's root.
fn dir(path: &Path, mode: u32) -> Result<(), Missing> {
    rustix::fs::mkdir(path, Mode::from_raw_mode(mode)).map_err(missing("making the command's root"))
}

/// Binds each of `devices` at its place in the command's root at `root`.
fn bind_devices<'a>(
    root: &Path,
    devices: impl IntoIterator<Item = &'a Path>,
) -> Result<(), Missing> {
    for device in devices {
        let at = root.join(device.strip_prefix("/").unwrap_or(device));
        std::fs::File::create(&at).map_err(|source| Missing {
            what: "making a device's place",
            source,
        })?;
        mount_bind(device, &at).map_err(missing("binding a device"))?;
    }
    Ok(())
}

/// Where a command's home comes from.
enum Home<'a> {
    /// The home opened in this mount namespace: bound.
    Bound(&'a OwnedFd),
    /// A mount of the home the server cloned from the host's tree
    /// (`open_tree`): attached.
    Tree(OwnedFd),
}

/// The command's part of its root at `root` (as this process sees it), on
/// what [`build_base`] built: its home at `shown`, its own places given to
/// its user, its terminal, its name in `/etc/passwd` and its resolver,
/// from the `host`'s files.
fn build_user(
    l: &Launch,
    root: &Path,
    home: Home<'_>,
    shown: &Path,
    host: &HostFiles,
) -> Result<(), Missing> {
    let owner = l.identity.unwrap_or((getuid().as_raw(), getgid().as_raw()));
    let inside = root.join(shown.strip_prefix("/").unwrap_or(shown));
    dir(&inside, 0o755)?;
    // The servers' own directory (partial uploads) exists before any
    // command runs, so no command can make it first, and is covered by an
    // empty read-only tmpfs: commands can neither read, change nor move it.
    let home_fd = match &home {
        Home::Bound(fd) => fd.as_fd(),
        Home::Tree(tree) => tree.as_fd(),
    };
    match rustix::fs::mkdirat(home_fd, INTERNAL_DIR, Mode::from_raw_mode(0o700)) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
        Err(e) => return Err(missing("making the home's internal directory")(e)),
    }
    match &home {
        Home::Bound(fd) => {
            let source = format!("/proc/self/fd/{}", fd.as_raw_fd());
            mount_bind(&source, &inside).map_err(missing("binding the home to /home/NAME"))?;
        }
        Home::Tree(tree) => {
            rustix::mount::move_mount(
                tree,
                c"",
                rustix::fs::CWD,
                &inside,
                rustix::mount::MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
            )
            .map_err(missing("attaching the home at /home/NAME"))?;
            // A clone of a shared mount is its peer: nothing mounted here
            // may reach the host's home, nor the host's mounts this.
            mount_change(&inside, MountPropagationFlags::PRIVATE)
                .map_err(missing("making the home's mount private"))?;
        }
    }
    let sealed = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC | MountFlags::RDONLY;
    mount(
        "tmpfs",
        inside.join(INTERNAL_DIR),
        "tmpfs",
        sealed,
        c"mode=0500,size=4k",
    )
    .map_err(missing("hiding the home's internal directory"))?;
    for (path, what) in OWN_PLACES {
        rustix::fs::chown(
            root.join(path),
            Some(rustix::fs::Uid::from_raw(owner.0)),
            Some(rustix::fs::Gid::from_raw(owner.1)),
        )
        .map_err(missing(what))?;
    }
    if let Some(tty) = &l.tty {
        dir(&root.join("dev/pts"), 0o755)?;
        bind_devices(root, [Path::new("/dev/tty"), tty.as_path()])?;
    }
    name_the_user(l, owner, root, host)?;
    resolver(l, root, host)
}

/// The command's `/etc/resolv.conf`: the host's (read through its link,
/// which may lead into the host's `/run`, hidden here), and on a private
/// network with its name servers replaced by [`net::DNS_FORWARD`].
fn resolver(l: &Launch, root: &Path, host: &HostFiles) -> Result<(), Missing> {
    let fail = |source: std::io::Error| Missing {
        what: "giving the command an /etc/resolv.conf",
        source,
    };
    let Some((text, link)) = &host.resolv else {
        return Ok(());
    };
    let text = match l.net {
        NetPlace::Join { .. } => {
            let mut ours = format!("nameserver {}\n", net::DNS_FORWARD);
            for line in text
                .lines()
                .filter(|l| !l.trim_start().starts_with("nameserver"))
            {
                ours.push_str(line);
                ours.push('\n');
            }
            ours
        }
        _ => text.clone(),
    };
    let made = root.join("home/.etc/resolv.conf");
    std::fs::write(&made, text).map_err(fail)?;
    let Some(to) = link else {
        let inside = root.join("etc/resolv.conf");
        return mount_bind(&made, &inside).map_err(missing("binding /etc/resolv.conf"));
    };
    // A link (systemd-resolved's into /run): the file it leads to, made in
    // the command's own `/run`, where that is.
    let under_run = to
        .strip_prefix("/run")
        .or_else(|_| to.strip_prefix("/var/run"));
    if let Ok(rest) = under_run {
        let at = root.join("run").join(rest);
        if let Some(dir) = at.parent() {
            std::fs::create_dir_all(dir).map_err(fail)?;
        }
        std::fs::copy(&made, &at).map_err(fail)?;
    }
    Ok(())
}

/// Makes a bound system directory read-only where the kernel lets us: its
/// flags the host set (and may have locked) kept. Landlock gives commands
/// only read access there in any case.
fn read_only(at: &Path) {
    let kept = rustix::fs::statvfs(at).map_or(MountFlags::empty(), |v| {
        use rustix::fs::StatVfsMountFlags as F;
        [
            (F::NOSUID, MountFlags::NOSUID),
            (F::NODEV, MountFlags::NODEV),
            (F::NOEXEC, MountFlags::NOEXEC),
            (F::NOATIME, MountFlags::NOATIME),
            (F::NODIRATIME, MountFlags::NODIRATIME),
            (F::RELATIME, MountFlags::RELATIME),
        ]
        .into_iter()
        .filter(|(f, _)| v.f_flag.contains(*f))
        .fold(MountFlags::empty(), |all, (_, m)| all | m)
    });
    let flags = kept | MountFlags::BIND | MountFlags::RDONLY | MountFlags::NOSUID;
    let _ = rustix::mount::mount_remount(at, flags, c"");
}

/// Makes the built root the command's `/` (init, whose root is the old
/// one, moves with it) and lets go of the host's tree.
fn pivot() -> Result<(), Missing> {
    rustix::process::chdir(NEW_ROOT).map_err(missing("entering the command's root"))?;
    match rustix::process::pivot_root(".", ".") {
        Ok(()) => {
            rustix::mount::unmount(".", rustix::mount::UnmountFlags::DETACH)
                .map_err(missing("letting go of the host's root"))?;
        }
        // Docker's default seccomp profile refuses pivot_root: the root is
        // moved over `/` and entered instead, as switch_root does (which
        // needs CAP_SYS_CHROOT). The host's tree stays beneath it, out of
        // reach: init, the only process whose root it still is, runs as
        // the user but is not dumpable, so `/proc/1/root` is closed to
        // the command.
        Err(rustix::io::Errno::PERM) => {
            rustix::mount::mount_move(".", "/")
                .map_err(missing("moving the command's root to /"))?;
            rustix::process::chroot(".").map_err(missing(
                "entering the command's root (pivot_root is refused here, and chroot needs CAP_SYS_CHROOT)",
            ))?;
        }
        Err(e) => return Err(missing("making the command's root /")(e)),
    }
    rustix::process::chdir("/").map_err(missing("entering the command's root"))
}

/// Makes the command's root, `/` since the pivot, read-only now that it
/// is built.
fn seal() -> Result<(), Missing> {
    let flags = MountFlags::BIND | MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV;
    rustix::mount::mount_remount("/", flags, c"").map_err(missing("sealing the command's root"))
}

/// Gives the user a name on this system, as commands look it up
/// (`whoami`, `ls -l`, a shell prompt's `\u`): `/etc/passwd` and
/// `/etc/group` are seen with the user's entry first, from files on the
/// sandbox's own `/home` tmpfs, which Landlock keeps read-only to commands.
fn name_the_user(
    l: &Launch,
    (uid, gid): (u32, u32),
    root: &Path,
    host: &HostFiles,
) -> Result<(), Missing> {
    let fail = |source: std::io::Error| Missing {
        what: "naming the user in /etc/passwd",
        source,
    };
    let dir = root.join("home/.etc");
    let entries = [
        (
            "passwd",
            format!(
                "{name}:x:{uid}:{gid}:Wharf user {name}:/home/{name}:/bin/bash\n",
                name = l.name
            ),
            &host.passwd,
        ),
        ("group", format!("{}:x:{gid}:\n", l.name), &host.group),
    ];
    for (file, ours, system) in entries {
        let mut text = ours;
        // The system's own entries after ours (a missing file: just ours).
        text.push_str(system.as_deref().unwrap_or_default());
        let made = dir.join(file);
        std::fs::write(&made, text).map_err(fail)?;
        if system.is_some() {
            let inside = root.join("etc").join(file);
            mount_bind(&made, &inside).map_err(missing("naming the user in /etc"))?;
        }
    }
    Ok(())
}

/// The namespace's init, from the launcher's side.
struct Init {
    /// Its pid, as the launcher sees it.
    pid: rustix::process::Pid,
    /// Where it is told whose the namespace is.
    tell: OwnedFd,
    /// It mounted the namespace's own `/proc`.
    proc: bool,
}

impl Init {
    /// Tells init whose the namespace is: it becomes that user (none: it
    /// stays as it is).
    fn tell(&self, identity: Option<(u32, u32)>) -> Result<(), Missing> {
        let message = init::told(identity);
        match rustix::io::write(&self.tell, &message) {
            Ok(n) if n == message.len() => Ok(()),
            Ok(_) => Err(Missing {
                what: "telling the PID namespace's init whose it is",
                source: std::io::ErrorKind::WriteZero.into(),
            }),
            Err(e) => Err(missing("telling the PID namespace's init whose it is")(e)),
        }
    }

    /// Kills init (and its namespace with it) and reaps it.
    fn kill(self) {
        let _ = rustix::process::kill_process(self.pid, rustix::process::Signal::KILL);
        let _ = rustix::process::waitpid(Some(self.pid), rustix::process::WaitOptions::empty());
    }
}

/// Starts the namespace's init (PID 1) and waits until it is ready (and
/// has mounted the namespace's own `/proc` at `proc_at`, when asked); it
/// then waits for [`Init::tell`].
fn start_init(proc_at: Option<&Path>) -> Result<Init, Missing> {
    let fail = |source: std::io::Error| Missing {
        what: "starting the PID namespace's init",
        source,
    };
    // Init watches this process through a pidfd, says it is ready through
    // a pipe, and is told whose it is through another.
    let me = pidfd_open(getpid(), PidfdFlags::empty()).map_err(|e| fail(e.into()))?;
    let pipe =
        || rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(|e| fail(e.into()));
    let (from_init, to_launcher) = pipe()?;
    let (told, tell) = pipe()?;
    let pid = match fork().map_err(fail)? {
        Forked::Child => {
            drop(from_init);
            drop(tell);
            // Nothing of the launcher's stays open in init (the command's
            // pipes, the home, the host's root): only the three above.
            let [parent, ready, told] = match keep_only([me, to_launcher, told]) {
                Ok(kept) => kept,
                Err(_) => std::process::exit(super::CANNOT_RUN),
            };
            // In the new root, which the pivot makes its `/`: nothing of
            // the host's tree stays held by init.
            if proc_at.is_some() && std::env::set_current_dir(NEW_ROOT).is_err() {
                std::process::exit(super::CANNOT_RUN);
            }
            init::serve(parent, ready, told, proc_at)
        }
        Forked::Parent(pid) => pid,
    };
    drop(to_launcher);
    drop(told);
    drop(me);
    let init = Init {
        pid,
        tell,
        proc: false,
    };
    let mut ready = [0u8; 1];
    let said = std::fs::File::from(from_init).read(&mut ready);
    match said {
        Ok(1) => Ok(Init {
            proc: ready[0] == init::PROC_MOUNTED,
            ..init
        }),
        Ok(_) => {
            init.kill();
            Err(fail(std::io::Error::other("it ended before it was ready")))
        }
        Err(e) => {
            init.kill();
            Err(fail(e))
        }
    }
}

enum Forked {
    Parent(rustix::process::Pid),
    Child,
}

#[allow(unsafe_code)]
fn fork() -> std::io::Result<Forked> {
    // SAFETY: the launcher is single-threaded (see `unshare`), so the child
    // is a whole copy with no lock held by a thread it lacks; the child
    // only closes files, mounts, drops its identity and waits, then exits
    // without returning to the launcher's code.
    match unsafe { libc::fork() } {
        -1 => Err(std::io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        pid => rustix::process::Pid::from_raw(pid)
            .map(Forked::Parent)
            .ok_or_else(|| std::io::Error::other("fork gave no pid")),
    }
}

/// In init: `/dev/null` as standard input, output and error, `kept` as
/// descriptors 3, 4 and 5, and every other descriptor closed.
#[allow(unsafe_code)]
fn keep_only(kept: [OwnedFd; 3]) -> std::io::Result<[OwnedFd; 3]> {
    use std::os::fd::{FromRawFd, IntoRawFd};
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    let null = null.into_raw_fd();
    let kept = kept.map(IntoRawFd::into_raw_fd);
    // Out of the way of 0 to 5 first, then into place.
    let high = |fd: i32| -> std::io::Result<i32> {
        // SAFETY: F_DUPFD_CLOEXEC on a descriptor this process owns.
        let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10) };
        if new < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(new)
        }
    };
    let null = high(null)?;
    let [a, b, c] = [high(kept[0])?, high(kept[1])?, high(kept[2])?];
    for (from, to) in [(null, 0), (null, 1), (null, 2), (a, 3), (b, 4), (c, 5)] {
        // SAFETY: dup2 onto low descriptor numbers this process owns
        // (whatever they held is replaced, as intended).
        if unsafe { libc::dup2(from, to) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    // SAFETY: closes descriptors 6 and up, none of which is used after.
    if unsafe { libc::close_range(6, u32::MAX, 0) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: 3, 4 and 5 are open (just made so) and owned by nothing else.
    Ok(unsafe {
        [
            OwnedFd::from_raw_fd(3),
            OwnedFd::from_raw_fd(4),
            OwnedFd::from_raw_fd(5),
        ]
    })
}

/// Landlock: read-write beneath the home (and the private `/tmp`, `/run`
/// and `/dev/shm`), read and execute on the system directories, a few
/// devices, the namespace's own `/proc`, the command's own terminal if it
/// has one; no signals and no abstract sockets out of the sandbox.
///
/// This makes the rules for all but the home and the terminal, for the
/// root at `root` (the command's, before the pivot: a rule holds the
/// directory itself, wherever it is seen from later), with the private
/// places when `tmp` and the namespace's `/proc` when `proc`;
/// [`restrict`] adds the rest and enforces them.
fn landlock_rules(root: &Path, tmp: bool, proc: bool) -> Result<landlock::RulesetCreated, Missing> {
    let abi = ABI::V5;
    let at = |path: &str| root.join(path.trim_start_matches('/'));
    let mut writable: Vec<PathBuf> = Vec::new();
    if tmp {
        writable.extend(["/tmp", "/run", "/dev/shm"].map(at));
    }
    let devices: Vec<PathBuf> = DEVICES.iter().copied().map(at).collect();
    let mut readable: Vec<PathBuf> = SYSTEM_DIRS.iter().copied().map(at).collect();
    if proc {
        readable.push(at("/proc"));
    }
    Ruleset::default()
        .handle_access(AccessFs::from_all(abi))
        .map_err(landlock_failed)?
        .set_compatibility(CompatLevel::BestEffort)
        .scope(Scope::Signal | Scope::AbstractUnixSocket)
        .map_err(landlock_failed)?
        .create()
        .map_err(landlock_failed)?
        .add_rules(path_beneath_rules(&writable, AccessFs::from_all(abi)))
        .map_err(landlock_failed)?
        .add_rules(path_beneath_rules(&readable, AccessFs::from_read(abi)))
        .map_err(landlock_failed)?
        .add_rules(path_beneath_rules(&devices, device_access()))
        .map_err(landlock_failed)
}

/// What a command may do with the devices it is given.
fn device_access() -> landlock::BitFlags<AccessFs> {
    AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::IoctlDev
}

fn landlock_failed(e: impl std::error::Error + Send + Sync + 'static) -> Missing {
    Missing {
        what: "Landlock",
        source: std::io::Error::other(e),
    }
}

/// Adds the home (read-write) and the terminal to `rules` and restricts
/// this process (and all it starts) to them.
fn restrict(
    rules: landlock::RulesetCreated,
    home: &Path,
    tty: Option<&Path>,
) -> Result<(), Missing> {
    let abi = ABI::V5;
    let terminal: Vec<&Path> = tty
        .map(|tty| vec![Path::new("/dev/tty"), tty])
        .unwrap_or_default();
    let status = rules
        .add_rules(path_beneath_rules([home], AccessFs::from_all(abi)))
        .map_err(landlock_failed)?
        .add_rules(path_beneath_rules(&terminal, device_access()))
        .map_err(landlock_failed)?
        .restrict_self()
        .map_err(landlock_failed)?;
    if status.ruleset == RulesetStatus::NotEnforced {
        return Err(landlock_failed(std::io::Error::other(
            "the kernel does not enforce it (Linux 5.13 or newer with landlock in the lsm= list is needed)",
        )));
    }
    Ok(())
}
