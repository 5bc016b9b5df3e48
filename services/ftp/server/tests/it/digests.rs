//! The md5 of stored files: recorded by uploads, served by downloads
//! without hashing again, never served for a file that changed since.

use crate::common;

use common::{data, spawn};
use sqlx::Connection;
use wharf_core::transfer::md5_hex;
use wharf_ftp::client::{ClientError, NoProgress, TransferOptions, part_path};

/// The md5s recorded for alice's files, as (size, md5).
async fn recorded(srv: &common::TestServer) -> Vec<(i64, String)> {
    // The records are written behind the replies.
    srv.store.settle().await;
    let mut db = sqlx::SqliteConnection::connect(&srv.url).await.expect("db");
    sqlx::query_as("SELECT size, md5 FROM file_md5 ORDER BY size")
        .fetch_all(&mut db)
        .await
        .expect("file_md5")
}

/// Replaces every recorded md5 with `fake`: a download that hashes nothing
/// then announces it, and its client refuses the data.
async fn fake_every_md5(srv: &common::TestServer, fake: &str) {
    srv.store.settle().await;
    let mut db = sqlx::SqliteConnection::connect(&srv.url).await.expect("db");
    sqlx::query("UPDATE file_md5 SET md5 = ?1")
        .bind(fake)
        .execute(&mut db)
        .await
        .expect("update");
}

/// Puts `bytes` as `f.bin` in the home.
async fn upload(srv: &common::TestServer, c: &mut wharf_ftp::client::Client, bytes: &[u8]) {
    let local = srv.local("f.bin");
    std::fs::write(&local, bytes).expect("local");
    c.put(&local, "f.bin", TransferOptions::default(), &mut NoProgress)
        .await
        .expect("put");
}

const FAKE: &str = "00000000000000000000000000000000";

#[tokio::test]
async fn an_upload_records_the_md5_that_downloads_then_serve_without_hashing() {
    let srv = spawn().await;
    srv.add_user("alice", None, "ftp").await;
    let mut c = srv.client("alice").await;
    let bytes = data(3 << 20, 31);
    upload(&srv, &mut c, &bytes).await;
    assert_eq!(recorded(&srv).await, [(3 << 20, md5_hex(&bytes))]);
    let copy = srv.local("copy.bin");
    let (_, got) = c
        .get("f.bin", &copy, TransferOptions::default(), &mut NoProgress)
        .await
        .expect("get");
    assert_eq!(got.md5, md5_hex(&bytes));
    // Proof that the server took the recorded md5: a fake one is what it
    // announces, and the client refuses the data rather than keep it.
    fake_every_md5(&srv, FAKE).await;
    std::fs::remove_file(&copy).expect("rm");
    let err = c
        .get("f.bin", &copy, TransferOptions::default(), &mut NoProgress)
        .await
        .expect_err("the announced md5 is fake");
    assert!(matches!(err, ClientError::Checksum(_)), "{err}");
    assert!(err.to_string().contains(FAKE), "{err}");
    assert!(!copy.exists() && !part_path(&copy).exists());
}

#[tokio::test]
async fn a_file_changed_by_hand_is_hashed_again_once_and_its_md5_recorded() {
    let srv = spawn().await;
    srv.add_user("alice", None, "ftp").await;
    let mut c = srv.client("alice").await;
    let bytes = data(1 << 20, 32);
    upload(&srv, &mut c, &bytes).await;
    fake_every_md5(&srv, FAKE).await;
    // Changed in place: same size, and its mtime set back as it was. Only
    // the ctime, which nobody can set, tells.
    let stored = srv.home("alice").join("f.bin");
    let mtime = std::fs::metadata(&stored)
        .and_then(|m| m.modified())
        .expect("mtime");
    let mut changed = bytes.clone();
    changed[12345] ^= 0x5a;
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&stored)
            .expect("open");
        f.seek(SeekFrom::Start(12345)).expect("seek");
        f.write_all(&changed[12345..12346]).expect("write");
        f.set_modified(mtime).expect("set mtime back");
    }
    let copy = srv.local("copy.bin");
    let (_, got) = c
        .get("f.bin", &copy, TransferOptions::default(), &mut NoProgress)
        .await
        .expect("the stale md5 is not served");
    assert_eq!(got.md5, md5_hex(&changed));
    assert_eq!(std::fs::read(&copy).expect("copy"), changed);
    // Hashed once, and recorded for the next download.
    assert_eq!(recorded(&srv).await, [(1 << 20, md5_hex(&changed))]);

    // A file put there by hand is hashed at its first download, too.
    std::fs::write(srv.home("alice").join("by-hand.txt"), b"hello").expect("write");
    let (_, got) = c
        .get(
            "by-hand.txt",
            &srv.local("h.txt"),
            TransferOptions::default(),
            &mut NoProgress,
        )
        .await
        .expect("get");
    assert_eq!(got.md5, md5_hex(b"hello"));
    assert_eq!(
        recorded(&srv).await,
        [(5, md5_hex(b"hello")), (1 << 20, md5_hex(&changed))]
    );
}

#[tokio::test]
async fn a_resumed_download_of_a_recorded_file_still_verifies_its_prefix() {
    let srv = spawn().await;
    srv.add_user("alice", None, "ftp").await;
    let mut c = srv.client("alice").await;
    let bytes = data(4 << 20, 33);
    upload(&srv, &mut c, &bytes).await;
    // A local .part whose first bytes differ from the server's file.
    let copy = srv.local("copy.bin");
    let mut wrong = bytes[..1 << 20].to_vec();
    wrong[7] ^= 1;
    std::fs::write(part_path(&copy), &wrong).expect("part");
    let mut rec = common::Recorder::default();
    let (_, got) = c
        .get("f.bin", &copy, TransferOptions::default(), &mut rec)
        .await
        .expect("get");
    assert_eq!(got.resumed_at, 0, "the prefix differs: started over");
    assert_eq!(std::fs::read(&copy).expect("copy"), bytes);
    // A right prefix resumes, and the whole is checked against the record.
    std::fs::remove_file(&copy).expect("rm");
    std::fs::write(part_path(&copy), &bytes[..1 << 20]).expect("part");
    let (_, got) = c
        .get("f.bin", &copy, TransferOptions::default(), &mut NoProgress)
        .await
        .expect("resumed");
    assert_eq!(got.resumed_at, 1 << 20);
    assert_eq!(std::fs::read(&copy).expect("copy"), bytes);
}

#[tokio::test]
async fn without_tls_a_recorded_file_goes_out_through_sendfile_whole_and_resumed() {
    use wharf_client::tls::ClientTls;
    let srv = common::spawn_on(wharf_ftpd::server::FtpConfig::default(), None).await;
    srv.add_user("alice", None, "ftp").await;
    let mut c = wharf_ftp::client::Client::connect(
        &srv.addr,
        &ClientTls::plain(),
        "alice",
        &wharf_proto::Password::new(common::PW),
    )
    .await
    .expect("plain login");
    let bytes = data((5 << 20) + 333, 34);
    upload(&srv, &mut c, &bytes).await;
    // Recorded: the server sends it with sendfile.
    let copy = srv.local("copy.bin");
    let (_, got) = c
        .get("f.bin", &copy, TransferOptions::default(), &mut NoProgress)
        .await
        .expect("get");
    assert_eq!(got.md5, md5_hex(&bytes));
    assert_eq!(std::fs::read(&copy).expect("copy"), bytes);
    // From an offset, too.
    std::fs::remove_file(&copy).expect("rm");
    std::fs::write(part_path(&copy), &bytes[..(2 << 20) + 1]).expect("part");
    let (_, got) = c
        .get("f.bin", &copy, TransferOptions::default(), &mut NoProgress)
        .await
        .expect("resumed");
    assert_eq!(got.resumed_at, (2 << 20) + 1);
    assert_eq!(std::fs::read(&copy).expect("copy"), bytes);
    // And the session goes on.
    assert_eq!(c.pwd().await.expect("pwd"), "/");
}

#[tokio::test]
async fn removing_or_replacing_a_file_forgets_its_md5() {
    let srv = spawn().await;
    srv.add_user("alice", None, "ftp").await;
    let mut c = srv.client("alice").await;
    let first = data(300_000, 35);
    upload(&srv, &mut c, &first).await;
    // Replaced: one record, the new file's.
    let second = data(400_000, 36);
    upload(&srv, &mut c, &second).await;
    assert_eq!(recorded(&srv).await, [(400_000, md5_hex(&second))]);
    // Removed: none.
    c.rm("f.bin").await.expect("rm");
    assert!(recorded(&srv).await.is_empty());
}
