//! The remote-exec server: configuration, privileges and [`run`].

mod args;
mod output;
mod privileges;
mod process;
mod session;
mod usage;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use wharf_core::Authenticator;
use wharf_core::server::{Handler, Limits, Rejection, Slots, serve};

pub use args::ExecArgs;
pub use privileges::{PrivilegeError, decide_identity, lookup_identity};
pub use process::{COMMAND_PATH, Identity, ResourceLimits};

/// Server settings.
#[derive(Debug, Clone)]
pub struct ExecConfig {
    /// Connection limits and timeouts (the idle timeout applies between
    /// commands, not while one runs).
    pub limits: Limits,
    /// Wall-clock time a command may run.
    pub command_timeout: Duration,
    /// Bytes of output (stdout and stderr together) a command may write.
    pub max_output: u64,
    /// Commands one user may run at once, over all connections.
    pub max_per_user: usize,
    /// Kernel limits on every command.
    pub resources: ResourceLimits,
    /// Who commands run as; `None`: as the server. See [`decide_identity`].
    pub run_as: Option<Identity>,
    /// After the shell exits, how long output from processes it left behind
    /// is still read before they are killed.
    pub drain: Duration,
    /// Failed logins one connection may make before it is closed.
    pub max_login_attempts: u32,
    /// The binary that starts commands: a daemon that calls
    /// [`crate::launch::launch_if_asked`] first thing; by default, this
    /// process's own executable.
    pub launcher: PathBuf,
}

impl Default for ExecConfig {
    fn default() -> Self {
        ExecConfig {
            limits: Limits::default(),
            command_timeout: Duration::from_secs(60),
            max_output: 64 * 1024 * 1024,
            max_per_user: 4,
            resources: ResourceLimits::default(),
            run_as: None,
            drain: Duration::from_millis(250),
            max_login_attempts: 3,
            launcher: std::env::current_exe().unwrap_or_default(),
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
}

impl Handler for ExecServer {
    async fn handle(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        shutdown: CancellationToken,
    ) {
        session::run(self, stream, peer, shutdown).await;
    }

    async fn reject(self: Arc<Self>, stream: TcpStream, why: Rejection) {
        session::reject(stream, why).await;
    }
}

/// Why the exec server cannot start.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot start commands through {}: {reason}; the launcher must be a Wharf daemon binary (wharf-execd or wharfd)",
    launcher.display()
)]
pub struct LauncherError {
    launcher: PathBuf,
    reason: String,
}

/// Checks that `launcher` starts commands: runs `exit 3` through it.
pub async fn check_launcher(launcher: &Path) -> Result<(), LauncherError> {
    let fail = |reason: String| LauncherError {
        launcher: launcher.to_owned(),
        reason,
    };
    let dir = std::env::temp_dir();
    let mut running = process::Running::spawn(&process::Spawn {
        launcher,
        command: "exit 3",
        home: &dir,
        user: "wharf",
        identity: None,
        limits: ResourceLimits::default(),
        stdin: false,
    })
    .map_err(|e| fail(e.to_string()))?;
    let status = tokio::time::timeout(Duration::from_secs(10), async {
        running.exited().await?;
        running.finish().await
    })
    .await
    .map_err(|_| fail("it did not finish within 10 s".into()))?
    .map_err(|e| fail(e.to_string()))?;
    match process::shell_status(status) {
        (3, None) => Ok(()),
        (status, _) => Err(fail(format!(
            "a test command ended with status {status}, not 3"
        ))),
    }
}

/// Serves remote exec on `listener` until `shutdown` fires; running commands
/// are then killed, their sessions told, and the home scans they started
/// finish. Fails at once when the launcher does not work.
pub async fn run(
    listener: TcpListener,
    auth: Authenticator,
    config: ExecConfig,
    shutdown: CancellationToken,
) -> Result<(), LauncherError> {
    check_launcher(&config.launcher).await?;
    let limits = config.limits.clone();
    let server = Arc::new(ExecServer {
        usage: usage::Rescans::new(auth.store().clone()),
        auth,
        config,
        running: Arc::new(Slots::default()),
    });
    serve(listener, limits, Arc::clone(&server), shutdown).await;
    server.usage.wait().await;
    Ok(())
}
