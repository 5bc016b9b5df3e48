//! The file-transfer server: configuration, [`run`], and the sweeper that
//! removes stale partial uploads.

mod batch;
mod commands;
mod conn;
mod download;
mod partials;
mod session;
pub mod stdftp;
mod upload;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use wharf_core::tls::Stream;
use wharf_server::listener::Handler;
use wharf_server::listener::Limits;
use wharf_server::listener::Listener;
use wharf_server::listener::LoginGate;
use wharf_server::listener::serve;
use wharf_store::Authenticator;
use wharf_store::Store;
use wharf_store::home::partial_dir;
use wharf_store::home::partial_target_size;

/// Server settings.
#[derive(Debug, Clone)]
pub struct FtpConfig {
    /// Connection limits and timeouts.
    pub limits: Limits,
    /// Partial uploads untouched for this long are deleted and their quota
    /// released.
    pub partial_ttl: Duration,
    /// How often the sweeper looks for stale partial uploads.
    pub sweep_interval: Duration,
    /// Most entries one `ls` returns.
    pub max_listing: usize,
    /// Failed logins one connection may make before it is closed.
    pub max_login_attempts: u32,
}

impl Default for FtpConfig {
    fn default() -> Self {
        FtpConfig {
            limits: Limits::default(),
            partial_ttl: Duration::from_secs(7 * 24 * 3600),
            sweep_interval: Duration::from_secs(3600),
            max_listing: 100_000,
            max_login_attempts: 3,
        }
    }
}

/// The file-transfer flags of a daemon (`wharf-ftpd`, `wharfd`).
#[derive(Debug, Clone, clap::Args)]
pub struct FtpArgs {
    /// Interrupted uploads untouched this long are deleted and their quota released.
    #[arg(long, default_value = "7d", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub partial_ttl: Duration,
    /// Also serve standard FTP (curl, lftp, FileZilla, ftplib) on ADDR, with
    /// FTPS by AUTH TLS, on the same users, homes and quotas [default: off].
    #[arg(long, env = "WHARF_STD_FTP_LISTEN", value_name = "ADDR")]
    pub std_ftp_listen: Option<String>,
    /// Refuse standard FTP logins and data without TLS, even on loopback
    /// (the default on any other address).
    #[arg(long, conflicts_with = "std_ftp_allow_plaintext")]
    pub std_ftp_require_tls: bool,
    /// Allow standard FTP without TLS on an address other than loopback:
    /// passwords then cross the network in clear.
    #[arg(long)]
    pub std_ftp_allow_plaintext: bool,
    /// Ports offered for standard FTP's passive data connections.
    #[arg(long, default_value = "50000-50049", value_parser = port_range, value_name = "FIRST-LAST")]
    pub std_ftp_passive_ports: std::ops::RangeInclusive<u16>,
    /// The address to announce for passive data connections (behind NAT,
    /// in a container) [default: the one the client connected to].
    #[arg(long, value_name = "IPV4")]
    pub std_ftp_passive_host: Option<std::net::Ipv4Addr>,
}

fn port_range(s: &str) -> Result<std::ops::RangeInclusive<u16>, String> {
    let bad = || format!("{s:?} is not a port range: write FIRST-LAST, such as 50000-50049");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let (a, b): (u16, u16) = (
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    );
    if a == 0 || a > b {
        return Err(bad());
    }
    Ok(a..=b)
}

impl FtpArgs {
    /// The standard FTP listener's settings, for a listener bound at
    /// `addr` with the service's TLS `files`; TLS is required unless the
    /// address is loopback or plaintext was allowed.
    pub fn std_ftp(
        &self,
        addr: std::net::SocketAddr,
        files: Option<(std::path::PathBuf, std::path::PathBuf)>,
        limits: Limits,
    ) -> stdftp::StdFtpConfig {
        let require_tls = files.is_some()
            && (self.std_ftp_require_tls
                || !(addr.ip().is_loopback() || self.std_ftp_allow_plaintext));
        stdftp::StdFtpConfig {
            passive_ports: self.std_ftp_passive_ports.clone(),
            passive_host: self.std_ftp_passive_host,
            limits,
            tls: files,
            require_tls,
        }
    }

    /// The standard FTP listener, bound, with its settings, when
    /// `--std-ftp-listen` asks for one; `files` are the service's TLS
    /// certificate and key. A bind error says what to do.
    pub async fn std_ftp_listener(
        &self,
        files: Option<(std::path::PathBuf, std::path::PathBuf)>,
        limits: Limits,
    ) -> std::io::Result<Option<(tokio::net::TcpListener, stdftp::StdFtpConfig)>> {
        let Some(at) = &self.std_ftp_listen else {
            return Ok(None);
        };
        let listener = tokio::net::TcpListener::bind(at).await.map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot listen on {at} for standard FTP ({e}); is the port in use? pick another with --std-ftp-listen"),
            )
        })?;
        let config = self.std_ftp(listener.local_addr()?, files, limits);
        Ok(Some((listener, config)))
    }

    /// The server settings these flags ask for.
    pub fn config(&self, limits: Limits) -> FtpConfig {
        FtpConfig {
            limits,
            partial_ttl: self.partial_ttl,
            ..FtpConfig::default()
        }
    }
}

/// What every session shares.
#[derive(Debug)]
pub struct FtpServer {
    auth: Authenticator,
    config: FtpConfig,
    /// Fires when a shutdown's grace period is over: transfers stop.
    stop_now: CancellationToken,
}

impl FtpServer {
    /// A server checking logins with `auth`.
    pub fn new(auth: Authenticator, config: FtpConfig) -> Self {
        FtpServer {
            auth,
            config,
            stop_now: CancellationToken::new(),
        }
    }

    fn store(&self) -> &Store {
        self.auth.store()
    }
}

impl Handler for FtpServer {
    fn service_name(&self) -> &'static str {
        "ftp"
    }

    async fn handle(
        self: Arc<Self>,
        stream: Stream,
        peer: std::net::SocketAddr,
        shutdown: CancellationToken,
        gate: LoginGate,
    ) {
        session::run(self, stream, peer, shutdown, gate).await;
    }

    fn abort(&self) {
        self.stop_now.cancel();
    }
}

/// Serves file transfer on `listener` until `shutdown` fires, then lets
/// sessions finish for the grace period. The caller binds the listener, so
/// tests can use `127.0.0.1:0`.
pub async fn run(listener: Listener, server: FtpServer, shutdown: CancellationToken) {
    let server = Arc::new(server);
    let sweeper = tokio::spawn(sweep_partials_forever(
        Arc::clone(&server),
        shutdown.clone(),
    ));
    serve(listener, server.config.limits.clone(), server, shutdown).await;
    sweeper.abort();
}

async fn sweep_partials_forever(server: Arc<FtpServer>, shutdown: CancellationToken) {
    loop {
        match sweep_partials(server.store(), server.config.partial_ttl).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "removed stale partial uploads"),
            Err(e) => tracing::warn!(error = %e, "partial upload sweep failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(server.config.sweep_interval) => {}
        }
    }
}

/// Deletes partial uploads untouched for `ttl` (skipping ones in use) and
/// releases the quota they reserved. Returns how many were removed.
pub async fn sweep_partials(store: &Store, ttl: Duration) -> Result<u64, wharf_store::Error> {
    let mut removed = 0;
    for user in store.list_users().await? {
        let dir = partial_dir(&user.home);
        let stale = tokio::task::spawn_blocking(move || stale_partials(&dir, ttl))
            .await
            .map_err(|e| wharf_store::Error::Internal(format!("sweep task failed: {e}")))?;
        for size in stale {
            store.release(user.id, size, 1).await?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Removes the stale, unlocked partial files in `dir`; returns their sizes.
fn stale_partials(dir: &std::path::Path, ttl: Duration) -> Vec<u64> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let now = SystemTime::now();
    let mut sizes = Vec::new();
    for entry in entries.flatten() {
        let Some(size) = entry.file_name().to_str().and_then(partial_target_size) else {
            continue;
        };
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|age| age >= ttl);
        if !old {
            continue;
        }
        // A session uploading into it holds the lock: leave it alone.
        let Ok(file) = std::fs::File::open(entry.path()) else {
            continue;
        };
        if file.try_lock().is_err() {
            continue;
        }
        if std::fs::remove_file(entry.path()).is_ok() {
            sizes.push(size);
        }
    }
    sizes
}
