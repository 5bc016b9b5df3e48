//! Many uploads on one connection: small files sent at once and pipelined,
//! made durable in batches; a failure in the middle loses nothing that was
//! acknowledged.

use crate::common;

use std::path::PathBuf;

use common::{data, partials, raw_login, raw_recv, raw_send, spawn};
use tokio::io::AsyncWriteExt;
use wharf_core::transfer::md5_hex;
use wharf_ftp::client::{ClientError, NoProgress, PutJob, TransferOptions, Transferred};
use wharf_proto::ErrorCode;
use wharf_proto::ftp::{FtpReply, FtpRequest};

type Outcomes = Vec<(PutJob, Result<Transferred, ClientError>)>;

async fn put_all(client: &mut wharf_ftp::client::Client, jobs: Vec<PutJob>) -> Outcomes {
    let mut outcomes = Vec::new();
    client
        .put_all(
            jobs,
            TransferOptions::default(),
            &mut NoProgress,
            &mut |job, result| outcomes.push((job, result)),
        )
        .await
        .expect("the connection stays up");
    outcomes
}

fn job(local: PathBuf, remote: &str) -> PutJob {
    PutJob {
        local,
        remote: remote.into(),
    }
}

#[tokio::test]
async fn many_files_go_up_pipelined_each_acknowledged_once_and_durable() {
    let srv = spawn().await;
    srv.add_user("alice", None, "ftp").await;
    let mut client = srv.client("alice").await;
    client.mkdir("d").await.expect("mkdir");
    // Mostly small files (sent at once), a few large ones between them
    // (sent alone, after the window drains), an empty one.
    let sizes: Vec<usize> = (0..300)
        .map(|i| match i {
            7 => 0,
            50 | 51 | 200 => 700_000,
            i => (i * 977) % 9000 + 1,
        })
        .collect();
    let mut jobs = Vec::new();
    let mut total = 0u64;
    for (i, size) in sizes.iter().enumerate() {
        let local = srv.local(&format!("f{i}"));
        std::fs::write(&local, data(*size, i as u64)).expect("write");
        total += *size as u64;
        let remote = if i % 2 == 0 {
            format!("f{i}")
        } else {
            format!("d/f{i}")
        };
        jobs.push(job(local, &remote));
    }
    let outcomes = put_all(&mut client, jobs.clone()).await;
    assert_eq!(outcomes.len(), 300);
    for ((job, result), expected) in outcomes.iter().zip(&jobs) {
        assert_eq!(job, expected, "outcomes come in order");
        let done = result.as_ref().expect("stored");
        let bytes = std::fs::read(&job.local).expect("local");
        assert_eq!(done.md5, md5_hex(&bytes));
        let stored = std::fs::read(srv.home("alice").join(&job.remote)).expect("stored");
        assert!(stored == bytes, "{} is byte-identical", job.remote);
    }
    let user = srv.user("alice").await;
    // The files, and the folder d (a block).
    assert_eq!(user.used_bytes, total + wharf_store::home::ENTRY_COST);
    assert_eq!(user.file_count, 301);
    assert_eq!(user.reserved_bytes, 0);
    assert!(partials(&srv.home("alice")).is_empty());
    let usage = srv.store.usage_report(None, 0).await.expect("usage");
    assert_eq!(usage[0].uploads, 300);
    // The session goes on in step.
    assert_eq!(client.ls(Some("d")).await.expect("ls").len(), 150);

    // The same files again replace what is there: usage stays the same.
    let outcomes = put_all(&mut client, jobs).await;
    assert!(outcomes.iter().all(|(_, r)| r.is_ok()));
    let user = srv.user("alice").await;
    assert_eq!(
        (user.used_bytes, user.file_count),
        (total + wharf_store::home::ENTRY_COST, 301)
    );
}

#[tokio::test]
async fn a_failure_in_the_middle_of_a_batch_loses_nothing_acknowledged() {
    let srv = spawn().await;
    srv.add_user("alice", Some(100_000), "ftp").await;
    let mut client = srv.client("alice").await;
    let mut jobs = Vec::new();
    for i in 0..40 {
        let local = srv.local(&format!("ok{i}"));
        std::fs::write(&local, data(1000, i)).expect("write");
        jobs.push(job(local.clone(), &format!("ok{i}")));
        match i {
            5 => jobs.push(job(local, "../escape")),
            10 => jobs.push(job(local, "no/such/dir/x")),
            15 => jobs.push(job(srv.local("missing"), "missing")),
            20 => {
                let big = srv.local("big");
                std::fs::write(&big, data(120_000, 99)).expect("write");
                jobs.push(job(big, "big"));
            }
            25 => jobs.push(job(srv.local("ok0"), "ok3/inside-a-file")),
            _ => {}
        }
    }
    let outcomes = put_all(&mut client, jobs).await;
    assert_eq!(outcomes.len(), 45);
    let mut refused = Vec::new();
    for (job, result) in &outcomes {
        match result {
            Ok(done) => {
                let stored = std::fs::read(srv.home("alice").join(&job.remote)).expect("stored");
                assert_eq!(
                    md5_hex(&stored),
                    done.md5,
                    "{} acknowledged and kept",
                    job.remote
                );
            }
            Err(e) => refused.push((job.remote.clone(), e.code())),
        }
    }
    refused.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        refused,
        vec![
            ("../escape".to_owned(), Some(ErrorCode::ForbiddenPath)),
            ("big".to_owned(), Some(ErrorCode::QuotaExceeded)),
            ("missing".to_owned(), None),
            ("no/such/dir/x".to_owned(), Some(ErrorCode::NotFound)),
            ("ok3/inside-a-file".to_owned(), Some(ErrorCode::BadRequest)),
        ]
    );
    let user = srv.user("alice").await;
    assert_eq!((user.used_bytes, user.file_count), (40_000, 40));
    assert_eq!(user.reserved_bytes, 0);
    assert!(partials(&srv.home("alice")).is_empty());
    assert!(!srv.home("alice").join("big").exists());
}

/// Sends a small file as a `put` sent at once; `md5` overrides its digest.
async fn at_once(conn: &mut common::Raw, path: &str, body: &[u8], md5: Option<&str>) {
    let size = body.len() as u64;
    raw_send(
        conn,
        FtpRequest::Put {
            path: path.into(),
            size,
            at_once: true,
        },
        0,
    )
    .await;
    raw_send(conn, FtpRequest::PutData { offset: 0 }, size).await;
    conn.get_mut().write_all(body).await.expect("body");
    let md5 = md5.map_or_else(|| md5_hex(body), str::to_owned);
    raw_send(conn, FtpRequest::PutEnd { md5 }, 0).await;
}

#[tokio::test]
async fn answers_to_pipelined_puts_come_in_order_and_a_bad_one_stores_nothing() {
    let srv = spawn().await;
    srv.add_user("alice", None, "ftp").await;
    let mut conn = raw_login(&srv.addr, "alice").await;
    at_once(&mut conn, "a", b"first", None).await;
    at_once(
        &mut conn,
        "b",
        b"second",
        Some("00000000000000000000000000000000"),
    )
    .await;
    at_once(&mut conn, "../c", b"third", None).await;
    at_once(&mut conn, "d", b"fourth", None).await;
    raw_send(&mut conn, FtpRequest::Ls { path: None }, 0).await;
    assert!(
        matches!(raw_recv(&mut conn).await, Some(FtpReply::PutOk { path, .. }) if path == "/a")
    );
    match raw_recv(&mut conn).await {
        Some(FtpReply::Error(e)) => assert_eq!(e.code, ErrorCode::ChecksumMismatch),
        other => panic!("expected a checksum error, got {other:?}"),
    }
    match raw_recv(&mut conn).await {
        Some(FtpReply::Error(e)) => assert_eq!(e.code, ErrorCode::ForbiddenPath),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(
        matches!(raw_recv(&mut conn).await, Some(FtpReply::PutOk { path, .. }) if path == "/d")
    );
    assert!(matches!(
        raw_recv(&mut conn).await,
        Some(FtpReply::Listing { count: 2, .. })
    ));
    let user = srv.user("alice").await;
    assert_eq!((user.used_bytes, user.reserved_bytes), (11, 0));
    assert!(!srv.home("alice").join("b").exists());
}

#[tokio::test]
async fn a_client_gone_mid_batch_leaves_what_arrived_whole_and_nothing_half() {
    let srv = spawn().await;
    srv.add_user("alice", None, "ftp").await;
    let mut conn = raw_login(&srv.addr, "alice").await;
    for i in 0..5 {
        at_once(&mut conn, &format!("f{i}"), &data(3000, i), None).await;
    }
    // The sixth stops in the middle of its data.
    raw_send(
        &mut conn,
        FtpRequest::Put {
            path: "f5".into(),
            size: 3000,
            at_once: true,
        },
        0,
    )
    .await;
    raw_send(&mut conn, FtpRequest::PutData { offset: 0 }, 3000).await;
    conn.get_mut()
        .write_all(&data(1000, 5))
        .await
        .expect("body");
    conn.get_mut().flush().await.expect("flush");
    drop(conn);
    let home = srv.home("alice");
    common::eventually("the whole files are stored", || {
        (0..5).all(|i| home.join(format!("f{i}")).exists())
    })
    .await;
    for i in 0..5 {
        assert_eq!(
            std::fs::read(home.join(format!("f{i}"))).expect("f"),
            data(3000, i)
        );
    }
    assert!(!home.join("f5").exists());
    let store = srv.store.clone();
    let mut settled = false;
    for _ in 0..100 {
        let user = store.require_user("alice").await.expect("user");
        if user.reserved_bytes == 0 && user.used_bytes == 15_000 {
            settled = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(settled, "quota: 5 files used, nothing reserved");
    assert!(partials(&home).is_empty());
}

#[tokio::test]
async fn a_put_sent_at_once_is_capped_at_one_mebibyte() {
    let srv = spawn().await;
    srv.add_user("alice", None, "ftp").await;
    let mut conn = raw_login(&srv.addr, "alice").await;
    let size = (1u64 << 20) + 1;
    raw_send(
        &mut conn,
        FtpRequest::Put {
            path: "big".into(),
            size,
            at_once: true,
        },
        0,
    )
    .await;
    raw_send(&mut conn, FtpRequest::PutData { offset: 0 }, size).await;
    match raw_recv(&mut conn).await {
        Some(FtpReply::Error(e)) => {
            assert_eq!(e.code, ErrorCode::BadRequest);
            assert!(e.message.contains("at most 1048576 bytes"), "{}", e.message);
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn the_same_file_twice_in_a_batch_ends_with_the_last_one() {
    let srv = spawn().await;
    srv.add_user("alice", None, "ftp").await;
    let mut conn = raw_login(&srv.addr, "alice").await;
    at_once(&mut conn, "x", b"first version", None).await;
    at_once(&mut conn, "x", b"second", None).await;
    at_once(&mut conn, "x", b"the third one", None).await;
    for _ in 0..3 {
        assert!(matches!(
            raw_recv(&mut conn).await,
            Some(FtpReply::PutOk { .. })
        ));
    }
    assert_eq!(
        std::fs::read(srv.home("alice").join("x")).expect("x"),
        b"the third one"
    );
    let user = srv.user("alice").await;
    assert_eq!(
        (user.used_bytes, user.file_count, user.reserved_bytes),
        (13, 1, 0)
    );
    assert!(partials(&srv.home("alice")).is_empty());
}
