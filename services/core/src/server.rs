//! What every Wharf server does around its protocol: accept connections
//! within limits, and shut down gracefully.
//!
//! [`serve`] takes a connection permit *before* accepting (so a full server
//! leaves new clients in the kernel's backlog instead of accepting and
//! dropping them), caps connections per client IP, backs off when `accept`
//! fails (out of file descriptors), and on shutdown stops accepting, tells
//! every session through its token, and waits for them up to a grace period.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long sessions told to end now (after the grace period) may take.
const ABORT_WAIT: Duration = Duration::from_secs(5);

/// Connection limits of a server.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections at once, over all clients.
    pub max_connections: usize,
    /// Connections at once from one IP address.
    pub max_per_ip: usize,
    /// Time from connect to a successful login.
    pub login_timeout: Duration,
    /// Time a logged-in session may stay silent.
    pub idle_timeout: Duration,
    /// How long a shutdown waits for sessions to finish.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            max_per_ip: 64,
            login_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// Why a connection is turned away without a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// The client's IP has `max_per_ip` connections already.
    TooManyFromIp,
}

/// A protocol server's per-connection entry points.
pub trait Handler: Send + Sync + 'static {
    /// Runs one session until it ends. `shutdown` fires when the server stops:
    /// idle sessions should end at once, transfers may finish.
    fn handle(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        shutdown: CancellationToken,
    ) -> impl Future<Output = ()> + Send;

    /// Called once when a shutdown's grace period runs out with sessions
    /// still open: they should end now, keeping what they can (an upload
    /// records what it received, for a resume).
    fn abort(&self) {}

    /// Tells a turned-away client why (one error frame), then drops it.
    fn reject(
        self: Arc<Self>,
        stream: TcpStream,
        why: Rejection,
    ) -> impl Future<Output = ()> + Send;
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
    listener: TcpListener,
    limits: Limits,
    handler: Arc<H>,
    shutdown: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let per_ip: Arc<Slots<IpAddr>> = Arc::new(Slots::default());
    let tracker = TaskTracker::new();
    let mut backoff = Duration::from_millis(10);
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
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
        match per_ip.enter(peer.ip(), limits.max_per_ip) {
            Some(guard) => {
                let token = shutdown.child_token();
                tracker.spawn(async move {
                    handler.handle(stream, peer, token).await;
                    drop(guard);
                    drop(permit);
                });
            }
            None => {
                tracing::info!(%peer, "refused: too many connections from this address");
                tracker.spawn(async move {
                    handler.reject(stream, Rejection::TooManyFromIp).await;
                    drop(permit);
                });
            }
        }
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
