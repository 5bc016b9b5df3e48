//! Password hashing and login checks.
//!
//! argon2id takes tens of milliseconds and ~19 MiB per call, so every hash and
//! verification runs off the async runtime, on a fixed set of worker threads
//! behind a semaphore sized to the cores: a thousand logins at once queue up
//! instead of taking 19 GiB. An
//! unknown user name costs the same argon2 work as a known one (checked
//! against a dummy hash), so timing does not tell who exists.
//!
//! Failed logins are penalised by where they come from, not by the name
//! they tried, so a stranger cannot lock anyone out (pam_faillock's known
//! trade-off, which OpenSSH's `PerSourcePenalties` avoids too): a source
//! (an IPv4 address, an IPv6 /64) with `source_max_failures` failures within
//! `source_window` is refused with `rate_limited` for a penalty that doubles
//! with each further burst, up to `source_max_penalty`, without any argon2
//! work. A name guessed at from many sources slows down instead: past
//! `name_delay_after` recent failures on it, every attempt on it waits a
//! growing delay (at most `name_delay_max`) and attempts on one name run
//! one at a time, so a distributed guess crawls while the owner's right
//! password still logs in within a couple of seconds. The counts live in
//! the database, so every process on it shares them.

use std::sync::Arc;
use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

use argon2::password_hash::PasswordHasher;
use argon2::password_hash::phc::{Output, PasswordHash};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::Semaphore;

use crate::db::{Store, User};
use crate::error::{Error, Result};
use wharf_core::names::validate_user_name;
use wharf_core::service::Service;
use wharf_core::time::{duration_ms, now_ms};
use wharf_proto::Password;

/// Shortest password accepted when one is set.
pub const MIN_PASSWORD_CHARS: usize = 8;

/// Longest password accepted when one is set, in bytes.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Login policy.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Failed logins one source may make within `source_window` before it
    /// is refused for a while.
    pub source_max_failures: u32,
    /// The window of `source_max_failures`, and the first penalty.
    pub source_window: Duration,
    /// The longest penalty a source gets (each burst doubles it).
    pub source_max_penalty: Duration,
    /// Failures on a name within `failure_window` past which attempts on
    /// it are delayed.
    pub name_delay_after: u32,
    /// The delay for the first failure past `name_delay_after`; it doubles
    /// with each further one.
    pub name_delay_step: Duration,
    /// The longest delay of an attempt on a name.
    pub name_delay_max: Duration,
    /// How far back failures on a name count.
    pub failure_window: Duration,
    /// argon2 computations allowed at once.
    pub verify_concurrency: usize,
    /// Limits for users who have none of their own (`--upload-rate`,
    /// `--download-rate`, `--max-sessions`).
    pub user_limits: crate::db::UserLimits,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            source_max_failures: 10,
            source_window: Duration::from_secs(60),
            source_max_penalty: Duration::from_secs(3600),
            name_delay_after: 5,
            name_delay_step: Duration::from_millis(100),
            name_delay_max: Duration::from_millis(1500),
            failure_window: Duration::from_secs(15 * 60),
            verify_concurrency: std::thread::available_parallelism().map_or(2, |n| n.get()),
            user_limits: crate::db::UserLimits::default(),
        }
    }
}

/// How failed logins on a name slow the attempts on it, now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameSlowdown {
    /// Failed logins on the name within [`AuthConfig::failure_window`].
    pub failures: u64,
    /// What each attempt on the name waits (zero: not slowed).
    pub delay: Duration,
    /// When the slowdown ends by itself (unix ms), unless more failures
    /// come; `None` when not slowed.
    pub until: Option<i64>,
}

impl AuthConfig {
    /// The slowdown of a name whose recent failures happened at
    /// `failures` (unix ms, oldest first, all within `failure_window`).
    pub fn slowdown_of(&self, failures: &[i64]) -> NameSlowdown {
        let after = self.name_delay_after as usize;
        let over = failures.len().saturating_sub(after);
        let (delay, until) = if over == 0 {
            (Duration::ZERO, None)
        } else {
            let doublings = u32::try_from(over - 1).unwrap_or(u32::MAX).min(20);
            let delay = self
                .name_delay_step
                .saturating_mul(1 << doublings)
                .min(self.name_delay_max);
            // Slowed while more than `after` failures are in the window:
            // until the one that would leave `after` behind ages out.
            let until = failures[over - 1] + duration_ms(self.failure_window);
            (delay, Some(until))
        };
        NameSlowdown {
            failures: failures.len() as u64,
            delay,
            until,
        }
    }

    /// The slowdown of `name` now, from the failures `store` records.
    pub async fn name_slowdown(&self, store: &Store, name: &str) -> Result<NameSlowdown> {
        let since = now_ms() - duration_ms(self.failure_window);
        let failures = store.failures_since(name, since).await?;
        Ok(self.slowdown_of(&failures))
    }
}

/// Failures are kept this long: a source's penalty grows with its failures
/// over it.
const FAILURE_MEMORY: Duration = Duration::from_secs(24 * 3600);

/// The key failures of `ip` count under: the address for IPv4 (and IPv4
/// mapped into IPv6), its /64 for IPv6 (one host's share of most networks).
pub fn source_key(ip: std::net::IpAddr) -> String {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

/// Checks a new password against the policy: 8 to 1024 bytes' worth.
pub fn check_new_password(password: &Password) -> Result<()> {
    if password.is_empty() {
        return Err(Error::WeakPassword("it is empty"));
    }
    if password.char_len() < MIN_PASSWORD_CHARS {
        return Err(Error::WeakPassword("it must be at least 8 characters long"));
    }
    if password.expose().len() > MAX_PASSWORD_BYTES {
        return Err(Error::WeakPassword("it must be at most 1024 bytes long"));
    }
    Ok(())
}

/// Checks a new password against the policy and hashes it into an argon2id
/// PHC string, off the async runtime. For setting passwords (`admin-cli`),
/// which is rare; logins go through [`Authenticator`].
pub async fn hash_password(password: &Password) -> Result<String> {
    check_new_password(password)?;
    let bytes = password.expose().as_bytes().to_vec();
    tokio::task::spawn_blocking(move || hash_blocking(&bytes))
        .await
        .map_err(|e| Error::Internal(format!("password hashing task failed: {e}")))?
}

/// What a login proves who it is with.
#[derive(Debug, Clone, Copy)]
pub enum Proof<'a> {
    /// The user's password.
    Password(&'a Password),
    /// A public key, by its SHA256 fingerprint, whose signature the caller
    /// verified.
    Key {
        /// `SHA256:...`, as [`crate::keys::fingerprint`] gives it.
        fingerprint: &'a str,
    },
}

/// Checks logins; cheap to clone.
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    standings: crate::standing::Standings,
    sessions: crate::sessions::Sessions,
    config: AuthConfig,
    pool: HashPool,
    dummy_hash: String,
    /// Names under attack, each behind its own lock: attempts on one of
    /// them run one at a time in this process.
    names: std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// argon2 memory above this (in 1 KiB blocks) is refused in a stored hash:
/// 256 MiB per computation.
const MAX_BLOCKS: usize = 256 * 1024;

/// A worker's argon2 memory is kept from one job to the next, and given
/// back once no job came for this long (a burst of logins is over).
const KEEP_IDLE: Duration = Duration::from_secs(1);

/// Returns freed heap memory to the system: glibc keeps a freed buffer
/// of argon2's size in its heap otherwise, resident for good.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn give_back_freed_memory() {
    // SAFETY: malloc_trim only releases free pages of the allocator's own
    // heaps; it takes the allocator's locks and touches no live memory.
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn give_back_freed_memory() {}

/// A job gets its worker's argon2 memory, kept from one job to the next.
type Job = Box<dyn FnOnce(&mut Vec<Block>) + Send>;

/// A fixed set of argon2 worker threads, one per permit, each owning one
/// argon2 memory buffer that it reuses for every verification.
///
/// Two measured reasons not to use tokio's blocking pool and argon2's own
/// allocation: the blocking pool starts a fresh thread whenever a permit
/// frees up before the previous thread is idle again, each with its own
/// malloc arena; and argon2 allocates its 64-byte-aligned ~19 MiB per call,
/// which glibc 2.36 does not reuse once freed. 200 concurrent logins grew
/// peak memory by 705 MiB that way; with reused buffers the growth is the
/// workers' buffers alone, and those go back once the burst is over
/// ([`KEEP_IDLE`]).
struct HashPool {
    permits: Semaphore,
    jobs: std::sync::Mutex<std::sync::mpsc::Sender<Job>>,
}

impl HashPool {
    fn new(workers: usize) -> Result<HashPool> {
        let workers = workers.max(1);
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let rx = Arc::new(std::sync::Mutex::new(rx));
        for i in 0..workers {
            let rx = Arc::clone(&rx);
            std::thread::Builder::new()
                .name(format!("wharf-argon2-{i}"))
                .spawn(move || {
                    let mut memory = Vec::new();
                    loop {
                        // The lock is held only while waiting for the next
                        // job, at most KEEP_IDLE, so that every worker gets
                        // to see it is idle.
                        let job = match rx.lock() {
                            Ok(rx) => rx.recv_timeout(KEEP_IDLE),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(&mut memory),
                            Err(RecvTimeoutError::Timeout) => {
                                if !memory.is_empty() {
                                    memory = Vec::new();
                                    give_back_freed_memory();
                                }
                                std::thread::yield_now();
                            }
                            // Every sender is gone: shut down.
                            Err(RecvTimeoutError::Disconnected) => return,
                        }
                    }
                })
                .map_err(|e| {
                    Error::Internal(format!("cannot start an argon2 worker thread: {e}"))
                })?;
        }
        Ok(HashPool {
            permits: Semaphore::new(workers),
            jobs: std::sync::Mutex::new(tx),
        })
    }

    /// Runs `work` on a worker once one is free; waiting does not block the
    /// runtime, and at most one job per worker is ever queued.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Vec<Block>) -> T + Send + 'static,
    ) -> Result<T> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| Error::Internal("password hashing is shut down".into()))?;
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |memory| {
            let _ = done.send(work(memory));
        });
        self.jobs
            .lock()
            .map_err(|_| Error::Internal("password hashing queue is poisoned".into()))?
            .send(job)
            .map_err(|_| Error::Internal("password hashing workers are gone".into()))?;
        result
            .await
            .map_err(|_| Error::Internal("a password hashing job panicked".into()))
    }
}

/// Checks `password` against a PHC string, computing in `memory` (grown to
/// the hash's memory cost if needed). The comparison is constant-time.
fn verify_blocking(memory: &mut Vec<Block>, password: &[u8], phc: &str) -> Result<bool> {
    let unusable = |what: &dyn std::fmt::Display| {
        Error::Internal(format!("stored password hash is unusable: {what}"))
    };
    let hash = PasswordHash::new(phc).map_err(|e| unusable(&e))?;
    let algorithm = Algorithm::try_from(hash.algorithm.as_str()).map_err(|e| unusable(&e))?;
    let version = match hash.version {
        Some(v) => Version::try_from(v).map_err(|e| unusable(&e))?,
        None => Version::default(),
    };
    let params = Params::try_from(&hash).map_err(|e| unusable(&e))?;
    let (Some(salt), Some(expected)) = (&hash.salt, &hash.hash) else {
        return Err(unusable(&"it has no salt or no hash"));
    };
    let blocks = params.block_count();
    if blocks > MAX_BLOCKS {
        return Err(unusable(&"its memory cost is over 256 MiB"));
    }
    if memory.len() < blocks {
        memory.resize(blocks, Block::default());
    }
    let mut out = vec![0u8; expected.len()];
    Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password, salt.as_ref(), &mut out, &mut memory[..blocks])
        .map_err(|e| unusable(&e))?;
    let computed = Output::new(&out).map_err(|e| unusable(&e))?;
    Ok(computed == *expected)
}

fn hash_blocking(password: &[u8]) -> Result<String> {
    let hash: PasswordHash = Argon2::default()
        .hash_password(password)
        .map_err(|e| Error::Internal(format!("argon2 hashing failed: {e}")))?;
    Ok(hash.to_string())
}

impl Authenticator {
    /// An authenticator over `store` with `config`.
    pub async fn new(store: Store, config: AuthConfig) -> Result<Self> {
        let pool = HashPool::new(config.verify_concurrency)?;
        // A hash no real password is checked against, for unknown users.
        let dummy_hash = pool
            .run(|_| hash_blocking(b"wharf: no such user"))
            .await??;
        Ok(Authenticator {
            inner: Arc::new(Inner {
                standings: crate::standing::Standings::new(store.clone()),
                sessions: crate::sessions::Sessions::new(store.clone(), config.user_limits),
                store,
                config,
                pool,
                dummy_hash,
                names: std::sync::Mutex::new(std::collections::HashMap::new()),
            }),
        })
    }

    /// The watch that tells open sessions what the administrator changed.
    pub fn standings(&self) -> &crate::standing::Standings {
        &self.inner.standings
    }

    /// The sessions open in this process, and their users' rates.
    pub fn sessions(&self) -> &crate::sessions::Sessions {
        &self.inner.sessions
    }

    /// The database.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    async fn verify(&self, hash: String, password: &Password) -> Result<bool> {
        let bytes = password.expose().as_bytes().to_vec();
        let queued = std::time::Instant::now();
        self.inner
            .pool
            .run(move |memory| {
                crate::metrics::metrics()
                    .argon2_wait
                    .observe(queued.elapsed().as_secs_f64());
                verify_blocking(memory, &bytes, &hash)
            })
            .await?
    }

    /// How long `source` must still wait, if it is in penalty.
    async fn source_penalty(&self, source: &str, now: i64) -> Result<Option<Duration>> {
        let cfg = &self.inner.config;
        let max = cfg.source_max_failures.max(1) as usize;
        let failures = self
            .inner
            .store
            .source_failures_since(source, now - duration_ms(FAILURE_MEMORY))
            .await?;
        let window = duration_ms(cfg.source_window);
        let recent = failures.iter().filter(|&&at| at >= now - window).count();
        if recent < max {
            return Ok(None);
        }
        // The first burst waits one window, each further one twice as long.
        let bursts = failures.len() / max;
        let doublings = u32::try_from(bursts.saturating_sub(1))
            .unwrap_or(u32::MAX)
            .min(20);
        let penalty = cfg
            .source_window
            .saturating_mul(1 << doublings)
            .min(cfg.source_max_penalty.max(cfg.source_window));
        let last = failures.last().copied().unwrap_or(now);
        let until = last + duration_ms(penalty);
        // Whole seconds, rounded up: what a person is told to wait.
        let wait_secs = u64::try_from(until - now)
            .unwrap_or(0)
            .div_ceil(1000)
            .max(1);
        Ok((until > now).then(|| Duration::from_secs(wait_secs)))
    }

    /// The delay an attempt on `name` waits now: none below
    /// `name_delay_after` recent failures, then growing.
    pub async fn name_delay(&self, name: &str) -> Result<Duration> {
        let slowdown = self
            .inner
            .config
            .name_slowdown(&self.inner.store, name)
            .await?;
        Ok(slowdown.delay)
    }

    /// The lock attempts on `name` take in turn.
    fn name_lock(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut names = self.inner.names.lock().unwrap_or_else(|p| p.into_inner());
        // Forget names nobody is trying any more.
        if names.len() > 1024 {
            names.retain(|_, lock| Arc::strong_count(lock) > 1);
        }
        Arc::clone(names.entry(name.to_owned()).or_default())
    }

    /// Checks `name` and `password` for `service`, tried from `source`.
    ///
    /// In order: a source in penalty is refused (`RateLimited`, with the
    /// wait) without argon2 work; attempts on a name under attack wait
    /// their turn and a growing delay; the password is verified (against a
    /// dummy hash for unknown names); a failure is recorded against the
    /// name and the source and reported as `AuthFailed` whether the name
    /// exists or not; only then are an administrator's lock and the service
    /// right checked, so they are revealed only to someone who knows the
    /// password. Success forgets that source's failures on the name and
    /// records the login.
    pub async fn authenticate(
        &self,
        name: &str,
        password: &Password,
        service: Service,
        source: std::net::IpAddr,
    ) -> Result<(User, crate::sessions::SessionLease)> {
        self.authenticate_with(
            name,
            Proof::Password(password),
            service.as_str(),
            &[service],
            source,
        )
        .await
    }

    /// [`Authenticator::authenticate`] with either proof: a password, or
    /// a public key whose signature the caller verified (the SSH door). A
    /// key meets the same rules as a password (the source's penalty, the
    /// lock, the service right, the sessions at once); a key the user does
    /// not have is refused as a wrong password is, but is not counted as a
    /// failed login: clients offer every key they hold in turn, and a key
    /// cannot be guessed.
    ///
    /// `door` names the way in for the metrics (`ftp`, `ssh`); the user
    /// needs one of `services` (the SSH door: ftp for SFTP, exec for
    /// commands), and the session is counted under the first they have.
    pub async fn authenticate_with(
        &self,
        name: &str,
        proof: Proof<'_>,
        door: &str,
        services: &[Service],
        source: std::net::IpAddr,
    ) -> Result<(User, crate::sessions::SessionLease)> {
        let result = match self.check_login(name, proof, services, source).await {
            Ok(user) => {
                let counted = services
                    .iter()
                    .copied()
                    .find(|s| user.services.contains(*s))
                    .unwrap_or(Service::Ftp);
                match self.inner.sessions.open(&user, counted).await {
                    Ok(lease) => Ok((user, lease)),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        let outcome = match &result {
            Ok(_) => "ok",
            Err(Error::AuthFailed) => "wrong_password",
            Err(Error::RateLimited { .. }) => "rate_limited",
            Err(Error::AccountLocked(_)) => "locked",
            Err(Error::NotPermitted { .. }) => "not_permitted",
            Err(Error::TooManySessions { .. }) => "too_many_sessions",
            Err(_) => "error",
        };
        crate::metrics::metrics()
            .logins
            .get_or_create(&crate::metrics::svc_outcome(door, outcome))
            .inc();
        result
    }

    async fn check_login(
        &self,
        name: &str,
        proof: Proof<'_>,
        services: &[Service],
        source: std::net::IpAddr,
    ) -> Result<User> {
        let store = &self.inner.store;
        let source = source_key(source);
        if let Some(retry_after) = self.source_penalty(&source, now_ms()).await? {
            return Err(Error::RateLimited { retry_after });
        }
        if validate_user_name(name).is_err() {
            // No account can have this name: nothing to protect, nothing to record.
            return Err(Error::AuthFailed);
        }
        let password = match proof {
            Proof::Password(password) => password,
            Proof::Key { fingerprint } => {
                let user = store.user(name).await?.ok_or(Error::AuthFailed)?;
                if store.use_key(user.id, fingerprint).await?.is_none() {
                    return Err(Error::AuthFailed);
                }
                return self.admit(user, name, &source, services).await;
            }
        };
        // A name under attack: attempts on it take turns, each after the
        // delay (the turn is held through the verification below).
        let mut _turn = None;
        if !self.name_delay(name).await?.is_zero() {
            let lock = self.name_lock(name);
            _turn = Some(lock.lock_owned().await);
            // Read again: failures recorded while this attempt waited its
            // turn lengthen its delay too.
            tokio::time::sleep(self.name_delay(name).await?).await;
        }
        let user = store.user(name).await?;
        let hash = user.as_ref().map_or_else(
            || self.inner.dummy_hash.clone(),
            |u| u.password_hash.clone(),
        );
        let verified = self.verify(hash, password).await?;
        let now = now_ms();
        let user = match user {
            Some(user) if verified => user,
            _ => {
                let forget_before = now - duration_ms(FAILURE_MEMORY);
                store
                    .record_failure(name, &source, now, forget_before)
                    .await?;
                return Err(Error::AuthFailed);
            }
        };
        self.admit(user, name, &source, services).await
    }

    /// A user whose proof held: in, unless locked or without any of the
    /// rights `services`.
    async fn admit(
        &self,
        user: User,
        name: &str,
        source: &str,
        services: &[Service],
    ) -> Result<User> {
        let store = &self.inner.store;
        if user.locked {
            return Err(Error::AccountLocked(user.name));
        }
        if !services.iter().any(|s| user.services.contains(*s)) {
            return Err(Error::NotPermitted {
                user: user.name,
                service: services.first().copied().unwrap_or(Service::Ftp),
            });
        }
        store.clear_failures_from(name, source).await?;
        store.record_login(user.id, now_ms()).await?;
        Ok(user)
    }

    /// Changes the password of `name`, logged in to `service` from
    /// `source`, from `old` to `new`. The old password is checked as a
    /// login is (a wrong one counts as a failed login, penalties and all):
    /// a session left open is not enough to take the account. The new one
    /// must meet the policy ([`check_new_password`]) and differ from the
    /// old.
    pub async fn change_password(
        &self,
        name: &str,
        old: &Password,
        new: &Password,
        service: Service,
        source: std::net::IpAddr,
    ) -> Result<()> {
        check_new_password(new)?;
        if old.expose() == new.expose() {
            return Err(Error::WeakPassword("it is the same as the old one"));
        }
        let user = self
            .check_login(name, Proof::Password(old), &[service], source)
            .await?;
        let hash = hash_password(new).await?;
        self.inner
            .store
            .set_password_hash(&user.name, &hash)
            .await?;
        tracing::info!(user = %user.name, %service, "password changed by its user");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash_with(params: Params, password: &[u8]) -> String {
        let hash: Option<PasswordHash> = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password(password)
            .ok();
        hash.map(|h| h.to_string()).unwrap_or_default()
    }

    #[test]
    fn one_reused_buffer_verifies_hashes_of_any_cost() -> Result<()> {
        let small = Params::new(1024, 1, 1, None).map_err(|e| Error::Internal(e.to_string()))?;
        let hashes = [
            hash_with(Params::default(), b"first password"),
            hash_with(small, b"second password"),
            hash_with(Params::default(), b"first password"),
        ];
        let mut memory = Vec::new();
        for _ in 0..2 {
            assert!(verify_blocking(&mut memory, b"first password", &hashes[0])?);
            assert!(!verify_blocking(
                &mut memory,
                b"first passworD",
                &hashes[0]
            )?);
            assert!(verify_blocking(
                &mut memory,
                b"second password",
                &hashes[1]
            )?);
            assert!(!verify_blocking(
                &mut memory,
                b"first password",
                &hashes[1]
            )?);
            assert!(verify_blocking(&mut memory, b"first password", &hashes[2])?);
        }
        assert_eq!(memory.len(), Params::default().block_count());
        Ok(())
    }

    /// A burst's argon2 memory is kept while jobs come, and given back by
    /// every worker once they stop coming.
    #[tokio::test]
    async fn the_workers_give_their_memory_back_once_idle() -> Result<()> {
        let pool = HashPool::new(2)?;
        let hash = hash_with(Params::default(), b"a password");
        let blocks = Params::default().block_count();
        // Both workers busy at once: each grows its own buffer.
        let (a, b) = tokio::join!(
            pool.run({
                let hash = hash.clone();
                move |m| verify_blocking(m, b"a password", &hash).map(|ok| (ok, m.len()))
            }),
            pool.run({
                let hash = hash.clone();
                move |m| verify_blocking(m, b"a password", &hash).map(|ok| (ok, m.len()))
            }),
        );
        assert_eq!((a??, b??), ((true, blocks), (true, blocks)));
        // Right after, the next job finds a buffer ready.
        assert_eq!(pool.run(|m| m.len()).await?, blocks);
        tokio::time::sleep(KEEP_IDLE * 3).await;
        let (a, b) = tokio::join!(
            pool.run(|m| {
                std::thread::sleep(Duration::from_millis(100));
                m.len()
            }),
            pool.run(|m| {
                std::thread::sleep(Duration::from_millis(100));
                m.len()
            }),
        );
        assert_eq!(
            (a?, b?),
            (0, 0),
            "idle, both workers gave their memory back"
        );
        Ok(())
    }

    #[test]
    fn a_name_is_slowed_past_five_failures_until_the_sixth_newest_ages_out() {
        let cfg = AuthConfig::default();
        let window = duration_ms(cfg.failure_window);
        let at: Vec<i64> = (0..8).map(|i| 1_000_000 + i * 1000).collect();
        let none = cfg.slowdown_of(&at[..5]);
        assert_eq!(
            (none.failures, none.delay, none.until),
            (5, Duration::ZERO, None)
        );
        let six = cfg.slowdown_of(&at[..6]);
        assert_eq!(six.delay, Duration::from_millis(100));
        assert_eq!(six.until, Some(at[0] + window));
        let eight = cfg.slowdown_of(&at);
        assert_eq!(eight.delay, Duration::from_millis(400));
        // Three must age out to leave five.
        assert_eq!(eight.until, Some(at[2] + window));
        let many: Vec<i64> = (0..40).collect();
        assert_eq!(cfg.slowdown_of(&many).delay, cfg.name_delay_max);
    }

    #[test]
    fn corrupt_stored_hashes_are_errors_not_mismatches() {
        let mut memory = Vec::new();
        for bad in [
            "",
            "plaintext",
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA",
            "$argon2id$v=19$m=999999999,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo",
        ] {
            assert!(
                matches!(
                    verify_blocking(&mut memory, b"x", bad),
                    Err(Error::Internal(_))
                ),
                "{bad}"
            );
        }
    }
}
