//! `wharf-execd`: the remote-exec daemon. Parses flags, decides who
//! commands run as, opens the database, binds the listener and serves until
//! SIGINT or SIGTERM.

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use wharf_core::cli::run_main;
use wharf_execd::server::{ExecArgs, run};
use wharf_server::cli::DatabaseArgs;
use wharf_server::cli::LimitArgs;
use wharf_server::cli::init_tracing;
use wharf_server::daemon::Daemon;
use wharf_server::daemon::bind;
use wharf_server::listener::Listener;
use wharf_server::listener::cancel_on_signal;
use wharf_server::tls::ServerTlsArgs;

/// Wharf remote-exec server: users with the exec right run command lines in
/// their homes, with time, output and resource limits.
#[derive(Debug, Parser)]
#[command(
    name = "wharf-execd",
    version,
    after_help = "Grant the right with `admin-cli user grant NAME exec`. Started as root, it runs each user's commands as that user's own uid (1900000000 + the user's id); otherwise as itself. Either way every command runs in a sandbox the kernel enforces (Landlock, mount and PID namespaces). Durations: 10s, 5m; sizes: 64MiB, 1G."
)]
struct Args {
    #[command(flatten)]
    config: wharf_server::config::ConfigArgs,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0:2123", value_name = "ADDR")]
    listen: String,
    #[command(flatten)]
    database: DatabaseArgs,
    #[command(flatten)]
    limits: LimitArgs,
    #[command(flatten)]
    exec: ExecArgs,
    #[command(flatten)]
    tls: ServerTlsArgs,
}

fn main() -> ExitCode {
    wharf_execd::launch::launch_if_asked();
    let args: Args = wharf_server::config::parse();
    init_tracing(args.config.log_format);
    run_main("wharf-execd", async {
        serve(args).await.map(|()| ExitCode::SUCCESS)
    })
}

async fn serve(args: Args) -> Result<()> {
    let mut config = args.exec.config(args.limits.limits());
    config.private_dirs = args.database.private_dirs();
    let daemon = Daemon::start(&args.database, &args.limits, Some(&args.tls), true).await?;
    let listener = bind(&args.listen, "", "pick another with --listen").await?;
    let addr = listener.local_addr()?;
    let runs_as = config.runs_as();
    tracing::info!(%addr, database = %daemon.database, commands_run_as = %runs_as, "wharf-execd {} serving remote exec", env!("CARGO_PKG_VERSION"));
    tracing::info!(quota = %args.database.quota_enforcement(), "quota enforcement");
    let shutdown =
        cancel_on_signal(|| tracing::info!("shutting down: running commands are killed"));
    if let Some(at) = args
        .config
        .start_metrics(&daemon.store, vec![("exec", addr)], &shutdown)
        .await?
    {
        tracing::info!(%at, "serving metrics at /metrics and a health check at /health");
    }
    let listener = Listener::new(listener, daemon.tls.clone());
    run(listener, daemon.auth.clone(), config, shutdown).await?;
    daemon.stop().await;
    tracing::info!("stopped");
    Ok(())
}
