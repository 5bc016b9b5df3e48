//! Test harness: a real wharf-chatd (TCP and UDP) on 127.0.0.1:0 over a
//! real SQLite file, driven by the real client library, on the shared test
//! kit.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tempfile::TempDir;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use wharf_chat::client::{ChatClient, Event};
use wharf_chatd::server::{ChatConfig, bind, run};
use wharf_core::Password;
use wharf_core::tls::Stream;
use wharf_proto::chat::{ChatMessage, ChatReply, ChatRequest};
use wharf_proto::datagram::{self, Direction, Key, MAX_DATAGRAM, SessionId};
use wharf_proto::{Frame, Outbound};
use wharf_server::listener::Listener;
use wharf_store::Store;
use wharf_store::User;
pub use wharf_testkit::{PW, WAIT, client_tls, connect, postgres, server_tls, tls};

pub struct TestServer {
    pub dir: TempDir,
    pub url: String,
    pub addr: String,
    pub store: Store,
    pub config: ChatConfig,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<()>,
}

pub async fn spawn() -> TestServer {
    spawn_with(ChatConfig::default()).await
}

pub async fn spawn_with(config: ChatConfig) -> TestServer {
    let data = wharf_testkit::Data::new(None);
    start(data.dir, data.url, config).await
}

/// Two chat servers on one fresh PostgreSQL database, as replicas behind a
/// load balancer run. `None` (the test is skipped) without a test cluster;
/// under CI that is an error.
pub async fn spawn_replicas() -> Option<(TestServer, TestServer)> {
    let url = postgres::postgres_or_skip().await?;
    let dir = || tempfile::tempdir().expect("temp dir");
    // Flood control would only slow the tests down.
    let config = ChatConfig {
        flood: wharf_chatd::server::Rate {
            burst: 10_000,
            per_sec: 10_000.0,
        },
        flood_bytes: wharf_chatd::server::Rate {
            burst: u32::MAX,
            per_sec: 1e12,
        },
        ..ChatConfig::default()
    };
    let a = start(dir(), url.clone(), config.clone()).await;
    let b = start(dir(), url, config).await;
    Some((a, b))
}

async fn start(dir: TempDir, url: String, config: ChatConfig) -> TestServer {
    start_on(dir, url, config, "127.0.0.1:0").await
}

async fn start_on(dir: TempDir, url: String, config: ChatConfig, addr: &str) -> TestServer {
    let (store, auth) = wharf_testkit::open(&url).await;
    let (listener, udp) = bind(addr).await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    let cfg = config.clone();
    let task = tokio::spawn(async move {
        let listener = Listener::new(listener, Some(server_tls()));
        run(listener, udp, auth, cfg, token)
            .await
            .expect("chat server");
    });
    TestServer {
        dir,
        url,
        addr,
        store,
        config,
        shutdown,
        task,
    }
}

impl TestServer {
    pub async fn add_user(&self, name: &str, services: &str) -> User {
        let home = self.dir.path().join("homes").join(name);
        wharf_testkit::add_user(&self.store, &home, name, None, services).await
    }

    pub async fn client(&self, name: &str) -> ChatClient {
        ChatClient::connect(&self.addr, client_tls(), name, &Password::new(PW))
            .await
            .expect("connect and log in")
    }

    pub async fn udp_client(&self, name: &str) -> ChatClient {
        ChatClient::connect_udp(&self.addr, client_tls(), name, &Password::new(PW))
            .await
            .expect("connect over UDP")
    }

    /// Stops the server (as SIGTERM would) and starts a new one on the same
    /// database, on a new port.
    pub async fn restart(self) -> TestServer {
        let (dir, url, config) = self.stop_all().await;
        start(dir, url, config).await
    }

    /// Stops the server, and after `down` starts a new one on the same
    /// database and the same port, as an administrator's restart does.
    pub async fn restart_here(self, down: Duration) -> TestServer {
        let addr = self.addr.clone();
        let (dir, url, config) = self.stop_all().await;
        tokio::time::sleep(down).await;
        start_on(dir, url, config, &addr).await
    }

    /// Stops the server (as SIGTERM would).
    pub async fn stop(self) {
        self.stop_all().await;
    }

    /// Stops the server and closes its database; what a new one needs.
    async fn stop_all(self) -> (TempDir, String, ChatConfig) {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("server stops")
            .expect("server task");
        self.store.close().await;
        (self.dir, self.url, self.config)
    }
}

/// The next event, within [`WAIT`].
pub async fn event(client: &mut ChatClient) -> Event {
    tokio::time::timeout(WAIT, client.next_event())
        .await
        .expect("an event in time")
        .expect("an event")
}

/// The next message event, skipping presence notices.
pub async fn message(client: &mut ChatClient) -> ChatMessage {
    loop {
        if let Event::Message(m) = event(client).await {
            return m;
        }
    }
}

/// Asserts nothing arrives for a while.
pub async fn quiet(client: &mut ChatClient, wait: Duration) {
    if let Ok(e) = tokio::time::timeout(wait, client.next_event()).await {
        panic!("expected nothing, got {e:?}");
    }
}

pub type RawConn = wharf_testkit::raw::Raw<ChatReply>;

/// A raw connection logged in as `user`.
pub async fn raw_login(addr: &str, user: &str) -> RawConn {
    wharf_testkit::raw::login(addr, user).await
}

/// [`raw_login`] over a connection made by the caller (from another source
/// address, say).
pub async fn raw_login_on(stream: Stream, user: &str) -> RawConn {
    wharf_testkit::raw::login_on(stream, user).await
}

/// A TLS connection to `addr` with a 4 KiB receive buffer: a client whose
/// reading the server soon waits for.
pub async fn slow_reader(addr: &str) -> Stream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    let stream = socket
        .connect(addr.parse().expect("addr"))
        .await
        .expect("connect");
    client_tls().secure(stream, addr).await.expect("tls")
}

pub async fn raw_send(conn: &mut RawConn, req: ChatRequest) {
    conn.send(Outbound::msg(req)).await.expect("send");
}

pub async fn raw_recv(conn: &mut RawConn) -> Option<ChatReply> {
    match tokio::time::timeout(WAIT, conn.next())
        .await
        .expect("a frame in time")
    {
        Some(Ok(Frame::Header { msg, .. })) => Some(msg),
        _ => None,
    }
}

pub async fn raw_ask(conn: &mut RawConn, req: ChatRequest) -> ChatReply {
    raw_send(conn, req).await;
    raw_recv(conn).await.expect("a reply")
}

/// A UDP session, the hard way: for tests that forge datagrams.
pub struct RawUdp {
    pub socket: UdpSocket,
    pub session: SessionId,
    pub key: Key,
    pub counter: u64,
}

pub async fn raw_udp(addr: &str, user: &str) -> RawUdp {
    let mut conn = raw_login(addr, user).await;
    let ChatReply::UdpSession(grant) = raw_ask(&mut conn, ChatRequest::UdpSession).await else {
        panic!("no UDP session");
    };
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("udp bind");
    socket.connect(addr).await.expect("udp connect");
    let mut u = RawUdp {
        socket,
        session: datagram::session_from_hex(&grant.session).expect("session id"),
        key: Key::from_hex(&grant.key).expect("key"),
        counter: 0,
    };
    assert!(u.ping_ok().await, "the first address is challenged too");
    u
}

impl RawUdp {
    /// A sealed datagram with the next counter.
    pub fn datagram(&mut self, req: &ChatRequest) -> Vec<u8> {
        self.counter += 1;
        let frame = datagram::encode_frame(req).expect("frame");
        let mut out = Vec::new();
        datagram::seal(
            &self.key,
            Direction::ToServer,
            &self.session,
            self.counter,
            &frame,
            &mut out,
        )
        .expect("seal");
        out
    }

    pub async fn send_raw(&self, bytes: &[u8]) {
        self.socket.send(bytes).await.expect("udp send");
    }

    /// The next datagram's bytes within `wait`, or `None`.
    pub async fn recv_bytes(&self, wait: Duration) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        let n = tokio::time::timeout(wait, self.socket.recv(&mut buf))
            .await
            .ok()?
            .ok()?;
        buf.truncate(n);
        Some(buf)
    }

    /// Opens a datagram from the server.
    pub fn open(&self, mut d: Vec<u8>) -> ChatReply {
        datagram::peek(&d, Direction::ToClient).expect("server datagram shape");
        let frame = datagram::open(&self.key, &mut d).expect("server seal");
        datagram::decode_frame(frame).expect("server frame")
    }

    /// The next datagram's message within `wait`, or `None`.
    pub async fn recv(&self, wait: Duration) -> Option<ChatReply> {
        let d = self.recv_bytes(wait).await?;
        Some(self.open(d))
    }

    /// Sends a fresh `ping` and expects `pong`, answering a challenge first
    /// if the server sends one (a new address); returns whether it did.
    pub async fn ping_ok(&mut self) -> bool {
        let d = self.datagram(&ChatRequest::Ping);
        self.send_raw(&d).await;
        let mut challenged = false;
        loop {
            match self.recv(WAIT).await {
                Some(ChatReply::Challenge { token }) if !challenged => {
                    challenged = true;
                    let answer = self.datagram(&ChatRequest::Answer { token });
                    self.send_raw(&answer).await;
                }
                Some(ChatReply::Pong) => return challenged,
                other => panic!("expected pong, got {other:?}"),
            }
        }
    }
}
