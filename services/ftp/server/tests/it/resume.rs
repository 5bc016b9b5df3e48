//! Interrupted transfers resume, both ways, and a changed prefix restarts.

use crate::common;

use std::time::Duration;

use common::{
    Recorder, cut_upload, data, eventually, partials, raw_login, raw_recv, raw_send, spawn,
};
use tokio::io::AsyncWriteExt;
use wharf_core::transfer::md5_hex;
use wharf_ftp::client::{NoProgress, TransferOptions, part_path};
use wharf_ftpd::server::sweep_partials;
use wharf_proto::ErrorCode;
use wharf_proto::ftp::{FtpReply, FtpRequest};

const SIZE: usize = 2 * 1024 * 1024 + 123;
const HALF: usize = 1024 * 1024 + 7;

#[tokio::test]
async fn an_upload_cut_midway_resumes_and_ends_byte_identical() {
    let srv = spawn().await;
    srv.add_user("alice", Some(10 << 20), "ftp").await;
    let bytes = data(SIZE, 7);
    cut_upload(&srv.addr, "big.bin", &bytes, HALF).await;
    let home = srv.home("alice");
    eventually("the partial upload holds the first half", || {
        partials(&home).first().is_some_and(|p| p.1 == HALF as u64)
    })
    .await;
    assert!(!home.join("big.bin").exists(), "nothing visible yet");
    let alice = srv.user("alice").await;
    assert_eq!(
        (alice.used_bytes, alice.reserved_bytes),
        (0, SIZE as u64),
        "the partial keeps its reservation"
    );

    let local = srv.local("big.bin");
    std::fs::write(&local, &bytes).expect("write");
    let mut c = srv.client("alice").await;
    let mut rec = Recorder::default();
    let done = c
        .put(&local, "big.bin", TransferOptions::default(), &mut rec)
        .await
        .expect("resumed put");
    assert_eq!(done.resumed_at, HALF as u64);
    assert_eq!(rec.begun, Some((SIZE as u64, HALF as u64)));
    assert_eq!(rec.advanced, (SIZE - HALF) as u64, "only the rest was sent");
    assert_eq!(done.md5, md5_hex(&bytes));
    assert_eq!(std::fs::read(home.join("big.bin")).expect("stored"), bytes);
    assert!(partials(&home).is_empty());
    let alice = srv.user("alice").await;
    assert_eq!(
        (alice.used_bytes, alice.reserved_bytes, alice.file_count),
        (SIZE as u64, 0, 1)
    );
}

#[tokio::test]
async fn a_changed_local_file_restarts_the_upload_from_zero() {
    let srv = spawn().await;
    srv.add_user("alice", None, "ftp").await;
    let bytes = data(SIZE, 8);
    cut_upload(&srv.addr, "f", &bytes, HALF).await;
    let home = srv.home("alice");
    eventually("partial written", || {
        partials(&home).first().is_some_and(|p| p.1 == HALF as u64)
    })
    .await;
    let mut changed = bytes.clone();
    changed[10] ^= 0xff;
    let local = srv.local("f");
    std::fs::write(&local, &changed).expect("write");
    let mut c = srv.client("alice").await;
    let mut rec = Recorder::default();
    let done = c
        .put(&local, "f", TransferOptions::default(), &mut rec)
        .await
        .expect("put");
    assert_eq!(done.resumed_at, 0);
    assert_eq!(
        rec.notes,
        ["the server's partial upload differs from this file; starting over"]
    );
    assert_eq!(std::fs::read(home.join("f")).expect("stored"), changed);
    assert_eq!(srv.user("alice").await.reserved_bytes, 0);
}

#[tokio::test]
async fn a_download_cut_midway_resumes_and_ends_byte_identical() {
    let srv = spawn().await;
    srv.add_user("alice", None, "ftp").await;
    let bytes = data(4 * 1024 * 1024, 9);
    std::fs::write(srv.home("alice").join("big"), &bytes).expect("server file");
    let local = srv.local("big");
    let part = part_path(&local);
    let mut c = srv.client("alice").await;
    let slow = TransferOptions {
        rate_limit: Some(2 * 1024 * 1024),
        ..TransferOptions::default()
    };
    let l2 = local.clone();
    let task = tokio::spawn(async move { c.get("big", &l2, slow, &mut NoProgress).await });
    eventually("part of the download arrived", || {
        std::fs::metadata(&part).is_ok_and(|m| m.len() >= 512 * 1024)
    })
    .await;
    task.abort(); // drops the connection mid-body
    let _ = task.await;
    let have = std::fs::metadata(&part).expect(".part kept").len();
    assert!(have > 0 && have < bytes.len() as u64, "have {have}");
    assert!(!local.exists());

    let mut c = srv.client("alice").await;
    let mut rec = Recorder::default();
    let (_, done) = c
        .get("big", &local, TransferOptions::default(), &mut rec)
        .await
        .expect("resumed get");
    assert_eq!(done.resumed_at, have);
    assert_eq!(rec.advanced, bytes.len() as u64 - have);
    assert_eq!(std::fs::read(&local).expect("downloaded"), bytes);
    assert!(!part.exists());
}

#[tokio::test]
async fn a_durable_download_resumed_at_an_unaligned_offset_ends_byte_identical() {
    // With --fsync the download is written past the page cache in aligned
    // blocks: the unaligned head after the resume point and the tail go
    // through the cache.
    let srv = spawn().await;
    srv.add_user("alice", None, "ftp").await;
    let bytes = data(5 * 1024 * 1024 + 777, 11);
    std::fs::write(srv.home("alice").join("big"), &bytes).expect("server file");
    let local = srv.local("big");
    let have = 1_234_567;
    std::fs::write(part_path(&local), &bytes[..have]).expect("part");
    let mut c = srv.client("alice").await;
    let durable = TransferOptions {
        fsync: true,
        ..TransferOptions::default()
    };
    let (_, done) = c
        .get("big", &local, durable, &mut NoProgress)
        .await
        .expect("resumed get");
    assert_eq!(done.resumed_at, have as u64);
    assert_eq!(std::fs::read(&local).expect("downloaded"), bytes);
}

#[tokio::test]
async fn a_corrupted_local_part_restarts_the_download() {
    let srv = spawn().await;
    srv.add_user("alice", None, "ftp").await;
    let bytes = data(300_000, 10);
    std::fs::write(srv.home("alice").join("f"), &bytes).expect("server file");
    let local = srv.local("f");
    let mut wrong = bytes[..100_000].to_vec();
    wrong[0] ^= 1;
    std::fs::write(part_path(&local), &wrong).expect("corrupt part");
    let mut c = srv.client("alice").await;
    let mut rec = Recorder::default();
    let (_, done) = c
        .get("f", &local, TransferOptions::default(), &mut rec)
        .await
        .expect("get");
    assert_eq!(done.resumed_at, 0);
    assert_eq!(
        rec.notes,
        ["the local partial download differs from the server's file; starting over"]
    );
    assert_eq!(std::fs::read(&local).expect("downloaded"), bytes);
}

#[tokio::test]
async fn a_wrong_md5_stores_nothing_and_releases_the_quota() {
    let srv = spawn().await;
    srv.add_user("alice", Some(1000), "ftp").await;
    let mut conn = raw_login(&srv.addr, "alice").await;
    raw_send(
        &mut conn,
        FtpRequest::Put {
            path: "f".into(),
            size: 5,
            at_once: false,
        },
        0,
    )
    .await;
    assert!(matches!(
        raw_recv(&mut conn).await,
        Some(FtpReply::PutReady { offset: 0, .. })
    ));
    raw_send(&mut conn, FtpRequest::PutData { offset: 0 }, 5).await;
    conn.get_mut().write_all(b"hello").await.expect("body");
    raw_send(
        &mut conn,
        FtpRequest::PutEnd {
            md5: md5_hex(b"jello"),
        },
        0,
    )
    .await;
    match raw_recv(&mut conn).await {
        Some(FtpReply::Error(e)) => {
            assert_eq!(e.code, ErrorCode::ChecksumMismatch);
            assert!(e.message.contains("nothing was stored"), "{}", e.message);
        }
        other => panic!("expected checksum_mismatch, got {other:?}"),
    }
    let home = srv.home("alice");
    assert!(!home.join("f").exists());
    assert!(partials(&home).is_empty());
    let alice = srv.user("alice").await;
    assert_eq!((alice.used_bytes, alice.reserved_bytes), (0, 0));
    // The session goes on.
    raw_send(&mut conn, FtpRequest::Pwd, 0).await;
    assert_eq!(
        raw_recv(&mut conn).await,
        Some(FtpReply::Cwd { path: "/".into() })
    );
}

#[tokio::test]
async fn stale_partials_are_swept_and_their_quota_released() {
    let srv = spawn().await;
    srv.add_user("alice", Some(10 << 20), "ftp").await;
    let bytes = data(SIZE, 11);
    cut_upload(&srv.addr, "f", &bytes, HALF).await;
    let home = srv.home("alice");
    eventually("partial written", || {
        partials(&home).first().is_some_and(|p| p.1 == HALF as u64)
    })
    .await;
    // Wait until the server has let go of the partial (its lock).
    let mut removed = 0;
    for _ in 0..500 {
        removed = sweep_partials(&srv.store, Duration::ZERO)
            .await
            .expect("sweep");
        if removed > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(removed, 1);
    assert!(partials(&home).is_empty());
    assert_eq!(srv.user("alice").await.reserved_bytes, 0);
    assert_eq!(
        sweep_partials(&srv.store, Duration::from_secs(3600))
            .await
            .expect("sweep"),
        0
    );
}

#[tokio::test]
async fn a_small_upload_cut_midway_leaves_no_partial_and_no_reservation() {
    let srv = spawn().await;
    srv.add_user("alice", Some(1 << 20), "ftp").await;
    let bytes = data(100_000, 12);
    cut_upload(&srv.addr, "small", &bytes, 50_000).await;
    let home = srv.home("alice");
    let mut settled = false;
    for _ in 0..500 {
        if partials(&home).is_empty() && srv.user("alice").await.reserved_bytes == 0 {
            settled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(settled, "partials {:?}", partials(&home));
    assert!(!home.join("small").exists());
}

#[tokio::test]
async fn interrupted_uploads_are_listed_and_discarded_and_restart_sends_all() {
    let srv = spawn().await;
    srv.add_user("alice", Some(10 << 20), "ftp").await;
    let bytes = data(SIZE, 11);
    std::fs::create_dir(srv.home("alice").join("docs")).expect("mkdir");
    cut_upload(&srv.addr, "docs/big.bin", &bytes, HALF).await;
    cut_upload(&srv.addr, "other.bin", &bytes, HALF).await;
    let home = srv.home("alice");
    eventually("two partials written", || {
        let p = partials(&home);
        p.len() == 2 && p.iter().all(|p| p.1 == HALF as u64)
    })
    .await;
    let mut c = srv.client("alice").await;
    let mut listed = Vec::new();
    for _ in 0..500 {
        // The cut sessions let go of their partials soon after.
        listed = c.partials().await.expect("partials");
        if listed.iter().all(|p| !p.active) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let summary: Vec<_> = listed
        .iter()
        .map(|p| (p.path.clone(), p.size, p.received, p.active))
        .collect();
    assert_eq!(
        summary,
        [
            (
                Some("/docs/big.bin".into()),
                SIZE as u64,
                HALF as u64,
                false
            ),
            (Some("/other.bin".into()), SIZE as u64, HALF as u64, false),
        ]
    );
    assert_eq!(srv.user("alice").await.reserved_bytes, 2 * SIZE as u64);
    // One by its path (relative to the current directory), then the rest.
    c.cd("docs").await.expect("cd");
    assert_eq!(
        c.discard(Some("big.bin")).await.expect("discard"),
        (1, SIZE as u64)
    );
    let err = c.discard(Some("big.bin")).await.expect_err("gone");
    assert_eq!(err.code(), Some(ErrorCode::NotFound), "{err}");
    assert!(
        err.to_string()
            .contains("no interrupted upload of /docs/big.bin"),
        "{err}"
    );
    assert_eq!(srv.user("alice").await.reserved_bytes, SIZE as u64);
    assert_eq!(c.discard(None).await.expect("all"), (1, SIZE as u64));
    assert!(partials(&home).is_empty());
    assert!(c.partials().await.expect("partials").is_empty());
    assert_eq!(srv.user("alice").await.reserved_bytes, 0);
    // A path that leaves the home is refused like everywhere else.
    let err = c.discard(Some("../../x")).await.expect_err("escape");
    assert_eq!(err.code(), Some(ErrorCode::ForbiddenPath), "{err}");

    // put --restart ignores a matching partial and sends everything.
    cut_upload(&srv.addr, "again.bin", &bytes, HALF).await;
    eventually("partial written", || {
        partials(&home).first().is_some_and(|p| p.1 == HALF as u64)
    })
    .await;
    let local = srv.local("again.bin");
    std::fs::write(&local, &bytes).expect("write");
    let mut rec = Recorder::default();
    let restart = TransferOptions {
        restart: true,
        ..TransferOptions::default()
    };
    let done = loop {
        match c.put(&local, "/again.bin", restart, &mut rec).await {
            Err(e) if e.code() == Some(ErrorCode::Busy) => {
                // the cut session still holds it for a moment
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => break other.expect("put --restart"),
        }
    };
    assert_eq!(done.resumed_at, 0);
    assert_eq!(rec.advanced, SIZE as u64, "the whole file was sent");
    assert!(rec.notes.is_empty(), "{:?}", rec.notes);
    assert_eq!(
        std::fs::read(home.join("again.bin")).expect("stored"),
        bytes
    );
    let alice = srv.user("alice").await;
    assert_eq!((alice.used_bytes, alice.reserved_bytes), (SIZE as u64, 0));
}

/// A quota lowered after an upload was cut holds for its resume: the put
/// is refused with `quota_exceeded`, and the partial and its reservation go.
#[tokio::test]
async fn a_resume_that_no_longer_fits_a_lowered_quota_is_refused_and_its_partial_dropped() {
    let srv = spawn().await;
    srv.add_user("alice", Some(10 << 20), "ftp").await;
    let bytes = data(SIZE, 8);
    cut_upload(&srv.addr, "big.bin", &bytes, HALF).await;
    let home = srv.home("alice");
    eventually("the partial upload holds the first half", || {
        partials(&home).first().is_some_and(|p| p.1 == HALF as u64)
    })
    .await;
    srv.store
        .set_quota("alice", Some(1 << 20))
        .await
        .expect("lower the quota");
    let local = srv.local("big.bin");
    std::fs::write(&local, &bytes).expect("write");
    let mut c = srv.client("alice").await;
    let err = c
        .put(
            &local,
            "big.bin",
            TransferOptions::default(),
            &mut NoProgress,
        )
        .await
        .expect_err("the resume no longer fits");
    assert_eq!(err.code(), Some(ErrorCode::QuotaExceeded), "{err}");
    assert!(err.to_string().contains("lowered your quota"), "{err}");
    assert!(partials(&home).is_empty(), "the partial is dropped");
    assert!(!home.join("big.bin").exists());
    let alice = srv.user("alice").await;
    assert_eq!((alice.used_bytes, alice.reserved_bytes), (0, 0));
}
