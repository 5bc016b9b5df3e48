//! `wharf-exec` on a terminal: the real binary on a pseudo-terminal of the
//! test's own (expectrl), against an in-process server whose commands run
//! on pseudo-terminals of the server's, in the sandbox.

use crate::common;
use wharf_testkit::terminal;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use terminal::{Terminal, blocking};
use wharf_execd::server::ExecConfig;
use wharf_proto::ErrorCode;
use wharf_proto::exec::{ExecReply, ExecRequest, Tty, WindowSize};

/// `wharf-exec ARGS` for alice on a terminal of `cols` x `rows`.
fn on_terminal(srv: &TestServer, args: &[&str], cols: u16, rows: u16) -> Terminal {
    let mut cmd = std::process::Command::new(wharf_testkit::cli::bin("wharf-exec"));
    cmd.args(["--server", &srv.addr, "--user", "alice"])
        .args(args)
        .env("WHARF_CA", &tls().2)
        .env("WHARF_PASSWORD", PW);
    Terminal::start(cmd, cols, rows)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_login_shell_is_a_real_terminal() {
    let srv = spawn().await;
    srv.add_user("alice", "exec").await;
    let mut term = on_terminal(&srv, &[], 100, 30);
    let status = blocking(move || {
        let t = &mut term;
        // bash's own prompt: the user has a name in the sandbox.
        t.sees("alice@");
        // Arithmetic the shell does: the echo of the line typed cannot match.
        t.line("echo ready-$((6*7))");
        t.sees("ready-42");
        t.line("echo me=$(whoami); echo x >> /etc/passwd");
        t.sees("me=alice");
        t.sees("/etc/passwd: Permission denied");
        // The terminal, its size and TERM as this side has them.
        t.line("tty; stty size; tput cols; echo term=$TERM");
        t.sees("/dev/pts/");
        t.sees("30 100");
        t.sees("\n100");
        t.sees("term=xterm-256color");
        // The window follows this one's (SIGWINCH, then resize).
        t.resize(120, 40);
        std::thread::sleep(Duration::from_millis(300));
        t.line("echo size=$(stty size)");
        t.sees("size=40 120");
        // One shell: state persists from line to line, read reads the keys.
        t.line("export X=$((40+1)); cd /tmp");
        t.line("echo x=$X in=$(pwd)");
        t.sees("x=41 in=/tmp");
        t.line("read answer; echo got-$answer-done");
        std::thread::sleep(Duration::from_millis(200));
        t.line("yes");
        t.sees("got-yes-done");
        // Ctrl-C goes to the remote program, not to wharf-exec.
        t.line("echo running-c; sleep 100");
        t.sees("running-c\r\n");
        std::thread::sleep(Duration::from_millis(500));
        t.ctrl_c();
        t.line("echo status-$?");
        t.sees("status-130");
        // Job control: a pipeline in the background, a stopped job.
        t.line("sleep 60 | cat & jobs");
        t.sees("Running");
        t.line("echo running-z; sleep 100");
        t.sees("running-z\r\n");
        std::thread::sleep(Duration::from_millis(500));
        t.ctrl_z();
        t.sees("Stopped");
        // SIGKILL: a stopped job would sit on a SIGTERM until continued,
        // and bash will not exit while a job is stopped. bash may report a
        // killed job a moment after `wait` returns: asked until it has.
        t.line(
            "kill -KILL %1 %2; for i in $(seq 50); do wait; [ -z \"$(jobs -p)\" ] && break; sleep 0.1; done; echo jobs-left-$(jobs -p | wc -l)",
        );
        t.sees("jobs-left-0");
        t.line("exit 7");
        t.exit_code()
    })
    .await;
    assert_eq!(status, Some(7), "the shell's status: {status:?}");
    let log = srv.store.exec_log(Some("alice"), 0, 10).await.expect("log");
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].command, "(login shell on a terminal)");
    assert_eq!(log[0].exit_code, Some(7));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_screen_program_draws_and_leaves_a_clean_terminal() {
    let srv = spawn().await;
    srv.add_user("alice", "exec").await;
    let mut term = on_terminal(&srv, &["-t", "--", "top -d 0.2"], 90, 25);
    let status = blocking(move || {
        let t = &mut term;
        // top's header, drawn for this window, then q quits it.
        t.sees("load average");
        t.sees("PID");
        t.keys("q");
        t.exit_code()
    })
    .await;
    assert_eq!(status, Some(0), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t_without_a_local_terminal_still_gives_the_command_one() {
    let srv = spawn().await;
    srv.add_user("alice", "exec").await;
    let out = tokio::process::Command::new(wharf_testkit::cli::bin("wharf-exec"))
        .args(["--server", &srv.addr, "--user", "alice", "-t", "--"])
        .arg("test -t 0 && test -t 1 && stty size && exit 3")
        .env("WHARF_CA", &tls().2)
        .env("WHARF_PASSWORD", PW)
        .env_remove("TERM")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("wharf-exec -t");
    // Both streams are the terminal; the default window is 80 x 24.
    assert_eq!(String::from_utf8_lossy(&out.stdout), "24 80\r\n");
    assert_eq!(out.status.code(), Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_is_ended_after_the_idle_limit_not_the_command_limit() {
    let srv = spawn_with(ExecConfig {
        command_timeout: Duration::from_millis(300),
        // Long enough that a command started on a loaded machine (the
        // other tests of this binary run meanwhile) answers well within it.
        tty_idle_timeout: Duration::from_secs(5),
        ..config()
    })
    .await;
    srv.add_user("alice", "exec").await;
    let mut term = on_terminal(&srv, &[], 80, 24);
    let status = blocking(move || {
        let t = &mut term;
        // Typing keeps it alive past the command limit...
        for i in 0..4 {
            t.line(&format!("echo tick-$((100+{i}))"));
            t.sees(&format!("tick-{}", 100 + i));
            std::thread::sleep(Duration::from_millis(700));
        }
        // ...output without typing does not.
        t.line("while :; do echo busy; sleep 0.2; done");
        t.sees("nothing was typed for 5s (the server's --tty-idle-timeout)");
        t.exit_code()
    })
    .await;
    assert_eq!(status, Some(255), "{status:?}");
}

#[tokio::test]
async fn terminal_requests_are_checked() {
    let srv = spawn().await;
    srv.add_user("alice", "exec").await;
    let mut conn = raw_login(&srv.addr, "alice").await;
    let tty = |term: &str| Tty {
        term: term.into(),
        size: WindowSize { cols: 80, rows: 24 },
    };
    let bad = [
        // Not a TERM value: it would reach the command's environment.
        (String::new(), None, Some(tty("xterm;reboot"))),
        (String::new(), None, Some(tty(&"x".repeat(65)))),
        // An empty command is the login shell only on a terminal.
        (String::new(), None, None),
        (String::from("pwd"), Some("a\0b".to_owned()), None),
        (String::from("pwd"), Some(String::new()), None),
        (String::from("pwd"), Some("d".repeat(5000)), None),
    ];
    for (command, cwd, tty) in bad {
        let reply = raw_ask(
            &mut conn,
            ExecRequest::Run {
                report_cwd: false,
                command,
                stdin: false,
                cwd,
                tty,
            },
        )
        .await;
        assert!(
            matches!(&reply, ExecReply::Error(e) if e.code == ErrorCode::BadRequest),
            "{reply:?}"
        );
    }
    // A resize with no command running is too late, not an error.
    raw_send(
        &mut conn,
        ExecRequest::Resize(WindowSize { cols: 0, rows: 0 }),
    )
    .await;
    assert_eq!(raw_ask(&mut conn, ExecRequest::Ping).await, ExecReply::Pong);
    // The session still serves; a missing directory fails as `cd` would.
    let mut client = srv.client("alice").await;
    std::fs::create_dir(srv.home("alice").join("sub dir")).expect("mkdir");
    let run = |cwd: &'static str| wharf_exec::client::Command {
        line: "pwd",
        cwd: Some(cwd),
        tty: None,
        report_cwd: false,
    };
    let out = client.output_of(run("sub dir")).await.expect("run");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "/home/alice/sub dir\n"
    );
    let out = client.output_of(run("/tmp")).await.expect("run");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "/tmp\n");
    let out = client.output_of(run("nowhere")).await.expect("run");
    assert_eq!(out.outcome.status, 1);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "wharf-exec: cd: nowhere: No such file or directory\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_terminal_the_prompt_shows_and_logs_what_was_typed() {
    let srv = spawn().await;
    srv.add_user("alice", "exec").await;
    let mut term = on_terminal(&srv, &["-T"], 80, 24);
    let addr = srv.addr.clone();
    let status = blocking(move || {
        let t = &mut term;
        t.sees(&format!("alice@{addr}:~$ "));
        t.line("mkdir -p 'a dir/b'");
        t.line("cd 'a dir/b'");
        t.sees(&format!("alice@{addr}:~/a dir/b$ "));
        t.line("pwd");
        t.sees("/home/alice/a dir/b");
        t.line("cd /tmp");
        t.sees(&format!("alice@{addr}:/tmp$ "));
        t.line("exit");
        t.exit_code()
    })
    .await;
    assert_eq!(status, Some(0), "{status:?}");
    let log = srv.store.exec_log(Some("alice"), 0, 10).await.expect("log");
    let typed: Vec<&str> = log.iter().rev().map(|e| e.command.as_str()).collect();
    assert_eq!(typed[0], "mkdir -p 'a dir/b'");
    assert_eq!(typed[2], "pwd", "{typed:?}");
    assert!(typed.iter().all(|c| !c.contains("|| exit")), "{typed:?}");
}
