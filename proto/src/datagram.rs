//! UDP datagrams of the chat service: one frame per datagram, sealed.
//!
//! ```text
//! offset  size  field
//! 0       1     direction: 1 client to server, 2 server to client
//! 1       16    session id (from `udp_session`)
//! 17      8     counter, u64 big-endian: 1, 2, 3... per direction
//! 25      n     one frame (u32 big-endian header length + JSON header, no
//!               body), encrypted with ChaCha20-Poly1305 under the session key
//! 25+n    16    Poly1305 tag over bytes 0..25 (as associated data) and the
//!               encrypted frame
//! ```
//!
//! The nonce is 12 bytes: three zero bytes, the direction byte, and the
//! counter (big-endian). Each side counts its own datagrams from 1 and never
//! reuses a counter, so a key and nonce never seal twice. The frame's text
//! is as private as over TLS; the session id and counter travel in clear,
//! authenticated.
//!
//! A datagram is at most [`MAX_DATAGRAM`] bytes, so it is never fragmented.
//! The direction byte is in the nonce and under the tag, so a datagram
//! cannot be reflected back to its sender as if the other side had sent it.
//! A receiver checks the length, then the session, then opens the seal,
//! then the counter against a [`ReplayWindow`], and drops silently whatever
//! fails.

use bytes::BytesMut;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use serde::Serialize;
use tokio_util::codec::{Decoder, Encoder};

use crate::codec::{Frame, FrameCodec, Outbound};
use crate::error::{FrameError, ProtoError};
use crate::message::Message;

/// Largest datagram, in bytes: the size QUIC uses to stay under every
/// path's MTU.
pub const MAX_DATAGRAM: usize = 1200;
/// Length of a session id, in bytes.
pub const SESSION_ID_LEN: usize = 16;
/// Length of a session key, in bytes.
pub const KEY_LEN: usize = 32;
/// Length of the tag, in bytes.
pub const TAG_LEN: usize = 16;
/// Length of the fields before the frame.
pub const HEAD_LEN: usize = 1 + SESSION_ID_LEN + 8;
/// Largest frame one datagram carries.
pub const MAX_FRAME: usize = MAX_DATAGRAM - HEAD_LEN - TAG_LEN;
/// Smallest well-formed datagram: a frame of at least `{}`.
pub const MIN_DATAGRAM: usize = HEAD_LEN + 4 + 2 + TAG_LEN;

/// A session id.
pub type SessionId = [u8; SESSION_ID_LEN];

/// Which way a datagram goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client to server.
    ToServer = 1,
    /// Server to client.
    ToClient = 2,
}

/// A session key. Its `Debug` output does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Key([u8; KEY_LEN]);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

impl Key {
    /// A key from its bytes.
    pub fn new(bytes: [u8; KEY_LEN]) -> Self {
        Key(bytes)
    }

    /// A key from lowercase or uppercase hex, as `udp_session` sends it.
    pub fn from_hex(text: &str) -> Option<Self> {
        let mut bytes = [0u8; KEY_LEN];
        hex::decode_to_slice(text, &mut bytes).ok()?;
        Some(Key(bytes))
    }

    /// The key as lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    fn aead(&self) -> LessSafeKey {
        // ChaCha20-Poly1305 takes exactly 32-byte keys, as this one is.
        match UnboundKey::new(&CHACHA20_POLY1305, &self.0) {
            Ok(key) => LessSafeKey::new(key),
            Err(_) => unreachable!("ChaCha20-Poly1305 accepts a 32-byte key"),
        }
    }
}

fn nonce(direction: u8, counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[3] = direction;
    n[4..].copy_from_slice(&counter.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

/// A session id from hex, as `udp_session` sends it.
pub fn session_from_hex(text: &str) -> Option<SessionId> {
    let mut id = [0u8; SESSION_ID_LEN];
    hex::decode_to_slice(text, &mut id).ok()?;
    Some(id)
}

/// What a datagram says before its tag is checked: trust none of it yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Envelope {
    /// The session it claims.
    pub session: SessionId,
    /// Its counter.
    pub counter: u64,
}

/// Reads the envelope of a datagram meant to travel `direction`: `None`
/// when the length or the direction byte is wrong.
pub fn peek(datagram: &[u8], direction: Direction) -> Option<Envelope> {
    if datagram.len() < MIN_DATAGRAM || datagram.len() > MAX_DATAGRAM {
        return None;
    }
    if datagram[0] != direction as u8 {
        return None;
    }
    let mut session = [0u8; SESSION_ID_LEN];
    session.copy_from_slice(&datagram[1..1 + SESSION_ID_LEN]);
    let mut counter = [0u8; 8];
    counter.copy_from_slice(&datagram[1 + SESSION_ID_LEN..HEAD_LEN]);
    Some(Envelope {
        session,
        counter: u64::from_be_bytes(counter),
    })
}

/// Opens a datagram (whose envelope [`peek`] read) in place: checks its tag
/// (in constant time) and decrypts the frame it carries, which it returns.
/// `None`, and the bytes are garbage, when the seal does not hold.
pub fn open<'a>(key: &Key, datagram: &'a mut [u8]) -> Option<&'a [u8]> {
    if datagram.len() < MIN_DATAGRAM {
        return None;
    }
    let (head, sealed) = datagram.split_at_mut(HEAD_LEN);
    let mut counter = [0u8; 8];
    counter.copy_from_slice(&head[1 + SESSION_ID_LEN..HEAD_LEN]);
    let nonce = nonce(head[0], u64::from_be_bytes(counter));
    let frame = key
        .aead()
        .open_in_place(nonce, Aad::from(&head[..]), sealed)
        .ok()?;
    Some(frame)
}

/// Wraps `frame` into a sealed datagram in `out` (cleared first).
pub fn seal(
    key: &Key,
    direction: Direction,
    session: &SessionId,
    counter: u64,
    frame: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), ProtoError> {
    if frame.len() > MAX_FRAME {
        return Err(ProtoError::BodyTooLarge {
            len: frame.len() as u64,
            max: MAX_FRAME as u64,
        });
    }
    out.clear();
    out.push(direction as u8);
    out.extend_from_slice(session);
    out.extend_from_slice(&counter.to_be_bytes());
    out.extend_from_slice(frame);
    let (head, body) = out.split_at_mut(HEAD_LEN);
    let tag = key
        .aead()
        .seal_in_place_separate_tag(nonce(direction as u8, counter), Aad::from(&head[..]), body)
        .map_err(|_| ProtoError::BodyTooLarge {
            len: frame.len() as u64,
            max: MAX_FRAME as u64,
        })?;
    out.extend_from_slice(tag.as_ref());
    Ok(())
}

/// Encodes one body-less frame of `msg`.
pub fn encode_frame<T: Serialize>(msg: T) -> Result<BytesMut, ProtoError> {
    let mut buf = BytesMut::new();
    FrameCodec::<()>::new().encode(Outbound::msg(msg), &mut buf)?;
    Ok(buf)
}

/// Why a datagram's frame is not a message.
#[derive(Debug, thiserror::Error)]
pub enum DatagramError {
    /// The bytes are not one whole frame.
    #[error("{0}")]
    Invalid(#[from] ProtoError),
    /// A frame, but not an acceptable message.
    #[error("{0}")]
    Rejected(FrameError),
    /// The frame announces a body or does not fill the datagram.
    #[error("a datagram carries exactly one frame, without a body")]
    NotOneFrame,
}

/// Decodes the single body-less frame a datagram carries.
pub fn decode_frame<M: Message>(frame: &[u8]) -> Result<M, DatagramError> {
    let mut buf = BytesMut::from(frame);
    let mut codec = FrameCodec::<M>::new().max_body(0);
    match codec.decode_eof(&mut buf)? {
        Some(Frame::Header { msg, body_len: 0 }) if buf.is_empty() => Ok(msg),
        Some(Frame::Rejected(e)) => Err(DatagramError::Rejected(e)),
        _ => Err(DatagramError::NotOneFrame),
    }
}

/// Which counters have been seen: the highest, and a window of the 128
/// below it. Older counters and repeats are refused (as IPsec and WireGuard
/// do), so a captured datagram cannot be played again, while datagrams
/// reordered by the network within the window still count.
#[derive(Debug, Clone, Default)]
pub struct ReplayWindow {
    top: u64,
    /// Bit i set: counter `top - i` seen.
    seen: u128,
}

impl ReplayWindow {
    /// Counters this far below the highest are still accepted once.
    pub const WIDTH: u64 = 128;

    /// True when `counter` (at least 1) has not been seen and is not too
    /// old. Does not record it: call [`ReplayWindow::record`] once the
    /// datagram is known to be authentic.
    pub fn is_fresh(&self, counter: u64) -> bool {
        if counter == 0 {
            return false;
        }
        if counter > self.top {
            return true;
        }
        let age = self.top - counter;
        age < Self::WIDTH && self.seen & (1u128 << age) == 0
    }

    /// Records `counter` as seen.
    pub fn record(&mut self, counter: u64) {
        if counter > self.top {
            let shift = counter - self.top;
            self.seen = if shift >= Self::WIDTH {
                0
            } else {
                self.seen << shift
            };
            self.seen |= 1;
            self.top = counter;
        } else {
            let age = self.top - counter;
            if age < Self::WIDTH {
                self.seen |= 1u128 << age;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::ChatRequest;

    fn key() -> Key {
        Key::new([7; KEY_LEN])
    }

    fn sealed(counter: u64) -> Vec<u8> {
        let frame = encode_frame(ChatRequest::Ping).unwrap_or_default();
        let mut out = Vec::new();
        let sealed = seal(
            &key(),
            Direction::ToServer,
            &[1; 16],
            counter,
            &frame,
            &mut out,
        );
        assert!(sealed.is_ok());
        out
    }

    #[test]
    fn a_sealed_datagram_opens_with_its_key_only() {
        let d = sealed(5);
        let env = peek(&d, Direction::ToServer);
        assert_eq!(
            env,
            Some(Envelope {
                session: [1; 16],
                counter: 5
            })
        );
        assert!(open(&Key::new([8; KEY_LEN]), &mut d.clone()).is_none());
        assert!(peek(&d, Direction::ToClient).is_none(), "reflected");
        let mut flipped = d.clone();
        flipped[0] = Direction::ToClient as u8;
        assert!(open(&key(), &mut flipped).is_none(), "direction is sealed");
        let mut d = d;
        let frame = open(&key(), &mut d).unwrap_or_default();
        assert!(matches!(
            decode_frame::<ChatRequest>(frame),
            Ok(ChatRequest::Ping)
        ));
    }

    #[test]
    fn the_frame_does_not_travel_in_clear() {
        let frame = encode_frame(ChatRequest::Say {
            room: "lobby".into(),
            text: "the launch code is 0000".into(),
        })
        .unwrap_or_default();
        let mut out = Vec::new();
        assert!(seal(&key(), Direction::ToServer, &[1; 16], 9, &frame, &mut out).is_ok());
        let text = String::from_utf8_lossy(&out);
        assert!(
            !text.contains("launch") && !text.contains("lobby"),
            "{text}"
        );
        assert_eq!(out.len(), HEAD_LEN + frame.len() + TAG_LEN);
        assert_eq!(open(&key(), &mut out), Some(&frame[..]));
    }

    #[test]
    fn any_flipped_bit_fails_the_tag() {
        let d = sealed(1);
        for i in 0..d.len() {
            for bit in 0..8 {
                let mut bad = d.clone();
                bad[i] ^= 1 << bit;
                assert!(open(&key(), &mut bad).is_none(), "byte {i} bit {bit}");
            }
        }
    }

    #[test]
    fn replay_window_accepts_each_counter_once() {
        let mut w = ReplayWindow::default();
        assert!(!w.is_fresh(0));
        for c in [1, 3, 2, 10, 4, 200, 74, 73] {
            assert!(w.is_fresh(c), "{c}");
            w.record(c);
            assert!(!w.is_fresh(c), "{c} again");
        }
        assert!(!w.is_fresh(72), "older than the window");
        assert!(w.is_fresh(199));
        assert!(!w.is_fresh(200));
        assert!(w.is_fresh(u64::MAX));
    }

    #[test]
    fn frames_over_the_limit_are_not_sealed() {
        let mut out = Vec::new();
        let frame = vec![0u8; MAX_FRAME + 1];
        assert!(seal(&key(), Direction::ToClient, &[0; 16], 1, &frame, &mut out).is_err());
        let frame = vec![0u8; MAX_FRAME];
        assert!(seal(&key(), Direction::ToClient, &[0; 16], 1, &frame, &mut out).is_ok());
        assert_eq!(out.len(), MAX_DATAGRAM);
    }
}
