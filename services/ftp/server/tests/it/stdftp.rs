//! Standard FTP on Wharf's users and homes: real FTP clients (curl, lftp,
//! Python's ftplib) and a raw socket against the libunftp listener
//! in-process, beside the native server on the same database and homes.

use crate::common;
use wharf_testkit::cli::text;

use std::process::Output;

use common::{PW, TestServer, data, roots, spawn, spawn_in};
use wharf_core::transfer::md5_hex;
use wharf_ftpd::server::stdftp::{StdFtpConfig, serve};
use wharf_server::listener::Limits;
use wharf_store::AuthConfig;
use wharf_store::Authenticator;

/// The standard FTP listener on `srv`'s database; its address.
async fn std_ftp(srv: &TestServer) -> String {
    std_ftp_with(srv, None, Limits::default(), AuthConfig::default()).await
}

/// The same, serving FTPS with the test certificate, TLS required.
async fn ftps(srv: &TestServer) -> String {
    let cert = common::tls().2.clone();
    let key = cert.with_file_name("server.key");
    std_ftp_with(
        srv,
        Some((cert, key)),
        Limits::default(),
        AuthConfig::default(),
    )
    .await
}

async fn std_ftp_with(
    srv: &TestServer,
    tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
    limits: Limits,
    auth: AuthConfig,
) -> String {
    let auth = Authenticator::new(srv.store.clone(), auth)
        .await
        .expect("auth");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let config = StdFtpConfig {
        passive_ports: 50000..=50999,
        passive_host: None,
        limits,
        require_tls: tls.is_some(),
        tls,
    };
    tokio::spawn(serve(
        listener,
        auth,
        srv.store.clone(),
        config,
        srv.shutdown.clone(),
    ));
    addr
}

/// The users every refusal test meets: alice (ftp, with `quota`, and a link
/// from her home to /etc), carol (chat only), dave (ftp, locked).
async fn refusal_cast(srv: &TestServer, quota: Option<u64>) {
    srv.add_user("alice", quota, "ftp").await;
    srv.add_user("carol", None, "chat").await;
    srv.add_user("dave", None, "ftp").await;
    srv.store.set_locked("dave", true).await.expect("lock");
    std::os::unix::fs::symlink("/etc", srv.home("alice").join("etc")).expect("link");
}

/// curl with `args`, as alice unless the args say otherwise.
async fn curl(args: &[&str]) -> Output {
    tokio::process::Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "20"])
        .args(args)
        .output()
        .await
        .expect("curl (install it: apt-get install curl)")
}

#[tokio::test]
async fn curl_uploads_lists_downloads_and_wharf_sees_the_same_files() {
    let srv = spawn().await;
    srv.add_user("alice", None, "ftp").await;
    let addr = std_ftp(&srv).await;
    let work = tempfile::tempdir().expect("dir");
    let bytes = data(3_000_000, 7);
    let local = work.path().join("report.bin");
    std::fs::write(&local, &bytes).expect("write");
    let user = format!("alice:{PW}");
    let url = |path: &str| format!("ftp://{addr}/{path}");

    // Upload into a new directory, list it, fetch it back.
    let out = curl(&[
        "--user",
        &user,
        "--ftp-create-dirs",
        "-T",
        &local.display().to_string(),
        &url("docs/report.bin"),
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = curl(&["--user", &user, &url("docs/")]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("report.bin"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        text(&out.stdout).contains("3000000"),
        "{}",
        text(&out.stdout)
    );
    let back = work.path().join("back.bin");
    let out = curl(&[
        "--user",
        &user,
        "-o",
        &back.display().to_string(),
        &url("docs/report.bin"),
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(std::fs::read(&back).expect("back") == bytes);

    // The file is in alice's home, and the quota and usage tables count it.
    let stored = srv.home("alice").join("docs/report.bin");
    assert!(std::fs::read(&stored).expect("stored") == bytes);
    let alice = srv.store.require_user("alice").await.expect("alice");
    assert_eq!(
        (alice.used_bytes, alice.reserved_bytes, alice.file_count),
        // The file and its folder, docs (a block).
        (3_000_000 + 4096, 0, 2)
    );
    let transfers = srv
        .store
        .recent_transfers("alice", 0, 10)
        .await
        .expect("transfers");
    let up = transfers
        .iter()
        .find(|t| t.direction == wharf_store::db::Direction::Up)
        .expect("the upload is recorded");
    assert!(up.ok);
    assert_eq!(up.bytes, 3_000_000);
    assert_eq!(up.md5.as_deref(), Some(md5_hex(&bytes).as_str()));

    // The native client fetches it, md5-verified against what FTP stored.
    let mut native = wharf_ftp::client::Client::connect(
        &srv.addr,
        common::client_tls(),
        "alice",
        &wharf_core::Password::new(PW),
    )
    .await
    .expect("native login");
    let got = work.path().join("native.bin");
    native
        .get(
            "docs/report.bin",
            &got,
            wharf_ftp::client::TransferOptions::default(),
            &mut wharf_ftp::client::NoProgress,
        )
        .await
        .expect("native get");
    assert!(std::fs::read(&got).expect("native") == bytes);

    // The download is in the usage tables too.
    let mut downloads = 0;
    for _ in 0..50 {
        let rows = srv
            .store
            .recent_transfers("alice", 0, 20)
            .await
            .expect("transfers");
        downloads = rows
            .iter()
            .filter(|t| {
                t.direction == wharf_store::db::Direction::Down && t.ok && t.bytes == 3_000_000
            })
            .count();
        if downloads > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(downloads > 0, "the FTP download is recorded");

    // A file put by the native client comes down over FTP.
    let native_up = work.path().join("native-up.bin");
    let up_bytes = data(123_456, 5);
    std::fs::write(&native_up, &up_bytes).expect("write");
    native
        .put(
            &native_up,
            "docs/native.bin",
            wharf_ftp::client::TransferOptions::default(),
            &mut wharf_ftp::client::NoProgress,
        )
        .await
        .expect("native put");
    let via_ftp = work.path().join("via-ftp.bin");
    let out = curl(&[
        "--user",
        &user,
        "-o",
        &via_ftp.display().to_string(),
        &url("docs/native.bin"),
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(std::fs::read(&via_ftp).expect("via ftp") == up_bytes);
    let out = curl(&["--user", &user, "-Q", "DELE docs/native.bin", &url("")]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));

    // Appending to a visible file never writes it in place: the new bytes
    // go to a partial that starts as the file, which then replaces it.
    let out = curl(&[
        "--user",
        &user,
        "-T",
        &local.display().to_string(),
        &url("docs/app.bin"),
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = curl(&[
        "--user",
        &user,
        "--append",
        "-T",
        &native_up.display().to_string(),
        &url("docs/app.bin"),
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(std::fs::read(&stored).expect("stored") == bytes);
    let appended = std::fs::read(srv.home("alice").join("docs/app.bin")).expect("appended");
    assert!(
        appended[..bytes.len()] == bytes[..] && appended[bytes.len()..] == up_bytes[..],
        "appended whole"
    );

    // A download resumed with -C -.
    let part = work.path().join("resumed.bin");
    std::fs::write(&part, &bytes[..1_000_000]).expect("prefix");
    let out = curl(&[
        "--user",
        &user,
        "-C",
        "-",
        "-o",
        &part.display().to_string(),
        &url("docs/report.bin"),
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(std::fs::read(&part).expect("resumed") == bytes);

    // Rename, delete (its quota freed), remove the directory.
    let out = curl(&[
        "--user",
        &user,
        "-Q",
        "RNFR docs/report.bin",
        "-Q",
        "RNTO docs/old.bin",
        &url(""),
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(srv.home("alice").join("docs/old.bin").exists());
    let out = curl(&[
        "--user",
        &user,
        "-Q",
        "DELE docs/old.bin",
        "-Q",
        "DELE docs/app.bin",
        "-Q",
        "RMD docs",
        &url(""),
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!srv.home("alice").join("docs").exists());
    let alice = srv.store.require_user("alice").await.expect("alice");
    assert_eq!((alice.used_bytes, alice.file_count), (0, 0));
}

#[tokio::test]
async fn wrong_logins_escapes_and_the_quota_are_refused() {
    let srv = spawn().await;
    srv.add_user("alice", Some(1_000_000), "ftp").await;
    srv.add_user("carol", None, "chat").await;
    let addr = std_ftp(&srv).await;
    let url = |path: &str| format!("ftp://{addr}/{path}");
    let user = format!("alice:{PW}");

    // A wrong password, no ftp right: curl's "login denied".
    let out = curl(&["--user", "alice:wrong horse", &url("")]).await;
    assert_eq!(out.status.code(), Some(67), "{}", text(&out.stderr));
    let out = curl(&["--user", &format!("carol:{PW}"), &url("")]).await;
    assert_eq!(out.status.code(), Some(67), "{}", text(&out.stderr));
    srv.add_user("dave", None, "ftp").await;
    srv.store.set_locked("dave", true).await.expect("lock");
    let out = curl(&["--user", &format!("dave:{PW}"), &url("")]).await;
    assert_eq!(out.status.code(), Some(67), "a locked user logged in");

    // Out of the home: by .., and by a link that leads out.
    std::os::unix::fs::symlink("/etc", srv.home("alice").join("etc")).expect("link");
    for path in ["../../etc/passwd", "etc/passwd", "%2e%2e/%2e%2e/etc/passwd"] {
        let out = curl(&["--user", &user, "-o", "/dev/null", &url(path)]).await;
        assert!(!out.status.success(), "{path} was served");
    }

    // An upload larger than the quota stops at it, and leaves nothing.
    let work = tempfile::tempdir().expect("dir");
    let big = work.path().join("big.bin");
    std::fs::write(&big, data(3_000_000, 1)).expect("write");
    let out = curl(&[
        "--user",
        &user,
        "-T",
        &big.display().to_string(),
        &url("big.bin"),
    ])
    .await;
    assert!(!out.status.success(), "an over-quota upload succeeded");
    assert!(!srv.home("alice").join("big.bin").exists());
    let alice = srv.store.require_user("alice").await.expect("alice");
    assert_eq!((alice.used_bytes, alice.reserved_bytes), (0, 0));
    let partials = std::fs::read_dir(srv.home("alice").join(".wharf/partial"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(partials, 0, "no partial left holding quota");

    // The server still serves: a small upload fits.
    let small = work.path().join("small.txt");
    std::fs::write(&small, b"fits").expect("write");
    let out = curl(&[
        "--user",
        &user,
        "-T",
        &small.display().to_string(),
        &url("small.txt"),
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read(srv.home("alice").join("small.txt")).expect("small"),
        b"fits"
    );
}

/// Python's ftplib: an upload cut by a connection reset, resumed with SIZE
/// and REST + STOR; SIZE, MLSD and SITE MD5 of the result.
const FTPLIB_RESUME: &str = r#"
import ftplib, socket, struct, sys, time
host, port, user, pw = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
data = bytes((i * 7 + 3) % 251 for i in range(2_000_000))
ftp = ftplib.FTP()
ftp.connect(host, port, timeout=20)
ftp.login(user, pw)
ftp.voidcmd("TYPE I")
conn = ftp.transfercmd("STOR big.bin")
conn.sendall(data[:700_000])
# A reset, as a dropped network gives: no clean end of file.
conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
conn.close()
try:
    ftp.voidresp()
    print("cut upload accepted")
except ftplib.all_errors as e:
    print("cut upload refused:", str(e)[:3])
time.sleep(0.5)
have = ftp.size("big.bin")
print("held", have)
from io import BytesIO
ftp.storbinary("STOR big.bin", BytesIO(data[have:]), rest=have)
print("size", ftp.size("big.bin"))
names = [name for name, facts in ftp.mlsd() if facts.get("type") == "file"]
print("mlsd", ",".join(sorted(names)))
print("md5", ftp.sendcmd("SITE MD5 big.bin"))
ftp.quit()
"#;

#[tokio::test]
async fn python_ftplib_resumes_a_cut_upload_with_rest_and_the_md5_matches() {
    let srv = spawn().await;
    srv.add_user("alice", None, "ftp").await;
    let addr = std_ftp(&srv).await;
    let (host, port) = addr.rsplit_once(':').expect("addr");
    let out = tokio::process::Command::new("python3")
        .args(["-c", FTPLIB_RESUME, host, port, "alice", PW])
        .output()
        .await
        .expect("python3");
    let said = text(&out.stdout);
    assert!(out.status.success(), "{said}{}", text(&out.stderr));
    assert!(said.contains("cut upload refused: 4"), "{said}");
    let held: u64 = said
        .lines()
        .find_map(|l| l.strip_prefix("held "))
        .and_then(|n| n.parse().ok())
        .expect("held");
    assert!(held > 0 && held <= 700_000, "{said}");
    assert!(said.contains("size 2000000"), "{said}");
    assert!(said.contains("mlsd big.bin"), "{said}");
    let bytes: Vec<u8> = (0..2_000_000u32)
        .map(|i| ((i * 7 + 3) % 251) as u8)
        .collect();
    assert!(said.contains(&md5_hex(&bytes)), "{said}");
    assert!(std::fs::read(srv.home("alice").join("big.bin")).expect("stored") == bytes);
    let alice = srv.store.require_user("alice").await.expect("alice");
    assert_eq!((alice.used_bytes, alice.reserved_bytes), (2_000_000, 0));
}

#[tokio::test]
async fn ftps_with_auth_tls_works_and_plaintext_is_refused_when_tls_is_required() {
    let srv = spawn().await;
    srv.add_user("alice", None, "ftp").await;
    let addr = ftps(&srv).await;
    let user = format!("alice:{PW}");
    let url = |path: &str| format!("ftp://{addr}/{path}");
    let work = tempfile::tempdir().expect("dir");
    let local = work.path().join("secret.txt");
    std::fs::write(&local, b"over TLS only").expect("write");
    let ca = common::tls().2.display().to_string();
    // AUTH TLS, then PROT P for the data: an upload and a listing.
    let out = curl(&[
        "--ssl-reqd",
        "--cacert",
        &ca,
        "--user",
        &user,
        "-T",
        &local.display().to_string(),
        &url("secret.txt"),
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = curl(&["--ssl-reqd", "--cacert", &ca, "--user", &user, &url("")]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("secret.txt"),
        "{}",
        text(&out.stdout)
    );
    // Without TLS the password is never taken.
    let out = curl(&["--user", &user, &url("")]).await;
    assert!(!out.status.success(), "a plaintext login was accepted");
}

#[tokio::test]
async fn lftp_mirrors_a_tree_both_ways_over_ftps_and_mput_mget_work() {
    let srv = spawn().await;
    srv.add_user("alice", None, "ftp").await;
    let addr = ftps(&srv).await;
    let work = tempfile::tempdir().expect("dir");
    let tree = work.path().join("tree");
    std::fs::create_dir_all(tree.join("sub/deeper")).expect("mkdir");
    std::fs::write(tree.join("a.txt"), b"one").expect("write");
    std::fs::write(tree.join("sub/b.log"), data(300_000, 2)).expect("write");
    std::fs::write(tree.join("sub/deeper/c.log"), data(5_000, 3)).expect("write");
    let script = format!(
        "set ssl:ca-file {ca}; set ftp:ssl-force true; set ftp:ssl-protect-data true; \
         mirror -R tree tree; mirror tree back; mkdir loose; mput -O loose tree/a.txt; \
         mget -O got tree/sub/*.log; quit",
        ca = common::tls().2.display()
    );
    std::fs::create_dir_all(work.path().join("got")).expect("mkdir");
    let out = tokio::process::Command::new("lftp")
        .args([
            "-u",
            &format!("alice,{PW}"),
            "-e",
            &script,
            &format!("ftp://{addr}"),
        ])
        .current_dir(work.path())
        .output()
        .await
        .expect("lftp (install it: apt-get install lftp)");
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let read =
        |p: &std::path::Path| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    for rel in ["a.txt", "sub/b.log", "sub/deeper/c.log"] {
        assert_eq!(
            read(&srv.home("alice").join("tree").join(rel)),
            read(&tree.join(rel)),
            "{rel} up"
        );
        assert_eq!(
            read(&work.path().join("back").join(rel)),
            read(&tree.join(rel)),
            "{rel} back"
        );
    }
    assert_eq!(read(&srv.home("alice").join("loose/a.txt")), b"one");
    assert_eq!(
        read(&work.path().join("got/b.log")),
        read(&tree.join("sub/b.log"))
    );
    let alice = srv.store.require_user("alice").await.expect("alice");
    // Four files and four folders: tree, tree/sub, tree/sub/deeper, loose.
    assert_eq!(alice.file_count, 8);
    assert_eq!(alice.reserved_bytes, 0);
}

/// A control connection spoken to byte by byte, as an attacker would.
struct Raw {
    read: tokio::io::BufReader<tokio::net::tcp::OwnedReadHalf>,
    write: tokio::net::tcp::OwnedWriteHalf,
}

impl Raw {
    /// Connected, the greeting read.
    async fn connect(addr: &str) -> Raw {
        let mut raw = Raw::open(addr).await;
        let hello = raw.reply().await;
        assert!(hello.starts_with("220"), "{hello}");
        raw
    }

    /// Connected, nothing read yet.
    async fn open(addr: &str) -> Raw {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (read, write) = tcp.into_split();
        Raw {
            read: tokio::io::BufReader::new(read),
            write,
        }
    }

    /// The next reply, every line of it ("" once the server has closed).
    async fn reply(&mut self) -> String {
        use tokio::io::AsyncBufReadExt;
        let mut all = String::new();
        loop {
            let mut line = String::new();
            let read = tokio::time::timeout(
                std::time::Duration::from_secs(20),
                self.read.read_line(&mut line),
            )
            .await
            .expect("a reply within 20 s");
            if matches!(read, Ok(0) | Err(_)) {
                return all;
            }
            all.push_str(&line);
            let b = line.as_bytes();
            if b.len() >= 4 && b[..3].iter().all(u8::is_ascii_digit) && b[3] == b' ' {
                return all;
            }
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        let _ = self.write.write_all(bytes).await;
    }

    /// `line` sent, its reply.
    async fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }

    /// USER and PASS; the reply to PASS.
    async fn login(addr: &str, user: &str, pw: &str) -> (Raw, String) {
        let mut raw = Raw::connect(addr).await;
        let said = raw.cmd(&format!("USER {user}")).await;
        assert!(said.starts_with("331"), "{said}");
        let said = raw.cmd(&format!("PASS {pw}")).await;
        (raw, said)
    }

    /// Logged in as `user`, binary mode.
    async fn user(addr: &str, user: &str) -> Raw {
        let (mut raw, said) = Raw::login(addr, user, PW).await;
        assert!(said.starts_with("230"), "{said}");
        let said = raw.cmd("TYPE I").await;
        assert!(said.starts_with("200"), "{said}");
        raw
    }

    /// A passive data connection (EPSV).
    async fn data(&mut self, addr: &str) -> tokio::net::TcpStream {
        let said = self.cmd("EPSV").await;
        assert!(said.starts_with("229"), "{said}");
        let port = said
            .split("|||")
            .nth(1)
            .and_then(|p| p.split('|').next())
            .and_then(|p| p.parse::<u16>().ok())
            .expect("an EPSV port");
        let host = addr.rsplit_once(':').expect("addr").0;
        tokio::net::TcpStream::connect((host, port))
            .await
            .expect("data connection")
    }
}

/// Everything a client could say wrong, said on a raw socket: each gets a
/// clear reply, and the server goes on serving.
#[tokio::test]
async fn a_raw_socket_is_refused_everything_it_should_be_and_the_server_keeps_serving() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let srv = spawn().await;
    refusal_cast(&srv, Some(1_000_000)).await;
    let addr = std_ftp(&srv).await;

    // Wrong password, no ftp right, locked: 530 with the native reason.
    let (_, said) = Raw::login(&addr, "alice", "wrong horse").await;
    assert_eq!(said.trim(), "530 wrong user name or password");
    let (_, said) = Raw::login(&addr, "nobody", PW).await;
    assert_eq!(said.trim(), "530 wrong user name or password");
    let (_, said) = Raw::login(&addr, "carol", PW).await;
    assert!(
        said.starts_with("530 user \"carol\" may not use ftp; ask an administrator"),
        "{said}"
    );
    let (_, said) = Raw::login(&addr, "dave", PW).await;
    assert_eq!(
        said.trim(),
        "530 account \"dave\" is locked; ask an administrator to unlock it"
    );
    // Nothing before a login.
    let mut raw = Raw::connect(&addr).await;
    let said = raw.cmd("LIST").await;
    assert!(said.starts_with("530"), "{said}");

    // Out of the home, by .. and by a link: refused, and nothing sent.
    let mut alice = Raw::user(&addr, "alice").await;
    for cmd in [
        "SIZE ../../etc/passwd",
        "SIZE etc/passwd",
        "MDTM etc/passwd",
        "CWD etc",
        "MKD etc/x",
        "DELE ../alice",
        "RNFR etc/passwd",
        "SITE MD5 etc/passwd",
        "MLST etc/passwd",
    ] {
        let said = alice.cmd(cmd).await;
        assert!(said.starts_with('5'), "{cmd}: {said}");
    }
    let said = alice.cmd("CWD ../..").await;
    assert!(said.starts_with("250") || said.starts_with('5'), "{said}");
    let said = alice.cmd("PWD").await;
    assert!(said.contains("\"/\""), "{said}");
    let mut data = alice.data(&addr).await;
    let said = alice.cmd("RETR etc/passwd").await;
    let mut leaked = Vec::new();
    let _ = data.read_to_end(&mut leaked).await;
    assert!(leaked.is_empty(), "the link's target was sent");
    let said = if said.starts_with("150") {
        alice.reply().await
    } else {
        said
    };
    assert!(said.starts_with('5'), "{said}");

    // An upload of unknown size past the quota stops at it: nothing visible,
    // nothing held.
    let mut data = alice.data(&addr).await;
    let said = alice.cmd("STOR big.bin").await;
    assert!(said.starts_with("150"), "{said}");
    let chunk = vec![7u8; 64 * 1024];
    let mut sent = 0usize;
    while sent < 3_000_000 {
        if data.write_all(&chunk).await.is_err() {
            break;
        }
        sent += chunk.len();
    }
    drop(data);
    let said = alice.reply().await;
    assert!(said.starts_with("552 over quota: this needs"), "{said}");
    let listed = alice.cmd("SIZE big.bin").await;
    assert!(listed.starts_with("550"), "{listed}");
    assert!(!srv.home("alice").join("big.bin").exists());
    let user = srv.store.require_user("alice").await.expect("alice");
    assert_eq!((user.used_bytes, user.reserved_bytes), (0, 0));

    // An upload cut by a reset, resumed with REST + STOR: byte-identical,
    // with the md5 the native client sees.
    let bytes = data_of(900_000);
    let held = cut_upload(&addr, "cut.bin", &bytes, 300_000).await;
    assert!(held > 0 && held <= 300_000, "{held}");
    let mut data = alice.data(&addr).await;
    let said = alice.cmd(&format!("REST {held}")).await;
    assert!(said.starts_with("350"), "{said}");
    let said = alice.cmd("STOR cut.bin").await;
    assert!(said.starts_with("150"), "{said}");
    data.write_all(&bytes[held as usize..]).await.expect("send");
    drop(data);
    let said = alice.reply().await;
    assert!(said.starts_with("226"), "{said}");
    let said = alice.cmd("SITE MD5 cut.bin").await;
    assert!(said.contains(&md5_hex(&bytes)), "{said}");
    let said = alice.cmd("MDTM cut.bin").await;
    assert!(
        said.starts_with("213 20") && said.trim().len() == "213 YYYYMMDDHHMMSS".len(),
        "{said}"
    );
    let said = alice.cmd("MLST cut.bin").await;
    assert!(said.starts_with("250-"), "{said}");
    assert!(said.to_lowercase().contains("size=900000;"), "{said}");
    let work = tempfile::tempdir().expect("dir");
    let got = work.path().join("cut.bin");
    let mut native = srv.client("alice").await;
    native
        .get(
            "cut.bin",
            &got,
            wharf_ftp::client::TransferOptions::default(),
            &mut wharf_ftp::client::NoProgress,
        )
        .await
        .expect("native get");
    assert!(std::fs::read(&got).expect("got") == bytes);

    // Garbage: a clear reply. A line past the cap: 500, and the connection
    // is closed, nothing kept.
    let mut raw = Raw::user(&addr, "alice").await;
    let said = raw.cmd("XYZZY plugh").await;
    assert!(said.starts_with("50"), "{said}");
    raw.send(b"NOOP ").await;
    raw.send(&vec![b'a'; 64 * 1024]).await;
    let said = raw.reply().await;
    assert!(
        said.starts_with("500 Command line longer than 8192 bytes"),
        "{said}"
    );
    assert_eq!(raw.reply().await, "", "the connection stays open");
    let mut raw = Raw::user(&addr, "alice").await;
    raw.send(b"\xff\xfe\x00\x01 binary\r\n").await;
    let said = raw.reply().await;
    assert!(said.starts_with("50"), "{said}");

    // And alice's session, and new ones, are served all along.
    let said = alice.cmd("NOOP").await;
    assert!(said.starts_with("200"), "{said}");
    let mut again = Raw::user(&addr, "alice").await;
    let said = again.cmd("SIZE cut.bin").await;
    assert_eq!(said.trim(), "213 900000");
}

fn data_of(len: usize) -> Vec<u8> {
    data(len, 11)
}

/// The login timeout, the budget of connections not logged in yet, and the
/// limit per source, as the native service has them.
#[tokio::test]
async fn logins_are_timed_and_idle_connections_and_floods_are_bounded() {
    let srv = spawn().await;
    srv.add_user("alice", None, "ftp").await;
    let limits = Limits {
        login_timeout: std::time::Duration::from_secs(1),
        max_unauthenticated: 2,
        ..Limits::default()
    };
    let addr = std_ftp_with(&srv, None, limits, AuthConfig::default()).await;

    // Silent past the login timeout: closed. Logged in: kept past it.
    let mut idle = Raw::connect(&addr).await;
    let mut alice = Raw::user(&addr, "alice").await;
    let started = std::time::Instant::now();
    assert_eq!(idle.reply().await, "", "a silent connection stays open");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let said = alice.cmd("NOOP").await;
    assert!(said.starts_with("200"), "{said}");

    // A third connection not logged in ends the oldest of them.
    let mut first = Raw::connect(&addr).await;
    let _second = Raw::connect(&addr).await;
    let _third = Raw::connect(&addr).await;
    assert_eq!(first.reply().await, "", "the oldest stays open");
    let said = alice.cmd("NOOP").await;
    assert!(
        said.starts_with("200"),
        "a logged-in session was ended: {said}"
    );

    // Past the limit per source: a 421 that says why.
    let srv2 = spawn().await;
    let limits = Limits {
        max_per_ip: 2,
        ..Limits::default()
    };
    let addr = std_ftp_with(&srv2, None, limits, AuthConfig::default()).await;
    let _a = Raw::connect(&addr).await;
    let _b = Raw::connect(&addr).await;
    let mut c = Raw::open(&addr).await;
    let said = c.reply().await;
    assert!(
        said.starts_with("421 too many connections from your address"),
        "{said}"
    );
}

/// A source that keeps failing is refused for a while, over FTP as over the
/// native protocol (one table of failures for both).
#[tokio::test]
async fn a_source_that_keeps_failing_waits_and_the_native_service_agrees() {
    let srv = spawn().await;
    srv.add_user("alice", None, "ftp").await;
    // The native service's policy (10 failures a minute), with failures on
    // names that do not exist (no delay per name).
    let addr = std_ftp(&srv).await;
    for i in 0..AuthConfig::default().source_max_failures {
        let (_, said) = Raw::login(&addr, &format!("nobody{i}"), "wrong horse").await;
        assert_eq!(said.trim(), "530 wrong user name or password");
    }
    // Now even the right password waits: the reply says for how long.
    let (_, said) = Raw::login(&addr, "alice", PW).await;
    assert!(
        said.starts_with("530 too many failed logins from your address; try again in"),
        "{said}"
    );
    // curl reads it as a refused login.
    let out = curl(&["--user", &format!("alice:{PW}"), &format!("ftp://{addr}/")]).await;
    assert_eq!(out.status.code(), Some(67), "{}", text(&out.stderr));
    // The native service keeps the same table: the source waits there too.
    let native = wharf_ftp::client::Client::connect(
        &srv.addr,
        common::client_tls(),
        "alice",
        &wharf_core::Password::new(PW),
    )
    .await;
    let Err(e) = native else {
        panic!("the native service let a source in penalty log in");
    };
    assert!(e.to_string().contains("too many failed logins"), "{e}");
}

/// Python's ftplib over FTPS through every refusal: logins, escapes, the
/// quota on an upload of unknown size, a line past the cap inside TLS.
const FTPLIB_REFUSALS: &str = r#"
import ftplib, ssl, sys
host, port, ca, pw = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(cafile=ca)
ctx.check_hostname = False
def login(user, password):
    f = ftplib.FTP_TLS(context=ctx, timeout=20)
    f.connect(host, port)
    try:
        f.login(user, password)
    except ftplib.error_perm as e:
        print("login", user, "refused:", e)
        return None
    f.prot_p()
    return f
login("alice", "wrong horse")
login("carol", pw)
login("dave", pw)
f = login("alice", pw)
for cmd in ["CWD etc", "SIZE ../../etc/passwd", "SIZE etc/passwd", "DELE etc/passwd"]:
    try:
        f.sendcmd(cmd)
        print(cmd, "ALLOWED")
    except ftplib.error_perm as e:
        print(cmd, "refused:", e)
got = []
try:
    f.retrbinary("RETR etc/passwd", got.append)
    print("RETR ALLOWED")
except ftplib.error_perm as e:
    print("RETR refused:", e, "bytes", sum(map(len, got)))
class Endless:
    # A stream whose length nobody knows in advance: 3 MB, 64 KiB at a time.
    left = 3_000_000
    def read(self, n):
        n = min(n, self.left)
        self.left -= n
        return b"x" * n
try:
    f.storbinary("STOR big.bin", Endless(), blocksize=65536)
    print("over quota ALLOWED")
except ftplib.all_errors as e:
    # The server stops reading at the quota (a reset for the sender); the
    # reply on the control connection says why.
    try:
        print("over quota reply:", f.getresp())
    except ftplib.all_errors as e:
        print("over quota refused:", e)
f = login("alice", pw)
print("listed", sorted(f.nlst()))
# A line past the cap, inside TLS.
f.sock.sendall(b"NOOP " + b"a" * 20000)
try:
    print("long line:", f.getresp())
except ftplib.all_errors as e:
    print("long line refused:", e)
f = login("alice", pw)
print("still serving:", f.voidcmd("NOOP"))
"#;

#[tokio::test]
async fn python_ftplib_over_ftps_is_refused_everything_it_should_be() {
    let srv = spawn().await;
    refusal_cast(&srv, Some(1_000_000)).await;
    let addr = ftps(&srv).await;
    let (host, port) = addr.rsplit_once(':').expect("addr");
    let ca = common::tls().2.display().to_string();
    let out = tokio::process::Command::new("python3")
        .args(["-c", FTPLIB_REFUSALS, host, port, &ca, PW])
        .output()
        .await
        .expect("python3");
    let said = text(&out.stdout);
    assert!(out.status.success(), "{said}{}", text(&out.stderr));
    for line in [
        "login alice refused: 530 wrong user name or password",
        "login carol refused: 530 user \"carol\" may not use ftp",
        "login dave refused: 530 account \"dave\" is locked",
        "CWD etc refused: 553 /etc is a link that leads outside your home directory",
        "SIZE ../../etc/passwd refused: 553 \"/../../etc/passwd\" leads above your home directory",
        "SIZE etc/passwd refused: 553 /etc/passwd is a link that leads outside your home directory",
        "DELE etc/passwd refused: 553 /etc is a link",
        "RETR refused: 553 /etc/passwd is a link that leads outside your home directory bytes 0",
        "over quota refused: 552 over quota: ",
        "listed []",
        "long line refused: 500 Command line longer than 8192 bytes",
        "still serving: 200",
    ] {
        assert!(said.contains(line), "no {line:?} in:\n{said}");
    }
    assert!(!said.contains("ALLOWED"), "{said}");
    assert!(!srv.home("alice").join("big.bin").exists());
    let alice = srv.store.require_user("alice").await.expect("alice");
    assert_eq!((alice.used_bytes, alice.reserved_bytes), (0, 0));
}

/// An upload of `bytes` to `name` cut by a reset after `n` bytes, as a
/// dropped network leaves it; what the server holds of it (`SIZE`).
async fn cut_upload(addr: &str, name: &str, bytes: &[u8], n: usize) -> u64 {
    use tokio::io::AsyncWriteExt;
    let mut raw = Raw::user(addr, "alice").await;
    let mut data = raw.data(addr).await;
    let said = raw.cmd(&format!("STOR {name}")).await;
    assert!(said.starts_with("150"), "{said}");
    data.write_all(&bytes[..n]).await.expect("send");
    // A reset, as a dropped network gives (blocking on drop is moot here).
    #[allow(deprecated)]
    data.set_linger(Some(std::time::Duration::ZERO))
        .expect("linger");
    drop(data);
    let said = raw.reply().await;
    assert!(said.starts_with('4'), "a cut upload was accepted: {said}");
    let said = raw.cmd(&format!("SIZE {name}")).await;
    said.strip_prefix("213 ")
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("{said}"))
}

/// lftp over FTPS with `script`, as `user`, in `dir`.
async fn lftp(addr: &str, user: &str, pw: &str, script: &str, dir: &std::path::Path) -> Output {
    let script = format!(
        "set ssl:ca-file {ca}; set ftp:ssl-force true; set ftp:ssl-protect-data true; \
         set net:max-retries 1; set net:reconnect-interval-base 1; set cmd:fail-exit false; {script}",
        ca = common::tls().2.display()
    );
    tokio::process::Command::new("lftp")
        .args([
            "-u",
            &format!("{user},{pw}"),
            "-e",
            &format!("{script}; quit"),
            &format!("ftp://{addr}"),
        ])
        .current_dir(dir)
        .output()
        .await
        .expect("lftp (install it: apt-get install lftp)")
}

/// lftp through every refusal, and a cut upload finished by `put -c`
/// (SIZE, then REST + STOR); curl finishes another with `-C -` (SIZE, then
/// APPE). Both end byte-identical, with the md5 the native client checks.
#[tokio::test]
async fn lftp_and_curl_are_refused_what_they_should_be_and_resume_cut_uploads() {
    let srv = spawn().await;
    refusal_cast(&srv, Some(5_000_000)).await;
    let addr = ftps(&srv).await;
    let work = tempfile::tempdir().expect("dir");

    for (user, pw, why) in [
        ("alice", "wrong horse", "530 wrong user name or password"),
        ("carol", PW, "530 user \"carol\" may not use ftp"),
        ("dave", PW, "530 account \"dave\" is locked"),
    ] {
        let out = lftp(&addr, user, pw, "ls", work.path()).await;
        assert!(!out.status.success(), "{user} logged in");
        assert!(
            text(&out.stderr).contains(why),
            "{user}: {}",
            text(&out.stderr)
        );
    }

    let big = work.path().join("big.bin");
    std::fs::write(&big, data(6_000_000, 4)).expect("write");
    let out = lftp(
        &addr,
        "alice",
        PW,
        "cd etc; get etc/passwd; get ../../etc/passwd; put big.bin",
        work.path(),
    )
    .await;
    let said = text(&out.stderr);
    for why in [
        "cd: Access failed: 553 /etc is a link that leads outside your home directory",
        "553 /etc/passwd is a link that leads outside your home directory",
        "leads above your home directory",
        "552 over quota: this needs",
    ] {
        assert!(said.contains(why), "no {why:?} in:\n{said}");
    }
    assert!(
        !work.path().join("passwd").exists(),
        "a file out of the home came down"
    );
    assert!(!srv.home("alice").join("big.bin").exists());
    let alice = srv.store.require_user("alice").await.expect("alice");
    assert_eq!((alice.used_bytes, alice.reserved_bytes), (0, 0));

    // A cut upload (cut over a plaintext listener on the same homes, the
    // raw socket speaks no TLS), finished by lftp's put -c.
    let plain = std_ftp(&srv).await;
    let bytes = data(1_500_000, 8);
    let local = work.path().join("report.bin");
    std::fs::write(&local, &bytes).expect("write");
    let held = cut_upload(&plain, "report.bin", &bytes, 600_000).await;
    assert!(held > 0 && held <= 600_000, "{held}");
    let out = lftp(&addr, "alice", PW, "put -c report.bin", work.path()).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Another, finished by curl -C -.
    let other = data(1_200_000, 9);
    let local_other = work.path().join("other.bin");
    std::fs::write(&local_other, &other).expect("write");
    let held = cut_upload(&plain, "other.bin", &other, 500_000).await;
    assert!(held > 0 && held <= 500_000, "{held}");
    let ca = common::tls().2.display().to_string();
    let out = curl(&[
        "--ssl-reqd",
        "--cacert",
        &ca,
        "--user",
        &format!("alice:{PW}"),
        "-C",
        "-",
        "-T",
        &local_other.display().to_string(),
        &format!("ftp://{addr}/other.bin"),
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));

    let mut native = srv.client("alice").await;
    for (name, want) in [("report.bin", &bytes), ("other.bin", &other)] {
        let got = work.path().join(format!("native-{name}"));
        native
            .get(
                name,
                &got,
                wharf_ftp::client::TransferOptions::default(),
                &mut wharf_ftp::client::NoProgress,
            )
            .await
            .expect("native get, md5-verified");
        assert!(std::fs::read(&got).expect("got") == *want, "{name}");
    }
    let alice = srv.store.require_user("alice").await.expect("alice");
    assert_eq!(
        (alice.used_bytes, alice.reserved_bytes, alice.file_count),
        (2_700_000, 0, 2)
    );
}

/// Behind a load balancer speaking the PROXY protocol, standard FTP counts
/// failed logins against the client the balancer names, as the native
/// service does (libunftp itself only sees the balancer's address).
#[tokio::test]
async fn behind_a_balancer_failed_logins_count_against_the_client() {
    let srv = spawn().await;
    srv.add_user("alice", None, "ftp").await;
    let limits = Limits {
        proxy_protocol_from: vec!["127.0.0.1".parse().expect("network")],
        ..Limits::default()
    };
    let addr = std_ftp_with(&srv, None, limits, AuthConfig::default()).await;
    let server: std::net::SocketAddr = addr.parse().expect("address");
    let addr_ref = &addr;
    let as_client = move |client: &'static str| async move {
        let mut raw = Raw::open(addr_ref).await;
        let client: std::net::SocketAddr = client.parse().expect("client");
        raw.send(&wharf_server::proxy_protocol::header(client, server))
            .await;
        let hello = raw.reply().await;
        assert!(hello.starts_with("220"), "{hello}");
        raw
    };
    for _ in 0..AuthConfig::default().source_max_failures {
        let mut raw = as_client("203.0.113.8:4000").await;
        assert!(raw.cmd("USER alice").await.starts_with("331"));
        let said = raw.cmd("PASS wrong horse").await;
        assert_eq!(said.trim(), "530 wrong user name or password");
    }
    let mut raw = as_client("203.0.113.8:4001").await;
    raw.cmd("USER alice").await;
    let said = raw.cmd(&format!("PASS {PW}")).await;
    assert!(
        said.starts_with("530 too many failed logins from your address"),
        "{said}"
    );
    // Alice, through the same balancer from her own address, is in.
    let mut raw = as_client("198.51.100.4:4000").await;
    raw.cmd("USER alice").await;
    let said = raw.cmd(&format!("PASS {PW}")).await;
    assert!(said.starts_with("230"), "{said}");
    let at = wharf_core::time::now_ms() - 120_000;
    let balancer = srv
        .store
        .source_failures_since("127.0.0.1", at)
        .await
        .expect("failures");
    assert!(balancer.is_empty(), "{balancer:?}");
    // Without a header, the balancer's own connection is dropped.
    let mut bare = Raw::open(&addr).await;
    bare.send(b"USER alice\r\n").await;
    assert_eq!(bare.reply().await, "");
}

/// A file being replaced over standard FTP and removed meanwhile (over the
/// native protocol) is not credited twice: its bytes were freed by the
/// removal, so the upload must stop at the quota.
#[tokio::test]
async fn a_replaced_file_removed_midway_is_not_credited_twice() {
    use tokio::io::AsyncWriteExt;
    const MIB: usize = 1 << 20;
    let srv = spawn().await;
    srv.add_user("alice", Some(20 * MIB as u64), "ftp").await;
    let addr = std_ftp(&srv).await;
    let first = data_of(18 * MIB);
    std::fs::write(srv.local("f.bin"), &first).expect("local");
    let mut c = srv.client("alice").await;
    c.put(
        &srv.local("f.bin"),
        "f.bin",
        wharf_ftp::client::TransferOptions::default(),
        &mut wharf_ftp::client::NoProgress,
    )
    .await
    .expect("the first version");

    let mut raw = Raw::user(&addr, "alice").await;
    let mut data = raw.data(&addr).await;
    let said = raw.cmd("STOR f.bin").await;
    assert!(said.starts_with("150"), "{said}");
    let chunk = vec![7u8; MIB];
    for _ in 0..2 {
        data.write_all(&chunk).await.expect("send");
    }
    data.flush().await.expect("flush");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    c.rm("f.bin")
        .await
        .expect("removed over the native protocol");
    // 32 MiB more: only 20 MiB can be stored.
    let mut sent = 2 * MIB;
    for _ in 0..32 {
        if data.write_all(&chunk).await.is_err() {
            break;
        }
        sent += MIB;
    }
    let _ = data.shutdown().await;
    drop(data);
    let said = raw.reply().await;
    assert!(
        said.starts_with("552"),
        "stored past the quota ({sent} bytes sent): {said}"
    );
    assert!(!srv.home("alice").join("f.bin").exists());
    let alice = srv.store.require_user("alice").await.expect("alice");
    assert!(
        alice.used_bytes + alice.reserved_bytes <= 20 * MIB as u64,
        "{} used, {} reserved",
        alice.used_bytes,
        alice.reserved_bytes
    );
}

/// The quota holds for both FTP doors, on the ordinary disk (Wharf's books)
/// and on btrfs (the kernel's qgroup as well): what fits is stored, what
/// does not is refused with nothing left, the disk never holds more than
/// the quota, and interrupted standard FTP uploads are bounded by the file
/// quota.
#[tokio::test]
async fn the_quota_holds_for_both_doors_on_both_file_systems() {
    use tokio::io::AsyncWriteExt;
    use wharf_ftp::client::{NoProgress, TransferOptions};
    const MIB: u64 = 1 << 20;
    for root in roots() {
        let srv = spawn_in(root.as_deref()).await;
        srv.add_user("alice", Some(4 * MIB), "ftp").await;
        let kernel = wharf_store::home::btrfs::is_subvolume(&srv.home("alice"));
        assert_eq!(kernel, root.is_some(), "a home on btrfs is a subvolume");
        let addr = std_ftp(&srv).await;
        let mut c = srv.client("alice").await;
        let opts = TransferOptions::default();
        std::fs::write(srv.local("three"), data_of(3 * MIB as usize)).expect("local");
        std::fs::write(srv.local("two"), data_of(2 * MIB as usize)).expect("local");
        c.put(&srv.local("three"), "three.bin", opts, &mut NoProgress)
            .await
            .expect("3 MiB fit under 4");
        let err = c
            .put(&srv.local("two"), "two.bin", opts, &mut NoProgress)
            .await
            .expect_err("2 MiB more do not");
        assert_eq!(
            err.code(),
            Some(wharf_proto::ErrorCode::QuotaExceeded),
            "{err}"
        );
        // A replacement of the same size: room for the growth only where
        // Wharf keeps the books; where the kernel counts, both copies must
        // fit until the new one takes the old one's place.
        let replaced = c
            .put(&srv.local("three"), "three.bin", opts, &mut NoProgress)
            .await;
        if kernel {
            let err = replaced.expect_err("no room for a second copy");
            assert_eq!(
                err.code(),
                Some(wharf_proto::ErrorCode::QuotaExceeded),
                "{err}"
            );
        } else {
            replaced.expect("the same size replaces");
        }

        // Standard FTP: an upload of unknown size stops at the quota.
        let mut raw = Raw::user(&addr, "alice").await;
        let mut data = raw.data(&addr).await;
        let said = raw.cmd("STOR big.bin").await;
        assert!(said.starts_with("150"), "{said}");
        let chunk = vec![7u8; 64 * 1024];
        for _ in 0..64 {
            if data.write_all(&chunk).await.is_err() {
                break;
            }
        }
        drop(data);
        let said = raw.reply().await;
        assert!(said.starts_with("552"), "{said}");
        assert!(!srv.home("alice").join("big.bin").exists());

        let usage = wharf_store::home::scan_home(&srv.home("alice")).expect("measure");
        assert!(usage.bytes + usage.reserved <= 4 * MIB, "{usage:?}");
        if kernel {
            let q = wharf_store::home::btrfs::qgroup(&srv.home("alice")).expect("qgroup");
            assert_eq!(q.limit, Some(4 * MIB));
            assert!(q.referenced <= 4 * MIB, "{q:?}");
        }
        let alice = srv.store.require_user("alice").await.expect("alice");
        assert_eq!((alice.used_bytes, alice.reserved_bytes), (3 * MIB, 0));

        // Interrupted uploads each hold an entry: with a file quota of 10,
        // the eleventh entry is refused, whatever it holds.
        srv.store
            .set_quota_files("alice", Some(10))
            .await
            .expect("file quota");
        for i in 0..9 {
            cut_upload(&addr, &format!("cut{i}.bin"), &data_of(10_000), 1000).await;
        }
        let mut data = raw.data(&addr).await;
        let said = raw.cmd("STOR one-too-many.bin").await;
        drop(data.shutdown().await);
        let said = if said.starts_with("150") {
            raw.reply().await
        } else {
            said
        };
        assert!(said.starts_with("552 over the file quota"), "{said}");
        let alice = srv.store.require_user("alice").await.expect("alice");
        assert_eq!(alice.file_count + alice.reserved_files, 10, "{alice:?}");
    }
}

/// Python's ftplib against FTPS required: with `PROT C`, or no `PROT`,
/// neither EPSV nor PASV nor a transfer is allowed (the file never crosses
/// in clear); a plain connection to the passive port after `PROT P` fails
/// that transfer (no panic, no hang) and the session serves on.
const FTPLIB_DATA_PROTECTION: &str = r#"
import ftplib, socket, ssl, sys
host, port, ca, pw = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(cafile=ca)
ctx.check_hostname = False
for prot in ["none", "C"]:
    f = ftplib.FTP_TLS(context=ctx, timeout=20)
    f.connect(host, port)
    f.login("alice", pw)
    if prot == "C":
        f.sendcmd("PBSZ 0")
        f.sendcmd("PROT C")
    for cmd in ["EPSV", "PASV"]:
        try:
            f.sendcmd(cmd)
            print(prot, cmd, "ALLOWED")
        except ftplib.error_perm as e:
            print(prot, cmd, "refused:", e)
    got = []
    try:
        f.retrbinary("RETR secret.txt", got.append)
        print(prot, "RETR ALLOWED", b"".join(got))
    except ftplib.all_errors as e:
        print(prot, "RETR refused:", e)
    f.close()
f = ftplib.FTP_TLS(context=ctx, timeout=20)
f.connect(host, port)
f.login("alice", pw)
f.prot_p()
said = f.sendcmd("EPSV")
data_port = int(said.split("|||")[1].split("|")[0])
plain = socket.create_connection((host, data_port))
plain.sendall(b"plain text, not a TLS record\r\n" * 4)
f.putcmd("RETR secret.txt")
print("plain data:", f.getmultiline())
try:
    print("after:", f.getmultiline())
except Exception as e:
    print("after:", e)
plain.close()
got = []
f.retrbinary("RETR secret.txt", got.append)
print("then over TLS:", b"".join(got).decode())
"#;

#[tokio::test]
async fn data_connections_are_protected_on_every_command_and_a_plain_one_after_prot_p_fails_cleanly()
 {
    let srv = spawn().await;
    srv.add_user("alice", None, "ftp").await;
    std::fs::write(srv.home("alice").join("secret.txt"), b"the secret").expect("file");
    let addr = ftps(&srv).await;
    let (host, port) = addr.rsplit_once(':').expect("addr");
    let ca = common::tls().2.display().to_string();
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        tokio::process::Command::new("python3")
            .args(["-c", FTPLIB_DATA_PROTECTION, host, port, &ca, PW])
            .output(),
    )
    .await
    .expect("python3 within a minute")
    .expect("python3");
    let said = text(&out.stdout);
    assert!(out.status.success(), "{said}{}", text(&out.stderr));
    for prot in ["none", "C"] {
        for cmd in ["EPSV", "PASV"] {
            let line = format!("{prot} {cmd} refused: 534");
            assert!(said.contains(&line), "no {line:?} in:\n{said}");
        }
        let line = format!("{prot} RETR refused: 534");
        assert!(said.contains(&line), "no {line:?} in:\n{said}");
    }
    assert!(!said.contains("ALLOWED"), "{said}");
    assert!(!said.contains("the secret") || said.contains("then over TLS: the secret"));
    assert!(said.contains("then over TLS: the secret"), "{said}");
    let after_plain = said
        .lines()
        .find(|l| l.starts_with("after:"))
        .unwrap_or_default();
    assert!(after_plain.contains("after: 4"), "{said}");
}

/// A stranger (another address) who connects to a client's passive port
/// first is dropped: the client's own transfer goes through whole.
#[tokio::test]
async fn a_stranger_on_the_passive_port_cannot_take_the_transfer() {
    use tokio::io::AsyncReadExt;
    let srv = spawn().await;
    srv.add_user("alice", None, "ftp").await;
    let content = data_of(300_000);
    std::fs::write(srv.home("alice").join("f.bin"), &content).expect("file");
    let addr = std_ftp(&srv).await;
    let mut alice = Raw::user(&addr, "alice").await;
    let said = alice.cmd("EPSV").await;
    let port: u16 = said
        .split("|||")
        .nth(1)
        .and_then(|p| p.split('|').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{said}"));
    // The stranger, from 127.0.0.2, is first.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.2:0".parse().expect("addr"))
        .expect("bind 127.0.0.2");
    let mut stranger = socket
        .connect(format!("127.0.0.1:{port}").parse().expect("addr"))
        .await
        .expect("the stranger connects");
    let mut data = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("data connection");
    let said = alice.cmd("RETR f.bin").await;
    assert!(said.starts_with("150"), "{said}");
    let mut got = Vec::new();
    data.read_to_end(&mut got).await.expect("read");
    let said = alice.reply().await;
    assert!(said.starts_with("226"), "{said}");
    assert!(got == content, "{} of {} bytes", got.len(), content.len());
    let mut stolen = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        stranger.read_to_end(&mut stolen),
    )
    .await;
    assert!(stolen.is_empty(), "the stranger got {} bytes", stolen.len());
}

/// An upload stopped cleanly midway (curl stopped with Ctrl-C closes its
/// data connection, which stream mode takes for the end of the file) leaves
/// the first part visible; `curl -C - -T` (SIZE, then APPE) and REST + STOR
/// resume onto it: the file ends whole, its md5 right, the quota charged
/// once, and the visible part stays as it was until the end.
#[tokio::test]
async fn an_upload_stopped_cleanly_resumes_onto_the_visible_file() {
    let srv = spawn().await;
    srv.add_user("alice", Some(20_000_000), "ftp").await;
    let addr = std_ftp(&srv).await;
    let work = tempfile::tempdir().expect("dir");
    let bytes = data(3_000_000, 9);
    let (full, half) = (work.path().join("full.bin"), work.path().join("half.bin"));
    std::fs::write(&full, &bytes).expect("write");
    std::fs::write(&half, &bytes[..1_234_567]).expect("write");
    let user = format!("alice:{PW}");
    let url = format!("ftp://{addr}/f.bin");
    // What a clean stop leaves: the first part, visible.
    let out = curl(&["--user", &user, "-T", &half.display().to_string(), &url]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = curl(&[
        "--user",
        &user,
        "-C",
        "-",
        "-T",
        &full.display().to_string(),
        &url,
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stored = std::fs::read(srv.home("alice").join("f.bin")).expect("stored");
    assert!(stored == bytes, "{} of {} bytes", stored.len(), bytes.len());
    let mut raw = Raw::user(&addr, "alice").await;
    let said = raw.cmd("SITE MD5 f.bin").await;
    assert!(said.contains(&md5_hex(&bytes)), "{said}");
    assert!(common::partials(&srv.home("alice")).is_empty());
    let alice = srv.store.require_user("alice").await.expect("alice");
    assert_eq!(
        (
            alice.used_bytes,
            alice.reserved_bytes,
            alice.file_count,
            alice.reserved_files
        ),
        (3_000_000, 0, 1, 0)
    );

    // REST + STOR onto a visible file does the same; a wrong offset is
    // refused with the right one, and a resume of nothing with its reason.
    std::fs::write(srv.home("alice").join("g.bin"), &bytes[..1000]).expect("visible");
    let said = raw.cmd("REST 2000").await;
    assert!(said.starts_with("350"), "{said}");
    let mut data = raw.data(&addr).await;
    let said = raw.cmd("STOR g.bin").await;
    drop(data.shutdown().await);
    let said = if said.starts_with("150") {
        raw.reply().await
    } else {
        said
    };
    assert!(said.contains("resume at 1000"), "{said}");
    let said = raw.cmd("REST 1000").await;
    assert!(said.starts_with("350"), "{said}");
    let mut data = raw.data(&addr).await;
    let said = raw.cmd("STOR g.bin").await;
    assert!(said.starts_with("150"), "{said}");
    use tokio::io::AsyncWriteExt;
    data.write_all(&bytes[1000..5000]).await.expect("send");
    data.shutdown().await.expect("end");
    drop(data);
    let said = raw.reply().await;
    assert!(said.starts_with("226"), "{said}");
    assert_eq!(
        std::fs::read(srv.home("alice").join("g.bin")).expect("g"),
        &bytes[..5000]
    );
}

/// `LIST` shows each entry's own permission bits and the user's name (not
/// `-rwxr-xr-x 0 0` for everything); `NLST` lists a folder of more than
/// 100,000 names.
#[tokio::test]
async fn listings_show_real_permissions_and_names_and_nlst_lists_big_folders() {
    use std::os::unix::fs::PermissionsExt;
    let srv = spawn().await;
    srv.add_user("alice", None, "ftp").await;
    let addr = std_ftp(&srv).await;
    let home = srv.home("alice");
    std::fs::write(home.join("private.txt"), b"p").expect("file");
    std::fs::set_permissions(
        home.join("private.txt"),
        std::fs::Permissions::from_mode(0o600),
    )
    .expect("chmod");
    // (A home is its owner's alone: run as root, the server takes the group
    // and other bits away when it hands the home over.)
    std::fs::write(home.join("run.sh"), b"s").expect("file");
    std::fs::set_permissions(home.join("run.sh"), std::fs::Permissions::from_mode(0o700))
        .expect("chmod");
    std::fs::write(home.join("read-only.txt"), b"r").expect("file");
    std::fs::set_permissions(
        home.join("read-only.txt"),
        std::fs::Permissions::from_mode(0o400),
    )
    .expect("chmod");
    std::fs::create_dir(home.join("big")).expect("mkdir");
    std::fs::set_permissions(home.join("big"), std::fs::Permissions::from_mode(0o700))
        .expect("chmod");
    let user = format!("alice:{PW}");
    let out = curl(&["--user", &user, &format!("ftp://{addr}/")]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed = text(&out.stdout);
    let line = |name: &str| {
        listed
            .lines()
            .find(|l| l.ends_with(name))
            .unwrap_or_else(|| panic!("no {name} in:\n{listed}"))
            .to_owned()
    };
    assert!(
        line("private.txt").starts_with("-rw------- 1 alice    alice"),
        "{listed}"
    );
    assert!(
        line("run.sh").starts_with("-rwx------ 1 alice    alice"),
        "{listed}"
    );
    assert!(
        line("read-only.txt").starts_with("-r-------- 1 alice    alice"),
        "{listed}"
    );
    assert!(
        line("big").starts_with("drwx------ 1 alice    alice"),
        "{listed}"
    );

    let count = 100_001;
    for i in 0..count {
        std::fs::File::create(home.join("big").join(format!("f{i:06}"))).expect("create");
    }
    let out = curl(&[
        "--user",
        &user,
        "--list-only",
        &format!("ftp://{addr}/big/"),
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let names = text(&out.stdout);
    assert_eq!(
        names.lines().count(),
        count,
        "{}",
        &names[..200.min(names.len())]
    );
    assert_eq!(names.lines().next().map(str::trim_end), Some("f000000"));
}

/// FTPS's TLS policy: TLS 1.2 with AEAD suites only (rustls has no
/// others), nothing older; not 1.3 (curl ends its data connections there
/// without close_notify, which must count as a cut upload).
const FTPLIB_TLS_POLICY: &str = r#"
import ftplib, ssl, sys
host, port, ca, pw = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
for name, version in [("1.3", ssl.TLSVersion.TLSv1_3), ("1.2", ssl.TLSVersion.TLSv1_2), ("1.1", ssl.TLSVersion.TLSv1_1)]:
    ctx = ssl.create_default_context(cafile=ca)
    ctx.check_hostname = False
    try:
        ctx.minimum_version = version
        ctx.maximum_version = version
        if version == ssl.TLSVersion.TLSv1_2:
            # Offer CBC suites too: the server must pick an AEAD one.
            ctx.set_ciphers("ALL:@SECLEVEL=0")
    except (ValueError, ssl.SSLError) as e:
        print(name, "cannot be offered here:", e)
        continue
    f = ftplib.FTP_TLS(context=ctx, timeout=20)
    f.connect(host, port)
    try:
        f.auth()
        cipher = f.sock.cipher()
        print(name, "accepted:", f.sock.version(), cipher[0])
        f.login("alice", pw)
        f.quit()
    except Exception as e:
        print(name, "refused:", type(e).__name__)
"#;

#[tokio::test]
async fn ftps_speaks_tls_1_2_with_aead_suites_only() {
    let srv = spawn().await;
    srv.add_user("alice", None, "ftp").await;
    let addr = ftps(&srv).await;
    let (host, port) = addr.rsplit_once(':').expect("addr");
    let ca = common::tls().2.display().to_string();
    let out = tokio::process::Command::new("python3")
        .args(["-c", FTPLIB_TLS_POLICY, host, port, &ca, PW])
        .output()
        .await
        .expect("python3");
    let said = text(&out.stdout);
    assert!(out.status.success(), "{said}{}", text(&out.stderr));
    assert!(said.contains("1.3 refused"), "{said}");
    let twelve = said
        .lines()
        .find(|l| l.starts_with("1.2 accepted: TLSv1.2"))
        .unwrap_or_else(|| panic!("{said}"));
    assert!(
        twelve.contains("GCM") || twelve.contains("CHACHA20"),
        "a suite that is not AEAD: {twelve}"
    );
    assert!(!said.contains("1.1 accepted"), "{said}");
}

/// `HASH` (draft-bryan-ftpext-hash), as FileZilla verifies with it: MD5
/// by default (the md5 Wharf keeps), SHA-256 once chosen with `OPTS HASH`.
#[tokio::test]
async fn hash_gives_the_md5_and_the_sha256_of_a_file() {
    use sha2::Digest;
    let srv = spawn().await;
    srv.add_user("alice", None, "ftp").await;
    let content = data_of(1_000_000);
    std::fs::write(srv.home("alice").join("f.bin"), &content).expect("file");
    let addr = std_ftp(&srv).await;
    let mut raw = Raw::user(&addr, "alice").await;
    let feat = raw.cmd("FEAT").await;
    assert!(feat.contains("HASH SHA-256;MD5*"), "{feat}");
    let said = raw.cmd("HASH f.bin").await;
    assert_eq!(
        said.trim_end(),
        format!("213 MD5 0-999999 {} /f.bin", md5_hex(&content))
    );
    assert_eq!(raw.cmd("OPTS HASH").await.trim_end(), "200 MD5");
    assert_eq!(raw.cmd("OPTS HASH SHA-256").await.trim_end(), "200 SHA-256");
    let sha: String = sha2::Sha256::digest(&content)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let said = raw.cmd("HASH f.bin").await;
    assert_eq!(
        said.trim_end(),
        format!("213 SHA-256 0-999999 {sha} /f.bin")
    );
    let said = raw.cmd("OPTS HASH BLAKE3").await;
    assert!(said.starts_with("501"), "{said}");
    let said = raw.cmd("HASH missing.bin").await;
    assert!(said.starts_with("550"), "{said}");
    let said = raw.cmd("HASH ../../etc/passwd").await;
    assert!(said.starts_with("553"), "{said}");
}

/// curl stopped with Ctrl-C (SIGINT) mid-upload, then `curl -C - -T`: the
/// upload goes on from what the server kept and ends byte-identical.
#[tokio::test]
async fn curl_stopped_with_ctrl_c_resumes_with_dash_c() {
    let srv = spawn().await;
    srv.add_user("alice", None, "ftp").await;
    let addr = std_ftp(&srv).await;
    let work = tempfile::tempdir().expect("dir");
    let bytes = data(6_000_000, 11);
    let local = work.path().join("big.bin");
    std::fs::write(&local, &bytes).expect("write");
    let user = format!("alice:{PW}");
    let url = format!("ftp://{addr}/big.bin");
    let mut slow = tokio::process::Command::new("curl")
        .args(["--silent", "--limit-rate", "1M", "--user", &user, "-T"])
        .arg(&local)
        .arg(&url)
        .spawn()
        .expect("curl");
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let pid = rustix::process::Pid::from_raw(slow.id().expect("pid") as i32).expect("pid");
    rustix::process::kill_process(pid, rustix::process::Signal::INT).expect("SIGINT");
    let _ = slow.wait().await;
    let out = curl(&[
        "--user",
        &user,
        "-C",
        "-",
        "-T",
        &local.display().to_string(),
        &url,
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stored = std::fs::read(srv.home("alice").join("big.bin")).expect("stored");
    assert!(stored == bytes, "{} of {} bytes", stored.len(), bytes.len());
    let alice = srv.store.require_user("alice").await.expect("alice");
    assert_eq!((alice.used_bytes, alice.reserved_bytes), (6_000_000, 0));
}

/// lftp killed mid-upload over FTPS, then `put -c` (SIZE, then REST +
/// STOR onto what the server kept): byte-identical at the end. With
/// `ftp:ssl-protect-data no` against required TLS, a transfer is refused.
#[tokio::test]
async fn lftp_killed_mid_upload_resumes_with_put_c_and_plain_data_is_refused() {
    let srv = spawn().await;
    srv.add_user("alice", None, "ftp").await;
    let addr = ftps(&srv).await;
    let work = tempfile::tempdir().expect("dir");
    let bytes = data(6_000_000, 12);
    std::fs::write(work.path().join("big.bin"), &bytes).expect("write");
    let ca = common::tls().2.display().to_string();
    let mut slow = tokio::process::Command::new("lftp")
        .args([
            "-u",
            &format!("alice,{PW}"),
            "-e",
            &format!(
                "set ssl:ca-file {ca}; set ftp:ssl-force true; set ftp:ssl-protect-data true; \
                 set net:limit-rate 1000000; put big.bin; quit"
            ),
            &format!("ftp://{addr}"),
        ])
        .current_dir(work.path())
        .spawn()
        .expect("lftp");
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let _ = slow.start_kill();
    let _ = slow.wait().await;
    let out = lftp(&addr, "alice", PW, "put -c big.bin", work.path()).await;
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let stored = std::fs::read(srv.home("alice").join("big.bin")).expect("stored");
    assert!(stored == bytes, "{} of {} bytes", stored.len(), bytes.len());

    let out = lftp(
        &addr,
        "alice",
        PW,
        "set ftp:ssl-protect-data no; get big.bin -o plain.bin",
        work.path(),
    )
    .await;
    assert!(
        !work.path().join("plain.bin").exists()
            || std::fs::read(work.path().join("plain.bin"))
                .expect("plain")
                .is_empty(),
        "a file crossed in clear: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(said.contains("534"), "{said}");
}

/// ABOR during an upload (Python's ftplib `abort()`): answered at once,
/// nothing of the cut upload replaces the file that was there, and the
/// session goes on.
const FTPLIB_ABOR: &str = r#"
import ftplib, sys, time
host, port, pw = sys.argv[1], int(sys.argv[2]), sys.argv[3]
f = ftplib.FTP()
f.connect(host, port, timeout=20)
f.login("alice", pw)
f.voidcmd("TYPE I")
conn = f.transfercmd("STOR doc.txt")
for _ in range(20):
    conn.sendall(b"NEW" * 10000)
    time.sleep(0.02)
started = time.time()
said = f.abort()
print("abort:", said, "in", round(time.time() - started, 1), "s")
conn.close()
print("pwd:", f.pwd())
f.quit()
"#;

#[tokio::test]
async fn abor_during_an_upload_is_answered_and_keeps_the_old_file() {
    let srv = spawn().await;
    srv.add_user("alice", None, "ftp").await;
    std::fs::write(srv.home("alice").join("doc.txt"), b"the old version").expect("file");
    let addr = std_ftp(&srv).await;
    let (host, port) = addr.rsplit_once(':').expect("addr");
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        tokio::process::Command::new("python3")
            .args(["-c", FTPLIB_ABOR, host, port, PW])
            .output(),
    )
    .await
    .expect("python3 within a minute")
    .expect("python3");
    let said = text(&out.stdout);
    assert!(out.status.success(), "{said}{}", text(&out.stderr));
    assert!(said.contains("abort: 2"), "{said}");
    assert!(said.contains("pwd: /"), "{said}");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        std::fs::read(srv.home("alice").join("doc.txt")).expect("doc"),
        b"the old version"
    );
}

/// curl asking to clear the command channel after the login (`CCC`,
/// `--ftp-ssl-ccc`) under required TLS: refused (534), so the commands stay
/// in TLS, and the file still comes down over a protected data channel.
#[tokio::test]
async fn curl_asking_for_a_clear_command_channel_is_refused() {
    let srv = spawn().await;
    srv.add_user("alice", None, "ftp").await;
    std::fs::write(srv.home("alice").join("f.txt"), b"protected").expect("file");
    let addr = ftps(&srv).await;
    let ca = common::tls().2.display().to_string();
    let user = format!("alice:{PW}");
    let url = format!("ftp://{addr}/f.txt");
    let out = curl(&[
        "-v",
        "--ssl-reqd",
        "--ftp-ssl-ccc",
        "--cacert",
        &ca,
        "--user",
        &user,
        &url,
    ])
    .await;
    let said = text(&out.stderr);
    let after_ccc = said
        .split("> CCC")
        .nth(1)
        .unwrap_or_else(|| panic!("{said}"));
    let answer = after_ccc
        .lines()
        .find(|l| l.starts_with('<'))
        .unwrap_or_default();
    assert!(answer.starts_with("< 534"), "{said}");
    assert!(said.contains("> PROT P"), "{said}");
    assert!(out.status.success(), "{said}");
    assert_eq!(text(&out.stdout), "protected");
}

/// Clients that send their bytes and reset the data connection at once,
/// many together: each gets its reply on the control connection (libunftp
/// dropped a data connection reset before it was served, without a word,
/// and its client waited).
const FTPLIB_RESET_AT_ONCE: &str = r#"
import ftplib, socket, struct, sys
host, port, user, pw, name = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
f = ftplib.FTP()
f.connect(host, port, timeout=15)
f.login(user, pw)
f.voidcmd("TYPE I")
said = f.sendcmd("EPSV")
data = socket.create_connection((host, int(said.split("|||")[1].split("|")[0])))
f.putcmd("STOR " + name)
f.getresp()
data.sendall(b"y" * 100000)
data.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
data.close()
try:
    print("reply", f.getresp())
except ftplib.error_temp as e:
    print("reply", e)
f.quit()
"#;

#[tokio::test]
async fn a_data_connection_reset_at_once_still_gets_its_reply() {
    let srv = spawn().await;
    srv.add_user("alice", None, "ftp").await;
    let addr = std_ftp(&srv).await;
    let (host, port) = addr.rsplit_once(':').expect("addr");
    let runs = (0..12).map(|i| {
        tokio::process::Command::new("python3")
            .args(["-c", FTPLIB_RESET_AT_ONCE, host, port, "alice", PW])
            .arg(format!("cut{i}.bin"))
            .output()
    });
    for out in futures_util::future::join_all(runs).await {
        let out = out.expect("python3");
        let said = text(&out.stdout);
        assert!(out.status.success(), "{said}{}", text(&out.stderr));
        assert!(said.starts_with("reply 4"), "{said}");
    }
}
