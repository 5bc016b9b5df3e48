//! Two chat servers on one PostgreSQL database share one room space: a
//! room with members on both gets every message once, in order, numbered
//! without gaps; presence, `who`, `rooms` and direct messages see both;
//! history survives restarting both. Skipped without a PostgreSQL test
//! cluster (`bash .ci/test` starts one; under CI a missing one is an
//! error).

use crate::common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{TestServer, WAIT, event, message, quiet, spawn_replicas};
use wharf_chat::client::{ChatClient, Event};
use wharf_proto::ErrorCode;
use wharf_proto::chat::{ChatMessage, PresenceChange};

/// The next `n` room messages a client gets.
async fn messages(client: &mut ChatClient, n: usize) -> Vec<ChatMessage> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        got.push(message(client).await);
    }
    got
}

fn seqs(messages: &[ChatMessage]) -> Vec<u64> {
    messages.iter().filter_map(|m| m.seq).collect()
}

/// The next presence notice, skipping messages.
async fn presence(client: &mut ChatClient) -> (String, PresenceChange) {
    loop {
        if let Event::Presence { user, change, .. } = event(client).await {
            return (user, change);
        }
    }
}

async fn users(servers: &[&TestServer], names: &[&str]) {
    for name in names {
        servers[0].add_user(name, "chat").await;
    }
}

#[tokio::test]
async fn a_room_on_two_replicas_gets_every_message_once_in_order() {
    let Some((a, b)) = spawn_replicas().await else {
        return;
    };
    users(&[&a], &["alice", "bob", "carol", "dave", "erin"]).await;
    // Two who say, one on each replica; two who listen, one on each, and
    // one more over UDP on the second.
    let mut alice = a.client("alice").await;
    let mut bob = b.client("bob").await;
    let mut carol = a.client("carol").await;
    let mut dave = b.client("dave").await;
    let mut erin = b.udp_client("erin").await;
    for c in [&mut alice, &mut bob, &mut carol, &mut dave, &mut erin] {
        assert_eq!(c.join("lobby").await.expect("join"), 0);
    }
    const EACH: usize = 60;
    let sayer = |mut c: ChatClient, who: &'static str| {
        tokio::spawn(async move {
            let mut said = Vec::new();
            for i in 0..EACH {
                let s = c.say("lobby", &format!("{who} {i}")).await.expect("say");
                said.push(s.seq.expect("a room number"));
            }
            (c, said)
        })
    };
    let (ta, tb) = (sayer(alice, "alice"), sayer(bob, "bob"));
    let heard_a = messages(&mut carol, 2 * EACH).await;
    let heard_b = messages(&mut dave, 2 * EACH).await;
    let all: Vec<u64> = (1..=2 * EACH as u64).collect();
    assert_eq!(seqs(&heard_a), all, "in order, once, without gaps on A");
    assert_eq!(seqs(&heard_b), all, "the same on B");
    assert_eq!(heard_a, heard_b, "the same messages, ids and times");
    let ids: BTreeSet<u64> = heard_a.iter().map(|m| m.id).collect();
    assert_eq!(ids.len(), 2 * EACH, "every id distinct");
    // Each sayer's own messages came back as `said`, in the room's order
    // with everyone else's.
    let mut sayers = Vec::new();
    for (task, who, other) in [(ta, "alice", "bob"), (tb, "bob", "alice")] {
        let (c, said) = task.await.expect("sayer");
        sayers.push(c);
        let c = sayers.last_mut().expect("a sayer");
        let theirs = messages(c, EACH).await;
        assert!(
            theirs.iter().all(|m| m.from == other),
            "{who} got {other}'s"
        );
        let mut merged: Vec<u64> = seqs(&theirs).into_iter().chain(said).collect();
        assert!(seqs(&theirs).windows(2).all(|w| w[0] < w[1]));
        merged.sort_unstable();
        assert_eq!(merged, all, "{who} saw every number once");
        quiet(c, Duration::from_millis(300)).await;
        // Each message's text names its sayer and its place in their run.
        let mine: Vec<String> = heard_a
            .iter()
            .filter(|m| m.from == who)
            .map(|m| m.text.clone())
            .collect();
        let expected: Vec<String> = (0..EACH).map(|i| format!("{who} {i}")).collect();
        assert_eq!(mine, expected);
    }
    // The member over UDP on B got them too (datagrams may be lost; on
    // loopback they are not), never twice.
    let over_udp = messages(&mut erin, 2 * EACH).await;
    let mut udp_seqs = seqs(&over_udp);
    udp_seqs.sort_unstable();
    assert_eq!(udp_seqs, all);
    // A message too long to announce whole (the text is read back).
    let long = "x\n".repeat(2048);
    let mut carol_says = carol;
    let s = carol_says.say("lobby", &long).await.expect("long say");
    assert_eq!(s.seq, Some(2 * EACH as u64 + 1));
    let m = message(&mut dave).await;
    assert_eq!((m.seq, m.text.len()), (s.seq, long.len()));
    assert_eq!(m.text, long);
    // History on either replica, then after restarting both.
    let h = dave.history("lobby", Some(500)).await.expect("history");
    assert_eq!(seqs(&h), (1..=2 * EACH as u64 + 1).collect::<Vec<_>>());
    drop((carol_says, dave, erin, sayers));
    let (a, b) = (a.restart().await, b.restart().await);
    let mut alice = a.client("alice").await;
    let mut bob = b.client("bob").await;
    let h = bob.history("lobby", Some(500)).await.expect("history");
    assert_eq!(seqs(&h), (1..=2 * EACH as u64 + 1).collect::<Vec<_>>());
    let texts = |m: &[ChatMessage]| m.iter().map(|m| m.text.clone()).collect::<Vec<_>>();
    assert_eq!(texts(&h[..2 * EACH]), texts(&heard_a));
    assert_eq!(
        alice.join("lobby").await.expect("join"),
        2 * EACH as u64 + 1
    );
    bob.join("lobby").await.expect("join");
    let s = alice.say("lobby", "after the restart").await.expect("say");
    assert_eq!(s.seq, Some(2 * EACH as u64 + 2));
    let m = message(&mut bob).await;
    assert_eq!((m.seq, m.text.as_str()), (s.seq, "after the restart"));
}

#[tokio::test]
async fn presence_who_rooms_and_direct_messages_see_both_replicas() {
    let Some((a, b)) = spawn_replicas().await else {
        return;
    };
    users(&[&a], &["alice", "bob", "carol", "dave"]).await;
    let mut alice = a.client("alice").await;
    alice.join("lobby").await.expect("join");
    let mut bob_b = b.client("bob").await;
    bob_b.join("lobby").await.expect("join");
    assert_eq!(
        presence(&mut alice).await,
        ("bob".into(), PresenceChange::Joined)
    );
    for c in [&mut alice, &mut bob_b] {
        let who = c.who("lobby").await.expect("who");
        assert_eq!(who.users, ["alice", "bob"]);
        let (rooms, _) = c.rooms().await.expect("rooms");
        assert_eq!(rooms.len(), 1);
        assert_eq!((rooms[0].name.as_str(), rooms[0].members), ("lobby", 2));
    }
    // Bob's second session, on A: he is there already, nobody is told.
    let mut bob_a = a.client("bob").await;
    bob_a.join("lobby").await.expect("join");
    quiet(&mut alice, Duration::from_millis(400)).await;
    // Direct messages reach every session of the recipient, on both.
    let s = bob_b.dm("alice", "hello from B").await.expect("dm");
    let m = message(&mut alice).await;
    assert_eq!(
        (m.id, m.to.as_deref(), m.text.as_str()),
        (s.id, Some("alice"), "hello from B")
    );
    // ...and the sender's other session (on A) sees what it sent.
    let m = message(&mut bob_a).await;
    assert_eq!((m.id, m.from.as_str()), (s.id, "bob"));
    alice.dm("bob", "hi bob").await.expect("dm");
    for c in [&mut bob_a, &mut bob_b] {
        let m = message(c).await;
        assert_eq!((m.from.as_str(), m.text.as_str()), ("alice", "hi bob"));
    }
    // Someone online on neither cannot be reached.
    let e = alice
        .dm("carol", "anyone?")
        .await
        .expect_err("carol is offline");
    assert_eq!(e.code(), Some(ErrorCode::NotFound));
    let mut carol = b.client("carol").await;
    alice.dm("carol", "there you are").await.expect("dm");
    assert_eq!(message(&mut carol).await.text, "there you are");
    // Bob leaves on B but stays on A: still there.
    bob_b.leave("lobby").await.expect("leave");
    quiet(&mut alice, Duration::from_millis(400)).await;
    bob_a.quit().await.expect("quit");
    assert_eq!(
        presence(&mut alice).await,
        ("bob".into(), PresenceChange::Left)
    );
    let who = alice.who("lobby").await.expect("who");
    assert_eq!(who.users, ["alice"]);
    // A replica that stops takes its users out of every room.
    let mut dave = b.client("dave").await;
    dave.join("lobby").await.expect("join");
    assert_eq!(
        presence(&mut alice).await,
        ("dave".into(), PresenceChange::Joined)
    );
    drop((dave, carol, bob_b));
    b.stop().await;
    let (user, change) = tokio::time::timeout(WAIT, presence(&mut alice))
        .await
        .expect("told in time");
    assert_eq!(user, "dave");
    assert_ne!(change, PresenceChange::Joined);
    assert_eq!(alice.who("lobby").await.expect("who").users, ["alice"]);
    let e = alice.dm("dave", "gone?").await.expect_err("dave is gone");
    assert_eq!(e.code(), Some(ErrorCode::NotFound));
    // A replica that dies without a word (its row last refreshed an hour
    // ago, erin in the room there) is removed by the next heartbeat of the
    // living, and its users leave the rooms.
    let erin = a.add_user("erin", "chat").await;
    a.store
        .chat_replica_beat("ghost", Duration::from_secs(3600))
        .await
        .expect("a ghost's row");
    a.store
        .chat_presence(
            "ghost",
            Some("lobby"),
            erin.id,
            "erin",
            true,
            PresenceChange::Joined,
        )
        .await
        .expect("a ghost's member");
    assert_eq!(
        presence(&mut alice).await,
        ("erin".into(), PresenceChange::Joined)
    );
    // Its last sign of life an hour ago.
    {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&a.url).await.expect("connect");
        sqlx::query("UPDATE chat_replicas SET seen = seen - 3600000 WHERE id = 'ghost'")
            .execute(&mut conn)
            .await
            .expect("an hour ago");
    }
    assert_eq!(
        presence(&mut alice).await,
        ("erin".into(), PresenceChange::Dropped)
    );
    assert_eq!(alice.who("lobby").await.expect("who").users, ["alice"]);
}

#[tokio::test]
async fn messages_said_while_a_replica_lost_its_listener_still_arrive_once() {
    let Some((a, b)) = spawn_replicas().await else {
        return;
    };
    users(&[&a], &["alice", "bob"]).await;
    let mut alice = a.client("alice").await;
    let mut bob = b.client("bob").await;
    alice.join("lobby").await.expect("join");
    bob.join("lobby").await.expect("join");
    // PostgreSQL ends every listening connection (as a restart or a
    // network cut would); messages go on being said meanwhile.
    let mut said = Vec::new();
    for round in 0..3 {
        let ended = common::postgres::end_listeners(&a.url).await;
        assert!(ended >= 1, "no listening connection to end");
        for i in 0..10 {
            let s = alice
                .say("lobby", &format!("round {round} message {i}"))
                .await
                .expect("say");
            said.push(s.seq.expect("number"));
        }
    }
    let got = messages(&mut bob, 30).await;
    assert_eq!(seqs(&got), (1..=30).collect::<Vec<_>>());
    assert_eq!(said, (1..=30).collect::<Vec<_>>());
    quiet(&mut bob, Duration::from_millis(500)).await;
}

#[tokio::test]
async fn a_number_lost_to_the_history_trimmer_is_not_waited_for() {
    use wharf_store::db::ChatRecord;
    use wharf_store::db::HistoryPolicy;
    let Some((a, b)) = spawn_replicas().await else {
        return;
    };
    users(&[&a], &["alice", "bob"]).await;
    let frank = a.add_user("frank", "chat").await;
    let alice_id = a.store.require_user("alice").await.expect("alice").id;
    let mut alice = a.client("alice").await;
    let mut bob = b.client("bob").await;
    alice.join("lobby").await.expect("join");
    bob.join("lobby").await.expect("join");
    // Two messages reach the database unannounced: frank's number 1, said
    // long ago, and alice's number 2; then the history past 90 days is
    // trimmed, and frank's message with it.
    let now = wharf_core::time::now_ms();
    let record = |id: u64, sender_id: i64, seq: u64, body: &str, at: i64| ChatRecord {
        id,
        sender_id,
        room: Some("lobby".into()),
        seq: Some(seq),
        recipient_id: None,
        body: body.into(),
        at,
    };
    a.store
        .record_chat_messages(&[
            record(1_000_000, frank.id, 1, "from frank", now - 100 * 86_400_000),
            record(1_000_001, alice_id, 2, "unannounced", now),
        ])
        .await
        .expect("record");
    let trimmed = a
        .store
        .trim_chat_history(HistoryPolicy {
            before_ms: Some(now - 90 * 86_400_000),
            ..HistoryPolicy::default()
        })
        .await
        .expect("trim");
    assert_eq!(trimmed, 1);
    // Number 3 comes announced; B finds 2 in the database and does not
    // wait for 1, which no longer exists.
    let s = alice.say("lobby", "three").await.expect("say");
    assert_eq!(s.seq, Some(3));
    let got = messages(&mut bob, 2).await;
    assert_eq!(
        got.iter()
            .map(|m| (m.seq, m.text.as_str()))
            .collect::<Vec<_>>(),
        [(Some(2), "unannounced"), (Some(3), "three")]
    );
    let s = alice.say("lobby", "four").await.expect("say");
    let m = message(&mut bob).await;
    assert_eq!((m.seq, m.text.as_str()), (s.seq, "four"));
}

#[tokio::test]
async fn datagrams_sent_back_to_back_are_said_in_the_order_sent() {
    let Some((a, b)) = spawn_replicas().await else {
        return;
    };
    users(&[&a], &["alice", "bob"]).await;
    let mut alice = a.client("alice").await;
    alice.join("lobby").await.expect("join");
    // Bob over UDP on the other replica, sending without waiting for
    // answers: each `say` waits for the database, yet they are said in the
    // order they were sent.
    let mut u = common::raw_udp(&b.addr, "bob").await;
    u.ping_ok().await;
    let join = u.datagram(&wharf_proto::chat::ChatRequest::Join {
        room: "lobby".into(),
    });
    u.send_raw(&join).await;
    let joined = u.recv(WAIT).await;
    assert!(
        matches!(joined, Some(wharf_proto::chat::ChatReply::Joined { .. })),
        "{joined:?}"
    );
    let says: Vec<Vec<u8>> = (0..20)
        .map(|i| {
            u.datagram(&wharf_proto::chat::ChatRequest::Say {
                room: "lobby".into(),
                text: format!("datagram {i}"),
            })
        })
        .collect();
    for d in &says {
        u.send_raw(d).await;
    }
    let got = messages(&mut alice, 20).await;
    let texts: Vec<String> = got.into_iter().map(|m| m.text).collect();
    let sent: Vec<String> = (0..20).map(|i| format!("datagram {i}")).collect();
    assert_eq!(texts, sent);
}
