//! OpenSSH's sftp and scp against the SSH door: logins by key and by
//! password, files both ways byte-identical, the quota, the jail, rights.

use crate::common::{data, spawn, spawn_with, text};

fn local() -> tempfile::TempDir {
    tempfile::tempdir().expect("a local folder")
}

#[tokio::test]
async fn a_key_logs_in_and_files_go_both_ways_byte_identical() {
    let srv = spawn().await;
    let alice = srv.add_user("alice", None, "ftp").await;
    let key = srv.give_key("alice").await;
    let here = local();
    let body = data(3 << 20, 7);
    std::fs::write(here.path().join("big.bin"), &body).expect("local file");
    let out = srv
        .sftp(
            "alice",
            Some(&key),
            "mkdir docs\nput big.bin docs/big.bin\nls -l docs\nget docs/big.bin back.bin\npwd\n",
            here.path(),
        )
        .await;
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_eq!(
        std::fs::read(here.path().join("back.bin")).expect("downloaded"),
        body
    );
    assert_eq!(
        std::fs::read(alice.home.join("docs/big.bin")).expect("in the home"),
        body
    );
    let said = text(&out.stdout);
    assert!(said.contains("big.bin"), "{said}");
    assert!(said.contains("Remote working directory: /"), "{said}");
    // The upload is recorded with its md5, as the native protocol's are.
    let usage = srv
        .store
        .usage_report(Some("alice"), 0)
        .await
        .expect("usage");
    assert_eq!(usage[0].uploads, 1, "{usage:?}");
    let keys = srv.store.keys("alice").await.expect("keys");
    assert!(keys[0].last_used_at.is_some(), "the key's use is recorded");
}

#[tokio::test]
async fn put_dash_f_asks_for_the_file_on_disk_and_gets_it_whole() {
    // `put -f` sends fsync@openssh.com before the close: the close then
    // syncs the file and its folder before it answers. Small (stored
    // whole) and streamed uploads both.
    let srv = spawn().await;
    let alice = srv.add_user("alice", None, "ftp").await;
    let key = srv.give_key("alice").await;
    let here = local();
    let (small, big) = (data(5_000, 3), data(2 << 20, 4));
    std::fs::write(here.path().join("small.bin"), &small).expect("local file");
    std::fs::write(here.path().join("big.bin"), &big).expect("local file");
    let out = srv
        .sftp(
            "alice",
            Some(&key),
            "put -f small.bin\nput -f big.bin\nput small.bin again.bin\n",
            here.path(),
        )
        .await;
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    for (name, body) in [
        ("small.bin", &small),
        ("big.bin", &big),
        ("again.bin", &small),
    ] {
        assert_eq!(&std::fs::read(alice.home.join(name)).expect("stored"), body);
    }
    let rows = srv
        .store
        .recent_transfers("alice", 0, 10)
        .await
        .expect("transfers");
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert!(rows.iter().all(|r| r.ok), "{rows:?}");
}

#[tokio::test]
async fn an_unknown_key_and_a_wrong_password_are_refused() {
    let srv = spawn().await;
    srv.add_user("alice", None, "ftp").await;
    srv.give_key("alice").await;
    let stranger = srv.key("stranger");
    let here = local();
    let out = srv
        .sftp("alice", Some(&stranger), "pwd\n", here.path())
        .await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("Permission denied"),
        "{}",
        text(&out.stderr)
    );
    // A name that does not exist reads the same.
    let out = srv
        .sftp("nobody", Some(&stranger), "pwd\n", here.path())
        .await;
    assert!(
        text(&out.stderr).contains("Permission denied"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn a_password_logs_in_unless_the_door_takes_keys_only() {
    let srv = spawn().await;
    srv.add_user("alice", None, "ftp").await;
    let here = local();
    let out = srv.sftp("alice", None, "pwd\n", here.path()).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("Remote working directory: /"));

    let keys_only = spawn_with(false).await;
    keys_only.add_user("alice", None, "ftp").await;
    let out = keys_only.sftp("alice", None, "pwd\n", here.path()).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("Permission denied"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn over_the_quota_an_upload_is_refused_in_wharfs_words_and_nothing_shows() {
    let srv = spawn().await;
    let alice = srv.add_user("alice", Some(1 << 20), "ftp").await;
    let key = srv.give_key("alice").await;
    let here = local();
    std::fs::write(here.path().join("big.bin"), data(3 << 20, 1)).expect("local file");
    let out = srv
        .sftp("alice", Some(&key), "put big.bin\n", here.path())
        .await;
    assert!(!out.status.success());
    let said = text(&out.stderr);
    assert!(said.contains("over quota"), "{said}");
    assert!(!alice.home.join("big.bin").exists(), "nothing visible");
    // The door still serves: a small file fits.
    std::fs::write(here.path().join("small.txt"), b"fits").expect("small");
    let out = srv
        .sftp("alice", Some(&key), "put small.txt\nls\n", here.path())
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!text(&out.stdout).contains("big.bin"));
}

#[tokio::test]
async fn small_files_are_stored_whole_and_past_the_quota_leave_nothing_on_the_books() {
    let srv = spawn().await;
    let alice = srv.add_user("alice", Some(100_000), "ftp").await;
    let here = local();
    for (name, size) in [("a.bin", 30_000), ("b.bin", 30_000), ("c.bin", 60_000)] {
        std::fs::write(here.path().join(name), data(size, 7)).expect("local file");
    }
    // a and b fit (60 kB); c (60 kB more) does not, and is not kept.
    let out = srv
        .sftp(
            "alice",
            None,
            "put a.bin\nput b.bin\nput c.bin\n",
            here.path(),
        )
        .await;
    assert!(
        text(&out.stderr).contains("over quota"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        std::fs::read(alice.home.join("a.bin")).expect("a"),
        data(30_000, 7)
    );
    assert!(alice.home.join("b.bin").exists());
    assert!(!alice.home.join("c.bin").exists(), "nothing visible");
    let user = srv.store.require_user("alice").await.expect("alice");
    assert_eq!(
        (
            user.used_bytes,
            user.reserved_bytes,
            user.file_count,
            user.reserved_files
        ),
        (60_000, 0, 2, 0)
    );
    // Replacing a file takes only its growth: a.bin again, larger, fits.
    std::fs::write(here.path().join("a.bin"), data(60_000, 8)).expect("local file");
    let out = srv.sftp("alice", None, "put a.bin\n", here.path()).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let user = srv.store.require_user("alice").await.expect("alice");
    assert_eq!((user.used_bytes, user.reserved_bytes), (90_000, 0));
    let recorded = srv
        .store
        .recent_transfers("alice", 0, 10)
        .await
        .expect("transfers");
    assert!(
        recorded.iter().any(|t| t.path == "/a.bin"
            && t.md5.as_deref() == Some(wharf_core::transfer::md5_hex(&data(60_000, 8)).as_str())),
        "{recorded:?}"
    );
}

#[tokio::test]
async fn a_streamed_upload_gets_its_md5_recorded_after_it_is_stored() {
    let srv = spawn().await;
    let alice = srv.add_user("alice", None, "ftp").await;
    let key = srv.give_key("alice").await;
    let here = local();
    let body = data(3 << 20, 4);
    std::fs::write(here.path().join("big.bin"), &body).expect("local file");
    let out = srv
        .sftp("alice", Some(&key), "put big.bin\n", here.path())
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let md5 = wharf_core::transfer::md5_hex(&body);
    let meta = std::fs::metadata(alice.home.join("big.bin")).expect("stored");
    let version = wharf_store::db::FileVersion::of(&meta);
    let mut known = None;
    for _ in 0..100 {
        known = srv
            .store
            .known_md5(alice.id, &version)
            .await
            .expect("digests");
        if known.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        known.as_deref(),
        Some(md5.as_str()),
        "the md5 is recorded for downloads"
    );
    let recorded = srv
        .store
        .recent_transfers("alice", 0, 10)
        .await
        .expect("transfers");
    assert_eq!(
        recorded[0].md5.as_deref(),
        Some(md5.as_str()),
        "{recorded:?}"
    );
}

#[tokio::test]
async fn paths_out_of_the_home_are_refused() {
    let srv = spawn().await;
    let alice = srv.add_user("alice", None, "ftp").await;
    let key = srv.give_key("alice").await;
    std::os::unix::fs::symlink("/etc", alice.home.join("out")).expect("a link out");
    let here = local();
    for (batch, what) in [
        ("get ../../etc/passwd\n", "escape"),
        ("get /../etc/hostname\n", "absolute escape"),
        ("get out/passwd\n", "link out of the home"),
        ("ls out\n", "listing through a link"),
    ] {
        let out = srv.sftp("alice", Some(&key), batch, here.path()).await;
        assert!(!out.status.success(), "{what}: {}", text(&out.stdout));
        assert!(!here.path().join("passwd").exists(), "{what}");
        assert!(!here.path().join("hostname").exists(), "{what}");
    }
    // `cd ..` at the top stays at the top.
    let out = srv
        .sftp("alice", Some(&key), "cd ..\npwd\n", here.path())
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("Remote working directory: /\n"),
        "{}",
        text(&out.stdout)
    );
}

#[tokio::test]
async fn sftp_needs_the_ftp_right() {
    let srv = spawn().await;
    srv.add_user("carol", None, "exec").await;
    let key = srv.give_key("carol").await;
    let here = local();
    let out = srv.sftp("carol", Some(&key), "pwd\n", here.path()).await;
    assert!(!out.status.success(), "{}", text(&out.stdout));
    // A user with neither right is not let in at all.
    srv.add_user("dave", None, "chat").await;
    let key = srv.give_key("dave").await;
    let out = srv.sftp("dave", Some(&key), "pwd\n", here.path()).await;
    assert!(
        text(&out.stderr).contains("Permission denied"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn scp_copies_both_ways() {
    let srv = spawn().await;
    let alice = srv.add_user("alice", None, "ftp").await;
    let key = srv.give_key("alice").await;
    let here = local();
    let body = data(200_000, 3);
    let from = here.path().join("notes.bin");
    std::fs::write(&from, &body).expect("local file");
    let out = srv
        .scp(
            &key,
            from.to_str().expect("path"),
            "alice@127.0.0.1:notes.bin",
        )
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read(alice.home.join("notes.bin")).expect("uploaded"),
        body
    );
    let back = here.path().join("back.bin");
    let out = srv
        .scp(
            &key,
            "alice@127.0.0.1:notes.bin",
            back.to_str().expect("path"),
        )
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(std::fs::read(&back).expect("downloaded"), body);
}

#[tokio::test]
async fn renames_removals_and_folders_work_as_sftp_expects() {
    let srv = spawn().await;
    let alice = srv.add_user("alice", None, "ftp").await;
    let key = srv.give_key("alice").await;
    let here = local();
    std::fs::write(here.path().join("a.txt"), b"a").expect("a");
    std::fs::write(here.path().join("b.txt"), b"b").expect("b");
    let out = srv
        .sftp(
            "alice",
            Some(&key),
            "put a.txt\nput b.txt\nrename a.txt c.txt\nmkdir d\nrename c.txt d/c.txt\nrm b.txt\nmkdir e\nrmdir e\ndf -h\n",
            here.path(),
        )
        .await;
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_eq!(
        std::fs::read(alice.home.join("d/c.txt")).expect("moved"),
        b"a"
    );
    assert!(!alice.home.join("b.txt").exists());
    assert!(!alice.home.join("e").exists());
    // A rename onto an existing name is refused (SFTP v3), the file kept.
    std::fs::write(here.path().join("x.txt"), b"x").expect("x");
    let out = srv
        .sftp(
            "alice",
            Some(&key),
            "put x.txt\n-rename x.txt d/c.txt\n",
            here.path(),
        )
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read(alice.home.join("d/c.txt")).expect("kept"),
        b"a"
    );
}

#[tokio::test]
async fn a_lock_ends_a_live_sftp_session_within_seconds() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let srv = spawn().await;
    srv.add_user("alice", None, "ftp").await;
    let key = srv.give_key("alice").await;
    let mut child = tokio::process::Command::new("sftp")
        .args(srv.options(Some(&key)))
        .args(["-P", &srv.port.to_string(), "alice@127.0.0.1"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("sftp");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(b"pwd\n").await.expect("a command");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let logged_in = tokio::time::timeout(wharf_testkit::WAIT, async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("Remote working directory") {
                return true;
            }
        }
        false
    })
    .await
    .expect("in time");
    assert!(logged_in, "the session is up");
    srv.store.set_locked("alice", true).await.expect("locked");
    let started = std::time::Instant::now();
    // The connection is ended with the reason, which ssh prints.
    let mut errors = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    let told = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while let Ok(Some(line)) = errors.next_line().await {
            if line.contains("Received disconnect") {
                return line;
            }
        }
        String::new()
    })
    .await
    .expect("the session ends soon after the lock");
    assert!(told.contains(r#"account "alice" is locked"#), "{told}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    drop(stdin);
    tokio::time::timeout(wharf_testkit::WAIT, child.wait())
        .await
        .expect("sftp ends with its input")
        .expect("status");
}

#[tokio::test]
async fn an_upload_cut_short_is_kept_and_reput_finishes_it() {
    let srv = spawn().await;
    let alice = srv.add_user("alice", None, "ftp").await;
    let key = srv.give_key("alice").await;
    let here = local();
    let body = data(8 << 20, 11);
    std::fs::write(here.path().join("big.bin"), &body).expect("local file");
    // Slowed to 8 Mbit/s and cut after a second: part of it is sent.
    let mut cut = tokio::process::Command::new("sftp")
        .args(srv.options(Some(&key)))
        .args(["-l", "8000", "-P", &srv.port.to_string(), "-b", "-"])
        .arg("alice@127.0.0.1")
        .current_dir(here.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("sftp");
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = cut.stdin.take().expect("stdin");
        stdin
            .write_all(b"put big.bin\n")
            .await
            .expect("the command");
    }
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let _ = cut.kill().await;
    // Nothing visible, the part kept (sftp's stat of the name shows it).
    wharf_testkit::eventually("the cut upload is kept", || {
        !alice.home.join("big.bin").exists()
            && std::fs::read_dir(alice.home.join(".wharf/partial"))
                .map(|d| d.count() == 1)
                .unwrap_or(false)
    })
    .await;
    let out = srv
        .sftp("alice", Some(&key), "reput big.bin\n", here.path())
        .await;
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_eq!(
        std::fs::read(alice.home.join("big.bin")).expect("finished"),
        body
    );
    assert_eq!(
        std::fs::read_dir(alice.home.join(".wharf/partial"))
            .map(|d| d.count())
            .unwrap_or(0),
        0,
        "the partial became the file"
    );
}

#[tokio::test]
async fn a_connection_that_never_logs_in_is_closed_at_the_login_deadline() {
    use tokio::io::AsyncReadExt;
    let srv = crate::common::spawn_with_login_timeout(std::time::Duration::from_secs(1)).await;
    let mut silent = tokio::net::TcpStream::connect(("127.0.0.1", srv.port))
        .await
        .expect("connect");
    let started = std::time::Instant::now();
    let mut buf = vec![0u8; 4096];
    // The server's greeting, then nothing more: closed at the deadline.
    let ended = tokio::time::timeout(wharf_testkit::WAIT, async {
        loop {
            match silent.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "closed");
    let took = started.elapsed();
    assert!(
        took >= std::time::Duration::from_millis(900) && took < std::time::Duration::from_secs(5),
        "{took:?}"
    );
    // The door still serves others.
    srv.add_user("alice", None, "ftp").await;
    let key = srv.give_key("alice").await;
    let out = srv.sftp("alice", Some(&key), "pwd\n", local().path()).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[tokio::test]
async fn a_large_download_of_pipelined_reads_goes_through_whole() {
    // 64 requests of 255 KiB in flight fill the channel's window many
    // times over: the answers must go out while requests keep coming.
    let srv = spawn().await;
    let alice = srv.add_user("alice", None, "ftp").await;
    let key = srv.give_key("alice").await;
    let body = data(64 << 20, 13);
    std::fs::write(alice.home.join("large.bin"), &body).expect("a large file");
    let here = local();
    let out = srv
        .sftp("alice", Some(&key), "get large.bin\n", here.path())
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        std::fs::read(here.path().join("large.bin")).expect("downloaded") == body,
        "byte-identical"
    );
}
