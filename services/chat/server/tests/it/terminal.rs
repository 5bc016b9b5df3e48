//! The chat screen: the real `wharf-chat` on a pseudo-terminal (expectrl)
//! against an in-process server, others talking through the client
//! library.

use crate::common;
use wharf_testkit::terminal;

use std::time::Duration;

use common::*;
use terminal::{Terminal, blocking};
use wharf_chat::client::Event;

fn screen(srv: &TestServer, user: &str, home: &std::path::Path) -> Terminal {
    let mut cmd = std::process::Command::new(wharf_testkit::cli::bin("wharf-chat"));
    cmd.args(["--server", &srv.addr, "--user", user])
        .env("HOME", home)
        .env_remove("XDG_DATA_HOME")
        .env("TZ", "UTC")
        .env("WHARF_CA", &tls().2)
        .env("WHARF_PASSWORD", PW);
    Terminal::start(cmd, 100, 30)
}

/// The next message bob gets, skipping presence.
async fn next_text(bob: &mut wharf_chat::client::ChatClient) -> (Option<String>, String) {
    loop {
        if let Event::Message(m) = event(bob).await {
            return (m.room, m.text);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incoming_messages_never_overwrite_the_line_being_typed() {
    let srv = spawn().await;
    srv.add_user("alice", "chat").await;
    srv.add_user("bob", "chat").await;
    let home = srv.dir.path().join("alice-home");
    let mut bob = srv.client("bob").await;
    bob.join("dev").await.expect("bob joins");
    let mut t = screen(&srv, "alice", &home);
    t = blocking(move || {
        t.sees("logged in to");
        t.prompt("> ");
        // IRC's #room is the room.
        t.line("/join #dev");
        t.sees("-- you joined #dev");
        t.prompt("#dev> ");
        t.keys("half typ");
        t
    })
    .await;
    // Joined, then half a line typed: bob talks meanwhile.
    loop {
        if let Event::Presence { user, .. } = event(&mut bob).await
            && user == "alice"
        {
            break;
        }
    }
    bob.say("dev", "hi from bob").await.expect("bob says");
    t = blocking(move || {
        // Above the line, with the time; then the line, as it was.
        t.sees_pattern(r"\d\d:\d\d #dev <bob> hi from bob\r?\n");
        t.sees("#dev> half typ");
        t.line("ed");
        t.sees_pattern(r"\d\d:\d\d #dev <alice> half typed");
        t.line("/me waves");
        t.sees("#dev * alice waves");
        t
    })
    .await;
    assert_eq!(
        next_text(&mut bob).await,
        (Some("dev".into()), "half typed".into())
    );
    assert_eq!(
        next_text(&mut bob).await,
        (Some("dev".into()), "/me waves".into())
    );
    // /names, /query: lines go to bob as direct messages, /query alone
    // goes back to the room.
    let code = blocking(move || {
        t.line("/names");
        t.sees("-- in #dev: alice, bob");
        t.line("/query bob");
        t.prompt("@bob> ");
        t.line("just you");
        t.sees("-> *bob* just you");
        t.line("/query");
        t.prompt("#dev> ");
        // Tab completes commands and names.
        t.keys("/par\t");
        t.sees("/part ");
        t.keys("#d\t");
        t.sees("/part #dev ");
        t.keys("\r");
        t.sees("-- you left #dev");
        t.line("/quit");
        t.exit_code()
    })
    .await;
    assert_eq!(code, Some(0));
    assert_eq!(next_text(&mut bob).await, (None, "just you".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_connection_comes_back_in_the_same_rooms_with_what_was_missed() {
    let srv = spawn().await;
    srv.add_user("alice", "chat").await;
    srv.add_user("bob", "chat").await;
    let home = srv.dir.path().join("alice-home");
    let mut t = screen(&srv, "alice", &home);
    t = blocking(move || {
        t.prompt("> ");
        t.line("/join dev");
        t.prompt("#dev> ");
        t
    })
    .await;
    // The server restarts on its port; bob talks while alice is away.
    let srv = srv.restart_here(Duration::from_millis(2500)).await;
    let mut bob = srv.client("bob").await;
    bob.join("dev").await.expect("bob joins");
    bob.say("dev", "said while you were away")
        .await
        .expect("bob says");
    let code = blocking(move || {
        t.sees("connection lost: the server is shutting down");
        t.sees("cannot reconnect");
        t.sees("#dev <bob> said while you were away");
        t.sees("-- reconnected; back in #dev");
        // The session goes on where it was.
        t.prompt("#dev> ");
        t.line("glad to be back");
        t.sees("#dev <alice> glad to be back");
        t.line("/quit");
        t.exit_code()
    })
    .await;
    assert_eq!(code, Some(0));
    assert_eq!(
        next_text(&mut bob).await,
        (Some("dev".into()), "glad to be back".into())
    );
}

/// Locked out while on the screen: the client says why as its last line
/// and exits 1, instead of vanishing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_login_after_a_lost_connection_is_said_last() {
    let srv = spawn().await;
    srv.add_user("alice", "chat").await;
    let home = srv.dir.path().join("alice-home");
    let mut t = screen(&srv, "alice", &home);
    t = blocking(move || {
        t.prompt("> ");
        t.line("/join dev");
        t.prompt("#dev> ");
        t
    })
    .await;
    srv.store.set_locked("alice", true).await.expect("lock");
    let code = blocking(move || {
        t.sees("is locked");
        t.sees("wharf-chat: cannot log in to ");
        t.sees(" as alice: account \"alice\" is locked; ask an administrator to unlock it");
        t.exit_code()
    })
    .await;
    assert_eq!(code, Some(1));
}

/// Three lines pasted at once are three messages, not one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pasted_lines_are_said_one_by_one() {
    let srv = spawn().await;
    srv.add_user("alice", "chat").await;
    srv.add_user("bob", "chat").await;
    let mut bob = srv.client("bob").await;
    bob.join("dev").await.expect("bob joins");
    let home = srv.dir.path().join("alice-home");
    let mut t = screen(&srv, "alice", &home);
    t = blocking(move || {
        t.prompt("> ");
        t.line("/join dev");
        t.prompt("#dev> ");
        t.keys("\x1b[200~one\ntwo\nthree\x1b[201~");
        t.line("");
        t.sees("<alice> three");
        t
    })
    .await;
    for want in ["one", "two", "three"] {
        assert_eq!(next_text(&mut bob).await, (Some("dev".into()), want.into()));
    }
    let code = blocking(move || {
        t.line("/quit");
        t.exit_code()
    })
    .await;
    assert_eq!(code, Some(0));
}
