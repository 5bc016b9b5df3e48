//! `wharf-chatd`: the chat daemon. Parses flags, opens the database, binds
//! TCP and UDP on one address and serves until SIGINT or SIGTERM.

use std::time::Duration;

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use tokio_util::sync::CancellationToken;
use wharf_chat::server::{ChatConfig, Rate, bind, run};
use wharf_core::cli::{DatabaseArgs, LimitArgs, init_tracing, run_main};
use wharf_core::server::shutdown_signal;

/// Wharf chat server: rooms, direct messages and history, over TCP and UDP
/// on one port.
#[derive(Debug, Parser)]
#[command(
    name = "wharf-chatd",
    version,
    after_help = "Add users with `admin-cli user add NAME` (chat is granted by default). Durations: 10s, 5m, 2h."
)]
struct Args {
    /// Address to listen on, TCP and UDP.
    #[arg(long, default_value = "0.0.0.0:2122", value_name = "ADDR")]
    listen: String,
    #[command(flatten)]
    database: DatabaseArgs,
    #[command(flatten)]
    limits: LimitArgs,
    /// Messages a user may send at once before flood control starts.
    #[arg(long, default_value_t = 20, value_name = "N")]
    flood_burst: u32,
    /// Messages per second a user may keep sending.
    #[arg(long, default_value_t = 5.0, value_name = "N")]
    flood_rate: f64,
    /// Messages queued for one TCP client; a client that falls this far
    /// behind is disconnected.
    #[arg(long, default_value_t = 1024, value_name = "N")]
    member_queue: usize,
    /// A UDP session ends after this long without a datagram.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    udp_idle: Duration,
    /// UDP sessions at once.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    max_udp_sessions: usize,
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_tracing();
    run_main("wharf-chatd", async {
        serve(args).await.map(|()| ExitCode::SUCCESS)
    })
}

async fn serve(args: Args) -> Result<()> {
    if args.flood_rate.is_nan() || args.flood_rate <= 0.0 || args.flood_burst == 0 {
        anyhow::bail!("--flood-burst and --flood-rate must be above 0");
    }
    let url = args.database.url();
    let (store, auth) = args
        .database
        .open()
        .await
        .with_context(|| format!("cannot open the database {url}"))?;
    let (listener, udp) = bind(&args.listen).await.with_context(|| {
        format!(
            "cannot listen on {} (TCP and UDP); is the port in use? pick another with --listen",
            args.listen
        )
    })?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, database = %url, "wharf-chatd {} serving chat over TCP and UDP", env!("CARGO_PKG_VERSION"));
    let config = ChatConfig {
        limits: args.limits.limits(),
        flood: Rate {
            burst: args.flood_burst,
            per_sec: args.flood_rate,
        },
        member_queue: args.member_queue.max(1),
        udp_idle: args.udp_idle,
        max_udp_sessions: args.max_udp_sessions,
        ..ChatConfig::default()
    };
    let shutdown = CancellationToken::new();
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: sessions are told, history is written out");
        trigger.cancel();
    });
    run(listener, udp, auth, config, shutdown).await?;
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}
