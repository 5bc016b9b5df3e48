//! One connection: read a frame, pass the auth gate, dispatch, reply.
//! Only this loop decides when a connection ends.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use wharf_core::Service;
use wharf_core::tls::Stream;
use wharf_proto::ftp::{FtpReply, FtpRequest};
use wharf_proto::message::ErrorReply;
use wharf_proto::{ErrorCode, Frame, Outbound};
use wharf_server::Refusal;
use wharf_server::listener::LoginGate;
use wharf_server::opening::Entered;
use wharf_server::opening::Opening;
use wharf_server::opening::Step;
use wharf_server::opening::login_ok;
use wharf_store::User;
use wharf_store::owner::Owner;
use wharf_store::standing;

use super::conn::{LoggedIn, Watch, Wire};
use super::{FtpServer, batch, commands, download, partials, upload};
use crate::error::FtpError;
use crate::paths::{Jail, VPath};

/// A committed batch's answers, as its task ended.
type Answers = Result<Vec<Result<FtpReply, FtpError>>, tokio::task::JoinError>;

enum State {
    Opening(Opening),
    LoggedIn(Box<LoggedIn>),
    /// While a logged-in user's request runs, its state taken out.
    Serving,
}

pub(super) struct Session {
    server: Arc<FtpServer>,
    wire: Wire,
    peer: SocketAddr,
    state: State,
    /// A lock, a deletion, a revoked right or a moved home ends the
    /// session, and a transfer in flight (its partial stays).
    watch: Watch,
    /// A `put` was refused before `put_ready`: a client that sent its data
    /// without waiting (a small file) has its `put_data`, body and
    /// `put_end` on the way, to be dropped.
    refused_put: bool,
    /// Uploads sent at once, received and verified, waiting to be made
    /// durable together (see `batch`).
    batch: Vec<batch::Received>,
    /// The batch being committed meanwhile, whose answers come before any
    /// other.
    committing: Option<tokio::task::JoinHandle<Vec<Result<FtpReply, FtpError>>>>,
}

enum Flow {
    Continue,
    Close,
}

pub(super) async fn run(
    server: Arc<FtpServer>,
    stream: Stream,
    peer: SocketAddr,
    shutdown: CancellationToken,
    gate: LoginGate,
) {
    let limits = server.config.limits.clone();
    let opening = Opening::new(
        Service::Ftp,
        "wharf-ftpd",
        server.config.max_login_attempts,
        limits.login_timeout,
    )
    .holding(gate)
    .bound_to(stream.channel_binding());
    let mut s = Session {
        wire: Wire::new(stream, limits.idle_timeout),
        server,
        peer,
        state: State::Opening(opening),
        watch: Watch::default(),
        refused_put: false,
        batch: Vec::new(),
        committing: None,
    };
    tracing::debug!(%peer, "connected");
    // Set when the session ends on an error the client may still be
    // sending data past (an upload stopped mid-way).
    let mut linger = false;
    loop {
        let wait = match &s.state {
            State::Opening(opening) => opening.time_left(),
            _ => limits.idle_timeout,
        };
        let mut watch = s.watch.standing.take();
        let home = s.watch.home.clone();
        let mut committing = s.committing.take();
        let frame = tokio::select! {
            _ = shutdown.cancelled() => None,
            why = standing::ended(&mut watch, Service::Ftp, home.as_deref()) => Some(Err(FtpError::Ended(why))),
            // A batch committed meanwhile: its answers go out at once (the
            // client may be waiting for them to send more).
            answers = async {
                match committing.as_mut() {
                    Some(task) => task.await,
                    None => std::future::pending().await,
                }
            } => {
                committing = None;
                let sent = s.send_answers(answers).await;
                s.watch.standing = watch;
                if sent.is_err() {
                    break;
                }
                continue;
            }
            frame = s.wire.next_frame(wait) => Some(frame),
        };
        s.watch.standing = watch;
        s.committing = committing;
        let Some(frame) = frame else {
            let _ = s.commit_batch().await;
            let bye = error_frame(
                ErrorCode::ShuttingDown,
                "the server is shutting down; reconnect later (interrupted uploads resume)",
            );
            let _ = s.send(bye).await;
            break;
        };
        let result = match frame {
            // Boxed: a request's work lives on the heap while it runs,
            // not in every idle session's task.
            Ok(frame) => Box::pin(s.on_frame(frame)).await,
            // Silent until the login deadline: the opening says so.
            Err(e)
                if e.is(ErrorCode::Timeout)
                    && let State::Opening(opening) = &s.state =>
            {
                Err(FtpError::Refused(opening.timed_out()))
            }
            Err(e) => Err(e),
        };
        // A batch of uploads is committed when the client pauses, when it
        // is full, or before any other answer.
        let result = match result {
            Ok(Flow::Continue)
                if !s.batch.is_empty() && (s.batch_full() || !s.wire.frame_waiting()) =>
            {
                s.start_commit().await.map(|()| Flow::Continue)
            }
            Err(e) => {
                let committed = s.commit_batch().await;
                committed.and(Err(e))
            }
            other => other,
        };
        match result {
            Ok(Flow::Continue) => {}
            Ok(Flow::Close) => break,
            Err(e) => {
                let fatal = e.is_fatal();
                if !matches!(e, FtpError::Closed) {
                    let _ = s.send(FtpReply::Error(e.reply())).await;
                }
                if fatal {
                    linger = !matches!(e, FtpError::Closed);
                    break;
                }
            }
        }
    }
    // Uploads received whole are kept even when the client is gone.
    let _ = s.commit_batch().await;
    // Under TLS, say close_notify: the client sees a clean end.
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        futures_util::SinkExt::<Outbound<FtpReply>>::close(&mut s.wire.conn),
    )
    .await;
    if linger {
        drain(s.wire.conn.get_mut()).await;
    }
    tracing::debug!(peer = %s.peer, "disconnected");
}

/// Reads and drops what the client still sends, for at most [`LINGER`]:
/// closing with unread data would reset the connection, and the client
/// could lose the error frame that tells it why.
async fn drain(stream: &mut Stream) {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 64 * 1024];
    let _ = tokio::time::timeout(LINGER, async {
        while let Ok(1..) = stream.read(&mut buf).await {}
    })
    .await;
}

/// How long a closing session reads on for the client to hear its error.
const LINGER: Duration = Duration::from_secs(1);

fn error_frame(code: ErrorCode, message: &str) -> FtpReply {
    FtpReply::Error(ErrorReply::new(code, message))
}

impl Session {
    /// Whether the batch holds as much as it may.
    fn batch_full(&self) -> bool {
        self.batch.len() >= batch::MAX_BATCH
            || self.batch.iter().map(batch::Received::len).sum::<usize>() >= batch::MAX_BATCH_BYTES
    }

    /// Commits the batch while the session reads on; the batch being
    /// committed before it is finished and answered first.
    async fn start_commit(&mut self) -> Result<(), FtpError> {
        self.finish_commit().await?;
        let uploads = std::mem::take(&mut self.batch);
        let store = self.server.store().clone();
        self.committing = Some(tokio::spawn(
            async move { batch::commit(&store, uploads).await },
        ));
        Ok(())
    }

    /// Waits for the batch being committed, if any, and sends its answers.
    async fn finish_commit(&mut self) -> Result<(), FtpError> {
        match self.committing.take() {
            Some(task) => {
                let answers = task.await;
                self.send_answers(answers).await
            }
            None => Ok(()),
        }
    }

    /// Makes every upload received durable and answers each, in order.
    async fn commit_batch(&mut self) -> Result<(), FtpError> {
        self.finish_commit().await?;
        if self.batch.is_empty() {
            return Ok(());
        }
        let uploads = std::mem::take(&mut self.batch);
        let answers = batch::commit(self.server.store(), uploads).await;
        self.send_answers(Ok(answers)).await
    }

    /// Sends a batch's answers.
    async fn send_answers(&mut self, answers: Answers) -> Result<(), FtpError> {
        let answers = answers.map_err(|e| {
            FtpError::closing(
                ErrorCode::BadRequest,
                format!("internal error committing uploads: {e}"),
            )
        })?;
        let replies = answers
            .into_iter()
            .map(|answer| answer.unwrap_or_else(|e| FtpReply::Error(e.reply())));
        self.wire.send_all(replies).await
    }

    async fn send(&mut self, reply: FtpReply) -> Result<(), FtpError> {
        self.wire.send(reply).await
    }

    async fn on_frame(&mut self, frame: Frame<FtpRequest>) -> Result<Flow, FtpError> {
        if std::mem::take(&mut self.refused_put)
            && let Frame::Header {
                msg: FtpRequest::PutData { .. },
                body_len,
            } = frame
        {
            self.drop_upload(body_len).await?;
            return Ok(Flow::Continue);
        }
        let (msg, body_len) = match frame {
            Frame::Header { msg, body_len } => (msg, body_len),
            Frame::Rejected(e) => return Err(FtpError::Frame(e)),
            Frame::Body { .. } => {
                return Err(FtpError::closing(
                    ErrorCode::BadRequest,
                    "body data without a request",
                ));
            }
        };
        if body_len > 0 {
            return Err(FtpError::closing(
                ErrorCode::BadRequest,
                "only put_data carries a body, after put_ready",
            ));
        }
        if !matches!(msg, FtpRequest::Put { at_once: true, .. }) {
            // Answers go in request order, and what follows sees the files.
            self.commit_batch().await?;
        }
        if let FtpRequest::Quit = msg {
            self.send(FtpReply::Bye).await?;
            return Ok(Flow::Close);
        }
        match &mut self.state {
            State::Opening(opening) => {
                let step = opening
                    .step(msg.into_opening(), &self.server.auth, self.peer.ip())
                    .await;
                match step {
                    Step::Hello(hello) => self.send(FtpReply::Hello(hello)).await?,
                    Step::Refuse(refusal) => {
                        self.send(FtpReply::Error(refusal.reply())).await?;
                        if refusal.close {
                            return Err(FtpError::Closed);
                        }
                    }
                    Step::LoggedIn(entered) => {
                        let Entered {
                            user,
                            lease,
                            standing,
                        } = *entered;
                        let li = self.enter(user, lease).await?;
                        self.watch.standing = Some(standing);
                        self.watch.home = Some(li.user.home.clone());
                        self.state = State::LoggedIn(Box::new(li));
                    }
                }
            }
            State::LoggedIn(_) => {
                let State::LoggedIn(mut li) = std::mem::replace(&mut self.state, State::Serving)
                else {
                    return Ok(Flow::Continue);
                };
                let result = self.dispatch(&mut li, msg).await;
                self.state = State::LoggedIn(li);
                let reply = result?;
                if let Some(reply) = reply {
                    self.send(reply).await?;
                }
            }
            State::Serving => {}
        }
        Ok(Flow::Continue)
    }

    /// The user is in: the jail of their home, and `login_ok`.
    async fn enter(
        &mut self,
        user: User,
        lease: wharf_store::sessions::SessionLease,
    ) -> Result<LoggedIn, FtpError> {
        let home = user.home.clone();
        let owner = Owner::for_files(user.id);
        let jail = tokio::task::spawn_blocking(move || Jail::for_user(&home, owner))
            .await
            .map_err(|e| FtpError::closing(ErrorCode::BadRequest, format!("internal error: {e}")))?
            .map_err(|e| {
                FtpError::io(
                    format!("home directory of {} ({})", user.name, user.home.display()),
                    e,
                )
            })?;
        tracing::info!(peer = %self.peer, user = %user.name, "logged in");
        self.send(FtpReply::LoginOk(login_ok(&user))).await?;
        Ok(LoggedIn {
            user,
            lease,
            jail,
            cwd: VPath::root(),
        })
    }

    /// One request of a logged-in user. Transfers and listings write their
    /// own frames and return `None`.
    async fn dispatch(
        &mut self,
        li: &mut LoggedIn,
        msg: FtpRequest,
    ) -> Result<Option<FtpReply>, FtpError> {
        let store = self.server.store().clone();
        Ok(Some(match msg {
            FtpRequest::Pwd => FtpReply::Cwd {
                path: li.cwd.to_string(),
            },
            FtpRequest::Cd { path } => commands::cd(li, &path).await?,
            FtpRequest::Ls { path } => {
                let (reply, body) =
                    commands::ls(li, path.as_deref(), self.server.config.max_listing).await?;
                self.wire.send_header(reply, body.len() as u64).await?;
                self.wire.write_body(&body).await?;
                return Ok(None);
            }
            FtpRequest::Partials => {
                let (reply, body) = partials::partials(li, self.server.config.max_listing).await?;
                self.wire.send_header(reply, body.len() as u64).await?;
                self.wire.write_body(&body).await?;
                return Ok(None);
            }
            FtpRequest::Discard { path } => partials::discard(li, &store, path.as_deref()).await?,
            FtpRequest::Mkdir { path } => commands::mkdir(li, &store, &path).await?,
            FtpRequest::Rm { path } => commands::rm(li, &store, &path).await?,
            FtpRequest::Rmdir { path } => commands::rmdir(li, &store, &path).await?,
            FtpRequest::Mv { from, to } => commands::mv(li, &from, &to).await?,
            FtpRequest::Put {
                path,
                size,
                at_once,
            } => {
                self.wire.upload_began = false;
                // A put sent at once waits in the batch for its answer.
                let put = if at_once {
                    batch::receive(&mut self.wire, li, &path, size)
                        .await
                        .map(|received| self.batch.push(received))
                        .map(|()| None)
                } else {
                    upload::put(
                        &self.server,
                        &mut self.wire,
                        &mut self.watch,
                        li,
                        &path,
                        size,
                    )
                    .await
                    .map(Some)
                };
                return put.inspect_err(|e| {
                    // Refused before its data was asked for: the data a
                    // client sent without waiting is to be dropped.
                    self.refused_put = !self.wire.upload_began && !e.is_fatal();
                });
            }
            FtpRequest::Get {
                path,
                offset,
                prefix_md5,
            } => {
                download::get(
                    &self.server,
                    &mut self.wire,
                    &mut self.watch,
                    li,
                    &path,
                    offset,
                    prefix_md5,
                )
                .await?;
                return Ok(None);
            }
            FtpRequest::PutData { .. } => {
                return Err(FtpError::refuse(
                    ErrorCode::BadRequest,
                    "put_data must follow put",
                ));
            }
            FtpRequest::PutEnd { .. } => {
                return Err(FtpError::refuse(
                    ErrorCode::BadRequest,
                    "put_end must follow put_data",
                ));
            }
            FtpRequest::Hello(_) | FtpRequest::Login(_) => {
                return Err(FtpError::Replied(Refusal::already_logged_in().reply()));
            }
            FtpRequest::Passwd(change) => {
                self.server
                    .auth
                    .change_password(
                        &li.user.name,
                        &change.old,
                        &change.new,
                        Service::Ftp,
                        self.peer.ip(),
                    )
                    .await
                    .map_err(FtpError::Core)?;
                FtpReply::PasswdOk
            }
            FtpRequest::Quota => {
                let user = store.require_user(&li.user.name).await?;
                FtpReply::Quota {
                    used: user.used_bytes,
                    reserved: user.reserved_bytes,
                    quota: user.quota_bytes,
                    files: user.file_count,
                    reserved_files: user.reserved_files,
                    files_quota: user.quota_files,
                }
            }
            FtpRequest::Quit => FtpReply::Bye,
        }))
    }

    /// Reads and drops the data of a refused upload (`body_len` bytes, then
    /// its `put_end`): the client already has the refusal.
    async fn drop_upload(&mut self, body_len: u64) -> Result<(), FtpError> {
        if body_len > batch::MAX_AT_ONCE {
            return Err(FtpError::closing(
                ErrorCode::BadRequest,
                format!(
                    "put_data sent without waiting for put_ready may carry at most {} bytes; wait for put_ready before sending bigger files",
                    batch::MAX_AT_ONCE
                ),
            ));
        }
        let mut left = body_len;
        while left > 0 {
            match self.wire.next_frame_idle().await? {
                Frame::Body { chunk, .. } => left = left.saturating_sub(chunk.len() as u64),
                _ => {
                    return Err(FtpError::closing(
                        ErrorCode::BadRequest,
                        "expected upload data",
                    ));
                }
            }
        }
        self.wire.put_end().await.map(drop)
    }
}
