//! The file shell on a terminal: line editing, history, Tab completion of
//! remote paths, Ctrl-C. The real `wharf-ftp` on a pseudo-terminal
//! (expectrl) against an in-process server.

use crate::common;
use wharf_testkit::terminal;

use common::{PW, data, eventually, spawn, tls};
use terminal::{Terminal, blocking};

fn shell(addr: &str, cwd: &std::path::Path, home: &std::path::Path, args: &[&str]) -> Terminal {
    let mut cmd = std::process::Command::new(wharf_testkit::cli::bin("wharf-ftp"));
    cmd.args(["--server", addr, "--user", "alice"])
        .args(args)
        .current_dir(cwd)
        .env("HOME", home)
        .env_remove("XDG_DATA_HOME")
        .env("WHARF_CA", &tls().2)
        .env("WHARF_PASSWORD", PW);
    Terminal::start(cmd, 120, 30)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tab_completes_remote_paths_and_history_is_kept() {
    let srv = spawn().await;
    srv.add_user("alice", None, "ftp").await;
    let home = srv.home("alice");
    std::fs::create_dir_all(home.join("projects/web site")).expect("mkdir");
    std::fs::write(home.join("projects/web site/index.html"), b"<p>hi</p>").expect("write");
    std::fs::write(home.join("projects/notes.txt"), b"notes").expect("write");
    let work = srv.dir.path().join("work");
    let user_home = srv.dir.path().join("user");
    std::fs::create_dir_all(&work).expect("mkdir");
    std::fs::create_dir_all(&user_home).expect("mkdir");
    let (addr, w, h) = (srv.addr.clone(), work.clone(), user_home.clone());
    let code = blocking(move || {
        let mut t = shell(&addr, &w, &h, &[]);
        t.prompt("wharf:/> ");
        // A command, then a directory from the server, then a name with a
        // space in it, all by Tab.
        t.keys("ge\t");
        t.sees("get ");
        t.keys("pro\t");
        t.sees("projects/");
        t.keys("web\t");
        t.sees("web\\ site/");
        t.keys("ind\t");
        t.sees("index.html");
        t.line(" page.html");
        t.sees("page.html (9 bytes");
        t.prompt("wharf:/> ");
        // Up recalls the last line; Ctrl-A and Ctrl-K edit it.
        t.keys("\x1b[A");
        t.sees("get projects/web\\ site/index.html page.html");
        t.keys("\x01\x0b");
        t.line("ls projects");
        t.sees("notes.txt");
        t.prompt("wharf:/> ");
        // Ctrl-R searches back.
        t.ctrl_r();
        t.keys("index");
        t.sees("(reverse-i-search)`index': get projects/web\\ site/index.html page.html");
        t.ctrl_c();
        t.prompt("wharf:/> ");
        t.ctrl_d();
        t.exit_code()
    })
    .await;
    assert_eq!(code, Some(0));
    assert_eq!(
        std::fs::read(work.join("page.html")).expect("downloaded"),
        b"<p>hi</p>"
    );
    // The history is the user's own, private, and read at the next start.
    let file = user_home.join(".local/share/wharf/ftp_history");
    let meta = std::fs::metadata(&file).expect("history file");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let kept = std::fs::read_to_string(&file).expect("history");
    assert!(
        kept.ends_with("get projects/web\\\\ site/index.html page.html\nls projects\n"),
        "{kept:?}"
    );
    let (addr, w, h) = (srv.addr.clone(), work.clone(), user_home.clone());
    let code = blocking(move || {
        let mut t = shell(&addr, &w, &h, &[]);
        t.prompt("wharf:/> ");
        // The history of the last session: Up, Up.
        t.keys("\x1b[A");
        t.sees("ls projects");
        t.keys("\x1b[A");
        t.sees("get projects/web\\ site/index.html page.html");
        t.ctrl_c();
        t.line("quit");
        t.exit_code()
    })
    .await;
    assert_eq!(code, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_on_a_terminal_cancels_the_transfer_and_the_prompt_comes_back() {
    let srv = spawn().await;
    srv.add_user("alice", None, "ftp").await;
    let home = srv.home("alice");
    std::fs::create_dir_all(home.join("d")).expect("mkdir");
    std::fs::write(home.join("d/big.bin"), data(2_000_000, 3)).expect("write");
    let work = srv.dir.path().join("work");
    std::fs::create_dir_all(&work).expect("mkdir");
    let (addr, w) = (srv.addr.clone(), work.clone());
    let mut t = blocking(move || {
        let mut t = shell(&addr, &w, &w, &["--limit-rate", "200K"]);
        t.prompt("wharf:/> ");
        t.line("cd d");
        t.prompt("wharf:/d> ");
        t.line("get big.bin");
        t
    })
    .await;
    let part = work.join("big.bin.part");
    eventually("the download is under way", || {
        std::fs::metadata(&part).is_ok_and(|m| m.len() > 0)
    })
    .await;
    let code = blocking(move || {
        t.ctrl_c();
        t.sees("cancelled");
        // Still in /d, on a new connection.
        t.prompt("wharf:/d> ");
        t.line("pwd");
        t.sees("/d\r\n");
        t.prompt("wharf:/d> ");
        // Ctrl-C at the prompt drops the line typed, and quits nothing.
        t.keys("rm big");
        t.ctrl_c();
        t.prompt("wharf:/d> ");
        t.line("ls");
        t.sees("big.bin");
        t.prompt("wharf:/d> ");
        t.line("quit");
        t.exit_code()
    })
    .await;
    assert_eq!(code, Some(0));
    let kept = std::fs::metadata(&part).expect("partial kept").len();
    assert!(kept > 0 && kept < 2_000_000, "{kept}");
    assert!(home.join("d/big.bin").exists(), "the rm typed was dropped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwd_in_the_shell_then_only_the_new_password_logs_in() {
    let srv = spawn().await;
    srv.add_user("alice", None, "ftp").await;
    let work = srv.dir.path().join("work");
    std::fs::create_dir_all(&work).expect("mkdir");
    let (addr, w) = (srv.addr.clone(), work.clone());
    let code = blocking(move || {
        let mut t = shell(&addr, &w, &w, &[]);
        t.prompt("wharf:/> ");
        t.line("passwd");
        t.sees("New password for alice: ");
        t.line("battery staple");
        t.sees("Repeat the password: ");
        t.line("battery stable");
        t.sees("the two passwords differ; nothing was changed");
        t.prompt("wharf:/> ");
        t.line("passwd");
        t.sees("New password for alice: ");
        t.line("battery staple");
        t.sees("Repeat the password: ");
        t.line("battery staple");
        t.sees("password changed for alice");
        t.prompt("wharf:/> ");
        t.line("quit");
        t.exit_code()
    })
    .await;
    assert_eq!(code, Some(0));
    let connect = |pw: &'static str| {
        let addr = srv.addr.clone();
        async move {
            wharf_ftp::client::Client::connect(
                &addr,
                &tls().1,
                "alice",
                &wharf_core::Password::new(pw),
            )
            .await
        }
    };
    assert!(connect(PW).await.is_err(), "the old password is refused");
    assert!(connect("battery staple").await.is_ok());
}

/// Lines pasted at once (a terminal's bracketed paste gives them as one)
/// run one by one, each as if typed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pasted_lines_each_run() {
    let srv = spawn().await;
    srv.add_user("alice", None, "ftp").await;
    let work = srv.dir.path().join("work");
    let user_home = srv.dir.path().join("user");
    std::fs::create_dir_all(&work).expect("mkdir");
    std::fs::create_dir_all(&user_home).expect("mkdir");
    let (addr, w, h) = (srv.addr.clone(), work.clone(), user_home.clone());
    let code = blocking(move || {
        let mut t = shell(&addr, &w, &h, &[]);
        t.prompt("wharf:/> ");
        t.keys("\x1b[200~mkdir one\nmkdir two\ncd two\x1b[201~");
        t.line("");
        t.sees("wharf:/> mkdir two");
        t.sees("wharf:/> cd two");
        t.prompt("wharf:/two> ");
        t.line("quit");
        t.exit_code()
    })
    .await;
    assert_eq!(code, Some(0));
    let home = srv.home("alice");
    assert!(home.join("one").is_dir() && home.join("two").is_dir());
}

/// A one-shot get cancelled with Ctrl-C says what the shell says: what was
/// transferred is kept for a resume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_in_a_one_shot_get_says_how_to_resume() {
    let srv = spawn().await;
    srv.add_user("alice", None, "ftp").await;
    std::fs::write(srv.home("alice").join("big.bin"), data(2_000_000, 5)).expect("write");
    let work = srv.dir.path().join("work");
    std::fs::create_dir_all(&work).expect("mkdir");
    let (addr, w) = (srv.addr.clone(), work.clone());
    let mut t =
        blocking(move || shell(&addr, &w, &w, &["--limit-rate", "200K", "get", "big.bin"])).await;
    let part = work.join("big.bin.part");
    eventually("the download is under way", || {
        std::fs::metadata(&part).is_ok_and(|m| m.len() > 0)
    })
    .await;
    let code = blocking(move || {
        t.ctrl_c();
        t.sees("cancelled (what was transferred is kept: run the same command to resume)");
        t.exit_code()
    })
    .await;
    assert_eq!(code, Some(130));
    assert!(
        std::fs::metadata(&part).is_ok_and(|m| m.len() > 0),
        "the partial went"
    );
}

/// A password mistyped at the terminal is asked again, three tries in all,
/// as ssh does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mistyped_password_is_asked_again() {
    let srv = spawn().await;
    srv.add_user("alice", None, "ftp").await;
    let work = srv.dir.path().join("work");
    std::fs::create_dir_all(&work).expect("mkdir");
    let addr = srv.addr.clone();
    let code = blocking(move || {
        let mut cmd = std::process::Command::new(wharf_testkit::cli::bin("wharf-ftp"));
        cmd.args(["--server", &addr, "--user", "alice", "ls"])
            .current_dir(&work)
            .env("HOME", &work)
            .env("WHARF_CA", &tls().2)
            .env_remove("WHARF_PASSWORD");
        let mut t = Terminal::start(cmd, 100, 30);
        t.sees("Password for alice at");
        t.line("not the password");
        t.sees("wrong user name or password; try again");
        t.sees("Password for alice at");
        t.line(PW);
        t.exit_code()
    })
    .await;
    assert_eq!(code, Some(0));
    // Three wrong ones: the third is final.
    let addr = srv.addr.clone();
    let work = srv.dir.path().join("work");
    let code = blocking(move || {
        let mut cmd = std::process::Command::new(wharf_testkit::cli::bin("wharf-ftp"));
        cmd.args(["--server", &addr, "--user", "alice", "ls"])
            .current_dir(&work)
            .env("HOME", &work)
            .env("WHARF_CA", &tls().2)
            .env_remove("WHARF_PASSWORD");
        let mut t = Terminal::start(cmd, 100, 30);
        for _ in 0..3 {
            t.sees("Password for alice at");
            t.line("still not it");
        }
        t.sees("cannot log in to");
        t.exit_code()
    })
    .await;
    assert_eq!(code, Some(1));
}
