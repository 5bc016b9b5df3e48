//! Server-side failures and the one place that turns them into replies.

use wharf_proto::ErrorCode;
use wharf_proto::message::ErrorReply;

/// Why a request failed. [`FtpError::reply`] maps each to a wire code and
/// a message; [`FtpError::is_fatal`] says whether the connection can go on.
#[derive(Debug, thiserror::Error)]
pub enum FtpError {
    /// A path that is refused whatever the file system holds.
    #[error("{0}")]
    ForbiddenPath(String),
    /// The request is malformed or out of order.
    #[error("{0}")]
    BadRequest(String),
    /// The path does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The target exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// Another session holds the resource.
    #[error("{0}")]
    Busy(String),
    /// The request needs a login first.
    #[error("{0}")]
    NotLoggedIn(String),
    /// A frame the codec rejected (unknown op, bad fields); the stream is fine.
    #[error(transparent)]
    Frame(#[from] wharf_proto::FrameError),
    /// The byte stream itself is broken (oversized header, invalid JSON).
    #[error(transparent)]
    Protocol(#[from] wharf_proto::ProtoError),
    /// A transfer's md5 did not match.
    #[error("{0}")]
    ChecksumMismatch(String),
    /// The disk is full or read-only; the server goes on.
    #[error("{0}")]
    NoSpace(String),
    /// Nothing arrived in time.
    #[error("{0}")]
    Timeout(String),
    /// An error from wharf-core (auth, quota, database).
    #[error(transparent)]
    Core(#[from] wharf_core::Error),
    /// A file-system failure the client cannot fix; logged, not sent.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The byte stream is out of step: reply if possible, then close.
    #[error("{0}")]
    Fatal(String),
    /// An administrator locked, removed or revoked the user: the session
    /// ends.
    #[error("{0}")]
    Ended(wharf_core::Error),
    /// An upload stopped in the middle of its data for this reason: the
    /// client hears it, then the connection closes (the rest of the data is
    /// not read).
    #[error(transparent)]
    Stopped(Box<FtpError>),
    /// The server is stopping and the grace period for transfers ran out.
    #[error("{0}")]
    ShuttingDown(String),
    /// An error already put in words for the client (one cause answering
    /// several requests).
    #[error("{}", .0.message)]
    Replied(ErrorReply),
    /// The connection is over (the peer left, or was already told why):
    /// close without a reply.
    #[error("connection closed")]
    Closed,
}

impl FtpError {
    /// Wraps an I/O error, turning the kinds a client caused into their codes.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        use std::io::ErrorKind;
        let context = context.into();
        match source.kind() {
            ErrorKind::NotFound => {
                FtpError::NotFound(format!("{context}: no such file or directory"))
            }
            ErrorKind::AlreadyExists => {
                FtpError::AlreadyExists(format!("{context}: it exists already"))
            }
            ErrorKind::DirectoryNotEmpty => {
                FtpError::BadRequest(format!("{context}: the directory is not empty"))
            }
            ErrorKind::NotADirectory => FtpError::BadRequest(format!("{context}: not a directory")),
            ErrorKind::IsADirectory => {
                FtpError::BadRequest(format!("{context}: it is a directory"))
            }
            ErrorKind::InvalidInput => FtpError::BadRequest(format!("{context}: not possible")),
            // The kernel's quota on the home (btrfs qgroups): the user's
            // own limit, not the server's disk.
            ErrorKind::QuotaExceeded => FtpError::Core(wharf_core::Error::DiskQuota),
            ErrorKind::StorageFull => {
                tracing::warn!(%context, error = %source, "the disk is full");
                FtpError::NoSpace(format!(
                    "{context}: the server's disk is full; nothing was kept; try again once the administrator has made room"
                ))
            }
            ErrorKind::ReadOnlyFilesystem => {
                tracing::warn!(%context, error = %source, "the file system is read-only");
                FtpError::NoSpace(format!(
                    "{context}: the server's storage is read-only; nothing was kept; tell the administrator"
                ))
            }
            _ => FtpError::Io { context, source },
        }
    }

    /// True when the connection must close after this error.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            FtpError::Fatal(_)
                | FtpError::Closed
                | FtpError::Timeout(_)
                | FtpError::Protocol(_)
                | FtpError::ShuttingDown(_)
                | FtpError::Ended(_)
                | FtpError::Stopped(_)
        )
    }

    /// The error frame for the client; internal details go to the log only.
    pub fn reply(&self) -> ErrorReply {
        let (code, message) = match self {
            FtpError::ForbiddenPath(m) => (ErrorCode::ForbiddenPath, m.clone()),
            FtpError::BadRequest(m) => (ErrorCode::BadRequest, m.clone()),
            FtpError::NotFound(m) => (ErrorCode::NotFound, m.clone()),
            FtpError::AlreadyExists(m) => (ErrorCode::AlreadyExists, m.clone()),
            FtpError::Busy(m) => (ErrorCode::Busy, m.clone()),
            FtpError::ChecksumMismatch(m) => (ErrorCode::ChecksumMismatch, m.clone()),
            FtpError::NoSpace(m) => (ErrorCode::NoSpace, m.clone()),
            FtpError::Timeout(m) => (ErrorCode::Timeout, m.clone()),
            FtpError::Fatal(m) => (ErrorCode::BadRequest, m.clone()),
            FtpError::ShuttingDown(m) => (ErrorCode::ShuttingDown, m.clone()),
            FtpError::Ended(e) => (e.code(), e.client_message()),
            FtpError::Stopped(e) => return e.reply(),
            FtpError::Replied(r) => return r.clone(),
            FtpError::Closed => (ErrorCode::Internal, "connection closed".to_owned()),
            FtpError::NotLoggedIn(m) => (ErrorCode::NotLoggedIn, m.clone()),
            FtpError::Frame(e) => (e.code(), e.to_string()),
            FtpError::Protocol(e) => (e.code(), e.to_string()),
            FtpError::Core(e) => {
                if e.code() == ErrorCode::Internal || matches!(e, wharf_core::Error::Database(_)) {
                    tracing::error!(error = %e, "internal error");
                }
                (e.code(), e.client_message())
            }
            FtpError::Io { context, source } => {
                tracing::error!(%context, error = %source, "file system error");
                (
                    ErrorCode::Internal,
                    "internal server error; the administrator can find the details in the server log"
                        .to_owned(),
                )
            }
        };
        ErrorReply::new(code, message)
    }
}
