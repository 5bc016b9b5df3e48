//! Users, rights, quotas and usage events against a real SQLite file.

use crate::common;

use std::time::Duration;

use wharf_core::Service;
use wharf_store::Error;
use wharf_store::Store;
use wharf_store::db::Backend;
use wharf_store::db::ChatRecord;
use wharf_store::db::Direction;
use wharf_store::db::ExecRecord;
use wharf_store::db::Need;
use wharf_store::db::NewUser;
use wharf_store::db::TransferRecord;

#[tokio::test]
async fn open_creates_the_folder_and_migrates_idempotently() {
    for env in common::envs().await {
        if env.store.backend() == Backend::Sqlite {
            assert!(env.dir.path().join("db/wharf.db").exists());
        }
        assert!(env.store.has_no_users().await.expect("query"));
        // A second process opening the same database finds the schema in place.
        let again = Store::open(&env.url).await.expect("reopen");
        assert!(again.has_no_users().await.expect("query"));
    }
}

#[tokio::test]
async fn users_are_created_listed_changed_and_deleted() {
    for env in common::envs().await {
        let alice = env
            .add_user("alice", "correct horse", Some(1000), "ftp,chat")
            .await;
        assert_eq!(alice.name, "alice");
        assert_eq!(alice.quota_bytes, Some(1000));
        assert_eq!(alice.services.to_string(), "ftp,chat");
        assert!(!alice.locked);
        assert!(alice.password_hash.starts_with("$argon2id$"));
        env.add_user("bob", "battery staple", None, "").await;

        let names: Vec<String> = env
            .store
            .list_users()
            .await
            .expect("list")
            .into_iter()
            .map(|u| u.name)
            .collect();
        assert_eq!(names, ["alice", "bob"]);

        assert!(
            env.store
                .grant("alice", Service::Exec)
                .await
                .expect("grant")
        );
        assert!(
            !env.store
                .grant("alice", Service::Exec)
                .await
                .expect("grant again")
        );
        assert!(
            env.store
                .revoke("alice", Service::Chat)
                .await
                .expect("revoke")
        );
        assert!(
            !env.store
                .revoke("alice", Service::Chat)
                .await
                .expect("revoke again")
        );
        env.store.set_locked("alice", true).await.expect("lock");
        env.store.set_quota("alice", None).await.expect("quota");
        let alice = env.store.require_user("alice").await.expect("alice");
        assert_eq!(alice.services.to_string(), "ftp,exec");
        assert!(alice.locked);
        assert_eq!(alice.quota_bytes, None);

        env.store.delete_user("bob").await.expect("delete");
        assert!(env.store.user("bob").await.expect("query").is_none());
        assert!(
            matches!(env.store.delete_user("bob").await, Err(Error::NoSuchUser(n)) if n == "bob")
        );
        assert!(matches!(
            env.store.set_locked("nobody", true).await,
            Err(Error::NoSuchUser(_))
        ));
    }
}

#[tokio::test]
async fn duplicate_user_is_refused_and_nothing_changes() {
    for env in common::envs().await {
        let first = env.add_user("alice", "correct horse", Some(5), "ftp").await;
        let again = env
            .store
            .create_user(&NewUser {
                name: "alice".into(),
                password_hash: "x".into(),
                home: "/elsewhere".into(),
                quota_bytes: None,
                quota_files: None,
                services: "exec".parse().expect("services"),
            })
            .await;
        assert!(matches!(again, Err(Error::UserExists(n)) if n == "alice"));
        let now = env.store.require_user("alice").await.expect("alice");
        assert_eq!(now.password_hash, first.password_hash);
        assert_eq!(now.services.to_string(), "ftp");
    }
}

#[tokio::test]
async fn reservations_fit_exactly_and_refuse_one_byte_more() {
    for env in common::envs().await {
        let u = env
            .add_user("alice", "correct horse", Some(1000), "ftp")
            .await;
        env.store
            .reserve(u.id, Need::upload(600))
            .await
            .expect("first");
        match env.store.reserve(u.id, Need::upload(401)).await {
            Err(Error::QuotaExceeded {
                needed,
                free,
                quota,
            }) => assert_eq!((needed, free, quota), (401, 400, 1000)),
            other => panic!("expected QuotaExceeded, got {other:?}"),
        }
        env.store
            .reserve(u.id, Need::upload(400))
            .await
            .expect("exact fit");
        // Commit the first upload, give the second back.
        env.store
            .commit(u.id, (600, 1), 600, 1)
            .await
            .expect("commit");
        env.store.release(u.id, 400, 1).await.expect("release");
        let u2 = env.store.require_user("alice").await.expect("alice");
        assert_eq!(
            (u2.used_bytes, u2.reserved_bytes, u2.file_count),
            (600, 0, 1)
        );
        env.store.free(u.id, 600, 1).await.expect("free");
        let u3 = env.store.require_user("alice").await.expect("alice");
        assert_eq!((u3.used_bytes, u3.reserved_bytes, u3.file_count), (0, 0, 0));
    }
}

/// The file quota counts every entry, partial uploads among them; growing
/// a partial needs no entry; a home that could not be measured refuses
/// every write until it is measured.
#[tokio::test]
async fn the_file_quota_counts_entries_and_an_unmeasured_home_refuses_writes() {
    for env in common::envs().await {
        let u = env.add_user("alice", "correct horse", None, "ftp").await;
        env.store
            .set_quota_files("alice", Some(3))
            .await
            .expect("file quota");
        env.store.add_entry(u.id, 4096).await.expect("a folder");
        env.store
            .reserve(u.id, Need::upload(10))
            .await
            .expect("a partial");
        env.store
            .reserve(u.id, Need::upload(10))
            .await
            .expect("another");
        match env.store.reserve(u.id, Need::upload(10)).await {
            Err(Error::FileQuotaExceeded { held, quota }) => assert_eq!((held, quota), (3, 3)),
            other => panic!("expected FileQuotaExceeded, got {other:?}"),
        }
        let grow = Need {
            bytes: 100,
            ..Need::default()
        };
        env.store
            .reserve(u.id, grow)
            .await
            .expect("growing needs no entry");
        // Replacing a file adds no entry in the end: it may go ahead.
        env.store
            .reserve(u.id, Need::replacing(10, Some(10)))
            .await
            .expect("a replacement");
        env.store.release(u.id, 10, 1).await.expect("release");
        env.store.release(u.id, 10, 1).await.expect("release");
        env.store
            .reserve(u.id, Need::upload(10))
            .await
            .expect("room again");
        let now = env.store.require_user("alice").await.expect("alice");
        assert_eq!(
            (now.file_count, now.reserved_files, now.used_bytes),
            (1, 2, 4096)
        );

        env.store
            .set_usage_problem("alice", "it changed too fast")
            .await
            .expect("problem");
        match env.store.reserve(u.id, Need::upload(1)).await {
            Err(e @ Error::HomeUnmeasured { .. }) => {
                assert_eq!(e.code(), wharf_proto::ErrorCode::QuotaExceeded);
                assert!(e.to_string().contains("it changed too fast"), "{e}");
            }
            other => panic!("expected HomeUnmeasured, got {other:?}"),
        }
        assert!(env.store.add_entry(u.id, 4096).await.is_err());
        env.store
            .set_usage("alice", &wharf_store::home::HomeUsage::default())
            .await
            .expect("measured");
        env.store
            .reserve(u.id, Need::upload(1))
            .await
            .expect("measured again");

        // Whatever the quotas, a user holds at most MAX_PARTIALS partial
        // uploads (empty ones are entries on disk too).
        let bob = env.add_user("bob", "correct horse", None, "ftp").await;
        let max = wharf_store::db::MAX_PARTIALS as usize;
        let outcomes = env
            .store
            .reserve_each(bob.id, &vec![Need::upload(0); max + 1])
            .await
            .expect("reserve");
        assert!(outcomes[..max].iter().all(Result::is_ok));
        match &outcomes[max] {
            Err(e @ Error::TooManyPartials { .. }) => {
                assert!(e.to_string().contains("discard"), "{e}")
            }
            other => panic!("expected TooManyPartials, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn concurrent_reservations_across_pools_never_overshoot() {
    for env in common::envs().await {
        let u = env
            .add_user("alice", "correct horse", Some(1000), "ftp")
            .await;
        // A second pool on the same file behaves like a second server process.
        let other = Store::open(&env.url).await.expect("second pool");
        let mut tasks = Vec::new();
        for i in 0..60 {
            let store = if i % 2 == 0 {
                env.store.clone()
            } else {
                other.clone()
            };
            tasks.push(tokio::spawn(async move {
                store.reserve(u.id, Need::upload(100)).await.is_ok()
            }));
        }
        let mut granted = 0;
        for t in tasks {
            if t.await.expect("task") {
                granted += 1;
            }
        }
        assert_eq!(granted, 10);
        let u = env.store.require_user("alice").await.expect("alice");
        assert_eq!(u.reserved_bytes, 1000);
    }
}

/// Small reservations hold a little ahead (one trip to the database for
/// many small files), and the books stay strict: what is held is reserved
/// in the database, every number read through the store is exact, what is
/// held never refuses its own user, and it goes back when idle.
#[tokio::test]
async fn small_reservations_hold_ahead_and_never_loosen_the_books() {
    const MIB: u64 = 1 << 20;
    for env in common::envs().await {
        let u = env
            .add_user("alice", "correct horse", Some(3 * MIB), "ftp")
            .await;
        // Another process sees the books as they are in the database.
        let other = Store::open(&env.url).await.expect("second pool");
        let books = |user: wharf_store::User| (user.reserved_bytes, user.reserved_files);
        env.store
            .reserve(u.id, Need::upload(4096))
            .await
            .expect("first");
        let held = books(other.require_user("alice").await.expect("alice"));
        assert_eq!(
            held,
            (4096 + MIB, 17),
            "one reservation, and what is held ahead"
        );
        for _ in 0..16 {
            env.store
                .reserve(u.id, Need::upload(4096))
                .await
                .expect("from what is held");
        }
        assert_eq!(
            books(other.require_user("alice").await.expect("alice")),
            held,
            "taken from what was held: the database was not asked"
        );
        // A read through the store gives back what is held: exact.
        let exact = books(env.store.require_user("alice").await.expect("alice"));
        assert_eq!(exact, (17 * 4096, 17));
        assert_eq!(
            books(other.require_user("alice").await.expect("alice")),
            exact
        );

        // What is held never refuses its own user: the whole free space
        // (less than what is held ahead plus it) is granted.
        env.store
            .reserve(u.id, Need::upload(4096))
            .await
            .expect("holds ahead again");
        let free = 3 * MIB - 18 * 4096;
        env.store
            .reserve(u.id, Need::upload(free))
            .await
            .expect("all that is free, what was held given back for it");
        assert_eq!(
            books(other.require_user("alice").await.expect("alice")),
            (3 * MIB, 19)
        );
        match env.store.reserve(u.id, Need::upload(1)).await {
            Err(Error::QuotaExceeded { free, .. }) => assert_eq!(free, 0),
            other => panic!("expected QuotaExceeded, got {other:?}"),
        }
        match other.reserve(u.id, Need::upload(1)).await {
            Err(Error::QuotaExceeded { free, .. }) => assert_eq!(free, 0),
            other => panic!("expected QuotaExceeded, got {other:?}"),
        }

        // Idle, what is held goes back by itself.
        env.store.release(u.id, 3 * MIB, 19).await.expect("release");
        env.store
            .reserve(u.id, Need::upload(10))
            .await
            .expect("holds ahead");
        assert_eq!(
            books(other.require_user("alice").await.expect("alice")),
            (10 + MIB, 17)
        );
        let mut left = (0, 0);
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            left = books(other.require_user("alice").await.expect("alice"));
            if left == (10, 1) {
                break;
            }
        }
        assert_eq!(left, (10, 1), "what was held went back when idle");
        other.close().await;
    }
}

#[tokio::test]
async fn unlimited_quota_reserves_anything() {
    for env in common::envs().await {
        let u = env.add_user("alice", "correct horse", None, "ftp").await;
        env.store
            .reserve(u.id, Need::upload(1 << 50))
            .await
            .expect("unlimited");
    }
}

#[tokio::test]
async fn usage_report_counts_every_service() {
    for env in common::envs().await {
        let a = env
            .add_user("alice", "correct horse", Some(1 << 30), "ftp,chat,exec")
            .await;
        let b = env.add_user("bob", "battery staple", None, "chat").await;
        for (direction, bytes, ok) in [
            (Direction::Up, 100, true),
            (Direction::Up, 50, false),
            (Direction::Down, 30, true),
        ] {
            env.store
                .record_transfer(&TransferRecord {
                    user_id: a.id,
                    direction,
                    path: "/f".into(),
                    bytes,
                    md5: None,
                    ok,
                    duration: Duration::from_millis(5),
                })
                .await
                .expect("transfer");
        }
        env.store
            .record_chat_messages(&[
                ChatRecord {
                    id: 1,
                    sender_id: a.id,
                    room: Some("lobby".into()),
                    seq: Some(1),
                    recipient_id: None,
                    body: "hi".into(),
                    at: 1,
                },
                ChatRecord {
                    id: 2,
                    sender_id: b.id,
                    room: None,
                    seq: None,
                    recipient_id: Some(a.id),
                    body: "psst".into(),
                    at: 2,
                },
            ])
            .await
            .expect("chat");
        assert_eq!(env.store.last_chat_id().await.expect("last id"), 2);
        assert_eq!(env.store.last_room_seq("lobby").await.expect("seq"), 1);
        let history = env.store.room_history("lobby", 10).await.expect("history");
        assert_eq!(history.len(), 1);
        assert_eq!(
            (history[0].sender.as_str(), history[0].body.as_str()),
            ("alice", "hi")
        );
        env.store
            .record_exec(&ExecRecord {
                user_id: a.id,
                command: "true".into(),
                exit_code: Some(0),
                signal: None,
                duration: Duration::from_millis(3),
                bytes_out: 0,
            })
            .await
            .expect("exec");

        let rows = env.store.usage_report(None, 0).await.expect("report");
        assert_eq!(rows.len(), 2);
        let ra = &rows[0];
        assert_eq!(ra.name, "alice");
        assert_eq!(
            (ra.uploads, ra.downloads, ra.bytes_up, ra.bytes_down),
            (1, 1, 150, 30)
        );
        assert_eq!((ra.chat_messages, ra.exec_commands), (1, 1));
        assert_eq!((rows[1].name.as_str(), rows[1].chat_messages), ("bob", 1));
        let only_bob = env
            .store
            .usage_report(Some("bob"), 0)
            .await
            .expect("report");
        assert_eq!(only_bob.len(), 1);
        let recent = env
            .store
            .usage_report(Some("bob"), 10)
            .await
            .expect("report");
        assert_eq!(recent[0].chat_messages, 0);
    }
}

#[tokio::test]
async fn the_database_is_private_and_made_so_when_found_open() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite://{}/data/wharf.db", dir.path().display());
    let db = dir.path().join("data/wharf.db");
    let mode =
        |p: &std::path::Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
    let store = Store::open(&url).await.expect("open");
    store.user("x").await.expect("a read");
    assert_eq!(mode(&db), 0o600);
    let mut wal = db.clone().into_os_string();
    wal.push("-wal");
    assert_eq!(mode(std::path::Path::new(&wal)), 0o600, "the -wal too");
    store.close().await;
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let store = Store::open(&url).await.expect("open again");
    assert_eq!(mode(&db), 0o600, "found readable by others, made private");
    store.close().await;
}

#[tokio::test]
async fn a_database_url_wharf_does_not_serve_is_refused_and_nothing_is_made() {
    let dir = tempfile::tempdir().expect("dir");
    let here = std::env::current_dir().expect("cwd");
    std::env::set_current_dir(dir.path()).expect("cd");
    for (url, says) in [
        ("mysql://root@db/wharf", "Wharf does not serve mysql"),
        ("postgress://host/db", "Wharf does not serve postgress"),
        ("data/wharf.db", "it has no scheme"),
    ] {
        let Err(e) = Store::open(url).await else {
            panic!("{url} was opened");
        };
        let text = e.to_string();
        assert!(text.contains(says), "{url}: {text}");
        assert!(
            text.contains("sqlite://FILE") && text.contains("postgres://"),
            "{text}"
        );
    }
    // A PostgreSQL URL is never taken for a file name: nothing appears here.
    let _ = Store::open("postgres://nobody@127.0.0.1:1/wharf").await;
    std::env::set_current_dir(here).expect("cd back");
    let made: Vec<_> = std::fs::read_dir(dir.path()).expect("ls").collect();
    assert!(made.is_empty(), "{made:?}");
}

#[tokio::test]
async fn a_password_in_a_postgres_url_is_never_in_an_error() {
    let Err(e) = Store::open("postgres://wharf:s3cret-pw@127.0.0.1:1/wharf").await else {
        panic!("nothing listens on port 1");
    };
    assert!(!format!("{e} {e:?}").contains("s3cret-pw"), "{e:?}");
}

/// A SQLite database filled with one of every kind of row.
async fn filled() -> common::Env {
    use wharf_store::db::ChatRecord;
    use wharf_store::db::Direction;
    use wharf_store::db::ExecRecord;
    use wharf_store::db::FileVersion;
    use wharf_store::db::TransferRecord;
    let env = common::env().await;
    let alice = env
        .add_user("alice", "pw one two three", Some(1 << 30), "ftp,chat")
        .await;
    let bob = env
        .add_user("bob", "pw four five six", None, "ftp,chat,exec")
        .await;
    // A key of bob's (an SSH public key line, as admin-cli takes it).
    let key = wharf_store::keys::parse(
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILM+rvN+ot98qgEN796jTiQfZfG1KaT0PtFDJ/XFSqti bob@laptop",
    )
    .expect("a key");
    env.store.add_key("bob", &key).await.expect("key");
    env.store.set_locked("bob", true).await.expect("lock");
    env.store
        .reserve(alice.id, Need::upload(1000))
        .await
        .expect("reserve");
    env.store
        .commit(alice.id, (1000, 1), 1000, 1)
        .await
        .expect("commit");
    for (i, (user, dir)) in [(alice.id, Direction::Up), (bob.id, Direction::Down)]
        .into_iter()
        .enumerate()
    {
        env.store
            .record_transfer(&TransferRecord {
                user_id: user,
                direction: dir,
                path: format!("/f{i}.bin"),
                bytes: 1000 + i as u64,
                md5: Some(format!("{i:032x}")),
                ok: true,
                duration: std::time::Duration::from_millis(5),
            })
            .await
            .expect("transfer");
    }
    let said = |id: u64, seq: Option<u64>, room: Option<&str>, to: Option<i64>| ChatRecord {
        id,
        sender_id: alice.id,
        room: room.map(str::to_owned),
        seq,
        recipient_id: to,
        body: format!("message {id}"),
        at: 1_700_000_000_000 + id as i64,
    };
    env.store
        .record_chat_messages(&[
            said(1, Some(1), Some("lobby"), None),
            said(2, Some(2), Some("lobby"), None),
            said(3, None, None, Some(bob.id)),
        ])
        .await
        .expect("chat");
    env.store
        .record_exec(&ExecRecord {
            user_id: bob.id,
            command: "echo hi".into(),
            exit_code: Some(0),
            signal: None,
            duration: std::time::Duration::from_millis(3),
            bytes_out: 3,
        })
        .await
        .expect("exec");
    env.store
        .record_failure("mallory", "192.0.2.9/32", 1_700_000_000_000, 0)
        .await
        .expect("failure");
    let version = FileVersion {
        dev: 1,
        ino: 2,
        size: 1000,
        mtime_ns: 3,
        ctime_ns: 4,
    };
    env.store
        .remember_md5(alice.id, &version, "0123456789abcdef0123456789abcdef")
        .await
        .expect("md5");
    env
}

#[tokio::test]
async fn a_copy_into_postgres_keeps_every_row_and_the_ids_go_on() {
    let Some(url) = common::postgres::fresh_postgres().await else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs this on PostgreSQL: bash .ci/test"
        );
        eprintln!("skipped: no PostgreSQL test cluster");
        return;
    };
    let src = filled().await;
    let dst = Store::open(&url).await.expect("open the copy");
    let report = src.store.copy_into(&dst).await.expect("copy");
    let counts = src.store.row_counts().await.expect("counts");
    assert_eq!(report.tables, counts);
    assert_eq!(dst.row_counts().await.expect("counts"), counts);
    assert!(counts.iter().all(|(_, n)| *n > 0), "{counts:?}");
    // The same users, rights, quotas, locks; the same reports and history.
    assert_eq!(
        format!("{:?}", dst.list_users().await.expect("users")),
        format!("{:?}", src.store.list_users().await.expect("users"))
    );
    assert_eq!(
        dst.usage_report(None, 0).await.expect("usage"),
        src.store.usage_report(None, 0).await.expect("usage")
    );
    assert_eq!(
        dst.room_history("lobby", 10).await.expect("history"),
        src.store.room_history("lobby", 10).await.expect("history")
    );
    // A user made on the copy gets a new id.
    let hash = wharf_store::auth::hash_password(&wharf_core::Password::new("pw seven eight"))
        .await
        .expect("hash");
    let carol = dst
        .create_user(&wharf_store::db::NewUser {
            name: "carol".into(),
            password_hash: hash,
            home: src.dir.path().join("homes/carol"),
            quota_bytes: None,
            quota_files: None,
            services: "ftp".parse().expect("services"),
        })
        .await
        .expect("a new user on the copy");
    assert!(carol.id > 2, "{}", carol.id);
    // A second copy into a database with users is refused.
    let again = src.store.copy_into(&dst).await;
    assert!(again.is_err(), "copied twice into one database");
}

#[tokio::test]
async fn chat_messages_posted_through_two_handles_are_numbered_by_the_database() {
    use wharf_store::db::ChatNotice;
    use wharf_store::db::NewChatMessage;
    for env in common::envs().await {
        let alice = env
            .add_user("alice", "pw one two three", None, "chat")
            .await;
        let bob = env.add_user("bob", "pw four five six", None, "chat").await;
        // A second handle on the same database, as a second server has.
        let other = Store::open(&env.url).await.expect("second handle");
        let mut listener = if env.store.backend() == Backend::Postgres {
            let mut l = sqlx::postgres::PgListener::connect(&env.url)
                .await
                .expect("listen");
            l.listen(wharf_store::db::CHAT_CHANNEL)
                .await
                .expect("listen");
            Some(l)
        } else {
            None
        };
        let mut posters = Vec::new();
        for i in 0..4 {
            let store = if i % 2 == 0 {
                env.store.clone()
            } else {
                other.clone()
            };
            let (alice, bob) = (alice.id, bob.id);
            posters.push(tokio::spawn(async move {
                let mut got = Vec::new();
                for n in 0..25 {
                    let body = format!("poster {i} message {n}");
                    let room = store
                        .post_chat_message(&NewChatMessage {
                            sender_id: alice,
                            sender: "alice",
                            room: Some("lobby"),
                            recipient_id: None,
                            recipient: None,
                            body: &body,
                            at: 1_700_000_000_000 + n,
                            replica: "test",
                        })
                        .await
                        .expect("post");
                    got.push(room);
                    if n % 5 == 0 {
                        let direct = store
                            .post_chat_message(&NewChatMessage {
                                sender_id: alice,
                                sender: "alice",
                                room: None,
                                recipient_id: Some(bob),
                                recipient: Some("bob"),
                                body: "psst",
                                at: 1_700_000_000_000 + n,
                                replica: "test",
                            })
                            .await
                            .expect("direct");
                        assert_eq!(direct.1, None, "a direct message has no room number");
                        got.push(direct);
                    }
                }
                got
            }));
        }
        let mut ids = std::collections::BTreeSet::new();
        let mut seqs = Vec::new();
        for p in posters {
            for (id, seq) in p.await.expect("poster") {
                assert!(ids.insert(id), "id {id} twice");
                seqs.extend(seq);
            }
        }
        seqs.sort_unstable();
        assert_eq!(
            seqs,
            (1..=100).collect::<Vec<u64>>(),
            "numbered without gaps or repeats"
        );
        assert_eq!(ids.len(), 120);
        let history = env.store.room_history("lobby", 200).await.expect("history");
        assert_eq!(history.len(), 100);
        assert!(history.windows(2).all(|w| w[0].seq + 1 == w[1].seq));
        // PostgreSQL announces each message as it commits, in the order of
        // the room's numbers.
        if let Some(listener) = listener.as_mut() {
            let mut announced = Vec::new();
            while announced.len() < 120 {
                let n = tokio::time::timeout(std::time::Duration::from_secs(10), listener.recv())
                    .await
                    .expect("a notification within 10 s")
                    .expect("notification");
                let notice: ChatNotice = serde_json::from_str(n.payload()).expect("a chat notice");
                let ChatNotice::Message(m) = notice else {
                    panic!("not a message: {notice:?}");
                };
                assert_eq!((m.from.as_str(), m.replica.as_str()), ("alice", "test"));
                if m.room.is_none() {
                    assert_eq!(
                        (m.to.as_deref(), m.text.as_deref()),
                        (Some("bob"), Some("psst"))
                    );
                }
                announced.push(m.id);
            }
            let by_id: std::collections::HashMap<u64, u64> =
                history.iter().map(|h| (h.id, h.seq)).collect();
            let in_order: Vec<u64> = announced
                .iter()
                .filter_map(|id| by_id.get(id).copied())
                .collect();
            assert_eq!(
                in_order,
                (1..=100).collect::<Vec<u64>>(),
                "announced in room order"
            );
        }
    }
}

#[tokio::test]
async fn chat_history_is_trimmed_by_age_per_room_and_per_user_on_every_back_end() {
    use wharf_store::db::ChatRecord;
    use wharf_store::db::HistoryPolicy;
    for env in common::envs().await {
        let alice = env
            .add_user("alice", "pw one two three", None, "chat")
            .await;
        let bob = env.add_user("bob", "pw four five six", None, "chat").await;
        let now = wharf_core::time::now_ms();
        let mut records = Vec::new();
        let mut id = 0;
        let mut say = |sender: i64, room: &str, seq: u64, body: String, at: i64| {
            id += 1;
            records.push(ChatRecord {
                id,
                sender_id: sender,
                room: Some(room.into()),
                seq: Some(seq),
                recipient_id: None,
                body,
                at,
            });
        };
        // Old: three in "attic"; "hall": 2,500 short ones by bob (more than
        // two batches); "den": alice's, 20 of 100 bytes (two-byte letters).
        for seq in 1..=3 {
            say(bob.id, "attic", seq, format!("old {seq}"), now - 100_000);
        }
        for seq in 1..=2500 {
            say(bob.id, "hall", seq, format!("{seq}"), now);
        }
        for seq in 1..=20 {
            say(
                alice.id,
                "den",
                seq,
                format!("{seq:02}{}", "é".repeat(49)),
                now,
            );
        }
        env.store
            .record_chat_messages(&records)
            .await
            .expect("record");
        let policy = HistoryPolicy {
            before_ms: Some(now - 50_000),
            per_room: Some(100),
            per_user_bytes: Some(1000),
        };
        let removed = env.store.trim_chat_history(policy).await.expect("trim");
        // 3 old, 2,400 of the hall, 10 of alice's 20 (100 bytes each).
        assert_eq!(removed, 3 + 2400 + 10, "{:?}", env.store.backend());
        assert!(
            env.store
                .room_history("attic", 10)
                .await
                .expect("h")
                .is_empty()
        );
        let hall = env.store.room_history("hall", 500).await.expect("h");
        assert_eq!(hall.len(), 100);
        assert_eq!(hall[0].body, "2401");
        let den = env.store.room_history("den", 500).await.expect("h");
        let firsts: Vec<_> = den.iter().map(|m| &m.body[..2]).collect();
        assert_eq!(
            firsts,
            ["11", "12", "13", "14", "15", "16", "17", "18", "19", "20"]
        );
        // Numbering goes on where it was.
        assert_eq!(env.store.last_room_seq("hall").await.expect("seq"), 2500);
        // Nothing more to do.
        let again = env.store.trim_chat_history(policy).await.expect("trim");
        assert_eq!(again, 0);
    }
}

#[tokio::test]
async fn sessions_are_counted_over_processes_and_a_silent_process_stops_counting() {
    for env in common::envs().await {
        let alice = env.add_user("alice", "pw one two three", None, "ftp").await;
        let store = &env.store;
        for p in ["one", "two"] {
            store.beat_process(p).await.expect("beat");
        }
        let a = store
            .open_session((alice.id, "alice"), "ftp", "one", Some(2))
            .await
            .expect("first");
        store
            .open_session((alice.id, "alice"), "chat", "two", Some(2))
            .await
            .expect("second, another process");
        let err = store
            .open_session((alice.id, "alice"), "exec", "one", Some(2))
            .await
            .expect_err("third");
        assert!(
            matches!(
                err,
                wharf_store::Error::TooManySessions {
                    open: 2,
                    max: 2,
                    ..
                }
            ),
            "{err:?} on {:?}",
            store.backend()
        );
        assert_eq!(store.open_sessions(alice.id).await.expect("count"), 2);
        store.close_session(a).await.expect("close");
        store
            .open_session((alice.id, "alice"), "exec", "one", Some(2))
            .await
            .expect("a place again");
        // A process that stops (or is gone) no longer holds places.
        store.end_process("two").await.expect("end");
        assert_eq!(store.open_sessions(alice.id).await.expect("count"), 1);
        // Unlimited: counted all the same.
        store
            .open_session((alice.id, "alice"), "ftp", "one", None)
            .await
            .expect("unlimited");
        assert_eq!(store.open_sessions(alice.id).await.expect("count"), 2);
    }
}

#[tokio::test]
async fn records_written_behind_the_reply_all_land_and_a_bad_one_loses_only_itself() {
    for env in common::envs().await {
        let a = env
            .add_user("alice", "correct horse", None, "ftp,exec")
            .await;
        let transfer = |user_id: i64, path: String| TransferRecord {
            user_id,
            direction: Direction::Up,
            path,
            bytes: 1,
            md5: None,
            ok: true,
            duration: Duration::from_millis(1),
        };
        // Many replies at once, as many connections make them.
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..300 {
            let store = env.store.clone();
            let record = transfer(a.id, format!("/f{i}"));
            tasks.spawn(async move { store.record_transfer(&record).await });
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("task").expect("queued");
        }
        // A record of a user deleted meanwhile cannot be written: it is
        // dropped (and logged), the rest of its batch is not.
        env.store
            .record_transfer(&transfer(a.id + 1_000, "/ghost".into()))
            .await
            .expect("queued");
        env.store
            .record_exec(&ExecRecord {
                user_id: a.id,
                command: "true".into(),
                exit_code: Some(0),
                signal: None,
                duration: Duration::from_millis(3),
                bytes_out: 0,
            })
            .await
            .expect("queued");
        // Closing writes what is queued; another process sees all of it.
        env.store.close().await;
        let other = Store::open(&env.url).await.expect("reopen");
        let rows = other
            .recent_transfers("alice", 0, 1_000)
            .await
            .expect("transfers");
        assert_eq!(rows.len(), 300);
        let log = other.exec_log(Some("alice"), 0, 10).await.expect("log");
        assert_eq!(log.len(), 1);
        other.close().await;
    }
}
