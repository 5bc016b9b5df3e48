//! Rooms, direct messages, history and the rules around them, over both
//! transports.

use crate::common;

use std::time::Duration;

use common::*;
use wharf_chat::client::Event;
use wharf_chatd::server::{ChatConfig, Rate};
use wharf_proto::ErrorCode;
use wharf_proto::chat::{MAX_TEXT_BYTES, PresenceChange};

#[tokio::test]
async fn tcp_and_udp_members_share_one_room() {
    let srv = spawn().await;
    for u in ["alice", "bob", "carol"] {
        srv.add_user(u, "chat").await;
    }
    let mut alice = srv.client("alice").await; // TCP
    let mut bob = srv.udp_client("bob").await; // UDP
    let mut carol = srv.client("carol").await; // TCP
    assert!(bob.is_udp() && !alice.is_udp());
    assert_eq!(alice.join("lobby").await.expect("join"), 0);
    bob.join("lobby").await.expect("join");
    carol.join("lobby").await.expect("join");

    // TCP to TCP and UDP.
    let said = alice.say("lobby", "hello from tcp").await.expect("say");
    assert_eq!(said.seq, Some(1));
    for who in [&mut bob, &mut carol] {
        let m = message(who).await;
        assert_eq!(
            (
                m.room.as_deref(),
                m.from.as_str(),
                m.text.as_str(),
                m.seq,
                m.id
            ),
            (Some("lobby"), "alice", "hello from tcp", Some(1), said.id)
        );
    }
    // UDP to TCP.
    let said = bob
        .say("lobby", "hello from udp")
        .await
        .expect("say over udp");
    assert_eq!(said.seq, Some(2));
    for who in [&mut alice, &mut carol] {
        let m = message(who).await;
        assert_eq!(
            (m.from.as_str(), m.text.as_str(), m.seq),
            ("bob", "hello from udp", Some(2))
        );
    }
    // TCP to UDP, and the sayer hears nothing back but `said`.
    carol.say("lobby", "third").await.expect("say");
    assert_eq!(message(&mut bob).await.text, "third");
    assert_eq!(message(&mut alice).await.text, "third");
    quiet(&mut carol, Duration::from_millis(200)).await;
}

#[tokio::test]
async fn presence_who_and_rooms() {
    let srv = spawn().await;
    for u in ["alice", "bob"] {
        srv.add_user(u, "chat").await;
    }
    let mut alice = srv.client("alice").await;
    alice.join("lobby").await.expect("join");
    alice.join("dev").await.expect("join");
    let mut bob = srv.udp_client("bob").await;
    bob.join("lobby").await.expect("join");
    assert_eq!(
        event(&mut alice).await,
        Event::Presence {
            room: "lobby".into(),
            user: "bob".into(),
            change: PresenceChange::Joined
        }
    );
    // A second session of the same user is no news.
    let mut bob2 = srv.client("bob").await;
    bob2.join("lobby").await.expect("join");
    assert_eq!(
        alice.who("lobby").await.expect("who").users,
        ["alice", "bob"]
    );
    assert_eq!(bob.who("dev").await.expect("who over udp").users, ["alice"]);
    let (rooms, more) = bob2.rooms().await.expect("rooms");
    let rooms: Vec<(String, u32)> = rooms.into_iter().map(|r| (r.name, r.members)).collect();
    assert_eq!(rooms, [("dev".to_owned(), 1), ("lobby".to_owned(), 2)]);
    assert_eq!(more, 0);
    bob2.leave("lobby").await.expect("leave");
    bob.leave("lobby").await.expect("leave");
    assert_eq!(
        event(&mut alice).await,
        Event::Presence {
            room: "lobby".into(),
            user: "bob".into(),
            change: PresenceChange::Left
        }
    );
    let err = bob.leave("lobby").await.expect_err("not in it");
    assert_eq!(err.code(), Some(ErrorCode::NotFound));
    // Nobody in a room: it is gone from the list.
    alice.leave("dev").await.expect("leave");
    let (rooms, _) = alice.rooms().await.expect("rooms");
    assert_eq!(rooms.len(), 1);
}

#[tokio::test]
async fn direct_messages_reach_every_session_of_the_user() {
    let srv = spawn().await;
    for u in ["alice", "bob"] {
        srv.add_user(u, "chat").await;
    }
    let mut alice = srv.client("alice").await;
    let mut alice_phone = srv.udp_client("alice").await;
    let mut bob_tcp = srv.client("bob").await;
    let mut bob_udp = srv.udp_client("bob").await;
    let said = alice.dm("bob", "psst").await.expect("dm");
    assert_eq!(said.seq, None);
    for who in [&mut bob_tcp, &mut bob_udp, &mut alice_phone] {
        let m = message(who).await;
        assert_eq!(
            (
                m.from.as_str(),
                m.to.as_deref(),
                m.text.as_str(),
                m.room,
                m.id
            ),
            ("alice", Some("bob"), "psst", None, said.id)
        );
    }
    quiet(&mut alice, Duration::from_millis(200)).await;
    let err = alice.dm("nobody", "hi").await.expect_err("offline");
    assert_eq!(err.code(), Some(ErrorCode::NotFound));
}

#[tokio::test]
async fn history_survives_a_restart_and_numbering_continues() {
    let srv = spawn().await;
    srv.add_user("alice", "chat").await;
    let mut alice = srv.client("alice").await;
    alice.join("lobby").await.expect("join");
    for i in 1..=3 {
        alice
            .say("lobby", &format!("message {i}"))
            .await
            .expect("say");
    }
    alice.dm("alice", "note to self").await.expect("dm");
    let history = alice.history("lobby", Some(2)).await.expect("history");
    let texts: Vec<&str> = history.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["message 2", "message 3"]);
    alice.quit().await.expect("quit");

    let srv = srv.restart().await;
    let mut alice = srv.client("alice").await;
    let history = alice.history("lobby", None).await.expect("history");
    let got: Vec<(u64, &str, &str)> = history
        .iter()
        .map(|m| (m.seq.unwrap_or(0), m.from.as_str(), m.text.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (1, "alice", "message 1"),
            (2, "alice", "message 2"),
            (3, "alice", "message 3")
        ]
    );
    assert!(history.iter().all(|m| m.replay));
    assert_eq!(alice.join("lobby").await.expect("join"), 3);
    let said = alice.say("lobby", "after restart").await.expect("say");
    assert_eq!(said.seq, Some(4));
    assert!(said.id > history[2].id);
    // Over UDP, history arrives one datagram per message.
    let mut udp = srv.udp_client("alice").await;
    let h = udp.history("lobby", Some(10)).await.expect("udp history");
    assert_eq!(h.len(), 4);
    let report = srv
        .store
        .usage_report(Some("alice"), 0)
        .await
        .expect("usage");
    assert_eq!(report[0].chat_messages, 5, "4 room messages and 1 dm");
}

#[tokio::test]
async fn logins_are_checked() {
    let srv = spawn().await;
    srv.add_user("alice", "chat").await;
    srv.add_user("ftponly", "ftp").await;
    srv.add_user("locked", "chat").await;
    srv.store.set_locked("locked", true).await.expect("lock");
    let pw = wharf_core::Password::new(PW);
    let err = wharf_chat::client::ChatClient::connect(&srv.addr, client_tls(), "ftponly", &pw)
        .await
        .expect_err("no chat right");
    assert_eq!(err.code(), Some(ErrorCode::NotPermitted));
    let err = wharf_chat::client::ChatClient::connect_udp(&srv.addr, client_tls(), "ftponly", &pw)
        .await
        .expect_err("no chat right over udp either");
    assert_eq!(err.code(), Some(ErrorCode::NotPermitted));
    let err = wharf_chat::client::ChatClient::connect(&srv.addr, client_tls(), "locked", &pw)
        .await
        .expect_err("locked");
    assert_eq!(err.code(), Some(ErrorCode::AccountLocked));
    let wrong = wharf_core::Password::new("wrong password");
    let err = wharf_chat::client::ChatClient::connect(&srv.addr, client_tls(), "alice", &wrong)
        .await
        .expect_err("wrong password");
    assert_eq!(err.code(), Some(ErrorCode::AuthFailed));
    // Before login, nothing but hello and login.
    let stream = connect(&srv.addr).await;
    let mut raw: RawConn = tokio_util::codec::Framed::new(stream, wharf_proto::FrameCodec::new());
    let reply = raw_ask(&mut raw, wharf_proto::chat::ChatRequest::Rooms).await;
    assert!(
        matches!(&reply, wharf_proto::chat::ChatReply::Error(e) if e.code == ErrorCode::NotLoggedIn),
        "{reply:?}"
    );
    srv.client("alice")
        .await
        .ping()
        .await
        .expect("still serving");
}

#[tokio::test]
async fn messages_rooms_and_texts_are_checked() {
    let srv = spawn().await;
    srv.add_user("alice", "chat").await;
    let mut alice = srv.client("alice").await;
    let err = alice.say("lobby", "hi").await.expect_err("not joined");
    assert_eq!(err.code(), Some(ErrorCode::NotFound));
    alice.join("lobby").await.expect("join");
    alice
        .say("lobby", &"x".repeat(MAX_TEXT_BYTES))
        .await
        .expect("4 KiB fits");
    let err = alice
        .say("lobby", &"x".repeat(MAX_TEXT_BYTES + 1))
        .await
        .expect_err("4 KiB + 1");
    assert_eq!(err.code(), Some(ErrorCode::MessageTooLarge));
    for bad in ["", "bell\u{7}", "esc\u{1b}[2J"] {
        let err = alice.say("lobby", bad).await.expect_err(bad);
        assert_eq!(err.code(), Some(ErrorCode::BadRequest), "{bad:?}");
    }
    alice
        .say("lobby", "two\nlines\tand a tab")
        .await
        .expect("newline and tab are fine");
    for bad in ["", ".x", "has space", "../etc", &"r".repeat(65)] {
        let err = alice.join(bad).await.expect_err(bad);
        assert_eq!(err.code(), Some(ErrorCode::BadRequest), "{bad:?}");
    }
    // Over UDP, a message that does not fit a datagram is refused locally.
    let mut udp = srv.udp_client("alice").await;
    udp.join("lobby").await.expect("join");
    let err = udp
        .say("lobby", &"y".repeat(2000))
        .await
        .expect_err("too long for udp");
    assert!(err.to_string().contains("too long for UDP"), "{err}");
}

#[tokio::test]
async fn long_messages_reach_udp_members_cut_and_marked() {
    let srv = spawn().await;
    srv.add_user("alice", "chat").await;
    srv.add_user("bob", "chat").await;
    let mut alice = srv.client("alice").await;
    let mut bob = srv.udp_client("bob").await;
    alice.join("lobby").await.expect("join");
    bob.join("lobby").await.expect("join");
    let text: String = "héllo wörld ".repeat(300);
    alice
        .say("lobby", &text[..text.floor_char_boundary(4000)])
        .await
        .expect("say");
    let m = message(&mut bob).await;
    assert!(m.truncated);
    assert!(
        m.text.len() > 800 && text.starts_with(&m.text),
        "{}",
        m.text.len()
    );
}

#[tokio::test]
async fn flood_control_limits_each_user() {
    let srv = spawn_with(ChatConfig {
        flood: Rate {
            burst: 20,
            per_sec: 0.5,
        },
        ..ChatConfig::default()
    })
    .await;
    srv.add_user("alice", "chat").await;
    srv.add_user("bob", "chat").await;
    let mut alice = srv.client("alice").await;
    let mut alice2 = srv.udp_client("alice").await;
    let mut bob = srv.client("bob").await;
    for c in [&mut alice, &mut alice2, &mut bob] {
        c.join("lobby").await.expect("join");
    }
    for i in 0..20 {
        alice
            .say("lobby", &format!("{i}"))
            .await
            .expect("within the burst");
    }
    let err = alice.say("lobby", "one too many").await.expect_err("flood");
    assert_eq!(err.code(), Some(ErrorCode::RateLimited));
    // Per user, whatever the session or transport.
    let err = alice2
        .say("lobby", "other session")
        .await
        .expect_err("flood");
    assert_eq!(err.code(), Some(ErrorCode::RateLimited));
    bob.say("lobby", "others are not affected")
        .await
        .expect("bob");
}

/// Flood control counts text as well as messages: long messages run out
/// of bytes well before the message allowance.
#[tokio::test]
async fn flood_control_counts_bytes_too() {
    let srv = spawn_with(ChatConfig {
        flood_bytes: Rate {
            burst: 3 * MAX_TEXT_BYTES as u32 + 100,
            per_sec: 1.0,
        },
        ..ChatConfig::default()
    })
    .await;
    srv.add_user("alice", "chat").await;
    let mut alice = srv.client("alice").await;
    alice.join("lobby").await.expect("join");
    let long = "x".repeat(MAX_TEXT_BYTES);
    for _ in 0..3 {
        alice.say("lobby", &long).await.expect("within the bytes");
    }
    let err = alice.say("lobby", &long).await.expect_err("bytes");
    assert_eq!(err.code(), Some(ErrorCode::RateLimited));
    assert!(err.to_string().contains("too much text"), "{err}");
    // A short message still fits: bytes were not taken by the refusal.
    alice.say("lobby", "hi").await.expect("short");
}

/// One user cannot take every room: past their own rooms the server says
/// so, while another user still makes rooms; a room that empties frees its
/// maker's place.
#[tokio::test]
async fn a_user_makes_a_bounded_number_of_rooms_and_others_still_can() {
    let srv = spawn_with(ChatConfig {
        max_rooms_per_user: 5,
        ..ChatConfig::default()
    })
    .await;
    srv.add_user("alice", "chat").await;
    srv.add_user("bob", "chat").await;
    let mut alice = srv.client("alice").await;
    let mut alice2 = srv.client("alice").await;
    for i in 0..3 {
        alice.join(&format!("a{i}")).await.expect("join");
    }
    for i in 3..5 {
        alice2.join(&format!("a{i}")).await.expect("join");
    }
    // Over all her sessions.
    let err = alice2.join("a5").await.expect_err("past her rooms");
    assert_eq!(err.code(), Some(ErrorCode::Busy));
    assert!(err.to_string().contains("you have made 5 rooms"), "{err}");
    let mut bob = srv.client("bob").await;
    bob.join("b0").await.expect("bob still makes rooms");
    // Joining a room that exists is not making one.
    bob.join("a0").await.expect("bob joins alice's room");
    alice.join("b0").await.expect("alice joins bob's room");
    // A room she made and left goes once empty: her place comes back.
    alice2.leave("a4").await.expect("leave");
    alice.join("a5").await.expect("a place again");
}

/// Rooms made from one address are bounded whoever logs in there.
#[tokio::test]
async fn an_address_makes_a_bounded_number_of_rooms() {
    let srv = spawn_with(ChatConfig {
        max_rooms_per_address: 3,
        ..ChatConfig::default()
    })
    .await;
    srv.add_user("alice", "chat").await;
    srv.add_user("bob", "chat").await;
    let mut alice = srv.client("alice").await;
    let mut bob = srv.client("bob").await;
    alice.join("r1").await.expect("join");
    alice.join("r2").await.expect("join");
    bob.join("r3").await.expect("join");
    let err = bob.join("r4").await.expect_err("past the address's rooms");
    assert_eq!(err.code(), Some(ErrorCode::Busy));
    assert!(err.to_string().contains("from your address"), "{err}");
}

/// History is kept per room by count and by age: the trimmer removes the
/// rest in the background while the room goes on.
#[tokio::test]
async fn history_is_trimmed_by_count_and_age() {
    let srv = spawn_with(ChatConfig {
        history_per_room: Some(5),
        history_days: Some(30),
        history_trim_every: Duration::from_millis(50),
        ..ChatConfig::default()
    })
    .await;
    let alice_user = srv.add_user("alice", "chat").await;
    // Old messages in a quiet room, written as they would have been.
    let long_ago = wharf_core::time::now_ms() - 31 * 86_400_000;
    let old: Vec<_> = (1..=3u64)
        .map(|i| wharf_store::db::ChatRecord {
            id: 1_000_000 + i,
            sender_id: alice_user.id,
            room: Some("attic".into()),
            seq: Some(i),
            recipient_id: None,
            body: format!("old {i}"),
            at: long_ago,
        })
        .collect();
    srv.store.record_chat_messages(&old).await.expect("old");
    let mut alice = srv.client("alice").await;
    alice.join("lobby").await.expect("join");
    for i in 0..8 {
        alice.say("lobby", &format!("m{i}")).await.expect("say");
    }
    alice.join("attic").await.expect("join");
    let mut kept = Vec::new();
    for _ in 0..200 {
        kept = alice.history("lobby", Some(100)).await.expect("history");
        let attic = alice.history("attic", Some(100)).await.expect("history");
        if kept.len() == 5 && attic.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let texts: Vec<_> = kept.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["m3", "m4", "m5", "m6", "m7"]);
    assert!(
        alice
            .history("attic", Some(100))
            .await
            .expect("history")
            .is_empty(),
        "messages past 30 days stay"
    );
    // The room goes on, numbered on.
    let said = alice.say("lobby", "m8").await.expect("say");
    assert_eq!(said.seq, Some(9));
}

/// One user's share of the history is bounded in bytes: their oldest go,
/// another user's stay.
#[tokio::test]
async fn a_users_share_of_the_history_is_bounded() {
    let srv = spawn_with(ChatConfig {
        history_per_user_bytes: Some(10 * 1000),
        history_trim_every: Duration::from_millis(50),
        ..ChatConfig::default()
    })
    .await;
    srv.add_user("alice", "chat").await;
    srv.add_user("bob", "chat").await;
    let mut alice = srv.client("alice").await;
    let mut bob = srv.client("bob").await;
    alice.join("lobby").await.expect("join");
    bob.join("lobby").await.expect("join");
    bob.say("lobby", "bob's").await.expect("say");
    for i in 0..15 {
        alice
            .say("lobby", &format!("{i:02}{}", "a".repeat(998)))
            .await
            .expect("say");
    }
    let mut kept = Vec::new();
    for _ in 0..200 {
        kept = bob.history("lobby", Some(100)).await.expect("history");
        if kept.len() == 11 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let firsts: Vec<_> = kept.iter().map(|m| &m.text[..5]).collect();
    assert_eq!(
        firsts,
        [
            "bob's", "05aaa", "06aaa", "07aaa", "08aaa", "09aaa", "10aaa", "11aaa", "12aaa",
            "13aaa", "14aaa"
        ]
    );
}

#[tokio::test]
async fn a_member_that_never_reads_is_dropped_and_the_room_goes_on() {
    let srv = spawn_with(ChatConfig {
        member_queue: 8,
        flood: Rate {
            burst: 100_000,
            per_sec: 100_000.0,
        },
        flood_bytes: Rate {
            burst: u32::MAX,
            per_sec: 1e12,
        },
        ..ChatConfig::default()
    })
    .await;
    for u in ["alice", "bob", "mallory"] {
        srv.add_user(u, "chat").await;
    }
    // mallory: a small receive buffer, joins, then never reads again.
    let mut mallory = raw_login_on(slow_reader(&srv.addr).await, "mallory").await;
    let reply = raw_ask(
        &mut mallory,
        wharf_proto::chat::ChatRequest::Join {
            room: "lobby".into(),
        },
    )
    .await;
    assert!(matches!(reply, wharf_proto::chat::ChatReply::Joined { .. }));

    let mut bob = srv.client("bob").await;
    bob.join("lobby").await.expect("join");
    let mut alice = srv.client("alice").await;
    alice.join("lobby").await.expect("join");
    let listener = tokio::spawn(async move {
        let (mut got, mut dropped) = (0u64, false);
        while got < 2000 {
            match event(&mut bob).await {
                Event::Message(m) => {
                    got += 1;
                    assert_eq!(m.seq, Some(got), "bob misses nothing");
                }
                Event::Presence { user, change, .. } => {
                    if user == "mallory" && change == PresenceChange::Dropped {
                        dropped = true;
                    }
                }
            }
        }
        (got, dropped, bob)
    });
    let text = "z".repeat(4000);
    for _ in 0..2000 {
        alice
            .say("lobby", &text)
            .await
            .expect("the room keeps going");
    }
    let (got, dropped, _bob) = listener.await.expect("listener");
    assert_eq!(got, 2000);
    assert!(dropped, "bob was told mallory was dropped");
    assert_eq!(
        alice.who("lobby").await.expect("who").users,
        ["alice", "bob"]
    );
    // mallory's connection ends: whatever was buffered, then the close.
    let ended = tokio::time::timeout(WAIT, async {
        use futures_util::StreamExt;
        while let Some(Ok(_)) = mallory.next().await {}
    })
    .await;
    assert!(ended.is_ok(), "the slow connection was closed");
}

#[tokio::test]
async fn garbage_on_tcp_gets_an_error_and_others_are_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let srv = spawn().await;
    srv.add_user("alice", "chat").await;
    let mut alice = srv.client("alice").await;
    alice.join("lobby").await.expect("join");
    for garbage in [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        vec![0, 0, 0, 5, b'{', b'"', b'o', 0xff, b'}'],
        vec![0xff; 16],
    ] {
        let mut s = connect(&srv.addr).await;
        s.write_all(&garbage).await.expect("write");
        s.flush().await.expect("flush");
        let mut reply = Vec::new();
        // The close may come without TLS's close_notify: what came is kept.
        let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut reply))
            .await
            .expect("closed in time");
        let text = String::from_utf8_lossy(&reply);
        assert!(text.contains("\"op\":\"error\""), "{text}");
    }
    alice
        .say("lobby", "still here")
        .await
        .expect("still serving");
}

#[tokio::test]
async fn a_connection_that_never_logs_in_is_closed() {
    use tokio::io::AsyncReadExt;
    let srv = spawn_with(ChatConfig {
        limits: wharf_server::listener::Limits {
            login_timeout: Duration::from_millis(200),
            ..wharf_server::listener::Limits::default()
        },
        ..ChatConfig::default()
    })
    .await;
    let mut s = connect(&srv.addr).await;
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut reply))
        .await
        .expect("closed in time");
    let text = String::from_utf8_lossy(&reply);
    assert!(
        text.contains("\"code\":\"timeout\"") && text.contains("no login within"),
        "{text}"
    );
}

#[tokio::test]
async fn a_shutdown_is_called_a_shutdown_however_full_the_room() {
    // Small queues and a full room: were every member's leaving announced
    // to every other, the notices would overflow the queues and members
    // would be told they read too slowly.
    let srv = spawn_with(ChatConfig {
        member_queue: 4,
        ..ChatConfig::default()
    })
    .await;
    let mut clients = Vec::new();
    for i in 0..40 {
        let name = format!("user{i}");
        srv.add_user(&name, "chat").await;
        let mut c = srv.client(&name).await;
        c.join("lobby").await.expect("join");
        clients.push(c);
    }
    // Each client reads on, and goes away the moment its session ends, as
    // wharf-chat does.
    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                let mut notices = Vec::new();
                loop {
                    match c.next_event().await {
                        Ok(Event::Presence { user, change, .. })
                            if change != PresenceChange::Joined =>
                        {
                            notices.push((user, change));
                        }
                        Ok(_) => continue,
                        Err(e) => return (e.code(), notices),
                    }
                }
            })
        })
        .collect();
    srv.shutdown.cancel();
    for reader in readers {
        let (code, notices) = tokio::time::timeout(WAIT, reader)
            .await
            .expect("the session ends")
            .expect("reader");
        assert_eq!(code, Some(ErrorCode::ShuttingDown));
        // No one left, and no one was dropped for reading slowly: the
        // server stopped, and says only that.
        assert_eq!(notices, [], "presence notices at a shutdown");
    }
}

#[tokio::test]
async fn a_member_who_only_listens_times_out_however_busy_the_room() {
    // The idle timeout counts from the last frame the client sent, not from
    // the last one the server wrote to it.
    let srv = spawn_with(ChatConfig {
        limits: wharf_server::listener::Limits {
            idle_timeout: Duration::from_millis(700),
            ..wharf_server::listener::Limits::default()
        },
        ..ChatConfig::default()
    })
    .await;
    for u in ["alice", "bob"] {
        srv.add_user(u, "chat").await;
    }
    let mut bob = raw_login(&srv.addr, "bob").await;
    let reply = raw_ask(
        &mut bob,
        wharf_proto::chat::ChatRequest::Join {
            room: "lobby".into(),
        },
    )
    .await;
    assert!(matches!(reply, wharf_proto::chat::ChatReply::Joined { .. }));
    let mut alice = raw_login(&srv.addr, "alice").await;
    let talker = tokio::spawn(async move {
        raw_ask(
            &mut alice,
            wharf_proto::chat::ChatRequest::Join {
                room: "lobby".into(),
            },
        )
        .await;
        // Talks for far longer than the timeout, four times a second (within
        // the flood limit).
        for i in 0..16 {
            raw_send(
                &mut alice,
                wharf_proto::chat::ChatRequest::Say {
                    room: "lobby".into(),
                    text: format!("message {i}"),
                },
            )
            .await;
            // Her reply, past the notice of bob's leaving.
            loop {
                match raw_recv(&mut alice).await {
                    Some(wharf_proto::chat::ChatReply::Said { .. }) => break,
                    Some(wharf_proto::chat::ChatReply::Presence { .. }) => {}
                    other => panic!("alice is served: {other:?}"),
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    let mut messages = 0;
    let ended = loop {
        match raw_recv(&mut bob).await {
            Some(wharf_proto::chat::ChatReply::Message(_)) => messages += 1,
            Some(wharf_proto::chat::ChatReply::Presence { .. }) => {}
            Some(wharf_proto::chat::ChatReply::Error(e)) => break e,
            other => panic!("expected messages, then the timeout, got {other:?}"),
        }
    };
    assert_eq!(ended.code, ErrorCode::Timeout, "{ended:?}");
    assert!(
        !talker.is_finished(),
        "bob timed out while the room was still busy"
    );
    assert!(messages > 0, "bob heard the room before timing out");
    talker.await.expect("alice talked on after bob went");
}

#[tokio::test]
async fn a_client_that_sends_without_reading_is_held_back_and_loses_nothing() {
    use futures_util::{SinkExt, StreamExt};
    let srv = spawn_with(ChatConfig {
        member_queue: 4,
        ..ChatConfig::default()
    })
    .await;
    for u in ["alice", "carol"] {
        srv.add_user(u, "chat").await;
    }
    // carol: a small receive buffer, and 20,000 pings sent before she reads
    // a single reply.
    let carol = raw_login_on(slow_reader(&srv.addr).await, "carol").await;
    let (mut to_server, mut from_server) = carol.split();
    const PINGS: usize = 20_000;
    let sender = tokio::spawn(async move {
        for _ in 0..PINGS {
            to_server
                .feed(wharf_proto::Outbound::msg(
                    wharf_proto::chat::ChatRequest::Ping,
                ))
                .await
                .expect("send");
        }
        to_server.flush().await.expect("flush");
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Meanwhile the server serves others.
    let mut alice = srv.client("alice").await;
    alice.join("lobby").await.expect("alice is served");
    // Every reply comes, in order, once carol reads.
    let mut pongs = 0;
    while pongs < PINGS {
        let frame = tokio::time::timeout(WAIT, from_server.next())
            .await
            .expect("a reply in time");
        match frame {
            Some(Ok(wharf_proto::Frame::Header {
                msg: wharf_proto::chat::ChatReply::Pong,
                ..
            })) => pongs += 1,
            other => panic!("expected pong {pongs}, got {other:?}"),
        }
    }
    tokio::time::timeout(WAIT, sender)
        .await
        .expect("every ping went out")
        .expect("sender");
}
