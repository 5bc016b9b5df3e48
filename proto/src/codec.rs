//! The frame codec: bytes to [`Frame`]s and [`Outbound`] values to bytes.
//!
//! Decoding is incremental and bounded: the header is buffered only once its
//! whole length is known to be under the limit, and a body is handed out in
//! chunks of at most `body_chunk` bytes as they arrive, never buffered whole.
//! A body that belongs to a rejected frame is skipped without being kept.

use std::marker::PhantomData;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::Serialize;
use tokio_util::codec::{Decoder, Encoder};

use crate::error::{FrameError, ProtoError};
use crate::message::Message;
use crate::{MAX_HEADER_LEN, PREFIX_LEN};

/// Largest body chunk the decoder hands out by default.
pub const DEFAULT_BODY_CHUNK: usize = 256 * 1024;

/// One decoded unit of the stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame<M> {
    /// A message header; `body_len` body bytes follow as [`Frame::Body`]s.
    Header {
        /// The message.
        msg: M,
        /// Length of the body that follows.
        body_len: u64,
    },
    /// A piece of the current message's body.
    Body {
        /// The bytes.
        chunk: Bytes,
        /// True on the body's final chunk.
        last: bool,
    },
    /// A well-delimited frame that is not an acceptable message. Its body, if
    /// any, is skipped; the stream stays in step.
    Rejected(FrameError),
}

/// What to encode: a message header, or a piece of its body.
#[derive(Debug, Clone)]
pub enum Outbound<T> {
    /// A header announcing `body_len` body bytes to follow.
    Header {
        /// The message.
        msg: T,
        /// Length of the body that will follow.
        body_len: u64,
    },
    /// Body bytes. The sender must send exactly the announced total.
    Body(Bytes),
}

impl<T> Outbound<T> {
    /// A message without a body.
    pub fn msg(msg: T) -> Self {
        Outbound::Header { msg, body_len: 0 }
    }
}

#[derive(Debug, Clone, Copy)]
enum State {
    Head,
    Body { remaining: u64 },
    Skip { remaining: u64 },
}

/// `tokio_util` codec for Wharf frames. `In` is the message type this side
/// receives; anything `Serialize` can be sent.
#[derive(Debug)]
pub struct FrameCodec<In> {
    max_header: usize,
    max_body: u64,
    body_chunk: usize,
    state: State,
    _in: PhantomData<fn() -> In>,
}

impl<In> Default for FrameCodec<In> {
    fn default() -> Self {
        Self::new()
    }
}

impl<In> FrameCodec<In> {
    /// A codec with the protocol's header limit and no body limit.
    pub fn new() -> Self {
        FrameCodec {
            max_header: MAX_HEADER_LEN,
            max_body: u64::MAX,
            body_chunk: DEFAULT_BODY_CHUNK,
            state: State::Head,
            _in: PhantomData,
        }
    }

    /// Lowers the header limit (it can never exceed [`MAX_HEADER_LEN`]).
    pub fn max_header(mut self, bytes: usize) -> Self {
        self.max_header = bytes.min(MAX_HEADER_LEN);
        self
    }

    /// Refuses frames that announce a body over `bytes`.
    pub fn max_body(mut self, bytes: u64) -> Self {
        self.max_body = bytes;
        self
    }

    /// Sets the largest body chunk handed out (at least 1 byte).
    pub fn body_chunk(mut self, bytes: usize) -> Self {
        self.body_chunk = bytes.max(1);
        self
    }

    /// True when the decoder is between frames (not inside a body).
    pub fn at_frame_boundary(&self) -> bool {
        matches!(self.state, State::Head)
    }

    fn remaining_in_frame(&self) -> u64 {
        match self.state {
            State::Head => 0,
            State::Body { remaining } | State::Skip { remaining } => remaining,
        }
    }
}

/// What a header says before its message is typed.
struct Envelope {
    value: serde_json::Value,
    body_len: u64,
}

fn parse_envelope(header: &[u8]) -> Result<Envelope, ProtoError> {
    let text = std::str::from_utf8(header).map_err(|_| ProtoError::InvalidUtf8)?;
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| ProtoError::InvalidJson(e.to_string()))?;
    let obj = value
        .as_object()
        .ok_or_else(|| ProtoError::InvalidJson("the header must be a JSON object".into()))?;
    let body_len = match obj.get("body_len") {
        None => 0,
        Some(v) => v.as_u64().ok_or_else(|| {
            ProtoError::InvalidJson("\"body_len\" must be a non-negative integer".into())
        })?,
    };
    Ok(Envelope { value, body_len })
}

fn type_message<M: Message>(mut value: serde_json::Value) -> Result<M, FrameError> {
    let op = match value.get("op").and_then(|op| op.as_str()) {
        Some(op) => op.to_owned(),
        None => return Err(FrameError::MissingOp),
    };
    if !M::OPS.contains(&op.as_str()) {
        return Err(FrameError::UnknownOp {
            op,
            expected: M::OPS.join(", "),
        });
    }
    if let Some(obj) = value.as_object_mut() {
        obj.remove("body_len");
    }
    serde_json::from_value(value).map_err(|e| FrameError::InvalidMessage {
        op,
        reason: e.to_string(),
    })
}

impl<In: Message> Decoder for FrameCodec<In> {
    type Item = Frame<In>;
    type Error = ProtoError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame<In>>, ProtoError> {
        loop {
            match self.state {
                State::Head => {
                    if buf.len() < PREFIX_LEN {
                        return Ok(None);
                    }
                    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
                    if len > self.max_header {
                        return Err(ProtoError::HeaderTooLarge {
                            len: len as u64,
                            max: self.max_header,
                        });
                    }
                    if buf.len() < PREFIX_LEN + len {
                        buf.reserve(PREFIX_LEN + len - buf.len());
                        return Ok(None);
                    }
                    // Parsed in place and skipped: splitting it off would
                    // turn the buffer into a shared one, with an allocation
                    // of its own kept for as long as the buffer.
                    let env = parse_envelope(&buf[PREFIX_LEN..PREFIX_LEN + len]);
                    buf.advance(PREFIX_LEN + len);
                    let env = env?;
                    if env.body_len > self.max_body {
                        return Err(ProtoError::BodyTooLarge {
                            len: env.body_len,
                            max: self.max_body,
                        });
                    }
                    let frame = match type_message::<In>(env.value) {
                        Ok(msg) => {
                            if env.body_len > 0 {
                                self.state = State::Body {
                                    remaining: env.body_len,
                                };
                            }
                            Frame::Header {
                                msg,
                                body_len: env.body_len,
                            }
                        }
                        Err(err) => {
                            if env.body_len > 0 {
                                self.state = State::Skip {
                                    remaining: env.body_len,
                                };
                            }
                            Frame::Rejected(err)
                        }
                    };
                    return Ok(Some(frame));
                }
                State::Body { remaining } => {
                    if buf.is_empty() {
                        // Let the transport read big pieces of a big body.
                        let want = remaining.min(self.body_chunk as u64) as usize;
                        buf.reserve(want);
                        return Ok(None);
                    }
                    let n = (buf.len() as u64)
                        .min(remaining)
                        .min(self.body_chunk as u64) as usize;
                    let chunk = buf.split_to(n).freeze();
                    let remaining = remaining - n as u64;
                    self.state = if remaining == 0 {
                        State::Head
                    } else {
                        State::Body { remaining }
                    };
                    return Ok(Some(Frame::Body {
                        chunk,
                        last: remaining == 0,
                    }));
                }
                State::Skip { remaining } => {
                    let n = (buf.len() as u64).min(remaining) as usize;
                    buf.advance(n);
                    let remaining = remaining - n as u64;
                    if remaining > 0 {
                        self.state = State::Skip { remaining };
                        return Ok(None);
                    }
                    self.state = State::Head;
                }
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Frame<In>>, ProtoError> {
        if let Some(frame) = self.decode(buf)? {
            return Ok(Some(frame));
        }
        let in_frame = self.remaining_in_frame();
        if buf.is_empty() && in_frame == 0 {
            return Ok(None);
        }
        let missing = if in_frame > 0 {
            in_frame - buf.len() as u64
        } else if buf.len() < PREFIX_LEN {
            (PREFIX_LEN - buf.len()) as u64
        } else {
            let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as u64;
            len + PREFIX_LEN as u64 - buf.len() as u64
        };
        buf.clear();
        self.state = State::Head;
        Err(ProtoError::Truncated { missing })
    }
}

#[derive(Serialize)]
struct EnvelopeOut<'a, T> {
    #[serde(flatten)]
    msg: &'a T,
    #[serde(skip_serializing_if = "is_zero")]
    body_len: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl<In, T: Serialize> Encoder<Outbound<T>> for FrameCodec<In> {
    type Error = ProtoError;

    fn encode(&mut self, item: Outbound<T>, dst: &mut BytesMut) -> Result<(), ProtoError> {
        match item {
            Outbound::Header { msg, body_len } => {
                let start = dst.len();
                dst.put_u32(0);
                let env = EnvelopeOut {
                    msg: &msg,
                    body_len,
                };
                if let Err(e) = serde_json::to_writer(dst.writer(), &env) {
                    dst.truncate(start);
                    return Err(ProtoError::Encode(e.to_string()));
                }
                let len = dst.len() - start - PREFIX_LEN;
                if len > MAX_HEADER_LEN {
                    dst.truncate(start);
                    return Err(ProtoError::HeaderTooLarge {
                        len: len as u64,
                        max: MAX_HEADER_LEN,
                    });
                }
                dst[start..start + PREFIX_LEN].copy_from_slice(&(len as u32).to_be_bytes());
                Ok(())
            }
            Outbound::Body(chunk) => {
                dst.extend_from_slice(&chunk);
                Ok(())
            }
        }
    }
}
