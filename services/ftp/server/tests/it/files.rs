//! Transfers and file commands through the client library.

use crate::common;

use common::{data, spawn};
use wharf_core::Password;
use wharf_core::transfer::md5_hex;
use wharf_ftp::client::{Client, ClientError, NoProgress, TransferOptions};
use wharf_proto::ErrorCode;
use wharf_proto::ftp::EntryKind;

fn code(e: ClientError) -> Option<ErrorCode> {
    e.code()
}

#[tokio::test]
async fn round_trips_keep_every_byte() {
    let srv = spawn().await;
    srv.add_user("alice", None, "ftp").await;
    let mut c = srv.client("alice").await;
    let cases: [(&str, Vec<u8>); 5] = [
        ("empty", Vec::new()),
        ("one", vec![42]),
        ("big.bin", data(3 * 1024 * 1024 + 17, 1)),
        ("name with spaces.txt", b"spaces".to_vec()),
        ("ünïcødé 文件.dat", data(1000, 2)),
    ];
    for (name, bytes) in &cases {
        let local = srv.local(name);
        std::fs::write(&local, bytes).expect("write");
        let up = c
            .put(&local, name, TransferOptions::default(), &mut NoProgress)
            .await
            .expect("put");
        assert_eq!(up.size, bytes.len() as u64);
        assert_eq!(up.md5, md5_hex(bytes));
        assert_eq!(up.resumed_at, 0);
        assert_eq!(up.path, format!("/{name}"));
        assert_eq!(
            std::fs::read(srv.home("alice").join(name)).expect("stored"),
            *bytes
        );
        let back = srv.local(&format!("{name}.back"));
        let (path, down) = c
            .get(name, &back, TransferOptions::default(), &mut NoProgress)
            .await
            .expect("get");
        assert_eq!(path, back);
        assert_eq!(down.md5, md5_hex(bytes));
        assert_eq!(std::fs::read(&back).expect("downloaded"), *bytes);
        assert!(
            !wharf_ftp::client::part_path(&back).exists(),
            "no .part left"
        );
    }
    let listing = c.ls(None).await.expect("ls");
    let names: Vec<&str> = listing.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "big.bin",
            "empty",
            "name with spaces.txt",
            "one",
            "ünïcødé 文件.dat"
        ]
    );
    assert_eq!(listing[0].size, 3 * 1024 * 1024 + 17);
    assert_eq!(listing[0].kind, EntryKind::File);
    assert!(
        listing[0].mtime.ends_with('Z') && listing[0].mtime.len() == 20,
        "{}",
        listing[0].mtime
    );
    let alice = srv.user("alice").await;
    let total: u64 = cases.iter().map(|(_, b)| b.len() as u64).sum();
    assert_eq!(
        (alice.used_bytes, alice.reserved_bytes, alice.file_count),
        (total, 0, 5)
    );
    let report = srv
        .store
        .usage_report(Some("alice"), 0)
        .await
        .expect("report");
    assert_eq!((report[0].uploads, report[0].downloads), (5, 5));
    assert_eq!((report[0].bytes_up, report[0].bytes_down), (total, total));
    c.quit().await.expect("quit");
}

#[tokio::test]
async fn directory_commands_work_inside_the_home() {
    let srv = spawn().await;
    srv.add_user("alice", None, "ftp").await;
    let mut c = srv.client("alice").await;
    assert_eq!(c.pwd().await.expect("pwd"), "/");
    assert_eq!(c.cd("..").await.expect("cd .. at root"), "/");
    c.mkdir("docs").await.expect("mkdir");
    c.mkdir("docs/deep").await.expect("mkdir nested");
    assert_eq!(
        code(c.mkdir("docs").await.expect_err("exists")),
        Some(ErrorCode::AlreadyExists)
    );
    assert_eq!(
        code(c.mkdir("nope/x").await.expect_err("no parent")),
        Some(ErrorCode::NotFound)
    );
    assert_eq!(c.cd("docs/deep").await.expect("cd"), "/docs/deep");
    assert_eq!(c.cd("..").await.expect("cd .."), "/docs");
    let local = srv.local("f");
    std::fs::write(&local, b"hello").expect("write");
    c.put(&local, "f", TransferOptions::default(), &mut NoProgress)
        .await
        .expect("put relative");
    assert!(srv.home("alice").join("docs/f").exists());
    assert_eq!(c.cd("/").await.expect("cd /"), "/");
    let ls = c.ls(Some("docs")).await.expect("ls docs");
    assert_eq!(
        ls.iter()
            .map(|e| (e.name.as_str(), e.kind))
            .collect::<Vec<_>>(),
        [("deep", EntryKind::Dir), ("f", EntryKind::File)]
    );
    let one = c.ls(Some("/docs/f")).await.expect("ls a file");
    assert_eq!((one.len(), one[0].size), (1, 5));
    c.mv("docs/f", "g").await.expect("mv");
    assert_eq!(
        code(c.mv("g", "docs").await.expect_err("target exists")),
        Some(ErrorCode::AlreadyExists)
    );
    assert_eq!(
        code(c.cd("g").await.expect_err("cd to a file")),
        Some(ErrorCode::BadRequest)
    );
    assert_eq!(
        code(c.rmdir("docs").await.expect_err("not empty")),
        Some(ErrorCode::BadRequest)
    );
    assert_eq!(
        code(c.rm("docs").await.expect_err("rm a dir")),
        Some(ErrorCode::BadRequest)
    );
    c.rmdir("docs/deep").await.expect("rmdir");
    c.rmdir("docs").await.expect("rmdir");
    assert_eq!(srv.user("alice").await.used_bytes, 5);
    c.rm("g").await.expect("rm");
    assert_eq!(
        code(c.rm("g").await.expect_err("gone")),
        Some(ErrorCode::NotFound)
    );
    let alice = srv.user("alice").await;
    assert_eq!((alice.used_bytes, alice.file_count), (0, 0));
    assert!(c.ls(None).await.expect("ls").is_empty());
}

#[tokio::test]
async fn every_path_escape_is_forbidden() {
    let srv = spawn().await;
    srv.add_user("alice", None, "ftp").await;
    let home = srv.home("alice");
    let outside = srv.dir.path().join("outside");
    std::fs::create_dir_all(&outside).expect("mkdir");
    std::fs::write(outside.join("secret"), b"top secret").expect("write");
    std::os::unix::fs::symlink(&outside, home.join("escape")).expect("symlink");
    std::os::unix::fs::symlink(outside.join("secret"), home.join("secret-link")).expect("symlink");
    let mut c = srv.client("alice").await;
    let local = srv.local("x");
    std::fs::write(&local, b"x").expect("write");
    let opts = TransferOptions::default();
    let long = "n".repeat(256);
    let deep = "d/".repeat(2100);
    for path in [
        "../x",
        "../../etc/passwd",
        "a/../../x",
        "a\\b",
        "nul\0byte",
        &long,
        &deep,
        ".wharf/partial/x",
        "escape/secret",
        "secret-link",
        "escape/new",
    ] {
        let get = c
            .get(path, &srv.local("out"), opts, &mut NoProgress)
            .await
            .expect_err(path);
        assert_eq!(code(get), Some(ErrorCode::ForbiddenPath), "get {path:?}");
        if path != "secret-link" {
            let put = c
                .put(&local, path, opts, &mut NoProgress)
                .await
                .expect_err(path);
            assert_eq!(code(put), Some(ErrorCode::ForbiddenPath), "put {path:?}");
        }
        // cd clamps `..` at the root as a shell does: `cd ../x` is `/x`, inside the home.
        let clamped = path.contains("..") && !path.contains('\\') && !path.contains('\0');
        let want = if clamped {
            ErrorCode::NotFound
        } else {
            ErrorCode::ForbiddenPath
        };
        assert_eq!(
            code(c.cd(path).await.expect_err(path)),
            Some(want),
            "cd {path:?}"
        );
    }
    // Putting over a link that leads outside never writes outside.
    let put = c
        .put(&local, "secret-link", opts, &mut NoProgress)
        .await
        .expect_err("link");
    assert_eq!(code(put), Some(ErrorCode::ForbiddenPath));
    assert_eq!(
        std::fs::read(outside.join("secret")).expect("read"),
        b"top secret"
    );
    // Absolute paths start at the home: /etc/passwd is the home's, not the host's.
    let abs = c
        .get("/etc/passwd", &srv.local("out"), opts, &mut NoProgress)
        .await
        .expect_err("abs");
    assert_eq!(code(abs), Some(ErrorCode::NotFound));
    // Links leading out are not even listed; the internal directory never is.
    std::fs::create_dir_all(home.join(".wharf/partial")).expect("internal");
    let names: Vec<String> = c
        .ls(None)
        .await
        .expect("ls")
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert!(names.is_empty(), "{names:?}");
    assert_eq!(
        code(c.ls(Some("/.wharf")).await.expect_err("internal")),
        Some(ErrorCode::ForbiddenPath)
    );
    // The session is still fine after all that.
    assert_eq!(c.pwd().await.expect("pwd"), "/");
}

#[tokio::test]
async fn users_are_isolated_from_each_other() {
    let srv = spawn().await;
    srv.add_user("alice", None, "ftp").await;
    srv.add_user("bob", None, "ftp").await;
    let mut a = srv.client("alice").await;
    let mut b = srv.client("bob").await;
    let local = srv.local("a");
    std::fs::write(&local, b"alice's").expect("write");
    a.put(&local, "mine", TransferOptions::default(), &mut NoProgress)
        .await
        .expect("put");
    assert!(b.ls(None).await.expect("ls").is_empty());
    let e = b
        .get(
            "mine",
            &srv.local("stolen"),
            TransferOptions::default(),
            &mut NoProgress,
        )
        .await
        .expect_err("isolated");
    assert_eq!(code(e), Some(ErrorCode::NotFound));
    let e = b
        .get(
            "../alice/mine",
            &srv.local("stolen"),
            TransferOptions::default(),
            &mut NoProgress,
        )
        .await
        .expect_err("isolated");
    assert_eq!(code(e), Some(ErrorCode::ForbiddenPath));
}

#[tokio::test]
async fn logins_are_checked() {
    let srv = spawn().await;
    srv.add_user("alice", None, "ftp").await;
    srv.add_user("carol", None, "chat").await;
    let wrong = Client::connect(
        &srv.addr,
        common::client_tls(),
        "alice",
        &Password::new("wrong password"),
    )
    .await
    .expect_err("wrong");
    assert_eq!(code(wrong), Some(ErrorCode::AuthFailed));
    let unknown = Client::connect(
        &srv.addr,
        common::client_tls(),
        "mallory",
        &Password::new(common::PW),
    )
    .await
    .expect_err("unknown");
    assert_eq!(code(unknown), Some(ErrorCode::AuthFailed));
    let no_right = Client::connect(
        &srv.addr,
        common::client_tls(),
        "carol",
        &Password::new(common::PW),
    )
    .await
    .expect_err("no ftp");
    assert_eq!(code(no_right), Some(ErrorCode::NotPermitted));
    srv.store.set_locked("alice", true).await.expect("lock");
    let locked = Client::connect(
        &srv.addr,
        common::client_tls(),
        "alice",
        &Password::new(common::PW),
    )
    .await
    .expect_err("locked");
    assert_eq!(code(locked), Some(ErrorCode::AccountLocked));
    srv.store.set_locked("alice", false).await.expect("unlock");
    srv.client("alice").await;
}

#[tokio::test]
async fn quota_fits_exactly_and_refuses_one_byte_more() {
    let srv = spawn().await;
    srv.add_user("alice", Some(1000), "ftp").await;
    let mut c = srv.client("alice").await;
    let opts = TransferOptions::default();
    let full = srv.local("full");
    std::fs::write(&full, data(1000, 3)).expect("write");
    c.put(&full, "full", opts, &mut NoProgress)
        .await
        .expect("exact fit");
    let one = srv.local("one");
    std::fs::write(&one, b"1").expect("write");
    let err = c
        .put(&one, "one", opts, &mut NoProgress)
        .await
        .expect_err("over quota");
    assert_eq!(err.code(), Some(ErrorCode::QuotaExceeded));
    assert!(
        err.to_string()
            .contains("needs 1 B but only 0 B of the 1000 B quota is free"),
        "{err}"
    );
    assert!(!srv.home("alice").join("one").exists());
    let alice = srv.user("alice").await;
    assert_eq!((alice.used_bytes, alice.reserved_bytes), (1000, 0));
    // Replacing the file needs room only for the growth: the same size
    // fits (new contents), one byte more does not.
    let other = srv.local("other");
    std::fs::write(&other, data(1000, 4)).expect("write");
    c.put(&other, "full", opts, &mut NoProgress)
        .await
        .expect("an overwrite of the same size");
    assert_eq!(
        std::fs::read(srv.home("alice").join("full")).expect("full"),
        data(1000, 4)
    );
    let alice = srv.user("alice").await;
    assert_eq!(
        (alice.used_bytes, alice.reserved_bytes, alice.file_count),
        (1000, 0, 1)
    );
    let bigger = srv.local("bigger");
    std::fs::write(&bigger, data(1001, 5)).expect("write");
    let err = c
        .put(&bigger, "full", opts, &mut NoProgress)
        .await
        .expect_err("one byte of growth over the quota");
    assert_eq!(err.code(), Some(ErrorCode::QuotaExceeded));
    assert!(err.to_string().contains("needs 1 B"), "{err}");
    c.rm("full").await.expect("rm frees space");
    c.put(&one, "one", opts, &mut NoProgress)
        .await
        .expect("fits now");
    let alice = srv.user("alice").await;
    assert_eq!(
        (alice.used_bytes, alice.reserved_bytes, alice.file_count),
        (1, 0, 1)
    );
}

#[tokio::test]
async fn concurrent_uploads_racing_for_the_last_bytes_never_overshoot() {
    let srv = spawn().await;
    srv.add_user("alice", Some(1000), "ftp").await;
    let local = srv.local("300");
    std::fs::write(&local, data(300, 4)).expect("write");
    let mut tasks = Vec::new();
    for i in 0..6 {
        let mut c = srv.client("alice").await;
        let local = local.clone();
        tasks.push(tokio::spawn(async move {
            c.put(
                &local,
                &format!("f{i}"),
                TransferOptions::default(),
                &mut NoProgress,
            )
            .await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.expect("task") {
            Ok(_) => ok += 1,
            Err(e) => assert_eq!(e.code(), Some(ErrorCode::QuotaExceeded), "{e}"),
        }
    }
    assert_eq!(ok, 3);
    let alice = srv.user("alice").await;
    assert_eq!(
        (alice.used_bytes, alice.reserved_bytes, alice.file_count),
        (900, 0, 3)
    );
}

#[tokio::test]
async fn what_the_server_writes_belongs_to_the_user() {
    use std::os::unix::fs::MetadataExt;
    let srv = spawn().await;
    let alice = srv.add_user("alice", None, "ftp").await;
    // Written before the user logged in (by an administrator, say).
    std::fs::write(srv.home("alice").join("old"), b"x").expect("old");
    let mut c = srv.client("alice").await;
    c.mkdir("docs").await.expect("mkdir");
    let local = srv.local("f");
    std::fs::write(&local, b"hello").expect("write");
    c.put(
        &local,
        "docs/f",
        TransferOptions::default(),
        &mut NoProgress,
    )
    .await
    .expect("put");
    let home = srv.home("alice");
    let meta = |p: &str| std::fs::metadata(home.join(p)).expect(p);
    let mode = |p: &str| meta(p).mode() & 0o777;
    assert_eq!((mode("docs"), mode("docs/f")), (0o700, 0o600));
    assert_eq!(mode("."), 0o700);
    if rustix::process::geteuid().is_root() {
        // The user's own uid, which their commands run as.
        let uid = wharf_store::owner::Owner::of_user(alice.id)
            .expect("uid")
            .uid;
        for p in [".", "docs", "docs/f", "old"] {
            assert_eq!((p, meta(p).uid(), meta(p).gid()), (p, uid, uid));
        }
        // The servers' own directory stays theirs.
        assert_eq!(meta(".wharf").uid(), 0);
    }
}

#[tokio::test]
async fn a_failed_get_leaves_no_part_file_unless_bytes_arrived() {
    let srv = spawn().await;
    srv.add_user("alice", None, "ftp").await;
    let mut c = srv.client("alice").await;
    let local = srv.local("missing.bin");
    let part = wharf_ftp::client::part_path(&local);
    let err = c
        .get(
            "missing.bin",
            &local,
            TransferOptions::default(),
            &mut NoProgress,
        )
        .await
        .expect_err("no such file");
    assert_eq!(err.code(), Some(ErrorCode::NotFound));
    assert!(!part.exists(), "an empty .part was left behind");
    assert!(!local.exists());
    // A .part that was there before (an interrupted download) is kept.
    std::fs::write(&part, b"").expect("part");
    let _ = c
        .get(
            "missing.bin",
            &local,
            TransferOptions::default(),
            &mut NoProgress,
        )
        .await
        .expect_err("no such file");
    assert!(part.exists(), "someone else's .part was removed");
}

#[tokio::test]
async fn a_small_put_sent_in_one_go_that_is_refused_leaves_the_session_in_step() {
    let srv = spawn().await;
    // Room for a folder (a block) and a small file, not for the big one.
    srv.add_user("alice", Some(5000), "ftp").await;
    let mut c = srv.client("alice").await;
    let big = srv.local("big.bin");
    std::fs::write(&big, data(8192, 41)).expect("local");
    // Refused before put_ready: over quota, a path out of the home, a
    // directory. The data sent without waiting is dropped by the server.
    let err = c
        .put(&big, "big.bin", TransferOptions::default(), &mut NoProgress)
        .await
        .expect_err("over quota");
    assert_eq!(code(err), Some(ErrorCode::QuotaExceeded));
    let small = srv.local("small.bin");
    std::fs::write(&small, data(500, 42)).expect("local");
    let err = c
        .put(
            &small,
            "../small.bin",
            TransferOptions::default(),
            &mut NoProgress,
        )
        .await
        .expect_err("outside");
    assert_eq!(code(err), Some(ErrorCode::ForbiddenPath));
    c.mkdir("dir").await.expect("mkdir");
    let err = c
        .put(&small, "dir", TransferOptions::default(), &mut NoProgress)
        .await
        .expect_err("a directory");
    assert_eq!(code(err), Some(ErrorCode::BadRequest));
    // Still in step: the next put and a listing work.
    let done = c
        .put(
            &small,
            "small.bin",
            TransferOptions::default(),
            &mut NoProgress,
        )
        .await
        .expect("fits");
    assert_eq!((done.size, done.md5), (500, md5_hex(&data(500, 42))));
    let names: Vec<String> = c
        .ls(None)
        .await
        .expect("ls")
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["dir", "small.bin"]);
    assert_eq!(srv.user("alice").await.reserved_bytes, 0);
}
