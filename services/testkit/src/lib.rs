//! What Wharf's tests share, as a dev-dependency of every package: the
//! databases a test runs on ([`postgres`]), the btrfs file system of the
//! kernel's quota ([`btrfs`]), one certificate per test binary ([`tls`]),
//! a server's data folder and users ([`Data`]), raw protocol connections
//! logged in with the common opening ([`raw`]), client binaries on a
//! pseudo-terminal ([`terminal`]) and the checks of their documentation
//! ([`docs`]).
//!
//! Each package's tests start their own server on top of these (one
//! `tests/it/` binary per package, its `harness` module); nothing here
//! knows a service beyond the opening every service shares.

pub mod btrfs;
pub mod cli;
pub mod docs;
pub mod postgres;
pub mod raw;
pub mod terminal;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use tempfile::TempDir;
use wharf_client::tls::ClientTls;
use wharf_core::Password;
use wharf_core::tls::Stream;
use wharf_server::tls::ServerTls;
use wharf_store::AuthConfig;
use wharf_store::Authenticator;
use wharf_store::Store;
use wharf_store::User;
use wharf_store::db::NewUser;

/// The password of the users tests add.
pub const PW: &str = "correct horse battery";

/// Long enough for anything that should happen on loopback.
pub const WAIT: Duration = Duration::from_secs(10);

/// One certificate per test binary: the servers serve it, the clients
/// trust it (`--ca` is its path).
pub fn tls() -> &'static (ServerTls, ClientTls, PathBuf) {
    static TLS: OnceLock<(ServerTls, ClientTls, PathBuf)> = OnceLock::new();
    TLS.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir").keep();
        let server = ServerTls::made_in(&dir, &[]).expect("certificate");
        let cert = wharf_server::tls::made_cert_path(&dir);
        let client = ClientTls::trusting(&cert).expect("trust");
        (server, client, cert)
    })
}

/// The server side of [`tls`].
pub fn server_tls() -> ServerTls {
    tls().0.clone()
}

/// The client side of [`tls`].
pub fn client_tls() -> &'static ClientTls {
    &tls().1
}

/// A TCP+TLS connection to `addr`, nothing sent yet.
pub async fn connect(addr: &str) -> Stream {
    client_tls()
        .connect(addr, "the server")
        .await
        .expect("connect")
}

/// A server's data folder (a temporary one) and its SQLite database.
pub struct Data {
    pub dir: TempDir,
    pub url: String,
}

impl Data {
    /// A data folder beneath `root` (a btrfs mount, where homes are
    /// subvolumes held to their quota by the kernel), or in the temporary
    /// folder.
    pub fn new(root: Option<&Path>) -> Data {
        let dir = match root {
            Some(root) => tempfile::tempdir_in(root).expect("temp dir"),
            None => tempfile::tempdir().expect("temp dir"),
        };
        let url = format!("sqlite://{}/wharf.db", dir.path().display());
        Data { dir, url }
    }

    /// The database and an authenticator on it, with default settings.
    pub async fn open(&self) -> (Store, Authenticator) {
        open(&self.url).await
    }
}

/// The database at `url` and an authenticator on it, with default settings.
pub async fn open(url: &str) -> (Store, Authenticator) {
    let store = Store::open(url).await.expect("database");
    let auth = Authenticator::new(store.clone(), AuthConfig::default())
        .await
        .expect("auth");
    (store, auth)
}

/// Adds `name`, password [`PW`], with a home at `home` made as admin-cli
/// makes it (a subvolume on btrfs, held to `quota` by the kernel there).
pub async fn add_user(
    store: &Store,
    home: &Path,
    name: &str,
    quota: Option<u64>,
    services: &str,
) -> User {
    let hash = wharf_store::auth::hash_password(&Password::new(PW))
        .await
        .expect("hash");
    let (home, _) = wharf_store::home::ensure_home(home).expect("home");
    let user = store
        .create_user(&NewUser {
            name: name.into(),
            password_hash: hash,
            home,
            quota_bytes: quota,
            quota_files: None,
            services: services.parse().expect("services"),
        })
        .await
        .expect("user");
    if quota.is_some() {
        wharf_store::home::apply_quota(&user.home, quota).expect("the kernel's limit");
    }
    user
}

/// Deterministic pseudo-random bytes.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
        | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Polls `cond` every 10 ms for up to 10 s (waiting on another task's
/// progress, not timing anything).
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for: {what}");
}
