//! Test harness: a real wharf-execd on 127.0.0.1:0 over a real SQLite file,
//! driven by the real client library or raw frames, on the shared test kit.

use std::path::PathBuf;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use wharf_core::Password;
use wharf_exec::client::ExecClient;
use wharf_execd::server::{ExecConfig, run};
use wharf_proto::exec::{ExecReply, ExecRequest};
use wharf_proto::{Frame, Outbound};
use wharf_server::listener::Listener;
use wharf_store::Store;
use wharf_store::User;
use wharf_store::db::NewUser;
pub use wharf_testkit::btrfs::{btrfs_root, roots};
pub use wharf_testkit::{PW, WAIT, client_tls, connect, server_tls, tls};

pub struct TestServer {
    pub dir: TempDir,
    pub addr: String,
    pub store: Store,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<()>,
}

pub async fn spawn() -> TestServer {
    spawn_with(config()).await
}

/// Settings for tests: commands start through the real wharf-execd binary.
pub fn config() -> ExecConfig {
    ExecConfig {
        launcher: env!("CARGO_BIN_EXE_wharf-execd").into(),
        ..ExecConfig::default()
    }
}

pub async fn spawn_with(config: ExecConfig) -> TestServer {
    spawn_in(config, None).await
}

/// A server whose commands see the network `network`.
pub async fn spawn_on(network: wharf_execd::server::ExecNetwork) -> TestServer {
    spawn_with(ExecConfig {
        network,
        ..config()
    })
    .await
}

/// Whether the tests run as root (and so the server does).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A server whose data folder is beneath `root` (a btrfs mount), or in
/// the temporary folder.
pub async fn spawn_in(config: ExecConfig, root: Option<&std::path::Path>) -> TestServer {
    let wharf_testkit::Data { dir, url } = wharf_testkit::Data::new(root);
    let (store, auth) = wharf_testkit::open(&url).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    let task = tokio::spawn(async move {
        let listener = Listener::new(listener, Some(server_tls()));
        run(listener, auth, config, token)
            .await
            .expect("exec server");
    });
    TestServer {
        dir,
        addr,
        store,
        shutdown,
        task,
    }
}

impl TestServer {
    pub fn home(&self, name: &str) -> PathBuf {
        self.dir.path().join("homes").join(name)
    }

    pub async fn add_user(&self, name: &str, services: &str) -> User {
        wharf_testkit::add_user(&self.store, &self.home(name), name, None, services).await
    }

    /// Sets `name`'s quotas as `admin-cli quota set` does: in the database,
    /// and on the home's subvolume where the kernel enforces it.
    pub async fn set_quota(&self, name: &str, bytes: Option<u64>, files: Option<u64>) {
        self.store.set_quota(name, bytes).await.expect("quota");
        self.store
            .set_quota_files(name, files)
            .await
            .expect("file quota");
        let home = self.store.require_user(name).await.expect("user").home;
        wharf_store::home::apply_quota(&home, bytes).expect("the kernel's limit");
    }

    /// True when the kernel holds `name`'s home to its quota.
    pub fn on_kernel_quota(&self, name: &str) -> bool {
        wharf_store::home::btrfs::is_subvolume(&self.home(name))
    }

    /// What `name`'s home holds on disk now (every entry, as the quota
    /// counts it).
    pub fn on_disk(&self, name: &str) -> u64 {
        let usage = wharf_store::home::scan_home(&self.home(name)).expect("measure");
        usage.bytes + usage.reserved
    }

    /// Adds `count` users who never log in, so that the next users' ids
    /// (and so their uids, when the tests run as root) are not those of
    /// any other test's users: tests run at once, each with its own
    /// database, and a process limit counts per uid.
    pub async fn skip_ids(&self, from: usize, count: usize) {
        for i in from..from + count {
            let name = format!("filler{i}");
            self.store
                .create_user(&NewUser {
                    name: name.clone(),
                    password_hash: "not a hash".into(),
                    home: self.home(&name),
                    quota_bytes: None,
                    quota_files: None,
                    services: "ftp".parse().expect("services"),
                })
                .await
                .expect("filler");
        }
    }

    pub async fn client(&self, name: &str) -> ExecClient {
        ExecClient::connect(&self.addr, client_tls(), name, &Password::new(PW))
            .await
            .expect("connect and log in")
    }

    /// Stops the server as SIGTERM would, and waits for it.
    pub async fn stop(&self) {
        self.shutdown.cancel();
    }
}

pub type RawConn = wharf_testkit::raw::Raw<ExecReply>;

pub async fn raw_login(addr: &str, user: &str) -> RawConn {
    wharf_testkit::raw::login(addr, user).await
}

pub async fn raw_send(conn: &mut RawConn, req: ExecRequest) {
    conn.send(Outbound::msg(req)).await.expect("send");
}

/// The next header, skipping bodies; `None` when the connection ends.
pub async fn raw_recv(conn: &mut RawConn) -> Option<ExecReply> {
    loop {
        match tokio::time::timeout(WAIT, conn.next())
            .await
            .expect("a frame in time")
        {
            Some(Ok(Frame::Header { msg, .. })) => return Some(msg),
            Some(Ok(Frame::Body { .. })) => {}
            _ => return None,
        }
    }
}

pub async fn raw_ask(conn: &mut RawConn, req: ExecRequest) -> ExecReply {
    raw_send(conn, req).await;
    raw_recv(conn).await.expect("a reply")
}

/// True while a process with this pid exists (a zombie counts as gone).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Waits until `pid`, a child of this process (the shell of a command the
/// in-process server ran), is reaped: not even a zombie is left.
pub async fn reaped(pid: u32) {
    let until = tokio::time::Instant::now() + WAIT;
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        assert!(tokio::time::Instant::now() < until, "{pid} was not reaped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until none of `pids` is alive; panics after [`WAIT`].
pub async fn all_gone(pids: &[u32]) {
    let until = tokio::time::Instant::now() + WAIT;
    while pids.iter().any(|&p| alive(p)) {
        assert!(
            tokio::time::Instant::now() < until,
            "processes still alive: {:?}",
            pids.iter().filter(|&&p| alive(p)).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads pids written one per line to a file, once `count` are there.
pub async fn read_pids(path: &std::path::Path, count: usize) -> Vec<u32> {
    let until = tokio::time::Instant::now() + WAIT;
    loop {
        let pids: Vec<u32> = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        if pids.len() >= count {
            return pids;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "only {pids:?} in {}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Pids of the live processes (zombies left out) whose command line holds
/// `marker`. Commands in tests mark their processes with odd durations
/// (`sleep 1000.11`): the pids a command sees are those of its own PID
/// namespace, so the host's `/proc` is searched instead.
pub fn marked(marker: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.windows(marker.len()).any(|w| w == marker.as_bytes()))
                && alive(pid)
        })
        .collect()
}

/// Waits until at least `count` processes carry `marker`.
pub async fn wait_marked(marker: &str, count: usize) -> Vec<u32> {
    let until = tokio::time::Instant::now() + WAIT;
    loop {
        let pids = marked(marker);
        if pids.len() >= count {
            return pids;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "only {pids:?} carry {marker}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until no live process carries `marker`; panics after [`WAIT`].
pub async fn none_marked(marker: &str) {
    let until = tokio::time::Instant::now() + WAIT;
    loop {
        let pids = marked(marker);
        if pids.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "still alive, marked {marker}: {pids:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
