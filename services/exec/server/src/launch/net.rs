//! The network a command sees (`--exec-network`).
//!
//! - `none`: each user's commands share a network namespace with only its
//!   loopback (the holder below, without pasta): nothing outside it, host
//!   or world, can be reached.
//! - `private` (the default): each user's commands share one network
//!   namespace, kept while the user runs commands, whose only way out is
//!   [pasta](https://passt.top): it carries connections to the outside
//!   world through ordinary sockets of the host. It is started with no
//!   port forwarded either way (`-t none -u none -T none -U none`) and no
//!   mapping of the gateway to the host's loopback (`--no-map-gw`), so the
//!   namespace's `127.0.0.1` is its own; and every address of the host
//!   itself (and the link-local range, where clouds serve their metadata)
//!   is routed to `prohibit` inside it, so a connection to the host's own
//!   address fails with "permission denied" instead of reaching the
//!   host's services through pasta.
//!   Names resolve through pasta too: it carries what a command sends to
//!   [`DNS_FORWARD`] port 53 to the host's first resolver (which may be on
//!   the host's loopback, as systemd-resolved's and Docker's are), and the
//!   command's `/etc/resolv.conf` names that address alone.
//! - `host`: the host's network, as before this existed.
//!
//! A network namespace also holds the abstract unix sockets: a command
//! sees none of the host's, and no other user's.
//!
//! The private network of a user is two processes, both this binary:
//!
//! - the **keeper** ([`KEEPER_ARG`]), started by the server, in the
//!   host's namespaces. It starts the holder and pasta, tells the server
//!   where the namespace is, and ends both when its standard input (a pipe
//!   from the server) closes, or when either ends.
//! - the **holder** ([`HOLDER_ARG`]), which makes the user and network
//!   namespaces (as `nobody` when the server is root, so that pasta, which
//!   gives up root for `nobody`, may join them, and no Wharf user owns
//!   them), sets the prohibiting routes, and holds the namespaces while it
//!   lives. Commands join its network namespace (and, when the server is
//!   not root, its user namespace, where the server's uid is mapped to
//!   itself, never to root).

use std::io::{BufRead, Read, Write};
use std::net::IpAddr;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::fs::{FileType, Mode};
use rustix::net::netlink::SocketAddrNetlink;
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketType};
use rustix::process::{Signal, WaitOptions, geteuid, getgid, getpid, getuid};
use rustix::thread::{LinkNameSpaceType, UnshareFlags};
use serde::{Deserialize, Serialize};

/// The keeper's mode: `DAEMON --wharf-exec-net PASTA`.
pub const KEEPER_ARG: &str = "--wharf-exec-net";
/// The holder's mode: `DAEMON --wharf-exec-netns [as-nobody] ADDR/PREFIX...`.
pub const HOLDER_ARG: &str = "--wharf-exec-netns";
/// Tells the holder a root server started it as `nobody`: root inside its
/// user namespace (for pasta), and no Wharf user's.
pub(crate) const AS_NOBODY: &str = "as-nobody";

/// The address a private network's commands send their DNS queries to
/// (UDP port 53 only), which pasta answers from the host's first resolver.
/// From the range set aside for benchmarks (RFC 2544): no real service
/// lives there.
pub const DNS_FORWARD: std::net::Ipv4Addr = std::net::Ipv4Addr::new(198, 18, 0, 53);

/// The account that owns the namespaces and runs pasta when the server is
/// root (pasta itself gives up root for it).
pub(crate) const NOBODY: u32 = 65534;

/// Where the command's network comes from, as the launcher is told.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetPlace {
    /// The host's network (`--exec-network host`).
    #[default]
    Host,
    /// A namespace of the command's own, loopback only.
    Own,
    /// A user's private network: these namespaces of its holder.
    Join {
        /// Its network namespace.
        net: NsRef,
        /// Its user namespace, joined first (when the server is not root).
        user: Option<NsRef>,
    },
}

/// A namespace, by the path of a process's link to it and its inode (so a
/// pid reused since cannot hand a command another process's namespace).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NsRef {
    /// `/proc/PID/ns/KIND`.
    pub path: PathBuf,
    /// The namespace's inode, as that link gave it.
    pub ino: u64,
}

impl NsRef {
    /// The namespace `kind` (`net`, `user`) of process `pid`, now.
    pub fn of(pid: u32, kind: &str) -> std::io::Result<NsRef> {
        let path = PathBuf::from(format!("/proc/{pid}/ns/{kind}"));
        let ino = std::fs::metadata(&path)?.ino();
        Ok(NsRef { path, ino })
    }

    /// Moves this thread into the namespace, when it is still the one
    /// meant; found through `proc`, the host's `/proc`, when given (a
    /// process whose `/proc` is another's).
    pub fn enter(
        &self,
        kind: LinkNameSpaceType,
        proc: Option<&std::os::fd::OwnedFd>,
    ) -> std::io::Result<()> {
        let file = match (proc, self.path.strip_prefix("/proc")) {
            (Some(proc), Ok(rest)) => std::fs::File::from(rustix::fs::openat(
                proc,
                rest,
                rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
                Mode::empty(),
            )?),
            _ => std::fs::File::open(&self.path)?,
        };
        if file.metadata()?.ino() != self.ino {
            return Err(std::io::Error::other(
                "the user's network has ended (its holder is gone)",
            ));
        }
        rustix::thread::move_into_link_name_space(file.as_fd(), Some(kind))?;
        Ok(())
    }
}

/// The network namespace flags the launcher adds to its `unshare` for
/// `place`, after joining what it names (found through `proc`, the host's
/// `/proc`, when given).
pub fn join(
    place: &NetPlace,
    proc: Option<&std::os::fd::OwnedFd>,
) -> std::io::Result<UnshareFlags> {
    match place {
        NetPlace::Host => Ok(UnshareFlags::empty()),
        NetPlace::Own => Ok(UnshareFlags::NEWNET),
        NetPlace::Join { net, user } => {
            if let Some(user) = user {
                user.enter(LinkNameSpaceType::User, proc)?;
            }
            net.enter(LinkNameSpaceType::Network, proc)?;
            Ok(UnshareFlags::empty())
        }
    }
}

/// Brings the loopback of a fresh network namespace up (index 1 in every
/// namespace), so programs that talk to themselves on 127.0.0.1 work.
pub fn loopback_up() -> std::io::Result<()> {
    const RTM_NEWLINK: u16 = 16;
    const IFF_UP: u32 = 1;
    // struct ifinfomsg: family, pad, type, index, flags, change.
    let mut body = vec![0u8; 16];
    body[4..8].copy_from_slice(&1i32.to_ne_bytes());
    body[8..12].copy_from_slice(&IFF_UP.to_ne_bytes());
    body[12..16].copy_from_slice(&IFF_UP.to_ne_bytes());
    netlink_request(RTM_NEWLINK, 0, &body)
}

/// Routes `net` (an address and prefix length) to `prohibit`: connecting
/// there fails with EACCES.
fn prohibit((addr, prefix): (IpAddr, u8)) -> std::io::Result<()> {
    const RTM_NEWROUTE: u16 = 24;
    const NLM_F_CREATE: u16 = 0x400;
    const NLM_F_EXCL: u16 = 0x200;
    const RT_TABLE_MAIN: u8 = 254;
    const RTPROT_STATIC: u8 = 4;
    const RTN_PROHIBIT: u8 = 8;
    const RTA_DST: u16 = 1;
    let (family, bytes) = match addr {
        IpAddr::V4(a) => (libc::AF_INET as u8, a.octets().to_vec()),
        IpAddr::V6(a) => (libc::AF_INET6 as u8, a.octets().to_vec()),
    };
    // struct rtmsg, then the destination attribute.
    let mut body = vec![
        family,
        prefix,
        0,
        0,
        RT_TABLE_MAIN,
        RTPROT_STATIC,
        0,
        RTN_PROHIBIT,
        0,
        0,
        0,
        0,
    ];
    let len = 4 + bytes.len() as u16;
    body.extend_from_slice(&len.to_ne_bytes());
    body.extend_from_slice(&RTA_DST.to_ne_bytes());
    body.extend_from_slice(&bytes);
    match netlink_request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, &body) {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        other => other,
    }
}

/// Sends one rtnetlink request and waits for its acknowledgement.
fn netlink_request(kind: u16, flags: u16, body: &[u8]) -> std::io::Result<()> {
    const NLM_F_REQUEST: u16 = 1;
    const NLM_F_ACK: u16 = 4;
    const NLMSG_ERROR: u16 = 2;
    let socket = rustix::net::socket(AddressFamily::NETLINK, SocketType::RAW, None)?;
    let mut msg = Vec::with_capacity(16 + body.len());
    msg.extend_from_slice(&(16 + body.len() as u32).to_ne_bytes());
    msg.extend_from_slice(&kind.to_ne_bytes());
    msg.extend_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(body);
    rustix::net::sendto(
        &socket,
        &msg,
        SendFlags::empty(),
        &SocketAddrNetlink::new(0, 0),
    )?;
    let mut reply = [0u8; 1024];
    let (n, _) = rustix::net::recv(&socket, &mut reply, RecvFlags::empty())?;
    let field = |at: usize| reply.get(at..at + 4).and_then(|b| b.try_into().ok());
    let kind = reply
        .get(4..6)
        .and_then(|b| b.try_into().ok())
        .map(u16::from_ne_bytes);
    match (n >= 20, kind, field(16).map(i32::from_ne_bytes)) {
        (true, Some(NLMSG_ERROR), Some(0)) => Ok(()),
        (true, Some(NLMSG_ERROR), Some(errno)) => {
            Err(std::io::Error::from_raw_os_error(errno.saturating_neg()))
        }
        _ => Err(std::io::Error::other("an unexpected netlink reply")),
    }
}

/// The host's own addresses (loopback left out: inside the namespace,
/// 127.0.0.1 and ::1 are the namespace's own), each as a host route.
fn host_addresses() -> Vec<(IpAddr, u8)> {
    let mut found = Vec::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    #[allow(unsafe_code)]
    // SAFETY: getifaddrs fills `list` with a linked list that stays valid
    // until freeifaddrs; each address is read as the type its family says.
    unsafe {
        if libc::getifaddrs(&mut list) != 0 {
            return found;
        }
        let mut at = list;
        while let Some(entry) = at.as_ref() {
            if let Some(sa) = entry.ifa_addr.as_ref() {
                match i32::from(sa.sa_family) {
                    libc::AF_INET => {
                        let sin = &*(entry.ifa_addr as *const libc::sockaddr_in);
                        let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                        found.push((IpAddr::V4(ip), 32));
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(entry.ifa_addr as *const libc::sockaddr_in6);
                        let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                        found.push((IpAddr::V6(ip), 128));
                    }
                    _ => {}
                }
            }
            at = entry.ifa_next;
        }
        libc::freeifaddrs(list);
    }
    found.retain(|(ip, _)| !ip.is_loopback());
    found.sort();
    found.dedup();
    found
}

/// What no command may reach through the private network: the host's
/// addresses and the link-local range (cloud metadata services).
pub fn refused_destinations() -> Vec<(IpAddr, u8)> {
    let mut all = host_addresses();
    all.push((IpAddr::V4(std::net::Ipv4Addr::new(169, 254, 0, 0)), 16));
    all
}

fn parse_net(text: &str) -> Option<(IpAddr, u8)> {
    let (addr, prefix) = text.split_once('/')?;
    Some((addr.parse().ok()?, prefix.parse().ok()?))
}

fn say_and_exit(what: impl std::fmt::Display) -> ! {
    let mut out = std::io::stdout();
    let _ = writeln!(out, "error: {what}");
    let _ = out.flush();
    std::process::exit(1);
}

/// Waits until `fd` is readable or hung up, at most `within`: true when it
/// is.
fn ready(fd: BorrowedFd<'_>, within: Duration) -> bool {
    let timeout = Timespec::try_from(within).unwrap_or(Timespec {
        tv_sec: 0,
        tv_nsec: 200_000_000,
    });
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    matches!(poll(&mut fds, Some(&timeout)), Ok(n) if n > 0)
}

/// The holder: makes the namespaces, sets the routes, says `ok`, then
/// waits for a byte (pasta has joined: from then on nothing else of its
/// account may look into it) and for its standard input to close.
pub fn run_holder(args: impl Iterator<Item = std::ffi::OsString>) -> ! {
    let args: Vec<std::ffi::OsString> = args.collect();
    let refused: Vec<(IpAddr, u8)> = args
        .iter()
        .filter_map(|a| a.to_str().and_then(parse_net))
        .collect();
    let (uid, gid) = (getuid().as_raw(), getgid().as_raw());
    // Told so by a root server, which started it as `nobody`; a daemon
    // that itself runs as nobody (uid 65534) is not that case.
    let as_nobody = uid == NOBODY && args.iter().any(|a| a == AS_NOBODY);
    #[allow(unsafe_code)]
    // SAFETY: the holder is single-threaded and holds nothing the new
    // namespaces invalidate.
    let made =
        unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWUSER | UnshareFlags::NEWNET) };
    if let Err(e) = made {
        say_and_exit(format_args!("cannot make user and network namespaces: {e}"));
    }
    // Root inside for pasta where the namespace is nobody's; the server's
    // own uid where commands will join it (they must not be root in it).
    let inside = |id: u32| if as_nobody { 0 } else { id };
    let maps = [
        ("/proc/self/setgroups", "deny".to_owned()),
        ("/proc/self/uid_map", format!("{} {uid} 1", inside(uid))),
        ("/proc/self/gid_map", format!("{} {gid} 1", inside(gid))),
    ];
    for (file, text) in maps {
        if let Err(e) = std::fs::write(file, text) {
            say_and_exit(format_args!("cannot map the user namespace ({file}): {e}"));
        }
    }
    for net in refused {
        if let Err(e) = prohibit(net) {
            say_and_exit(format_args!(
                "cannot route {}/{} to prohibit: {e}",
                net.0, net.1
            ));
        }
    }
    let _ = loopback_up();
    let mut out = std::io::stdout();
    if writeln!(out, "ok").and_then(|()| out.flush()).is_err() {
        std::process::exit(0);
    }
    let mut stdin = std::io::stdin();
    let mut byte = [0u8; 1];
    if matches!(stdin.read(&mut byte), Ok(1)) && as_nobody {
        let _ =
            rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable);
    }
    // Until the keeper closes the pipe (or ends).
    loop {
        match stdin.read(&mut byte) {
            Ok(0) | Err(_) => std::process::exit(0),
            Ok(_) => {}
        }
    }
}

/// The keeper: starts the holder and pasta, says `ready PID` (the
/// holder's) or `error: WHY` on its standard output, then lives until its
/// standard input closes or the holder or pasta ends.
pub fn run_keeper(mut args: impl Iterator<Item = std::ffi::OsString>) -> ! {
    let Some(pasta) = args.next().map(PathBuf::from) else {
        say_and_exit("no pasta given (this mode is for wharf-execd only)");
    };
    let root = geteuid().is_root();
    if root && let Err(e) = usable_tun() {
        say_and_exit(format_args!(
            "pasta cannot open /dev/net/tun as nobody, and it cannot be given to it: {e}"
        ));
    }
    // pasta's daemon, orphaned by its first process, comes back to us.
    if let Err(e) = rustix::process::set_child_subreaper(Some(getpid())) {
        say_and_exit(format_args!("cannot become a subreaper: {e}"));
    }
    let refused: Vec<String> = refused_destinations()
        .into_iter()
        .map(|(ip, prefix)| format!("{ip}/{prefix}"))
        .collect();
    let mut holder = Command::new("/proc/self/exe");
    holder
        .arg(HOLDER_ARG)
        .args(&refused)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if root {
        use std::os::unix::process::CommandExt;
        holder.arg(AS_NOBODY).uid(NOBODY).gid(NOBODY);
    }
    let mut holder = match holder.spawn() {
        Ok(child) => child,
        Err(e) => say_and_exit(format_args!("cannot start the namespace holder: {e}")),
    };
    let mut said = String::new();
    if let Some(out) = holder.stdout.take() {
        let _ = std::io::BufReader::new(out).read_line(&mut said);
    }
    if said.trim() != "ok" {
        let _ = holder.kill();
        say_and_exit(
            said.trim()
                .strip_prefix("error: ")
                .unwrap_or("the namespace holder ended"),
        );
    }
    let started = Command::new(&pasta)
        .args(["--config-net", "--quiet", "--no-map-gw"])
        .arg("--dns-forward")
        .arg(DNS_FORWARD.to_string())
        .args(["-t", "none", "-u", "none", "-T", "none", "-U", "none"])
        .arg(holder.id().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    let pasta_pid = match started {
        Ok(out) if out.status.success() => children().into_iter().find(|&pid| pid != holder.id()),
        Ok(out) => {
            let _ = holder.kill();
            let said = String::from_utf8_lossy(&out.stderr);
            let said: Vec<&str> = said
                .lines()
                .filter(|l| !l.contains("syslog") && !l.contains("Changing to nobody"))
                .collect();
            say_and_exit(format_args!(
                "{} failed: {}",
                pasta.display(),
                said.join("; ")
            ));
        }
        Err(e) => {
            let _ = holder.kill();
            say_and_exit(format_args!("cannot run {}: {e}", pasta.display()));
        }
    };
    let Some(pasta_pid) = pasta_pid else {
        let _ = holder.kill();
        say_and_exit("pasta started but is not running");
    };
    let mut to_holder = holder.stdin.take();
    if let Some(pipe) = to_holder.as_mut() {
        let _ = pipe.write_all(b"j");
    }
    let mut out = std::io::stdout();
    let _ = writeln!(out, "ready {}", holder.id()).and_then(|()| out.flush());
    let stdin = std::io::stdin();
    loop {
        if ready(stdin.as_fd(), Duration::from_millis(500)) {
            let mut byte = [0u8; 64];
            if !matches!(stdin.lock().read(&mut byte), Ok(n) if n > 0) {
                break;
            }
        }
        // pasta or the holder ended: this network is gone.
        if let Ok(Some(_)) = rustix::process::wait(WaitOptions::NOHANG) {
            break;
        }
    }
    if let Some(pid) = rustix::process::Pid::from_raw(pasta_pid as i32) {
        let _ = rustix::process::kill_process(pid, Signal::KILL);
    }
    drop(to_holder);
    let _ = holder.kill();
    while rustix::process::wait(WaitOptions::empty()).is_ok() {}
    std::process::exit(0);
}

/// This (single-threaded) process's children.
fn children() -> Vec<u32> {
    let me = getpid().as_raw_nonzero();
    std::fs::read_to_string(format!("/proc/{me}/task/{me}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Makes `/dev/net/tun` openable by pasta once it is `nobody`: where the
/// node is root's alone (no udev to make it 0666), a node of its own, in a
/// mount namespace of this keeper's (pasta's too) that nothing else sees.
fn usable_tun() -> std::io::Result<()> {
    let tun = Path::new("/dev/net/tun");
    let meta = std::fs::metadata(tun)?;
    if meta.mode() & 0o006 == 0o006 {
        return Ok(());
    }
    #[allow(unsafe_code)]
    // SAFETY: the keeper is single-threaded.
    unsafe {
        rustix::thread::unshare_unsafe(UnshareFlags::NEWNS)?;
    }
    use rustix::mount::{MountFlags, MountPropagationFlags, mount, mount_change};
    mount_change(
        "/",
        MountPropagationFlags::REC | MountPropagationFlags::PRIVATE,
    )?;
    mount(
        "tmpfs",
        "/dev/net",
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NOEXEC,
        c"mode=0755,size=4k",
    )?;
    rustix::fs::mknodat(
        rustix::fs::CWD,
        tun,
        FileType::CharacterDevice,
        Mode::from_raw_mode(0o666),
        rustix::fs::makedev(10, 200),
    )?;
    // The umask took some bits off.
    rustix::fs::chmod(tun, Mode::from_raw_mode(0o666))?;
    Ok(())
}
