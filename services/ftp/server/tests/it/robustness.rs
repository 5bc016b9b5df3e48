//! Bad input on the socket: a clear error, and the server keeps serving.

use crate::common;

use std::time::Duration;

use common::{connect, raw, raw_recv, raw_send, spawn, spawn_with};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wharf_core::tls::Stream;
use wharf_ftpd::server::FtpConfig;
use wharf_proto::ErrorCode;
use wharf_proto::ftp::{FtpReply, FtpRequest};
use wharf_server::listener::Limits;

async fn error_then_close(stream: &mut Stream) -> (ErrorCode, String) {
    use tokio_util::codec::Decoder;
    let mut buf = bytes::BytesMut::new();
    let mut codec = wharf_proto::FrameCodec::<FtpReply>::new();
    let mut tmp = [0u8; 4096];
    stream.flush().await.expect("flush");
    loop {
        let n = stream.read(&mut tmp).await.expect("read");
        buf.extend_from_slice(&tmp[..n]);
        if let Some(wharf_proto::Frame::Header {
            msg: FtpReply::Error(e),
            ..
        }) = codec.decode(&mut buf).expect("decode")
        {
            // Then the server closes.
            let rest = stream.read(&mut tmp).await.unwrap_or(0);
            assert_eq!(rest, 0, "connection closed after the error");
            return (e.code, e.message);
        }
        assert!(n > 0, "closed without an error frame");
    }
}

#[tokio::test]
async fn garbage_and_oversized_headers_get_an_error_and_the_server_serves_on() {
    let srv = spawn().await;
    srv.add_user("alice", None, "ftp").await;

    let mut s = connect(&srv.addr).await;
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let (code, msg) = error_then_close(&mut s).await;
    assert_eq!(code, ErrorCode::HeaderTooLarge);
    assert!(msg.contains("over the 65536-byte limit"), "{msg}");

    let mut s = connect(&srv.addr).await;
    s.write_all(&[0, 0, 0, 5]).await.expect("write");
    s.write_all(b"hello").await.expect("write");
    assert_eq!(error_then_close(&mut s).await.0, ErrorCode::InvalidFrame);

    let mut s = connect(&srv.addr).await;
    s.write_all(&[0, 0, 0, 4, 0xff, 0xfe, 0xfd, 0xfc])
        .await
        .expect("write");
    assert_eq!(error_then_close(&mut s).await.0, ErrorCode::InvalidFrame);

    // A header claiming a 1 MiB header, never sent: refused before it is buffered.
    let mut s = connect(&srv.addr).await;
    s.write_all(&(1u32 << 20).to_be_bytes())
        .await
        .expect("write");
    assert_eq!(error_then_close(&mut s).await.0, ErrorCode::HeaderTooLarge);

    // Still serving.
    let mut c = srv.client("alice").await;
    assert_eq!(c.pwd().await.expect("pwd"), "/");
}

#[tokio::test]
async fn unknown_ops_and_requests_before_login_are_refused_without_closing() {
    let srv = spawn().await;
    srv.add_user("alice", None, "ftp").await;
    let mut conn = raw(&srv.addr).await;
    let mut weird = bytes::BytesMut::new();
    let header = br#"{"op":"format_disk","body_len":3}"#;
    weird.extend_from_slice(&(header.len() as u32).to_be_bytes());
    weird.extend_from_slice(header);
    weird.extend_from_slice(b"abc");
    conn.get_mut().write_all(&weird).await.expect("write");
    conn.get_mut().flush().await.expect("flush");
    match raw_recv(&mut conn).await {
        Some(FtpReply::Error(e)) => assert_eq!(e.code, ErrorCode::UnknownOp),
        other => panic!("{other:?}"),
    }
    raw_send(&mut conn, FtpRequest::Ls { path: None }, 0).await;
    match raw_recv(&mut conn).await {
        Some(FtpReply::Error(e)) => assert_eq!(e.code, ErrorCode::NotLoggedIn),
        other => panic!("{other:?}"),
    }
    raw_send(
        &mut conn,
        FtpRequest::Hello(wharf_proto::message::ClientHello {
            version: 99,
            client: "future".into(),
        }),
        0,
    )
    .await;
    match raw_recv(&mut conn).await {
        Some(FtpReply::Error(e)) => assert_eq!(e.code, ErrorCode::UnsupportedVersion),
        other => panic!("{other:?}"),
    }
    drop(conn);
}

#[tokio::test]
async fn a_body_on_a_request_that_takes_none_closes_the_connection() {
    let srv = spawn().await;
    srv.add_user("alice", None, "ftp").await;
    let mut conn = common::raw_login(&srv.addr, "alice").await;
    raw_send(&mut conn, FtpRequest::Pwd, 10).await;
    match raw_recv(&mut conn).await {
        Some(FtpReply::Error(e)) => assert_eq!(e.code, ErrorCode::BadRequest),
        other => panic!("{other:?}"),
    }
    assert_eq!(raw_recv(&mut conn).await, None, "closed");
}

#[tokio::test]
async fn silent_clients_time_out_and_crowds_from_one_address_are_refused() {
    let limits = Limits {
        login_timeout: Duration::from_millis(300),
        max_per_ip: 2,
        ..Limits::default()
    };
    let srv = spawn_with(FtpConfig {
        limits,
        ..FtpConfig::default()
    })
    .await;
    srv.add_user("alice", None, "ftp").await;
    let mut a = connect(&srv.addr).await;
    let _b = connect(&srv.addr).await;
    let mut c = connect(&srv.addr).await;
    let (code, _) = error_then_close(&mut c).await;
    assert_eq!(code, ErrorCode::Busy);
    let (code, msg) = error_then_close(&mut a).await;
    assert_eq!(code, ErrorCode::Timeout);
    assert!(msg.contains("no login within"), "{msg}");
}

/// One address flooding the port with silent connections ends only its own
/// among those not logged in: logins from three other addresses still get
/// through, while the flood goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_silent_connections_from_one_address_keeps_no_one_else_out() {
    let limits = Limits {
        max_unauthenticated: 8,
        ..Limits::default()
    };
    let srv = spawn_with(FtpConfig {
        limits,
        ..FtpConfig::default()
    })
    .await;
    srv.add_user("alice", None, "ftp").await;
    let stop = tokio_util::sync::CancellationToken::new();
    let flood = {
        let (addr, stop) = (srv.addr.clone(), stop.clone());
        tokio::spawn(async move {
            let mut held = std::collections::VecDeque::new();
            let mut opened = 0u64;
            while !stop.is_cancelled() {
                if let Ok(conn) = TcpStream::connect(&addr).await {
                    opened += 1;
                    held.push_back(conn);
                    if held.len() > 200 {
                        held.pop_front();
                    }
                }
            }
            opened
        })
    };
    // The flood is under way before the others come.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for last in 2..=4u8 {
        let login = async {
            let socket = tokio::net::TcpSocket::new_v4().expect("socket");
            socket
                .bind(std::net::SocketAddr::from(([127, 0, 0, last], 0)))
                .expect("bind another loopback address");
            let tcp = socket
                .connect(srv.addr.parse().expect("address"))
                .await
                .expect("connect");
            let stream = common::client_tls()
                .secure(tcp, &srv.addr)
                .await
                .expect("TLS");
            let mut conn = common::raw_login_on(stream, "alice").await;
            raw_send(&mut conn, FtpRequest::Pwd, 0).await;
            raw_recv(&mut conn).await
        };
        let said = tokio::time::timeout(Duration::from_secs(5), login)
            .await
            .unwrap_or_else(|_| panic!("the login from 127.0.0.{last} was kept out by the flood"));
        assert!(matches!(said, Some(FtpReply::Cwd { .. })), "{said:?}");
    }
    stop.cancel();
    let opened = flood.await.expect("flood");
    assert!(opened > 8, "the flood opened only {opened} connections");
}

#[tokio::test]
async fn shutdown_tells_idle_sessions_and_stops_accepting() {
    let srv = spawn().await;
    srv.add_user("alice", None, "ftp").await;
    let mut conn = common::raw_login(&srv.addr, "alice").await;
    srv.shutdown.cancel();
    match raw_recv(&mut conn).await {
        Some(FtpReply::Error(e)) => assert_eq!(e.code, ErrorCode::ShuttingDown),
        other => panic!("{other:?}"),
    }
    tokio::time::timeout(Duration::from_secs(10), srv.task)
        .await
        .expect("server stopped")
        .expect("join");
    assert!(
        TcpStream::connect(&srv.addr).await.is_err(),
        "no longer listening"
    );
}

#[tokio::test]
async fn an_upload_in_flight_finishes_when_the_server_stops() {
    let srv = spawn().await;
    srv.add_user("alice", None, "ftp").await;
    let bytes = common::data(1_500_000, 31);
    let local = srv.local("f");
    std::fs::write(&local, &bytes).expect("write");
    let mut c = srv.client("alice").await;
    // About 1.5 s at 1 MB/s: the stop comes in the middle.
    let slow = wharf_ftp::client::TransferOptions {
        rate_limit: Some(1_000_000),
        ..wharf_ftp::client::TransferOptions::default()
    };
    let upload = tokio::spawn(async move {
        let mut rec = common::Recorder::default();
        c.put(&local, "f", slow, &mut rec).await
    });
    let home = srv.home("alice");
    common::eventually("the upload has started", || {
        common::partials(&home).first().is_some_and(|p| p.1 > 0)
    })
    .await;
    srv.shutdown.cancel();
    let done = upload
        .await
        .expect("task")
        .expect("the upload in flight completes");
    assert_eq!(done.size, 1_500_000);
    assert_eq!(std::fs::read(home.join("f")).expect("stored"), bytes);
    tokio::time::timeout(Duration::from_secs(10), srv.task)
        .await
        .expect("server stopped")
        .expect("join");
}

#[tokio::test]
async fn an_address_that_keeps_failing_is_told_to_wait_and_others_are_not() {
    use wharf_core::Password;
    use wharf_ftp::client::Client;
    let srv = spawn().await;
    srv.add_user("alice", None, "ftp").await;
    // A spray: ten names, one password each, from this address.
    for i in 0..10 {
        let err = Client::connect(
            &srv.addr,
            common::client_tls(),
            &format!("user{i}"),
            &Password::new("Summer2026!"),
        )
        .await
        .expect_err("wrong");
        assert_eq!(err.code(), Some(ErrorCode::AuthFailed), "{err}");
    }
    // Now even the right password is refused from here, with the wait.
    let err = Client::connect(
        &srv.addr,
        common::client_tls(),
        "alice",
        &Password::new(common::PW),
    )
    .await
    .expect_err("rate limited");
    assert_eq!(err.code(), Some(ErrorCode::RateLimited), "{err}");
    assert!(err.to_string().contains("try again in"), "{err}");
    // The database shares it: what the other services would see, from
    // another address, is a login.
    let auth = wharf_store::Authenticator::new(srv.store.clone(), Default::default())
        .await
        .expect("auth");
    auth.authenticate(
        "alice",
        &Password::new(common::PW),
        wharf_core::Service::Ftp,
        std::net::Ipv4Addr::new(198, 51, 100, 7).into(),
    )
    .await
    .expect("another address logs in");
    let refused = auth
        .authenticate(
            "alice",
            &Password::new(common::PW),
            wharf_core::Service::Ftp,
            std::net::Ipv4Addr::LOCALHOST.into(),
        )
        .await;
    assert!(matches!(
        refused,
        Err(wharf_store::Error::RateLimited { .. })
    ));
}

/// Lets this process hold the flood's file descriptors.
fn raise_fd_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    limit.current = limit.maximum;
    let _ = setrlimit(Resource::Nofile, limit);
}

/// A TCP connection from `127.0.0.N`, that never says anything.
async fn idle_from(addr: &str, n: u8) -> Option<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4().ok()?;
    socket
        .bind(std::net::SocketAddr::from(([127, 0, 0, n], 0)))
        .ok()?;
    socket.connect(addr.parse().ok()?).await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_idle_connections_never_keeps_a_login_out() {
    raise_fd_limit();
    let srv = spawn().await;
    srv.add_user("alice", None, "ftp").await;
    // 1,100 idle connections from 20 addresses, more than --max-connections
    // (1024) would let in at once.
    let mut flood = Vec::new();
    for i in 0..1100usize {
        if let Some(c) = idle_from(&srv.addr, 2 + (i % 20) as u8).await {
            flood.push(c);
        }
    }
    assert!(
        flood.len() >= 1100,
        "only {} flood connections",
        flood.len()
    );
    // And the flood goes on: a new idle connection every few milliseconds.
    let addr = srv.addr.clone();
    let flooding = tokio::spawn(async move {
        let mut i = 0usize;
        loop {
            if let Some(c) = idle_from(&addr, 2 + (i % 20) as u8).await {
                flood.push(c);
                if flood.len() > 1200 {
                    flood.remove(0);
                }
            }
            i += 1;
            tokio::time::sleep(Duration::from_millis(4)).await;
        }
    });
    for round in 0..10 {
        let started = std::time::Instant::now();
        let mut c = tokio::time::timeout(Duration::from_secs(5), srv.client("alice"))
            .await
            .unwrap_or_else(|_| panic!("round {round}: no login within 5 s"));
        let took = started.elapsed();
        assert!(took < Duration::from_secs(2), "round {round}: {took:?}");
        assert_eq!(c.pwd().await.expect("pwd"), "/");
    }
    flooding.abort();
}

/// Unmounts on drop, even when the test fails.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH);
    }
}

#[tokio::test]
async fn a_full_disk_is_an_error_and_the_next_put_works_once_there_is_room() {
    use wharf_ftp::client::{NoProgress, TransferOptions};
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: mounting a small file system needs root");
        return;
    }
    let srv = spawn().await;
    // alice's home is a 1 MiB file system of its own.
    let home = srv.dir.path().join("homes").join("alice");
    std::fs::create_dir_all(&home).expect("home");
    rustix::mount::mount(
        "wharf-test",
        &home,
        "tmpfs",
        rustix::mount::MountFlags::empty(),
        Some(c"size=1m,mode=0755"),
    )
    .expect("mount a small tmpfs");
    let _mounted = Mounted(home.clone());
    srv.add_user("alice", None, "ftp").await;
    let mut c = srv.client("alice").await;
    let opts = TransferOptions::default();
    let big = srv.local("big.bin");
    std::fs::write(&big, common::data(3 << 20, 9)).expect("local");
    let err = c
        .put(&big, "big.bin", opts, &mut NoProgress)
        .await
        .expect_err("the disk is full");
    assert_eq!(err.code(), Some(ErrorCode::NoSpace), "{err}");
    assert!(err.to_string().contains("disk is full"), "{err}");
    // Nothing held: no partial, no reservation; the session goes on.
    let alice = srv.user("alice").await;
    assert_eq!((alice.reserved_bytes, alice.used_bytes), (0, 0));
    let partials = std::fs::read_dir(home.join(".wharf/partial"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(partials, 0, "a partial was left filling the disk");
    // The stopped upload's connection closed after the error; the server
    // serves on, and a small file fits.
    drop(c);
    let mut c = srv.client("alice").await;
    let small = srv.local("small.bin");
    std::fs::write(&small, common::data(100_000, 10)).expect("local");
    c.put(&small, "small.bin", opts, &mut NoProgress)
        .await
        .expect("room for this one");
    assert_eq!(srv.user("alice").await.used_bytes, 100_000);
}

/// The next reply to `pwd`, within a few seconds of an administrator's
/// change: an error once the change reached the session.
async fn refused_soon(c: &mut wharf_ftp::client::Client) -> wharf_ftp::client::ClientError {
    // The change is read within half a second; the session then says why
    // and closes, so the next request gets that reason.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    c.pwd().await.expect_err("the session was ended")
}

#[tokio::test]
async fn a_revoked_right_a_deletion_or_a_moved_home_ends_open_sessions() {
    let srv = spawn().await;
    for u in ["alice", "bob", "carol"] {
        srv.add_user(u, None, "ftp,chat").await;
    }
    let mut a = srv.client("alice").await;
    let mut b = srv.client("bob").await;
    let mut c = srv.client("carol").await;
    srv.store
        .revoke("alice", wharf_core::Service::Ftp)
        .await
        .expect("revoke");
    srv.store.delete_user("bob").await.expect("delete");
    let elsewhere = srv.dir.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).expect("dir");
    srv.store.set_home("carol", &elsewhere).await.expect("move");
    let err = refused_soon(&mut a).await;
    assert_eq!(err.code(), Some(ErrorCode::NotPermitted), "{err}");
    let err = refused_soon(&mut b).await;
    assert_eq!(err.code(), Some(ErrorCode::AccountLocked), "{err}");
    assert!(err.to_string().contains("removed"), "{err}");
    let err = refused_soon(&mut c).await;
    assert_eq!(err.code(), Some(ErrorCode::NotFound), "{err}");
    assert!(err.to_string().contains("moved the home"), "{err}");
    // carol works again in the new home.
    let mut c = srv.client("carol").await;
    assert_eq!(c.pwd().await.expect("pwd"), "/");
}

#[tokio::test]
async fn a_quota_lowered_during_an_upload_stops_it_and_frees_its_reservation() {
    use wharf_ftp::client::{NoProgress, TransferOptions};
    let srv = spawn().await;
    srv.add_user("alice", Some(64 << 20), "ftp").await;
    let mut c = srv.client("alice").await;
    let big = srv.local("big.bin");
    std::fs::write(&big, common::data(8 << 20, 3)).expect("local");
    // 2 MiB/s: the upload is under way for seconds when the quota drops.
    let opts = TransferOptions {
        rate_limit: Some(2 << 20),
        ..TransferOptions::default()
    };
    let store = srv.store.clone();
    let lower = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        store
            .set_quota("alice", Some(4 << 20))
            .await
            .expect("quota");
    });
    let err = c
        .put(&big, "big.bin", opts, &mut NoProgress)
        .await
        .expect_err("the upload no longer fits");
    lower.await.expect("lowered");
    assert_eq!(err.code(), Some(ErrorCode::QuotaExceeded), "{err}");
    assert!(
        err.to_string().contains("lowered your quota to 4 MiB"),
        "{err}"
    );
    // Nothing held: no partial, no reservation, nothing stored.
    let alice = srv.user("alice").await;
    assert_eq!((alice.reserved_bytes, alice.used_bytes), (0, 0));
    assert!(common::partials(&srv.home("alice")).is_empty());
    assert!(!srv.home("alice").join("big.bin").exists());
    // A file within the new quota goes up on a new connection.
    let mut c = srv.client("alice").await;
    let small = srv.local("small.bin");
    std::fs::write(&small, common::data(1 << 20, 4)).expect("local");
    c.put(
        &small,
        "small.bin",
        TransferOptions::default(),
        &mut NoProgress,
    )
    .await
    .expect("fits the new quota");
    // A quota lowered below what is stored stops no upload that is not
    // running, and refuses the next one.
    srv.store
        .set_quota("alice", Some(1 << 19))
        .await
        .expect("quota");
    let err = c
        .put(
            &small,
            "again.bin",
            TransferOptions::default(),
            &mut NoProgress,
        )
        .await
        .expect_err("over the new quota");
    assert_eq!(err.code(), Some(ErrorCode::QuotaExceeded), "{err}");
}

#[tokio::test]
async fn a_lock_stops_a_download_midway_and_the_same_get_resumes_after_the_unlock() {
    use wharf_ftp::client::{ClientError, NoProgress, TransferOptions, part_path};
    let srv = spawn().await;
    srv.add_user("alice", None, "ftp").await;
    // Bigger than what loopback's socket buffers can hold, so the server is
    // still sending when the lock comes.
    let content = common::data(16 << 20, 5);
    std::fs::write(srv.home("alice").join("big.bin"), &content).expect("remote file");
    let local = srv.local("big.bin");
    let mut c = srv.client("alice").await;
    let store = srv.store.clone();
    let lock = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        store.set_locked("alice", true).await.expect("lock");
    });
    let slow = TransferOptions {
        rate_limit: Some(2 << 20),
        ..TransferOptions::default()
    };
    let err = c
        .get("big.bin", &local, slow, &mut NoProgress)
        .await
        .expect_err("the lock stops the download");
    lock.await.expect("locked");
    assert!(matches!(err, ClientError::Interrupted(_)), "{err}");
    assert!(
        err.to_string().contains("run the same get to resume"),
        "{err}"
    );
    let kept = std::fs::metadata(part_path(&local))
        .expect("the part stays")
        .len();
    assert!(kept > 0 && kept < content.len() as u64, "kept {kept}");
    // Locked, she cannot log in again; unlocked, the same get resumes.
    let refused = wharf_ftp::client::Client::connect(
        &srv.addr,
        common::client_tls(),
        "alice",
        &wharf_proto::Password::new(common::PW),
    )
    .await
    .expect_err("locked");
    assert_eq!(refused.code(), Some(ErrorCode::AccountLocked), "{refused}");
    srv.store.set_locked("alice", false).await.expect("unlock");
    let mut c = srv.client("alice").await;
    let (_, done) = c
        .get(
            "big.bin",
            &local,
            TransferOptions::default(),
            &mut NoProgress,
        )
        .await
        .expect("resumed");
    assert_eq!(done.resumed_at, kept);
    assert_eq!(std::fs::read(&local).expect("local"), content);
}

#[tokio::test]
async fn a_database_that_cannot_be_written_is_an_error_and_nothing_is_held() {
    use sqlx::Connection;
    use wharf_ftp::client::{NoProgress, TransferOptions};
    let srv = spawn().await;
    srv.add_user("alice", Some(10 << 20), "ftp").await;
    let mut c = srv.client("alice").await;
    let file = srv.local("f.bin");
    std::fs::write(&file, common::data(300_000, 12)).expect("local");
    // Another process holds the database's write lock for longer than the
    // server waits for it (10 s).
    let mut blocker = sqlx::SqliteConnection::connect(&srv.url)
        .await
        .expect("connect");
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut blocker)
        .await
        .expect("lock");
    let err = c
        .put(&file, "f.bin", TransferOptions::default(), &mut NoProgress)
        .await
        .expect_err("the quota cannot be reserved");
    assert_eq!(err.code(), Some(ErrorCode::Unavailable), "{err}");
    assert!(
        err.to_string()
            .contains("cannot write its database just now"),
        "{err}"
    );
    sqlx::query("COMMIT")
        .execute(&mut blocker)
        .await
        .expect("unlock");
    // Nothing held, and the same session goes on.
    assert!(common::partials(&srv.home("alice")).is_empty());
    assert_eq!(srv.user("alice").await.reserved_bytes, 0);
    c.put(&file, "f.bin", TransferOptions::default(), &mut NoProgress)
        .await
        .expect("the database is back");
    assert_eq!(srv.user("alice").await.used_bytes, 300_000);
}

#[tokio::test]
async fn data_sent_unasked_after_a_refused_put_is_dropped_only_up_to_a_mebibyte() {
    let srv = spawn().await;
    srv.add_user("alice", None, "ftp").await;
    let mut conn = common::raw_login(&srv.addr, "alice").await;
    let refused = |reply: Option<FtpReply>| match reply {
        Some(FtpReply::Error(e)) => (e.code, e.message),
        other => panic!("expected an error, got {other:?}"),
    };
    // Refused, then 2 MiB announced without waiting: the server will not
    // read that much for nothing.
    let size = 2u64 << 20;
    raw_send(
        &mut conn,
        FtpRequest::Put {
            path: "../x".into(),
            size,
            at_once: false,
        },
        0,
    )
    .await;
    raw_send(&mut conn, FtpRequest::PutData { offset: 0 }, size).await;
    let (code, _) = refused(raw_recv(&mut conn).await);
    assert_eq!(code, ErrorCode::ForbiddenPath);
    let (code, message) = refused(raw_recv(&mut conn).await);
    assert_eq!(code, ErrorCode::BadRequest);
    assert!(message.contains("at most 1048576 bytes"), "{message}");
    assert_eq!(raw_recv(&mut conn).await, None, "the connection closes");
    // Others are served.
    assert_eq!(srv.client("alice").await.pwd().await.expect("pwd"), "/");
}

/// A backup taken while eight uploads write: it opens, passes the
/// integrity check and holds every user; the uploads all finish.
#[tokio::test]
async fn a_backup_taken_during_eight_uploads_is_sound() {
    use wharf_ftp::client::{NoProgress, TransferOptions};
    let srv = spawn().await;
    srv.add_user("alice", None, "ftp").await;
    srv.add_user("bob", Some(1 << 30), "ftp,chat").await;
    let mut uploads = Vec::new();
    for i in 0..8u64 {
        let local = srv.local(&format!("up{i}.bin"));
        std::fs::write(&local, common::data(4 << 20, i)).expect("write");
        let mut c = srv.client(if i % 2 == 0 { "alice" } else { "bob" }).await;
        uploads.push(tokio::spawn(async move {
            let slow = TransferOptions {
                rate_limit: Some(8 << 20),
                ..TransferOptions::default()
            };
            c.put(&local, &format!("up{i}.bin"), slow, &mut NoProgress)
                .await
                .map(|_| ())
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let file = srv.dir.path().join("backup.db");
    srv.store.backup_to(&file).await.expect("backup");
    for u in uploads {
        u.await.expect("upload task").expect("upload");
    }
    let copy = wharf_store::Store::open(&format!("sqlite://{}", file.display()))
        .await
        .expect("the backup opens");
    assert_eq!(
        copy.integrity_problems().await.expect("check"),
        Vec::<String>::new()
    );
    let names: Vec<String> = copy
        .list_users()
        .await
        .expect("users")
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(names, ["alice", "bob"]);
    copy.close().await;
}

/// An unlock is seen by the very next login: a session that ended on the
/// lock leaves no older view behind for the next session to be ended by.
#[tokio::test]
async fn a_login_right_after_an_unlock_is_served() {
    let srv = spawn().await;
    srv.add_user("alice", None, "ftp").await;
    for round in 0..5 {
        let mut c = srv.client("alice").await;
        c.pwd().await.expect("served before the lock");
        srv.store.set_locked("alice", true).await.expect("lock");
        // The open session hears of the lock.
        let mut refused = None;
        for _ in 0..40 {
            match c.pwd().await {
                Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(e) => {
                    refused = Some(e);
                    break;
                }
            }
        }
        let refused = refused.expect("the lock reached the open session");
        assert_eq!(refused.code(), Some(ErrorCode::AccountLocked), "{refused}");
        srv.store.set_locked("alice", false).await.expect("unlock");
        let mut again = srv.client("alice").await;
        for _ in 0..4 {
            again
                .pwd()
                .await
                .unwrap_or_else(|e| panic!("round {round}: refused after the unlock: {e}"));
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }
}
