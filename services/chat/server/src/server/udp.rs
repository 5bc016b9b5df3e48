//! Chat over UDP: sessions granted over TCP, one authenticated frame per
//! datagram.
//!
//! The receive loop checks, in this order and without replying to anything
//! that fails: the length and direction byte, the session, the seal
//! (ChaCha20-Poly1305, whose tag is checked in constant time), the counter
//! against the session's replay window, and the session's datagram rate.
//! No password and no argon2 work ever comes near this port, and an
//! unauthenticated datagram never causes a single byte to be sent.
//!
//! Even a sealed datagram may come from a spoofed address (a copy of a
//! captured one, raced ahead of the original). So replies go only to an
//! address that proved it receives this session's datagrams: a datagram
//! from any other address is not acted on; the server sends that address a
//! sealed `challenge` (at most three times the bytes it received from it,
//! as QUIC caps what goes to an unvalidated address) and keeps the request.
//! Only when that address sends back the token in a sealed `answer` does
//! the session move there, and the kept request runs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use wharf_proto::ErrorCode;
use wharf_proto::chat::{ChatReply, ChatRequest, PresenceChange, UdpSessionGrant};
use wharf_proto::datagram::{
    self, Direction, KEY_LEN, Key, MAX_DATAGRAM, MAX_FRAME, ReplayWindow, SESSION_ID_LEN, SessionId,
};
use wharf_proto::message::ErrorReply;
use wharf_server::Refusal;
use wharf_store::standing::Standing;

use super::ChatServer;
use super::bucket::{Bucket, Rate};
use super::hub::{EndpointId, Sink, datagram_frame};

/// Bytes of names a `who` or `rooms` answer may carry in one datagram.
const DATAGRAM_LIST_BUDGET: usize = 800;

/// Most messages `history` replays over UDP (one datagram each).
const DATAGRAM_HISTORY_MAX: u32 = 50;

/// Bytes sent to an unvalidated address at most, per byte received from it.
const AMPLIFICATION: usize = 3;

struct Session {
    key: Key,
    user_id: i64,
    endpoint: EndpointId,
    /// Where replies go: the last address that answered a challenge.
    addr: Option<SocketAddr>,
    /// A new address being checked.
    probe: Option<Probe>,
    window: ReplayWindow,
    sent: u64,
    last_seen: Instant,
    created: Instant,
    bucket: Bucket,
    /// The user's standing: a lock, a deletion or a revoked right ends the
    /// session.
    standing: Option<watch::Receiver<Standing>>,
    /// Shared rooms (PostgreSQL): the session's requests that wait for the
    /// database, answered one after another, in the order they came, by a
    /// task of their own (it ends with the session).
    queue: Option<mpsc::Sender<ChatRequest>>,
}

/// Requests of one UDP session waiting for the database; past it, a
/// datagram is dropped as a full network would.
const QUEUE: usize = 64;

/// An address that sent a sealed datagram and has not answered yet.
struct Probe {
    addr: SocketAddr,
    token: String,
    /// Bytes received from it, and sent to it: sent <= 3 x received.
    received: usize,
    sent: usize,
    /// The last request it sent, with its counter: acted on once it answers.
    pending: Option<(u64, Result<ChatRequest, String>)>,
}

/// What a datagram leads to.
enum Admitted {
    /// A request from the session's address.
    Request(SessionId, EndpointId, Result<ChatRequest, String>),
    /// A challenge to send to a new address.
    Challenge(Vec<u8>, SocketAddr),
}

/// The UDP sessions of a server.
#[derive(Default)]
pub(crate) struct UdpSessions {
    map: Mutex<HashMap<SessionId, Session>>,
}

impl UdpSessions {
    fn lock(&self) -> MutexGuard<'_, HashMap<SessionId, Session>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sessions now.
    pub(crate) fn count(&self) -> usize {
        self.lock().len()
    }
}

/// A fresh session for a logged-in user (asked for over TCP).
pub(crate) fn grant(
    server: &ChatServer,
    user_id: i64,
    user: &str,
    address: std::net::IpAddr,
    standing: Option<watch::Receiver<Standing>>,
) -> Result<UdpSessionGrant, Refusal> {
    let cfg = &server.config;
    let mut id = [0u8; SESSION_ID_LEN];
    let mut key = [0u8; KEY_LEN];
    getrandom::fill(&mut id)
        .and_then(|()| getrandom::fill(&mut key))
        .map_err(|e| {
            tracing::error!(error = %e, "the system's random source failed");
            Refusal::new(
                ErrorCode::Internal,
                "the server cannot make a session key; try again",
            )
        })?;
    let evicted = {
        let mut map = server.udp.lock();
        // A user's oldest session makes room for a new one: clients that
        // crash and come back must not lock themselves out.
        let mut own: Vec<(Instant, SessionId, EndpointId)> = map
            .iter()
            .filter(|(_, s)| s.user_id == user_id)
            .map(|(sid, s)| (s.created, *sid, s.endpoint))
            .collect();
        let mut evicted = Vec::new();
        if own.len() >= cfg.max_udp_sessions_per_user.max(1) {
            own.sort();
            let excess = own.len() + 1 - cfg.max_udp_sessions_per_user.max(1);
            for (_, sid, endpoint) in own.into_iter().take(excess) {
                map.remove(&sid);
                evicted.push(endpoint);
            }
        }
        if map.len() >= cfg.max_udp_sessions {
            return Err(Refusal::new(
                ErrorCode::Busy,
                format!(
                    "the server has its maximum of {} UDP sessions; use TCP or retry later",
                    cfg.max_udp_sessions
                ),
            ));
        }
        let endpoint = server.hub.register(user_id, user, address, Sink::Udp(id));
        let now = Instant::now();
        map.insert(
            id,
            Session {
                key: Key::new(key),
                user_id,
                endpoint,
                addr: None,
                probe: None,
                window: ReplayWindow::default(),
                sent: 0,
                last_seen: now,
                created: now,
                bucket: Bucket::full(cfg.udp_rate),
                standing,
                queue: None,
            },
        );
        evicted
    };
    for endpoint in evicted {
        server.hub.unregister(endpoint, PresenceChange::Left);
    }
    Ok(UdpSessionGrant {
        session: hex::encode(id),
        key: Key::new(key).to_hex(),
        idle_timeout_secs: cfg.udp_idle.as_secs().max(1),
        keepalive_secs: cfg.udp_keepalive.min(cfg.udp_idle / 3).as_secs().max(1),
        max_datagram: MAX_DATAGRAM,
        udp_port: cfg.udp_public_port,
    })
}

/// Receives datagrams until `shutdown`; sends what the hub queues for UDP
/// endpoints; expires idle sessions.
pub(crate) async fn serve(
    server: Arc<ChatServer>,
    socket: UdpSocket,
    outgoing: mpsc::Receiver<(SessionId, Bytes)>,
    shutdown: CancellationToken,
) {
    let socket = Arc::new(socket);
    let sender = tokio::spawn(send_forever(
        Arc::clone(&server),
        Arc::clone(&socket),
        outgoing,
    ));
    let sweeper = tokio::spawn(expire_forever(Arc::clone(&server), shutdown.clone()));
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    loop {
        let (n, peer) = tokio::select! {
            _ = shutdown.cancelled() => {
                server.hub.close();
                break;
            }
            r = socket.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(e) => {
                    // ICMP errors from earlier sends surface here: not fatal.
                    tracing::debug!(error = %e, "UDP receive error");
                    continue;
                }
            },
        };
        match admit(&server, &mut buf[..n], peer) {
            None => {}
            Some(Admitted::Request(session, endpoint, request)) => {
                handle(&server, session, endpoint, request);
            }
            Some(Admitted::Challenge(datagram, to)) => {
                if let Err(e) = socket.send_to(&datagram, to).await {
                    tracing::debug!(error = %e, addr = %to, "UDP send failed");
                }
            }
        }
    }
    sweeper.abort();
    sender.abort();
    say_shutting_down(&server, &socket).await;
    // Sessions end with the server: take their endpoints out of the rooms.
    let ended: Vec<EndpointId> = server.udp.lock().drain().map(|(_, s)| s.endpoint).collect();
    for endpoint in ended {
        server.hub.unregister(endpoint, PresenceChange::Left);
    }
}

/// The checks, in order; `None` (drop silently) at the first that fails.
fn admit(server: &ChatServer, datagram: &mut [u8], peer: SocketAddr) -> Option<Admitted> {
    let size = datagram.len();
    let envelope = datagram::peek(datagram, Direction::ToServer)?;
    let mut map = server.udp.lock();
    let session = map.get_mut(&envelope.session)?;
    let frame = datagram::open(&session.key, datagram)?;
    if !session.window.is_fresh(envelope.counter) {
        return None;
    }
    if !session.bucket.take(server.config.udp_rate) {
        return None;
    }
    let request = datagram::decode_frame::<ChatRequest>(frame).map_err(|e| e.to_string());
    if session.addr == Some(peer) {
        session.window.record(envelope.counter);
        session.last_seen = Instant::now();
        return Some(Admitted::Request(
            envelope.session,
            session.endpoint,
            request,
        ));
    }
    // From an address this session has not validated.
    if let Ok(ChatRequest::Answer { token }) = &request {
        let answered = session
            .probe
            .as_ref()
            .is_some_and(|p| p.addr == peer && p.token == *token);
        if !answered {
            return None;
        }
        session.window.record(envelope.counter);
        session.last_seen = Instant::now();
        session.addr = Some(peer);
        let pending = session.probe.take().and_then(|p| p.pending);
        let (counter, request) = pending?;
        if !session.window.is_fresh(counter) {
            return None; // it came from the session's address meanwhile
        }
        session.window.record(counter);
        return Some(Admitted::Request(
            envelope.session,
            session.endpoint,
            request,
        ));
    }
    if session.probe.as_ref().is_none_or(|p| p.addr != peer) {
        session.probe = Some(Probe {
            addr: peer,
            token: new_token()?,
            received: 0,
            sent: 0,
            pending: None,
        });
    }
    let probe = session.probe.as_mut()?;
    probe.received += size;
    probe.pending = Some((envelope.counter, request));
    let frame = datagram_frame(&ChatReply::Challenge {
        token: probe.token.clone(),
    })?;
    let mut out = Vec::with_capacity(MAX_DATAGRAM);
    datagram::seal(
        &session.key,
        Direction::ToClient,
        &envelope.session,
        session.sent + 1,
        &frame,
        &mut out,
    )
    .ok()?;
    if probe.sent + out.len() > AMPLIFICATION * probe.received {
        return None;
    }
    probe.sent += out.len();
    session.sent += 1;
    Some(Admitted::Challenge(out, peer))
}

/// 16 random bytes as hex, or `None` if the system's random source fails.
fn new_token() -> Option<String> {
    let mut token = [0u8; 16];
    match getrandom::fill(&mut token) {
        Ok(()) => Some(hex::encode(token)),
        Err(e) => {
            tracing::error!(error = %e, "the system's random source failed");
            None
        }
    }
}

fn handle(
    server: &Arc<ChatServer>,
    session: SessionId,
    endpoint: EndpointId,
    request: Result<ChatRequest, String>,
) {
    let hub = &server.hub;
    let request = match request {
        Ok(r) => r,
        Err(e) => {
            let reply = ErrorReply::new(ErrorCode::BadRequest, format!("bad datagram: {e}"));
            return reply_to(server, session, ChatReply::Error(reply));
        }
    };
    if hub.is_shared()
        && matches!(
            request,
            ChatRequest::Say { .. }
                | ChatRequest::Dm { .. }
                | ChatRequest::Who { .. }
                | ChatRequest::Rooms
        )
    {
        // These wait for the shared database: queued for the session's own
        // task, so that they are answered, and said, in the order they came.
        let mut map = server.udp.lock();
        let Some(s) = map.get_mut(&session) else {
            return;
        };
        let queue = s.queue.get_or_insert_with(|| {
            let (tx, rx) = mpsc::channel(QUEUE);
            tokio::spawn(answer_in_order(Arc::clone(server), session, endpoint, rx));
            tx
        });
        let _ = queue.try_send(request);
        return;
    }
    let reply = match request {
        ChatRequest::Say { room, text } => hub.say_here(endpoint, &room, &text),
        ChatRequest::Dm { to, text } => hub.dm_here(endpoint, &to, &text),
        ChatRequest::Leave { room } => hub.leave(endpoint, &room),
        ChatRequest::Who { room } => hub.who_here(&room, DATAGRAM_LIST_BUDGET),
        ChatRequest::Rooms => hub.rooms_here(DATAGRAM_LIST_BUDGET),
        ChatRequest::Ping => Ok(ChatReply::Pong),
        ChatRequest::Quit => {
            reply_to(server, session, ChatReply::Bye);
            if let Some(s) = server.udp.lock().remove(&session) {
                hub.unregister(s.endpoint, PresenceChange::Left);
            }
            return;
        }
        ChatRequest::Join { room } => {
            let server = Arc::clone(server);
            tokio::spawn(async move {
                let reply = server.hub.join(endpoint, &room).await;
                reply_to(&server, session, flatten(reply));
            });
            return;
        }
        ChatRequest::History { room, limit } => {
            let server = Arc::clone(server);
            tokio::spawn(async move {
                match server.hub.history(&room, limit, DATAGRAM_HISTORY_MAX).await {
                    Err(e) => reply_to(&server, session, ChatReply::Error(e.reply())),
                    Ok(messages) => {
                        let count = u32::try_from(messages.len()).unwrap_or(u32::MAX);
                        reply_to(&server, session, ChatReply::History { room, count });
                        for m in messages {
                            reply_to(&server, session, ChatReply::Message(m));
                        }
                    }
                }
            });
            return;
        }
        // Answers are consumed by `admit`; one from the session's own
        // address has nothing to do.
        ChatRequest::Answer { .. } => return,
        ChatRequest::Hello(_)
        | ChatRequest::Login(_)
        | ChatRequest::UdpSession
        | ChatRequest::Passwd(_) => Err(Refusal::new(
            ErrorCode::BadRequest,
            "hello, login, passwd and udp_session go over TCP, never in a datagram",
        )),
    };
    reply_to(server, session, flatten(reply));
}

/// Answers a session's requests that wait for the shared database, one
/// after another, until the session ends.
async fn answer_in_order(
    server: Arc<ChatServer>,
    session: SessionId,
    endpoint: EndpointId,
    mut requests: mpsc::Receiver<ChatRequest>,
) {
    let hub = &server.hub;
    while let Some(request) = requests.recv().await {
        let reply = match request {
            ChatRequest::Say { room, text } => hub.say(endpoint, &room, &text).await,
            ChatRequest::Dm { to, text } => hub.dm(endpoint, &to, &text).await,
            ChatRequest::Who { room } => hub.who(&room, DATAGRAM_LIST_BUDGET).await,
            ChatRequest::Rooms => hub.rooms(DATAGRAM_LIST_BUDGET).await,
            _ => continue,
        };
        reply_to(&server, session, flatten(reply));
    }
}

/// The reply, or the refusal in the wire's words.
fn flatten(reply: Result<ChatReply, Refusal>) -> ChatReply {
    reply.unwrap_or_else(|refusal| ChatReply::Error(refusal.reply()))
}

/// Queues a reply for the session (lossy, like every datagram).
fn reply_to(server: &ChatServer, session: SessionId, reply: ChatReply) {
    if let Some(frame) = datagram_frame(&reply) {
        let _ = server.udp_out.try_send((session, frame));
    }
}

async fn send_forever(
    server: Arc<ChatServer>,
    socket: Arc<UdpSocket>,
    mut outgoing: mpsc::Receiver<(SessionId, Bytes)>,
) {
    let mut datagram = Vec::with_capacity(MAX_DATAGRAM);
    while let Some((sid, frame)) = outgoing.recv().await {
        if frame.len() > MAX_FRAME {
            continue;
        }
        let addr = {
            let mut map = server.udp.lock();
            let Some(s) = map.get_mut(&sid) else {
                continue;
            };
            let Some(addr) = seal_for(s, &sid, &frame, &mut datagram) else {
                continue;
            };
            addr
        };
        if let Err(e) = socket.send_to(&datagram, addr).await {
            tracing::debug!(error = %e, %addr, "UDP send failed");
        }
    }
}

/// Seals `frame` for the session `sid` into `datagram`; where to send it,
/// or None (the client has not spoken yet: nowhere to send).
fn seal_for(
    s: &mut Session,
    sid: &SessionId,
    frame: &[u8],
    datagram: &mut Vec<u8>,
) -> Option<SocketAddr> {
    let addr = s.addr?;
    s.sent += 1;
    datagram::seal(&s.key, Direction::ToClient, sid, s.sent, frame, datagram).ok()?;
    Some(addr)
}

/// Tells every UDP session the server is stopping (one datagram each,
/// lossy as every datagram): clients reconnect at once instead of at their
/// next send or keepalive.
async fn say_shutting_down(server: &ChatServer, socket: &UdpSocket) {
    let notice = ChatReply::Error(ErrorReply::new(
        ErrorCode::ShuttingDown,
        "the server is shutting down; reconnect in a moment",
    ));
    let Some(frame) = datagram_frame(&notice) else {
        return;
    };
    let sealed: Vec<(SocketAddr, Vec<u8>)> = {
        let mut map = server.udp.lock();
        map.iter_mut()
            .filter_map(|(sid, s)| {
                let mut datagram = Vec::with_capacity(MAX_DATAGRAM);
                seal_for(s, sid, &frame, &mut datagram).map(|addr| (addr, datagram))
            })
            .collect()
    };
    for (addr, datagram) in sealed {
        let _ = socket.send_to(&datagram, addr).await;
    }
}

async fn expire_forever(server: Arc<ChatServer>, shutdown: CancellationToken) {
    let idle = server.config.udp_idle;
    // Often enough that an administrator's lock ends UDP sessions within a
    // second, as it ends TCP ones.
    let every = (idle / 4).clamp(Duration::from_millis(50), Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let expired: Vec<EndpointId> = {
            let mut map = server.udp.lock();
            let now = Instant::now();
            let refused = |s: &Session| {
                s.standing
                    .as_ref()
                    .is_some_and(|st| st.borrow().refusal(wharf_core::Service::Chat).is_some())
            };
            let old: Vec<SessionId> = map
                .iter()
                .filter(|(_, s)| now.duration_since(s.last_seen) >= idle || refused(s))
                .map(|(id, _)| *id)
                .collect();
            old.iter()
                .filter_map(|id| map.remove(id))
                .map(|s| s.endpoint)
                .collect()
        };
        for endpoint in expired {
            server.hub.unregister(endpoint, PresenceChange::Left);
        }
    }
}

/// The shape of the per-session datagram limit.
pub(crate) fn default_rate() -> Rate {
    Rate {
        burst: 100,
        per_sec: 50.0,
    }
}
