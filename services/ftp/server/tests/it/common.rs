//! Test harness: a real wharf-ftpd on 127.0.0.1:0 over a real SQLite file,
//! on the shared test kit.

use std::path::PathBuf;

use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use wharf_core::Password;
use wharf_ftp::client::Client;
use wharf_ftpd::server::{FtpConfig, FtpServer, run};
use wharf_server::listener::Listener;
use wharf_server::tls::ServerTls;
use wharf_store::Store;
use wharf_store::User;
pub use wharf_testkit::btrfs::roots;
pub use wharf_testkit::{PW, client_tls, connect, data, eventually, postgres, server_tls, tls};

pub struct TestServer {
    pub dir: TempDir,
    pub url: String,
    pub addr: String,
    pub store: Store,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<()>,
}

pub async fn spawn() -> TestServer {
    spawn_with(FtpConfig::default()).await
}

pub async fn spawn_with(config: FtpConfig) -> TestServer {
    spawn_on(config, Some(server_tls())).await
}

/// A server whose data folder is beneath `root` (a btrfs mount, where
/// homes are subvolumes held to their quota by the kernel), or in the
/// temporary folder.
pub async fn spawn_in(root: Option<&std::path::Path>) -> TestServer {
    let data = wharf_testkit::Data::new(root);
    spawn_at(data.dir, data.url, FtpConfig::default(), Some(server_tls())).await
}

/// A server with this certificate, or plain (`--no-tls`) with `None`.
pub async fn spawn_on(config: FtpConfig, tls: Option<ServerTls>) -> TestServer {
    let data = wharf_testkit::Data::new(None);
    spawn_at(data.dir, data.url, config, tls).await
}

/// Two servers, as two replicas: one PostgreSQL database and one folder of
/// homes (a fresh database on the test cluster); `None` when there is no
/// test cluster (under CI, an error).
pub async fn spawn_replicas() -> Option<(TestServer, TestServer)> {
    let url = postgres::postgres_or_skip().await?;
    let a = spawn_at(
        tempfile::tempdir().expect("temp dir"),
        url.clone(),
        FtpConfig::default(),
        Some(server_tls()),
    )
    .await;
    // The second replica's folder is a link to the first's: the same
    // homes, as a shared file system gives them.
    let b_dir = tempfile::tempdir().expect("temp dir");
    std::fs::remove_dir(b_dir.path()).expect("rmdir");
    std::os::unix::fs::symlink(a.dir.path(), b_dir.path()).expect("link");
    let b = spawn_at(b_dir, url, FtpConfig::default(), Some(server_tls())).await;
    Some((a, b))
}

async fn spawn_at(
    dir: TempDir,
    url: String,
    config: FtpConfig,
    tls: Option<ServerTls>,
) -> TestServer {
    let (store, auth) = wharf_testkit::open(&url).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(run(
        Listener::new(listener, tls),
        FtpServer::new(auth, config),
        shutdown.clone(),
    ));
    TestServer {
        dir,
        url,
        addr,
        store,
        shutdown,
        task,
    }
}

impl TestServer {
    pub async fn add_user(&self, name: &str, quota: Option<u64>, services: &str) -> User {
        let home = self.dir.path().join("homes").join(name);
        wharf_testkit::add_user(&self.store, &home, name, quota, services).await
    }

    pub async fn client(&self, name: &str) -> Client {
        Client::connect(&self.addr, client_tls(), name, &Password::new(PW))
            .await
            .expect("connect and log in")
    }

    pub fn home(&self, name: &str) -> PathBuf {
        self.dir
            .path()
            .join("homes")
            .join(name)
            .canonicalize()
            .expect("home")
    }

    pub async fn user(&self, name: &str) -> User {
        self.store.require_user(name).await.expect("user")
    }

    pub fn local(&self, name: &str) -> PathBuf {
        let dir = self.dir.path().join("local");
        std::fs::create_dir_all(&dir).expect("local dir");
        dir.join(name)
    }
}

use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio_util::codec::Framed;
use wharf_core::tls::Stream;
use wharf_proto::ftp::{FtpReply, FtpRequest};
use wharf_proto::{Frame, FrameCodec, Outbound};

pub type Raw = wharf_testkit::raw::Raw<FtpReply>;

/// A raw protocol connection, for sending what the client library never would.
pub async fn raw(addr: &str) -> Raw {
    Framed::new(connect(addr).await, FrameCodec::new())
}

pub async fn raw_send(conn: &mut Raw, req: FtpRequest, body_len: u64) {
    conn.send(Outbound::Header { msg: req, body_len })
        .await
        .expect("send");
}

pub async fn raw_recv(conn: &mut Raw) -> Option<FtpReply> {
    match conn.next().await {
        Some(Ok(Frame::Header { msg, .. })) => Some(msg),
        _ => None,
    }
}

/// A raw connection logged in as `user`.
pub async fn raw_login(addr: &str, user: &str) -> Raw {
    wharf_testkit::raw::login(addr, user).await
}

/// [`raw_login`] over a connection made by the caller (from another source
/// address, say).
pub async fn raw_login_on(stream: Stream, user: &str) -> Raw {
    wharf_testkit::raw::login_on(stream, user).await
}

/// Records what a transfer reported.
#[derive(Default)]
pub struct Recorder {
    pub begun: Option<(u64, u64)>,
    pub advanced: u64,
    pub notes: Vec<String>,
    pub finished: bool,
}

impl wharf_ftp::client::Progress for Recorder {
    fn begin(&mut self, total: u64, resumed_at: u64) {
        self.begun = Some((total, resumed_at));
    }
    fn advance(&mut self, bytes: u64) {
        self.advanced += bytes;
    }
    fn note(&mut self, message: &str) {
        self.notes.push(message.to_owned());
    }
    fn finish(&mut self) {
        self.finished = true;
    }
}

/// The partial uploads in a home.
pub fn partials(home: &std::path::Path) -> Vec<(String, u64)> {
    let dir = wharf_store::home::partial_dir(home);
    let mut out: Vec<(String, u64)> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| {
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        e.metadata().map(|m| m.len()).unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Starts an upload of `bytes` to `path` and drops the connection after `cut` bytes.
pub async fn cut_upload(addr: &str, path: &str, bytes: &[u8], cut: usize) {
    let mut conn = raw_login(addr, "alice").await;
    raw_send(
        &mut conn,
        FtpRequest::Put {
            path: path.into(),
            size: bytes.len() as u64,
            at_once: false,
        },
        0,
    )
    .await;
    assert_eq!(
        raw_recv(&mut conn).await,
        Some(FtpReply::PutReady {
            offset: 0,
            prefix_md5: None
        })
    );
    raw_send(
        &mut conn,
        FtpRequest::PutData { offset: 0 },
        bytes.len() as u64,
    )
    .await;
    conn.get_mut()
        .write_all(&bytes[..cut])
        .await
        .expect("write half");
    conn.get_mut().flush().await.expect("flush");
    drop(conn);
}
