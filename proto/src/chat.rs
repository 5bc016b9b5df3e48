//! Chat messages (`wharf-chatd`, TCP and UDP 2122). See PROTOCOL.md, "Chat",
//! for the exchanges, and [`crate::datagram`] for how a UDP datagram wraps a
//! frame.
//!
//! The same requests and events travel over both transports; `hello`,
//! `login` and `udp_session` only over TCP (no password ever rides on a
//! datagram).

use serde::{Deserialize, Serialize};

use crate::message::{
    ChangePassword, ClientHello, ErrorReply, Login, LoginOk, Message, ServerHello,
};

/// Longest message text, in bytes of UTF-8.
pub const MAX_TEXT_BYTES: usize = 4096;

/// Requests of the chat service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ChatRequest {
    /// Opening (TCP only); see [`ClientHello`].
    Hello(ClientHello),
    /// Login (TCP only); see [`Login`].
    Login(Login),
    /// Change the logged-in user's password; see [`ChangePassword`].
    Passwd(ChangePassword),
    /// Join a room (created on first join); answered with `joined`.
    Join {
        /// Room name.
        room: String,
    },
    /// Leave a room; answered with `left`.
    Leave {
        /// Room name.
        room: String,
    },
    /// Say something to a room this session is in; answered with `said`.
    Say {
        /// Room name.
        room: String,
        /// At most [`MAX_TEXT_BYTES`] bytes.
        text: String,
    },
    /// A direct message to a connected user; answered with `said`.
    Dm {
        /// Recipient's user name.
        to: String,
        /// At most [`MAX_TEXT_BYTES`] bytes.
        text: String,
    },
    /// Who is in a room; answered with `members`.
    Who {
        /// Room name.
        room: String,
    },
    /// The rooms that have members; answered with `room_list`.
    Rooms,
    /// The last messages of a room; answered with `history`, then that many
    /// `message` events marked `replay`.
    History {
        /// Room name.
        room: String,
        /// How many (default 50).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },
    /// Ask for a UDP session (TCP only); answered with `udp_session`.
    UdpSession,
    /// Keepalive; answered with `pong`.
    Ping,
    /// End the session (over UDP: end the UDP session); answered with `bye`.
    Quit,
    /// UDP only: the answer to a `challenge`, sent from the address that
    /// was challenged; it moves the session there.
    Answer {
        /// The challenge's token, as it came.
        token: String,
    },
}

impl ChatRequest {
    /// The request as the opening every service shares sees it: `hello`
    /// or `login`, else `None`.
    pub fn into_opening(self) -> Option<crate::message::CommonRequest> {
        match self {
            ChatRequest::Hello(hello) => Some(crate::message::CommonRequest::Hello(hello)),
            ChatRequest::Login(login) => Some(crate::message::CommonRequest::Login(login)),
            _ => None,
        }
    }
}

impl Message for ChatRequest {
    const OPS: &'static [&'static str] = &[
        "hello",
        "login",
        "passwd",
        "join",
        "leave",
        "say",
        "dm",
        "who",
        "rooms",
        "history",
        "udp_session",
        "ping",
        "quit",
        "answer",
    ];
}

/// A chat message as delivered: live, or replayed by `history`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Server-wide message id, increasing; the same message always has the
    /// same id (clients drop duplicates by it).
    pub id: u64,
    /// The room, for a room message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// The recipient, for a direct message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Number of the message in its room: 1, 2, 3... A jump shows a gap
    /// (datagrams lost, or a member dropped for reading too slowly).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// Sender's user name.
    pub from: String,
    /// When the server received it, unix milliseconds.
    pub at: i64,
    /// The text.
    pub text: String,
    /// True when the text was cut to fit a datagram (`history` over TCP
    /// has it whole).
    #[serde(default, skip_serializing_if = "is_false")]
    pub truncated: bool,
    /// True on messages replayed by `history`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub replay: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// What happened to a room member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceChange {
    /// The user's first session joined the room.
    Joined,
    /// The user's last session left the room (or disconnected).
    Left,
    /// The server dropped the user's session for not reading its messages.
    Dropped,
}

/// One room in a `room_list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomInfo {
    /// Room name.
    pub name: String,
    /// Distinct users in it.
    pub members: u32,
}

/// Replies and events of the chat service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ChatReply {
    /// Opening; see [`ServerHello`].
    Hello(ServerHello),
    /// Login accepted; see [`LoginOk`].
    LoginOk(LoginOk),
    /// The password was changed; the next login takes the new one.
    PasswdOk,
    /// A request failed; see [`ErrorReply`].
    Error(ErrorReply),
    /// Answer to `join`.
    Joined {
        /// Room name.
        room: String,
        /// `seq` of the room's last message so far (0 for none): the next
        /// live message is `seq + 1`.
        seq: u64,
    },
    /// Answer to `leave`.
    Left {
        /// Room name.
        room: String,
    },
    /// Answer to `say` and `dm`: the message went out. The saying session
    /// gets this instead of its own `message` event.
    Said {
        /// The message's id.
        id: u64,
        /// Room, for `say`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        room: Option<String>,
        /// Recipient, for `dm`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<String>,
        /// Number in the room, for `say`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
        /// When, unix milliseconds.
        at: i64,
    },
    /// Event: a message to a room this session is in, or to this user.
    Message(ChatMessage),
    /// Event: someone joined or left a room this session is in.
    Presence {
        /// Room name.
        room: String,
        /// Who.
        user: String,
        /// What happened.
        change: PresenceChange,
    },
    /// Answer to `who`: the room's users, sorted.
    Members {
        /// Room name.
        room: String,
        /// User names.
        users: Vec<String>,
        /// Users left out to keep the reply small (over UDP).
        #[serde(default, skip_serializing_if = "is_zero")]
        more: u32,
    },
    /// Answer to `rooms`: rooms with members, sorted by name.
    RoomList {
        /// The rooms.
        rooms: Vec<RoomInfo>,
        /// Rooms left out to keep the reply small.
        #[serde(default, skip_serializing_if = "is_zero")]
        more: u32,
    },
    /// Answer to `history`: `count` `message` events with `replay` follow,
    /// oldest first.
    History {
        /// Room name.
        room: String,
        /// How many messages follow.
        count: u32,
    },
    /// Answer to `udp_session`: the session to use over UDP.
    UdpSession(UdpSessionGrant),
    /// Answer to `ping`.
    Pong,
    /// Answer to `quit`.
    Bye,
    /// UDP only: a sealed datagram came from an address this session has
    /// not used before; the server acts on it once that address sends
    /// `answer` with this token.
    Challenge {
        /// 16 random bytes, as lowercase hex.
        token: String,
    },
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Message for ChatReply {
    const OPS: &'static [&'static str] = &[
        "hello",
        "login_ok",
        "passwd_ok",
        "error",
        "joined",
        "left",
        "said",
        "message",
        "presence",
        "members",
        "room_list",
        "history",
        "udp_session",
        "pong",
        "bye",
        "challenge",
    ];
}

/// A UDP session, granted over a logged-in TCP connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UdpSessionGrant {
    /// Session id, 16 bytes as lowercase hex.
    pub session: String,
    /// ChaCha20-Poly1305 key sealing every datagram, 32 random bytes as
    /// lowercase hex.
    pub key: String,
    /// The session ends after this many seconds without a valid datagram.
    pub idle_timeout_secs: u64,
    /// Send a `ping` at least this often.
    pub keepalive_secs: u64,
    /// Largest datagram accepted, in bytes.
    pub max_datagram: usize,
    /// The port datagrams go to, on the host the TCP connection reached,
    /// when it is not the TCP connection's port (a replica behind a TCP
    /// load balancer: its own UDP port). Absent: the same port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp_port: Option<u16>,
}

// The room naming rule: 1 to 64 of `[A-Za-z0-9_.-]`, not starting with `.`
// or `-`. Names appear in every client's output, so the rule is strict.

/// Longest room name.
pub const MAX_ROOM_LEN: usize = 64;

/// Checks a room name; the error says what is wrong.
pub fn validate_room(name: &str) -> Result<(), String> {
    let shown: String = name.chars().take(MAX_ROOM_LEN).collect();
    if name.is_empty() {
        return Err("a room name cannot be empty".into());
    }
    if name.len() > MAX_ROOM_LEN {
        return Err(format!(
            "room name {shown:?}... is longer than {MAX_ROOM_LEN} characters"
        ));
    }
    if name.starts_with(['.', '-']) {
        return Err(format!(
            "room name {shown:?} must start with a letter, a digit or '_'"
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        return Err(format!(
            "room name {shown:?} may hold only letters, digits, '_', '.' and '-'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod room_tests {
    use super::*;

    #[test]
    fn accepts_the_rule_and_nothing_else() {
        for ok in ["lobby", "Team-4", "a", "_x", "v1.2", &"r".repeat(64)] {
            assert!(validate_room(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".hidden",
            "-x",
            "has space",
            "slash/",
            "ünï",
            "nul\0",
            &"r".repeat(65),
        ] {
            assert!(validate_room(bad).is_err(), "{bad:?}");
        }
    }
}
