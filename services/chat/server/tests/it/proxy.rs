//! Behind a TCP load balancer that speaks the PROXY protocol (HAProxy's
//! `send-proxy-v2`): the limits per address and the login penalties count
//! each client, not the balancer, so one stranger's wrong passwords lock
//! out no one else; a connection from the balancer without a header is
//! dropped; from anyone else a header is never read.

use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{PW, RawConn, client_tls, raw_ask, raw_login_on, spawn_with};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;
use wharf_chatd::server::ChatConfig;
use wharf_core::Password;
use wharf_proto::chat::{ChatReply, ChatRequest};
use wharf_proto::message::{ClientHello, Login};
use wharf_proto::{ErrorCode, FrameCodec, PROTOCOL_VERSION};
use wharf_server::listener::Limits;
use wharf_server::proxy_protocol::header;

/// A TLS connection as the balancer makes it for `client`: the header, then
/// the client's bytes.
async fn through_balancer(addr: &str, client: &str) -> Option<wharf_core::tls::Stream> {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    let client: SocketAddr = client.parse().expect("client address");
    let server: SocketAddr = addr.parse().expect("server address");
    tcp.write_all(&header(client, server))
        .await
        .expect("header");
    client_tls().secure(tcp, addr).await.ok()
}

/// Hello and one login attempt; the reply.
async fn try_login(conn: &mut RawConn, password: &str) -> ChatReply {
    let hello = ChatRequest::Hello(ClientHello {
        version: PROTOCOL_VERSION,
        client: "test".into(),
    });
    assert!(matches!(raw_ask(conn, hello).await, ChatReply::Hello(_)));
    let login = ChatRequest::Login(Login {
        user: "alice".into(),
        password: Password::new(password),
        key: None,
    });
    raw_ask(conn, login).await
}

fn code(reply: &ChatReply) -> Option<ErrorCode> {
    match reply {
        ChatReply::Error(e) => Some(e.code),
        _ => None,
    }
}

#[tokio::test]
async fn limits_and_penalties_count_the_client_the_balancer_names() {
    let srv = spawn_with(ChatConfig {
        limits: Limits {
            max_per_ip: 2,
            proxy_protocol_from: vec!["127.0.0.1".parse().expect("network")],
            ..Limits::default()
        },
        ..ChatConfig::default()
    })
    .await;
    srv.add_user("alice", "chat").await;
    // A stranger, through the balancer, guesses until refused.
    let mut refused = false;
    for _ in 0..30 {
        let stream = through_balancer(&srv.addr, "203.0.113.7:40000")
            .await
            .expect("TLS through the balancer");
        let mut conn = Framed::new(stream, FrameCodec::new());
        let reply = try_login(&mut conn, "guess").await;
        match code(&reply) {
            Some(ErrorCode::AuthFailed) => {}
            Some(ErrorCode::RateLimited) => {
                refused = true;
                break;
            }
            _ => panic!("unexpected {reply:?}"),
        }
    }
    assert!(refused, "the stranger's address was never refused");
    // Penalised: the stranger's address, never the balancer's.
    let at = wharf_core::time::now_ms() - 120_000;
    let theirs = srv
        .store
        .source_failures_since("203.0.113.7", at)
        .await
        .expect("failures");
    assert!(theirs.len() >= 10, "{}", theirs.len());
    let balancer = srv
        .store
        .source_failures_since("127.0.0.1", at)
        .await
        .expect("failures");
    assert!(balancer.is_empty(), "{balancer:?}");
    // Alice, through the same balancer from her own address, logs in.
    let stream = through_balancer(&srv.addr, "198.51.100.2:50000")
        .await
        .expect("TLS");
    let _alice = raw_login_on(stream, "alice").await;
    // Connections per address: the client's, not the balancer's.
    let second = through_balancer(&srv.addr, "198.51.100.2:50001")
        .await
        .expect("TLS");
    let _second = raw_login_on(second, "alice").await;
    let third = through_balancer(&srv.addr, "198.51.100.2:50002")
        .await
        .expect("TLS");
    let mut third = Framed::new(third, FrameCodec::<ChatReply>::new());
    match common::raw_recv(&mut third).await {
        Some(ChatReply::Error(e)) => {
            assert_eq!(e.code, ErrorCode::Busy);
            assert!(e.message.contains("too many connections from your address"));
        }
        other => panic!("a third connection from one client: {other:?}"),
    }
    let other = through_balancer(&srv.addr, "198.51.100.3:50000")
        .await
        .expect("TLS");
    let _other = raw_login_on(other, "alice").await;
}

#[tokio::test]
async fn the_balancer_must_send_a_header_and_no_one_else_is_believed() {
    // 127.0.0.1 is the balancer.
    let srv = spawn_with(ChatConfig {
        limits: Limits {
            proxy_protocol_from: vec!["127.0.0.1/32".parse().expect("network")],
            login_timeout: Duration::from_secs(2),
            ..Limits::default()
        },
        ..ChatConfig::default()
    })
    .await;
    srv.add_user("alice", "chat").await;
    // From the balancer without a header: the TLS hello is not one, and
    // the connection is dropped.
    let plain = client_tls()
        .connect(&srv.addr, "wharf-chatd")
        .await
        .map(|_| ());
    assert!(plain.is_err(), "a connection without a header was served");
    // Garbage where the header should be.
    let mut tcp = TcpStream::connect(&srv.addr).await.expect("connect");
    tcp.write_all(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), async {
        use tokio::io::AsyncReadExt;
        tcp.read(&mut buf).await
    })
    .await
    .expect("closed in time");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    // Silence from the balancer's address: dropped after the login timeout.
    let mut idle = TcpStream::connect(&srv.addr).await.expect("connect");
    let n = tokio::time::timeout(Duration::from_secs(5), async {
        use tokio::io::AsyncReadExt;
        idle.read(&mut buf).await
    })
    .await
    .expect("closed in time");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    // The server still serves clients through the balancer.
    let stream = through_balancer(&srv.addr, "198.51.100.2:50000")
        .await
        .expect("TLS");
    let _ = raw_login_on(stream, "alice").await;

    // Another server trusts a different balancer (127.0.0.2): a client
    // connecting from 127.0.0.1 cannot claim an address with a header; its
    // header is taken as the start of TLS and fails.
    let other = spawn_with(ChatConfig {
        limits: Limits {
            proxy_protocol_from: vec!["127.0.0.2".parse().expect("network")],
            ..Limits::default()
        },
        ..ChatConfig::default()
    })
    .await;
    other.add_user("alice", "chat").await;
    assert!(
        through_balancer(&other.addr, "203.0.113.9:1")
            .await
            .is_none(),
        "a header from a client was believed"
    );
    let mut c = wharf_chat::client::ChatClient::connect(
        &other.addr,
        client_tls(),
        "alice",
        &Password::new(PW),
    )
    .await
    .expect("a direct client is served as before");
    c.ping().await.expect("ping");
}
