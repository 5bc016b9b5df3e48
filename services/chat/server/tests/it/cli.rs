//! The real `wharf-chat` binary against an in-process server.

use crate::common;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use wharf_testkit::cli::{self, finish, run, text};

fn chat(srv: &TestServer, user: &str, args: &[&str]) -> Command {
    let mut cmd = cli::client(cli::bin("wharf-chat"), &srv.addr, user);
    cmd.args(args);
    cmd
}

/// Waits until `users` are all in `room`.
async fn wait_for(srv: &TestServer, room: &str, users: &[&str]) {
    let mut probe = srv.client("probe").await;
    for _ in 0..200 {
        let members = probe.who(room).await.expect("who");
        if users.iter().all(|u| members.users.iter().any(|m| m == u)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{users:?} never joined {room}");
}

#[tokio::test]
async fn send_and_listen_over_tcp_and_udp() {
    let srv = spawn().await;
    for u in ["alice", "bob", "carol", "probe"] {
        srv.add_user(u, "chat").await;
    }
    let tcp_listener = chat(&srv, "bob", &["listen", "--room", "lobby", "--count", "2"])
        .spawn()
        .expect("spawn");
    let udp_listener = chat(
        &srv,
        "carol",
        &["--udp", "listen", "--room", "lobby", "--count", "2"],
    )
    .spawn()
    .expect("spawn");
    wait_for(&srv, "lobby", &["bob", "carol"]).await;
    let out = run(&mut chat(
        &srv,
        "alice",
        &["send", "--room", "lobby", "hello", "world"],
    ))
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(&mut chat(
        &srv,
        "alice",
        &["--udp", "send", "--room", "lobby", "over udp"],
    ))
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let want = "[lobby] alice: hello world\n[lobby] alice: over udp\n";
    for listener in [tcp_listener, udp_listener] {
        let out = finish(listener).await;
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout), want);
    }
}

#[tokio::test]
async fn interactive_mode_reads_a_script_from_stdin() {
    let srv = spawn().await;
    for u in ["alice", "bob"] {
        srv.add_user(u, "chat").await;
    }
    let mut bob = srv.client("bob").await;
    bob.join("lobby").await.expect("join");
    let mut cmd = chat(&srv, "alice", &[]);
    cmd.stdin(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(
            b"/join lobby\nhi all\n/me waves\n/who\n/msg bob psst\n/history 5\n/nonsense\n/quit\n",
        )
        .await
        .expect("script");
    drop(stdin);
    let out = finish(child).await;
    let stdout = text(&out.stdout);
    assert!(stdout.contains("* you joined lobby"), "{stdout}");
    assert!(stdout.contains("* in lobby: alice, bob"), "{stdout}");
    // An action reads as one in the history too.
    assert!(stdout.contains("[lobby] * alice waves"), "{stdout}");
    assert!(!stdout.contains("/me"), "{stdout}");
    assert!(
        text(&out.stderr).contains("unknown command /nonsense"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "a failed line fails the run");
    let m = message(&mut bob).await;
    assert_eq!(
        (m.room.as_deref(), m.text.as_str()),
        (Some("lobby"), "hi all")
    );
    let m = message(&mut bob).await;
    assert_eq!(m.text, "/me waves");
    let m = message(&mut bob).await;
    assert_eq!((m.to.as_deref(), m.text.as_str()), (Some("bob"), "psst"));
}

#[tokio::test]
async fn refusals_exit_non_zero_with_a_reason() {
    let srv = spawn().await;
    srv.add_user("alice", "chat").await;
    srv.add_user("ftponly", "ftp").await;
    let mut cmd = chat(&srv, "alice", &["send", "--room", "lobby", "hi"]);
    cmd.env("WHARF_PASSWORD", "wrong password");
    let out = run(&mut cmd).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("cannot log in"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&mut chat(
        &srv,
        "ftponly",
        &["send", "--room", "lobby", "hi"],
    ))
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("chat"), "{}", text(&out.stderr));
    let out = run(&mut chat(
        &srv,
        "alice",
        &["send", "--room", "bad room", "hi"],
    ))
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("room name"),
        "{}",
        text(&out.stderr)
    );
    // A room nobody is in (a name typed wrong, most likely) is not made
    // by a send: it says so, naming the rooms there are.
    let mut bob = srv.client("alice").await;
    bob.join("lobby").await.expect("join");
    let out = run(&mut chat(&srv, "alice", &["send", "--room", "lobyb", "hi"])).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(
            "nobody is in room lobyb (rooms with people in them: lobby); check the name, or add --create"
        ),
        "{}",
        text(&out.stderr)
    );
    let out = run(&mut chat(
        &srv,
        "alice",
        &["send", "--create", "--room", "lobyb", "hi"],
    ))
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let dead = Command::new(cli::bin("wharf-chat"))
        .args([
            "--server",
            "127.0.0.1:1",
            "--user",
            "alice",
            "send",
            "--room",
            "x",
            "y",
        ])
        .env("WHARF_PASSWORD", PW)
        .output()
        .await
        .expect("run");
    assert_eq!(dead.status.code(), Some(1));
    assert!(
        text(&dead.stderr).contains("is wharf-chatd running"),
        "{}",
        text(&dead.stderr)
    );
}

#[tokio::test]
async fn help_reads_well() {
    for bin in [
        cli::bin("wharf-chat"),
        env!("CARGO_BIN_EXE_wharf-chatd").into(),
    ] {
        let out = Command::new(bin).arg("--help").output().await.expect("run");
        assert!(out.status.success());
        let help = text(&out.stdout);
        assert!(
            help.contains("--database-url") || help.contains("--udp"),
            "{help}"
        );
    }
}

#[tokio::test]
async fn the_daemon_serves_a_given_certificate_over_tcp_and_udp() {
    let srv = spawn().await;
    srv.add_user("alice", "chat").await;
    srv.add_user("bob", "chat").await;
    srv.shutdown.cancel();
    let mut bob = None;
    let (addr, mut daemon) = cli::daemon(env!("CARGO_BIN_EXE_wharf-chatd"), srv.dir.path());
    let mut daemon = daemon
        .args(["--database-url", &srv.url])
        .spawn()
        .expect("wharf-chatd");
    let cert = tls().2.clone();
    let until = tokio::time::Instant::now() + WAIT;
    while bob.is_none() {
        match wharf_chat::client::ChatClient::connect(
            &addr,
            client_tls(),
            "bob",
            &wharf_core::Password::new(PW),
        )
        .await
        {
            Ok(c) => bob = Some(c),
            Err(e) => {
                assert!(tokio::time::Instant::now() < until, "no daemon: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    let mut bob = bob.expect("bob");
    bob.join("lobby").await.expect("join");
    for udp in [false, true] {
        let mut cmd = Command::new(cli::bin("wharf-chat"));
        cmd.args(["--server", &addr, "--user", "alice"])
            .args(if udp { &["--udp"][..] } else { &[][..] })
            .args(["send", "--room", "lobby", "over a given certificate"])
            .env("WHARF_CA", &cert)
            .env("WHARF_PASSWORD", PW)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let out = run(&mut cmd).await;
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(message(&mut bob).await.text, "over a given certificate");
    }
    assert!(!srv.dir.path().join("tls").exists());
    let _ = daemon.kill().await;
}

#[tokio::test]
async fn a_lock_ends_the_interactive_client_while_it_waits_for_a_line() {
    let srv = spawn().await;
    srv.add_user("alice", "chat").await;
    let mut cmd = chat(&srv, "alice", &[]);
    cmd.stdin(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(b"/join lobby\n").await.expect("join");
    let mut probe = {
        srv.add_user("probe", "chat").await;
        srv.client("probe").await
    };
    for _ in 0..200 {
        if probe
            .who("lobby")
            .await
            .expect("who")
            .users
            .iter()
            .any(|u| u == "alice")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    srv.store.set_locked("alice", true).await.expect("lock");
    // Her standard input stays open: the client must not wait for a line.
    let out = finish(child).await;
    drop(stdin);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr).trim(),
        "wharf-chat: the chat session ended: account \"alice\" is locked; ask an administrator to unlock it"
    );
}

#[tokio::test]
async fn passwd_from_a_script_changes_the_password_for_every_service() {
    let srv = spawn().await;
    srv.add_user("alice", "chat").await;
    let mut child = chat(&srv, "alice", &["passwd", "--password-stdin"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(b"battery staple\n").await.expect("write");
    drop(input);
    let out = finish(child).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stderr),
        "password changed for alice; use the new one from the next login on\n"
    );
    let connect = |pw: &'static str| {
        let addr = srv.addr.clone();
        async move {
            wharf_chat::client::ChatClient::connect(
                &addr,
                client_tls(),
                "alice",
                &wharf_core::Password::new(pw),
            )
            .await
        }
    };
    assert!(connect(PW).await.is_err(), "the old password is refused");
    assert!(connect("battery staple").await.is_ok());
    // A weak one is refused, said once, and nothing changes.
    let mut child = chat(&srv, "alice", &["passwd", "--password-stdin"])
        .env("WHARF_PASSWORD", "battery staple")
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(b"short\n").await.expect("write");
    drop(input);
    let out = finish(child).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "wharf-chat: the password was not changed: password refused: it must be at least 8 characters long\n"
    );
    assert!(connect("battery staple").await.is_ok());
}

#[tokio::test]
async fn the_config_file_gives_server_user_and_ca_and_flags_win() {
    let srv = spawn().await;
    srv.add_user("alice", "chat").await;
    srv.add_user("bob", "chat").await;
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "user = \"alice\"\nca = {:?}\n[chat]\nserver = {:?}\n",
            tls().2.display().to_string(),
            srv.addr
        ),
    )
    .expect("config");
    let wharf_chat = |args: &[&str]| {
        let mut cmd = Command::new(cli::bin("wharf-chat"));
        cmd.args(args)
            .env("WHARF_CLIENT_CONFIG", &config)
            .env("WHARF_PASSWORD", PW)
            .env_remove("WHARF_CA")
            .env_remove("WHARF_USER")
            .env_remove("WHARF_CHAT_SERVER")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    };
    let mut listener = srv.client("bob").await;
    listener.join("lobby").await.expect("join");
    // Server, user and CA from the file alone.
    let out = run(&mut wharf_chat(&[
        "send",
        "--room",
        "lobby",
        "from the config",
    ]))
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let m = message(&mut listener).await;
    assert_eq!(
        (m.from.as_str(), m.text.as_str()),
        ("alice", "from the config")
    );
    // A flag wins over the file.
    let out = run(&mut wharf_chat(&[
        "--user", "bob", "send", "--room", "lobby", "flag",
    ]))
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    // A mistake in the file is named, with its line.
    std::fs::write(&config, "user = \"alice\"\n[chat]\nsevrer = \"x:1\"\n").expect("config");
    let out = run(&mut wharf_chat(&["send", "--room", "lobby", "x"])).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        format!(
            "wharf-chat: the client config {} is invalid: line 3: unknown field `sevrer`, expected `server` or `user`; fix or remove that line\n",
            config.display()
        )
    );
}
