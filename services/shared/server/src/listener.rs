//! What every Wharf server does around its protocol: accept connections
//! within limits, and shut down gracefully.
//!
//! [`serve`] takes a connection permit *before* accepting (so a full server
//! leaves new clients in the kernel's backlog instead of accepting and
//! dropping them), caps connections per client IP, backs off when `accept`
//! fails (out of file descriptors), and on shutdown stops accepting, tells
//! every session through its token, and waits for them up to a grace period.
//! Connections not logged in yet have a budget of their own
//! (`max_unauthenticated`, like OpenSSH's `MaxStartups`), fair between
//! addresses ([`crate::waiting`]): an address past its cap per IP is turned
//! away before it takes a place, and when the budget is full the oldest of
//! the address holding the most is dropped, so a flood of idle connections
//! from one address can never keep another's client from the login;
//! logged-in sessions are never dropped for it.
//! Under TLS it completes the handshake (within the login timeout) before a
//! session sees the connection, and answers a client that speaks plain
//! frames to it with one clear error instead of a protocol dump.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use wharf_proto::ErrorCode;

use crate::tls::ServerTls;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wharf_core::tls::{Stream, TLS_HANDSHAKE_BYTE};
use wharf_store::metrics::{metrics, svc, svc_outcome};

use crate::proxy_protocol::Network;
use crate::waiting::{Ticket, Waiting};

/// How long sessions told to end now (after the grace period) may take.
const ABORT_WAIT: Duration = Duration::from_secs(5);

/// Refusals said at once to one address; past them its extra connections
/// are closed without a word.
const REFUSALS_PER_ADDRESS: usize = 4;

/// Connection limits of a server.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections at once, over all clients.
    pub max_connections: usize,
    /// Connections at once from one IP address.
    pub max_per_ip: usize,
    /// Connections not logged in yet, at once; past it the oldest of the
    /// address holding the most goes.
    pub max_unauthenticated: usize,
    /// Time from connect to a successful login.
    pub login_timeout: Duration,
    /// Time a logged-in session may stay silent.
    pub idle_timeout: Duration,
    /// How long a shutdown waits for sessions to finish.
    pub shutdown_grace: Duration,
    /// Load balancers: connections from these addresses start with a PROXY
    /// protocol v2 header naming the client, and the client's address is
    /// what every limit and penalty per address counts.
    pub proxy_protocol_from: Vec<Network>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            max_per_ip: 64,
            max_unauthenticated: 256,
            login_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            shutdown_grace: Duration::from_secs(30),
            proxy_protocol_from: Vec::new(),
        }
    }
}

/// Why a connection is turned away without a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// The client's IP has `max_per_ip` connections already.
    TooManyFromIp,
    /// A client sent plain frames to a TLS server.
    TlsRequired,
}

impl Rejection {
    /// The error code sent for it.
    fn code(self) -> ErrorCode {
        match self {
            Rejection::TooManyFromIp => ErrorCode::Busy,
            Rejection::TlsRequired => ErrorCode::TlsRequired,
        }
    }

    /// The message sent for it.
    pub fn message(self) -> &'static str {
        match self {
            Rejection::TooManyFromIp => {
                "too many connections from your address; close some and retry"
            }
            Rejection::TlsRequired => {
                "this server speaks TLS only and the client connected without it; connect without --no-tls"
            }
        }
    }
}

/// Where a server listens, and whether it speaks TLS there.
#[derive(Debug)]
pub struct Listener {
    tcp: TcpListener,
    tls: Option<ServerTls>,
}

impl Listener {
    /// TLS on `tcp` with this certificate; `None` serves plain frames
    /// (`--no-tls`).
    pub fn new(tcp: TcpListener, tls: Option<ServerTls>) -> Listener {
        Listener { tcp, tls }
    }
}

/// A protocol server's per-connection entry points.
pub trait Handler: Send + Sync + 'static {
    /// Runs one session until it ends. `shutdown` fires when the server stops:
    /// idle sessions should end at once, transfers may finish. It is the
    /// server's own token, shared by every session (one allocation less
    /// per connection): a session watches it and never cancels it.
    fn handle(
        self: Arc<Self>,
        stream: Stream,
        peer: SocketAddr,
        shutdown: CancellationToken,
        gate: LoginGate,
    ) -> impl Future<Output = ()> + Send;

    /// Called once when a shutdown's grace period runs out with sessions
    /// still open: they should end now, keeping what they can (an upload
    /// records what it received, for a resume).
    fn abort(&self) {}

    /// The service's name in metrics (`ftp`, `chat`, ...).
    fn service_name(&self) -> &'static str {
        "service"
    }

    /// Turns a connection away before its session, saying why in the
    /// protocol's words; Wharf's protocols send one error frame.
    fn reject(&self, stream: Stream, why: Rejection) -> impl Future<Output = ()> + Send {
        reject(stream, why)
    }
}

/// Sends a turned-away client one error frame (every service's `error`
/// reads the same), then closes.
async fn reject(stream: Stream, why: Rejection) {
    use futures_util::SinkExt;
    use wharf_proto::message::{CommonReply, ErrorReply};
    use wharf_proto::{FrameCodec, Outbound};

    let mut conn = tokio_util::codec::Framed::new(stream, FrameCodec::<CommonReply>::new());
    let error = CommonReply::Error(ErrorReply::new(why.code(), why.message()));
    let _ = conn.send(Outbound::msg(error)).await;
    let _ = futures_util::SinkExt::<Outbound<CommonReply>>::close(&mut conn).await;
}

/// A connection's place among those not logged in yet: the session calls
/// [`LoginGate::passed`] once its login succeeds, and from then on the
/// connection is never dropped to make room.
#[derive(Debug)]
pub struct LoginGate {
    ticket: Ticket,
}

impl LoginGate {
    /// The login succeeded.
    pub fn passed(&self) {
        self.ticket.passed();
    }
}

/// Counts what is in use per key (connections per IP, commands per user)
/// against a maximum; a [`Slot`] gives its place back when dropped.
pub struct Slots<K: Hash + Eq + Clone> {
    counts: Mutex<HashMap<K, usize>>,
}

impl<K: Hash + Eq + Clone> Default for Slots<K> {
    fn default() -> Self {
        Slots {
            counts: Mutex::new(HashMap::new()),
        }
    }
}

/// One place taken in [`Slots`].
pub struct Slot<K: Hash + Eq + Clone> {
    table: Arc<Slots<K>>,
    key: K,
}

impl<K: Hash + Eq + Clone> Slots<K> {
    /// Takes a place for `key`, unless it has `max` already.
    pub fn enter(self: &Arc<Self>, key: K, max: usize) -> Option<Slot<K>> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = counts.entry(key.clone()).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Slot {
            table: Arc::clone(self),
            key,
        })
    }

    /// Places in use for `key`.
    pub fn count(&self, key: &K) -> usize {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.get(key).copied().unwrap_or(0)
    }
}

impl<K: Hash + Eq + Clone> Drop for Slot<K> {
    fn drop(&mut self) {
        let mut counts = self.table.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

/// Accepts connections on `listener` and runs `handler` for each, within
/// `limits`, until `shutdown` fires; then waits up to the grace period for
/// sessions to end and returns.
pub async fn serve<H: Handler>(
    listener: Listener,
    limits: Limits,
    handler: Arc<H>,
    shutdown: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let per_ip: Arc<Slots<IpAddr>> = Arc::new(Slots::default());
    // Refusals being said, per address: past a few, an address's extra
    // connections are closed without a word, so a flood of them cannot hold
    // the connection budget through the TLS handshake of each refusal.
    let refusing: Arc<Slots<IpAddr>> = Arc::new(Slots::default());
    let waiting = Waiting::new(limits.max_unauthenticated, usize::MAX);
    let tracker = TaskTracker::new();
    let mut backoff = Duration::from_millis(10);
    let Listener { tcp: listener, tls } = listener;
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (mut stream, mut peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => {
                    backoff = Duration::from_millis(10);
                    conn
                }
                Err(e) => {
                    // Typically EMFILE: wait for sessions to end rather than spin.
                    tracing::warn!(error = %e, "accept failed; retrying in {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let handler = Arc::clone(&handler);
        let per_ip = Arc::clone(&per_ip);
        let refusing = Arc::clone(&refusing);
        let max_per_ip = limits.max_per_ip;
        let proxied = limits
            .proxy_protocol_from
            .iter()
            .any(|n| n.contains(peer.ip()));
        let tls = tls.clone();
        let handshake_time = limits.login_timeout;
        // The server's own token, shared: nothing cancels one session's
        // alone, and a child token is an allocation per connection.
        let token = shutdown.clone();
        let waiting = Arc::clone(&waiting);
        // The task uses `stream` and `peer` in place: a task keeps its
        // captures for its whole life, and a copy made in it would be
        // kept beside them.
        let task_fut = async move {
            if proxied {
                peer = match Box::pin(tokio::time::timeout(
                    handshake_time,
                    crate::proxy_protocol::read_header(&mut stream),
                ))
                .await
                {
                    Ok(Ok(client)) => client.unwrap_or(peer),
                    Ok(Err(e)) => {
                        tracing::info!(balancer = %peer, "connection dropped: {e}");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(balancer = %peer, "no PROXY protocol header in time; connection dropped");
                        return;
                    }
                };
            }
            // Past its cap, an address is turned away before it takes a
            // place among those not logged in (and ends nobody's).
            let Some(guard) = per_ip.enter(peer.ip(), max_per_ip) else {
                tracing::info!(%peer, "refused: too many connections from this address");
                metrics()
                    .connections_refused
                    .get_or_create(&svc_outcome(
                        handler.service_name(),
                        "too_many_from_address",
                    ))
                    .inc();
                // Said in the connection's own terms (over TLS on a TLS
                // port), within the login timeout; a few at once per address.
                let Some(_refusing) = refusing.enter(peer.ip(), REFUSALS_PER_ADDRESS) else {
                    return;
                };
                if let Established::Ready(stream) =
                    Box::pin(establish(stream, tls.as_ref(), handshake_time)).await
                {
                    let _ = Box::pin(tokio::time::timeout(
                        handshake_time,
                        handler.reject(stream, Rejection::TooManyFromIp),
                    ))
                    .await;
                }
                return;
            };
            let gate = LoginGate {
                ticket: waiting.admit(peer.ip()),
            };
            let evicted = gate.ticket.evicted();
            let session = async {
                // Boxed, as the session below: a task is as big as its
                // biggest state, and the handshake's would stay allocated
                // for the session's whole life (a few KiB per idle session).
                let stream = match Box::pin(establish(stream, tls.as_ref(), handshake_time)).await {
                    Established::Ready(stream) => stream,
                    Established::PlainToTls(stream) => {
                        tracing::info!(%peer, "refused: a plain client on the TLS port");
                        metrics()
                            .connections_refused
                            .get_or_create(&svc_outcome(handler.service_name(), "tls_required"))
                            .inc();
                        Box::pin(handler.reject(stream, Rejection::TlsRequired)).await;
                        return;
                    }
                    Established::Failed(why) => {
                        tracing::debug!(%peer, "TLS handshake failed: {why}");
                        return;
                    }
                };
                let open = metrics()
                    .connections_open
                    .get_or_create(&svc(handler.service_name()))
                    .clone();
                open.inc();
                let _open = OnDrop(move || {
                    open.dec();
                });
                Box::pin(handler.handle(stream, peer, token, gate)).await;
            };
            tokio::select! {
                () = session => {}
                () = evicted => {
                    tracing::debug!(%peer, "ended: too many connections not logged in");
                }
            }
            drop(guard);
            drop(permit);
        };
        tracker.spawn(task_fut);
    }
    drop(listener);
    tracker.close();
    if tokio::time::timeout(limits.shutdown_grace, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            sessions = tracker.len(),
            "grace period over; ending the sessions still open"
        );
        handler.abort();
        if tokio::time::timeout(ABORT_WAIT, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                sessions = tracker.len(),
                "sessions did not end; stopping with them still open"
            );
        }
    }
}

enum Established {
    Ready(Stream),
    PlainToTls(Stream),
    Failed(String),
}

/// The connection as its session will see it: under TLS, once the
/// handshake is done (the first byte and the handshake within `time`).
async fn establish(tcp: TcpStream, tls: Option<&ServerTls>, time: Duration) -> Established {
    let Some(tls) = tls else {
        return Established::Ready(Stream::Plain(tcp));
    };
    let handshake = async {
        let mut first = [0u8; 1];
        match tcp.peek(&mut first).await {
            Ok(1..) => {}
            Ok(_) => return Established::Failed("closed before a byte".into()),
            Err(e) => return Established::Failed(e.to_string()),
        }
        if first[0] != TLS_HANDSHAKE_BYTE {
            return Established::PlainToTls(Stream::Plain(tcp));
        }
        match tls.acceptor().accept(tcp).await {
            Ok(s) => Established::Ready(Stream::Server(Box::new(s))),
            Err(e) => Established::Failed(e.to_string()),
        }
    };
    tokio::time::timeout(time, handshake)
        .await
        .unwrap_or_else(|_| Established::Failed("no handshake within the login timeout".into()))
}

/// A token cancelled on SIGINT or SIGTERM (caught from this call on), after
/// `say(..)` reports it: the one shutdown of a daemon.
pub fn cancel_on_signal(say: impl FnOnce() + Send + 'static) -> CancellationToken {
    let shutdown = CancellationToken::new();
    let trigger = shutdown.clone();
    let signal = shutdown_signal();
    tokio::spawn(async move {
        signal.await;
        say();
        trigger.cancel();
    });
    shutdown
}

/// A future that resolves on SIGINT or SIGTERM, for the daemons' `main`.
/// The signals are caught from this call on (not from the first poll), so
/// a daemon can say it is ready once it has called this.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let streams = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    );
    async move {
        match streams {
            (Ok(mut int), Ok(mut term)) => {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
            }
            _ => {
                tracing::warn!("cannot catch SIGINT/SIGTERM; waiting on Ctrl-C alone");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

/// Runs its closure when dropped (a session's gauge, even when the session
/// is aborted).
struct OnDrop<F: FnMut()>(F);

impl<F: FnMut()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}
