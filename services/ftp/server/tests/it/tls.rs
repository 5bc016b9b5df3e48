//! TLS, seen from the client's side: a given certificate chain, a `--ca`
//! that does not vouch for the server, trust on first use with the real
//! `wharf-ftp` binary (refused off a terminal, pinned with `--accept-new`,
//! a changed certificate refused with the warning and exit code 254),
//! plaintext on both ends, mismatches in one clear line, and a proxy in the
//! middle that never sees the password or the file.

use crate::common;
use wharf_testkit::cli::text;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use common::{PW, client_tls, spawn, spawn_on, tls};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use wharf_client::tls::ClientTls;
use wharf_client::tls::TlsError;
use wharf_core::Password;
use wharf_ftp::client::{Client, ClientError, NoProgress, TransferOptions};
use wharf_ftpd::server::FtpConfig;
use wharf_proto::ErrorCode;
use wharf_server::tls::ServerTls;

/// A CA, and a certificate it signed for localhost and 127.0.0.1, as PEM
/// files in `dir`: (ca.pem, server.pem, server.key).
fn ca_and_leaf(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "Wharf test CA");
    let ca_key = KeyPair::generate().expect("ca key");
    let ca_cert = ca.self_signed(&ca_key).expect("ca cert");
    let issuer = Issuer::new(ca, ca_key);
    let leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .expect("leaf params");
    let leaf_key = KeyPair::generate().expect("leaf key");
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).expect("leaf cert");
    let paths = (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    );
    std::fs::write(&paths.0, ca_cert.pem()).expect("write");
    std::fs::write(&paths.1, leaf_cert.pem()).expect("write");
    std::fs::write(&paths.2, leaf_key.serialize_pem()).expect("write");
    paths
}

#[tokio::test]
async fn a_given_certificate_is_served_and_checked_against_its_ca() {
    let dir = tempfile::tempdir().expect("dir");
    let (ca, cert, key) = ca_and_leaf(dir.path());
    let given = ServerTls::from_files(&cert, &key).expect("--tls-cert, --tls-key");
    let srv = spawn_on(FtpConfig::default(), Some(given)).await;
    srv.add_user("alice", None, "ftp").await;
    let trust_ca = ClientTls::trusting(&ca).expect("--ca");
    let mut c = Client::connect(&srv.addr, &trust_ca, "alice", &Password::new(PW))
        .await
        .expect("the CA vouches for the server");
    assert_eq!(c.pwd().await.expect("pwd"), "/");
    // By name too: the certificate is for localhost.
    let port = srv.addr.rsplit(':').next().expect("port");
    Client::connect(
        &format!("localhost:{port}"),
        &trust_ca,
        "alice",
        &Password::new(PW),
    )
    .await
    .expect("by name");
    // Another certificate as --ca: refused before anything is sent.
    let err = Client::connect(&srv.addr, client_tls(), "alice", &Password::new(PW))
        .await
        .expect_err("not vouched for");
    assert!(
        matches!(&err, ClientError::Connect(TlsError::NotTrusted { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("does not vouch"), "{err}");
}

async fn ftp(home: &Path, addr: &str, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(wharf_testkit::cli::bin("wharf-ftp"))
        .args(["--server", addr, "--user", "alice"])
        .args(args)
        .env("HOME", home)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("WHARF_CA")
        .env("WHARF_PASSWORD", PW)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("run wharf-ftp")
}

#[tokio::test]
async fn trust_on_first_use_pins_and_a_changed_certificate_is_refused() {
    let srv = spawn().await;
    srv.add_user("alice", None, "ftp").await;
    let home = tempfile::tempdir().expect("home");
    let known = home.path().join(".config/wharf/known_servers");
    let fp = &tls().0.fingerprint;

    // First contact, no terminal: refused, the fingerprint shown.
    let out = ftp(home.path(), &srv.addr, &["ls"]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(fp.as_str()) && err.contains("--accept-new"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!known.exists(), "nothing pinned without consent");

    // --accept-new pins it; later connections need no flag.
    let out = ftp(home.path(), &srv.addr, &["--accept-new", "ls"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let pins = std::fs::read_to_string(&known).expect("known_servers");
    assert_eq!(pins, format!("{} {fp}\n", srv.addr));
    let out = ftp(home.path(), &srv.addr, &["ls"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));

    // Another port of the same host with the same certificate (wharfd's
    // other services): the same server, trusted without asking again.
    let sibling = spawn().await;
    sibling.add_user("alice", None, "ftp").await;
    let out = ftp(home.path(), &sibling.addr, &["ls"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(&format!(
            "{} presents the certificate already trusted for {}",
            sibling.addr, srv.addr
        )),
        "{}",
        text(&out.stderr)
    );
    let pins = std::fs::read_to_string(&known).expect("known_servers");
    assert_eq!(pins, format!("{} {fp}\n{} {fp}\n", srv.addr, sibling.addr));
    std::fs::write(&known, format!("{} {fp}\n", srv.addr)).expect("pins");

    // The same address now serves another certificate.
    let other_dir = tempfile::tempdir().expect("dir");
    let other = ServerTls::made_in(other_dir.path(), &[]).expect("another certificate");
    let impostor = spawn_on(FtpConfig::default(), Some(other.clone())).await;
    impostor.add_user("alice", None, "ftp").await;
    std::fs::write(&known, format!("{} {fp}\n", impostor.addr)).expect("pin");
    let out = ftp(home.path(), &impostor.addr, &["--accept-new", "ls"]).await;
    assert_eq!(out.status.code(), Some(254));
    let err = text(&out.stderr);
    assert!(
        err.contains("WARNING: THE WHARF SERVER'S CERTIFICATE HAS CHANGED!"),
        "{err}"
    );
    assert!(
        err.contains(&other.fingerprint) && err.contains(fp.as_str()),
        "{err}"
    );
    assert!(err.contains("line 1"), "{err}");
    assert!(
        err.lines().count() > 5,
        "the warning keeps its lines: {err}"
    );
    assert_eq!(
        std::fs::read_to_string(&known).expect("known_servers"),
        format!("{} {fp}\n", impostor.addr),
        "the pin is left alone"
    );
}

#[tokio::test]
async fn plaintext_on_both_ends_works_and_a_mismatch_says_so_in_one_line() {
    let plain = spawn_on(FtpConfig::default(), None).await;
    plain.add_user("alice", None, "ftp").await;
    let mut c = Client::connect(
        &plain.addr,
        &ClientTls::plain(),
        "alice",
        &Password::new(PW),
    )
    .await
    .expect("--no-tls on both ends");
    assert_eq!(c.pwd().await.expect("pwd"), "/");
    // A TLS client at a plaintext server.
    let err = Client::connect(&plain.addr, client_tls(), "alice", &Password::new(PW))
        .await
        .expect_err("no TLS there");
    assert!(
        err.to_string().contains("did not answer in TLS") && err.to_string().contains("--no-tls"),
        "{err}"
    );
    // A plaintext client at a TLS server.
    let srv = spawn().await;
    srv.add_user("alice", None, "ftp").await;
    let err = Client::connect(&srv.addr, &ClientTls::plain(), "alice", &Password::new(PW))
        .await
        .expect_err("TLS only");
    assert_eq!(err.code(), Some(ErrorCode::TlsRequired), "{err}");
    // And with the binary: one line each.
    let home = tempfile::tempdir().expect("home");
    let out = ftp(home.path(), &srv.addr, &["--no-tls", "ls"]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("speaks TLS only"), "{err}");
    let out = ftp(home.path(), &plain.addr, &["--accept-new", "ls"]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("did not answer in TLS"), "{err}");
    // The plaintext server still serves.
    c.pwd().await.expect("still serving");
}

/// A TCP proxy that forwards to `to` and records every byte, both ways.
async fn recording_proxy(to: String) -> (SocketAddr, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let Ok(outbound) = tokio::net::TcpStream::connect(&to).await else {
                return;
            };
            let (ri, wi) = inbound.into_split();
            let (ro, wo) = outbound.into_split();
            tokio::spawn(pump(ri, wo, Arc::clone(&record)));
            tokio::spawn(pump(ro, wi, Arc::clone(&record)));
        }
    });
    (addr, seen)
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    record: Arc<Mutex<Vec<u8>>>,
) {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n @ 1..) = from.read(&mut buf).await {
        record
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(&buf[..n]);
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Logs in through a recording proxy, uploads a file and lists; returns
/// every byte that crossed.
async fn through_proxy(server: &str, tls: &ClientTls, local: &Path) -> Vec<u8> {
    let (proxy, seen) = recording_proxy(server.to_owned()).await;
    let mut c = Client::connect(&proxy.to_string(), tls, "alice", &Password::new(PW))
        .await
        .expect("log in through the proxy");
    c.put(
        local,
        "plans.txt",
        TransferOptions::default(),
        &mut NoProgress,
    )
    .await
    .expect("put");
    c.ls(None).await.expect("ls");
    c.quit().await.expect("quit");
    seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

#[tokio::test]
async fn no_password_or_file_byte_crosses_the_wire_in_clear() {
    let srv = spawn().await;
    srv.add_user("alice", None, "ftp").await;
    let secret = b"SECRET-PLANS-FOR-THE-HARBOUR".repeat(100);
    let local = srv.local("plans.txt");
    std::fs::write(&local, &secret).expect("local file");
    let wire = through_proxy(&srv.addr, client_tls(), &local).await;
    assert!(wire.len() > secret.len(), "the proxy saw the traffic");
    assert!(
        !contains(&wire, PW.as_bytes()),
        "the password crossed in clear"
    );
    assert!(
        !contains(&wire, b"SECRET-PLANS"),
        "the file crossed in clear"
    );
    assert!(!contains(&wire, b"alice"), "the user name crossed in clear");
    // The control: a --no-tls pair shows both, so the proxy does see bytes.
    let plain = spawn_on(FtpConfig::default(), None).await;
    plain.add_user("alice", None, "ftp").await;
    let wire = through_proxy(&plain.addr, &ClientTls::plain(), &local).await;
    assert!(contains(&wire, PW.as_bytes()) && contains(&wire, b"SECRET-PLANS"));
}
