//! `wharf-ftpd`: the file-transfer daemon. Parses flags, opens the database,
//! binds the listener and serves until SIGINT or SIGTERM.

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use wharf_core::cli::run_main;
use wharf_ftpd::server::{FtpArgs, FtpServer, run};
use wharf_server::cli::DatabaseArgs;
use wharf_server::cli::LimitArgs;
use wharf_server::cli::init_tracing;
use wharf_server::daemon::Daemon;
use wharf_server::daemon::bind;
use wharf_server::listener::Listener;
use wharf_server::listener::cancel_on_signal;
use wharf_server::tls::ServerTlsArgs;

/// Wharf file-transfer server: per-user homes, quotas, md5-verified and
/// resumable uploads and downloads.
#[derive(Debug, Parser)]
#[command(
    name = "wharf-ftpd",
    version,
    after_help = "Add users with `admin-cli user add NAME`. Durations: 10s, 5m, 7d."
)]
struct Args {
    #[command(flatten)]
    config: wharf_server::config::ConfigArgs,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0:2121", value_name = "ADDR")]
    listen: String,
    #[command(flatten)]
    database: DatabaseArgs,
    #[command(flatten)]
    limits: LimitArgs,
    #[command(flatten)]
    ftp: FtpArgs,
    #[command(flatten)]
    tls: ServerTlsArgs,
}

fn main() -> ExitCode {
    let args: Args = wharf_server::config::parse();
    init_tracing(args.config.log_format);
    run_main("wharf-ftpd", async {
        serve(args).await.map(|()| ExitCode::SUCCESS)
    })
}

async fn serve(args: Args) -> Result<()> {
    let daemon = Daemon::start(&args.database, &args.limits, Some(&args.tls), true).await?;
    let listener = bind(&args.listen, "", "pick another with --listen").await?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, database = %daemon.database, "wharf-ftpd {} serving file transfer", env!("CARGO_PKG_VERSION"));
    tracing::info!(quota = %args.database.quota_enforcement(), "quota enforcement");
    let config = args.ftp.config(args.limits.limits());
    let shutdown = cancel_on_signal(|| {
        tracing::info!("shutting down: no new connections; transfers in flight may finish")
    });
    let std_ftp = args
        .ftp
        .std_ftp_listener(
            args.tls.files(&args.database.data_dir),
            args.limits.limits(),
        )
        .await?;
    let mut own = vec![("ftp", addr)];
    if let Some((l, _)) = &std_ftp {
        own.push(("std-ftp", l.local_addr()?));
    }
    if let Some(at) = args
        .config
        .start_metrics(&daemon.store, own, &shutdown)
        .await?
    {
        tracing::info!(%at, "serving metrics at /metrics and a health check at /health");
    }
    if let Some((l, config)) = std_ftp {
        tracing::info!(
            addr = %l.local_addr()?, tls = config.tls.is_some(), require_tls = config.require_tls,
            passive_ports = ?config.passive_ports, "serving standard FTP"
        );
        let stop = shutdown.clone();
        tokio::spawn(wharf_ftpd::server::stdftp::serve(
            l,
            daemon.auth.clone(),
            daemon.store.clone(),
            config,
            stop,
        ));
    }
    run(
        Listener::new(listener, daemon.tls.clone()),
        FtpServer::new(daemon.auth.clone(), config),
        shutdown,
    )
    .await;
    daemon.stop().await;
    tracing::info!("stopped");
    Ok(())
}
