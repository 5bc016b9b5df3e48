//! One TCP connection: a reader (this task) and a writer task fed by a
//! bounded queue of encoded frames. Replies and room events share the queue,
//! so they reach the client in order; the hub drops a session whose queue
//! is full.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::outbox::{Inbox, Outbox, outbox};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::io::WriteHalf;
use tokio::sync::watch;
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
use super::udp;

/// Bytes of names a `who` or `rooms` answer may carry (headers are at most
/// 64 KiB).
const FRAME_LIST_BUDGET: usize = 48 * 1024;

/// How long a reply may wait for room in the client's queue.
const REPLY_WAIT: Duration = Duration::from_secs(30);

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
    tx: Outbox,
    kill: CancellationToken,
    state: State,
    /// The user's standing, once logged in: a lock, a deletion or a revoked
    /// right ends the session.
    standing: Option<watch::Receiver<Standing>>,
    /// The session as the user's sessions are counted, while logged in.
    /// Boxed: held, never read, by every logged-in session.
    lease: Option<Box<wharf_store::sessions::SessionLease>>,
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

/// What ended an idle session's wait (but the hub dropping it: its queue
/// was full).
enum Woke {
    Shutdown,
    /// An administrator ended the user's right to be here.
    Ended(wharf_store::Error),
    /// A frame, the end of the stream, or nothing within the given time.
    Frame(Result<Option<Result<Frame<ChatRequest>, ProtoError>>, Duration>),
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
    let (tx, rx) = outbox(server.config.member_queue.max(1));
    let kill = CancellationToken::new();
    let writer = tokio::spawn(write_forever(wr, rx, kill.clone()));
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
    let mut s = Session {
        server,
        peer,
        tx,
        kill,
        state: State::Opening(Box::new(opening)),
        standing: None,
        lease: None,
    };
    async move {
        let mut dropped = false;
        loop {
            // An idle session keeps no read buffer: the next frame's first
            // bytes are read into a small one, which the codec then grows to
            // the frame's length (two reads, not one, for a frame after a
            // pause; 10,000 idle sessions keep 5 MiB less).
            if frames.read_buffer().is_empty() && frames.read_buffer().capacity() > 0 {
                *frames.read_buffer_mut() = BytesMut::new();
            }
            let wait = match &s.state {
                State::Opening(opening) => opening.time_left(),
                _ => idle_timeout,
            };
            // An idle session's task holds this wait and nothing more: what a
            // wake leads to runs boxed, allocated only while it runs.
            let woke = tokio::select! {
                biased;
                _ = s.kill.cancelled() => None,
                _ = shutdown.cancelled() => Some(Woke::Shutdown),
                why = standing::ended(&mut s.standing, Service::Chat, None) => Some(Woke::Ended(why)),
                frame = tokio::time::timeout(wait, frames.next()) => Some(Woke::Frame(frame.map_err(|_| wait))),
            };
            let Some(woke) = woke else {
                dropped = true;
                break;
            };
            if let Flow::Close = Box::pin(s.on_wake(woke)).await {
                break;
            }
        }
        if let State::LoggedIn { endpoint, .. } = s.state {
            let change = if dropped {
                PresenceChange::Dropped
            } else {
                PresenceChange::Left
            };
            s.server.hub.unregister(endpoint, change);
        }
        // The writer ends once the queue is empty and every sender is gone.
        drop(s.tx);
        let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
        tracing::debug!(peer = %s.peer, dropped, "chat connection closed");
    }
}

impl Session {
    async fn on_wake(&mut self, woke: Woke) -> Flow {
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
            Err(wait) => {
                let refusal = match &self.state {
                    State::Opening(opening) => opening.timed_out(),
                    _ => Refusal::closing(
                        ErrorCode::Timeout,
                        format!(
                            "nothing received for {}; closing the connection (clients send ping to stay connected)",
                            humantime::format_duration(wait)
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

    /// Queues a reply; waits for room (the client is reading slowly), but
    /// not forever.
    async fn queue(&mut self, reply: &ChatReply) -> bool {
        let Some(frame) = encode(reply) else {
            return false;
        };
        tokio::select! {
            _ = self.kill.cancelled() => false,
            r = tokio::time::timeout(REPLY_WAIT, self.tx.send(Arc::new(frame))) => matches!(r, Ok(Ok(()))),
        }
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
            Sink::Tcp {
                tx: self.tx.clone(),
                kill: self.kill.clone(),
            },
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

/// Writes queued frames, several per system call when they pile up. When
/// the hub pulls `kill` (the client reads too slowly), a last notice is
/// tried and the connection closes. While it waits, the task holds the
/// wait alone: writing runs boxed.
async fn write_forever(mut wr: WriteHalf<Stream>, rx: Inbox, kill: CancellationToken) {
    loop {
        let first = tokio::select! {
            biased;
            _ = kill.cancelled() => {
                Box::pin(notify_dropped(&mut wr)).await;
                break;
            }
            frame = rx.recv() => match frame {
                Some(f) => f,
                None => break,
            },
        };
        if !Box::pin(write_some(&mut wr, first, &rx, &kill)).await {
            break;
        }
    }
    let _ = Box::pin(tokio::time::timeout(Duration::from_secs(1), wr.shutdown())).await;
}

/// Writes `first` and the frames queued behind it, up to [`WRITE_BATCH`]
/// bytes; false when the connection is to close.
async fn write_some(
    wr: &mut WriteHalf<Stream>,
    first: super::outbox::Frame,
    rx: &Inbox,
    kill: &CancellationToken,
) -> bool {
    // Several queued frames go in one write, gathered in a buffer made
    // for them and freed after: a session keeps nothing between bursts.
    let data = if rx.is_empty() {
        Bytes::clone(&first)
    } else {
        let mut frames = vec![first];
        let mut len = frames[0].len();
        while len < WRITE_BATCH {
            match rx.try_recv() {
                Some(f) => {
                    len += f.len();
                    frames.push(f);
                }
                None => break,
            }
        }
        let mut batch = BytesMut::with_capacity(len);
        for f in frames {
            batch.extend_from_slice(&f);
        }
        batch.freeze()
    };
    tokio::select! {
        // Mid-frame: the stream cannot take a notice any more; just close.
        _ = kill.cancelled() => false,
        // Under TLS the record may wait in the TLS layer: flush it out.
        r = async { wr.write_all(&data).await?; wr.flush().await } => r.is_ok(),
    }
}

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
