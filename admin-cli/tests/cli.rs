//! admin-cli end to end: the real binary against a real SQLite file in a
//! temp dir; every command, every error case, exact outputs and exit codes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use wharf_core::Password;
use wharf_core::Service;
use wharf_store::AuthConfig;
use wharf_store::Authenticator;
use wharf_store::Error;
use wharf_store::Store;

const PW: &str = "correct horse battery";

use wharf_testkit::btrfs as test_btrfs;
use wharf_testkit::postgres;
use wharf_testkit::terminal;

struct Admin {
    dir: tempfile::TempDir,
}

impl Admin {
    /// alice with a 2 GiB quota, and bob (ftp and exec) locked.
    fn with_alice_and_bob() -> Admin {
        let admin = Admin::new();
        admin.ok(
            &["user", "add", "alice", "--password-stdin", "--quota", "2G"],
            Some(PW),
        );
        admin.ok(
            &[
                "user",
                "add",
                "bob",
                "--password-stdin",
                "--services",
                "ftp,exec",
            ],
            Some(PW),
        );
        admin.ok(&["user", "lock", "bob"], None);
        admin
    }

    fn new() -> Admin {
        Admin {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// An admin whose data folder is on the btrfs file system of the tests.
    fn on(root: &Path) -> Admin {
        Admin {
            dir: tempfile::tempdir_in(root).expect("temp dir"),
        }
    }

    fn url(&self) -> String {
        format!("sqlite://{}/wharf.db", self.dir.path().display())
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Runs admin-cli with `args`, feeding `stdin` (or nothing).
    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        self.run_on(&self.url(), args, stdin)
    }

    /// The same, on the database at `url`.
    fn run_on(&self, url: &str, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = Command::new(env!("CARGO_BIN_EXE_admin-cli"))
            .args(["--database-url", url, "--data-dir"])
            .arg(self.data())
            .args(args)
            .env_remove("WHARF_DATABASE_URL")
            .env_remove("WHARF_DATA_DIR")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn admin-cli");
        let mut input = child.stdin.take().expect("stdin");
        if let Some(text) = stdin {
            // admin-cli may rightly exit before reading (a bad name is refused
            // before the password is asked for): a broken pipe is fine.
            let _ = input.write_all(text.as_bytes());
        }
        drop(input);
        child.wait_with_output().expect("wait admin-cli")
    }

    fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin);
        assert!(
            out.status.success(),
            "admin-cli {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 stdout")
    }

    /// Runs a command that must fail with `code`, printing exactly one line on stderr.
    fn fails(&self, args: &[&str], stdin: Option<&str>, code: i32) -> String {
        let out = self.run(args, stdin);
        let stderr = String::from_utf8(out.stderr).expect("utf-8 stderr");
        assert_eq!(
            out.status.code(),
            Some(code),
            "admin-cli {args:?}: {stderr}"
        );
        assert_eq!(
            stderr.trim_end().lines().count(),
            1,
            "one line expected: {stderr:?}"
        );
        assert!(stderr.starts_with("admin-cli: "), "{stderr}");
        stderr
    }

    fn add(&self, name: &str, extra: &[&str]) -> String {
        let mut args = vec!["user", "add", name, "--password-stdin"];
        args.extend_from_slice(extra);
        self.ok(&args, Some(&format!("{PW}\n")))
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.push("--json");
        serde_json::from_str(&self.ok(&args, None)).expect("valid JSON")
    }

    fn show(&self, name: &str) -> Value {
        self.json(&["user", "show", name])
    }

    /// Users in the database; none when there is no database at all (a
    /// read-only command makes none).
    fn user_count(&self) -> usize {
        if !self.dir.path().join("wharf.db").exists() {
            return 0;
        }
        self.json(&["user", "list"])
            .as_array()
            .expect("array")
            .len()
    }

    async fn login(&self, name: &str, password: &str, service: Service) -> Result<(), Error> {
        let store = Store::open(&self.url()).await.expect("open");
        let auth = Authenticator::new(store.clone(), AuthConfig::default())
            .await
            .expect("auth");
        let result = auth
            .authenticate(
                name,
                &Password::new(password),
                service,
                std::net::Ipv4Addr::LOCALHOST.into(),
            )
            .await
            .map(|_| ());
        store.close().await;
        result
    }
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

#[test]
fn help_and_version_read_well() {
    let admin = Admin::new();
    let help = admin.ok(&["--help"], None);
    for word in [
        "user",
        "quota",
        "home",
        "usage",
        "--database-url",
        "Exit codes",
        "--password-stdin",
    ] {
        assert!(help.contains(word), "--help lacks {word}: {help}");
    }
    let add_help = admin.ok(&["user", "add", "--help"], None);
    for word in [
        "--quota",
        "--home",
        "--services",
        "--password-stdin",
        "[default: 1GiB]",
        "[default: ftp,chat]",
    ] {
        assert!(
            add_help.contains(word),
            "user add --help lacks {word}: {add_help}"
        );
    }
    assert_eq!(
        admin.ok(&["--version"], None).trim(),
        format!("admin-cli {}", env!("CARGO_PKG_VERSION"))
    );
}

#[tokio::test]
async fn user_add_creates_the_user_and_home_with_defaults() {
    let admin = Admin::new();
    let out = admin.add("alice", &[]);
    let home = admin
        .data()
        .join("homes/alice")
        .canonicalize()
        .expect("home exists");
    assert_eq!(
        out.trim(),
        format!(
            "added user alice: home {}, quota 1 GiB and 100000 files, services ftp,chat",
            home.display()
        )
    );
    let v = admin.show("alice");
    assert_eq!(v["name"], "alice");
    assert_eq!(v["home"], home.display().to_string());
    assert_eq!(v["quota_bytes"], 1u64 << 30);
    assert_eq!(v["used_bytes"], 0);
    assert_eq!(v["services"], serde_json::json!(["ftp", "chat"]));
    assert_eq!(v["locked"], false);
    assert_eq!(v["last_login_at"], Value::Null);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&home).expect("meta").permissions().mode() & 0o777,
        0o700
    );
    admin
        .login("alice", PW, Service::Ftp)
        .await
        .expect("the password works");
}

#[test]
fn user_add_takes_quota_home_and_services() {
    let admin = Admin::new();
    let home = admin.dir.path().join("elsewhere/bob");
    admin.add(
        "bob",
        &[
            "--quota",
            "unlimited",
            "--home",
            home.to_str().expect("utf-8"),
            "--services",
            "exec,ftp",
        ],
    );
    let v = admin.show("bob");
    assert_eq!(v["quota_bytes"], Value::Null);
    assert_eq!(
        v["home"],
        home.canonicalize().expect("created").display().to_string()
    );
    assert_eq!(v["services"], serde_json::json!(["ftp", "exec"]));
    admin.add("carol", &["--quota", "1.5GB", "--services", ""]);
    let v = admin.show("carol");
    assert_eq!(v["quota_bytes"], 1_500_000_000u64);
    assert_eq!(v["services"], serde_json::json!([]));
}

#[tokio::test]
async fn duplicate_user_exits_4_and_changes_nothing() {
    let admin = Admin::new();
    admin.add("alice", &["--quota", "5M"]);
    let err = admin.fails(
        &["user", "add", "alice", "--password-stdin", "--quota", "9G"],
        Some("another password\n"),
        4,
    );
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(admin.show("alice")["quota_bytes"], 5u64 << 20);
    admin
        .login("alice", PW, Service::Ftp)
        .await
        .expect("old password still works");
    assert_eq!(admin.user_count(), 1);
}

#[test]
fn bad_input_exits_2_and_adds_nobody() {
    let admin = Admin::new();
    let cases: [(&[&str], &str); 5] = [
        (
            &["user", "add", "Alice", "--password-stdin"],
            "invalid user name",
        ),
        (
            &["user", "add", "9lives", "--password-stdin"],
            "invalid user name",
        ),
        (
            &[
                "user",
                "add",
                "alice",
                "--password-stdin",
                "--quota",
                "lots",
            ],
            "invalid size",
        ),
        (
            &["user", "add", "alice", "--password-stdin", "--quota=-5"],
            "invalid size",
        ),
        (
            &[
                "user",
                "add",
                "alice",
                "--password-stdin",
                "--services",
                "ftp,ssh",
            ],
            "unknown service",
        ),
    ];
    for (args, want) in cases {
        let err = admin.fails(args, Some(&format!("{PW}\n")), 2);
        assert!(err.contains(want), "{args:?}: {err}");
    }
    assert_eq!(admin.user_count(), 0);
    assert!(
        !admin.data().join("homes/alice").exists(),
        "no home was left behind"
    );
}

#[test]
fn empty_weak_or_missing_passwords_are_refused() {
    let admin = Admin::new();
    let err = admin.fails(&["user", "add", "alice", "--password-stdin"], Some("\n"), 1);
    assert!(err.contains("password refused: it is empty"), "{err}");
    let err = admin.fails(&["user", "add", "alice", "--password-stdin"], Some(""), 1);
    assert!(err.contains("it is empty"), "{err}");
    let err = admin.fails(
        &["user", "add", "alice", "--password-stdin"],
        Some("short\n"),
        1,
    );
    assert!(err.contains("at least 8 characters"), "{err}");
    // No terminal and no --password-stdin: told what to do instead of hanging.
    let err = admin.fails(&["user", "add", "alice"], None, 2);
    assert!(err.contains("--password-stdin"), "{err}");
    assert_eq!(admin.user_count(), 0);
    assert!(!admin.data().join("homes/alice").exists());
}

#[test]
fn passwords_are_never_taken_as_arguments() {
    let admin = Admin::new();
    let out = admin.run(
        &["user", "add", "alice", "--password", "hunter2hunter2"],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(admin.user_count(), 0);
}

#[test]
fn unknown_user_exits_3_everywhere() {
    let admin = Admin::new();
    admin.add("alice", &[]);
    let cases: [&[&str]; 11] = [
        &["user", "show", "bob"],
        &["user", "del", "bob"],
        &["user", "lock", "bob"],
        &["user", "unlock", "bob"],
        &["user", "grant", "bob", "exec"],
        &["user", "revoke", "bob", "chat"],
        &["quota", "set", "bob", "1G"],
        &["home", "set", "bob", "/tmp"],
        &["usage", "bob"],
        &["usage", "bob", "--rescan"],
        &["user", "passwd", "bob", "--password-stdin"],
    ];
    for args in cases {
        let err = admin.fails(args, Some(&format!("{PW}\n")), 3);
        assert!(err.contains("no user named \"bob\""), "{args:?}: {err}");
    }
    assert_eq!(admin.user_count(), 1);
}

#[tokio::test]
async fn passwd_replaces_the_password() {
    let admin = Admin::new();
    admin.add("alice", &[]);
    let out = admin.ok(
        &["user", "passwd", "alice", "--password-stdin"],
        Some("a brand new secret\r\n"),
    );
    assert_eq!(out.trim(), "changed the password of alice");
    assert!(matches!(
        admin.login("alice", PW, Service::Ftp).await,
        Err(Error::AuthFailed)
    ));
    admin
        .login("alice", "a brand new secret", Service::Ftp)
        .await
        .expect("new password");
    // A refused new password leaves the old one in place.
    admin.fails(
        &["user", "passwd", "alice", "--password-stdin"],
        Some("tiny\n"),
        1,
    );
    admin
        .login("alice", "a brand new secret", Service::Ftp)
        .await
        .expect("unchanged");
}

#[tokio::test]
async fn lock_and_unlock_also_lift_a_lockout() {
    let admin = Admin::new();
    admin.add("alice", &[]);
    assert_eq!(
        admin.ok(&["user", "lock", "alice"], None).trim(),
        "locked alice: no login anywhere until `admin-cli user unlock alice`"
    );
    assert_eq!(admin.show("alice")["locked"], true);
    assert!(matches!(
        admin.login("alice", PW, Service::Ftp).await,
        Err(Error::AccountLocked(_))
    ));
    for _ in 0..5 {
        let _ = admin.login("alice", "wrong password", Service::Ftp).await;
    }
    assert_eq!(admin.show("alice")["failed_logins"], 5);
    assert_eq!(admin.show("alice")["slowed_until"], serde_json::Value::Null);
    // Past five failures the name is slowed (never locked), and both
    // listings say so, with when it ends.
    admin.ok(&["user", "unlock", "alice"], None);
    for _ in 0..7 {
        let _ = admin.login("alice", "wrong password", Service::Ftp).await;
    }
    let shown = admin.show("alice");
    assert_eq!(shown["failed_logins"], 7);
    assert_eq!(shown["login_delay_ms"], 200);
    let until = shown["slowed_until"].as_str().expect("slowed").to_owned();
    let table = admin.ok(&["user", "list"], None);
    let row = table
        .lines()
        .find(|l| l.contains("alice"))
        .expect("alice's row");
    assert!(
        row.contains(&format!(
            "slowed (0.2 s per attempt) until {}",
            until.replacen('T', " ", 1)
        )),
        "{table}"
    );
    let table = admin.ok(&["user", "show", "alice"], None);
    assert!(table.contains("7 in the last 15 minutes"), "{table}");
    assert_eq!(
        admin.ok(&["user", "unlock", "alice"], None).trim(),
        "unlocked alice and cleared their failed logins"
    );
    assert_eq!(admin.show("alice")["locked"], false);
    assert_eq!(admin.show("alice")["failed_logins"], 0);
    assert_eq!(admin.show("alice")["login_delay_ms"], 0);
    admin
        .login("alice", PW, Service::Ftp)
        .await
        .expect("unlocked");
    assert!(admin.show("alice")["last_login_at"].is_string());
}

#[tokio::test]
async fn grant_and_revoke_change_the_rights() {
    let admin = Admin::new();
    admin.add("alice", &[]);
    assert!(matches!(
        admin.login("alice", PW, Service::Exec).await,
        Err(Error::NotPermitted { .. })
    ));
    assert_eq!(
        admin.ok(&["user", "grant", "alice", "exec"], None).trim(),
        "granted exec to alice"
    );
    assert_eq!(
        admin.ok(&["user", "grant", "alice", "exec"], None).trim(),
        "alice already has exec"
    );
    admin
        .login("alice", PW, Service::Exec)
        .await
        .expect("granted");
    assert_eq!(
        admin.ok(&["user", "revoke", "alice", "chat"], None).trim(),
        "revoked chat from alice"
    );
    assert_eq!(
        admin.ok(&["user", "revoke", "alice", "chat"], None).trim(),
        "alice did not have chat"
    );
    assert_eq!(
        admin.show("alice")["services"],
        serde_json::json!(["ftp", "exec"])
    );
    let err = admin.fails(&["user", "grant", "alice", "root"], None, 2);
    assert!(err.contains("unknown service \"root\""), "{err}");
}

#[test]
fn quota_set_accepts_sizes_and_unlimited() {
    let admin = Admin::new();
    admin.add("alice", &[]);
    assert_eq!(
        admin.ok(&["quota", "set", "alice", "2G"], None).trim(),
        "quota of alice is now 2 GiB (0 B used)"
    );
    assert_eq!(admin.show("alice")["quota_bytes"], 2u64 << 30);
    admin.ok(&["quota", "set", "alice", "unlimited"], None);
    assert_eq!(admin.show("alice")["quota_bytes"], Value::Null);
    let err = admin.fails(&["quota", "set", "alice", "2Q"], None, 2);
    assert!(err.contains("invalid size \"2Q\""), "{err}");
    assert_eq!(
        admin.show("alice")["quota_bytes"],
        Value::Null,
        "unchanged after a bad size"
    );
}

#[test]
fn quota_below_usage_warns() {
    let admin = Admin::new();
    admin.add("alice", &[]);
    let home = PathBuf::from(admin.show("alice")["home"].as_str().expect("home"));
    std::fs::write(home.join("f"), vec![0u8; 2048]).expect("write");
    admin.ok(&["usage", "--rescan"], None);
    let out = admin.run(&["quota", "set", "alice", "1K"], None);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("already uses 2 KiB, more than the new quota of 1 KiB"),
        "{stderr}"
    );
}

#[test]
fn home_set_creates_the_directory_and_measures_it() {
    let admin = Admin::new();
    admin.add("alice", &[]);
    let new_home = admin.dir.path().join("new-home");
    std::fs::create_dir_all(new_home.join("sub")).expect("mkdir");
    std::fs::write(new_home.join("sub/a"), b"hello").expect("write");
    let out = admin.ok(
        &["home", "set", "alice", new_home.to_str().expect("utf-8")],
        None,
    );
    let canonical = new_home.canonicalize().expect("canonical");
    assert_eq!(
        out.trim(),
        format!(
            // The folder counts one block, as every folder does.
            "home of alice is now {} (4 KiB in 2 files; nothing was moved)",
            canonical.display()
        )
    );
    let v = admin.show("alice");
    assert_eq!(v["home"], canonical.display().to_string());
    assert_eq!(
        (v["used_bytes"].as_u64(), v["files"].as_u64()),
        (Some(4096 + 5), Some(2))
    );
    let fresh = admin.dir.path().join("fresh/home");
    admin.ok(
        &["home", "set", "alice", fresh.to_str().expect("utf-8")],
        None,
    );
    assert!(fresh.is_dir());
    let file = admin.dir.path().join("a-file");
    std::fs::write(&file, b"x").expect("write");
    let err = admin.fails(
        &["home", "set", "alice", file.to_str().expect("utf-8")],
        None,
        1,
    );
    assert!(err.contains("is not a directory"), "{err}");
}

#[test]
fn del_keeps_or_purges_the_home() {
    let admin = Admin::new();
    admin.add("alice", &[]);
    admin.add("bob", &[]);
    let alice_home = PathBuf::from(admin.show("alice")["home"].as_str().expect("home"));
    let bob_home = PathBuf::from(admin.show("bob")["home"].as_str().expect("home"));
    std::fs::write(bob_home.join("f"), b"data").expect("write");
    let out = admin.ok(&["user", "del", "alice"], None);
    assert!(
        out.contains("deleted user alice") && out.contains("kept home"),
        "{out}"
    );
    assert!(alice_home.is_dir());
    let out = admin.ok(&["user", "del", "bob", "--purge-home", "--yes"], None);
    assert!(out.contains("removed home"), "{out}");
    assert!(!bob_home.exists());
    assert_eq!(admin.user_count(), 0);
}

#[test]
fn purge_refuses_a_home_shared_with_another_user() {
    let admin = Admin::new();
    let shared = admin.dir.path().join("shared");
    admin.add("alice", &["--home", shared.to_str().expect("utf-8")]);
    admin.add(
        "bob",
        &["--home", shared.join("bob").to_str().expect("utf-8")],
    );
    let err = admin.fails(&["user", "del", "alice", "--purge-home", "--yes"], None, 1);
    assert!(
        err.contains("refusing to purge") && err.contains("bob"),
        "{err}"
    );
    assert_eq!(admin.user_count(), 2);
    assert!(shared.join("bob").is_dir());
}

#[test]
fn usage_prints_a_table_json_and_rescans() {
    let admin = Admin::new();
    let out = admin.run(&["usage"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no Wharf database at"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !admin.dir.path().join("wharf.db").exists(),
        "usage made a database"
    );
    admin.add("alice", &["--quota", "10K"]);
    admin.add("bob", &["--quota", "unlimited"]);
    let home = PathBuf::from(admin.show("alice")["home"].as_str().expect("home"));
    std::fs::write(home.join("a"), vec![1u8; 1024]).expect("write");
    std::fs::create_dir(home.join("d")).expect("mkdir");
    std::fs::write(home.join("d/b"), vec![1u8; 1024]).expect("write");
    assert_eq!(file_size(&home.join("a")), 1024);

    let before = admin.json(&["usage"]);
    assert_eq!(before[0]["used_bytes"], 0, "not rescanned yet");

    let table = admin.ok(&["usage", "--rescan"], None);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    for col in [
        "user",
        "quota",
        "used",
        "used %",
        "files",
        "up",
        "down",
        "chat msgs",
        "commands",
        "last login",
    ] {
        assert!(lines[0].contains(col), "header lacks {col}: {}", lines[0]);
    }
    assert!(
        lines[2].contains("alice")
            && lines[2].contains("10 KiB")
            // Two 1 KiB files and a folder (a block).
            && lines[2].contains("6 KiB")
            && lines[2].contains("60.0%"),
        "{}",
        lines[2]
    );
    assert!(
        lines[3].contains("bob") && lines[3].contains("unlimited"),
        "{}",
        lines[3]
    );

    let rows = admin.json(&["usage"]);
    assert_eq!(rows.as_array().map(Vec::len), Some(2));
    let a = &rows[0];
    assert_eq!(a["name"], "alice");
    assert_eq!(a["quota_bytes"], 10240);
    assert_eq!(a["used_bytes"], 2048 + 4096);
    assert_eq!(a["used_percent"], 60.0);
    assert_eq!(a["files"], 3);
    for zero in [
        "uploads",
        "downloads",
        "bytes_up",
        "bytes_down",
        "chat_messages",
        "exec_commands",
    ] {
        assert_eq!(a[zero], 0, "{zero}");
    }
    assert_eq!(rows[1]["used_percent"], Value::Null);

    let one = admin.json(&["usage", "bob", "--since", "1h"]);
    assert_eq!(one.as_array().map(Vec::len), Some(1));
    let err = admin.fails(&["usage", "--since", "yesterday-ish"], None, 2);
    assert!(err.contains("invalid duration"), "{err}");
}

#[test]
fn rescan_of_a_missing_home_warns_and_reports_the_rest() {
    let admin = Admin::new();
    admin.add("alice", &[]);
    let home = PathBuf::from(admin.show("alice")["home"].as_str().expect("home"));
    std::fs::remove_dir(&home).expect("rmdir");
    let out = admin.run(&["usage", "--rescan"], None);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning: cannot rescan the home of alice"),
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("alice"));
}

#[test]
fn database_url_comes_from_the_environment_and_folders_are_created() {
    let admin = Admin::new();
    let url = format!("sqlite://{}/deep/er/wharf.db", admin.dir.path().display());
    let mut add = Command::new(env!("CARGO_BIN_EXE_admin-cli"))
        .args(["user", "add", "zed", "--password-stdin"])
        .env("WHARF_DATABASE_URL", &url)
        .env("WHARF_DATA_DIR", admin.data())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run");
    add.stdin
        .take()
        .expect("stdin")
        .write_all(format!("{PW}\n").as_bytes())
        .expect("password");
    let out = add.wait_with_output().expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let db = admin.dir.path().join("deep/er/wharf.db");
    assert!(db.exists());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains(&format!("made a new database at {}", db.display())),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(env!("CARGO_BIN_EXE_admin-cli"))
        .args(["user", "list", "--json"])
        .env("WHARF_DATABASE_URL", &url)
        .output()
        .expect("run");
    let users: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(users[0]["name"], "zed");
}

/// Run from the wrong folder, a read-only command makes no second,
/// empty database: it says where it looked and how to point it at the
/// servers' one; the first `user add` says where it made one, and `user
/// list` names the database it reads.
#[test]
fn admin_cli_in_an_empty_folder_creates_nothing_and_says_where_it_looked() {
    let admin = Admin::new();
    let empty = admin.dir.path().join("elsewhere");
    std::fs::create_dir(&empty).expect("mkdir");
    let here = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_admin-cli"))
            .args(args)
            .current_dir(&empty)
            .env_remove("WHARF_DATABASE_URL")
            .env_remove("WHARF_DATA_DIR")
            .stdin(Stdio::null())
            .output()
            .expect("run")
    };
    for args in [
        &["user", "list"][..],
        &["usage"],
        &["user", "show", "zed"],
        &["db", "check"],
    ] {
        let out = here(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains(&format!(
                "no Wharf database at {}/data/wharf.db",
                empty.display()
            )) && err.contains("--data-dir"),
            "{err}"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
    assert_eq!(
        std::fs::read_dir(&empty).expect("ls").count(),
        0,
        "something was made"
    );
    // Against the servers' data folder, it works from anywhere.
    admin.add("alice", &[]);
    let out = Command::new(env!("CARGO_BIN_EXE_admin-cli"))
        .args(["--database-url", &admin.url(), "user", "list"])
        .current_dir(&empty)
        .output()
        .expect("run");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.starts_with(&format!(
            "database: {}/wharf.db\n",
            admin.dir.path().display()
        )),
        "{table}"
    );
    assert!(table.contains("alice"), "{table}");
}

#[test]
fn an_unusable_database_is_a_clear_failure() {
    let admin = Admin::new();
    let blocker = admin.dir.path().join("file");
    std::fs::write(&blocker, b"x").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_admin-cli"))
        .args([
            "--database-url",
            &format!("sqlite://{}/sub/wharf.db", blocker.display()),
            "user",
            "add",
            "zed",
            "--password-stdin",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("admin-cli: cannot open the database"),
        "{stderr}"
    );
    assert_eq!(stderr.trim_end().lines().count(), 1);
}

#[tokio::test]
async fn usage_of_one_user_lists_latest_transfers_and_commands() {
    use std::time::Duration;
    use wharf_store::db::Direction;
    use wharf_store::db::ExecRecord;
    use wharf_store::db::TransferRecord;
    let admin = Admin::new();
    admin.add("alice", &["--services", "ftp,exec"]);
    admin.add("bob", &[]);
    let store = Store::open(&admin.url()).await.expect("db");
    let alice = store.require_user("alice").await.expect("alice");
    for (path, bytes, ok) in [("a.bin", 100u64, false), ("a.bin", 400, true)] {
        store
            .record_transfer(&TransferRecord {
                user_id: alice.id,
                direction: Direction::Up,
                path: path.into(),
                bytes,
                md5: ok.then(|| "0123456789abcdef0123456789abcdef".into()),
                ok,
                duration: Duration::from_millis(1500),
            })
            .await
            .expect("transfer");
    }
    store
        .record_exec(&ExecRecord {
            user_id: alice.id,
            command: "make test".into(),
            exit_code: None,
            signal: Some(9),
            duration: Duration::from_millis(2000),
            bytes_out: 2048,
        })
        .await
        .expect("exec");
    store.close().await;

    let table = admin.ok(&["usage", "alice"], None);
    assert!(table.contains("latest transfers:"), "{table}");
    assert!(
        table.contains("cut short") && table.contains(" ok "),
        "{table}"
    );
    assert!(table.contains("latest commands:"), "{table}");
    assert!(
        table.contains("make test") && table.contains("signal 9"),
        "{table}"
    );
    let rows = admin.json(&["usage", "alice"]);
    let a = &rows[0];
    assert_eq!(a["uploads"], 1);
    assert_eq!(a["bytes_up"], 500);
    assert_eq!(a["exec_commands"], 1);
    let t = &a["recent_transfers"];
    assert_eq!(t.as_array().map(Vec::len), Some(2));
    assert_eq!(t[0]["bytes"], 400, "newest first");
    assert_eq!(t[0]["ok"], true);
    assert_eq!(t[1]["ok"], false);
    assert_eq!(a["recent_commands"][0]["command"], "make test");
    assert_eq!(a["recent_commands"][0]["signal"], 9);
    // bob has nothing; the full report carries no per-user lists.
    let bob = admin.ok(&["usage", "bob"], None);
    assert!(
        bob.contains("no transfers") && bob.contains("no commands"),
        "{bob}"
    );
    let all = admin.json(&["usage"]);
    assert!(all[0].get("recent_transfers").is_none());
}

#[test]
fn tls_fingerprint_prints_what_the_daemons_serve() {
    let admin = Admin::new();
    let out = admin.run(&["tls", "fingerprint"], None);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no certificate at") && err.contains("--cert FILE"),
        "{err}"
    );
    // What a daemon makes at its first start.
    let tls = wharf_server::tls::ServerTls::made_in(&admin.data(), &[]).expect("certificate");
    assert_eq!(
        admin.ok(&["tls", "fingerprint"], None).trim(),
        tls.fingerprint
    );
    let cert = admin.data().join("tls/server.crt");
    let by_file = admin.ok(
        &["tls", "fingerprint", "--cert", &cert.to_string_lossy()],
        None,
    );
    assert_eq!(by_file.trim(), tls.fingerprint);
    // The same digest openssl computes, if it is here.
    if let Ok(out) = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(&cert)
        .output()
        && out.status.success()
    {
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.trim().ends_with(&tls.fingerprint), "{text}");
    }
}

#[test]
fn a_closed_output_pipe_ends_the_listing_quietly() {
    let admin = Admin::new();
    admin.add("alice", &[]);
    // The reading end is closed before admin-cli writes (as `| head -1`
    // does once it has its line): no panic, the status a shell gives a
    // program its pipe closed on.
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_admin-cli"))
        .args(["--database-url", &admin.url(), "--data-dir"])
        .arg(admin.data())
        .args(["user", "list"])
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("admin-cli");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_database_url_of_another_kind_is_refused_and_nothing_is_made() {
    let admin = Admin::new();
    for (url, says) in [
        ("mysql://root@db/wharf", "Wharf does not serve mysql"),
        ("wharf.db", "it has no scheme"),
    ] {
        let out = admin.run_on(url, &["user", "list"], None);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{url}: {stderr}");
        assert!(stderr.contains(says), "{url}: {stderr}");
        assert!(stderr.contains("sqlite://FILE"), "{stderr}");
    }
    let made: Vec<_> = std::fs::read_dir(admin.dir.path()).expect("ls").collect();
    assert!(made.is_empty(), "{made:?}");
}

#[tokio::test]
async fn db_copy_moves_a_sqlite_database_into_postgres() {
    let Some(pg) = postgres::fresh_postgres().await else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs this on PostgreSQL: bash .ci/test"
        );
        eprintln!("skipped: no PostgreSQL test cluster");
        return;
    };
    let admin = Admin::with_alice_and_bob();
    let before = admin.ok(&["user", "list", "--json"], None);

    let said = admin.ok(&["db", "copy", "--to", &pg], None);
    assert!(
        said.contains("users") && said.contains("user_services"),
        "{said}"
    );
    assert!(said.contains("copied into postgres://"), "{said}");
    // The copy answers as the original did.
    let out = admin.run_on(&pg, &["user", "list", "--json"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), before);
    // db check reads PostgreSQL too; a backup there is PostgreSQL's tools'.
    let out = admin.run_on(&pg, &["db", "check"], None);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("the database is sound"),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = admin.run_on(&pg, &["db", "backup", "x.db"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pg_dump"));
    // A user added on PostgreSQL, as the first try did.
    let out = admin.run_on(&pg, &["user", "add", "carol", "--password-stdin"], Some(PW));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Copying again into a database with users is refused.
    let out = admin.run(&["db", "copy", "--to", &pg], None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("already has users"), "{stderr}");
}

/// The README's backup and restore procedure, run as written (with this
/// test's database in place of data/wharf.db), and `db check`.
#[test]
fn a_backup_restores_users_and_quotas_and_check_finds_drift() {
    let admin = Admin::with_alice_and_bob();
    let before = admin.ok(&["user", "list", "--json"], None);
    let backup = admin.dir.path().join("wharf-backup.db");
    let said = admin.ok(&["db", "backup", &backup.display().to_string()], None);
    assert!(said.starts_with("backed up 2 users to "), "{said}");
    assert!(said.contains("passes the integrity check"), "{said}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&backup)
        .expect("backup")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the backup holds password hashes");
    // A second backup to the same file is refused, the first kept.
    let err = admin.fails(&["db", "backup", &backup.display().to_string()], None, 1);
    assert!(err.contains("must not exist yet"), "{err}");

    // Disaster: alice removed, bob's quota changed.
    admin.ok(&["user", "del", "alice"], None);
    admin.ok(&["quota", "set", "bob", "1MiB"], None);
    // The restore: stop the services, copy the backup over the database,
    // remove its write-ahead log, check.
    let db = admin.dir.path().join("wharf.db");
    std::fs::copy(&backup, &db).expect("restore");
    for side in ["wharf.db-wal", "wharf.db-shm"] {
        let _ = std::fs::remove_file(admin.dir.path().join(side));
    }
    let said = admin.ok(&["db", "check"], None);
    assert!(said.contains("the database is sound"), "{said}");
    assert_eq!(admin.ok(&["user", "list", "--json"], None), before);

    // A file put in a home by hand: check says so and fails; --fix stores it.
    let home = admin.data().join("homes/alice");
    std::fs::write(home.join("by-hand.txt"), vec![0u8; 1000]).expect("write");
    let out = admin.run(&["db", "check"], None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("alice: the database says 0 B in 0 files (0 B reserved), the home holds 1000 B in 1 files"),
        "{stdout}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("db check --fix"));
    let said = admin.ok(&["db", "check", "--fix"], None);
    assert!(said.contains("; fixed"), "{said}");
    let said = admin.ok(&["db", "check"], None);
    assert!(said.contains("the database is sound"), "{said}");
}

/// The file quota: set with `user add --files` and `quota set --files`,
/// shown by `user show` and `usage`, refused when it is not a count.
#[test]
fn the_file_quota_is_set_and_shown() {
    let admin = Admin::new();
    let said = admin.add("alice", &["--quota", "1G", "--files", "500"]);
    assert!(said.contains("quota 1 GiB and 500 files"), "{said}");
    let v = admin.show("alice");
    assert_eq!(v["quota_files"], 500);
    assert_eq!(v["files"], 0);
    let said = admin.ok(&["quota", "set", "alice", "2G", "--files", "1_000"], None);
    assert!(
        said.contains("file quota of alice is now 1000 files"),
        "{said}"
    );
    let table = admin.ok(&["user", "show", "alice"], None);
    assert!(table.contains("0 of 1000"), "{table}");
    let rows = admin.json(&["usage"]);
    assert_eq!(rows[0]["quota_files"], 1000);
    let err = admin.fails(&["quota", "set", "alice", "2G", "--files", "lots"], None, 1);
    assert!(err.contains("give a whole number of files"), "{err}");
    admin.ok(
        &["quota", "set", "alice", "2G", "--files", "unlimited"],
        None,
    );
    assert_eq!(admin.show("alice")["quota_files"], Value::Null);
}

/// On btrfs with quotas on: a new home is a subvolume held to its quota,
/// `quota set` moves the limit, `db check` finds a home that is a plain
/// folder and `--fix` makes it a subvolume (its files kept), and
/// `--purge-home` removes the subvolume.
#[test]
fn homes_on_btrfs_are_subvolumes_held_to_their_quota() {
    use wharf_store::home::btrfs;
    let Some(root) = test_btrfs::btrfs_root() else {
        return;
    };
    let admin = Admin::on(&root);
    let said = admin.add("alice", &["--quota", "5M"]);
    assert!(said.contains("the kernel holds it to the quota"), "{said}");
    let home = PathBuf::from(admin.show("alice")["home"].as_str().expect("home"));
    assert!(btrfs::is_subvolume(&home));
    assert_eq!(btrfs::qgroup(&home).expect("qgroup").limit, Some(5 << 20));
    admin.ok(&["quota", "set", "alice", "7M"], None);
    assert_eq!(btrfs::qgroup(&home).expect("qgroup").limit, Some(7 << 20));

    // A home made before quotas were on (or by hand): a plain folder.
    let plain = admin.dir.path().join("plain-bob");
    std::fs::create_dir_all(plain.join("sub")).expect("mkdir");
    std::fs::write(plain.join("sub/kept.txt"), b"kept").expect("write");
    admin.add(
        "bob",
        &["--quota", "3M", "--home", plain.to_str().expect("utf-8")],
    );
    assert!(!btrfs::is_subvolume(&plain));
    let out = admin.run(&["db", "check"], None);
    assert_eq!(out.status.code(), Some(1));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("is not a subvolume"), "{said}");
    let said = admin.ok(&["db", "check", "--fix"], None);
    assert!(said.contains("fixing"), "{said}");
    assert!(btrfs::is_subvolume(&plain));
    assert_eq!(btrfs::qgroup(&plain).expect("qgroup").limit, Some(3 << 20));
    assert_eq!(
        std::fs::read(plain.join("sub/kept.txt")).expect("kept"),
        b"kept"
    );
    admin.ok(&["db", "check"], None);

    admin.ok(&["user", "del", "alice", "--purge-home", "--yes"], None);
    assert!(!home.exists());
}

/// `usage` reads well wherever it goes: through a pipe, plain aligned text
/// with no box characters; on an 80-column terminal, no line over 80 and
/// local times to the minute.
#[test]
fn usage_fits_a_terminal_and_is_plain_through_a_pipe() {
    let admin = Admin::new();
    for name in ["alice", "bob", "carol-the-longest"] {
        admin.add(name, &["--quota", "10G"]);
    }
    let store_url = admin.url();
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(async {
            let store = Store::open(&store_url).await.expect("db");
            for name in ["alice", "carol-the-longest"] {
                let user = store.require_user(name).await.expect("user");
                store
                    .record_login(user.id, wharf_core::time::now_ms())
                    .await
                    .expect("login");
            }
            store.close().await;
        });
    let piped = admin.ok(&["usage"], None);
    assert!(
        !piped.contains(|c: char| ('\u{2500}'..='\u{257f}').contains(&c)),
        "box characters through a pipe: {piped}"
    );
    assert!(piped.lines().all(|l| l == l.trim_end()), "{piped:?}");
    assert!(piped.contains("chat msgs"), "{piped}");

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_admin-cli"));
    cmd.args(["--database-url", &admin.url(), "usage"]);
    let mut term = terminal::Terminal::start(cmd, 80, 24);
    let shown = term.rest();
    let lines: Vec<&str> = shown.lines().map(|l| l.trim_end_matches('\r')).collect();
    assert!(lines.len() >= 4, "{shown}");
    for l in &lines {
        assert!(l.chars().count() <= 80, "over 80 columns: {l:?}\n{shown}");
    }
    // One line per user: no cell broken over lines.
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("carol-the-longest"))
            .count(),
        1,
        "{shown}"
    );
    let today = std::process::Command::new("date")
        .arg("+%Y-%m-%d")
        .output()
        .expect("date");
    let today = String::from_utf8_lossy(&today.stdout).trim().to_owned();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("alice") && l.contains(&today)),
        "no local time: {shown}"
    );
}

/// Deleting a user keeps everyone else's records: alice's direct message
/// to bob and her count in `usage` stay, bob's room messages stay in the
/// room's history under a deleted name; and the home goes only when the
/// administrator says yes.
#[tokio::test]
async fn deleting_a_user_keeps_the_others_records_and_asks_before_purging() {
    use wharf_store::db::ChatRecord;
    let admin = Admin::new();
    admin.add("alice", &[]);
    admin.add("bob", &[]);
    let store = Store::open(&admin.url()).await.expect("db");
    let alice = store.require_user("alice").await.expect("alice");
    let bob = store.require_user("bob").await.expect("bob");
    let now = wharf_core::time::now_ms();
    let said =
        |id: u64, from: i64, room: Option<&str>, seq: Option<u64>, to: Option<i64>| ChatRecord {
            id,
            sender_id: from,
            room: room.map(str::to_owned),
            seq,
            recipient_id: to,
            body: format!("message {id}"),
            at: now,
        };
    store
        .record_chat_messages(&[
            said(1, alice.id, Some("lobby"), Some(1), None),
            said(2, bob.id, Some("lobby"), Some(2), None),
            said(3, alice.id, None, None, Some(bob.id)),
            said(4, bob.id, None, None, Some(alice.id)),
        ])
        .await
        .expect("messages");
    let count = |rows: &Value, name: &str| {
        rows.as_array()
            .and_then(|a| a.iter().find(|r| r["name"] == name))
            .map(|r| r["chat_messages"].clone())
    };
    assert_eq!(count(&admin.json(&["usage"]), "alice"), Some(2.into()));

    // From a pipe, --purge-home needs --yes: nothing happens without it.
    let home = PathBuf::from(admin.show("bob")["home"].as_str().expect("home"));
    std::fs::write(home.join("keep.txt"), b"x").expect("write");
    let err = admin.fails(&["user", "del", "bob", "--purge-home"], None, 2);
    assert!(
        err.contains("add --yes to confirm (nothing was changed)"),
        "{err}"
    );
    assert!(home.join("keep.txt").exists());
    assert_eq!(admin.user_count(), 2);

    admin.ok(&["user", "del", "bob"], None);
    assert_eq!(
        count(&admin.json(&["usage"]), "alice"),
        Some(2.into()),
        "alice's count changed with bob's deletion"
    );
    let history = store.room_history("lobby", 10).await.expect("history");
    let senders: Vec<&str> = history.iter().map(|m| m.sender.as_str()).collect();
    assert_eq!(senders, ["alice", "(deleted)"]);
    store.close().await;
}

/// `home set --move` takes the files along (renamed, or copied where the
/// new home is elsewhere); without it they stay where they were, and the
/// command says how to take them.
#[test]
fn home_set_moves_the_files_when_told() {
    let admin = Admin::new();
    admin.add("alice", &[]);
    let old = PathBuf::from(admin.show("alice")["home"].as_str().expect("home"));
    std::fs::create_dir(old.join("docs")).expect("mkdir");
    std::fs::write(old.join("docs/a.txt"), b"hello").expect("write");
    let new = admin.dir.path().join("elsewhere/alice");
    let said = admin.ok(
        &["home", "set", "alice", new.to_str().expect("utf-8")],
        None,
    );
    assert!(
        said.contains("keeps its files") && said.contains("--move"),
        "{said}"
    );
    assert!(old.join("docs/a.txt").exists());
    let newer = admin.dir.path().join("moved/alice");
    // Back to the old one (its files), then moved to a new folder with them.
    admin.ok(
        &["home", "set", "alice", old.to_str().expect("utf-8")],
        None,
    );
    let said = admin.ok(
        &[
            "home",
            "set",
            "alice",
            newer.to_str().expect("utf-8"),
            "--move",
        ],
        None,
    );
    assert!(said.contains("moved from"), "{said}");
    assert_eq!(
        std::fs::read(newer.join("docs/a.txt")).expect("moved"),
        b"hello"
    );
    assert!(!old.exists(), "the old home is left behind");
    assert_eq!(admin.show("alice")["home"], newer.to_str().expect("utf-8"));
    // Into a folder that is not empty: refused, nothing changed.
    std::fs::write(new.join("other.txt"), b"x").expect("write");
    let err = admin.fails(
        &[
            "home",
            "set",
            "alice",
            new.to_str().expect("utf-8"),
            "--move",
        ],
        None,
        1,
    );
    assert!(err.contains("is not empty"), "{err}");
    assert!(newer.join("docs/a.txt").exists());
}

/// A key pair made by OpenSSH's ssh-keygen in `dir`: the public key file
/// and its SHA256 fingerprint as `ssh-keygen -lf` prints it.
fn ssh_keygen(dir: &Path, name: &str, kind: &[&str]) -> (PathBuf, String) {
    let private = dir.join(name);
    let made = Command::new("ssh-keygen")
        .args(kind)
        .args(["-q", "-N", "", "-C", &format!("{name}@laptop"), "-f"])
        .arg(&private)
        .status()
        .expect("ssh-keygen (Debian's openssh-client)");
    assert!(made.success());
    let public = private.with_extension("pub");
    let shown = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(&public)
        .output()
        .expect("ssh-keygen -lf");
    let line = String::from_utf8_lossy(&shown.stdout).into_owned();
    let fingerprint = line
        .split_whitespace()
        .nth(1)
        .expect("fingerprint")
        .to_owned();
    (public, fingerprint)
}

#[test]
fn ssh_keys_are_added_listed_and_removed_by_fingerprint() {
    let admin = Admin::with_alice_and_bob();
    let (laptop, laptop_fp) = ssh_keygen(admin.dir.path(), "laptop", &["-t", "ed25519"]);
    let (phone, phone_fp) = ssh_keygen(admin.dir.path(), "phone", &["-t", "ecdsa"]);
    let laptop_path = laptop.to_str().expect("utf-8 path");
    let out = admin.ok(&["user", "key", "add", "alice", laptop_path], None);
    assert_eq!(
        out.trim(),
        format!("added ssh-ed25519 {laptop_fp} laptop@laptop to alice")
    );
    // The same key again: already there, nothing changed.
    let err = admin.fails(&["user", "key", "add", "alice", laptop_path], None, 4);
    assert!(err.contains("already has the key"), "{err}");
    // A file of a new key and one alice has: all or none, nothing added.
    let (tablet, tablet_fp) = ssh_keygen(admin.dir.path(), "tablet", &["-t", "ed25519"]);
    let both = format!(
        "{}{}",
        std::fs::read_to_string(&tablet).expect("tablet key"),
        std::fs::read_to_string(&laptop).expect("laptop key")
    );
    admin.fails(&["user", "key", "add", "alice", "-"], Some(&both), 4);
    let listed = admin.ok(&["user", "key", "list", "alice"], None);
    assert!(!listed.contains(&tablet_fp), "{listed}");
    // From standard input.
    let phone_line = std::fs::read_to_string(&phone).expect("phone key");
    let out = admin.ok(&["user", "key", "add", "alice", "-"], Some(&phone_line));
    assert!(out.contains(&phone_fp), "{out}");

    let listed: Value =
        serde_json::from_str(&admin.ok(&["user", "key", "list", "alice", "--json"], None))
            .expect("json");
    let keys = listed.as_array().expect("a list");
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0]["fingerprint"], laptop_fp.as_str());
    assert_eq!(keys[0]["key_type"], "ssh-ed25519");
    assert_eq!(keys[0]["comment"], "laptop@laptop");
    assert_eq!(keys[0]["last_used_at"], Value::Null);
    assert_eq!(keys[1]["fingerprint"], phone_fp.as_str());
    assert_eq!(keys[1]["key_type"], "ecdsa-sha2-nistp256");
    let table = admin.ok(&["user", "key", "list", "alice"], None);
    assert!(
        table.contains(&laptop_fp) && table.contains("never"),
        "{table}"
    );
    assert!(
        admin
            .ok(&["user", "key", "list", "bob"], None)
            .contains("bob has no SSH key")
    );

    // Removed by fingerprint, with or without its prefix; then gone.
    let bare = phone_fp.trim_start_matches("SHA256:");
    let out = admin.ok(&["user", "key", "rm", "alice", bare], None);
    assert!(
        out.contains(&format!("removed ecdsa-sha2-nistp256 {phone_fp}")),
        "{out}"
    );
    let err = admin.fails(&["user", "key", "rm", "alice", &phone_fp], None, 3);
    assert!(err.contains("has no key"), "{err}");
    let err = admin.fails(&["user", "key", "list", "nobody"], None, 3);
    assert!(err.contains("no user named"), "{err}");

    // A deleted user's keys go with them.
    admin.ok(&["user", "del", "alice"], None);
    admin.add("alice", &[]);
    assert!(
        admin
            .ok(&["user", "key", "list", "alice"], None)
            .contains("alice has no SSH key")
    );
}

#[test]
fn keys_that_cannot_be_taken_exit_2_saying_why() {
    let admin = Admin::with_alice_and_bob();
    let (weak, _) = ssh_keygen(admin.dir.path(), "weak", &["-t", "rsa", "-b", "1024"]);
    let weak = weak.to_str().expect("utf-8 path");
    let err = admin.fails(&["user", "key", "add", "alice", weak], None, 2);
    assert!(err.contains("too weak"), "{err}");
    let (private, _) = ssh_keygen(admin.dir.path(), "secret", &["-t", "ed25519"]);
    let private = private.with_extension("");
    let err = admin.fails(
        &[
            "user",
            "key",
            "add",
            "alice",
            private.to_str().expect("path"),
        ],
        None,
        2,
    );
    assert!(err.contains("line 1"), "{err}");
    for (given, words) in [
        ("", "no key in it"),
        ("garbage here\n", "is not a key type"),
        (
            "command=\"ls\" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILM+rvN+ot98qgEN796jTiQfZfG1KaT0PtFDJ/XFSqti x\n",
            "without authorized_keys options",
        ),
    ] {
        let err = admin.fails(&["user", "key", "add", "alice", "-"], Some(given), 2);
        assert!(err.contains(words), "{given:?}: {err}");
    }
    let err = admin.fails(&["user", "key", "add", "alice", "/no/such/file"], None, 1);
    assert!(
        err.contains("cannot read the key file /no/such/file"),
        "{err}"
    );
    assert!(
        admin
            .ok(&["user", "key", "list", "alice"], None)
            .contains("alice has no SSH key")
    );
}

#[test]
fn ssh_fingerprint_prints_what_ssh_keygen_prints() {
    let admin = Admin::new();
    let err = admin.fails(&["ssh", "fingerprint"], None, 1);
    assert!(err.contains("no SSH host key at"), "{err}");
    let ssh_dir = admin.data().join("ssh");
    std::fs::create_dir_all(&ssh_dir).expect("ssh folder");
    let (public, _) = ssh_keygen(&ssh_dir, "ssh_host_ed25519_key", &["-t", "ed25519"]);
    let private = public.with_extension("");
    let expected = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(&private)
        .output()
        .expect("ssh-keygen -lf");
    let expected = String::from_utf8_lossy(&expected.stdout).into_owned();
    assert_eq!(admin.ok(&["ssh", "fingerprint"], None), expected);
    let given = admin.ok(
        &[
            "ssh",
            "fingerprint",
            "--key",
            private.to_str().expect("path"),
        ],
        None,
    );
    assert_eq!(given, expected);
    let err = admin.fails(
        &[
            "ssh",
            "fingerprint",
            "--key",
            public.to_str().expect("path"),
        ],
        None,
        2,
    );
    assert!(err.contains("is not an OpenSSH private key"), "{err}");
}
