//! The remote-exec server: configuration, the sandbox check and [`run`].

mod args;
mod network;
mod orphans;
mod output;
mod process;
mod quota;
mod session;
mod spare;
mod usage;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use wharf_core::tls::Stream;
use wharf_server::listener::Handler;
use wharf_server::listener::Limits;
use wharf_server::listener::Listener;
use wharf_server::listener::LoginGate;
use wharf_server::listener::Slots;
use wharf_server::listener::serve;
use wharf_store::Authenticator;
use wharf_store::User;
use wharf_store::standing::Standing;

use crate::launch::Launch;

pub use args::ExecArgs;
pub use network::ExecNetwork;
pub use process::{COMMAND_PATH, ResourceLimits};

/// Server settings.
#[derive(Debug, Clone)]
pub struct ExecConfig {
    /// Connection limits and timeouts (the idle timeout applies between
    /// commands, not while one runs).
    pub limits: Limits,
    /// Wall-clock time a command may run.
    pub command_timeout: Duration,
    /// How long a command on a terminal may go without input (it has no
    /// wall-clock limit, and no output cap: a person is watching it).
    pub tty_idle_timeout: Duration,
    /// Bytes of output (stdout and stderr together) a command may write.
    pub max_output: u64,
    /// Commands one user may run at once, over all connections.
    pub max_per_user: usize,
    /// Kernel limits on every command.
    pub resources: ResourceLimits,
    /// Run commands even where part of the sandbox is missing
    /// (`--allow-unconfined-exec`).
    pub unconfined_ok: bool,
    /// Directories commands must never reach (the data directory, the
    /// database's folder): exec refuses to serve when one lies beneath a
    /// system directory that the sandbox lets commands read.
    pub private_dirs: Vec<PathBuf>,
    /// After the shell exits, how long output from processes it left behind
    /// is still read before they are killed.
    pub drain: Duration,
    /// Failed logins one connection may make before it is closed.
    pub max_login_attempts: u32,
    /// The binary that starts commands: a daemon that calls
    /// [`crate::launch::launch_if_asked`] first thing; by default, this
    /// process's own executable.
    pub launcher: PathBuf,
    /// The small binary that starts commands ([`LAUNCH_HELPER`] beside
    /// `launcher`), once [`check_sandbox`] saw it work; `launcher` starts
    /// them otherwise.
    pub command_launcher: Option<PathBuf>,
    /// What commands may reach (`--exec-network`); after
    /// [`check_sandbox`], what they will reach.
    pub network: ExecNetwork,
    /// pasta, found by [`check_sandbox`] for the private network.
    pub pasta: Option<PathBuf>,
}

impl Default for ExecConfig {
    fn default() -> Self {
        ExecConfig {
            limits: Limits::default(),
            command_timeout: Duration::from_secs(60),
            tty_idle_timeout: Duration::from_secs(30 * 60),
            max_output: 64 * 1024 * 1024,
            max_per_user: 4,
            resources: ResourceLimits::default(),
            unconfined_ok: false,
            private_dirs: Vec::new(),
            drain: Duration::from_millis(250),
            max_login_attempts: 3,
            launcher: std::env::current_exe().unwrap_or_default(),
            command_launcher: None,
            network: ExecNetwork::default(),
            pasta: None,
        }
    }
}

impl ExecConfig {
    /// Who commands run as, for the banner.
    pub fn network(&self) -> &'static str {
        self.network.describe()
    }

    /// Who commands run as, for the banner.
    pub fn runs_as(&self) -> &'static str {
        match (rustix::process::geteuid().is_root(), self.unconfined_ok) {
            (_, true) => "UNCONFINED where the sandbox is missing (--allow-unconfined-exec)",
            (true, false) => "as each user's own uid, sandboxed",
            (false, false) => "as this server's user, sandboxed",
        }
    }
}

/// What every session shares.
pub(crate) struct ExecServer {
    auth: Authenticator,
    config: ExecConfig,
    /// Commands running, per user id.
    running: Arc<Slots<i64>>,
    /// Home scans after commands, per user id.
    usage: usage::Rescans,
    /// Which homes the kernel holds to their quota.
    kernel: quota::KernelQuotas,
    /// The users' private networks.
    networks: network::Networks,
    /// What starts commands, with its spares.
    launcher: Arc<spare::Launcher>,
}

impl Handler for ExecServer {
    fn service_name(&self) -> &'static str {
        "exec"
    }

    async fn handle(
        self: Arc<Self>,
        stream: Stream,
        peer: SocketAddr,
        shutdown: CancellationToken,
        gate: LoginGate,
    ) {
        session::run(self, stream, peer, shutdown, gate).await;
    }
}

/// The file name of the small launcher binary, looked for beside the
/// daemon's.
pub const LAUNCH_HELPER: &str = "wharf-exec-launch";

/// `helper` when it may start commands for the daemon `launcher` (which
/// runs it as root): a regular file, not a link, owned by the daemon
/// binary's owner and writable by no one else. A file anyone could have
/// put beside the daemon (in a folder others may write to) is refused,
/// and said so.
fn trusted_helper(helper: &std::path::Path, launcher: &std::path::Path) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(helper).ok()?;
    let owner = std::fs::metadata(launcher).ok()?.uid();
    if meta.is_file() && meta.uid() == owner && meta.mode() & 0o022 == 0 {
        return Some(helper.to_path_buf());
    }
    tracing::warn!(
        launcher = %helper.display(),
        "this launcher is not used: it must be a regular file owned by the daemon binary's owner and writable by no one else; commands start through the daemon's own binary"
    );
    None
}

/// Why the exec server cannot start.
#[derive(Debug, thiserror::Error)]
#[error("remote exec cannot run commands through {}: {reason}", launcher.display())]
pub struct LauncherError {
    launcher: PathBuf,
    reason: String,
}

/// Checks that commands can start, confined as the configuration asks:
/// runs `exit 3` through the launcher in a sandbox of its own. The error
/// names what is missing (Landlock, namespaces...).
pub async fn check_sandbox(config: &mut ExecConfig) -> Result<(), LauncherError> {
    if rustix::process::getpid().is_init() {
        // Each command's sandbox init outlives its shell for a moment and
        // is then an orphan: PID 1 must reap it, and this server does not.
        tracing::warn!(
            "running as PID 1 without an init: the exited sandboxes of commands are never reaped, and past the user's process limit (--max-procs) their commands fail; run under an init (docker run --init, compose `init: true`, systemd)"
        );
    }
    static CHECKS: AtomicU64 = AtomicU64::new(0);
    let fail = |reason: String| LauncherError {
        launcher: config.launcher.clone(),
        reason,
    };
    for dir in &config.private_dirs {
        if let Some(system) = readable_by_commands(dir) {
            return Err(fail(format!(
                "{} lies under {system}, which commands may read; move the data and the database elsewhere (such as /var/lib/wharf)",
                dir.display()
            )));
        }
    }
    // A home of its own for the test command, removed after (and those of
    // checks whose daemon was killed midway, at the next start).
    sweep_checks();
    let home = scratch_home(&CHECKS).map_err(|e| {
        fail(format!(
            "cannot make a scratch directory in {}: {e}",
            std::env::temp_dir().display()
        ))
    })?;
    let spec = Launch {
        cpu_secs: 10,
        file_size: 0,
        processes: 64,
        memory: config.resources.memory,
        tmp_size: 1 << 20,
        identity: None,
        home: home.clone(),
        name: "wharf-check".into(),
        unconfined_ok: config.unconfined_ok,
        tty: None,
        cwd: None,
        net: match config.network {
            ExecNetwork::Host => crate::launch::net::NetPlace::Host,
            _ => crate::launch::net::NetPlace::Own,
        },
    };
    // The small launcher beside the daemon when it is the daemon's own and
    // works here (a build of another version would not): else the daemon's
    // binary itself.
    config.command_launcher = None;
    let helper = config.launcher.with_file_name(LAUNCH_HELPER);
    if let Some(helper) = trusted_helper(&helper, &config.launcher) {
        match check_with(helper.clone(), spec.clone(), &fail).await {
            Ok(()) => config.command_launcher = Some(helper),
            Err(e) => tracing::warn!(
                launcher = %helper.display(),
                error = %e.reason,
                "this launcher does not work here (not of this daemon's build?): commands start through the daemon's own binary, a millisecond slower each; put the wharf-exec-launch built with this daemon beside it"
            ),
        }
    }
    let checked = match config.command_launcher {
        Some(_) => Ok(()),
        None => check_with(config.launcher.clone(), spec, &fail).await,
    };
    let _ = std::fs::remove_dir_all(&home);
    checked?;
    reachable_proxy(config).map_err(fail)?;
    if config.network == ExecNetwork::Private {
        let started = match network::find_pasta() {
            None => Err("pasta is not installed (Debian's package passt)".to_owned()),
            Some(pasta) => network::start(&config.launcher, &pasta).await.map(|net| {
                drop(net);
                pasta
            }),
        };
        match started {
            Ok(pasta) => config.pasta = Some(pasta),
            Err(e) => {
                tracing::warn!(
                    "commands get NO network (as with --exec-network none): their private network cannot be set up here: {e}"
                );
                config.network = ExecNetwork::None;
            }
        }
    }
    Ok(())
}

/// Refuses a trusted PROXY-protocol source that commands could reach: on
/// the host's network, a command connecting from the host's loopback or
/// one of its addresses could send a PROXY header naming any client (and
/// get that client rate-limited, or take its allowances). On a private
/// network or none, no command can connect from those addresses.
fn reachable_proxy(config: &ExecConfig) -> Result<(), String> {
    if config.network != ExecNetwork::Host {
        return Ok(());
    }
    let mut own: Vec<std::net::IpAddr> = crate::launch::net::refused_destinations()
        .into_iter()
        .map(|(ip, _)| ip)
        .collect();
    own.extend([
        std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
    ]);
    let trusted = &config.limits.proxy_protocol_from;
    match own
        .iter()
        .find(|ip| trusted.iter().any(|n| n.contains(**ip)))
    {
        Some(ip) => Err(format!(
            "--proxy-protocol-from trusts {ip}, an address of this host, and with --exec-network host any user's command could connect from it and send PROXY headers naming any client; use --exec-network private (the default) or none, or trust only the load balancer's own address on another machine"
        )),
        None => Ok(()),
    }
}

/// A new private directory in the temp dir for a check. Made with
/// `mkdir`, never reused: the temp dir is writable by everyone, and a name
/// someone else made first (a link, say) is skipped, not followed.
fn scratch_home(counter: &AtomicU64) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let mut last = std::io::Error::other("no name left");
    for _ in 0..16 {
        let n = counter.fetch_add(1, Ordering::Relaxed);
        let home = std::env::temp_dir().join(format!("wharf-check-{}-{n}", std::process::id()));
        match std::fs::DirBuilder::new().mode(0o700).create(&home) {
            Ok(()) => return Ok(home),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Removes the homes of sandbox checks whose daemon is gone: only
/// directories (never a link) that this account owns.
fn sweep_checks() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let pid = name
            .to_str()
            .and_then(|n| n.strip_prefix("wharf-check-"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok());
        let mine = std::fs::symlink_metadata(entry.path()).is_ok_and(|m| {
            use std::os::unix::fs::MetadataExt;
            m.is_dir() && m.uid() == rustix::process::geteuid().as_raw()
        });
        if let Some(pid) = pid
            && mine
            && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The system directory the sandbox lets commands read that `dir` lies
/// beneath, if any.
fn readable_by_commands(dir: &std::path::Path) -> Option<String> {
    // The nearest folder that exists: the data directory may not yet.
    let dir = std::path::absolute(dir).ok()?;
    let dir = dir
        .ancestors()
        .find_map(|d| std::fs::canonicalize(d).ok())?;
    crate::launch::sandbox::SYSTEM_DIRS
        .iter()
        .find_map(|system| {
            let real = std::fs::canonicalize(system).ok()?;
            dir.starts_with(&real).then(|| system.to_string())
        })
}

async fn check_with(
    launcher: PathBuf,
    spec: Launch,
    fail: &impl Fn(String) -> LauncherError,
) -> Result<(), LauncherError> {
    let run = tokio::task::spawn_blocking(move || {
        // A launcher: not for the reaper of orphans.
        let mut launchers = orphans::launchers();
        let child = std::process::Command::new(&launcher)
            .args(spec.args("exit 3"))
            .env_clear()
            .env("PATH", COMMAND_PATH)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        let pid = child.id();
        let key = i32::try_from(pid).unwrap_or(0);
        launchers.insert(key);
        drop(launchers);
        let out = child.wait_with_output();
        orphans::launchers().remove(&key);
        out.map(|out| (pid, out))
    });
    let out = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .map_err(|_| fail("a test command did not finish within 10 s".into()))?
        .map_err(|e| fail(e.to_string()))?
        .map_err(|e| {
            fail(format!(
                "{e}; the launcher must be a Wharf daemon binary (wharf-execd or wharfd)"
            ))
        })?;
    let (pid, out) = out;
    crate::launch::cgroup::remove(pid).await;
    let said = String::from_utf8_lossy(&out.stderr);
    let said = said.trim().trim_start_matches("wharf-exec: ");
    match process::shell_status(out.status) {
        (3, None) => {
            if !said.is_empty() {
                tracing::warn!("{said}");
            }
            Ok(())
        }
        (status, _) if said.is_empty() => Err(fail(format!(
            "a test command ended with status {status}, not 3; the launcher must be a Wharf daemon binary (wharf-execd or wharfd)"
        ))),
        _ => Err(fail(said.to_owned())),
    }
}

/// Remote exec, started: the sandbox checked, the users' networks looked
/// after. One `Exec` serves its own listener and the commands of other
/// doors (the SSH door's `exec` and `shell`), so a user's commands share
/// one count of slots, one set of networks and one quota watch whatever
/// door they came through.
#[derive(Clone)]
pub struct Exec {
    server: Arc<ExecServer>,
}

impl Exec {
    /// Checks the sandbox (fails at once when the launcher does not work)
    /// and starts looking after the users' private networks while this
    /// `Exec` (or a clone, or a session) lives.
    pub async fn start(auth: Authenticator, mut config: ExecConfig) -> Result<Exec, LauncherError> {
        orphans::adopt();
        check_sandbox(&mut config).await?;
        tracing::info!(network = config.network(), "what commands can reach");
        if crate::launch::cgroup::available() {
            tracing::info!("memory limit: per command (a memory cgroup each) and per process");
        } else {
            tracing::warn!(
                "no memory cgroup can be made here: --max-memory holds per process only"
            );
        }
        let networks = network::Networks::new(
            config.network,
            config.launcher.clone(),
            config.pasta.clone(),
        );
        let launcher = spare::Launcher::new(
            config
                .command_launcher
                .clone()
                .unwrap_or_else(|| config.launcher.clone()),
            spare::SPARES,
            config.resources.tmp_size,
        );
        launcher.refill();
        let server = Arc::new(ExecServer {
            launcher,
            usage: usage::Rescans::new(auth.store().clone()),
            auth,
            config,
            running: Arc::new(Slots::default()),
            kernel: quota::KernelQuotas::default(),
            networks,
        });
        let sweeper = Arc::downgrade(&server);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(network::IDLE / 4);
            loop {
                every.tick().await;
                match sweeper.upgrade() {
                    Some(server) => {
                        server.networks.sweep().await;
                    }
                    None => break,
                }
            }
        });
        Ok(Exec { server })
    }

    /// What commands run as and reach, for a banner.
    pub fn config(&self) -> &ExecConfig {
        &self.server.config
    }

    /// Serves remote exec's own protocol on `listener` until `shutdown`
    /// fires; running commands are then killed and their sessions told.
    pub async fn serve(&self, listener: Listener, shutdown: CancellationToken) {
        let limits = self.server.config.limits.clone();
        serve(listener, limits, Arc::clone(&self.server), shutdown).await;
    }

    /// Serves an exec session for `user`, who logged in through another
    /// door, over `conn`: the other door speaks the exec protocol from
    /// `run` on (no hello, no login). The user's `standing` ends it (and
    /// the command running) as it ends the door's own session; every
    /// command is checked, limited, sandboxed and recorded as a native
    /// one.
    pub async fn serve_logged_in(
        &self,
        conn: impl AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static,
        peer: SocketAddr,
        shutdown: CancellationToken,
        user: User,
        standing: watch::Receiver<Standing>,
    ) {
        let server = Arc::clone(&self.server);
        session::run_logged_in(server, Box::new(conn), peer, shutdown, user, standing).await;
    }

    /// Waits for the home scans commands started.
    pub async fn finish(&self) {
        self.server.usage.wait().await;
    }
}

/// Serves remote exec on `listener` until `shutdown` fires; running commands
/// are then killed, their sessions told, and the home scans they started
/// finish. Fails at once when the launcher does not work.
pub async fn run(
    listener: Listener,
    auth: Authenticator,
    config: ExecConfig,
    shutdown: CancellationToken,
) -> Result<(), LauncherError> {
    let exec = Exec::start(auth, config).await?;
    exec.serve(listener, shutdown).await;
    exec.finish().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::readable_by_commands;
    use std::path::Path;

    #[test]
    fn private_dirs_under_system_dirs_are_found() {
        assert_eq!(
            readable_by_commands(Path::new("/usr/local/wharf/data")).as_deref(),
            Some("/usr")
        );
        assert_eq!(
            readable_by_commands(Path::new("/etc/wharf/not-yet")).as_deref(),
            Some("/etc")
        );
        assert_eq!(readable_by_commands(Path::new("/var/lib/wharf/data")), None);
        assert_eq!(readable_by_commands(&std::env::temp_dir()), None);
    }
}
