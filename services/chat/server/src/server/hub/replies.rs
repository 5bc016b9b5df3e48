//! What the hub answers with, whichever space the rooms live in: the
//! refusals, the checks of a room name and a text, the replies that list
//! members and rooms within a budget, and a reply encoded once for every
//! transport ([`Outgoing`]).

use bytes::Bytes;
use wharf_proto::ErrorCode;
use wharf_proto::chat::{ChatMessage, ChatReply, MAX_TEXT_BYTES, RoomInfo, validate_room};
use wharf_proto::datagram::{MAX_FRAME, encode_frame};
use wharf_server::Refusal;
use wharf_store::db::HistoryRow;

/// What the hub answers a request with: a reply, or a refusal.
pub(crate) type Reply = Result<ChatReply, Refusal>;

pub(super) fn refuse(code: ErrorCode, message: impl Into<String>) -> Refusal {
    Refusal::new(code, message)
}

/// The database failed: the details to the log, to the client what it may
/// know.
pub(super) fn database_refusal(e: &wharf_store::Error, what: &str) -> Refusal {
    tracing::error!(error = %e, "cannot {what}");
    refuse(e.code(), e.client_message())
}

/// A room message read from the database (`replay` for `history`).
pub(super) fn room_message(room: &str, r: HistoryRow, replay: bool) -> ChatMessage {
    ChatMessage {
        id: r.id,
        room: Some(room.to_owned()),
        to: None,
        seq: Some(r.seq),
        from: r.sender,
        at: r.at,
        text: r.body,
        truncated: false,
        replay,
    }
}

/// The sender's answer for `message`.
pub(super) fn said_for(m: &ChatMessage) -> ChatReply {
    ChatReply::Said {
        id: m.id,
        room: m.room.clone(),
        to: m.to.clone(),
        seq: m.seq,
        at: m.at,
    }
}

pub(super) fn gone() -> Refusal {
    refuse(
        ErrorCode::NotLoggedIn,
        "this session has ended; log in again",
    )
}

/// A frame on its way to many endpoints: encoded once for TCP, and once
/// more, lazily and cut to fit, for UDP.
pub(super) struct Outgoing<'a> {
    reply: &'a ChatReply,
    /// The frame for TCP members, shared by their queues.
    pub(super) tcp: std::sync::Arc<Bytes>,
    udp: Option<Option<Bytes>>,
}

impl<'a> Outgoing<'a> {
    pub(super) fn new(reply: &'a ChatReply) -> Result<Self, Refusal> {
        let tcp = encode_frame(reply)
            .map_err(|e| refuse(ErrorCode::Internal, format!("cannot encode a frame: {e}")))?
            .freeze();
        let tcp = std::sync::Arc::new(tcp);
        Ok(Outgoing {
            reply,
            tcp,
            udp: None,
        })
    }

    pub(super) fn udp(&mut self) -> Option<Bytes> {
        self.udp
            .get_or_insert_with(|| datagram_frame(self.reply))
            .clone()
    }
}

/// Encodes `reply` to fit one datagram: a message's text is cut (at a
/// character boundary, marked `truncated`) when the whole would not fit.
pub(crate) fn datagram_frame(reply: &ChatReply) -> Option<Bytes> {
    let frame = encode_frame(reply).ok()?;
    if frame.len() <= MAX_FRAME {
        return Some(frame.freeze());
    }
    let ChatReply::Message(m) = reply else {
        return None;
    };
    let mut cut = m.clone();
    cut.truncated = true;
    let mut over = frame.len() - MAX_FRAME;
    for _ in 0..8 {
        let mut keep = cut.text.len().saturating_sub(over + 8);
        while !cut.text.is_char_boundary(keep) {
            keep -= 1;
        }
        cut.text.truncate(keep);
        let frame = encode_frame(ChatReply::Message(cut.clone())).ok()?;
        if frame.len() <= MAX_FRAME {
            return Some(frame.freeze());
        }
        over = frame.len() - MAX_FRAME;
    }
    None
}

/// Checks a message text: not empty, at most 4 KiB, no control characters
/// but newline and tab (they would rewrite other people's terminals).
pub(crate) fn check_text(text: &str) -> Result<(), Refusal> {
    if text.is_empty() {
        return Err(refuse(ErrorCode::BadRequest, "the message is empty"));
    }
    if text.len() > MAX_TEXT_BYTES {
        return Err(refuse(
            ErrorCode::MessageTooLarge,
            format!(
                "the message is {} bytes; at most {MAX_TEXT_BYTES} bytes are allowed, so split it",
                text.len()
            ),
        ));
    }
    if text
        .chars()
        .any(|c| (c.is_control() && c != '\n' && c != '\t') || c == '\u{7f}')
    {
        return Err(refuse(
            ErrorCode::BadRequest,
            "the message holds control characters; only newline and tab are allowed",
        ));
    }
    Ok(())
}

pub(super) fn check_room(room: &str) -> Result<(), Refusal> {
    validate_room(room).map_err(|e| refuse(ErrorCode::BadRequest, e))
}

pub(super) fn members_reply(room: &str, mut users: Vec<String>, budget: usize) -> ChatReply {
    users.sort();
    let (users, more) = fit(users, budget, |u| u.len() + 3);
    ChatReply::Members {
        room: room.to_owned(),
        users,
        more,
    }
}

pub(super) fn room_list_reply(mut rooms: Vec<RoomInfo>, budget: usize) -> ChatReply {
    rooms.sort_by(|a, b| a.name.cmp(&b.name));
    let (rooms, more) = fit(rooms, budget, |r| r.name.len() + 32);
    ChatReply::RoomList { rooms, more }
}

/// Keeps the leading items whose `size` adds up to at most `budget`;
/// returns them and how many were left out.
pub(super) fn fit<T>(items: Vec<T>, budget: usize, size: impl Fn(&T) -> usize) -> (Vec<T>, u32) {
    let mut used = 0;
    let mut keep = 0;
    for item in &items {
        used += size(item);
        if used > budget {
            break;
        }
        keep += 1;
    }
    let more = u32::try_from(items.len() - keep).unwrap_or(u32::MAX);
    let mut items = items;
    items.truncate(keep);
    (items, more)
}

/// Drops the TCP sessions whose queues these are.
pub(super) fn kill(kills: Vec<super::super::outbox::Outbox>) {
    for k in kills {
        k.drop_session();
    }
}
