//! wharf-execd end to end: a real server on 127.0.0.1:0 and a real SQLite
//! file, driven by the client library and by raw frames.

use crate::common;

use std::time::Duration;

use common::*;
use tokio::io::AsyncWriteExt;
use wharf_core::Service;
use wharf_exec::client::Streams;
use wharf_execd::server::{ExecConfig, ResourceLimits};
use wharf_proto::ErrorCode;
use wharf_proto::exec::{ExecReply, ExecRequest, SignalName};

/// A command that leaves processes behind every way a shell can: a
/// background job, a subshell's orphan, `setsid`, `setsid -f` (a double
/// fork), `nohup`; all marked `1000.1x` (see `marked`).
const LEAVERS_1: &str = "(sleep 1000.11 &) ; sleep 1000.12 & setsid sleep 1000.13 & \
     setsid -f sleep 1000.14; nohup sleep 1000.15 >/dev/null 2>&1 & echo $$ > pids; sleep 1000.16";
const LEAVERS_3: &str = "(sleep 1000.31 &) ; sleep 1000.32 & setsid sleep 1000.33 & \
     setsid -f sleep 1000.34; nohup sleep 1000.35 >/dev/null 2>&1 & echo $$ > pids; sleep 1000.36";

/// Deterministic bytes that are not all alike.
fn pattern(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x1234_5678;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

#[tokio::test]
async fn stdout_stderr_and_exit_code_stay_apart() {
    let srv = spawn().await;
    srv.add_user("alice", "exec").await;
    let mut c = srv.client("alice").await;
    let out = c
        .output("echo out; echo err >&2; printf 'no newline'; exit 3")
        .await
        .expect("run");
    assert_eq!(out.stdout, b"out\nno newline");
    assert_eq!(out.stderr, b"err\n");
    assert_eq!(out.outcome.status, 3);
    assert_eq!(out.outcome.signal, None);
    assert_eq!(out.outcome.bytes_out, 18);
    // The same connection runs the next command.
    let out = c.output("true").await.expect("run");
    assert_eq!((out.stdout.len(), out.outcome.status), (0, 0));
    let out = c.output("no-such-command-here").await.expect("run");
    assert_eq!(out.outcome.status, 127);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not found"),
        "{:?}",
        String::from_utf8_lossy(&out.stderr)
    );
    c.quit().await.expect("quit");
}

#[tokio::test]
async fn signals_map_to_128_plus_n() {
    let srv = spawn().await;
    srv.add_user("alice", "exec").await;
    let mut c = srv.client("alice").await;
    let out = c.output("kill -TERM $$").await.expect("run");
    assert_eq!((out.outcome.status, out.outcome.signal), (143, Some(15)));
    let out = c.output("kill -KILL $$").await.expect("run");
    assert_eq!((out.outcome.status, out.outcome.signal), (137, Some(9)));
    // A signal from the client reaches the whole group.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let sender = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let _ = tx.send(SignalName::Int);
        tx
    });
    let outcome = c
        .run(
            "sleep 100",
            Streams {
                stdin: None,
                stdout: &mut stdout,
                stderr: &mut stderr,
                signals: Some(&mut rx),
                resizes: None,
            },
        )
        .await
        .expect("run");
    assert_eq!((outcome.status, outcome.signal), (130, Some(2)));
    drop(sender.await);
}

#[tokio::test]
async fn multi_mib_output_is_byte_exact_on_both_streams() {
    let srv = spawn().await;
    srv.add_user("alice", "exec").await;
    let data = pattern(5 * 1024 * 1024 + 17);
    std::fs::write(srv.home("alice").join("big.bin"), &data).expect("write");
    let mut c = srv.client("alice").await;
    let out = c
        .output("cat big.bin; cat big.bin >&2; cat big.bin")
        .await
        .expect("run");
    assert_eq!(out.outcome.status, 0);
    assert_eq!(out.stdout.len(), data.len() * 2);
    assert!(out.stdout[..data.len()] == data[..] && out.stdout[data.len()..] == data[..]);
    assert!(out.stderr == data, "stderr differs");
    assert_eq!(out.outcome.bytes_out, 3 * data.len() as u64);
}

#[tokio::test]
async fn stdin_is_streamed_and_closed() {
    let srv = spawn().await;
    srv.add_user("alice", "exec").await;
    let mut c = srv.client("alice").await;
    let data = pattern(3 * 1024 * 1024 + 5);
    let out = c.output_with_input("cat", Some(&data)).await.expect("run");
    assert_eq!(out.outcome.status, 0);
    assert!(out.stdout == data, "cat returned other bytes");
    let out = c
        .output_with_input("wc -l", Some(b"one\ntwo\nthree\n"))
        .await
        .expect("run");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "3");
    // A command that never reads its input ends all the same, and the
    // input still in flight does not upset the next command.
    let big = pattern(8 * 1024 * 1024);
    let out = c
        .output_with_input("echo done", Some(&big))
        .await
        .expect("run");
    assert_eq!(out.stdout, b"done\n");
    let out = c.output("echo next").await.expect("run");
    assert_eq!(out.stdout, b"next\n");
    // Without input the command reads EOF at once.
    let out = c.output("cat; echo eof").await.expect("run");
    assert_eq!(out.stdout, b"eof\n");
}

#[tokio::test]
async fn runs_in_the_home_with_a_scrubbed_environment() {
    let srv = spawn().await;
    srv.add_user("alice", "exec").await;
    let mut c = srv.client("alice").await;
    let out = c.output("pwd; env").await.expect("run");
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let mut lines = text.lines();
    // The home is shown at a neutral path, not where the server keeps it.
    let home = "/home/alice";
    assert_eq!(lines.next(), Some(home));
    let mut names: Vec<&str> = lines.filter_map(|l| l.split('=').next()).collect();
    names.sort_unstable();
    // dash adds PWD itself; nothing of the server's environment is there.
    assert_eq!(names, ["HOME", "LANG", "PATH", "PWD", "TERM", "USER"]);
    assert!(text.contains("\nUSER=alice\n"));
    assert!(text.contains(&format!("\nHOME={home}\n")));
    assert!(text.contains("\nPATH=/usr/local/bin:/usr/bin:/bin\n"));
    // No terminal: the shell leads a session of its own.
    let out = c.output("tty; echo hi > /dev/tty").await.expect("run");
    let text = String::from_utf8(out.stdout).expect("utf-8");
    assert!(text.contains("not a tty"), "{text}");
    assert_ne!(out.outcome.status, 0);
}

#[tokio::test]
async fn the_timeout_kills_the_whole_group() {
    let srv = spawn_with(ExecConfig {
        command_timeout: Duration::from_millis(700),
        ..config()
    })
    .await;
    srv.add_user("alice", "exec").await;
    let mut c = srv.client("alice").await;
    let err = c.output(LEAVERS_1).await.expect_err("timed out");
    assert_eq!(err.code(), Some(ErrorCode::Timeout), "{err}");
    assert!(err.to_string().contains("--command-timeout"), "{err}");
    none_marked("1000.1").await;
    let pids = read_pids(&srv.home("alice").join("pids"), 1).await;
    reaped(pids[0]).await;
    // The session goes on.
    let out = c.output("echo still here").await.expect("run");
    assert_eq!(out.stdout, b"still here\n");
}

#[tokio::test]
async fn the_output_cap_kills_the_whole_group() {
    let srv = spawn_with(ExecConfig {
        max_output: 1024 * 1024,
        ..config()
    })
    .await;
    srv.add_user("alice", "exec").await;
    let mut c = srv.client("alice").await;
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let err = c
        .run(
            "setsid sleep 1000.21 & nohup sleep 1000.22 >/dev/null 2>&1 & yes",
            Streams {
                stdin: None,
                stdout: &mut stdout,
                stderr: &mut stderr,
                signals: None,
                resizes: None,
            },
        )
        .await
        .expect_err("capped");
    assert_eq!(err.code(), Some(ErrorCode::MessageTooLarge), "{err}");
    assert!(err.to_string().contains("--max-output"), "{err}");
    assert_eq!(stdout.len(), 1024 * 1024, "exactly the cap is delivered");
    assert!(stdout.chunks(2).all(|c| c == b"y\n"));
    none_marked("1000.2").await;
    let out = c.output("echo next").await.expect("run");
    assert_eq!(out.stdout, b"next\n");
}

#[tokio::test]
async fn a_client_disconnect_kills_the_whole_group() {
    let srv = spawn().await;
    srv.add_user("alice", "exec").await;
    let mut conn = raw_login(&srv.addr, "alice").await;
    let started = raw_ask(
        &mut conn,
        ExecRequest::Run {
            report_cwd: false,
            command: LEAVERS_3.into(),
            stdin: true,
            cwd: None,
            tty: None,
        },
    )
    .await;
    assert!(matches!(started, ExecReply::Started { .. }), "{started:?}");
    wait_marked("1000.3", 5).await;
    let pids = read_pids(&srv.home("alice").join("pids"), 1).await;
    drop(conn);
    none_marked("1000.3").await;
    reaped(pids[0]).await;
    // It is logged, killed by SIGKILL.
    let until = tokio::time::Instant::now() + WAIT;
    loop {
        let rows = srv
            .store
            .usage_report(Some("alice"), 0)
            .await
            .expect("usage");
        if rows[0].exec_commands == 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < until, "not logged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_background_grandchild_does_not_hold_the_command_open() {
    let srv = spawn().await;
    srv.add_user("alice", "exec").await;
    let mut c = srv.client("alice").await;
    let out = tokio::time::timeout(
        WAIT,
        c.output("sleep 1000.41 & setsid sleep 1000.42 & echo started"),
    )
    .await
    .expect("does not hang")
    .expect("run");
    assert_eq!(
        (out.stdout.as_slice(), out.outcome.status),
        (&b"started\n"[..], 0)
    );
    assert!(out.outcome.duration < Duration::from_secs(5));
    none_marked("1000.4").await;
}

#[tokio::test]
async fn a_server_shutdown_kills_running_commands() {
    let srv = spawn().await;
    srv.add_user("alice", "exec").await;
    let mut c = srv.client("alice").await;
    let stopper = {
        let token = srv.shutdown.clone();
        tokio::spawn(async move {
            wait_marked("1000.5", 2).await;
            token.cancel();
        })
    };
    let err = c
        .output("setsid sleep 1000.51 & sleep 1000.52")
        .await
        .expect_err("ended by the shutdown");
    assert_eq!(err.code(), Some(ErrorCode::ShuttingDown), "{err}");
    stopper.await.expect("stopper");
    none_marked("1000.5").await;
    tokio::time::timeout(WAIT, srv.task)
        .await
        .expect("server stops")
        .expect("server task");
}

#[tokio::test]
async fn rights_passwords_and_locks_are_enforced() {
    let srv = spawn().await;
    srv.add_user("alice", "exec").await;
    srv.add_user("bob", "ftp,chat").await;
    let password = wharf_core::Password::new(PW);
    let err = wharf_exec::client::ExecClient::connect(&srv.addr, client_tls(), "bob", &password)
        .await
        .expect_err("no exec right");
    assert_eq!(err.code(), Some(ErrorCode::NotPermitted), "{err}");
    let wrong = wharf_core::Password::new("not the password");
    let err = wharf_exec::client::ExecClient::connect(&srv.addr, client_tls(), "alice", &wrong)
        .await
        .expect_err("wrong password");
    assert_eq!(err.code(), Some(ErrorCode::AuthFailed), "{err}");
    // A right revoked or a lock set while logged in holds at the next command.
    let mut c = srv.client("alice").await;
    c.output("true").await.expect("allowed");
    srv.store
        .revoke("alice", Service::Exec)
        .await
        .expect("revoke");
    let err = c.output("true").await.expect_err("revoked");
    assert_eq!(err.code(), Some(ErrorCode::NotPermitted), "{err}");
    srv.store
        .grant("alice", Service::Exec)
        .await
        .expect("grant");
    srv.store.set_locked("alice", true).await.expect("lock");
    let err = c.output("true").await.expect_err("locked");
    assert_eq!(err.code(), Some(ErrorCode::AccountLocked), "{err}");
    let err = wharf_exec::client::ExecClient::connect(&srv.addr, client_tls(), "alice", &password)
        .await
        .expect_err("locked");
    assert_eq!(err.code(), Some(ErrorCode::AccountLocked), "{err}");
    let rows = srv
        .store
        .usage_report(Some("alice"), 0)
        .await
        .expect("usage");
    assert_eq!(rows[0].exec_commands, 1, "refused commands do not run");
}

#[tokio::test]
async fn each_user_runs_at_most_the_limit_at_once() {
    let srv = spawn().await;
    srv.add_user("alice", "exec").await;
    srv.add_user("bob", "exec").await;
    let mut running = Vec::new();
    for _ in 0..4 {
        let mut conn = raw_login(&srv.addr, "alice").await;
        let reply = raw_ask(
            &mut conn,
            ExecRequest::Run {
                report_cwd: false,
                command: "sleep 100".into(),
                stdin: false,
                cwd: None,
                tty: None,
            },
        )
        .await;
        assert!(matches!(reply, ExecReply::Started { .. }), "{reply:?}");
        running.push(conn);
    }
    let mut c = srv.client("alice").await;
    let err = c.output("true").await.expect_err("fifth");
    assert_eq!(err.code(), Some(ErrorCode::Busy), "{err}");
    assert!(err.to_string().contains("4 commands running"), "{err}");
    // Someone else is not affected.
    let mut b = srv.client("bob").await;
    assert_eq!(b.output("echo hi").await.expect("bob").stdout, b"hi\n");
    // One ends (its client goes), and there is room again.
    drop(running.pop());
    let until = tokio::time::Instant::now() + WAIT;
    loop {
        match c.output("echo room").await {
            Ok(out) => {
                assert_eq!(out.stdout, b"room\n");
                break;
            }
            Err(e) if e.code() == Some(ErrorCode::Busy) => {
                assert!(tokio::time::Instant::now() < until, "still busy");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
}

#[tokio::test]
async fn bad_requests_get_clear_errors_and_the_server_keeps_serving() {
    let srv = spawn().await;
    srv.add_user("alice", "exec").await;
    // Garbage, HTTP, an oversized header: an error frame, then the close.
    for bytes in [
        &b"\x00\x00\x00\x05hello"[..],
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\xff\xff\xff\xff",
    ] {
        let mut s = connect(&srv.addr).await;
        s.write_all(bytes).await.expect("write");
        s.flush().await.expect("flush");
        let mut conn =
            tokio_util::codec::Framed::new(s, wharf_proto::FrameCodec::<ExecReply>::new());
        let reply = raw_recv(&mut conn).await;
        assert!(
            matches!(&reply, Some(ExecReply::Error(e)) if matches!(e.code, ErrorCode::InvalidFrame | ErrorCode::HeaderTooLarge)),
            "{reply:?}"
        );
        assert!(raw_recv(&mut conn).await.is_none(), "closed after");
    }
    // Requests before login.
    let s = connect(&srv.addr).await;
    let mut conn = tokio_util::codec::Framed::new(s, wharf_proto::FrameCodec::<ExecReply>::new());
    let reply = raw_ask(
        &mut conn,
        ExecRequest::Run {
            report_cwd: false,
            command: "id".into(),
            stdin: false,
            cwd: None,
            tty: None,
        },
    )
    .await;
    assert!(matches!(reply, ExecReply::Error(e) if e.code == ErrorCode::NotLoggedIn));
    // Bad commands, logged in: refused, the session goes on.
    let mut conn = raw_login(&srv.addr, "alice").await;
    for (command, code) in [
        ("".to_owned(), ErrorCode::BadRequest),
        ("   ".to_owned(), ErrorCode::BadRequest),
        ("echo a\0b".to_owned(), ErrorCode::BadRequest),
        ("x".repeat(40_000), ErrorCode::MessageTooLarge),
    ] {
        let reply = raw_ask(
            &mut conn,
            ExecRequest::Run {
                report_cwd: false,
                command,
                stdin: false,
                cwd: None,
                tty: None,
            },
        )
        .await;
        assert!(
            matches!(&reply, ExecReply::Error(e) if e.code == code),
            "{reply:?}"
        );
    }
    // Input or signals with no command running are ignored; an unknown op
    // is refused; a body on a body-less request too.
    raw_send(&mut conn, ExecRequest::StdinEnd).await;
    raw_send(
        &mut conn,
        ExecRequest::Signal {
            signal: SignalName::Kill,
        },
    )
    .await;
    let reply = raw_ask(&mut conn, ExecRequest::Ping).await;
    assert_eq!(reply, ExecReply::Pong);
    {
        use futures_util::SinkExt;
        let mut raw = serde_json::to_vec(&serde_json::json!({"op": "teleport"})).expect("json");
        let mut frame = (raw.len() as u32).to_be_bytes().to_vec();
        frame.append(&mut raw);
        conn.get_mut().write_all(&frame).await.expect("write");
        let reply = raw_recv(&mut conn).await;
        assert!(
            matches!(&reply, Some(ExecReply::Error(e)) if e.code == ErrorCode::UnknownOp),
            "{reply:?}"
        );
        conn.send(wharf_proto::Outbound::Header {
            msg: ExecRequest::Ping,
            body_len: 3,
        })
        .await
        .expect("send");
        conn.send(wharf_proto::Outbound::<ExecRequest>::Body(
            bytes::Bytes::from_static(b"abc"),
        ))
        .await
        .expect("send");
        let reply = raw_recv(&mut conn).await;
        assert!(
            matches!(&reply, Some(ExecReply::Error(e)) if e.code == ErrorCode::BadRequest),
            "{reply:?}"
        );
    }
    // A second run while one runs is a protocol error: the command is
    // killed and the connection closed.
    let reply = raw_ask(
        &mut conn,
        ExecRequest::Run {
            report_cwd: false,
            command: "echo $$ > pids; sleep 100".into(),
            stdin: false,
            cwd: None,
            tty: None,
        },
    )
    .await;
    assert!(matches!(reply, ExecReply::Started { .. }), "{reply:?}");
    let pids = read_pids(&srv.home("alice").join("pids"), 1).await;
    let reply = raw_ask(
        &mut conn,
        ExecRequest::Run {
            report_cwd: false,
            command: "true".into(),
            stdin: false,
            cwd: None,
            tty: None,
        },
    )
    .await;
    assert!(
        matches!(&reply, ExecReply::Error(e) if e.code == ErrorCode::BadRequest && e.message.contains("killed")),
        "{reply:?}"
    );
    assert!(raw_recv(&mut conn).await.is_none(), "closed after");
    all_gone(&pids).await;
    // Through all of it, the server served.
    let mut c = srv.client("alice").await;
    assert_eq!(c.output("echo fine").await.expect("run").stdout, b"fine\n");
}

#[tokio::test]
async fn every_run_is_logged_and_counted_in_usage() {
    let srv = spawn().await;
    srv.add_user("alice", "exec").await;
    let mut c = srv.client("alice").await;
    c.output("echo one").await.expect("run");
    c.output("exit 4").await.expect("run");
    c.output("kill -9 $$").await.expect("run");
    let rows = srv
        .store
        .usage_report(Some("alice"), 0)
        .await
        .expect("usage");
    assert_eq!(rows[0].exec_commands, 3);
    let log: Vec<(String, Option<i64>, Option<i64>, i64)> = sqlx_rows(&srv).await;
    assert_eq!(
        log,
        [
            ("echo one".to_owned(), Some(0), None, 4),
            ("exit 4".to_owned(), Some(4), None, 0),
            ("kill -9 $$".to_owned(), None, Some(9), 0),
        ]
    );
}

async fn sqlx_rows(srv: &TestServer) -> Vec<(String, Option<i64>, Option<i64>, i64)> {
    srv.store
        .exec_log(Some("alice"), 0, 10)
        .await
        .expect("exec log")
        .into_iter()
        .rev()
        .map(|e| {
            (
                e.command,
                e.exit_code.map(i64::from),
                e.signal.map(i64::from),
                e.bytes_out as i64,
            )
        })
        .collect()
}

#[tokio::test]
async fn resource_limits_hold() {
    let srv = spawn_with(ExecConfig {
        resources: ResourceLimits {
            cpu: Duration::from_secs(1),
            file_size: 4096,
            ..ResourceLimits::default()
        },
        ..config()
    })
    .await;
    srv.add_user("alice", "exec").await;
    let mut c = srv.client("alice").await;
    // File size: the writer gets SIGXFSZ (25), the file stops at the limit.
    let out = c
        .output("head -c 10000 /dev/zero > f; echo $?")
        .await
        .expect("run");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "153");
    assert_eq!(
        std::fs::metadata(srv.home("alice").join("f"))
            .expect("f")
            .len(),
        4096
    );
    // CPU: SIGXCPU (24) ends a busy loop after a second of CPU time.
    let out = c.output("while :; do :; done").await.expect("run");
    assert_eq!((out.outcome.status, out.outcome.signal), (152, Some(24)));
    // The limits are hard: the command cannot raise them.
    let out = c.output("ulimit -f unlimited").await.expect("run");
    assert_ne!(out.outcome.status, 0);
    // No core dumps in homes.
    let out = c.output("ulimit -c").await.expect("run");
    assert_eq!(out.stdout, b"0\n");
}

#[tokio::test]
async fn quota_caps_file_size_and_usage_follows_commands() {
    let srv = spawn().await;
    srv.add_user("alice", "exec").await;
    srv.store
        .set_quota("alice", Some(10_000))
        .await
        .expect("quota");
    let mut c = srv.client("alice").await;
    let out = c
        .output("head -c 20000 /dev/zero > big; echo $?")
        .await
        .expect("run");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "153");
    let until = tokio::time::Instant::now() + WAIT;
    loop {
        let user = srv.store.require_user("alice").await.expect("user");
        if (user.used_bytes, user.file_count) == (10_000, 1) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "usage not rescanned: {user:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Full: not one more byte.
    let out = c
        .output("head -c 1 /dev/zero > more; echo $?")
        .await
        .expect("run");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "153");
}

#[tokio::test]
async fn commands_run_as_the_users_own_uid() {
    let srv = spawn_with(ExecConfig {
        resources: ResourceLimits {
            processes: 3,
            ..ResourceLimits::default()
        },
        ..config()
    })
    .await;
    // The data directory is a 0700 temp dir: the command's uid could not
    // traverse it; the home reaches the command through its mount.
    srv.skip_ids(0, 20).await;
    let alice = srv.add_user("alice", "exec").await;
    std::fs::write(srv.home("alice").join("old"), b"before\n").expect("write");
    let mut c = srv.client("alice").await;
    let out = c
        .output("id -u; id -g; id -G; touch mine; cat old; echo ok")
        .await
        .expect("run");
    let me = rustix::process::getuid().as_raw();
    let uid = if is_root() {
        wharf_store::owner::UID_BASE + alice.id as u32
    } else {
        me
    };
    let gid = if is_root() {
        uid
    } else {
        rustix::process::getgid().as_raw()
    };
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{uid}\n{gid}\n{gid}\nbefore\nok\n"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    use std::os::unix::fs::MetadataExt;
    let home = std::fs::metadata(srv.home("alice")).expect("home");
    assert_eq!((home.uid(), home.mode() & 0o777), (uid, 0o700));
    let old = std::fs::metadata(srv.home("alice").join("old")).expect("old");
    assert_eq!(old.uid(), uid, "files written before are handed over");
    // The process limit holds.
    let out = c
        .output("sleep 1 & sleep 1 & sleep 1 & sleep 1 & wait")
        .await
        .expect("run");
    assert_ne!(
        out.outcome.status,
        0,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .to_lowercase()
            .contains("fork"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Commands start through the small launcher beside the daemon; one that
/// does not work there (another build's) is passed over for the daemon's
/// own binary, and commands still run.
#[tokio::test]
async fn commands_start_through_the_small_launcher_or_else_the_daemon() {
    use std::path::Path;
    use wharf_execd::server::check_sandbox;

    let mut config = common::config();
    check_sandbox(&mut config).await.expect("sandbox");
    assert_eq!(
        config.command_launcher.as_deref(),
        Some(Path::new(env!("CARGO_BIN_EXE_wharf-exec-launch")))
    );

    // The daemon in a folder of its own, beside a launcher that fails.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("dir");
    let daemon = dir.path().join("wharf-execd");
    std::fs::hard_link(env!("CARGO_BIN_EXE_wharf-execd"), &daemon)
        .or_else(|_| std::fs::copy(env!("CARGO_BIN_EXE_wharf-execd"), &daemon).map(|_| ()))
        .expect("daemon");
    let broken = dir.path().join("wharf-exec-launch");
    std::fs::write(&broken, "#!/bin/sh\necho 'another build' >&2\nexit 1\n").expect("launcher");
    std::fs::set_permissions(&broken, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("mode");
    let mut config = ExecConfig {
        launcher: daemon,
        ..common::config()
    };
    check_sandbox(&mut config)
        .await
        .expect("the daemon launches");
    assert_eq!(config.command_launcher, None);
    // A working launcher that others could have written is not used
    // either (the daemon runs it as root); the same file, writable by its
    // owner alone, is.
    std::fs::copy(env!("CARGO_BIN_EXE_wharf-exec-launch"), &broken).expect("launcher");
    for (mode, used) in [(0o777, false), (0o755, true)] {
        std::fs::set_permissions(&broken, std::os::unix::fs::PermissionsExt::from_mode(mode))
            .expect("mode");
        check_sandbox(&mut config).await.expect("sandbox");
        assert_eq!(config.command_launcher.is_some(), used, "mode {mode:o}");
    }
    // Without it, commands run through the daemon's own binary.
    std::fs::remove_file(&broken).expect("remove");
    check_sandbox(&mut config)
        .await
        .expect("the daemon launches");
    assert_eq!(config.command_launcher, None);
    let srv = spawn_with(config).await;
    srv.add_user("alice", "exec").await;
    let mut c = srv.client("alice").await;
    let out = c.output("echo hi").await.expect("run");
    assert_eq!(out.stdout, b"hi\n");
}

/// The pids of the spare launchers started from `launcher`, this test
/// process's children (dead ones left out).
fn spares_of(launcher: &std::path::Path) -> Vec<i32> {
    let mut pids = Vec::new();
    let tasks = std::fs::read_dir("/proc/self/task").expect("tasks");
    for task in tasks.flatten() {
        let list = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        for pid in list
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            let exe = std::fs::read_link(format!("/proc/{pid}/exe"));
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let spare = cmdline
                .split(|b| *b == 0)
                .any(|arg| arg == wharf_execd::launch::spare::SPARE_ARG.as_bytes());
            if spare && exe.is_ok_and(|exe| exe == launcher) {
                pids.push(pid);
            }
        }
    }
    pids.sort_unstable();
    pids
}

/// Waits until `check` holds, for up to [`WAIT`].
async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Commands start through spare launchers, started ahead and waiting in
/// memory cgroups of their own; a used one is replaced at once, and dead
/// ones are passed over for a fresh launcher. Either way the command gets
/// the same environment, input, output and limits.
#[tokio::test]
async fn commands_start_through_spare_launchers_or_fresh_ones() {
    // The daemon and its launcher in a folder of their own: the spares
    // seen are this server's.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("dir");
    let daemon = dir.path().join("wharf-execd");
    let launcher = dir.path().join("wharf-exec-launch");
    for (from, to) in [
        (env!("CARGO_BIN_EXE_wharf-execd"), &daemon),
        (env!("CARGO_BIN_EXE_wharf-exec-launch"), &launcher),
    ] {
        std::fs::copy(from, to).expect("copy");
    }
    let srv = spawn_with(ExecConfig {
        launcher: daemon,
        ..common::config()
    })
    .await;
    srv.add_user("alice", "exec").await;
    let mut c = srv.client("alice").await;
    until("two spares wait", || spares_of(&launcher).len() == 2).await;
    let first = spares_of(&launcher);
    if wharf_execd::launch::cgroup::available() {
        for pid in &first {
            let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup");
            assert!(cgroups.contains(&format!("/wharf-{pid}\n")), "{cgroups}");
        }
    }
    let script = "env | cut -d= -f1 | sort | tr '\\n' ' '; cat; echo; echo oops >&2; exit 5";
    let out = c
        .output_with_input(script, Some(b"from stdin"))
        .await
        .expect("run");
    let expected = (
        "HOME LANG PATH PWD TERM USER from stdin\n".as_bytes(),
        "oops\n".as_bytes(),
        5,
    );
    assert_eq!(
        (&out.stdout[..], &out.stderr[..], out.outcome.status),
        expected
    );
    // One ran it; a new one took its place.
    until("a spare replaces the one used", || {
        let now = spares_of(&launcher);
        now.len() == 2 && now.iter().filter(|p| first.contains(p)).count() == 1
    })
    .await;
    // Killed while waiting: passed over, and the command starts through a
    // fresh launcher, the same way.
    for pid in spares_of(&launcher) {
        let pid = rustix::process::Pid::from_raw(pid).expect("pid");
        rustix::process::kill_process(pid, rustix::process::Signal::KILL).expect("kill");
    }
    until("the spares are dead", || spares_of(&launcher).is_empty()).await;
    let out = c
        .output_with_input(script, Some(b"from stdin"))
        .await
        .expect("run");
    assert_eq!(
        (&out.stdout[..], &out.stderr[..], out.outcome.status),
        expected
    );
    until("spares wait again", || spares_of(&launcher).len() == 2).await;
    // The command's limit is written to the spare's cgroup before the
    // command runs.
    if wharf_execd::launch::cgroup::available() {
        let waiting = spares_of(&launcher);
        let mut d = srv.client("alice").await;
        let run = tokio::spawn(async move { d.output("sleep 1; echo done").await });
        let mut taken = 0;
        until("a spare runs the command", || {
            let now = spares_of(&launcher);
            taken = waiting
                .iter()
                .copied()
                .find(|p| !now.contains(p))
                .unwrap_or(0);
            taken != 0
        })
        .await;
        let cgroups = std::fs::read_to_string(format!("/proc/{taken}/cgroup")).expect("cgroup");
        let path = cgroups
            .lines()
            .find_map(|l| l.split_once(":memory:").map(|(_, p)| p.to_owned()))
            .or_else(|| {
                cgroups
                    .lines()
                    .find_map(|l| l.strip_prefix("0::").map(str::to_owned))
            })
            .expect("a memory cgroup");
        assert!(path.ends_with(&format!("/wharf-{taken}")), "{path}");
        let dir = ["/sys/fs/cgroup/memory", "/sys/fs/cgroup"]
            .iter()
            .map(|base| std::path::PathBuf::from(format!("{base}{path}")))
            .find(|d| d.exists())
            .expect("the cgroup's folder");
        let limit = ["memory.limit_in_bytes", "memory.max"]
            .iter()
            .find_map(|f| std::fs::read_to_string(dir.join(f)).ok())
            .expect("a limit file");
        assert_eq!(limit.trim(), ResourceLimits::default().memory.to_string());
        let out = run.await.expect("join").expect("run");
        assert_eq!(out.stdout, b"done\n");
    }
}
