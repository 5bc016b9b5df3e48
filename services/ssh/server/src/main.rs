//! `wharf-sshd`: the SSH door. Parses flags, opens the database, reads (or
//! makes) the host key, binds and serves until SIGINT or SIGTERM.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Result;
use clap::Parser;
use wharf_core::cli::run_main;
use wharf_execd::server::{Exec, ExecArgs};
use wharf_server::cli::DatabaseArgs;
use wharf_server::cli::LimitArgs;
use wharf_server::cli::init_tracing;
use wharf_server::daemon::Daemon;
use wharf_server::daemon::bind;
use wharf_server::listener::Listener;
use wharf_server::listener::cancel_on_signal;
use wharf_sshd::host_key::fingerprint_line;
use wharf_sshd::{SshArgs, SshServer, run};

/// Wharf's SSH door: sftp, scp, rsync, commands and shells on the users,
/// keys, homes, quotas and sandbox of the other services.
#[derive(Debug, Parser)]
#[command(
    name = "wharf-sshd",
    version,
    after_help = "Give users keys with `admin-cli user key add NAME FILE`; sftp and scp need the ftp right, commands and shells the exec right (they run in remote exec's sandbox). Durations: 10s, 5m, 2h; sizes: 64MiB, 1G."
)]
struct Args {
    #[command(flatten)]
    config: wharf_server::config::ConfigArgs,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0:2222", value_name = "ADDR")]
    listen: String,
    #[command(flatten)]
    database: DatabaseArgs,
    #[command(flatten)]
    limits: LimitArgs,
    #[command(flatten)]
    ssh: SshArgs,
    /// Serve sftp and scp only: refuse commands and shells.
    #[arg(long)]
    no_exec: bool,
    #[command(flatten)]
    exec: ExecArgs,
}

fn main() -> ExitCode {
    // Commands start through this binary: the launcher's part first.
    wharf_execd::launch::launch_if_asked();
    let args: Args = wharf_server::config::parse();
    init_tracing(args.config.log_format);
    run_main("wharf-sshd", async {
        serve(args).await.map(|()| ExitCode::SUCCESS)
    })
}

async fn serve(args: Args) -> Result<()> {
    // SSH encrypts by itself: no TLS certificate to load.
    let daemon = Daemon::start(&args.database, &args.limits, None, true).await?;
    let config = args
        .ssh
        .config(args.limits.limits(), &args.database.data_dir)?;
    let exec = match args.no_exec {
        true => None,
        false => {
            let mut exec = args.exec.config(args.limits.limits());
            exec.private_dirs = args.database.private_dirs();
            match Exec::start(daemon.auth.clone(), exec).await {
                Ok(exec) => Some(exec),
                Err(e) => {
                    tracing::warn!("commands over SSH are OFF (sftp and scp are served): {e}");
                    None
                }
            }
        }
    };
    let tcp = bind(&args.listen, "", "pick another with --listen").await?;
    let addr = tcp.local_addr()?;
    tracing::info!(
        %addr,
        database = %daemon.database,
        host_key = %fingerprint_line(&config.host_key),
        password_login = config.password_login,
        commands = exec.as_ref().map_or("off", |e| e.config().runs_as()),
        "wharf-sshd {} serving sftp, scp and commands over SSH",
        env!("CARGO_PKG_VERSION")
    );
    let shutdown = cancel_on_signal(|| tracing::info!("shutting down: sessions are told"));
    if let Some(at) = args
        .config
        .start_metrics(&daemon.store, vec![("ssh", addr)], &shutdown)
        .await?
    {
        tracing::info!(%at, "serving metrics at /metrics and a health check at /health");
    }
    let server = Arc::new(SshServer::new(daemon.auth.clone(), config, exec.clone()));
    run(Listener::new(tcp, None), server, shutdown).await;
    if let Some(exec) = &exec {
        exec.finish().await;
    }
    daemon.stop().await;
    tracing::info!("stopped");
    Ok(())
}
