//! What the administrator decided about a user, as open sessions see it.
//!
//! `admin-cli` is another process: a lock, a deletion, a revoked right, a
//! lowered quota or a moved home reaches the servers only through the database. One task per
//! process reads the users of every open session twice a second and tells
//! each session whose user changed, so the administrator's word holds
//! within a second everywhere (one `wharfd`, separate daemons, or several
//! on one database), at the cost of one small query per half second.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::db::{Store, User};
use crate::error::Error;
use wharf_core::service::{Service, ServiceSet};

/// How often the users of open sessions are read again.
pub const POLL: Duration = Duration::from_millis(500);

/// A user's standing: what decides whether a session may go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standing {
    /// The user's name.
    pub name: String,
    /// False once the user is deleted.
    pub exists: bool,
    /// Locked by an administrator.
    pub locked: bool,
    /// The services the user may use.
    pub services: ServiceSet,
    /// The home directory.
    pub home: PathBuf,
    /// The quota, if any.
    pub quota: Option<u64>,
    /// The file quota, if any.
    pub quota_files: Option<u64>,
    /// Bytes the home's files take, as last counted.
    pub used: u64,
    /// Bytes reserved by uploads under way or interrupted.
    pub reserved: u64,
}

impl Standing {
    fn of(user: &User) -> Standing {
        Standing {
            name: user.name.clone(),
            exists: true,
            locked: user.locked,
            services: user.services,
            home: user.home.clone(),
            quota: user.quota_bytes,
            quota_files: user.quota_files,
            used: user.used_bytes,
            reserved: user.reserved_bytes,
        }
    }

    /// Why a session of `service` must end now, if it must.
    pub fn refusal(&self, service: Service) -> Option<Error> {
        if !self.exists {
            return Some(Error::AccountRemoved(self.name.clone()));
        }
        if self.locked {
            return Some(Error::AccountLocked(self.name.clone()));
        }
        if !self.services.contains(service) {
            return Some(Error::NotPermitted {
                user: self.name.clone(),
                service,
            });
        }
        None
    }
}

/// The watch over the users of open sessions; cheap to clone.
#[derive(Clone)]
pub struct Standings {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    watched: Mutex<HashMap<i64, Watched>>,
    started: Once,
}

/// One watched user: the channel, and when its view was last set from a
/// user read by a login (a poll that began before then must not put an
/// older view over it).
struct Watched {
    tx: watch::Sender<Standing>,
    fresh_at: Instant,
}

impl std::fmt::Debug for Standings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Standings").finish_non_exhaustive()
    }
}

impl Standings {
    /// A watch over the users of `store`.
    pub fn new(store: Store) -> Standings {
        Standings {
            inner: Arc::new(Inner {
                store,
                watched: Mutex::new(HashMap::new()),
                started: Once::new(),
            }),
        }
    }

    /// `user`'s standing from now on; the receiver sees every change within
    /// [`POLL`] and a bit. Starts the polling task at the first call.
    ///
    /// `user` was just read by a login, so it is the newest word there is:
    /// it replaces the view other sessions of the same user share (an
    /// unlock is seen by the very next login, and by them), and a poll that
    /// began before it cannot put an older view back.
    pub fn watch(&self, user: &User) -> watch::Receiver<Standing> {
        self.inner.started.call_once(|| {
            tokio::spawn(poll_forever(Arc::downgrade(&self.inner)));
        });
        let fresh = Standing::of(user);
        let mut watched = self.inner.watched.lock().unwrap_or_else(|p| p.into_inner());
        let entry = watched.entry(user.id).or_insert_with(|| Watched {
            tx: watch::channel(fresh.clone()).0,
            fresh_at: Instant::now(),
        });
        entry.fresh_at = Instant::now();
        entry.tx.send_if_modified(|now| {
            let changed = *now != fresh;
            *now = fresh;
            changed
        });
        entry.tx.subscribe()
    }
}

async fn poll_forever(inner: std::sync::Weak<Inner>) {
    loop {
        tokio::time::sleep(POLL).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let began = Instant::now();
        let ids: Vec<i64> = {
            let mut watched = inner.watched.lock().unwrap_or_else(|p| p.into_inner());
            watched.retain(|_, w| w.tx.receiver_count() > 0);
            watched.keys().copied().collect()
        };
        if ids.is_empty() {
            continue;
        }
        let users = match inner.store.list_users().await {
            Ok(users) => users,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the users of open sessions; retrying");
                continue;
            }
        };
        let by_id: HashMap<i64, &User> = users.iter().map(|u| (u.id, u)).collect();
        let watched = inner.watched.lock().unwrap_or_else(|p| p.into_inner());
        for id in ids {
            let Some(w) = watched.get(&id) else {
                continue;
            };
            if w.fresh_at >= began {
                // A login read the user after this poll did.
                continue;
            }
            w.tx.send_if_modified(|now| {
                let next = match by_id.get(&id) {
                    Some(user) => Standing::of(user),
                    None => Standing {
                        exists: false,
                        ..now.clone()
                    },
                };
                let changed = *now != next;
                *now = next;
                changed
            });
        }
    }
}

/// Resolves with the reason once `standing` no longer lets a session of
/// `service` go on, or, given the `home` the session works in, once an
/// administrator moved the home elsewhere; never resolves without a
/// standing (before login).
pub async fn ended(
    standing: &mut Option<watch::Receiver<Standing>>,
    service: Service,
    home: Option<&std::path::Path>,
) -> Error {
    let Some(rx) = standing else {
        return std::future::pending().await;
    };
    loop {
        {
            let now = rx.borrow_and_update();
            if let Some(why) = now.refusal(service) {
                return why;
            }
            if home.is_some_and(|h| h != now.home) {
                return Error::HomeMoved(now.name.clone());
            }
        }
        if rx.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// Resolves once an administrator lowered the quota below `from` (the
/// quota when the caller's work began; `None` is unlimited) and the home
/// (files and reservations) no longer fits under the new one, allowing
/// `slack` bytes over it (the size of a file an upload replaces); returns
/// the new quota. Never resolves without a standing.
pub async fn quota_lowered(
    standing: &mut Option<watch::Receiver<Standing>>,
    from: Option<u64>,
    slack: u64,
) -> u64 {
    let Some(rx) = standing else {
        return std::future::pending().await;
    };
    loop {
        {
            let now = rx.borrow_and_update();
            if let Some(quota) = now.quota
                && from.is_none_or(|from| quota < from)
                && now.used.saturating_add(now.reserved) > quota.saturating_add(slack)
            {
                return quota;
            }
        }
        if rx.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// The quota `standing` holds now, or `fallback` without a standing.
pub fn quota_now(
    standing: &Option<watch::Receiver<Standing>>,
    fallback: Option<u64>,
) -> Option<u64> {
    standing.as_ref().map_or(fallback, |rx| rx.borrow().quota)
}

/// The byte and file quotas `standing` holds now, or `fallback` without a
/// standing.
pub fn quotas_now(
    standing: &Option<watch::Receiver<Standing>>,
    fallback: (Option<u64>, Option<u64>),
) -> (Option<u64>, Option<u64>) {
    standing.as_ref().map_or(fallback, |rx| {
        let now = rx.borrow();
        (now.quota, now.quota_files)
    })
}
