//! One TCP connection, served by one task: it reads requests and writes
//! what its queue ([`Outbox`]) holds, replies and room events in the order
//! they were queued. The hub drops a session whose queue is full.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::StreamExt;
use futures_util::future::Either;
use tokio::io::{AsyncWrite, AsyncWriteExt, WriteHalf};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use wharf_core::Service;
use wharf_core::tls::Stream;
use wharf_proto::chat::{ChatReply, ChatRequest, PresenceChange};
use wharf_proto::datagram::encode_frame;
use wharf_proto::message::ErrorReply;
use wharf_proto::{ErrorCode, Frame, FrameCodec, ProtoError};
use wharf_server::Refusal;
use wharf_server::listener::LoginGate;
use wharf_server::opening::Entered;
use wharf_server::opening::Opening;
use wharf_server::opening::Step;
use wharf_server::opening::login_ok;
use wharf_store::standing;
use wharf_store::standing::Standing;

use super::ChatServer;
use super::hub::{EndpointId, Sink};
use super::outbox::Outbox;
use super::udp;

/// Bytes of names a `who` or `rooms` answer may carry (headers are at most
/// 64 KiB).
const FRAME_LIST_BUDGET: usize = 48 * 1024;

/// How long a reply may wait for room in the client's queue.
const REPLY_WAIT: Duration = Duration::from_secs(30);

/// How long what is left in the queue may take to go out once the session
/// ends.
const LAST_WRITES: Duration = Duration::from_secs(5);

/// Writes gathered into one system call.
const WRITE_BATCH: usize = 16 * 1024;

fn error_frame(code: ErrorCode, message: impl Into<String>) -> ChatReply {
    ChatReply::Error(ErrorReply::new(code, message))
}

fn encode(reply: &ChatReply) -> Option<Bytes> {
    match encode_frame(reply) {
        Ok(b) => Some(b.freeze()),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode a chat frame");
            None
        }
    }
}

struct Session {
    server: Arc<ChatServer>,
    peer: SocketAddr,
    out: Outbox,
    writer: Writer,
    state: State,
    /// The user's standing, once logged in: a lock, a deletion or a revoked
    /// right ends the session.
    standing: Option<watch::Receiver<Standing>>,
    /// The session as the user's sessions are counted, while logged in.
    /// Boxed: held, never read, by every logged-in session.
    lease: Option<Box<wharf_store::sessions::SessionLease>>,
}

/// The connection's sending side: what it is writing now, taken from the
/// queue, and whether the TLS layer may still hold some of it.
struct Writer {
    wr: WriteHalf<Stream>,
    /// The rest of a batch a write took only part of.
    pending: Option<Bytes>,
    unflushed: bool,
}

impl Writer {
    /// Whether there is writing to do.
    fn busy(&self, out: &Outbox) -> bool {
        self.pending.is_some() || self.unflushed || !out.is_empty()
    }

    /// Writes what is queued, a batch at a time, and flushes it; ready once
    /// all of it is out, or with `until_room` once the queue has room.
    /// Cancel safe: a batch partly written stays in `pending`, so a wait
    /// dropped for another wake loses nothing.
    fn poll_write_out(
        &mut self,
        cx: &mut Context<'_>,
        out: &Outbox,
        until_room: bool,
    ) -> Poll<io::Result<()>> {
        loop {
            if until_room && !out.is_full() {
                return Poll::Ready(Ok(()));
            }
            if self.pending.is_none() {
                self.pending = out.take(WRITE_BATCH);
            }
            let Some(data) = self.pending.as_mut() else {
                // Under TLS the records may wait in the TLS layer.
                if self.unflushed {
                    ready!(Pin::new(&mut self.wr).poll_flush(cx))?;
                    self.unflushed = false;
                }
                return Poll::Ready(Ok(()));
            };
            let n = ready!(Pin::new(&mut self.wr).poll_write(cx, data))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.unflushed = true;
            data.advance(n);
            if data.is_empty() {
                self.pending = None;
            }
        }
    }

    async fn write_out(&mut self, out: &Outbox) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_write_out(cx, out, false)).await
    }

    async fn write_until_room(&mut self, out: &Outbox) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_write_out(cx, out, true)).await
    }
}

enum State {
    /// Boxed: a logged-in session does not keep an opening's room.
    Opening(Box<Opening>),
    LoggedIn {
        user_id: i64,
        user: String,
        endpoint: EndpointId,
    },
    /// While a logged-in user's request runs, its state taken out.
    Serving,
}

enum Flow {
    Continue,
    Close,
}

/// What ended a session's wait, but frames to write and the hub dropping
/// it (the loop sees to those).
enum Woke {
    Shutdown,
    /// An administrator ended the user's right to be here.
    Ended(wharf_store::Error),
    /// A frame, the end of the stream, or nothing in time.
    Frame(Result<Option<Result<Frame<ChatRequest>, ProtoError>>, tokio::time::error::Elapsed>),
}

/// How a session's loop ended.
enum End {
    /// By itself: what is queued still goes out.
    Closed,
    /// The hub dropped it: a last notice, if the stream is between frames.
    Dropped,
    /// Writing failed: the connection is gone.
    Broken,
}

/// Sets the session up, then returns the future that serves it. Not an
/// `async fn`: the future holds only what the session needs from here on,
/// not its arguments as well (an `async fn` keeps both).
pub(super) fn run(
    server: Arc<ChatServer>,
    stream: Stream,
    peer: SocketAddr,
    shutdown: CancellationToken,
    gate: LoginGate,
) -> impl Future<Output = ()> + Send {
    let idle_timeout = server.config.limits.idle_timeout;
    let binding = stream.channel_binding();
    let (rd, wr) = tokio::io::split(stream);
    let out = Outbox::new(server.config.member_queue.max(1));
    // No read buffer to start: see below.
    let mut frames = FramedRead::with_capacity(rd, FrameCodec::<ChatRequest>::new().max_body(0), 0);
    let opening = Opening::new(
        Service::Chat,
        "wharf-chatd",
        server.config.max_login_attempts,
        server.config.limits.login_timeout,
    )
    .holding(gate)
    .bound_to(binding);
    let mut deadline = Instant::now() + opening.time_left();
    let mut s = Session {
        server,
        peer,
        out,
        writer: Writer {
            wr,
            pending: None,
            unflushed: false,
        },
        state: State::Opening(Box::new(opening)),
        standing: None,
        lease: None,
    };
    async move {
        let end = loop {
            if s.out.is_dropped() {
                break End::Dropped;
            }
            // An idle session keeps no read buffer: the next frame's first
            // bytes are read into a small one, which the codec then grows to
            // the frame's length (two reads, not one, for a frame after a
            // pause; 10,000 idle sessions keep 5 MiB less).
            if frames.read_buffer().is_empty() && frames.read_buffer().capacity() > 0 {
                *frames.read_buffer_mut() = BytesMut::new();
            }
            // A full queue is written out before another request is read
            // (the wait for one still runs out: a client that reads nothing
            // is not kept forever).
            let next = if s.out.is_full() {
                Either::Right(std::future::pending())
            } else {
                Either::Left(frames.next())
            };
            let writing = s.writer.busy(&s.out);
            // An idle session's task holds this wait and nothing more: what a
            // wake leads to runs boxed, allocated only while it runs.
            let woke = tokio::select! {
                biased;
                () = s.out.woken() => continue,
                _ = shutdown.cancelled() => Woke::Shutdown,
                why = standing::ended(&mut s.standing, Service::Chat, None) => Woke::Ended(why),
                frame = tokio::time::timeout_at(deadline, next) => Woke::Frame(frame),
                written = s.writer.write_out(&s.out), if writing => match written {
                    Ok(()) => continue,
                    Err(_) => break End::Broken,
                },
            };
            let got_frame = matches!(woke, Woke::Frame(Ok(Some(_))));
            if let Flow::Close = Box::pin(s.on_wake(woke, idle_timeout)).await {
                // A reply that gave up waiting for room because the hub
                // dropped the session ends it as dropped.
                break if s.out.is_dropped() {
                    End::Dropped
                } else {
                    End::Closed
                };
            }
            // The wait counts from the last frame received.
            if got_frame {
                deadline = Instant::now()
                    + match &s.state {
                        State::Opening(opening) => opening.time_left(),
                        _ => idle_timeout,
                    };
            }
        };
        s.out.close();
        Box::pin(s.finish(end)).await;
    }
}

impl Session {
    /// Leaves the hub, then writes what is left: the queue when the session
    /// ended by itself, a last notice when the hub dropped it.
    async fn finish(mut self, end: End) {
        if let State::LoggedIn { endpoint, .. } = self.state {
            let change = match end {
                End::Dropped => PresenceChange::Dropped,
                End::Closed | End::Broken => PresenceChange::Left,
            };
            self.server.hub.unregister(endpoint, change);
        }
        let wr = &mut self.writer;
        match end {
            End::Closed => {
                let _ = tokio::time::timeout(LAST_WRITES, wr.write_out(&self.out)).await;
            }
            // Mid-frame, the stream cannot take a notice any more.
            End::Dropped if wr.pending.is_none() => notify_dropped(&mut wr.wr).await,
            End::Dropped | End::Broken => {}
        }
        if !matches!(end, End::Broken) {
            let _ = tokio::time::timeout(Duration::from_secs(1), wr.wr.shutdown()).await;
        }
        tracing::debug!(peer = %self.peer, dropped = matches!(end, End::Dropped), "chat connection closed");
    }

    async fn on_wake(&mut self, woke: Woke, idle_timeout: Duration) -> Flow {
        let frame = match woke {
            Woke::Shutdown => {
                self.server.hub.close();
                self.queue(&error_frame(
                    ErrorCode::ShuttingDown,
                    "the server is shutting down; reconnect in a moment",
                ))
                .await;
                return Flow::Close;
            }
            Woke::Ended(why) => {
                tracing::info!(peer = %self.peer, reason = %why, "session ended by an administrator");
                self.queue(&error_frame(why.code(), why.client_message()))
                    .await;
                return Flow::Close;
            }
            Woke::Frame(frame) => frame,
        };
        match frame {
            Err(_) => {
                let refusal = match &self.state {
                    State::Opening(opening) => opening.timed_out(),
                    _ => Refusal::closing(
                        ErrorCode::Timeout,
                        format!(
                            "nothing received for {}; closing the connection (clients send ping to stay connected)",
                            humantime::format_duration(idle_timeout)
                        ),
                    ),
                };
                self.queue(&ChatReply::Error(refusal.reply())).await;
                Flow::Close
            }
            Ok(None) => Flow::Close,
            Ok(Some(Err(e))) => {
                self.queue(&error_frame(e.code(), e.to_string())).await;
                Flow::Close
            }
            Ok(Some(Ok(Frame::Rejected(e)))) => {
                self.queue(&error_frame(e.code(), e.to_string())).await;
                Flow::Continue
            }
            Ok(Some(Ok(Frame::Body { .. }))) => Flow::Close, // max_body(0): never happens
            Ok(Some(Ok(Frame::Header { msg, .. }))) => self.on_request(msg).await,
        }
    }

    /// Queues a reply. Once the queue is full (the client reads slowly),
    /// writes until there is room before going on, but not forever, and
    /// not once the hub dropped the session.
    async fn queue(&mut self, reply: &ChatReply) -> bool {
        let Some(frame) = encode(reply) else {
            return false;
        };
        self.out.push(Arc::new(frame));
        if !self.out.is_full() {
            return true;
        }
        let (writer, out) = (&mut self.writer, &self.out);
        let room = async {
            loop {
                tokio::select! {
                    written = writer.write_until_room(out) => return written.is_ok(),
                    () = out.woken() => {
                        if out.is_dropped() {
                            return false;
                        }
                    }
                }
            }
        };
        matches!(tokio::time::timeout(REPLY_WAIT, room).await, Ok(true))
    }

    async fn on_request(&mut self, msg: ChatRequest) -> Flow {
        if let ChatRequest::Quit = msg {
            self.queue(&ChatReply::Bye).await;
            return Flow::Close;
        }
        let reply = match &mut self.state {
            State::Opening(opening) => {
                let step = opening
                    .step(msg.into_opening(), &self.server.auth, self.peer.ip())
                    .await;
                match step {
                    Step::Hello(hello) => Ok(ChatReply::Hello(hello)),
                    Step::Refuse(refusal) => Err(refusal),
                    Step::LoggedIn(entered) => Ok(self.enter(*entered).await),
                }
            }
            State::LoggedIn { .. } => {
                let State::LoggedIn {
                    user_id,
                    user,
                    endpoint,
                } = std::mem::replace(&mut self.state, State::Serving)
                else {
                    return Flow::Continue;
                };
                let reply = self.dispatch(user_id, &user, endpoint, msg).await;
                self.state = State::LoggedIn {
                    user_id,
                    user,
                    endpoint,
                };
                match reply {
                    Some(reply) => reply,
                    None => return Flow::Continue,
                }
            }
            State::Serving => return Flow::Continue,
        };
        let (reply, close) = match reply {
            Ok(reply) => (reply, false),
            Err(refusal) => (ChatReply::Error(refusal.reply()), refusal.close),
        };
        if !self.queue(&reply).await || close {
            return Flow::Close;
        }
        Flow::Continue
    }

    /// The user is in: a place in the hub, reachable from every replica,
    /// and `login_ok`.
    async fn enter(&mut self, entered: Entered) -> ChatReply {
        let Entered {
            user,
            lease,
            standing,
        } = entered;
        self.lease = Some(Box::new(lease));
        let endpoint = self.server.hub.register(
            user.id,
            &user.name,
            self.peer.ip(),
            Sink::Tcp(self.out.clone()),
        );
        // Reachable from every replica before the client hears it is in.
        self.server.hub.settle().await;
        tracing::info!(peer = %self.peer, user = %user.name, "logged in");
        self.standing = Some(standing);
        self.state = State::LoggedIn {
            user_id: user.id,
            user: user.name.clone(),
            endpoint,
        };
        ChatReply::LoginOk(login_ok(&user))
    }

    /// One request of a logged-in user; `None` when it queued its own
    /// frames.
    async fn dispatch(
        &mut self,
        user_id: i64,
        user: &str,
        endpoint: EndpointId,
        msg: ChatRequest,
    ) -> Option<Result<ChatReply, Refusal>> {
        let hub = &self.server.hub;
        Some(match msg {
            ChatRequest::Join { room } => hub.join(endpoint, &room).await,
            ChatRequest::Leave { room } => hub.leave(endpoint, &room),
            ChatRequest::Say { room, text } => hub.say(endpoint, &room, &text).await,
            ChatRequest::Dm { to, text } => hub.dm(endpoint, &to, &text).await,
            ChatRequest::Who { room } => hub.who(&room, FRAME_LIST_BUDGET).await,
            ChatRequest::Rooms => hub.rooms(FRAME_LIST_BUDGET).await,
            ChatRequest::History { room, limit } => {
                let messages = match hub.history(&room, limit, u32::MAX).await {
                    Ok(m) => m,
                    Err(e) => return Some(Err(e)),
                };
                let count = u32::try_from(messages.len()).unwrap_or(u32::MAX);
                self.queue(&ChatReply::History { room, count }).await;
                for m in messages {
                    if !self.queue(&ChatReply::Message(m)).await {
                        break;
                    }
                }
                return None;
            }
            ChatRequest::UdpSession => {
                let granted = udp::grant(
                    &self.server,
                    user_id,
                    user,
                    self.peer.ip(),
                    self.standing.clone(),
                )
                .map(ChatReply::UdpSession);
                hub.settle().await;
                granted
            }
            ChatRequest::Ping => Ok(ChatReply::Pong),
            ChatRequest::Passwd(change) => self
                .server
                .auth
                .change_password(
                    user,
                    &change.old,
                    &change.new,
                    Service::Chat,
                    self.peer.ip(),
                )
                .await
                .map(|()| ChatReply::PasswdOk)
                .map_err(|e| Refusal::new(e.code(), e.client_message())),
            ChatRequest::Hello(_) | ChatRequest::Login(_) => Err(Refusal::already_logged_in()),
            ChatRequest::Quit => Ok(ChatReply::Bye),
            ChatRequest::Answer { .. } => Err(Refusal::new(
                ErrorCode::BadRequest,
                "answer goes in a datagram, to a challenge",
            )),
        })
    }
}

/// Tells a client the hub dropped why, if it can within a second.
async fn notify_dropped(wr: &mut WriteHalf<Stream>) {
    let notice = error_frame(
        ErrorCode::SlowConsumer,
        "you were disconnected: messages arrived faster than you read them; reconnect and use history to catch up",
    );
    if let Some(frame) = encode(&notice) {
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            wr.write_all(&frame).await?;
            wr.flush().await
        })
        .await;
    }
}
