//! Two file-transfer servers on one PostgreSQL database and one folder of
//! homes, as replicas behind a load balancer run: the quota holds across
//! both, an upload cut on one resumes on the other, and a lock given on one
//! ends a session on the other. Skipped without a PostgreSQL test cluster
//! (`bash .ci/test` starts one; under CI a missing one is an error).

use crate::common;

use std::time::Duration;

use common::{PW, cut_upload, data, partials, spawn_replicas};
use wharf_core::transfer::md5_hex;
use wharf_ftp::client::{NoProgress, TransferOptions};

#[tokio::test]
async fn six_uploads_racing_on_two_replicas_stay_within_the_quota() {
    let Some((a, b)) = spawn_replicas().await else {
        return;
    };
    // Room for three of the six 3 MB files.
    a.add_user("alice", Some(10_000_000), "ftp").await;
    let mut racers = Vec::new();
    for i in 0..6u64 {
        let srv = if i % 2 == 0 { &a } else { &b };
        let local = srv.local(&format!("race{i}.bin"));
        std::fs::write(&local, data(3_000_000, i)).expect("write");
        let mut c = srv.client("alice").await;
        racers.push(tokio::spawn(async move {
            c.put(
                &local,
                &format!("race{i}.bin"),
                TransferOptions::default(),
                &mut NoProgress,
            )
            .await
            .is_ok()
        }));
    }
    let mut stored = 0;
    for r in racers {
        if r.await.expect("racer") {
            stored += 1;
        }
    }
    assert_eq!(stored, 3, "three fit in the quota, no more");
    let alice = a.user("alice").await;
    assert_eq!(
        (alice.used_bytes, alice.reserved_bytes, alice.file_count),
        (9_000_000, 0, 3)
    );
    let on_disk = std::fs::read_dir(a.home("alice"))
        .expect("home")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("race"))
        .count();
    assert_eq!(on_disk, 3);
}

#[tokio::test]
async fn an_upload_cut_on_one_replica_resumes_on_the_other() {
    let Some((a, b)) = spawn_replicas().await else {
        return;
    };
    a.add_user("alice", None, "ftp").await;
    let bytes = data(2_000_000, 3);
    cut_upload(&a.addr, "big.bin", &bytes, 900_000).await;
    let home = a.home("alice");
    common::eventually("the partial holds what was sent", || {
        partials(&home).first().is_some_and(|p| p.1 == 900_000)
    })
    .await;
    let local = b.local("big.bin");
    std::fs::write(&local, &bytes).expect("write");
    let mut c = b.client("alice").await;
    let done = c
        .put(
            &local,
            "big.bin",
            TransferOptions::default(),
            &mut NoProgress,
        )
        .await
        .expect("resumed on the other replica");
    assert_eq!(done.resumed_at, 900_000);
    assert_eq!(done.md5, md5_hex(&bytes));
    assert!(std::fs::read(home.join("big.bin")).expect("stored") == bytes);
    let alice = b.user("alice").await;
    assert_eq!(
        (alice.used_bytes, alice.reserved_bytes, alice.file_count),
        (2_000_000, 0, 1)
    );
}

#[tokio::test]
async fn a_lock_given_on_one_replica_ends_a_session_on_the_other() {
    let Some((a, b)) = spawn_replicas().await else {
        return;
    };
    a.add_user("alice", None, "ftp").await;
    let mut on_b = b.client("alice").await;
    on_b.ls(None).await.expect("a session on b");
    a.store.set_locked("alice", true).await.expect("lock on a");
    let locked_at = std::time::Instant::now();
    // Within a second or so the session on b is over.
    let mut ended = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if on_b.ls(None).await.is_err() {
            ended = true;
            break;
        }
    }
    assert!(ended, "the session on the other replica goes on");
    assert!(
        locked_at.elapsed() < Duration::from_millis(1800),
        "{:?}",
        locked_at.elapsed()
    );
    // And a new login on either is refused.
    for srv in [&a, &b] {
        let refused = wharf_ftp::client::Client::connect(
            &srv.addr,
            common::client_tls(),
            "alice",
            &wharf_core::Password::new(PW),
        )
        .await;
        assert!(refused.is_err(), "a locked user logged in");
    }
}
