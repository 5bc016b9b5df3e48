//! The UDP side of the client: a session granted over TCP, authenticated
//! datagrams, keepalives, and renewal when the session has expired.

use std::net::SocketAddr;
use std::time::Duration;
use wharf_client::Credential;

use tokio::net::UdpSocket;
use tokio::time::Instant;
use wharf_client::tls::ClientTls;
use wharf_proto::chat::{ChatReply, ChatRequest, UdpSessionGrant};
use wharf_proto::datagram::{
    self, Direction, Key, MAX_DATAGRAM, MAX_FRAME, ReplayWindow, SessionId, encode_frame,
};

use super::{ClientError, Result, udp_grant};

/// How long to wait for the answer to a datagram before trying again.
pub(super) const REPLY_WAIT: Duration = Duration::from_secs(1);

pub(super) struct UdpLink {
    socket: UdpSocket,
    server: SocketAddr,
    session: SessionId,
    key: Key,
    sent: u64,
    window: ReplayWindow,
    keepalive: Duration,
    idle: Duration,
    last_sent: Instant,
    last_heard: Instant,
    addr: String,
    tls: ClientTls,
    user: String,
    credential: Credential,
    rooms: Vec<String>,
    buf: Vec<u8>,
    out: Vec<u8>,
}

fn io(context: &str) -> impl FnOnce(std::io::Error) -> ClientError + '_ {
    move |source| ClientError::Io {
        context: context.to_owned(),
        source,
    }
}

/// Refuses a request that would not fit one datagram.
pub(super) fn check_fits(req: &ChatRequest) -> Result<()> {
    let len = encode_frame(req).map(|f| f.len()).unwrap_or(usize::MAX);
    if len > MAX_FRAME {
        return Err(ClientError::TooLong(format!(
            "the message is too long for UDP ({len} bytes framed, at most {MAX_FRAME}); \
             shorten it, or send it over TCP (without --udp), which takes up to 4 KiB"
        )));
    }
    Ok(())
}

impl UdpLink {
    /// Logs in over TCP for a session, then checks that UDP gets through.
    pub(super) async fn open(
        addr: &str,
        tls: &ClientTls,
        user: &str,
        credential: &Credential,
    ) -> Result<UdpLink> {
        let (grant, server) = udp_grant(addr, tls, user, credential).await?;
        let local = if server.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        };
        let socket = UdpSocket::bind(local)
            .await
            .map_err(io("cannot open a UDP socket"))?;
        socket
            .connect(server)
            .await
            .map_err(io("cannot address the server over UDP"))?;
        let now = Instant::now();
        let mut link = UdpLink {
            socket,
            server,
            session: [0; datagram::SESSION_ID_LEN],
            key: Key::new([0; datagram::KEY_LEN]),
            sent: 0,
            window: ReplayWindow::default(),
            keepalive: Duration::from_secs(25),
            idle: Duration::from_secs(120),
            last_sent: now,
            last_heard: now,
            addr: addr.to_owned(),
            tls: tls.clone(),
            user: user.to_owned(),
            credential: credential.clone(),
            rooms: Vec::new(),
            buf: vec![0; MAX_DATAGRAM + 1],
            out: Vec::with_capacity(MAX_DATAGRAM),
        };
        link.adopt(&grant)?;
        link.handshake().await?;
        Ok(link)
    }

    fn adopt(&mut self, grant: &UdpSessionGrant) -> Result<()> {
        let bad = || ClientError::Unexpected("the server sent a malformed UDP session".into());
        self.session = datagram::session_from_hex(&grant.session).ok_or_else(bad)?;
        self.key = Key::from_hex(&grant.key).ok_or_else(bad)?;
        self.sent = 0;
        self.window = ReplayWindow::default();
        self.keepalive = Duration::from_secs(grant.keepalive_secs.max(1));
        self.idle = Duration::from_secs(grant.idle_timeout_secs.max(1));
        self.last_heard = Instant::now();
        Ok(())
    }

    /// A ping answered: the server has our address and UDP gets through.
    async fn handshake(&mut self) -> Result<()> {
        for _ in 0..3 {
            self.send(&ChatRequest::Ping).await?;
            let deadline = Instant::now() + REPLY_WAIT;
            while let Ok(reply) = tokio::time::timeout_at(deadline, self.recv_one()).await {
                if let ChatReply::Pong = reply? {
                    return Ok(());
                }
            }
        }
        Err(ClientError::NoAnswer(format!(
            "no answer over UDP from {}; is UDP port {} reachable (a firewall?)? chat over TCP works without --udp",
            self.server,
            self.server.port()
        )))
    }

    pub(super) async fn send(&mut self, req: &ChatRequest) -> Result<()> {
        let frame = encode_frame(req)?;
        self.sent += 1;
        datagram::seal(
            &self.key,
            Direction::ToServer,
            &self.session,
            self.sent,
            &frame,
            &mut self.out,
        )?;
        self.last_sent = Instant::now();
        self.socket
            .send(&self.out)
            .await
            .map_err(io("cannot send a UDP datagram"))?;
        Ok(())
    }

    /// The next authentic datagram's message; anything else is dropped.
    async fn recv_one(&mut self) -> Result<ChatReply> {
        loop {
            let n = match self.socket.recv(&mut self.buf).await {
                Ok(n) => n,
                // An ICMP error for an earlier datagram (server restarting).
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                Err(e) => return Err(io("cannot receive a UDP datagram")(e)),
            };
            let datagram = &mut self.buf[..n];
            let Some(env) = datagram::peek(datagram, Direction::ToClient) else {
                continue;
            };
            if env.session != self.session || !self.window.is_fresh(env.counter) {
                continue;
            }
            let Some(frame) = datagram::open(&self.key, datagram) else {
                continue;
            };
            let Ok(reply) = datagram::decode_frame::<ChatReply>(frame) else {
                continue;
            };
            self.window.record(env.counter);
            self.last_heard = Instant::now();
            if let ChatReply::Challenge { token } = reply {
                // The server checks that this address is ours before it
                // acts on what we sent from it (a new port after a NAT
                // rebinding, or the session's first datagram).
                self.send(&ChatRequest::Answer { token }).await?;
                continue;
            }
            return Ok(reply);
        }
    }

    /// The next message, sending keepalives while waiting, and taking a new
    /// session when the server has stopped answering for the idle timeout.
    pub(super) async fn recv(&mut self) -> Result<ChatReply> {
        loop {
            let due = self.last_sent + self.keepalive;
            tokio::select! {
                reply = self.recv_one() => return reply,
                _ = tokio::time::sleep_until(due) => {
                    self.renew_if_expired().await?;
                    self.send(&ChatRequest::Ping).await?;
                }
            }
        }
    }

    /// Takes a new session (logging in over TCP again) and rejoins the
    /// rooms, when nothing has been heard for the idle timeout.
    pub(super) async fn renew_if_expired(&mut self) -> Result<()> {
        if self.last_heard.elapsed() < self.idle.mul_f64(0.9) {
            return Ok(());
        }
        tracing::info!("the UDP session expired; taking a new one");
        let (grant, server) =
            udp_grant(&self.addr, &self.tls, &self.user, &self.credential).await?;
        if server != self.server {
            // Another replica granted it (behind a load balancer).
            self.socket
                .connect(server)
                .await
                .map_err(io("cannot address the server over UDP"))?;
            self.server = server;
        }
        self.adopt(&grant)?;
        self.handshake().await?;
        for room in self.rooms.clone() {
            self.rejoin(&room).await?;
        }
        Ok(())
    }

    /// Joins `room` on a fresh session and waits until the server has done it.
    async fn rejoin(&mut self, room: &str) -> Result<()> {
        for _ in 0..3 {
            self.send(&ChatRequest::Join { room: room.into() }).await?;
            let deadline = Instant::now() + REPLY_WAIT;
            while let Ok(reply) = tokio::time::timeout_at(deadline, self.recv_one()).await {
                match reply? {
                    ChatReply::Joined { room: r, .. } if r == room => return Ok(()),
                    ChatReply::Error(e) => {
                        return Err(ClientError::Server {
                            code: e.code,
                            message: format!("cannot rejoin {room}: {}", e.message),
                        });
                    }
                    _ => {}
                }
            }
        }
        Err(ClientError::NoAnswer(format!(
            "no answer over UDP while rejoining {room}; try again"
        )))
    }

    pub(super) fn joined(&mut self, room: &str) {
        if !self.rooms.iter().any(|r| r == room) {
            self.rooms.push(room.to_owned());
        }
    }

    pub(super) fn left(&mut self, room: &str) {
        self.rooms.retain(|r| r != room);
    }
}
