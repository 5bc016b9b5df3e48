//! Wharf's wire protocol: the frame every service speaks and the messages it
//! carries.
//!
//! A frame is a 4-byte big-endian header length, a UTF-8 JSON object (the
//! header, at most [`MAX_HEADER_LEN`] bytes) and `header.body_len` raw body
//! bytes. This is the classic cure for the "sticky packet" problem of TCP
//! streams: the receiver always knows where one message ends and the next one
//! begins, and file data or command output never goes through JSON.
//!
//! Where it sits: the lowest layer of every service. [`FrameCodec`] turns bytes
//! into [`Frame`]s (a message header, then its body in bounded chunks) and
//! [`Outbound`] values into bytes; the service crates define what the headers
//! mean. This crate knows nothing of the database or of sockets.
//!
//! `PROTOCOL.md` beside this crate documents every message for third-party
//! client writers.

#![deny(missing_docs)]

pub mod chat;
mod codec;
pub mod datagram;
mod error;
pub mod exec;
pub mod ftp;
pub mod message;
mod secret;

pub use codec::{DEFAULT_BODY_CHUNK, Frame, FrameCodec, Outbound};
pub use error::{FrameError, ProtoError};
pub use message::{ErrorCode, Message};
pub use secret::Password;

/// Largest header the codec accepts or produces, in bytes.
pub const MAX_HEADER_LEN: usize = 64 * 1024;

/// Length of the big-endian header-length prefix, in bytes.
pub const PREFIX_LEN: usize = 4;

/// The protocol version this crate speaks; sent in `hello`.
pub const PROTOCOL_VERSION: u32 = 1;
