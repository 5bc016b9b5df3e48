//! Shared helpers: a real SQLite file in a temp dir, and a real PostgreSQL
//! database when a test cluster is given.

pub use wharf_testkit::postgres;

use tempfile::TempDir;
use wharf_core::Password;
use wharf_core::ServiceSet;
use wharf_store::Authenticator;
use wharf_store::Store;
use wharf_store::User;
use wharf_store::db::NewUser;

pub struct Env {
    pub dir: TempDir,
    pub url: String,
    pub store: Store,
    pub auth: Authenticator,
}

pub async fn env() -> Env {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}/db/wharf.db", dir.path().display());
    env_at(dir, url).await
}

/// One environment per back end: SQLite, and PostgreSQL when a test cluster
/// is given (see `wharf_testkit::postgres`).
pub async fn envs() -> Vec<Env> {
    let dir = tempfile::tempdir().expect("temp dir");
    let urls = postgres::database_urls(&dir.path().join("db")).await;
    let mut dirs = vec![dir];
    let mut out = Vec::new();
    for url in urls {
        // The SQLite file's folder is the first environment's.
        let dir = dirs
            .pop()
            .unwrap_or_else(|| tempfile::tempdir().expect("temp dir"));
        out.push(env_at(dir, url).await);
    }
    out
}

async fn env_at(dir: TempDir, url: String) -> Env {
    let (store, auth) = wharf_testkit::open(&url).await;
    eprintln!("on {:?}", store.backend());
    Env {
        dir,
        url,
        store,
        auth,
    }
}

impl Env {
    pub async fn add_user(
        &self,
        name: &str,
        password: &str,
        quota: Option<u64>,
        services: &str,
    ) -> User {
        let hash = wharf_store::auth::hash_password(&Password::new(password))
            .await
            .expect("hash");
        let services: ServiceSet = services.parse().expect("services");
        self.store
            .create_user(&NewUser {
                name: name.into(),
                password_hash: hash,
                home: self.dir.path().join("homes").join(name),
                quota_bytes: quota,
                quota_files: None,
                services,
            })
            .await
            .expect("create user")
    }
}

/// The address tests log in from unless they say otherwise.
pub const HOME_IP: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));

impl Env {
    /// Logs `name` in to ftp with `password`, from [`HOME_IP`].
    pub async fn login(&self, name: &str, password: &str) -> wharf_store::Result<User> {
        self.login_from(name, password, HOME_IP).await
    }

    /// Logs `name` in to ftp with `password`, from `ip`.
    pub async fn login_from(
        &self,
        name: &str,
        password: &str,
        ip: std::net::IpAddr,
    ) -> wharf_store::Result<User> {
        self.auth
            .authenticate(name, &Password::new(password), wharf_core::Service::Ftp, ip)
            .await
            .map(|(user, _session)| user)
    }
}
