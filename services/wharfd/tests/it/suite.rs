//! The whole suite as its users meet it: the real `wharfd` on ports 0, a
//! user added with the real `admin-cli`, the three real clients, a SIGTERM
//! in the middle of an upload, a restart, the upload resumed, and the usage
//! report checked to the byte. The suite and the lock run on SQLite and on
//! PostgreSQL (when a test cluster is given: `bash .ci/test`).

use wharf_testkit::cli::{self, text};
use wharf_testkit::postgres;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const PW: &str = "correct horse battery";
const WAIT: Duration = Duration::from_secs(30);

/// The database of each test's folder, when it is not the SQLite default
/// (`data/wharf.db` there): every wharfd and admin-cli started in that
/// folder gets it.
static DATABASES: std::sync::Mutex<Vec<(PathBuf, String)>> = std::sync::Mutex::new(Vec::new());

/// A fresh PostgreSQL database for the tests in `dir`; false when there is
/// no test cluster (and the test is skipped; under CI it fails).
fn on_postgres(dir: &Path) -> bool {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let urls = runtime.block_on(postgres::database_urls(dir));
    let Some(url) = urls.into_iter().find(|u| u.starts_with("postgres")) else {
        eprintln!(
            "skipped: no PostgreSQL test cluster ({})",
            postgres::POSTGRES_ENV
        );
        return false;
    };
    DATABASES
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((dir.to_path_buf(), url));
    true
}

/// `cmd`, run in `dir`, on that folder's database.
fn in_dir<'c>(cmd: &'c mut Command, dir: &Path) -> &'c mut Command {
    cmd.current_dir(dir);
    let dbs = DATABASES.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, url)) = dbs.iter().find(|(d, _)| d == dir) {
        cmd.env("WHARF_DATABASE_URL", url);
    } else {
        cmd.env_remove("WHARF_DATABASE_URL");
    }
    cmd
}

struct Wharfd {
    child: Child,
    ftp: String,
    chat: String,
    exec: String,
    /// What it printed before serving.
    banner: Vec<String>,
    /// Where it serves metrics, when asked to.
    metrics: Option<String>,
}

impl Wharfd {
    /// Starts wharfd as the README's first command does (no flag for
    /// exec: as root, commands run as each user's own uid).
    fn start(dir: &Path) -> Wharfd {
        Self::start_with(dir, &[])
    }

    /// The same, with `extra` flags.
    fn start_with(dir: &Path, extra: &[&str]) -> Wharfd {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wharfd"));
        in_dir(&mut cmd, dir)
            .args(extra)
            .args(["--ftp-listen", "127.0.0.1:0"])
            .args(["--chat-listen", "127.0.0.1:0"])
            .args(["--exec-listen", "127.0.0.1:0"])
            .args(["--shutdown-grace", "1s"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("start wharfd");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let (mut ftp, mut chat, mut exec) = (String::new(), String::new(), String::new());
        let mut metrics = None;
        let mut banner = Vec::new();
        for line in lines.by_ref() {
            let line = line.expect("a line from wharfd");
            banner.push(line.clone());
            let words: Vec<&str> = line.split_whitespace().collect();
            let is_addr = |a: &str| a.parse::<std::net::SocketAddr>().is_ok();
            match words.as_slice() {
                ["ftp", addr, ..] if is_addr(addr) => ftp = (*addr).to_owned(),
                ["chat", addr, ..] if is_addr(addr) => chat = (*addr).to_owned(),
                ["exec", addr, ..] if is_addr(addr) => exec = (*addr).to_owned(),
                ["metrics", url, ..] => {
                    metrics = url
                        .strip_prefix("http://")
                        .and_then(|u| u.strip_suffix("/metrics"))
                        .map(str::to_owned)
                }
                ["ready;", ..] => break,
                _ => {}
            }
        }
        // Keep reading, so wharfd never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        assert!(
            !ftp.is_empty() && !chat.is_empty() && !exec.is_empty(),
            "{banner:?}"
        );
        Wharfd {
            child,
            ftp,
            chat,
            exec,
            banner,
            metrics,
        }
    }

    /// SIGTERM, then wait for a clean exit.
    fn stop(mut self) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).expect("pid");
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
        let until = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(status.success(), "wharfd exited with {status}");
                return;
            }
            assert!(Instant::now() < until, "wharfd did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Wharfd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client(dir: &Path, name: &str, server: &str, args: &[&str]) -> Command {
    client_as(dir, name, server, "alice", args)
}

/// [`client`] for another user (their password is [`PW`] too).
fn client_as(dir: &Path, name: &str, server: &str, user: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(cli::bin(name));
    in_dir(&mut cmd, dir)
        .args(["--server", server, "--user", user])
        // The first connection pins the made certificate in
        // DIR/.config/wharf/known_servers; later ones check it.
        .arg("--accept-new")
        .args(args)
        .env("HOME", dir)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("WHARF_CA")
        .env("WHARF_PASSWORD", PW)
        .stdin(Stdio::null());
    cmd
}

/// `admin-cli user add alice` with every service, the password on stdin.
fn add_alice(dir: &Path) {
    add_user(dir, "alice");
}

/// `admin-cli user add NAME` with every service, the password on stdin.
fn add_user(dir: &Path, name: &str) {
    let mut add = in_dir(&mut Command::new(cli::bin("admin-cli")), dir)
        .args(["user", "add", name, "--password-stdin"])
        .args(["--services", "ftp,chat,exec"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("admin-cli");
    add.stdin
        .take()
        .expect("stdin")
        .write_all(format!("{PW}\n").as_bytes())
        .expect("password");
    assert!(add.wait().expect("admin-cli").success());
}

/// A client started in the background, its error output kept.
fn started(dir: &Path, name: &str, server: &str, args: &[&str]) -> std::process::Child {
    client(dir, name, server, args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("client")
}

/// `admin-cli ARGS` in `dir`, which must succeed.
fn admin(dir: &Path, args: &[&str]) -> Output {
    run(in_dir(&mut Command::new(cli::bin("admin-cli")), dir).args(args))
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn the_whole_suite_survives_a_restart_mid_upload() {
    let dir = tempfile::tempdir().expect("dir");
    suite(dir.path());
}

#[test]
fn the_whole_suite_survives_a_restart_mid_upload_on_postgres() {
    let dir = tempfile::tempdir().expect("dir");
    if on_postgres(dir.path()) {
        suite(dir.path());
    }
}

fn suite(dir: &Path) {
    let data: Vec<u8> = (0..12u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    std::fs::write(dir.join("big.bin"), &data).expect("write");

    let wharfd = Wharfd::start(dir);
    add_alice(dir);

    // Remote exec: a file made by a command.
    let out = run(&mut client(
        dir,
        "wharf-exec",
        &wharfd.exec,
        &["--", "echo hello > hello.txt; cat hello.txt"],
    ));
    assert_eq!(text(&out.stdout), "hello\n");

    // Chat: a message said, and read back from the history.
    run(&mut client(
        dir,
        "wharf-chat",
        &wharfd.chat,
        &["send", "--create", "--room", "lobby", "upload starting"],
    ));
    let mut script = client(dir, "wharf-chat", &wharfd.chat, &[]);
    let mut history = script
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("chat");
    history
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"/join lobby\n/history\n")
        .expect("script");
    let out = history.wait_with_output().expect("chat");
    assert!(
        text(&out.stdout).contains("upload starting"),
        "{}",
        text(&out.stdout)
    );

    // File transfer: a slow upload, cut by SIGTERM (the grace period is 1 s).
    let put = client(
        dir,
        "wharf-ftp",
        &wharfd.ftp,
        &["--limit-rate", "2M", "--quiet", "put", "big.bin"],
    )
    .stderr(Stdio::piped())
    .spawn()
    .expect("put");
    let until = Instant::now() + WAIT;
    let partial = dir.join("data/homes/alice/.wharf/partial");
    while std::fs::read_dir(&partial).map(|d| d.count()).unwrap_or(0) == 0 {
        assert!(Instant::now() < until, "the upload never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(1500));
    wharfd.stop();
    let out = put.wait_with_output().expect("put");
    assert!(!out.status.success(), "the upload was cut short");

    // Restart; the upload resumes where it stopped.
    let wharfd = Wharfd::start(dir);
    let out =
        run(client(dir, "wharf-ftp", &wharfd.ftp, &["put", "big.bin"]).stderr(Stdio::piped()));
    let said = text(&out.stderr);
    let resumed: u64 = said
        .split("resuming at ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no resume in {said:?}"));
    assert!(resumed > 0 && resumed < data.len() as u64, "{resumed}");
    run(&mut client(
        dir,
        "wharf-ftp",
        &wharfd.ftp,
        &["get", "big.bin", "back.bin"],
    ));
    assert!(
        std::fs::read(dir.join("back.bin")).expect("back") == data,
        "not the same bytes"
    );
    // The upload is alice's: her commands read and may write it.
    let md5 = Command::new("md5sum")
        .arg(dir.join("big.bin"))
        .output()
        .expect("md5sum");
    let md5 = text(&md5.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_owned();
    let out = run(&mut client(
        dir,
        "wharf-exec",
        &wharfd.exec,
        &[
            "--",
            "md5sum big.bin && test -w big.bin && stat -c %u big.bin",
        ],
    ));
    let said = text(&out.stdout);
    assert!(said.starts_with(&format!("{md5}  big.bin\n")), "{said}");
    if rustix::process::geteuid().is_root() {
        assert!(said.ends_with("1900000001\n"), "alice's own uid: {said}");
    }

    // The usage report, to the byte.
    let usage = admin(dir, &["usage", "alice", "--rescan", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&usage.stdout).expect("json");
    let row = &rows[0];
    let size = data.len() as u64;
    assert_eq!(row["name"], "alice");
    assert_eq!(row["files"], 2, "{row}");
    assert_eq!(row["used_bytes"], size + 6, "{row}");
    assert_eq!(row["reserved_bytes"], 0, "{row}");
    assert_eq!(row["uploads"], 1, "{row}");
    assert_eq!(row["downloads"], 1, "{row}");
    assert_eq!(
        row["bytes_up"], size,
        "{row}: the cut upload and its resumption add up to the file"
    );
    assert_eq!(row["bytes_down"], size, "{row}");
    assert_eq!(row["chat_messages"], 1, "{row}");
    assert_eq!(row["exec_commands"], 2, "{row}");
    wharfd.stop();
}

#[test]
fn as_root_exec_is_served_with_each_users_own_uid() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs the tests to run as root");
        return;
    }
    // A temp dir is 0700: the users' uids cannot traverse it, and need not.
    let dir = tempfile::tempdir().expect("dir");
    let wharfd = Wharfd::start(dir.path());
    let said = wharfd.banner.join("\n");
    assert!(said.contains("as each user's own uid, sandboxed"), "{said}");
    assert!(
        said.contains("No users yet. Add one with:") && said.contains("user add alice"),
        "{said}"
    );
    for addr in [&wharfd.ftp, &wharfd.chat, &wharfd.exec] {
        std::net::TcpStream::connect(addr).expect("serving");
    }
    wharfd.stop();
}

/// Waits for `child` to end, at most `within`; its status and stderr.
fn ended_within(child: std::process::Child, within: Duration) -> (Option<i32>, String) {
    let started = Instant::now();
    let mut child = child;
    loop {
        if child.try_wait().expect("wait").is_some() {
            let out = child.wait_with_output().expect("output");
            return (out.status.code(), text(&out.stderr));
        }
        if started.elapsed() > within {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "still running {within:?} after the lock: {}",
                text(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_lock_by_admin_cli_ends_open_chat_exec_and_ftp_sessions() {
    let dir = tempfile::tempdir().expect("dir");
    lock_ends_sessions(dir.path());
}

#[test]
fn a_lock_by_admin_cli_ends_open_sessions_on_postgres() {
    let dir = tempfile::tempdir().expect("dir");
    if on_postgres(dir.path()) {
        lock_ends_sessions(dir.path());
    }
}

fn lock_ends_sessions(dir: &Path) {
    let wharfd = Wharfd::start(dir);
    add_alice(dir);

    // Alice listens in a room, runs a long command, and has a file shell
    // open.
    let spawn = |name: &str, server: &str, args: &[&str]| started(dir, name, server, args);
    let chat = spawn(
        "wharf-chat",
        &wharfd.chat,
        &["listen", "--room", "lobby", "--count", "1000"],
    );
    let exec = spawn("wharf-exec", &wharfd.exec, &["-n", "--", "sleep 60"]);
    // And downloads a big file, slowly.
    let big: Vec<u8> = (0..24u32 << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.join("data/homes/alice/big.bin"), &big).expect("big file");
    let download = spawn(
        "wharf-ftp",
        &wharfd.ftp,
        &["--limit-rate", "2M", "get", "big.bin"],
    );
    let mut ftp = client(dir, "wharf-ftp", &wharfd.ftp, &[])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wharf-ftp shell");
    let mut shell = ftp.stdin.take().expect("stdin");
    shell.write_all(b"pwd\n").expect("pwd");
    std::thread::sleep(Duration::from_millis(1500));

    // The administrator, from another process, locks her.
    admin(dir, &["user", "lock", "alice"]);
    let within = Duration::from_secs(5);
    let (code, err) = ended_within(chat, within);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("locked"), "chat: {err}");
    let (code, err) = ended_within(exec, within);
    assert_eq!(code, Some(255), "{err}");
    assert!(
        err.contains("locked") && err.contains("killed"),
        "exec: {err}"
    );
    // The download stopped where it was, kept for a resume.
    let (code, err) = ended_within(download, within);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("run the same get to resume"), "get: {err}");
    let kept = std::fs::metadata(dir.join("big.bin.part"))
        .expect("big.bin.part")
        .len();
    assert!(kept > 0 && kept < big.len() as u64, "kept {kept}");
    // The file session was ended too: its next command hears why.
    std::thread::sleep(Duration::from_millis(1500));
    shell.write_all(b"ls\n").expect("ls");
    drop(shell);
    let (code, err) = ended_within(ftp, within);
    assert_ne!(code, Some(0), "{err}");
    assert!(err.contains("locked"), "ftp: {err}");
    // And she cannot log in again.
    let out = client(dir, "wharf-ftp", &wharfd.ftp, &["ls"])
        .output()
        .expect("wharf-ftp");
    assert!(
        text(&out.stderr).contains("locked"),
        "{}",
        text(&out.stderr)
    );
    // Unlocked, the same get resumes and ends byte-identical.
    admin(dir, &["user", "unlock", "alice"]);
    let out = run(&mut client(
        dir,
        "wharf-ftp",
        &wharfd.ftp,
        &["get", "big.bin"],
    ));
    assert!(
        text(&out.stderr).contains(&format!("resuming at {kept} bytes")),
        "{}",
        text(&out.stderr)
    );
    assert!(std::fs::read(dir.join("big.bin")).expect("downloaded") == big);
    wharfd.stop();
}

#[test]
fn a_quota_lowered_by_admin_cli_stops_a_running_command_and_an_upload() {
    let dir = tempfile::tempdir().expect("dir");
    let dir = dir.path();
    let wharfd = Wharfd::start(dir);
    add_alice(dir);
    let big: Vec<u8> = (0..16u32 << 20).map(|i| (i % 241) as u8).collect();
    std::fs::write(dir.join("big.bin"), &big).expect("local file");
    let spawn = |name: &str, server: &str, args: &[&str]| started(dir, name, server, args);
    // Within her 1 GiB: a slow upload, and a command started after it (while
    // the upload's 16 MiB are reserved) that wrote 2 MiB and waits. When
    // the quota moves, the upload ends and its reservation goes; that must
    // not leave the command room.
    let home = dir.join("data/homes/alice");
    let wait_for = |what: &str, there: &dyn Fn() -> bool| {
        let until = Instant::now() + WAIT;
        while !there() {
            assert!(Instant::now() < until, "{what} never started");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let upload = spawn(
        "wharf-ftp",
        &wharfd.ftp,
        &["--limit-rate", "2M", "put", "big.bin"],
    );
    wait_for("the upload", &|| {
        std::fs::read_dir(home.join(".wharf/partial")).map_or(0, |d| d.count()) > 0
    });
    let exec = spawn(
        "wharf-exec",
        &wharfd.exec,
        &["-n", "--", "head -c 2M /dev/zero > f; sleep 60"],
    );
    wait_for("the command", &|| {
        std::fs::metadata(home.join("f")).map_or(0, |m| m.len()) >= 2 << 20
    });
    admin(dir, &["quota", "set", "alice", "1M"]);
    let within = Duration::from_secs(5);
    let (code, err) = ended_within(exec, within);
    assert_eq!(code, Some(255), "{err}");
    assert!(err.contains("past your quota of 1 MiB"), "exec: {err}");
    let (code, err) = ended_within(upload, within);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("lowered your quota to 1 MiB"), "put: {err}");
    // Nothing of the upload is held.
    let shown = admin(dir, &["user", "show", "alice", "--json"]);
    let shown: serde_json::Value = serde_json::from_slice(&shown.stdout).expect("json");
    assert_eq!(shown["reserved_bytes"], 0, "{shown}");
    wharfd.stop();
}

/// The service unit and its installer: the unit passes `systemd-analyze
/// verify` (when systemd's tools are here), its command line is one wharfd
/// takes, and `deploy/install.sh` puts everything in place.
#[test]
fn the_systemd_unit_is_valid_and_installs() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let unit = std::fs::read_to_string(repo.join("deploy/systemd/wharfd.service")).expect("unit");
    let exec_start = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart");
    let dir = tempfile::tempdir().expect("dir");
    let wharfd = env!("CARGO_BIN_EXE_wharfd");
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok()
    {
        let here = dir.path().join("wharfd.service");
        std::fs::write(&here, unit.replace("/usr/local/bin/wharfd", wharfd)).expect("write");
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&here)
            .output()
            .expect("systemd-analyze");
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{}",
            text(&out.stderr)
        );
    } else {
        eprintln!("systemd-analyze is not here: the unit's syntax is not checked");
    }
    // Its command line, with the example settings and --print-config.
    let args: Vec<String> = exec_start
        .split_whitespace()
        .skip(1)
        .map(|a| {
            a.replace(
                "/etc/wharf/wharfd.toml",
                &repo.join("wharfd.example.toml").display().to_string(),
            )
            .replace("/var/lib/wharf", &dir.path().display().to_string())
        })
        .collect();
    let out = run(Command::new(wharfd).args(&args).arg("--print-config"));
    assert!(
        text(&out.stdout).contains("log-format = \"json\""),
        "{}",
        text(&out.stdout)
    );

    // The installer, into a folder of its own.
    let bins = Path::new(wharfd).parent().expect("bin dir");
    for b in [
        "admin-cli",
        "wharf-ftpd",
        "wharf-chatd",
        "wharf-execd",
        "wharf-ftp",
        "wharf-chat",
        "wharf-exec",
        "wharf-exec-launch",
    ] {
        cli::bin(b);
    }
    let root = dir.path().join("root");
    let out = run(Command::new("bash")
        .arg(repo.join("deploy/install.sh"))
        .env("ROOT", &root)
        .env("BIN_DIR", bins));
    assert!(
        text(&out.stdout).contains("installed"),
        "{}",
        text(&out.stdout)
    );
    for f in [
        "usr/local/bin/wharfd",
        "usr/local/bin/admin-cli",
        "usr/local/bin/wharf-exec-launch",
        "etc/systemd/system/wharfd.service",
        "etc/wharf/wharfd.toml",
    ] {
        assert!(root.join(f).exists(), "{f} not installed");
    }
    // Every binary's man page (one each, naming no page that is not made)
    // and completions.
    for b in [
        "wharfd",
        "wharf-ftpd",
        "wharf-chatd",
        "wharf-execd",
        "admin-cli",
        "wharf-ftp",
        "wharf-chat",
        "wharf-exec",
    ] {
        let page = std::fs::read_to_string(root.join(format!("usr/local/share/man/man1/{b}.1")))
            .expect("man page");
        assert!(page.contains(&format!(".TH {b} 1")), "{b}: {page}");
        assert!(!page.contains("(1)"), "{b} names a page never made");
        let bash = std::fs::read_to_string(
            root.join(format!("usr/local/share/bash-completion/completions/{b}")),
        )
        .expect("bash completions");
        assert!(
            bash.contains(&format!("complete -F _{}", b.replace('-', "__"))),
            "{b}"
        );
        let zsh =
            std::fs::read_to_string(root.join(format!("usr/local/share/zsh/site-functions/_{b}")))
                .expect("zsh completions");
        assert!(zsh.starts_with(&format!("#compdef {b}")), "{b}");
    }
    let admin_page =
        std::fs::read_to_string(root.join("usr/local/share/man/man1/admin-cli.1")).expect("page");
    assert!(
        admin_page.contains("ADMIN\\-CLI USER LIMIT")
            && admin_page.contains("\\-\\-max\\-sessions")
    );
    let ftp_page =
        std::fs::read_to_string(root.join("usr/local/share/man/man1/wharf-ftp.1")).expect("page");
    assert!(ftp_page.contains("WHARF\\-FTP PUT") && ftp_page.contains("\\-\\-recursive"));
    // A second run keeps the settings an administrator edited.
    std::fs::write(root.join("etc/wharf/wharfd.toml"), "max-connections = 5\n").expect("edit");
    let out = run(Command::new("bash")
        .arg(repo.join("deploy/install.sh"))
        .env("ROOT", &root)
        .env("BIN_DIR", bins));
    assert!(text(&out.stdout).contains("kept"), "{}", text(&out.stdout));
    assert_eq!(
        std::fs::read_to_string(root.join("etc/wharf/wharfd.toml")).expect("kept"),
        "max-connections = 5\n"
    );
}

/// `GET path` on `addr`: the status line and the body.
fn http_get(addr: &str, path: &str) -> (String, String) {
    use std::io::Read;
    let mut conn = std::net::TcpStream::connect(addr).expect("connect to the metrics");
    write!(conn, "GET {path} HTTP/1.1\r\nHost: wharf\r\n\r\n").expect("request");
    let mut all = String::new();
    conn.read_to_string(&mut all).expect("response");
    let (head, body) = all.split_once("\r\n\r\n").expect("a head and a body");
    (
        head.lines().next().unwrap_or("").to_owned(),
        body.to_owned(),
    )
}

/// The sum of the samples of `name` whose labels include `labels`.
fn sample(body: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned())))
        .expect("Prometheus text");
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

#[test]
fn metrics_move_with_a_login_a_put_and_a_chat_message_and_health_follows_the_database() {
    let dir = tempfile::tempdir().expect("dir");
    let dir = dir.path();
    let wharfd = Wharfd::start_with(dir, &["--metrics-listen", "127.0.0.1:0"]);
    let metrics = wharfd
        .metrics
        .clone()
        .expect("a metrics address in the banner");
    add_alice(dir);
    let (status, before) = http_get(&metrics, "/metrics");
    assert!(status.contains("200"), "{status}");

    std::fs::write(dir.join("up.bin"), vec![7u8; 300_000]).expect("write");
    run(&mut client(
        dir,
        "wharf-ftp",
        &wharfd.ftp,
        &["put", "up.bin"],
    ));
    run(&mut client(
        dir,
        "wharf-chat",
        &wharfd.chat,
        &["send", "--create", "--room", "lobby", "hello"],
    ));
    run(&mut client(
        dir,
        "wharf-exec",
        &wharfd.exec,
        &["--", "true"],
    ));
    let (_, after) = http_get(&metrics, "/metrics");
    let delta = |name: &str, labels: &[(&str, &str)]| {
        sample(&after, name, labels) - sample(&before, name, labels)
    };
    for service in ["ftp", "chat", "exec"] {
        assert!(
            delta(
                "wharf_logins_total",
                &[("service", service), ("outcome", "ok")]
            ) >= 1.0,
            "no {service} login counted:\n{after}"
        );
    }
    assert_eq!(
        delta(
            "wharf_transfers_total",
            &[("direction", "up"), ("outcome", "ok")]
        ),
        1.0,
        "{after}"
    );
    assert!(
        delta("wharf_transfer_bytes_total", &[("direction", "up")]) >= 300_000.0,
        "{after}"
    );
    assert_eq!(
        delta("wharf_chat_messages_total", &[("outcome", "room")]),
        1.0,
        "{after}"
    );
    assert_eq!(
        delta("wharf_commands_total", &[("outcome", "exit_0")]),
        1.0,
        "{after}"
    );
    assert!(
        sample(&after, "wharf_quota_used_bytes", &[]) >= 300_000.0,
        "{after}"
    );
    assert!(
        after.contains("wharf_argon2_wait_seconds_bucket"),
        "{after}"
    );
    assert!(after.contains("wharf_command_seconds_count"), "{after}");

    // Health: 200 while the database answers; 503 when its file is gone
    // (a folder in its place); 200 again once it is back.
    let (status, body) = http_get(&metrics, "/health");
    assert!(status.contains("200"), "{status} {body}");
    assert!(
        body.contains("\"database\":\"ok\"") && body.contains("\"exec\":\"ok\""),
        "{body}"
    );
    let db = dir.join("data/wharf.db");
    let aside = dir.join("data/wharf.db.aside");
    std::fs::rename(&db, &aside).expect("move the database away");
    std::fs::create_dir(&db).expect("a folder in its place");
    let (status, body) = http_get(&metrics, "/health");
    assert!(status.contains("503"), "{status} {body}");
    assert!(body.contains("\"database\":\"failing"), "{body}");
    std::fs::remove_dir(&db).expect("rmdir");
    std::fs::rename(&aside, &db).expect("put it back");
    let (status, _) = http_get(&metrics, "/health");
    assert!(status.contains("200"), "{status}");
    let (status, _) = http_get(&metrics, "/nothing");
    assert!(status.contains("404"), "{status}");
    wharfd.stop();
}

/// A standard FTP session as Python's ftplib makes one: login, a listing,
/// an upload, a download, a refused command, then an upload cut by a reset.
const FTPLIB_SESSION: &str = r#"
import ftplib, socket, struct, sys, io
host, port, pw = sys.argv[1], int(sys.argv[2]), sys.argv[3]
f = ftplib.FTP()
f.connect(host, port, timeout=20)
f.login("alice", pw)
f.nlst()
f.storbinary("STOR up.bin", io.BytesIO(b"x" * 200000))
f.retrbinary("RETR up.bin", lambda b: None)
try:
    f.sendcmd("SIZE missing.bin")
except ftplib.error_perm as e:
    print("refused:", e)
f.voidcmd("TYPE I")
said = f.sendcmd("EPSV")
data = socket.create_connection((host, int(said.split("|||")[1].split("|")[0])))
f.putcmd("STOR cut.bin")
f.getresp()
data.sendall(b"y" * 100000)
data.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
data.close()
try:
    f.getresp()
except ftplib.all_errors as e:
    print("cut:", e)
f.quit()
"#;

/// Standard FTP logs like the native services: a whole session (login,
/// list, put, get, a refusal, a cut upload) leaves a few short lines, none
/// of libunftp's chatter or its sessions printed with `Debug`.
#[test]
fn standard_ftp_logs_a_line_per_login_transfer_and_refusal() {
    let dir = tempfile::tempdir().expect("temp dir");
    add_alice(dir.path());
    let log_path = dir.path().join("wharfd.log");
    let log = std::fs::File::create(&log_path).expect("log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wharfd"));
    in_dir(&mut cmd, dir.path())
        .args(["--no-tls", "--shutdown-grace", "1s"])
        .args(["--ftp-listen", "127.0.0.1:0"])
        .args(["--chat-listen", "127.0.0.1:0"])
        .args(["--exec-listen", "127.0.0.1:0"])
        .args(["--std-ftp-listen", "127.0.0.1:0"])
        .args(["--std-ftp-passive-ports", "50100-50149"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(log);
    let mut child = cmd.spawn().expect("start wharfd");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut std_ftp = String::new();
    for line in lines.by_ref() {
        let line = line.expect("a line from wharfd");
        let words: Vec<&str> = line.split_whitespace().collect();
        if let ["std", addr, ..] = words.as_slice() {
            std_ftp = (*addr).to_owned();
        }
        if line.starts_with("ready;") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let wharfd = Wharfd {
        child,
        ftp: String::new(),
        chat: String::new(),
        exec: String::new(),
        banner: Vec::new(),
        metrics: None,
    };
    let (host, port) = std_ftp.rsplit_once(':').expect("the std address");
    let before = std::fs::read_to_string(&log_path)
        .expect("log")
        .lines()
        .count();
    let out = run(Command::new("python3").args(["-c", FTPLIB_SESSION, host, port, PW]));
    let said = text(&out.stdout);
    assert!(said.contains("refused: 550"), "{said}");
    // The cut upload is seen when its data connection is reset.
    std::thread::sleep(Duration::from_millis(500));
    wharfd.stop();
    let logged = std::fs::read_to_string(&log_path).expect("log");
    let session: Vec<&str> = logged.lines().skip(before).collect();
    let shown = session.join("\n");
    assert!(session.len() < 15, "{} lines:\n{shown}", session.len());
    for line in &session {
        assert!(
            line.len() <= 500,
            "a line of {} characters: {line}",
            line.len()
        );
    }
    for expected in [
        "logged in",
        "upload stored",
        "download sent",
        "refused",
        "upload cut short",
    ] {
        assert!(shown.contains(expected), "no {expected:?} in:\n{shown}");
    }
    assert!(!shown.contains("libunftp"), "{shown}");
}

/// The sessions `admin-cli user show NAME --json` counts open now.
fn sessions_open(dir: &Path, name: &str) -> u64 {
    let out = admin(dir, &["user", "show", name, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    v["sessions_open"].as_u64().expect("sessions_open")
}

/// Waits (polling, up to 10 s) until `name` has `n` sessions open.
fn wait_sessions(dir: &Path, name: &str, n: u64) {
    let until = Instant::now() + Duration::from_secs(10);
    while sessions_open(dir, name) != n {
        assert!(Instant::now() < until, "{name} never had {n} sessions open");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The administrator's per-user limits, across services and sessions:
/// a fourth session past --max-sessions 3 is refused whatever the service,
/// and rates hold for a user as a whole while another user goes at theirs.
#[test]
fn per_user_limits_hold_across_services_and_sessions() {
    let dir = tempfile::tempdir().expect("dir");
    let dir = dir.path();
    let wharfd = Wharfd::start_with(dir, &["--max-sessions", "3", "--download-rate", "4MiB"]);
    add_user(dir, "alice");
    add_user(dir, "bob");

    // Three sessions over two services: two chat listeners, a command.
    let spawn = |name: &str, server: &str, args: &[&str]| started(dir, name, server, args);
    let listen = ["listen", "--room", "lobby", "--count", "1000"];
    let mut open = vec![
        spawn("wharf-chat", &wharfd.chat, &listen),
        spawn("wharf-chat", &wharfd.chat, &listen),
        spawn("wharf-exec", &wharfd.exec, &["-n", "--", "sleep 60"]),
    ];
    wait_sessions(dir, "alice", 3);
    // A fourth, on a third service: refused, saying how many and what to do.
    let out = client(dir, "wharf-ftp", &wharfd.ftp, &["ls"])
        .output()
        .expect("wharf-ftp");
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("has 3 sessions open, the most they may have at once (3)")
            && err.contains("end one"),
        "{err}"
    );
    let out = client(
        dir,
        "wharf-chat",
        &wharfd.chat,
        &["send", "--room", "lobby", "hi"],
    )
    .output()
    .expect("wharf-chat");
    assert!(
        text(&out.stderr).contains("has 3 sessions open"),
        "{}",
        text(&out.stderr)
    );
    // Bob is not alice.
    run(&mut client_as(
        dir,
        "wharf-ftp",
        &wharfd.ftp,
        "bob",
        &["ls"],
    ));
    // Her own limit wins over the server's.
    let said = admin(dir, &["user", "limit", "alice", "--max-sessions", "4"]);
    assert!(
        text(&said.stdout).contains("sessions at most 4"),
        "{}",
        text(&said.stdout)
    );
    run(&mut client(dir, "wharf-ftp", &wharfd.ftp, &["ls"]));
    // A session that ends gives its place back.
    for mut child in open.drain(..) {
        let _ = child.kill();
        let _ = child.wait();
    }
    wait_sessions(dir, "alice", 0);

    // Rates: 4 MiB/s for alice as a whole (the server's default), bob at
    // his own 1 GiB/s.
    admin(dir, &["user", "limit", "bob", "--download-rate", "1GiB"]);
    let file: Vec<u8> = (0..4u32 << 20).map(|i| (i % 253) as u8).collect();
    for name in ["alice", "bob"] {
        std::fs::write(dir.join(format!("data/homes/{name}/f.bin")), &file).expect("file");
    }
    let local = |n: &str| dir.join(n).display().to_string();
    let started_at = Instant::now();
    let alice: Vec<_> = ["a1.bin", "a2.bin"]
        .iter()
        .map(|to| {
            client(dir, "wharf-ftp", &wharfd.ftp, &["get", "f.bin", &local(to)])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("get")
        })
        .collect();
    run(&mut client_as(
        dir,
        "wharf-ftp",
        &wharfd.ftp,
        "bob",
        &["get", "f.bin", &local("b.bin")],
    ));
    let bob_done = started_at.elapsed();
    for child in alice {
        let out = child.wait_with_output().expect("get");
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let alice_done = started_at.elapsed();
    // 8 MiB at 4 MiB/s, less the bucket's half mebibyte.
    assert!(
        alice_done >= Duration::from_millis(1800),
        "alice took {alice_done:?}"
    );
    assert!(
        bob_done < alice_done,
        "bob ({bob_done:?}) was held to alice's rate ({alice_done:?})"
    );
    for n in ["a1.bin", "a2.bin", "b.bin"] {
        assert!(
            std::fs::read(dir.join(n)).expect("downloaded") == file,
            "{n}"
        );
    }

    // Uploads the same way, her own rate set by the administrator.
    admin(dir, &["user", "limit", "alice", "--upload-rate", "4MiB/s"]);
    let out = admin(dir, &["user", "show", "alice", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["upload_rate"].as_u64(), Some(4 << 20));
    assert_eq!(v["max_sessions"].as_u64(), Some(4));
    assert_eq!(v["download_rate"], serde_json::Value::Null);
    let started_at = Instant::now();
    let ups: Vec<_> = ["u1.bin", "u2.bin"]
        .iter()
        .map(|to| {
            client(
                dir,
                "wharf-ftp",
                &wharfd.ftp,
                &["put", &local("a1.bin"), to],
            )
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("put")
        })
        .collect();
    for child in ups {
        let out = child.wait_with_output().expect("put");
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let took = started_at.elapsed();
    assert!(
        took >= Duration::from_millis(1800),
        "two uploads took {took:?}"
    );
    for n in ["u1.bin", "u2.bin"] {
        assert!(std::fs::read(dir.join(format!("data/homes/alice/{n}"))).expect("stored") == file);
    }
    // `none` clears her own: the server's default holds again.
    let said = admin(
        dir,
        &[
            "user",
            "limit",
            "alice",
            "--upload-rate",
            "none",
            "--max-sessions",
            "none",
        ],
    );
    assert!(
        text(&said.stdout).contains("upload server default")
            && text(&said.stdout).contains("sessions server default"),
        "{}",
        text(&said.stdout)
    );
    wharfd.stop();
}
