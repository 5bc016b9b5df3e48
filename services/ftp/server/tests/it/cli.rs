//! The real `wharf-ftp` binary against an in-process server.

use crate::common;
use wharf_testkit::cli::text;

use std::process::Output;

use common::{PW, cut_upload, data, eventually, partials, spawn, tls};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use wharf_core::transfer::md5_hex;

async fn ftp(addr: &str, cwd: &std::path::Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(wharf_testkit::cli::bin("wharf-ftp"));
    cmd.args(["--server", addr, "--user", "alice"])
        .args(args)
        .current_dir(cwd)
        .env("WHARF_CA", &tls().2)
        .env("WHARF_PASSWORD", PW)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("spawn wharf-ftp");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).await.expect("stdin");
    }
    drop(input);
    child.wait_with_output().await.expect("wait")
}

#[tokio::test]
async fn put_get_and_ls_json_from_the_command_line() {
    let srv = spawn().await;
    srv.add_user("alice", None, "ftp").await;
    let work = srv.dir.path().join("work");
    std::fs::create_dir_all(&work).expect("mkdir");
    let bytes = data(200_000, 21);
    std::fs::write(work.join("my file.bin"), &bytes).expect("write");

    let out = ftp(&srv.addr, &work, &["put", "my file.bin"], None).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        format!(
            "my file.bin -> /my file.bin (200000 bytes, md5 {})",
            md5_hex(&bytes)
        )
    );
    assert_eq!(
        text(&out.stderr),
        "",
        "no progress bar when stderr is not a terminal"
    );

    let out = ftp(&srv.addr, &work, &["ls", "--json"], None).await;
    assert!(out.status.success());
    let listing: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(listing[0]["name"], "my file.bin");
    assert_eq!(listing[0]["type"], "file");
    assert_eq!(listing[0]["size"], 200_000);
    assert!(
        listing[0]["mtime"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );

    let out = ftp(&srv.addr, &work, &["ls"], None).await;
    let line = text(&out.stdout);
    assert!(
        line.starts_with("-  195.3 KiB  ") && line.trim_end().ends_with("  my file.bin"),
        "{line:?}"
    );

    let out = ftp(&srv.addr, &work, &["get", "my file.bin", "copy.bin"], None).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(std::fs::read(work.join("copy.bin")).expect("copy"), bytes);

    let out = ftp(&srv.addr, &work, &["get", "missing"], None).await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("wharf-ftp: get missing: /missing: no such file or directory"),
        "{err}"
    );
}

#[tokio::test]
async fn an_interrupted_upload_says_where_it_resumes() {
    let srv = spawn().await;
    srv.add_user("alice", None, "ftp").await;
    let work = srv.dir.path().join("work");
    std::fs::create_dir_all(&work).expect("mkdir");
    let bytes = data(1_000_000, 22);
    std::fs::write(work.join("f"), &bytes).expect("write");
    cut_upload(&srv.addr, "f", &bytes, 400_000).await;
    let home = srv.home("alice");
    eventually("partial", || {
        partials(&home).first().is_some_and(|p| p.1 == 400_000)
    })
    .await;
    // The server may still hold the partial's lock for a moment: retry while busy.
    let mut out = ftp(&srv.addr, &work, &["put", "f"], None).await;
    for _ in 0..100 {
        if out.status.success() || !text(&out.stderr).contains("in progress") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        out = ftp(&srv.addr, &work, &["put", "f"], None).await;
    }
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr).trim(), "resuming at 400000 bytes");
    assert_eq!(std::fs::read(home.join("f")).expect("stored"), bytes);
}

#[tokio::test]
async fn partials_lists_interrupted_uploads_and_discard_drops_them() {
    let srv = spawn().await;
    srv.add_user("alice", None, "ftp").await;
    let work = srv.dir.path().join("work");
    std::fs::create_dir_all(&work).expect("mkdir");
    let bytes = data(3 << 20, 23);
    cut_upload(&srv.addr, "movie.mkv", &bytes, 1 << 20).await;
    let home = srv.home("alice");
    eventually("partial", || {
        partials(&home).first().is_some_and(|p| p.1 == 1 << 20)
    })
    .await;
    let out = ftp(&srv.addr, &work, &["partials"], None).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed = text(&out.stdout);
    assert!(
        listed.trim_start().starts_with("1 MiB of 3 MiB "),
        "{listed}"
    );
    assert_eq!(listed.lines().count(), 1, "{listed}");
    assert!(listed.contains("  /movie.mkv"), "{listed}");
    let out = ftp(&srv.addr, &work, &["discard"], None).await;
    assert_eq!(out.status.code(), Some(2), "a path or --all is needed");
    let mut out = ftp(&srv.addr, &work, &["discard", "movie.mkv"], None).await;
    for _ in 0..100 {
        // The cut session may hold the partial for a moment.
        if out.status.success() || !text(&out.stderr).contains("under way") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        out = ftp(&srv.addr, &work, &["discard", "movie.mkv"], None).await;
    }
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        "discarded 1 interrupted upload; 3 MiB of quota freed"
    );
    let out = ftp(&srv.addr, &work, &["partials"], None).await;
    assert_eq!(text(&out.stdout).trim(), "no interrupted uploads");
    assert_eq!(srv.user("alice").await.reserved_bytes, 0);
}

#[tokio::test]
async fn the_shell_reads_commands_from_a_pipe() {
    let srv = spawn().await;
    srv.add_user("alice", None, "ftp").await;
    let work = srv.dir.path().join("work");
    std::fs::create_dir_all(&work).expect("mkdir");
    std::fs::write(work.join("notes.txt"), b"notes").expect("write");
    let script = "mkdir docs\ncd docs\nput notes.txt\npwd\nls --json\ncd ..\ncd ..\npwd\nmv docs/notes.txt 'notes 2.txt'\nls\n";
    let out = ftp(&srv.addr, &work, &[], Some(script)).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[0],
        format!(
            "notes.txt -> /docs/notes.txt (5 bytes, md5 {})",
            md5_hex(b"notes")
        )
    );
    assert_eq!(lines[1], "/docs");
    assert!(stdout.contains("\"name\": \"notes.txt\""), "{stdout}");
    assert!(lines.contains(&"/"), "{stdout}");
    assert!(
        lines.last().is_some_and(|l| l.ends_with("  notes 2.txt")),
        "{stdout}"
    );
    assert!(srv.home("alice").join("notes 2.txt").exists());

    // A failing line stops a piped script with 1, as `sftp -b` does: the
    // `rm` after a failed `cd` never runs in the wrong folder.
    std::fs::write(srv.home("alice").join("x"), b"keep").expect("x");
    let out = ftp(&srv.addr, &work, &[], Some("cd nodir\nrm x\n")).await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("stopped at line 1 (cd nodir): the lines after it were not run"),
        "{err}"
    );
    assert!(
        srv.home("alice").join("x").exists(),
        "rm ran after the failure"
    );
    // A line starting with `-` may fail; the script goes on.
    let out = ftp(
        &srv.addr,
        &work,
        &[],
        Some("-rm nothing-here\nbogus\nmkdir after\n"),
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("rm nothing-here: /nothing-here: no such file or directory"),
        "{err}"
    );
    assert!(err.contains("unrecognized subcommand 'bogus'"), "{err}");
    assert!(err.contains("stopped at line 2 (bogus)"), "{err}");
    assert!(!srv.home("alice").join("after").exists());
}

#[tokio::test]
async fn a_script_of_puts_is_sent_as_a_batch_and_reports_each_line() {
    let srv = spawn().await;
    srv.add_user("alice", Some(100_000), "ftp").await;
    let work = srv.dir.path().join("work");
    std::fs::create_dir_all(&work).expect("mkdir");
    let mut script = String::from("mkdir in\n");
    let mut expected = Vec::new();
    for i in 0..40u8 {
        let body = data(1_000 + usize::from(i), i.into());
        std::fs::write(work.join(format!("f{i}")), &body).expect("write");
        script.push_str(&format!("put f{i} in/\n"));
        expected.push(format!(
            "f{i} -> /in/f{i} ({} bytes, md5 {})",
            body.len(),
            md5_hex(&body)
        ));
    }
    script.push_str("ls in\n");
    let out = ftp(&srv.addr, &work, &[], Some(&script)).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[..40], expected[..], "{stdout}");
    assert_eq!(
        lines.len(),
        80,
        "the ls after the puts lists all 40: {stdout}"
    );
    for i in 0..40u8 {
        let stored = std::fs::read(srv.home("alice").join(format!("in/f{i}"))).expect("stored");
        assert_eq!(stored, data(1_000 + usize::from(i), i.into()));
    }

    // A put that fails stops the script, as its own line would have: over
    // quota here. The line after it never runs; a put sent with it in the
    // same batch is there, and the script says so.
    std::fs::write(work.join("big"), data(200_000, 9)).expect("big");
    std::fs::write(work.join("small"), b"small").expect("small");
    let out = ftp(
        &srv.addr,
        &work,
        &[],
        Some("put small s1\n-put big b1\nput big b2\nput small s2\nmkdir after\n"),
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert_eq!(
        err.matches("wharf-ftp: put big: ").count(),
        2,
        "both puts of big fail, each said once: {err}"
    );
    assert!(err.contains("quota"), "{err}");
    assert!(err.contains("stopped at line 3 (put big b2)"), "{err}");
    let home = srv.home("alice");
    assert!(home.join("s1").exists());
    assert!(!home.join("b1").exists() && !home.join("b2").exists());
    assert!(!home.join("after").exists(), "the line after the stop ran");
    assert_eq!(
        home.join("s2").exists(),
        err.contains("lines 4 to 4 were puts sent with line 3"),
        "a put sent in the batch is said: {err}"
    );
    assert_eq!(srv.user("alice").await.reserved_bytes, 0);
}

#[tokio::test]
async fn a_wrong_password_fails_with_one_line() {
    let srv = spawn().await;
    srv.add_user("alice", None, "ftp").await;
    let out = Command::new(wharf_testkit::cli::bin("wharf-ftp"))
        .args(["--server", &srv.addr, "--user", "alice", "ls"])
        .env("WHARF_CA", &tls().2)
        .env("WHARF_PASSWORD", "not the password")
        .output()
        .await
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr).trim(),
        format!(
            "wharf-ftp: cannot log in to {} as alice: wrong user name or password",
            srv.addr
        )
    );
}

#[tokio::test]
async fn put_r_and_mput_send_trees_and_patterns_and_say_what_failed() {
    let srv = spawn().await;
    srv.add_user("alice", None, "ftp").await;
    let work = srv.dir.path().join("work");
    let tree = work.join("tree");
    std::fs::create_dir_all(tree.join("sub/deeper")).expect("mkdir");
    std::fs::create_dir_all(tree.join("empty")).expect("mkdir");
    std::fs::write(tree.join("a.txt"), b"a").expect("write");
    std::fs::write(tree.join("sub/b.bin"), data(400_000, 1)).expect("write");
    std::fs::write(tree.join("sub/deeper/c.txt"), b"c").expect("write");
    std::os::unix::fs::symlink(&tree, tree.join("sub/loop")).expect("link");

    let out = ftp(&srv.addr, &work, &["put", "-r", "tree", "backup"], None).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let home = srv.home("alice");
    assert_eq!(std::fs::read(home.join("backup/a.txt")).expect("a"), b"a");
    assert_eq!(
        std::fs::read(home.join("backup/sub/b.bin")).expect("b"),
        data(400_000, 1)
    );
    assert_eq!(
        std::fs::read(home.join("backup/sub/deeper/c.txt")).expect("c"),
        b"c"
    );
    assert!(home.join("backup/empty").is_dir());
    assert!(!home.join("backup/sub/loop").exists());
    assert!(text(&out.stderr).contains("skipping tree/sub/loop: a link to a directory"));
    let lines: Vec<String> = text(&out.stdout).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines[0].starts_with("tree/a.txt -> /backup/a.txt (1 bytes, md5 "));

    // Again, into the same tree: files are replaced, directories kept.
    let out = ftp(&srv.addr, &work, &["put", "-r", "tree", "backup"], None).await;
    assert!(out.status.success(), "{}", text(&out.stderr));

    // mput with a pattern matched by the client (in the shell, no shell
    // expands it), into a directory; one file cannot go.
    for i in 0..5 {
        std::fs::write(work.join(format!("n{i}.log")), format!("log {i}")).expect("write");
    }
    let out = ftp(
        &srv.addr,
        &work,
        &[],
        Some("mkdir logs\nmput n*.log -O logs\nmput n0.log -O nowhere\nput n1.log logs/\n"),
    )
    .await;
    assert!(!out.status.success(), "a failed command fails the script");
    for i in 0..5 {
        assert_eq!(
            std::fs::read_to_string(home.join(format!("logs/n{i}.log"))).expect("log"),
            format!("log {i}")
        );
    }
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("wharf-ftp: put n0.log: ") && stderr.contains("1 of 1 file failed"),
        "{stderr}"
    );
    assert!(text(&out.stdout).contains("n1.log -> /logs/n1.log"));

    let out = ftp(&srv.addr, &work, &["mput", "zz*"], None).await;
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("no local file matches zz*"));
}

#[tokio::test]
async fn an_empty_password_variable_is_not_sent_and_errors_are_said_once() {
    let srv = spawn().await;
    srv.add_user("alice", None, "ftp").await;
    let work = srv.dir.path().join("work");
    std::fs::create_dir_all(work.join("adir")).expect("mkdir");

    // WHARF_PASSWORD set but empty: asked for instead, and without a
    // terminal to ask on (setsid: no controlling terminal), refused here.
    let out = Command::new("setsid")
        .arg(wharf_testkit::cli::bin("wharf-ftp"))
        .args(["--server", &srv.addr, "--user", "alice", "ls"])
        .current_dir(&work)
        .env("WHARF_CA", &tls().2)
        .env("WHARF_PASSWORD", "")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("setsid wharf-ftp");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no password: set WHARF_PASSWORD or run in a terminal"),
        "{}",
        text(&out.stderr)
    );

    let out = ftp(&srv.addr, &work, &[], Some("put adir\n")).await;
    let stderr = text(&out.stderr);
    assert_eq!(
        stderr.trim_end(),
        "wharf-ftp: put adir: adir: a directory: put -r uploads it and everything under it",
        "said once"
    );
}

#[tokio::test]
async fn quota_shows_used_held_and_free() {
    let srv = spawn().await;
    srv.add_user("alice", Some(1_000_000), "ftp").await;
    let work = srv.dir.path().join("work");
    std::fs::create_dir_all(&work).expect("mkdir");
    std::fs::write(work.join("f"), data(2_000, 3)).expect("write");
    let out = ftp(&srv.addr, &work, &["put", "f"], None).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    // An interrupted upload holds its whole size.
    cut_upload(&srv.addr, "big", &data(400_000, 4), 100_000).await;
    // The server notices the cut when its read fails.
    for _ in 0..100 {
        if partials(&srv.home("alice"))
            .iter()
            .any(|(_, n)| *n == 100_000)
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let out = ftp(&srv.addr, &work, &["quota", "--json"], None).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let q: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        q,
        serde_json::json!({"used": 2000, "reserved": 400_000, "quota": 1_000_000, "files": 1,
            "reserved_files": 1, "files_quota": null, "free": 598_000})
    );
    let out = ftp(&srv.addr, &work, &[], Some("df\n")).await;
    assert_eq!(
        text(&out.stdout),
        "used           2 KiB  (1 file)\n\
         reserved   390.6 KiB  (uploads under way or interrupted; see `partials`)\n\
         quota      976.6 KiB\n\
         free         584 KiB\n"
    );
}

/// Every file under `root`, relative, with its bytes.
fn tree_of(root: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("read_dir") {
            let path = e.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path
                    .strip_prefix(root)
                    .expect("inside")
                    .display()
                    .to_string();
                out.push((rel, std::fs::read(&path).expect("read")));
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn a_tree_goes_up_with_put_r_and_comes_back_identical_with_get_r_and_mget_matches() {
    let srv = spawn().await;
    srv.add_user("alice", None, "ftp").await;
    let work = srv.dir.path().join("work");
    let tree = work.join("project");
    std::fs::create_dir_all(tree.join("src/deep")).expect("mkdir");
    std::fs::create_dir_all(tree.join("empty")).expect("mkdir");
    std::fs::write(tree.join("a.log"), b"first log").expect("write");
    std::fs::write(tree.join("b.log"), b"second log").expect("write");
    std::fs::write(tree.join("notes.txt"), b"notes").expect("write");
    std::fs::write(tree.join("src/main.rs"), data(300_000, 7)).expect("write");
    std::fs::write(tree.join("src/deep/x.bin"), data(1_000, 8)).expect("write");

    let out = ftp(&srv.addr, &work, &["put", "-r", "project"], None).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = ftp(&srv.addr, &work, &["get", "-r", "project", "copy"], None).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(tree_of(&work.join("copy")), tree_of(&tree));
    assert!(work.join("copy/empty").is_dir());
    assert_eq!(text(&out.stdout).lines().count(), 5);

    // In the shell, where no shell expands the pattern.
    std::fs::create_dir_all(work.join("logs")).expect("mkdir");
    let out = ftp(
        &srv.addr,
        &work,
        &[],
        Some("mget 'project/*.log' -O logs\nmget 'project/*.none'\n"),
    )
    .await;
    assert_eq!(
        std::fs::read(work.join("logs/a.log")).expect("a.log"),
        b"first log"
    );
    assert_eq!(
        std::fs::read(work.join("logs/b.log")).expect("b.log"),
        b"second log"
    );
    assert!(!work.join("logs/notes.txt").exists());
    assert!(
        text(&out.stderr).contains("no remote file matches project/*.none"),
        "{}",
        text(&out.stderr)
    );
    assert!(!out.status.success());
}

#[tokio::test]
async fn ctrl_c_cancels_the_transfer_and_the_shell_goes_on() {
    let srv = spawn().await;
    srv.add_user("alice", None, "ftp").await;
    let work = srv.dir.path().join("work");
    std::fs::create_dir_all(&work).expect("mkdir");
    let bytes = data(2_000_000, 9);
    std::fs::write(work.join("big.bin"), &bytes).expect("write");
    let out = ftp(&srv.addr, &work, &["mkdir", "d"], None).await;
    assert!(out.status.success());
    let out = ftp(&srv.addr, &work, &["put", "big.bin", "d/big.bin"], None).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    std::fs::remove_file(work.join("big.bin")).expect("rm");

    let mut child = Command::new(wharf_testkit::cli::bin("wharf-ftp"))
        .args([
            "--server",
            &srv.addr,
            "--user",
            "alice",
            "--limit-rate",
            "200K",
        ])
        .current_dir(&work)
        .env("WHARF_CA", &tls().2)
        .env("WHARF_PASSWORD", PW)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("wharf-ftp");
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(b"cd d\nget big.bin\n")
        .await
        .expect("stdin");
    let part = work.join("big.bin.part");
    eventually("the download is under way", || {
        std::fs::metadata(&part).is_ok_and(|m| m.len() > 0)
    })
    .await;
    let pid =
        rustix::process::Pid::from_raw(child.id().and_then(|p| i32::try_from(p).ok()).unwrap_or(0))
            .expect("pid");
    rustix::process::kill_process(pid, rustix::process::Signal::INT).expect("SIGINT");
    input.write_all(b"pwd\n").await.expect("stdin");
    drop(input);
    let out = child.wait_with_output().await.expect("wait");
    let stderr = text(&out.stderr);
    assert!(stderr.contains("wharf-ftp: cancelled"), "{stderr}");
    assert_eq!(
        text(&out.stdout),
        "/d\n",
        "the shell went on, in the same directory"
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "a cancelled command fails the script"
    );
    let kept = std::fs::metadata(&part)
        .expect("the partial download stays")
        .len();
    assert!(kept > 0 && kept < 2_000_000, "{kept}");

    let out = ftp(&srv.addr, &work, &["get", "d/big.bin"], None).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("resuming at"),
        "{}",
        text(&out.stderr)
    );
    assert!(std::fs::read(work.join("big.bin")).expect("big") == bytes);
}

#[tokio::test]
async fn the_shell_works_here_too_lcd_lls_and_bang() {
    let srv = spawn().await;
    srv.add_user("alice", None, "ftp").await;
    let work = srv.dir.path().join("work");
    std::fs::create_dir_all(work.join("sub/inner")).expect("mkdir");
    let out = ftp(
        &srv.addr,
        &work,
        &[],
        Some("lcd sub\nlpwd\n!printf 'made here\\n' > made.txt\nput made.txt\nlls\n-!exit 3\nlcd /no/such/dir\n"),
    )
    .await;
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    let sub = work.join("sub").canonicalize().expect("sub");
    assert_eq!(lines[0], sub.display().to_string());
    assert!(
        lines[1].starts_with("made.txt -> /made.txt (10 bytes"),
        "{stdout}"
    );
    assert!(
        lines[2].starts_with("d          -  ") && lines[2].ends_with("  inner/"),
        "{stdout}"
    );
    assert!(
        lines[3].starts_with("-       10 B  ") && lines[3].ends_with("  made.txt"),
        "{stdout}"
    );
    assert_eq!(
        std::fs::read(srv.home("alice").join("made.txt")).expect("made"),
        b"made here\n"
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("wharf-ftp: !exit 3: exit status: 3"),
        "{stderr}"
    );
    assert!(stderr.contains("wharf-ftp: lcd /no/such/dir: "), "{stderr}");
    assert!(!out.status.success());
}

/// The habits of sftp and a shell: `rm` of several files, `rm -r`, `ls -l`,
/// `dir`, `clear`, `bye`.
#[tokio::test]
async fn shell_habits_work_rm_r_rm_many_ls_l_dir_bye() {
    let srv = spawn().await;
    srv.add_user("alice", None, "ftp").await;
    let home = srv.home("alice");
    std::fs::create_dir_all(home.join("tree/a/b")).expect("mkdir");
    std::fs::write(home.join("tree/a/b/deep.txt"), b"x").expect("write");
    std::fs::write(home.join("tree/top.txt"), b"x").expect("write");
    for f in ["x1", "x2", "x3", "keep"] {
        std::fs::write(home.join(f), b"x").expect("write");
    }
    let work = srv.dir.path().join("work");
    std::fs::create_dir_all(&work).expect("mkdir");
    let out = ftp(
        &srv.addr,
        &work,
        &[],
        Some("rm x1 x2 x3\nrm -r tree\nls -l\ndir\nclear\nbye\nls\n"),
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!home.join("tree").exists(), "rm -r left the tree");
    for f in ["x1", "x2", "x3"] {
        assert!(!home.join(f).exists(), "{f} stayed");
    }
    let stdout = text(&out.stdout);
    // ls -l and dir each list the one file left; bye ends before the last ls.
    assert_eq!(stdout.matches("  keep").count(), 2, "{stdout}");
}
