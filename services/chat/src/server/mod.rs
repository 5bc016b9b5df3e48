//! The chat server: configuration, [`bind`] and [`run`].

mod bucket;
mod hub;
mod journal;
mod outbox;
mod tcp;
mod udp;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use wharf_core::Authenticator;
use wharf_core::server::{Handler, Limits, Listener, LoginGate, serve};
use wharf_core::tls::Stream;
use wharf_proto::datagram::SessionId;

pub use bucket::Rate;

use hub::{Hub, HubConfig};
use journal::Journal;
use udp::UdpSessions;

/// Server settings.
#[derive(Debug, Clone)]
pub struct ChatConfig {
    /// TCP connection limits and timeouts.
    pub limits: Limits,
    /// Messages (`say` and `dm`) per user: burst and rate.
    pub flood: Rate,
    /// Frames waiting for one TCP member; a member whose queue is full is
    /// dropped.
    pub member_queue: usize,
    /// Rooms with members at once.
    pub max_rooms: usize,
    /// Rooms one session may be in.
    pub max_rooms_per_session: usize,
    /// Messages `history` returns when not told.
    pub history_default: u32,
    /// Most messages one `history` returns.
    pub history_max: u32,
    /// A UDP session ends after this long without a valid datagram.
    pub udp_idle: Duration,
    /// How often UDP clients are told to send a keepalive.
    pub udp_keepalive: Duration,
    /// Datagrams per UDP session: burst and rate (over it: dropped).
    pub udp_rate: Rate,
    /// UDP sessions at once.
    pub max_udp_sessions: usize,
    /// UDP sessions per user (a new one replaces the oldest).
    pub max_udp_sessions_per_user: usize,
    /// Failed logins one connection may make before it is closed.
    pub max_login_attempts: u32,
    /// Messages waiting to be written to the database; past it, `say`
    /// answers `busy`.
    pub journal_queue: usize,
    /// The UDP port clients are told to send datagrams to, when not the
    /// port their TCP connection reached (behind a TCP load balancer).
    pub udp_public_port: Option<u16>,
}

impl Default for ChatConfig {
    fn default() -> Self {
        ChatConfig {
            limits: Limits::default(),
            flood: Rate {
                burst: 20,
                per_sec: 5.0,
            },
            member_queue: 1024,
            max_rooms: 10_000,
            max_rooms_per_session: 100,
            history_default: 50,
            history_max: 500,
            udp_idle: Duration::from_secs(120),
            udp_keepalive: Duration::from_secs(25),
            udp_rate: udp::default_rate(),
            max_udp_sessions: 10_000,
            max_udp_sessions_per_user: 8,
            max_login_attempts: 3,
            journal_queue: 100_000,
            udp_public_port: None,
        }
    }
}

/// The chat flags of a daemon (`wharf-chatd`, `wharfd`).
#[derive(Debug, Clone, clap::Args)]
pub struct ChatArgs {
    /// Messages a user may send at once before flood control starts.
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub flood_burst: u32,
    /// Messages per second a user may keep sending.
    #[arg(long, default_value_t = 5.0, value_name = "N")]
    pub flood_rate: f64,
    /// Messages queued for one TCP client; a client that falls this far
    /// behind is disconnected.
    #[arg(long, default_value_t = 1024, value_name = "N")]
    pub member_queue: usize,
    /// A UDP session ends after this long without a datagram.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub udp_idle: Duration,
    /// UDP sessions at once.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    pub max_udp_sessions: usize,
    /// The port clients send chat datagrams to, on the host they reached
    /// over TCP, when it is not that TCP port: behind a TCP load balancer
    /// (which carries no UDP), this replica's own UDP port as published
    /// there. A UDP session stays with the replica that granted it.
    #[arg(long, value_name = "PORT")]
    pub udp_public_port: Option<u16>,
}

/// A chat flag that makes no sense.
#[derive(Debug, thiserror::Error)]
#[error("--flood-burst and --flood-rate must be above 0")]
pub struct BadFlood;

impl ChatArgs {
    /// The server settings these flags ask for.
    pub fn config(&self, limits: Limits) -> Result<ChatConfig, BadFlood> {
        if self.flood_rate.is_nan() || self.flood_rate <= 0.0 || self.flood_burst == 0 {
            return Err(BadFlood);
        }
        Ok(ChatConfig {
            limits,
            flood: Rate {
                burst: self.flood_burst,
                per_sec: self.flood_rate,
            },
            member_queue: self.member_queue.max(1),
            udp_idle: self.udp_idle,
            max_udp_sessions: self.max_udp_sessions,
            udp_public_port: self.udp_public_port,
            ..ChatConfig::default()
        })
    }
}

/// What every session shares.
pub(crate) struct ChatServer {
    auth: Authenticator,
    config: ChatConfig,
    hub: Hub,
    udp: UdpSessions,
    udp_out: mpsc::Sender<(SessionId, Bytes)>,
}

impl Handler for ChatServer {
    fn service_name(&self) -> &'static str {
        "chat"
    }

    async fn handle(
        self: Arc<Self>,
        stream: Stream,
        peer: SocketAddr,
        shutdown: CancellationToken,
        gate: LoginGate,
    ) {
        tcp::run(self, stream, peer, shutdown, gate).await;
    }
}

/// Binds TCP and UDP on the same address. With port 0, the UDP socket takes
/// the port the system gave TCP.
pub async fn bind(addr: &str) -> std::io::Result<(TcpListener, UdpSocket)> {
    let mut last_err = None;
    for _ in 0..20 {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        match UdpSocket::bind(local).await {
            Ok(udp) => return Ok((listener, udp)),
            // Port 0 gave a port some other program holds for UDP: try again.
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => last_err = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_err.unwrap_or_else(|| std::io::Error::other("no port free for both TCP and UDP")))
}

/// Serves chat on `listener` and `udp` until `shutdown` fires, then ends
/// every session and writes out the message history. Fails only when the
/// database cannot be read at start.
pub async fn run(
    listener: Listener,
    udp: UdpSocket,
    auth: Authenticator,
    config: ChatConfig,
    shutdown: CancellationToken,
) -> Result<(), wharf_core::Error> {
    let store = auth.store().clone();
    let last_id = store.last_chat_id().await?;
    // On PostgreSQL the rooms are shared with every chat server on the
    // database.
    let replica =
        (store.backend() == wharf_core::store::Backend::Postgres).then(hub::shared::replica_name);
    if let Some(replica) = &replica {
        tracing::info!(replica = %replica, "chat rooms shared through PostgreSQL with the other chat servers on this database");
    }
    let (journal, writer) = Journal::start(store.clone(), config.journal_queue);
    let (udp_out, udp_rx) = mpsc::channel(config.member_queue.max(1) * 4);
    let hub = Hub::new(
        store,
        journal,
        last_id,
        udp_out.clone(),
        HubConfig {
            flood: config.flood,
            max_rooms: config.max_rooms,
            max_rooms_per_endpoint: config.max_rooms_per_session,
            history_default: config.history_default,
            history_max: config.history_max,
        },
        replica,
    );
    let limits = config.limits.clone();
    let server = Arc::new(ChatServer {
        auth,
        config,
        hub,
        udp: UdpSessions::default(),
        udp_out,
    });
    let datagrams = tokio::spawn(udp::serve(
        Arc::clone(&server),
        udp,
        udp_rx,
        shutdown.clone(),
    ));
    let shared = tokio::spawn(hub::shared::run(Arc::clone(&server), shutdown.clone()));
    serve(listener, limits, Arc::clone(&server), shutdown).await;
    let _ = datagrams.await;
    let _ = shared.await;
    server.hub.journal().flush().await;
    tracing::debug!(
        endpoints = server.hub.endpoint_count(),
        udp_sessions = server.udp.count(),
        "chat server stopped"
    );
    // Sessions past the grace period may still hold the journal; what they
    // queued before the flush is written, and the writer ends with them.
    drop(writer);
    Ok(())
}
