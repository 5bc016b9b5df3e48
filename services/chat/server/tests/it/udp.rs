//! The UDP port: forged, replayed, garbled and stale datagrams draw no reply
//! and change nothing; sealed datagrams carry no readable text; a sealed
//! datagram from a spoofed address moves nothing and draws at most three
//! times its size; sessions expire.

use crate::common;

use std::time::Duration;

use common::*;
use wharf_chatd::server::ChatConfig;
use wharf_proto::chat::{ChatReply, ChatRequest};
use wharf_proto::datagram::{self, Direction, Key, MAX_DATAGRAM};

const SILENCE: Duration = Duration::from_millis(300);

#[tokio::test]
async fn bad_datagrams_draw_no_reply_and_change_nothing() {
    let srv = spawn().await;
    srv.add_user("alice", "chat").await;
    srv.add_user("bob", "chat").await;
    let mut bob = srv.client("bob").await;
    bob.join("lobby").await.expect("join");
    let mut u = raw_udp(&srv.addr, "alice").await;
    u.ping_ok().await;
    let join = u.datagram(&ChatRequest::Join {
        room: "lobby".into(),
    });
    u.send_raw(&join).await;
    assert!(matches!(u.recv(WAIT).await, Some(ChatReply::Joined { .. })));
    let _ = event(&mut bob).await; // alice joined

    let say = |text: &str| ChatRequest::Say {
        room: "lobby".into(),
        text: text.into(),
    };
    let mut forged: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("one byte", vec![1]),
        ("garbage", b"hello, is this chat?".repeat(10)),
        ("oversized", vec![1; MAX_DATAGRAM + 1]),
        ("http", b"GET / HTTP/1.1\r\n\r\n".to_vec()),
    ];
    // Unknown session, valid shape.
    let frame = datagram::encode_frame(say("spoofed")).expect("frame");
    let mut d = Vec::new();
    datagram::seal(&u.key, Direction::ToServer, &[9; 16], 1, &frame, &mut d).expect("seal");
    forged.push(("unknown session", d));
    // Right session, wrong key.
    let mut d = Vec::new();
    datagram::seal(
        &Key::new([3; 32]),
        Direction::ToServer,
        &u.session,
        100,
        &frame,
        &mut d,
    )
    .expect("seal");
    forged.push(("bad tag", d));
    // A flipped bit in a valid datagram.
    let mut d = u.datagram(&say("tampered"));
    let last = d.len() - 40;
    d[last] ^= 1;
    forged.push(("tampered", d));
    // A reflected datagram: server-to-client direction byte.
    let mut d = u.datagram(&say("reflected"));
    d[0] = Direction::ToClient as u8;
    forged.push(("wrong direction", d));
    // A replay of a datagram the server already took.
    forged.push(("replayed join", join.clone()));
    for (what, bytes) in &forged {
        u.send_raw(bytes).await;
        assert!(u.recv(SILENCE).await.is_none(), "{what}: no reply");
    }
    // A valid say, then its replay: delivered once.
    let d = u.datagram(&say("once"));
    u.send_raw(&d).await;
    assert!(matches!(u.recv(WAIT).await, Some(ChatReply::Said { .. })));
    u.send_raw(&d).await;
    assert!(u.recv(SILENCE).await.is_none(), "replay: no reply");
    assert_eq!(message(&mut bob).await.text, "once");
    quiet(&mut bob, SILENCE).await;
    // Nothing was changed by the rest: the session works, counters go on.
    u.ping_ok().await;
    let history = bob.history("lobby", None).await.expect("history");
    let texts: Vec<&str> = history.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["once"]);
}

#[tokio::test]
async fn a_new_address_moves_the_session_once_it_answers_a_challenge() {
    let srv = spawn().await;
    srv.add_user("alice", "chat").await;
    let mut u = raw_udp(&srv.addr, "alice").await;
    assert!(!u.ping_ok().await, "a known address is not challenged");
    // Same session, new socket (as after a NAT rebinding).
    let moved = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    moved.connect(&srv.addr).await.expect("connect");
    u.socket = moved;
    assert!(u.ping_ok().await, "the new address is challenged");
    assert!(!u.ping_ok().await, "then it is the session's address");
}

#[tokio::test]
async fn a_sealed_datagram_from_a_spoofed_address_moves_nothing_and_draws_little() {
    let srv = spawn().await;
    srv.add_user("alice", "chat").await;
    srv.add_user("bob", "chat").await;
    let mut bob = srv.client("bob").await;
    bob.join("lobby").await.expect("join");
    let mut u = raw_udp(&srv.addr, "alice").await;
    let join = u.datagram(&ChatRequest::Join {
        room: "lobby".into(),
    });
    u.send_raw(&join).await;
    assert!(matches!(u.recv(WAIT).await, Some(ChatReply::Joined { .. })));
    let _ = event(&mut bob).await; // alice joined
    // The victim: another socket, standing for a spoofed source address.
    let victim = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    victim.connect(&srv.addr).await.expect("connect");
    // Valid datagrams (fresh counters, right key) that the victim "sent":
    // a history request (whose answer would be ~200x its size) and a say.
    let mut sent = 0;
    for req in [
        ChatRequest::History {
            room: "lobby".into(),
            limit: Some(50),
        },
        ChatRequest::Say {
            room: "lobby".into(),
            text: "spoofed".into(),
        },
    ] {
        let d = u.datagram(&req);
        sent += d.len();
        victim.send(&d).await.expect("send");
        // Replays of it, from the same address, add no more than their size.
        for _ in 0..3 {
            sent += d.len();
            victim.send(&d).await.expect("send");
        }
    }
    let mut drawn = 0;
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    while let Ok(Ok(n)) = tokio::time::timeout(SILENCE, victim.recv(&mut buf)).await {
        drawn += n;
        let reply = u.open(buf[..n].to_vec());
        assert!(matches!(reply, ChatReply::Challenge { .. }), "{reply:?}");
    }
    assert!(drawn > 0, "the address was challenged");
    assert!(drawn <= 3 * sent, "{drawn} bytes drawn by {sent} sent");
    // Nothing was said, and the session still answers at its own address.
    quiet(&mut bob, SILENCE).await;
    assert!(!u.ping_ok().await, "the session did not move");
    let say = u.datagram(&ChatRequest::Say {
        room: "lobby".into(),
        text: "from alice".into(),
    });
    u.send_raw(&say).await;
    assert!(matches!(u.recv(WAIT).await, Some(ChatReply::Said { .. })));
    assert_eq!(message(&mut bob).await.text, "from alice");
}

#[tokio::test]
async fn datagrams_carry_no_readable_text_either_way() {
    let srv = spawn().await;
    srv.add_user("alice", "chat").await;
    srv.add_user("bob", "chat").await;
    let mut u = raw_udp(&srv.addr, "alice").await;
    let join = u.datagram(&ChatRequest::Join {
        room: "lobby".into(),
    });
    u.send_raw(&join).await;
    assert!(matches!(u.recv(WAIT).await, Some(ChatReply::Joined { .. })));
    let say = u.datagram(&ChatRequest::Say {
        room: "lobby".into(),
        text: "meet at the old mill".into(),
    });
    assert!(!String::from_utf8_lossy(&say).contains("old mill"));
    let mut bob = srv.client("bob").await;
    bob.join("lobby").await.expect("join");
    let _ = u.recv(WAIT).await; // bob joined
    bob.say("lobby", "the password is swordfish")
        .await
        .expect("say");
    let d = u.recv_bytes(WAIT).await.expect("a datagram");
    assert!(
        !String::from_utf8_lossy(&d).contains("swordfish"),
        "a message crossed in clear"
    );
    let ChatReply::Message(m) = u.open(d) else {
        panic!("not a message");
    };
    assert_eq!(m.text, "the password is swordfish");
}

#[tokio::test]
async fn datagrams_over_the_session_rate_are_dropped() {
    let srv = spawn().await;
    srv.add_user("alice", "chat").await;
    let mut u = raw_udp(&srv.addr, "alice").await;
    let burst = srv.config.udp_rate.burst as usize;
    for _ in 0..burst + 50 {
        let d = u.datagram(&ChatRequest::Ping);
        u.send_raw(&d).await;
    }
    let mut pongs = 0;
    while u.recv(SILENCE).await.is_some() {
        pongs += 1;
    }
    // The session's first ping and its answer to the challenge took two.
    assert!(pongs + 2 >= burst && pongs < burst + 50, "{pongs} answered");
}

#[tokio::test]
async fn over_udp_only_authenticated_chat_requests_are_served() {
    let srv = spawn().await;
    srv.add_user("alice", "chat").await;
    let mut u = raw_udp(&srv.addr, "alice").await;
    let d = u.datagram(&ChatRequest::UdpSession);
    u.send_raw(&d).await;
    let reply = u.recv(WAIT).await;
    assert!(
        matches!(&reply, Some(ChatReply::Error(e)) if e.message.contains("over TCP")),
        "{reply:?}"
    );
}

#[tokio::test]
async fn an_expired_session_must_ask_for_a_new_one() {
    let srv = spawn_with(ChatConfig {
        udp_idle: Duration::from_millis(300),
        ..ChatConfig::default()
    })
    .await;
    srv.add_user("alice", "chat").await;
    srv.add_user("bob", "chat").await;
    let mut u = raw_udp(&srv.addr, "alice").await;
    u.ping_ok().await;
    tokio::time::sleep(Duration::from_millis(900)).await;
    let d = u.datagram(&ChatRequest::Ping);
    u.send_raw(&d).await;
    assert!(u.recv(SILENCE).await.is_none(), "expired: no reply");
    let mut fresh = raw_udp(&srv.addr, "alice").await;
    assert!(!fresh.ping_ok().await);

    // The client library renews by itself and rejoins its rooms.
    let mut bob = srv.client("bob").await;
    bob.join("lobby").await.expect("join");
    let mut alice = srv.udp_client("alice").await;
    alice.join("lobby").await.expect("join");
    tokio::time::sleep(Duration::from_millis(900)).await;
    alice
        .say("lobby", "back again")
        .await
        .expect("say after renewal");
    loop {
        if let wharf_chat::client::Event::Message(m) = event(&mut bob).await {
            assert_eq!(m.text, "back again");
            break;
        }
    }
}

#[tokio::test]
async fn udp_clients_are_told_of_a_shutdown_at_once() {
    let srv = spawn().await;
    srv.add_user("bob", "chat").await;
    let mut bob = srv.udp_client("bob").await;
    bob.join("lobby").await.expect("join");
    srv.shutdown.cancel();
    let ended = tokio::time::timeout(WAIT, bob.next_event())
        .await
        .expect("told within the wait, not at the next keepalive");
    let code = ended.err().and_then(|e| e.code());
    assert_eq!(code, Some(wharf_proto::ErrorCode::ShuttingDown));
}

/// Behind a TCP load balancer a replica tells clients its own UDP port
/// (`--udp-public-port`); the client sends its datagrams there, to the
/// host its TCP connection reached. Here a relay on another port stands
/// for that published port.
#[tokio::test]
async fn datagrams_go_to_the_port_the_server_names() {
    use std::sync::Arc;
    let relay = Arc::new(
        tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("relay"),
    );
    let public = relay.local_addr().expect("relay address").port();
    let srv = spawn_with(ChatConfig {
        udp_public_port: Some(public),
        ..ChatConfig::default()
    })
    .await;
    srv.add_user("alice", "chat").await;
    srv.add_user("bob", "chat").await;
    let upstream = Arc::new(
        tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("upstream"),
    );
    upstream.connect(&srv.addr).await.expect("connect");
    let relayed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let client_addr = Arc::new(std::sync::Mutex::new(None));
    {
        let (relay, upstream, relayed, client_addr) = (
            Arc::clone(&relay),
            Arc::clone(&upstream),
            Arc::clone(&relayed),
            Arc::clone(&client_addr),
        );
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            while let Ok((n, from)) = relay.recv_from(&mut buf).await {
                *client_addr.lock().expect("lock") = Some(from);
                relayed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = upstream.send(&buf[..n]).await;
            }
        });
    }
    {
        let (relay, upstream, client_addr) = (
            Arc::clone(&relay),
            Arc::clone(&upstream),
            Arc::clone(&client_addr),
        );
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            while let Ok(n) = upstream.recv(&mut buf).await {
                let to = *client_addr.lock().expect("lock");
                if let Some(to) = to {
                    let _ = relay.send_to(&buf[..n], to).await;
                }
            }
        });
    }
    let mut bob = srv.client("bob").await;
    bob.join("lobby").await.expect("join");
    let mut alice = srv.udp_client("alice").await;
    alice.join("lobby").await.expect("join over UDP");
    alice
        .say("lobby", "through the named port")
        .await
        .expect("say");
    assert_eq!(message(&mut bob).await.text, "through the named port");
    bob.say("lobby", "and back").await.expect("say");
    assert_eq!(message(&mut alice).await.text, "and back");
    assert!(
        relayed.load(std::sync::atomic::Ordering::SeqCst) >= 3,
        "the datagrams did not go through the named port"
    );
}
