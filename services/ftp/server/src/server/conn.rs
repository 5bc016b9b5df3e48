//! What a request is served with, apart from the server: the user logged in
//! ([`LoggedIn`]), the framed connection ([`Wire`]) and what may end the
//! session in the middle of a transfer ([`Watch`]). Handlers take these
//! (and `&FtpServer`), as mini-redis commands take `&Db` and
//! `&mut Connection`; only `session` holds them all.

use std::path::PathBuf;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::watch;
use tokio_util::codec::Framed;
use wharf_core::tls::Stream;
use wharf_proto::ftp::{FtpReply, FtpRequest};
use wharf_proto::{ErrorCode, Frame, FrameCodec, Outbound};
use wharf_store::User;
use wharf_store::standing::Standing;

use crate::error::FtpError;
use crate::paths::{Jail, VPath};

/// The session's framed connection.
pub(super) type Conn = Framed<Stream, FrameCodec<FtpRequest>>;

/// A logged-in user's session state.
pub(super) struct LoggedIn {
    pub user: User,
    /// The session as the user's sessions are counted, and the user's
    /// transfer rates.
    pub lease: wharf_store::sessions::SessionLease,
    pub jail: Jail,
    pub cwd: VPath,
}

/// What ends a session, and a transfer in flight, from outside: a lock, a
/// deletion or a revoked right (the standing), a home an administrator
/// moved.
#[derive(Default)]
pub(super) struct Watch {
    /// The user's standing, once logged in (a transfer takes it while it
    /// runs, and gives it back).
    pub standing: Option<watch::Receiver<Standing>>,
    /// The home the session works in (its jail).
    pub home: Option<PathBuf>,
}

/// The connection as requests use it: whole frames read (one may be read
/// ahead) and written, bodies written straight to the socket.
pub(super) struct Wire {
    pub conn: Conn,
    /// A frame read ahead to see whether the client is still sending.
    peeked: Option<Result<Frame<FtpRequest>, FtpError>>,
    /// How long a logged-in client may stay silent.
    idle: Duration,
    /// Set by `put` once it said `put_ready`: the client's data may follow.
    pub upload_began: bool,
}

/// A frame as the connection gave it, in the session's terms. A closed
/// connection is `Closed`: nobody is left to tell.
fn read_frame(
    got: Option<Result<Frame<FtpRequest>, wharf_proto::ProtoError>>,
) -> Result<Frame<FtpRequest>, FtpError> {
    match got {
        None => Err(FtpError::Closed),
        Some(Err(e)) => Err(FtpError::Protocol(e)),
        Some(Ok(frame)) => Ok(frame),
    }
}

impl Wire {
    /// The connection `stream`, whose client may stay silent for `idle`
    /// once logged in.
    pub fn new(stream: Stream, idle: Duration) -> Wire {
        Wire {
            conn: Framed::new(stream, FrameCodec::new()),
            peeked: None,
            idle,
            upload_began: false,
        }
    }

    /// The next frame, within `wait`.
    pub async fn next_frame(&mut self, wait: Duration) -> Result<Frame<FtpRequest>, FtpError> {
        if let Some(frame) = self.peeked.take() {
            return frame;
        }
        match tokio::time::timeout(wait, self.conn.next()).await {
            Err(_) => Err(FtpError::closing(
                ErrorCode::Timeout,
                format!(
                    "nothing received for {}; closing the connection",
                    humantime::format_duration(wait)
                ),
            )),
            Ok(got) => read_frame(got),
        }
    }

    /// The next frame within the idle timeout.
    pub async fn next_frame_idle(&mut self) -> Result<Frame<FtpRequest>, FtpError> {
        self.next_frame(self.idle).await
    }

    /// Whether the client has sent more than what was handled: a frame is
    /// ready without waiting (it is kept for `next_frame`).
    pub fn frame_waiting(&mut self) -> bool {
        use futures_util::FutureExt;
        if self.peeked.is_none()
            && let Some(got) = self.conn.next().now_or_never()
        {
            self.peeked = Some(read_frame(got));
        }
        self.peeked.is_some()
    }

    /// Sends one reply.
    pub async fn send(&mut self, reply: FtpReply) -> Result<(), FtpError> {
        self.conn
            .send(Outbound::msg(reply))
            .await
            .map_err(|_| FtpError::Closed)
    }

    /// Sends several replies, flushed once.
    pub async fn send_all(
        &mut self,
        replies: impl IntoIterator<Item = FtpReply>,
    ) -> Result<(), FtpError> {
        for reply in replies {
            self.conn
                .feed(Outbound::msg(reply))
                .await
                .map_err(|_| FtpError::Closed)?;
        }
        SinkExt::<Outbound<FtpReply>>::flush(&mut self.conn)
            .await
            .map_err(|_| FtpError::Closed)
    }

    /// Sends a header announcing `body_len` body bytes (flushed, so the body
    /// can then be written straight to the socket).
    pub async fn send_header(&mut self, reply: FtpReply, body_len: u64) -> Result<(), FtpError> {
        self.conn
            .send(Outbound::Header {
                msg: reply,
                body_len,
            })
            .await
            .map_err(|_| FtpError::Closed)
    }

    /// The `put_end` that must follow an upload's data: the md5 the client
    /// claims, lowercase.
    pub async fn put_end(&mut self) -> Result<String, FtpError> {
        match self.next_frame_idle().await? {
            Frame::Header {
                msg: FtpRequest::PutEnd { md5 },
                body_len: 0,
            } => Ok(md5.to_ascii_lowercase()),
            _ => Err(FtpError::closing(
                ErrorCode::BadRequest,
                "the upload data must be followed by put_end",
            )),
        }
    }

    /// Writes raw body bytes straight to the socket.
    pub async fn write_body(&mut self, bytes: &[u8]) -> Result<(), FtpError> {
        use tokio::io::AsyncWriteExt;
        self.conn
            .get_mut()
            .write_all(bytes)
            .await
            .map_err(|_| FtpError::Closed)
    }
}
