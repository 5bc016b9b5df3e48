//! Commands over SSH, run by remote exec in its sandbox: `ssh host cmd`,
//! shells with and without a terminal, rsync and `scp -O`, the exec right,
//! the quota and the administrator's word.

use crate::common::{data, spawn_exec, text};

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

#[tokio::test]
async fn a_command_runs_as_the_user_in_the_home_with_its_status_and_streams() {
    let srv = spawn_exec().await;
    let alice = srv.add_user("alice", None, "ftp,exec").await;
    let key = srv.give_key("alice").await;
    std::fs::write(alice.home.join("hello.txt"), b"hi\n").expect("a file");
    let out = srv
        .ssh(
            "alice",
            &key,
            &[],
            Some("id -u; pwd; cat hello.txt; echo to-err >&2; wc -c; exit 7"),
            "twelve bytes",
        )
        .await;
    let uid = if is_root() {
        wharf_store::owner::UID_BASE + alice.id as u32
    } else {
        rustix::process::getuid().as_raw()
    };
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("{uid}\n/home/alice\nhi\n12\n"));
    assert_eq!(text(&out.stderr), "to-err\n");

    // The command was recorded as a native one is.
    let log = srv.store.exec_log(Some("alice"), 0, 10).await.expect("log");
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].exit_code, Some(7));
}

#[tokio::test]
async fn a_shell_without_a_terminal_reads_its_commands_from_input() {
    let srv = spawn_exec().await;
    srv.add_user("alice", None, "exec").await;
    let key = srv.give_key("alice").await;
    let out = srv
        .ssh("alice", &key, &["-T"], None, "echo from-a-script\nexit 4\n")
        .await;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).ends_with("from-a-script\n"),
        "{}",
        text(&out.stdout)
    );
}

#[tokio::test]
async fn without_the_exec_right_there_is_no_command_and_no_shell() {
    let srv = spawn_exec().await;
    srv.add_user("bob", None, "ftp").await;
    let key = srv.give_key("bob").await;
    for (extra, command) in [(&[][..], Some("id")), (&["-tt"][..], None)] {
        let out = srv.ssh("bob", &key, extra, command, "").await;
        assert_eq!(out.status.code(), Some(1), "{command:?}");
        assert!(text(&out.stdout).is_empty(), "{}", text(&out.stdout));
        assert!(
            text(&out.stderr).contains("bob may not run commands (no exec right)"),
            "{}",
            text(&out.stderr)
        );
    }
    let log = srv.store.exec_log(Some("bob"), 0, 10).await.expect("log");
    assert!(log.is_empty(), "{log:?}");
}

#[tokio::test]
async fn a_door_without_remote_exec_says_so() {
    let srv = crate::common::spawn().await;
    srv.add_user("alice", None, "ftp,exec").await;
    let key = srv.give_key("alice").await;
    let out = srv.ssh("alice", &key, &[], Some("true"), "").await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("this server does not run commands"),
        "{}",
        text(&out.stderr)
    );
}

const PTY: &str = r#"
import os, paramiko
t = paramiko.Transport(("127.0.0.1", int(os.environ["PORT"])))
t.connect(username="alice", pkey=paramiko.Ed25519Key.from_private_key_file(os.environ["KEY"]))
c = t.open_session()
c.get_pty(term="xterm", width=100, height=40)
c.exec_command("stty size; test -t 0 && echo on-a-tty; read line; echo got $line; exit 3")
c.sendall(b"typed\n")
out = b""
while True:
    d = c.recv(65536)
    if not d:
        break
    out += d
print(repr(out.decode()))
print("status", c.recv_exit_status())
c = t.open_session()
c.get_pty(term="vt100", width=80, height=24)
c.invoke_shell()
c.resize_pty(width=132, height=50)
c.sendall(b"stty size; exit 5\n")
out = b""
while True:
    d = c.recv(65536)
    if not d:
        break
    out += d
print("shell", "50 132" in out.decode())
print("status", c.recv_exit_status())
t.close()
"#;

#[tokio::test]
async fn on_a_terminal_a_command_sees_its_size_and_a_shell_its_new_size() {
    let srv = spawn_exec().await;
    srv.add_user("alice", None, "exec").await;
    let key = srv.give_key("alice").await;
    let out = srv
        .python(PTY, &[("KEY", key.as_os_str())], wharf_testkit::WAIT * 3)
        .await;
    let said = text(&out.stdout);
    assert!(out.status.success(), "{said}{}", text(&out.stderr));
    // A terminal turns \n into \r\n, and echoes what is typed.
    assert!(said.contains(r"40 100\r\non-a-tty\r\n"), "{said}");
    assert!(said.contains(r"got typed\r\n"), "{said}");
    assert!(said.contains("status 3\nshell True\nstatus 5\n"), "{said}");
}

#[tokio::test]
async fn rsync_and_scp_dash_o_copy_both_ways_through_the_sandbox() {
    let srv = spawn_exec().await;
    let alice = srv.add_user("alice", None, "ftp,exec").await;
    let key = srv.give_key("alice").await;
    let here = tempfile::tempdir().expect("dir");
    let src = here.path().join("tree");
    std::fs::create_dir_all(src.join("sub")).expect("tree");
    let big = data(3 << 20, 9);
    std::fs::write(src.join("big.bin"), &big).expect("file");
    std::fs::write(src.join("sub/small.txt"), b"small\n").expect("file");

    let rsync = |args: Vec<String>| {
        let shell = srv.rsync_shell(&key);
        async move {
            tokio::time::timeout(
                wharf_testkit::WAIT * 3,
                tokio::process::Command::new("rsync")
                    .arg("-e")
                    .arg(shell)
                    .args(args)
                    .kill_on_drop(true)
                    .output(),
            )
            .await
            .expect("in time")
            .expect("rsync (Debian's rsync)")
        }
    };
    let out = rsync(vec![
        "-a".into(),
        format!("{}/", src.display()),
        "alice@127.0.0.1:copy/".into(),
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read(alice.home.join("copy/big.bin")).expect("up"),
        big
    );
    assert_eq!(
        std::fs::read(alice.home.join("copy/sub/small.txt")).expect("up"),
        b"small\n"
    );
    // A change, sent again: rsync's delta goes through too.
    std::fs::write(src.join("sub/small.txt"), b"changed\n").expect("file");
    let out = rsync(vec![
        "-a".into(),
        format!("{}/", src.display()),
        "alice@127.0.0.1:copy/".into(),
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read(alice.home.join("copy/sub/small.txt")).expect("up"),
        b"changed\n"
    );
    let back = here.path().join("back");
    let out = rsync(vec![
        "-a".into(),
        "alice@127.0.0.1:copy/".into(),
        format!("{}/", back.display()),
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(std::fs::read(back.join("big.bin")).expect("down"), big);

    // The legacy scp protocol runs scp in the sandbox.
    let port = srv.port.to_string();
    let scp = |from: String, to: String| {
        let mut cmd = tokio::process::Command::new("scp");
        cmd.arg("-O")
            .args(srv.options(Some(&key)))
            .args(["-P", &port])
            .arg(from)
            .arg(to)
            .kill_on_drop(true);
        async move {
            tokio::time::timeout(wharf_testkit::WAIT * 3, cmd.output())
                .await
                .expect("in time")
                .expect("scp")
        }
    };
    let out = scp(
        src.join("big.bin").display().to_string(),
        "alice@127.0.0.1:legacy.bin".into(),
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read(alice.home.join("legacy.bin")).expect("up"),
        big
    );
    let down = here.path().join("legacy-back.bin");
    let out = scp(
        "alice@127.0.0.1:legacy.bin".into(),
        down.display().to_string(),
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(std::fs::read(&down).expect("down"), big);
}

#[tokio::test]
async fn a_command_past_the_quota_is_stopped_and_the_home_kept_within_it() {
    let srv = spawn_exec().await;
    let alice = srv.add_user("alice", Some(1 << 20), "exec").await;
    let key = srv.give_key("alice").await;
    let out = srv
        .ssh("alice", &key, &[], Some("head -c 4M /dev/zero > big"), "")
        .await;
    assert!(!out.status.success());
    let size = std::fs::metadata(alice.home.join("big")).map_or(0, |m| m.len());
    assert!(size <= 1 << 20, "{size} bytes kept past a 1 MiB quota");
}

#[tokio::test]
async fn a_lock_ends_a_running_command_within_seconds() {
    use tokio::io::AsyncBufReadExt;
    let srv = spawn_exec().await;
    srv.add_user("alice", None, "exec").await;
    let key = srv.give_key("alice").await;
    let mut child = tokio::process::Command::new("ssh")
        .args(srv.options(Some(&key)))
        .args(["-p", &srv.port.to_string(), "alice@127.0.0.1"])
        .arg("echo up; sleep 60")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("ssh");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let up = tokio::time::timeout(wharf_testkit::WAIT, lines.next_line())
        .await
        .expect("in time")
        .expect("a line");
    assert_eq!(up.as_deref(), Some("up"));
    let said = srv.lock_ends("alice", child).await;
    assert!(said.contains(r#"account "alice" is locked"#), "{said}");
}

#[tokio::test]
async fn a_lock_ends_a_live_shell_on_a_terminal_within_seconds() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let srv = spawn_exec().await;
    srv.add_user("alice", None, "exec").await;
    let key = srv.give_key("alice").await;
    let mut child = tokio::process::Command::new("ssh")
        .args(srv.options(Some(&key)))
        .args(["-tt", "-p", &srv.port.to_string(), "alice@127.0.0.1"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("ssh");
    let mut stdin = child.stdin.take().expect("stdin");
    // The typed line is echoed as typed; only the shell's output joins the
    // two halves.
    stdin
        .write_all(b"echo SHELL''-IS-UP\n")
        .await
        .expect("typed");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut seen = Vec::new();
    let up = tokio::time::timeout(wharf_testkit::WAIT, async {
        let mut buf = [0u8; 4096];
        loop {
            match stdout.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
            if String::from_utf8_lossy(&seen).contains("SHELL-IS-UP") {
                return true;
            }
        }
    })
    .await
    .expect("the shell answers in time");
    assert!(up, "{}", String::from_utf8_lossy(&seen));
    child.stdout = Some(stdout);
    let said = srv.lock_ends("alice", child).await;
    assert!(said.contains("locked"), "{said}");
    drop(stdin);
}
