//! The daemons' command line: the database flags, the connection-limit
//! flags and logging.

use std::path::PathBuf;
use std::time::Duration;

use wharf_core::config::{DATA_DIR_ENV, DATABASE_URL_ENV, DEFAULT_DATA_DIR, database_url};
use wharf_store::{AuthConfig, Authenticator, Result, Store};

use crate::listener::Limits;

/// `--data-dir` and `--database-url`.
#[derive(Debug, Clone, clap::Args)]
pub struct DatabaseArgs {
    /// Data directory (holds the default database).
    #[arg(long, env = DATA_DIR_ENV, default_value = DEFAULT_DATA_DIR, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Database [default: sqlite://DATA_DIR/wharf.db].
    #[arg(long, env = DATABASE_URL_ENV, value_name = "URL")]
    pub database_url: Option<String>,
}
impl DatabaseArgs {
    /// The database URL these flags name.
    pub fn url(&self) -> String {
        database_url(self.database_url.as_deref(), &self.data_dir)
    }

    /// How the quota of the homes under the data directory is enforced, in
    /// the words of a banner.
    pub fn quota_enforcement(&self) -> String {
        wharf_store::home::btrfs::describe(&self.data_dir.join("homes"))
    }

    /// What commands run through exec must never reach: the data directory
    /// and the folder of the database file.
    pub fn private_dirs(&self) -> Vec<PathBuf> {
        let url = self.url();
        let file = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .map(|rest| rest.split('?').next().unwrap_or(rest));
        let mut dirs = vec![self.data_dir.clone()];
        if let Some(folder) = file.and_then(|f| std::path::Path::new(f).parent()) {
            dirs.push(folder.to_path_buf());
        }
        dirs
    }

    /// Opens the database (migrating it) and an authenticator over it with
    /// this login policy; warns when there is nobody to log in yet.
    pub async fn open(&self, policy: AuthConfig) -> Result<(Store, Authenticator)> {
        let url = self.url();
        let (store, auth) = self.open_quietly(policy).await?;
        if store.has_no_users().await? {
            tracing::warn!(
                "the database has no users yet; add one with `admin-cli --database-url {} user add NAME`",
                wharf_core::config::shown_database_url(&url)
            );
        }
        Ok((store, auth))
    }

    /// Opens the database (migrating it) and an authenticator over it with
    /// this login policy.
    pub async fn open_quietly(&self, policy: AuthConfig) -> Result<(Store, Authenticator)> {
        let store = Store::open(&self.url()).await?;
        let auth = Authenticator::new(store.clone(), policy).await?;
        Ok((store, auth))
    }
}
/// The connection limits of a daemon.
#[derive(Debug, Clone, clap::Args)]
pub struct LimitArgs {
    /// Connections at once, over all clients.
    #[arg(long, default_value_t = 1024, value_name = "N")]
    pub max_connections: usize,
    /// Connections at once from one IP address.
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub max_per_ip: usize,
    /// Connections not logged in yet, at once; past it the oldest of them
    /// is dropped (a flood of idle connections never blocks a login).
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub max_unauthenticated: usize,
    /// Time allowed from connecting to logging in.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub login_timeout: Duration,
    /// Time a logged-in client may stay silent.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub idle_timeout: Duration,
    /// On SIGINT/SIGTERM, how long sessions may finish.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub shutdown_grace: Duration,
    /// Failed logins one address (an IPv6 /64) may make in a minute; past
    /// that it is refused for a minute, doubling with each further burst.
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub login_failures_per_minute: u32,
    /// The longest an address is refused for failed logins.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub login_penalty_max: Duration,
    /// A TCP load balancer's address (or network, 10.0.0.0/24): its
    /// connections must start with a PROXY protocol v2 header (HAProxy's
    /// `send-proxy-v2`), whose client address then counts for every limit
    /// and login penalty. Repeat for several. Never a network clients
    /// connect from: they could claim any address.
    #[arg(long, value_name = "ADDRESS[/PREFIX]")]
    pub proxy_protocol_from: Vec<crate::proxy_protocol::Network>,
    /// Upload rate of a user, over all their sessions in this process
    /// (4MiB, 500KiB/s), for users without one of their own (`admin-cli
    /// user limit NAME --upload-rate`). Unlimited when not given.
    #[arg(long, value_parser = wharf_core::size::parse_rate, value_name = "RATE")]
    pub upload_rate: Option<u64>,
    /// Download rate of a user, as --upload-rate.
    #[arg(long, value_parser = wharf_core::size::parse_rate, value_name = "RATE")]
    pub download_rate: Option<u64>,
    /// Sessions a user may have at once, over every service and every
    /// server process on the database, for users without a number of their
    /// own (`admin-cli user limit NAME --max-sessions`). Unlimited when not
    /// given.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..), value_name = "N")]
    pub max_sessions: Option<u64>,
}
impl LimitArgs {
    /// The login policy these flags set.
    pub fn login_policy(&self) -> AuthConfig {
        AuthConfig {
            source_max_failures: self.login_failures_per_minute.max(1),
            source_window: Duration::from_secs(60),
            source_max_penalty: self.login_penalty_max,
            user_limits: wharf_store::db::UserLimits {
                upload_rate: self.upload_rate,
                download_rate: self.download_rate,
                max_sessions: self.max_sessions,
            },
            ..AuthConfig::default()
        }
    }

    /// The limits these flags set.
    pub fn limits(&self) -> Limits {
        Limits {
            max_connections: self.max_connections,
            max_per_ip: self.max_per_ip,
            max_unauthenticated: self.max_unauthenticated,
            login_timeout: self.login_timeout,
            idle_timeout: self.idle_timeout,
            shutdown_grace: self.shutdown_grace,
            proxy_protocol_from: self.proxy_protocol_from.clone(),
        }
    }
}
/// How a daemon writes its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Lines for people: time, level, message, fields.
    Text,
    /// One JSON object per line (for journald and log shippers): `timestamp`,
    /// `level`, `target`, `message` and the event's fields.
    Json,
}
/// What is logged unless `RUST_LOG` says otherwise: Wharf's own lines at
/// `info`; nothing of libunftp's (its per-command chatter, and spans whose
/// fields print a whole session with `Debug`): the standard FTP listener
/// logs its logins, transfers and refusals itself, one line each.
pub const DEFAULT_LOG_FILTER: &str = "info,sqlx::postgres::notice=warn,libunftp=off,unftp_core=off";
/// Logs to stderr at `info`, or as `RUST_LOG` says, as text (in colour
/// only on a terminal, and never with `NO_COLOR` set,
/// https://no-color.org) or as JSON lines.
pub fn init_tracing(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => {
            let colour = std::io::stderr().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
            builder.with_ansi(colour).init();
        }
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
}
