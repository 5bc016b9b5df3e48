//! Decode and encode errors of the frame codec.
//!
//! Two kinds, because a server must decide whether it can go on reading:
//! a [`ProtoError`] means the stream is out of step (the peer's next byte
//! cannot be located) and the connection must close after an error reply; a
//! [`FrameError`] describes one well-delimited frame that was rejected and
//! skipped, and the connection can carry on.

use crate::message::ErrorCode;

/// A fatal protocol error: the byte stream cannot be trusted any more.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// The length prefix announced a header over the limit.
    #[error("frame header of {len} bytes is over the {max}-byte limit")]
    HeaderTooLarge {
        /// Announced header length.
        len: u64,
        /// The limit in force.
        max: usize,
    },
    /// The header announced a body over this connection's limit.
    #[error("frame body of {len} bytes is over the {max}-byte limit of this request")]
    BodyTooLarge {
        /// Announced body length.
        len: u64,
        /// The limit in force.
        max: u64,
    },
    /// The header bytes are not UTF-8.
    #[error("frame header is not valid UTF-8")]
    InvalidUtf8,
    /// The header is not a JSON object with a valid `body_len`.
    #[error("frame header is not a valid JSON object: {0}")]
    InvalidJson(String),
    /// The stream ended inside a frame.
    #[error("connection closed in the middle of a frame ({missing} more bytes were expected)")]
    Truncated {
        /// How many bytes were still missing, at least.
        missing: u64,
    },
    /// A message could not be serialised (a bug in the sender).
    #[error("message could not be encoded: {0}")]
    Encode(String),
    /// The underlying transport failed.
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
}

impl ProtoError {
    /// The wire error code to send before closing.
    pub fn code(&self) -> ErrorCode {
        match self {
            ProtoError::HeaderTooLarge { .. } => ErrorCode::HeaderTooLarge,
            ProtoError::BodyTooLarge { .. } => ErrorCode::MessageTooLarge,
            ProtoError::InvalidUtf8 | ProtoError::InvalidJson(_) | ProtoError::Truncated { .. } => {
                ErrorCode::InvalidFrame
            }
            ProtoError::Encode(_) | ProtoError::Io(_) => ErrorCode::Internal,
        }
    }
}

/// One frame that was well delimited but not an acceptable message; it has
/// been consumed (body included) and the stream is still in step.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The header has no string `op` field.
    #[error("frame header has no \"op\" field naming the request")]
    MissingOp,
    /// The `op` is not one this peer knows.
    #[error("unknown op {op:?}; expected one of: {expected}")]
    UnknownOp {
        /// The op that was sent.
        op: String,
        /// The ops this peer accepts, comma separated.
        expected: String,
    },
    /// The `op` is known but its fields are wrong.
    #[error("bad {op:?} message: {reason}")]
    InvalidMessage {
        /// The op that was sent.
        op: String,
        /// What serde said was wrong.
        reason: String,
    },
}

impl FrameError {
    /// The wire error code to reply with.
    pub fn code(&self) -> ErrorCode {
        match self {
            FrameError::UnknownOp { .. } => ErrorCode::UnknownOp,
            FrameError::MissingOp | FrameError::InvalidMessage { .. } => ErrorCode::BadRequest,
        }
    }
}
