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
use wharf_core::tls::Stream;
use wharf_proto::datagram::SessionId;
use wharf_server::listener::Handler;
use wharf_server::listener::Limits;
use wharf_server::listener::Listener;
use wharf_server::listener::LoginGate;
use wharf_server::listener::serve;
use wharf_store::Authenticator;
use wharf_store::db::HistoryPolicy;

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
    /// Bytes of message text per user: burst and rate.
    pub flood_bytes: Rate,
    /// Frames waiting for one TCP member; a member whose queue is full is
    /// dropped.
    pub member_queue: usize,
    /// Rooms with members at once.
    pub max_rooms: usize,
    /// Rooms one session may be in.
    pub max_rooms_per_session: usize,
    /// Rooms one user may have made that still have members.
    pub max_rooms_per_user: usize,
    /// Rooms made from one address that still have members.
    pub max_rooms_per_address: usize,
    /// What history is kept: by age, per room, per user.
    pub history_days: Option<u64>,
    pub history_per_room: Option<u64>,
    pub history_per_user_bytes: Option<u64>,
    /// How often history past those limits is removed.
    pub history_trim_every: Duration,
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
            flood_bytes: Rate {
                burst: 64 * 1024,
                per_sec: 4096.0,
            },
            member_queue: 1024,
            max_rooms: 10_000,
            max_rooms_per_session: 100,
            max_rooms_per_user: 50,
            max_rooms_per_address: 200,
            history_days: Some(90),
            history_per_room: Some(100_000),
            history_per_user_bytes: Some(256 * 1024 * 1024),
            history_trim_every: Duration::from_secs(600),
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
    /// Bytes of message text a user may send at once before flood control
    /// starts (at least a message's 4 KiB).
    #[arg(long, default_value = "64KiB", value_parser = parse_byte_burst, value_name = "SIZE")]
    pub flood_bytes_burst: u64,
    /// Bytes of message text per second a user may keep sending.
    #[arg(long, default_value = "4KiB", value_parser = wharf_core::size::parse_size, value_name = "SIZE")]
    pub flood_bytes_rate: u64,
    /// Rooms one user may have made that still have members (a room goes
    /// when its last member leaves).
    #[arg(long, default_value_t = 50, value_name = "N")]
    pub max_rooms_per_user: usize,
    /// Rooms made from one client address that still have members.
    #[arg(long, default_value_t = 200, value_name = "N")]
    pub max_rooms_per_address: usize,
    /// Days room and direct messages are kept, or `forever`.
    #[arg(long, default_value = "90", value_parser = parse_keep, value_name = "DAYS")]
    pub chat_history_days: Keep,
    /// Messages kept per room, the newest, or `forever`.
    #[arg(long, default_value = "100000", value_parser = parse_keep, value_name = "N")]
    pub chat_history_max: Keep,
    /// Bytes of text kept per user over rooms and direct messages, the
    /// newest, or `unlimited`: no one user can fill the database.
    #[arg(long, default_value = "256MiB", value_parser = parse_keep_size, value_name = "SIZE")]
    pub chat_history_user_size: Keep,
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

/// A limit on kept history: a number, or `forever` (`None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keep(pub Option<u64>);

fn parse_keep(input: &str) -> Result<Keep, String> {
    match input.trim() {
        s if s.eq_ignore_ascii_case("forever") => Ok(Keep(None)),
        s => match s.parse::<u64>() {
            Ok(n) if n > 0 => Ok(Keep(Some(n))),
            _ => Err(format!("{s} is not a number above 0 or `forever`")),
        },
    }
}

fn parse_keep_size(input: &str) -> Result<Keep, String> {
    wharf_core::size::parse_quota(input)
        .map(Keep)
        .map_err(|e| e.to_string())
}

fn parse_byte_burst(input: &str) -> Result<u64, String> {
    let n = wharf_core::size::parse_size(input).map_err(|e| e.to_string())?;
    if n < wharf_proto::chat::MAX_TEXT_BYTES as u64 {
        return Err(format!(
            "{input} is less than one message's {} bytes: no long message could ever be sent",
            wharf_proto::chat::MAX_TEXT_BYTES
        ));
    }
    Ok(n)
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
            flood_bytes: Rate {
                burst: u32::try_from(self.flood_bytes_burst).unwrap_or(u32::MAX),
                per_sec: self.flood_bytes_rate.max(1) as f64,
            },
            max_rooms_per_user: self.max_rooms_per_user,
            max_rooms_per_address: self.max_rooms_per_address,
            history_days: self.chat_history_days.0,
            history_per_room: self.chat_history_max.0,
            history_per_user_bytes: self.chat_history_user_size.0,
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

    fn handle(
        self: Arc<Self>,
        stream: Stream,
        peer: SocketAddr,
        shutdown: CancellationToken,
        gate: LoginGate,
    ) -> impl Future<Output = ()> + Send {
        tcp::run(self, stream, peer, shutdown, gate)
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
) -> Result<(), wharf_store::Error> {
    let store = auth.store().clone();
    let last_id = store.last_chat_id().await?;
    // On PostgreSQL the rooms are shared with every chat server on the
    // database.
    let replica =
        (store.backend() == wharf_store::db::Backend::Postgres).then(hub::shared::replica_name);
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
            flood_bytes: config.flood_bytes,
            max_rooms: config.max_rooms,
            max_rooms_per_endpoint: config.max_rooms_per_session,
            max_rooms_per_user: config.max_rooms_per_user,
            max_rooms_per_address: config.max_rooms_per_address,
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
    let trimmer = tokio::spawn(trim_history(Arc::clone(&server), shutdown.clone()));
    serve(listener, limits, Arc::clone(&server), shutdown).await;
    let _ = datagrams.await;
    let _ = shared.await;
    let _ = trimmer.await;
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

/// Removes the history the configuration does not keep, now and then
/// until `shutdown`: by age, per room and per user, in small batches
/// beside the hub (which never waits for it).
async fn trim_history(server: Arc<ChatServer>, shutdown: CancellationToken) {
    let cfg = &server.config;
    if cfg.history_days.is_none()
        && cfg.history_per_room.is_none()
        && cfg.history_per_user_bytes.is_none()
    {
        return;
    }
    let mut every = tokio::time::interval(cfg.history_trim_every.max(Duration::from_millis(10)));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        let policy = HistoryPolicy {
            before_ms: cfg.history_days.map(|days| {
                let days = i64::try_from(days).unwrap_or(i64::MAX / 86_400_000);
                wharf_core::time::now_ms().saturating_sub(days.saturating_mul(86_400_000))
            }),
            per_room: cfg.history_per_room,
            per_user_bytes: cfg.history_per_user_bytes,
        };
        match server.hub.store().trim_chat_history(policy).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(messages = n, "chat history past its limits removed"),
            Err(e) => {
                tracing::warn!(error = %e, "cannot trim the chat history; trying again later")
            }
        }
    }
}
