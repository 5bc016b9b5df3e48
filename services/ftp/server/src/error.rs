//! Server-side failures and the one place that turns them into replies.

use wharf_proto::ErrorCode;
use wharf_proto::message::ErrorReply;
use wharf_server::Refusal;

/// Why a request failed. [`FtpError::reply`] maps each to a wire code and
/// a message; [`FtpError::is_fatal`] says whether the connection can go on.
#[derive(Debug, thiserror::Error)]
pub enum FtpError {
    /// A request refused: its code, its words for the client, and whether
    /// the connection ends after it (a stream out of step, a timeout, a
    /// shutdown).
    #[error("{}", .0.message)]
    Refused(Refusal),
    /// A frame the codec rejected (unknown op, bad fields); the stream is fine.
    #[error(transparent)]
    Frame(#[from] wharf_proto::FrameError),
    /// The byte stream itself is broken (oversized header, invalid JSON).
    #[error(transparent)]
    Protocol(#[from] wharf_proto::ProtoError),
    /// An error from wharf-core (auth, quota, database).
    #[error(transparent)]
    Core(#[from] wharf_store::Error),
    /// A file-system failure the client cannot fix; logged, not sent.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// An administrator locked, removed or revoked the user: the session
    /// ends.
    #[error("{0}")]
    Ended(wharf_store::Error),
    /// An upload stopped in the middle of its data for this reason: the
    /// client hears it, then the connection closes (the rest of the data is
    /// not read).
    #[error(transparent)]
    Stopped(Box<FtpError>),
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
    /// A request refused; the session goes on.
    pub fn refuse(code: ErrorCode, message: impl Into<String>) -> Self {
        FtpError::Refused(Refusal::new(code, message))
    }

    /// A request refused, and the connection ends after the refusal.
    pub fn closing(code: ErrorCode, message: impl Into<String>) -> Self {
        FtpError::Refused(Refusal::closing(code, message))
    }

    /// True for a refusal with this code.
    pub fn is(&self, code: ErrorCode) -> bool {
        matches!(self, FtpError::Refused(r) if r.code == code)
    }

    /// Wraps an I/O error, turning the kinds a client caused into their codes.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        use std::io::ErrorKind;
        let context = context.into();
        match source.kind() {
            ErrorKind::NotFound => FtpError::refuse(
                ErrorCode::NotFound,
                format!("{context}: no such file or directory"),
            ),
            ErrorKind::AlreadyExists => FtpError::refuse(
                ErrorCode::AlreadyExists,
                format!("{context}: it exists already"),
            ),
            ErrorKind::DirectoryNotEmpty => FtpError::refuse(
                ErrorCode::BadRequest,
                format!("{context}: the directory is not empty"),
            ),
            ErrorKind::NotADirectory => {
                FtpError::refuse(ErrorCode::BadRequest, format!("{context}: not a directory"))
            }
            ErrorKind::IsADirectory => FtpError::refuse(
                ErrorCode::BadRequest,
                format!("{context}: it is a directory"),
            ),
            ErrorKind::InvalidInput => {
                FtpError::refuse(ErrorCode::BadRequest, format!("{context}: not possible"))
            }
            // The kernel's quota on the home (btrfs qgroups): the user's
            // own limit, not the server's disk.
            ErrorKind::QuotaExceeded => FtpError::Core(wharf_store::Error::DiskQuota),
            ErrorKind::StorageFull => {
                tracing::warn!(%context, error = %source, "the disk is full");
                FtpError::refuse(
                    ErrorCode::NoSpace,
                    format!(
                        "{context}: the server's disk is full; nothing was kept; try again once the administrator has made room"
                    ),
                )
            }
            ErrorKind::ReadOnlyFilesystem => {
                tracing::warn!(%context, error = %source, "the file system is read-only");
                FtpError::refuse(
                    ErrorCode::NoSpace,
                    format!(
                        "{context}: the server's storage is read-only; nothing was kept; tell the administrator"
                    ),
                )
            }
            _ => FtpError::Io { context, source },
        }
    }

    /// True when the connection must close after this error.
    pub fn is_fatal(&self) -> bool {
        match self {
            FtpError::Refused(r) => r.close,
            FtpError::Closed
            | FtpError::Protocol(_)
            | FtpError::Ended(_)
            | FtpError::Stopped(_) => true,
            _ => false,
        }
    }

    pub fn reply(&self) -> ErrorReply {
        let (code, message) = match self {
            FtpError::Refused(r) => return r.reply(),
            FtpError::Ended(e) => (e.code(), e.client_message()),
            FtpError::Stopped(e) => return e.reply(),
            FtpError::Replied(r) => return r.clone(),
            FtpError::Closed => (ErrorCode::Internal, "connection closed".to_owned()),
            FtpError::Frame(e) => (e.code(), e.to_string()),
            FtpError::Protocol(e) => (e.code(), e.to_string()),
            FtpError::Core(e) => {
                if e.code() == ErrorCode::Internal || matches!(e, wharf_store::Error::Database(_)) {
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
