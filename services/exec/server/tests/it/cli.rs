//! The real `wharf-exec` and `wharf-execd` binaries.

use crate::common;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use tokio::process::Command;
use wharf_execd::server::ExecConfig;
use wharf_testkit::cli::{self, run, run_with_input, text};

fn exec(srv: &TestServer, user: &str, args: &[&str]) -> Command {
    let mut cmd = cli::client(cli::bin("wharf-exec"), &srv.addr, user);
    cmd.args(args);
    cmd
}

#[tokio::test]
async fn one_shot_keeps_streams_apart_and_exits_with_the_status() {
    let srv = spawn().await;
    srv.add_user("alice", "exec").await;
    let out = run(&mut exec(
        &srv,
        "alice",
        &["--", "echo", "out;", "echo", "err", ">&2;", "exit", "5"],
    ))
    .await;
    assert_eq!(text(&out.stdout), "out\n");
    assert_eq!(text(&out.stderr), "err\n");
    assert_eq!(out.status.code(), Some(5));
    let out = run(&mut exec(&srv, "alice", &["--", "kill -INT $$"])).await;
    assert_eq!(out.status.code(), Some(130));
    let out = run(&mut exec(&srv, "alice", &["--", "ls", "-la"])).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("total "),
        "{}",
        text(&out.stdout)
    );
}

/// As `ssh host ls`: the command needs no `--`, and what follows its first
/// word is the command's, options and all.
#[tokio::test]
async fn a_command_runs_without_dashes_as_with_ssh() {
    let srv = spawn().await;
    srv.add_user("alice", "exec").await;
    let out = run(&mut exec(&srv, "alice", &["echo", "hi"])).await;
    assert_eq!(text(&out.stdout), "hi\n", "{}", text(&out.stderr));
    assert!(out.status.success());
    let out = run(&mut exec(&srv, "alice", &["-n", "ls", "-la", "--all"])).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("total "),
        "{}",
        text(&out.stdout)
    );
    let out = run(&mut exec(&srv, "alice", &["exit", "7"])).await;
    assert_eq!(out.status.code(), Some(7));
}

#[tokio::test]
async fn stdin_is_streamed_unless_told_not_to() {
    let srv = spawn().await;
    srv.add_user("alice", "exec").await;
    let input: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
    let out = run_with_input(
        &mut exec(&srv, "alice", &["--", "cat > copy; cat copy"]),
        &input,
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(out.stdout == input, "not the same bytes back");
    let out = run_with_input(&mut exec(&srv, "alice", &["-n", "--", "wc -c"]), b"ignored").await;
    assert_eq!(text(&out.stdout).trim(), "0");
}

#[tokio::test]
async fn the_prompt_runs_lines_from_a_pipe() {
    let srv = spawn().await;
    srv.add_user("alice", "exec").await;
    let script = b"mkdir -p 'a dir'\ncd 'a dir'\npwd\nfalse\necho after\nexit\necho never\n";
    let out = run_with_input(&mut exec(&srv, "alice", &[]), script).await;
    assert_eq!(text(&out.stdout), "/home/alice/a dir\nafter\n");
    assert_eq!(out.status.code(), Some(1), "the last failure's status");
    let out = run_with_input(&mut exec(&srv, "alice", &[]), b"echo one\necho two\n").await;
    assert_eq!(text(&out.stdout), "one\ntwo\n");
    assert!(out.status.success());
    // The log holds each line as typed, `cd` included.
    let mut logged: Vec<String> = srv
        .store
        .exec_log(Some("alice"), 0, 100)
        .await
        .expect("log")
        .into_iter()
        .map(|r| r.command)
        .collect();
    logged.reverse();
    assert_eq!(
        logged,
        [
            "mkdir -p 'a dir'",
            "cd 'a dir'",
            "pwd",
            "false",
            "echo after",
            "echo one",
            "echo two"
        ]
    );
}

#[tokio::test]
async fn failures_say_what_went_wrong_and_exit_255() {
    let srv = spawn_with(ExecConfig {
        command_timeout: Duration::from_millis(500),
        ..config()
    })
    .await;
    srv.add_user("alice", "exec").await;
    srv.add_user("bob", "ftp").await;
    let out = run(&mut exec(&srv, "alice", &["--", "sleep 30"])).await;
    assert_eq!(out.status.code(), Some(255));
    assert!(
        text(&out.stderr).contains("ran longer than 500ms"),
        "{}",
        text(&out.stderr)
    );
    let out =
        run(exec(&srv, "alice", &["--", "true"]).env("WHARF_PASSWORD", "wrong password")).await;
    // wharf-exec's own failures are 255, as its help says: 1 to 254 are
    // the remote command's.
    assert_eq!(out.status.code(), Some(255));
    assert!(
        text(&out.stderr).contains("wrong user name or password"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&mut exec(&srv, "bob", &["--", "true"])).await;
    assert_eq!(out.status.code(), Some(255));
    assert!(text(&out.stderr).contains("exec"), "{}", text(&out.stderr));
    let out = run(Command::new(cli::bin("wharf-exec"))
        .args(["--server", "127.0.0.1:1", "--user", "alice", "--", "true"])
        .env("WHARF_CA", &tls().2)
        .env("WHARF_PASSWORD", PW)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped()))
    .await;
    assert_eq!(out.status.code(), Some(255));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("is wharf-execd running there?"), "{stderr}");
    assert_eq!(
        stderr.matches("Connection refused").count(),
        1,
        "each error said once: {stderr}"
    );
}

#[tokio::test]
async fn the_daemon_says_how_commands_run() {
    use tokio::io::AsyncBufReadExt;
    let dir = tempfile::tempdir().expect("dir");
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_wharf-execd"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env_remove("NO_COLOR")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("wharf-execd");
    let stderr = daemon.stderr.take().expect("stderr");
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    let banner = tokio::time::timeout(WAIT, async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("serving remote exec") {
                return line;
            }
        }
        String::new()
    })
    .await
    .expect("a banner in time");
    let expected = if rustix::process::geteuid().is_root() {
        "as each user's own uid, sandboxed"
    } else {
        "as this server's user, sandboxed"
    };
    assert!(banner.contains(expected), "{banner}");
    assert!(
        !banner.contains('\x1b'),
        "no colour codes when stderr is not a terminal: {banner:?}"
    );
    let _ = daemon.kill().await;
}

#[tokio::test]
async fn the_daemon_serves_a_given_certificate() {
    let srv = spawn().await;
    srv.add_user("alice", "exec").await;
    srv.shutdown.cancel();
    let (addr, mut daemon) = cli::daemon(env!("CARGO_BIN_EXE_wharf-execd"), srv.dir.path());
    let mut daemon = daemon.spawn().expect("wharf-execd");
    let cert = tls().2.clone();
    let until = tokio::time::Instant::now() + WAIT;
    let out = loop {
        let out = run(Command::new(cli::bin("wharf-exec"))
            .args(["--server", &addr, "--user", "alice", "-n", "--", "echo hi"])
            .env("WHARF_CA", &cert)
            .env("WHARF_PASSWORD", PW)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()))
        .await;
        if out.status.success() || tokio::time::Instant::now() > until {
            break out;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(text(&out.stdout), "hi\n", "{}", text(&out.stderr));
    assert!(
        !srv.dir.path().join("tls").exists(),
        "no certificate made beside a given one"
    );
    let _ = daemon.kill().await;
}

#[tokio::test]
async fn passwd_changes_the_password_and_exits_0() {
    let srv = spawn().await;
    srv.add_user("alice", "exec").await;
    let out = run_with_input(
        &mut exec(&srv, "alice", &["passwd", "--password-stdin"]),
        b"battery staple\n",
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(&mut exec(&srv, "alice", &["--", "true"])).await;
    assert_eq!(out.status.code(), Some(255), "the old password is refused");
    let out =
        run(exec(&srv, "alice", &["--", "echo", "in"]).env("WHARF_PASSWORD", "battery staple"))
            .await;
    assert_eq!(text(&out.stdout), "in\n");
}

#[tokio::test]
async fn a_usage_error_exits_255_not_a_status_a_command_could_have() {
    let srv = spawn().await;
    let out = run(&mut exec(&srv, "alice", &["--bogus"])).await;
    assert_eq!(out.status.code(), Some(255));
    assert!(text(&out.stderr).contains("unexpected argument '--bogus'"));
    let out = run(&mut exec(&srv, "alice", &["--version"])).await;
    assert_eq!(out.status.code(), Some(0));
}

#[tokio::test]
async fn commands_start_with_default_signals_whatever_the_daemon_inherited() {
    let srv = spawn().await;
    srv.add_user("alice", "exec").await;
    srv.shutdown.cancel();
    let (addr, plain) = cli::daemon(env!("CARGO_BIN_EXE_wharf-execd"), srv.dir.path());
    let args: Vec<std::ffi::OsString> = plain.as_std().get_args().map(|a| a.to_owned()).collect();
    // Started as a script's `wharf-execd &` or `nohup` starts it: SIGINT,
    // SIGQUIT and SIGHUP ignored, which an exec'd program inherits.
    let mut daemon = Command::new("sh")
        .args(["-c", "trap '' INT QUIT HUP; exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_wharf-execd"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("wharf-execd");
    let cert = tls().2.clone();
    let until = tokio::time::Instant::now() + WAIT;
    let out = loop {
        let out = run(Command::new(cli::bin("wharf-exec"))
            .args([
                "--server",
                &addr,
                "--user",
                "alice",
                "-n",
                "--",
                "kill -INT $$",
            ])
            .env("WHARF_CA", &cert)
            .env("WHARF_PASSWORD", PW)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()))
        .await;
        if out.status.code() != Some(255) || tokio::time::Instant::now() > until {
            break out;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(out.status.code(), Some(130), "{}", text(&out.stderr));
    let _ = daemon.kill().await;
}
