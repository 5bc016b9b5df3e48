//! The client library behind `wharf-chat`, usable on its own.
//!
//! [`ChatClient::connect`] logs in over TCP; [`ChatClient::connect_udp`]
//! logs in over TCP too (the password never goes in a datagram), asks for a
//! UDP session, closes the TCP connection and talks UDP from then on,
//! renewing the session by itself when it expires. Either way, requests are
//! methods, and room traffic comes out of [`ChatClient::next_event`], which
//! also sends the keepalives.

mod udp;

use std::collections::VecDeque;
use std::time::Duration;
use wharf_client::Credential;

use futures_util::{SinkExt, StreamExt};
use tokio::time::Instant;
use wharf_client::session::Session;
use wharf_client::session::open_session;
use wharf_client::tls::ClientTls;
use wharf_client::tls::TlsError;
use wharf_proto::chat::{
    ChatMessage, ChatReply, ChatRequest, PresenceChange, RoomInfo, UdpSessionGrant,
};
use wharf_proto::message::ChangePassword;
use wharf_proto::{ErrorCode, Frame, Outbound, Password, ProtoError};

use udp::UdpLink;

/// How often an idle TCP client pings (the server closes connections
/// silent for its idle timeout, 5 minutes by default).
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// What can go wrong on the client side.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No connection could be made, or the server is not trusted.
    #[error("{0}")]
    Connect(#[source] TlsError),
    /// The server refused the request, or ended the session.
    #[error("{message}")]
    Server {
        /// The server's code.
        code: ErrorCode,
        /// The server's explanation.
        message: String,
    },
    /// The server's bytes are not Wharf frames.
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtoError),
    /// The connection ended.
    #[error("the server closed the connection")]
    Closed,
    /// A reply that does not fit the request.
    #[error("unexpected reply from the server: {0}")]
    Unexpected(String),
    /// The key to log in with could not sign.
    #[error("{0}")]
    Key(#[source] wharf_client::identity::IdentityError),
    /// No answer over UDP.
    #[error("{0}")]
    NoAnswer(String),
    /// A message too long to send.
    #[error("{0}")]
    TooLong(String),
    /// A request this kind of session cannot make.
    #[error("{0}")]
    Unsupported(String),
    /// A local socket error.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        source: std::io::Error,
    },
}

impl ClientError {
    /// The server's error code, if the server refused.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server { code, .. } => Some(*code),
            _ => None,
        }
    }
}

wharf_client::from_session_error!(ClientError);

type Result<T> = std::result::Result<T, ClientError>;

/// Something that happened in a room, or a direct message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A message to a room this client is in, or to its user.
    Message(ChatMessage),
    /// Someone joined or left a room this client is in.
    Presence {
        /// Room name.
        room: String,
        /// Who.
        user: String,
        /// What happened.
        change: PresenceChange,
    },
}

/// The server's answer to `say` or `dm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Said {
    /// The message's id.
    pub id: u64,
    /// Its number in the room, for `say`.
    pub seq: Option<u64>,
    /// When, unix milliseconds.
    pub at: i64,
}

/// Who is in a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Members {
    /// User names, sorted.
    pub users: Vec<String>,
    /// Users left out (over UDP, to fit a datagram).
    pub more: u32,
}

enum Link {
    Tcp(Session<ChatReply>),
    Udp(Box<UdpLink>),
}

/// A logged-in chat client, over TCP or UDP.
pub struct ChatClient {
    link: Link,
    user: String,
    events: VecDeque<Event>,
    last_sent: Instant,
}

impl std::fmt::Debug for ChatClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatClient")
            .field("user", &self.user)
            .field("udp", &matches!(self.link, Link::Udp(_)))
            .finish_non_exhaustive()
    }
}

/// A frame from the server: room traffic, or anything else.
enum Sorted {
    Event(Event),
    Other(ChatReply),
}

fn as_event(reply: ChatReply) -> Sorted {
    match reply {
        ChatReply::Message(m) if !m.replay => Sorted::Event(Event::Message(m)),
        ChatReply::Presence { room, user, change } => {
            Sorted::Event(Event::Presence { room, user, change })
        }
        other => Sorted::Other(other),
    }
}

fn server_error(e: wharf_proto::message::ErrorReply) -> ClientError {
    ClientError::Server {
        code: e.code,
        message: e.message,
    }
}

fn unexpected(reply: &ChatReply) -> ClientError {
    let text = serde_json::to_string(reply).unwrap_or_else(|_| format!("{reply:?}"));
    ClientError::Unexpected(text.chars().take(200).collect())
}

/// Opens a logged-in TCP connection.
async fn tcp_login(
    addr: &str,
    tls: &ClientTls,
    user: &str,
    credential: &Credential,
) -> Result<Session<ChatReply>> {
    let client = format!("wharf-chat/{}", env!("CARGO_PKG_VERSION"));
    let (conn, _) = open_session(addr, "wharf-chatd", &client, tls, user, credential).await?;
    Ok(conn)
}

async fn tcp_send(conn: &mut Session<ChatReply>, req: ChatRequest) -> Result<()> {
    conn.send(Outbound::msg(req)).await.map_err(|e| match e {
        ProtoError::Io(_) => ClientError::Closed,
        other => ClientError::Protocol(other),
    })
}

async fn tcp_recv(conn: &mut Session<ChatReply>) -> Result<ChatReply> {
    match conn.next().await {
        None => Err(ClientError::Closed),
        Some(Err(e)) => Err(e.into()),
        Some(Ok(Frame::Header { msg, .. })) => Ok(msg),
        Some(Ok(Frame::Rejected(e))) => Err(ClientError::Unexpected(e.to_string())),
        Some(Ok(Frame::Body { .. })) => {
            Err(ClientError::Unexpected("a body without a header".into()))
        }
    }
}

/// One request and its reply, before any room traffic can arrive.
async fn tcp_exchange(conn: &mut Session<ChatReply>, req: ChatRequest) -> Result<ChatReply> {
    tcp_send(conn, req).await?;
    match tcp_recv(conn).await? {
        ChatReply::Error(e) => Err(server_error(e)),
        other => Ok(other),
    }
}

/// Asks a logged-in TCP connection for a UDP session, then says goodbye.
async fn udp_grant(
    addr: &str,
    tls: &ClientTls,
    user: &str,
    credential: &Credential,
) -> Result<(UdpSessionGrant, std::net::SocketAddr)> {
    let mut conn = tcp_login(addr, tls, user, credential).await?;
    let server = conn
        .get_ref()
        .tcp()
        .peer_addr()
        .map_err(|source| ClientError::Io {
            context: "cannot read the server's address".into(),
            source,
        })?;
    let grant = match tcp_exchange(&mut conn, ChatRequest::UdpSession).await? {
        ChatReply::UdpSession(grant) => grant,
        other => return Err(unexpected(&other)),
    };
    let _ = tcp_exchange(&mut conn, ChatRequest::Quit).await;
    // Behind a TCP load balancer the replica that granted the session has
    // a UDP port of its own on the same host.
    let server = match grant.udp_port {
        Some(port) => std::net::SocketAddr::new(server.ip(), port),
        None => server,
    };
    Ok((grant, server))
}

impl ChatClient {
    /// Connects over TCP to `addr` (verifying it as `tls` says), says
    /// hello and logs in.
    pub async fn connect(
        addr: &str,
        tls: &ClientTls,
        user: &str,
        credential: impl Into<Credential>,
    ) -> Result<ChatClient> {
        let credential = &credential.into();
        let conn = tcp_login(addr, tls, user, credential).await?;
        Ok(ChatClient {
            link: Link::Tcp(conn),
            user: user.to_owned(),
            events: VecDeque::new(),
            last_sent: Instant::now(),
        })
    }

    /// Logs in over TCP to `addr` (verifying it as `tls` says), takes a
    /// UDP session and continues over UDP to the same address: datagrams
    /// sealed with the session key the TLS connection carried.
    pub async fn connect_udp(
        addr: &str,
        tls: &ClientTls,
        user: &str,
        credential: impl Into<Credential>,
    ) -> Result<ChatClient> {
        let credential = &credential.into();
        let link = UdpLink::open(addr, tls, user, credential).await?;
        Ok(ChatClient {
            link: Link::Udp(Box::new(link)),
            user: user.to_owned(),
            events: VecDeque::new(),
            last_sent: Instant::now(),
        })
    }

    /// The logged-in user.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// True over UDP.
    pub fn is_udp(&self) -> bool {
        matches!(self.link, Link::Udp(_))
    }

    async fn send(&mut self, req: &ChatRequest) -> Result<()> {
        self.last_sent = Instant::now();
        match &mut self.link {
            Link::Tcp(conn) => tcp_send(conn, req.clone()).await,
            Link::Udp(link) => link.send(req).await,
        }
    }

    /// The next frame from the server, keeping the connection alive while
    /// waiting. Cancel-safe.
    async fn recv(&mut self) -> Result<ChatReply> {
        match &mut self.link {
            Link::Tcp(conn) => loop {
                let due = self.last_sent + TCP_KEEPALIVE;
                tokio::select! {
                    frame = tcp_recv(conn) => return frame,
                    _ = tokio::time::sleep_until(due) => {
                        self.last_sent = Instant::now();
                        tcp_send(conn, ChatRequest::Ping).await?;
                    }
                }
            },
            Link::Udp(link) => link.recv().await,
        }
    }

    /// Sends `req` and waits for the reply `want` accepts; room traffic that
    /// arrives meanwhile is kept for [`ChatClient::next_event`]. Over UDP a
    /// lost request or reply is retried `attempts` times.
    async fn request(
        &mut self,
        req: ChatRequest,
        want: fn(&ChatReply) -> bool,
        attempts: u32,
    ) -> Result<ChatReply> {
        if let Link::Udp(link) = &mut self.link {
            link.renew_if_expired().await?;
        }
        let wait = match self.link {
            Link::Tcp(_) => None,
            Link::Udp(_) => Some(udp::REPLY_WAIT),
        };
        for attempt in 1..=attempts.max(1) {
            self.send(&req).await?;
            let deadline = wait.map(|w| Instant::now() + w);
            loop {
                let frame = match deadline {
                    None => self.recv().await?,
                    Some(d) => match tokio::time::timeout_at(d, self.recv()).await {
                        Ok(frame) => frame?,
                        Err(_) => break,
                    },
                };
                match as_event(frame) {
                    Sorted::Event(event) => self.events.push_back(event),
                    Sorted::Other(ChatReply::Error(e)) => return Err(server_error(e)),
                    Sorted::Other(reply) if want(&reply) => return Ok(reply),
                    // Keepalive answers; over UDP, late answers to earlier requests.
                    Sorted::Other(ChatReply::Pong) => {}
                    Sorted::Other(reply) if self.is_udp() => {
                        tracing::debug!(?reply, "ignoring a late reply");
                    }
                    Sorted::Other(reply) => return Err(unexpected(&reply)),
                }
            }
            tracing::debug!(attempt, "no answer over UDP yet");
        }
        Err(ClientError::NoAnswer(
            "no answer from the server over UDP (datagrams lost, or the server is down); try again"
                .into(),
        ))
    }

    /// Changes the user's password from `old` to `new` (over TCP only: the
    /// passwords never go in datagrams).
    pub async fn passwd(&mut self, old: &Password, new: &Password) -> Result<()> {
        if self.is_udp() {
            return Err(ClientError::Unsupported(
                "passwords change over TCP only: run wharf-chat without --udp".into(),
            ));
        }
        let change = ChatRequest::Passwd(ChangePassword {
            old: old.clone(),
            new: new.clone(),
        });
        self.request(change, |r| matches!(r, ChatReply::PasswdOk), 1)
            .await
            .map(|_| ())
    }

    /// Joins `room`; returns the `seq` of its last message so far.
    pub async fn join(&mut self, room: &str) -> Result<u64> {
        let req = ChatRequest::Join { room: room.into() };
        let reply = self
            .request(req, |r| matches!(r, ChatReply::Joined { .. }), 3)
            .await?;
        if let Link::Udp(link) = &mut self.link {
            link.joined(room);
        }
        match reply {
            ChatReply::Joined { seq, .. } => Ok(seq),
            other => Err(unexpected(&other)),
        }
    }

    /// Leaves `room`.
    pub async fn leave(&mut self, room: &str) -> Result<()> {
        let req = ChatRequest::Leave { room: room.into() };
        if let Link::Udp(link) = &mut self.link {
            link.left(room);
        }
        self.request(req, |r| matches!(r, ChatReply::Left { .. }), 1)
            .await
            .map(|_| ())
    }

    fn check_fits(&self, req: &ChatRequest) -> Result<()> {
        if let Link::Udp(_) = self.link {
            udp::check_fits(req)?;
        }
        Ok(())
    }

    /// Says `text` in `room` (which this client must have joined).
    pub async fn say(&mut self, room: &str, text: &str) -> Result<Said> {
        let req = ChatRequest::Say {
            room: room.into(),
            text: text.into(),
        };
        self.check_fits(&req)?;
        let reply = self
            .request(req, |r| matches!(r, ChatReply::Said { .. }), 1)
            .await?;
        said(reply)
    }

    /// Sends `text` to user `to`, on every session they have open.
    pub async fn dm(&mut self, to: &str, text: &str) -> Result<Said> {
        let req = ChatRequest::Dm {
            to: to.into(),
            text: text.into(),
        };
        self.check_fits(&req)?;
        let reply = self
            .request(req, |r| matches!(r, ChatReply::Said { .. }), 1)
            .await?;
        said(reply)
    }

    /// Who is in `room`.
    pub async fn who(&mut self, room: &str) -> Result<Members> {
        let req = ChatRequest::Who { room: room.into() };
        match self
            .request(req, |r| matches!(r, ChatReply::Members { .. }), 3)
            .await?
        {
            ChatReply::Members { users, more, .. } => Ok(Members { users, more }),
            other => Err(unexpected(&other)),
        }
    }

    /// The rooms that have members, and how many were left out.
    pub async fn rooms(&mut self) -> Result<(Vec<RoomInfo>, u32)> {
        match self
            .request(
                ChatRequest::Rooms,
                |r| matches!(r, ChatReply::RoomList { .. }),
                3,
            )
            .await?
        {
            ChatReply::RoomList { rooms, more } => Ok((rooms, more)),
            other => Err(unexpected(&other)),
        }
    }

    /// The last `limit` messages of `room` (server default 50), oldest first.
    /// Over UDP, lost datagrams mean fewer messages, and long texts come cut.
    pub async fn history(&mut self, room: &str, limit: Option<u32>) -> Result<Vec<ChatMessage>> {
        let req = ChatRequest::History {
            room: room.into(),
            limit,
        };
        let count = match self
            .request(req, |r| matches!(r, ChatReply::History { .. }), 1)
            .await?
        {
            ChatReply::History { count, .. } => count as usize,
            other => return Err(unexpected(&other)),
        };
        let mut messages = Vec::with_capacity(count.min(1000));
        while messages.len() < count {
            let frame = match self.link {
                Link::Tcp(_) => self.recv().await?,
                Link::Udp(_) => match tokio::time::timeout(udp::REPLY_WAIT, self.recv()).await {
                    Ok(frame) => frame?,
                    Err(_) => break,
                },
            };
            match frame {
                ChatReply::Message(m) if m.replay => messages.push(m),
                other => match as_event(other) {
                    Sorted::Event(event) => self.events.push_back(event),
                    Sorted::Other(ChatReply::Error(e)) => return Err(server_error(e)),
                    Sorted::Other(_) => {}
                },
            }
        }
        Ok(messages)
    }

    /// Checks the connection.
    pub async fn ping(&mut self) -> Result<()> {
        self.request(ChatRequest::Ping, |r| matches!(r, ChatReply::Pong), 3)
            .await
            .map(|_| ())
    }

    /// The next room message, direct message or presence change. An error
    /// the server pushes (dropped for reading too slowly, shutting down)
    /// ends the session with `Err`. Cancel-safe: use it in `select!`.
    pub async fn next_event(&mut self) -> Result<Event> {
        loop {
            if let Some(event) = self.events.pop_front() {
                return Ok(event);
            }
            let frame = self.recv().await?;
            match as_event(frame) {
                Sorted::Event(event) => return Ok(event),
                Sorted::Other(ChatReply::Error(e)) => return Err(server_error(e)),
                Sorted::Other(_) => {} // pong, late replies
            }
        }
    }

    /// Ends the session politely.
    pub async fn quit(mut self) -> Result<()> {
        match &mut self.link {
            Link::Tcp(_) => {
                self.send(&ChatRequest::Quit).await?;
                loop {
                    match self.recv().await {
                        Ok(ChatReply::Bye) | Err(ClientError::Closed) => return Ok(()),
                        Ok(_) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            // One datagram, no wait: the session expires anyway if it is lost.
            Link::Udp(link) => link.send(&ChatRequest::Quit).await,
        }
    }
}

fn said(reply: ChatReply) -> Result<Said> {
    match reply {
        ChatReply::Said { id, seq, at, .. } => Ok(Said { id, seq, at }),
        other => Err(unexpected(&other)),
    }
}
