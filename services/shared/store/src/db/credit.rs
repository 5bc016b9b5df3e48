//! Quota held ahead for small uploads. A tree of small files costs one
//! conditional reservation per file, a trip to the database each, more
//! than storing a 4 KiB file. A small reservation through [`Store::reserve`]
//! therefore holds a little more on the books than it needs ([`AHEAD_BYTES`]
//! and [`AHEAD_FILES`], when that fits under the quotas), and the next
//! small reservations of the same user in this process are taken from
//! what is held, in memory.
//!
//! The books stay strict: what is held ahead is reserved in the database
//! by the same conditional statement as any reservation, so no upload,
//! through any door or process, can ever be let in past a quota; at worst
//! another process sees a user's free space smaller by what this one
//! holds, for a moment. What is held goes back
//! - once it is idle for [`IDLE`] (a task runs while anything is held),
//! - at every read of a user's numbers through this store ([`Store::settle`],
//!   which the standing of open sessions does every half second), so every
//!   number read is exact,
//! - when a reservation of the user would be refused without it.
//!
//! A process killed outright leaves it reserved (stricter, never looser)
//! until `admin-cli usage --rescan` sets the books from the disk.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::Store;
use super::quota::Need;

/// Reservations of at most this many bytes are taken from what is held.
pub(super) const SMALL: u64 = 64 << 10;
/// Bytes held ahead by a small reservation made in the database.
pub(super) const AHEAD_BYTES: u64 = 1 << 20;
/// Entries held ahead by a small reservation made in the database.
pub(super) const AHEAD_FILES: u64 = 16;
/// What is held and unused for this long goes back.
const IDLE: Duration = Duration::from_millis(500);

/// What one user has held ahead.
#[derive(Debug, Clone, Copy)]
struct Held {
    bytes: u64,
    files: u64,
    used_at: Instant,
}

#[derive(Debug, Default)]
struct Books {
    held: HashMap<i64, Held>,
    /// The task giving back idle holdings runs.
    sweeping: bool,
}

/// What this process holds ahead, per user; shared by every clone of a
/// [`Store`].
#[derive(Debug, Default)]
pub(super) struct Credit {
    books: Mutex<Books>,
}

impl Credit {
    fn books(&self) -> std::sync::MutexGuard<'_, Books> {
        self.books.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes `need` from what `user_id` holds, if it is all there.
    pub(super) fn take(&self, user_id: i64, need: Need) -> bool {
        let mut books = self.books();
        let Some(held) = books.held.get_mut(&user_id) else {
            return false;
        };
        if held.bytes < need.bytes || held.files < need.files {
            return false;
        }
        held.bytes -= need.bytes;
        held.files -= need.files;
        held.used_at = Instant::now();
        true
    }

    /// Adds what was reserved ahead for `user_id`; true when the task that
    /// gives idle holdings back must be started.
    fn add(&self, user_id: i64, bytes: u64, files: u64) -> bool {
        let mut books = self.books();
        let held = books.held.entry(user_id).or_insert(Held {
            bytes: 0,
            files: 0,
            used_at: Instant::now(),
        });
        held.bytes += bytes;
        held.files += files;
        held.used_at = Instant::now();
        !std::mem::replace(&mut books.sweeping, true)
    }

    /// The bytes `user_id` holds.
    pub(super) fn held_bytes(&self, user_id: i64) -> u64 {
        self.books().held.get(&user_id).map_or(0, |h| h.bytes)
    }

    /// Removes and returns what `user_id` holds.
    fn remove(&self, user_id: i64) -> Option<(u64, u64)> {
        let held = self.books().held.remove(&user_id)?;
        Some((held.bytes, held.files))
    }

    /// Removes and returns what is held (all of it, or what was idle for
    /// [`IDLE`]), and whether nothing is left held; once the sweeping task
    /// finds nothing left, it is marked stopped.
    fn drain(&self, idle_only: bool) -> (Vec<(i64, u64, u64)>, bool) {
        let mut books = self.books();
        let now = Instant::now();
        let mut out = Vec::new();
        books.held.retain(|&id, held| {
            if idle_only && now.duration_since(held.used_at) < IDLE {
                return true;
            }
            out.push((id, held.bytes, held.files));
            false
        });
        let empty = books.held.is_empty();
        if idle_only && empty {
            books.sweeping = false;
        }
        (out, empty)
    }
}

impl Store {
    /// A small reservation made in the database: `need` and what is held
    /// ahead together, when that fits (nothing changes otherwise).
    pub(super) async fn reserve_ahead(
        &self,
        conn: &mut sqlx::AnyConnection,
        user_id: i64,
        need: Need,
    ) -> crate::error::Result<bool> {
        let ahead = Need {
            bytes: need.bytes + AHEAD_BYTES,
            files: need.files + AHEAD_FILES,
            ..need
        };
        if !super::quota::try_reserve_on(conn, user_id, ahead).await? {
            return Ok(false);
        }
        if self.credit.add(user_id, AHEAD_BYTES, AHEAD_FILES) {
            let store = self.clone();
            tokio::spawn(async move { store.sweep_credit().await });
        }
        Ok(true)
    }

    /// Gives back what `user_id` holds ahead; true when there was some.
    pub(super) async fn return_credit_of(
        &self,
        conn: &mut sqlx::AnyConnection,
        user_id: i64,
    ) -> crate::error::Result<bool> {
        let Some((bytes, files)) = self.credit.remove(user_id) else {
            return Ok(false);
        };
        super::quota::release_on(conn, user_id, bytes, files).await?;
        Ok(true)
    }

    /// Gives back what every user holds ahead (all of it, or what is idle).
    /// Returns whether anything is left held.
    pub(super) async fn return_credit(&self, idle_only: bool) -> bool {
        let (held, empty) = self.credit.drain(idle_only);
        if held.is_empty() {
            return !empty;
        }
        let given = async {
            let mut conn = self.pool.acquire().await?;
            for (user_id, bytes, files) in held {
                super::quota::release_on(&mut conn, user_id, bytes, files).await?;
            }
            Ok::<_, crate::error::Error>(())
        };
        if let Err(e) = given.await {
            tracing::warn!(error = %e, "cannot give back quota held ahead for small uploads (it stays reserved: admin-cli usage --rescan settles it)");
        }
        !empty
    }

    /// The task giving back idle holdings, while there are any.
    async fn sweep_credit(&self) {
        loop {
            tokio::time::sleep(IDLE).await;
            if !self.return_credit(true).await {
                return;
            }
        }
    }
}
