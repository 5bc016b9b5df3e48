//! What a login opens: a session that counts against the user's
//! `max_sessions` over every service and process on the database, and the
//! user's transfer rates, shared by all their sessions in this process.
//!
//! Every door logs in through [`crate::Authenticator::authenticate`], which
//! opens the session here, so the rule holds for every protocol at once.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::OnceCell;

use crate::db::{Store, User, UserLimits};
use crate::error::Result;
use wharf_core::rate::Limiter;
use wharf_core::service::Service;

/// How often this process says it is alive, and reads the limits of the
/// users whose transfers it paces (an administrator's change holds within
/// about this long).
const BEAT: Duration = Duration::from_secs(2);

/// A user's rates in this process.
#[derive(Debug, Clone)]
pub struct Rates {
    /// Uploads, over all the user's sessions here.
    pub up: Arc<Limiter>,
    /// Downloads, over all the user's sessions here.
    pub down: Arc<Limiter>,
}

impl Rates {
    /// No limit either way (a session without a login, a test).
    pub fn unlimited() -> Rates {
        Rates {
            up: Limiter::new(None),
            down: Limiter::new(None),
        }
    }
}

/// The open sessions of this process's users.
pub struct Sessions {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    /// This process, among those on the database.
    process: String,
    defaults: UserLimits,
    beating: OnceCell<()>,
    rates: Mutex<HashMap<i64, LiveRates>>,
}

/// A user's limiters, up and down, while a session holds them.
type LiveRates = (Weak<Limiter>, Weak<Limiter>);

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("process", &self.inner.process)
            .field("defaults", &self.inner.defaults)
            .finish_non_exhaustive()
    }
}

/// An open session: counted until dropped.
#[derive(Debug)]
pub struct SessionLease {
    store: Store,
    id: i64,
    rates: Rates,
}

impl SessionLease {
    /// The user's rates.
    pub fn rates(&self) -> &Rates {
        &self.rates
    }
}

impl Drop for SessionLease {
    fn drop(&mut self) {
        let (store, id) = (self.store.clone(), self.id);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = store.close_session(id).await {
                    tracing::warn!(error = %e, "cannot record a session's end; it stops counting once this process stops");
                }
            });
        }
    }
}

impl Sessions {
    /// Sessions on `store`, with `defaults` for users who have no limit of
    /// their own.
    pub fn new(store: Store, defaults: UserLimits) -> Sessions {
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        Sessions {
            inner: Arc::new(Inner {
                store,
                process: format!("{}-{random:016x}", std::process::id()),
                defaults,
                beating: OnceCell::new(),
                rates: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The process stops: its sessions stop counting now, not once its
    /// beat is 30 s old (a restart would otherwise find its users' places
    /// still taken).
    pub async fn end(&self) {
        if self.inner.beating.initialized()
            && let Err(e) = self.inner.store.end_process(&self.inner.process).await
        {
            tracing::warn!(error = %e, "cannot record that this process stopped; its sessions stop counting in 30 s");
        }
    }

    /// The limits that hold for `user`: theirs, else the defaults.
    pub fn limits_of(&self, user: &User) -> UserLimits {
        user.limits.or(self.inner.defaults)
    }

    /// Opens a session of `service` for `user` (just read by its login),
    /// or `TooManySessions`.
    pub async fn open(&self, user: &User, service: Service) -> Result<SessionLease> {
        self.inner
            .beating
            .get_or_try_init(|| async {
                self.inner.store.beat_process(&self.inner.process).await?;
                tokio::spawn(beat_forever(Arc::downgrade(&self.inner)));
                Ok::<_, crate::Error>(())
            })
            .await?;
        let limits = self.limits_of(user);
        let id = self
            .inner
            .store
            .open_session(
                (user.id, &user.name),
                service.as_str(),
                &self.inner.process,
                limits.max_sessions,
            )
            .await?;
        Ok(SessionLease {
            store: self.inner.store.clone(),
            id,
            rates: self.rates(user),
        })
    }

    /// `user`'s rates in this process, as the user just read has them.
    pub fn rates(&self, user: &User) -> Rates {
        let limits = self.limits_of(user);
        let mut rates = self.inner.rates.lock().unwrap_or_else(|p| p.into_inner());
        if rates.len() > 1024 {
            rates.retain(|_, (up, down)| up.strong_count() + down.strong_count() > 0);
        }
        let (up, down) = rates
            .entry(user.id)
            .or_insert_with(|| (Weak::new(), Weak::new()));
        let up = live(up, limits.upload_rate);
        let down = live(down, limits.download_rate);
        Rates { up, down }
    }
}

/// The limiter behind `slot`, at `rate` now; a new one if none is alive.
fn live(slot: &mut Weak<Limiter>, rate: Option<u64>) -> Arc<Limiter> {
    match slot.upgrade() {
        Some(l) => {
            if l.rate() != rate {
                l.set_rate(rate);
            }
            l
        }
        None => {
            let l = Limiter::new(rate);
            *slot = Arc::downgrade(&l);
            l
        }
    }
}

/// Beats for the process, and brings the rates of users with transfers here
/// up to date, until the sessions are gone.
async fn beat_forever(inner: Weak<Inner>) {
    loop {
        tokio::time::sleep(BEAT).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        if let Err(e) = inner.store.beat_process(&inner.process).await {
            tracing::warn!(error = %e, "cannot record that this process is alive; its sessions stop counting in 30 s unless the database answers again");
        }
        let ids: Vec<i64> = {
            let mut rates = inner.rates.lock().unwrap_or_else(|p| p.into_inner());
            rates.retain(|_, (up, down)| up.strong_count() + down.strong_count() > 0);
            rates.keys().copied().collect()
        };
        if ids.is_empty() {
            continue;
        }
        let users = match inner.store.list_users().await {
            Ok(users) => users,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read users' rates; keeping the ones in force");
                continue;
            }
        };
        let rates = inner.rates.lock().unwrap_or_else(|p| p.into_inner());
        for user in users.iter().filter(|u| ids.contains(&u.id)) {
            let limits = user.limits.or(inner.defaults);
            if let Some((up, down)) = rates.get(&user.id) {
                for (slot, rate) in [(up, limits.upload_rate), (down, limits.download_rate)] {
                    if let Some(l) = slot.upgrade()
                        && l.rate() != rate
                    {
                        l.set_rate(rate);
                    }
                }
            }
        }
    }
}
