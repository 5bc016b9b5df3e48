//! The networks commands run in (`--exec-network`); see
//! [`crate::launch::net`] for what each mode gives a command.
//!
//! In `private` mode each user has one network, made at the user's first
//! command (pasta takes about 100 ms to set one up) and kept while they
//! run commands and for [`IDLE`] after, so each command only joins it:
//! a `setns`, no measurable cost. A network whose keeper has ended (pasta
//! died) is made again at the next command.
//!
//! In `none` mode each user's commands share a network namespace with
//! only its loopback, kept the same way: its holder alone, no pasta. (A
//! fresh namespace per command cost about 2 ms a command, measured; a
//! join costs nothing measurable.)

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};

use crate::launch::net::{AS_NOBODY, HOLDER_ARG, KEEPER_ARG, NOBODY, NetPlace, NsRef};

/// What commands may reach (`--exec-network`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ExecNetwork {
    /// The outside world through pasta; not the host, its loopback, its
    /// unix sockets or other users' commands.
    #[default]
    Private,
    /// Nothing: each user's commands have only a loopback of their own.
    None,
    /// DANGEROUS: the host's own network, loopback and listeners included.
    Host,
}

impl ExecNetwork {
    /// As the banner and the logs say it.
    pub fn describe(self) -> &'static str {
        match self {
            ExecNetwork::Private => "private network per user (pasta): the internet, not this host",
            ExecNetwork::None => "no network (a loopback of the user's own only)",
            ExecNetwork::Host => {
                "the HOST's network: commands reach this host's loopback services (--exec-network host)"
            }
        }
    }
}

/// How long a user's private network outlives their last command.
pub const IDLE: Duration = Duration::from_secs(60);
/// How long a new network may take to come up.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

/// The pasta binary, from the usual places.
pub fn find_pasta() -> Option<PathBuf> {
    ["/usr/bin/pasta", "/usr/local/bin/pasta", "/usr/sbin/pasta"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// A user's private network; dropped, its keeper's pipe closes and it
/// ends pasta and the namespaces.
pub(crate) struct UserNet {
    place: NetPlace,
    keeper: Mutex<Child>,
    _pipe: ChildStdin,
    /// When its last command ended (or its first began).
    last: Mutex<Instant>,
}

impl UserNet {
    fn alive(&self) -> bool {
        let mut keeper = self.keeper.lock().unwrap_or_else(|p| p.into_inner());
        matches!(keeper.try_wait(), Ok(None))
    }

    fn touch(&self) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    /// Still worth keeping: alive, and in use or used lately.
    fn keep(self: &Arc<Self>) -> bool {
        let last = *self.last.lock().unwrap_or_else(|p| p.into_inner());
        self.alive() && (Arc::strong_count(self) > 1 || last.elapsed() < IDLE)
    }
}

/// Starts a network with nothing but its loopback: the namespace holder
/// alone, started by `launcher` (a daemon binary) as the keeper would.
pub(crate) async fn start_isolated(launcher: &Path) -> Result<UserNet, String> {
    use tokio::io::AsyncWriteExt;
    let root = rustix::process::geteuid().is_root();
    let mut holder = Command::new(launcher);
    holder
        .arg(HOLDER_ARG)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    if root {
        holder.arg(AS_NOBODY).uid(NOBODY).gid(NOBODY);
    }
    let mut holder = holder
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", launcher.display()))?;
    let mut pipe = holder
        .stdin
        .take()
        .ok_or_else(|| "no pipe to the namespace holder".to_owned())?;
    let out = holder
        .stdout
        .take()
        .ok_or_else(|| "no pipe from the namespace holder".to_owned())?;
    let mut line = String::new();
    let read = tokio::time::timeout(SETUP_TIMEOUT, BufReader::new(out).read_line(&mut line)).await;
    if !matches!(read, Ok(Ok(_))) || line.trim() != "ok" {
        let _ = holder.start_kill();
        let why = line.trim().strip_prefix("error: ").unwrap_or(line.trim());
        return Err(if why.is_empty() {
            "the namespace holder ended without a word".to_owned()
        } else {
            why.to_owned()
        });
    }
    // Nothing else joins it: from now on no process of its account may
    // look into it.
    pipe.write_all(b"j")
        .await
        .map_err(|e| format!("the namespace holder ended: {e}"))?;
    let pid = holder
        .id()
        .ok_or_else(|| "the namespace holder ended".to_owned())?;
    let net = NsRef::of(pid, "net").map_err(|e| format!("cannot find the network: {e}"))?;
    let user = if root {
        None
    } else {
        Some(NsRef::of(pid, "user").map_err(|e| format!("cannot find the network: {e}"))?)
    };
    Ok(UserNet {
        place: NetPlace::Join { net, user },
        keeper: Mutex::new(holder),
        _pipe: pipe,
        last: Mutex::new(Instant::now()),
    })
}

/// Starts a private network with `launcher` (a daemon binary) and `pasta`.
pub(crate) async fn start(launcher: &Path, pasta: &Path) -> Result<UserNet, String> {
    let mut keeper = Command::new(launcher)
        .arg(KEEPER_ARG)
        .arg(pasta)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(false)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", launcher.display()))?;
    let pipe = keeper
        .stdin
        .take()
        .ok_or_else(|| "no pipe to the network keeper".to_owned())?;
    let out = keeper
        .stdout
        .take()
        .ok_or_else(|| "no pipe from the network keeper".to_owned())?;
    let mut line = String::new();
    let read = tokio::time::timeout(SETUP_TIMEOUT, BufReader::new(out).read_line(&mut line)).await;
    let line = line.trim();
    let holder = match (read, line.strip_prefix("ready ")) {
        (Ok(Ok(_)), Some(pid)) => pid
            .parse::<u32>()
            .map_err(|_| format!("the network keeper said {line:?}"))?,
        (Ok(_), _) => {
            let _ = keeper.start_kill();
            let why = line.strip_prefix("error: ").unwrap_or(line);
            return Err(if why.is_empty() {
                "the network keeper ended without a word".to_owned()
            } else {
                why.to_owned()
            });
        }
        (Err(_), _) => {
            let _ = keeper.start_kill();
            return Err(format!(
                "the network took longer than {SETUP_TIMEOUT:?} to come up"
            ));
        }
    };
    let net = NsRef::of(holder, "net").map_err(|e| format!("cannot find the network: {e}"))?;
    let user = if rustix::process::geteuid().is_root() {
        None
    } else {
        Some(NsRef::of(holder, "user").map_err(|e| format!("cannot find the network: {e}"))?)
    };
    Ok(UserNet {
        place: NetPlace::Join { net, user },
        keeper: Mutex::new(keeper),
        _pipe: pipe,
        last: Mutex::new(Instant::now()),
    })
}

/// The networks of every user, in one mode.
pub(crate) struct Networks {
    mode: ExecNetwork,
    launcher: PathBuf,
    pasta: Option<PathBuf>,
    users: tokio::sync::Mutex<HashMap<i64, Arc<UserNet>>>,
    /// False once a loopback-only network could not be kept for a user
    /// (no user namespaces for `nobody` here, as under Docker's default
    /// seccomp profile): each command then makes its own, as the launcher
    /// can.
    shared_none: std::sync::atomic::AtomicBool,
}

/// What a command holds while it runs: where its network is, and the
/// network itself, kept while it is held.
pub(crate) struct Lease {
    pub place: NetPlace,
    net: Option<Arc<UserNet>>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(net) = &self.net {
            net.touch();
        }
    }
}

impl Networks {
    pub(crate) fn new(mode: ExecNetwork, launcher: PathBuf, pasta: Option<PathBuf>) -> Networks {
        Networks {
            mode,
            launcher,
            pasta,
            users: tokio::sync::Mutex::new(HashMap::new()),
            shared_none: std::sync::atomic::AtomicBool::new(true),
        }
    }

    /// The network for a command of user `id`.
    pub(crate) async fn lease(&self, id: i64) -> Result<Lease, String> {
        let pasta = match (self.mode, &self.pasta) {
            (ExecNetwork::Host, _) => {
                return Ok(Lease {
                    place: NetPlace::Host,
                    net: None,
                });
            }
            (ExecNetwork::None, _) | (ExecNetwork::Private, None) => None,
            (ExecNetwork::Private, Some(pasta)) => Some(pasta),
        };
        let mut users = self.users.lock().await;
        users.retain(|_, net| net.keep());
        if let Some(net) = users.get(&id) {
            net.touch();
            return Ok(Lease {
                place: net.place.clone(),
                net: Some(Arc::clone(net)),
            });
        }
        let net = Arc::new(match pasta {
            Some(pasta) => start(&self.launcher, pasta).await?,
            None => {
                use std::sync::atomic::Ordering;
                let own = Lease {
                    place: NetPlace::Own,
                    net: None,
                };
                if !self.shared_none.load(Ordering::Relaxed) {
                    return Ok(own);
                }
                match start_isolated(&self.launcher).await {
                    Ok(net) => net,
                    Err(e) => {
                        self.shared_none.store(false, Ordering::Relaxed);
                        tracing::warn!(
                            "a loopback-only network cannot be kept per user here ({e}); each command makes its own (about 2 ms more per command)"
                        );
                        return Ok(own);
                    }
                }
            }
        });
        users.insert(id, Arc::clone(&net));
        Ok(Lease {
            place: net.place.clone(),
            net: Some(net),
        })
    }

    /// Ends the networks idle for [`IDLE`]; how many are left.
    pub(crate) async fn sweep(&self) -> usize {
        let mut users = self.users.lock().await;
        users.retain(|_, net| net.keep());
        users.len()
    }
}
