//! One connection: hello, login, then commands one at a time.
//!
//! While a command runs, one loop moves everything: the client's frames
//! (standard input, signals, pings), the command's output (what waits in a
//! pipe goes out as one `stdout` or `stderr` frame), the time limit, the
//! output cap and the server's shutdown. The command's input is written by
//! a task of its own, so a command that writes without reading can never
//! block the loop.

mod command;
mod home;
mod out;
mod request;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::StreamExt;
use tokio::io::AsyncRead;
use tokio::io::AsyncWrite;
use tokio::io::AsyncWriteExt;
use tokio::io::ReadHalf;
use tokio::sync::watch;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use wharf_core::Service;
use wharf_core::tls::Stream;
use wharf_proto::exec::{ExecReply, ExecRequest, MAX_STDIN_CHUNK};
use wharf_proto::{ErrorCode, Frame, FrameCodec};
use wharf_server::Refusal;
use wharf_server::listener::LoginGate;
use wharf_server::opening::Entered;
use wharf_server::opening::Opening;
use wharf_server::opening::Step;
use wharf_server::opening::login_ok;
use wharf_store::User;
use wharf_store::standing;
use wharf_store::standing::Standing;

use self::out::Out;
use self::request::Run;
use super::ExecServer;

/// Standard-input chunks queued for the command.
const STDIN_QUEUE: usize = 4;

/// How long the final frame of a session may take to write.
const LAST_WORDS: Duration = Duration::from_secs(5);

/// A session's connection: a network stream of the exec listener, or the
/// in-memory end another door (SSH) speaks the exec protocol over.
pub(crate) trait Conn: AsyncRead + AsyncWrite + Send + Sync + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Sync + Unpin> Conn for T {}

/// A session's connection, boxed: one session type for every door.
pub(crate) type BoxConn = Box<dyn Conn>;

type Frames = FramedRead<ReadHalf<BoxConn>, FrameCodec<ExecRequest>>;

enum State {
    Opening(Opening),
    LoggedIn(Box<User>),
}

enum Flow {
    Continue,
    Close,
}

/// What a body that follows a header is for.
enum BodyTo {
    /// The running command's input.
    Stdin,
    /// Nothing: skip it.
    Discard,
}

struct Session {
    server: Arc<ExecServer>,
    peer: SocketAddr,
    out: Out,
    shutdown: CancellationToken,
    state: State,
    /// The user's standing, once logged in: a lock, a deletion or a revoked
    /// right ends the session, and the command running.
    standing: Option<watch::Receiver<Standing>>,
    /// The session as the user's sessions are counted, while logged in.
    lease: Option<wharf_store::sessions::SessionLease>,
    /// The home as stored, and as prepared for commands: prepared once per
    /// session, again only if an administrator moves it.
    home: Option<(PathBuf, PathBuf)>,
}

pub(super) async fn run(
    server: Arc<ExecServer>,
    stream: Stream,
    peer: SocketAddr,
    shutdown: CancellationToken,
    gate: LoginGate,
) {
    let binding = stream.channel_binding();
    let opening = Opening::new(
        Service::Exec,
        "wharf-execd",
        server.config.max_login_attempts,
        server.config.limits.login_timeout,
    )
    .holding(gate)
    .bound_to(binding);
    let conn = Box::new(stream);
    serve(server, conn, peer, shutdown, State::Opening(opening), None).await;
}

/// A session whose user logged in through another door (SSH): no opening,
/// commands at once; `standing` ends it as it ends that door's session.
pub(super) async fn run_logged_in(
    server: Arc<ExecServer>,
    conn: BoxConn,
    peer: SocketAddr,
    shutdown: CancellationToken,
    user: User,
    standing: watch::Receiver<Standing>,
) {
    let state = State::LoggedIn(Box::new(user));
    serve(server, conn, peer, shutdown, state, Some(standing)).await;
}

async fn serve(
    server: Arc<ExecServer>,
    conn: BoxConn,
    peer: SocketAddr,
    shutdown: CancellationToken,
    state: State,
    standing: Option<watch::Receiver<Standing>>,
) {
    let limits = server.config.limits.clone();
    let (rd, wr) = tokio::io::split(conn);
    let mut frames = FramedRead::with_capacity(
        rd,
        FrameCodec::<ExecRequest>::new().max_body(MAX_STDIN_CHUNK),
        4096,
    );
    let mut s = Session {
        server,
        peer,
        out: Out {
            wr,
            codec: FrameCodec::new(),
            head: BytesMut::new(),
            broken: false,
        },
        shutdown,
        state,
        standing,
        lease: None,
        home: None,
    };
    loop {
        let wait = match &s.state {
            State::Opening(opening) => opening.time_left(),
            State::LoggedIn(_) => limits.idle_timeout,
        };
        let frame = tokio::select! {
            biased;
            _ = s.shutdown.cancelled() => {
                s.out.last_refusal(Refusal::closing(
                    ErrorCode::ShuttingDown,
                    "the server is shutting down; reconnect in a moment",
                ))
                .await;
                break;
            }
            why = standing::ended(&mut s.standing, Service::Exec, None) => {
                tracing::info!(peer = %s.peer, reason = %why, "session ended by an administrator");
                s.out.last_refusal(Refusal::closing(why.code(), why.client_message())).await;
                break;
            }
            frame = tokio::time::timeout(wait, frames.next()) => frame,
        };
        let flow = match frame {
            Err(_) => {
                let refusal = match &s.state {
                    State::Opening(opening) => opening.timed_out(),
                    State::LoggedIn(_) => Refusal::closing(
                        ErrorCode::Timeout,
                        format!(
                            "nothing received for {}; closing the connection",
                            humantime::format_duration(wait)
                        ),
                    ),
                };
                s.out.last_refusal(refusal).await;
                Flow::Close
            }
            Ok(None) => Flow::Close,
            Ok(Some(Err(e))) => {
                s.out
                    .last_refusal(Refusal::closing(e.code(), e.to_string()))
                    .await;
                Flow::Close
            }
            Ok(Some(Ok(Frame::Rejected(e)))) => {
                s.refuse(Refusal::new(e.code(), e.to_string())).await
            }
            // The body of standard input that came after its command ended.
            Ok(Some(Ok(Frame::Body { .. }))) => Flow::Continue,
            Ok(Some(Ok(Frame::Header { msg, body_len }))) => {
                Box::pin(s.on_request(&mut frames, msg, body_len)).await
            }
        };
        if let Flow::Close = flow {
            break;
        }
    }
    // Under TLS, say close_notify: the client sees a clean end.
    if !s.out.broken {
        let _ = tokio::time::timeout(Duration::from_secs(1), s.out.wr.shutdown()).await;
    }
    tracing::debug!(peer = %s.peer, "exec connection closed");
}
impl Session {
    async fn reply(&mut self, reply: ExecReply) -> Flow {
        match self.out.send(reply).await {
            Ok(()) => Flow::Continue,
            Err(_) => Flow::Close,
        }
    }

    /// Sends a refusal in the wire's words, the one place exec does; the
    /// session ends after it when the refusal says so.
    async fn refuse(&mut self, refusal: Refusal) -> Flow {
        if refusal.close {
            self.out.last_refusal(refusal).await;
            return Flow::Close;
        }
        self.reply(ExecReply::Error(refusal.reply())).await
    }

    async fn on_request(&mut self, frames: &mut Frames, msg: ExecRequest, body_len: u64) -> Flow {
        if body_len > 0 && !matches!(msg, ExecRequest::Stdin) {
            return self
                .refuse(Refusal::new(
                    ErrorCode::BadRequest,
                    "this request takes no body; only stdin does",
                ))
                .await;
        }
        match msg {
            ExecRequest::Quit => {
                self.out.last(ExecReply::Bye).await;
                Flow::Close
            }
            ExecRequest::Ping => self.reply(ExecReply::Pong).await,
            msg if matches!(self.state, State::Opening(_)) => self.open(msg).await,
            // Input or a signal for a command that has just ended: too late,
            // and not an error (the client could not know).
            ExecRequest::Stdin
            | ExecRequest::StdinEnd
            | ExecRequest::Signal { .. }
            | ExecRequest::Resize(_) => Flow::Continue,
            ExecRequest::Hello(_) | ExecRequest::Login(_) => {
                self.refuse(Refusal::already_logged_in()).await
            }
            ExecRequest::Passwd(change) => {
                let State::LoggedIn(user) = &self.state else {
                    return Flow::Continue;
                };
                let changed = self
                    .server
                    .auth
                    .change_password(
                        &user.name,
                        &change.old,
                        &change.new,
                        Service::Exec,
                        self.peer.ip(),
                    )
                    .await;
                match changed {
                    Ok(()) => self.reply(ExecReply::PasswdOk).await,
                    Err(e) => {
                        self.refuse(Refusal::new(e.code(), e.client_message()))
                            .await
                    }
                }
            }
            ExecRequest::Run {
                command,
                stdin,
                cwd,
                tty,
                report_cwd,
            } => {
                let State::LoggedIn(user) = &self.state else {
                    return Flow::Continue;
                };
                let user = user.clone();
                let run = Run {
                    command,
                    stdin,
                    cwd,
                    tty,
                    report_cwd,
                };
                self.execute(frames, &user, run).await
            }
        }
    }

    /// A request before the login, through the opening every service
    /// shares.
    async fn open(&mut self, msg: ExecRequest) -> Flow {
        let State::Opening(opening) = &mut self.state else {
            return Flow::Continue;
        };
        let step = opening
            .step(msg.into_opening(), &self.server.auth, self.peer.ip())
            .await;
        match step {
            Step::Hello(hello) => self.reply(ExecReply::Hello(hello)).await,
            Step::Refuse(refusal) => self.refuse(refusal).await,
            Step::LoggedIn(entered) => {
                let Entered {
                    user,
                    lease,
                    standing,
                } = *entered;
                self.lease = Some(lease);
                tracing::info!(peer = %self.peer, user = %user.name, "logged in");
                let reply = ExecReply::LoginOk(login_ok(&user));
                self.standing = Some(standing);
                self.state = State::LoggedIn(Box::new(user));
                self.reply(reply).await
            }
        }
    }

    /// The user as the database has them now: a lock or a revoked right
    /// takes effect at the next command, not only at the next login.
    async fn current_user(&self, logged_in: &User) -> Result<User, Refusal> {
        let store = self.server.auth.store();
        match store.user(&logged_in.name).await {
            Ok(Some(user)) if user.id == logged_in.id => {
                if user.locked {
                    Err(Refusal::new(
                        ErrorCode::AccountLocked,
                        format!("the account {} is locked; ask an administrator", user.name),
                    ))
                } else if !user.services.contains(Service::Exec) {
                    Err(Refusal::new(
                        ErrorCode::NotPermitted,
                        format!(
                            "{} may no longer run commands; ask an administrator for the exec right",
                            user.name
                        ),
                    ))
                } else {
                    Ok(user)
                }
            }
            Ok(_) => Err(Refusal::new(
                ErrorCode::AuthFailed,
                "this account no longer exists; log in again",
            )),
            Err(e) => {
                tracing::error!(error = %e, "cannot read the user before a command");
                Err(Refusal::new(e.code(), e.client_message()))
            }
        }
    }
}
