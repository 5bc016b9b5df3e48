//! `wharf-ftpd`: the file-transfer daemon. Parses flags, opens the database,
//! binds the listener and serves until SIGINT or SIGTERM.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use tokio_util::sync::CancellationToken;
use wharf_core::config::{DATA_DIR_ENV, DATABASE_URL_ENV, DEFAULT_DATA_DIR, database_url};
use wharf_core::server::{Limits, shutdown_signal};
use wharf_core::{AuthConfig, Authenticator, Store};
use wharf_ftp::server::{FtpConfig, FtpServer, run};

/// Wharf file-transfer server: per-user homes, quotas, md5-verified and
/// resumable uploads and downloads.
#[derive(Debug, Parser)]
#[command(
    name = "wharf-ftpd",
    version,
    after_help = "Add users with `admin-cli user add NAME`. Durations: 10s, 5m, 7d."
)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0:2121", value_name = "ADDR")]
    listen: String,
    /// Data directory (holds the default database).
    #[arg(long, env = DATA_DIR_ENV, default_value = DEFAULT_DATA_DIR, value_name = "DIR")]
    data_dir: PathBuf,
    /// Database [default: sqlite://DATA_DIR/wharf.db].
    #[arg(long, env = DATABASE_URL_ENV, value_name = "URL")]
    database_url: Option<String>,
    /// Connections at once, over all clients.
    #[arg(long, default_value_t = 1024, value_name = "N")]
    max_connections: usize,
    /// Connections at once from one IP address.
    #[arg(long, default_value_t = 64, value_name = "N")]
    max_per_ip: usize,
    /// Time allowed from connecting to logging in.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    login_timeout: Duration,
    /// Time a logged-in client may stay silent.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration, value_name = "DURATION")]
    idle_timeout: Duration,
    /// Interrupted uploads untouched this long are deleted and their quota released.
    #[arg(long, default_value = "7d", value_parser = humantime::parse_duration, value_name = "DURATION")]
    partial_ttl: Duration,
    /// On SIGINT/SIGTERM, how long transfers in flight may finish.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    shutdown_grace: Duration,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = tokio::runtime::Runtime::new()
        .context("cannot start the async runtime")
        .and_then(|rt| rt.block_on(serve(args)));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wharf-ftpd: {}", format!("{e:#}").replace('\n', " "));
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(args: Args) -> Result<()> {
    let url = database_url(args.database_url.as_deref(), &args.data_dir);
    let store = Store::open(&url)
        .await
        .with_context(|| format!("cannot open the database {url}"))?;
    if store.has_no_users().await? {
        tracing::warn!(
            "the database has no users yet; add one with `admin-cli --database-url {url} user add NAME`"
        );
    }
    let auth = Authenticator::new(store.clone(), AuthConfig::default()).await?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {}; is the port in use? pick another with --listen",
                args.listen
            )
        })?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, database = %url, "wharf-ftpd {} serving file transfer", env!("CARGO_PKG_VERSION"));
    let config = FtpConfig {
        limits: Limits {
            max_connections: args.max_connections,
            max_per_ip: args.max_per_ip,
            login_timeout: args.login_timeout,
            idle_timeout: args.idle_timeout,
            shutdown_grace: args.shutdown_grace,
        },
        partial_ttl: args.partial_ttl,
        ..FtpConfig::default()
    };
    let shutdown = CancellationToken::new();
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: no new connections; transfers in flight may finish");
        trigger.cancel();
    });
    run(listener, FtpServer::new(auth, config), shutdown).await;
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}
