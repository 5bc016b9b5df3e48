//! The sessions open now, over every service and process on the database,
//! for the per-user `max_sessions`. Each process beats; the sessions of a
//! process that stopped beating (killed, crashed) stop counting.

use sqlx::Row;

use super::{Backend, Store, to_u64};
use crate::error::{Error, Result};
use wharf_core::time::now_ms;

/// How long a process's sessions count after its last beat.
pub const PROCESS_STALE_MS: i64 = 30_000;

impl Store {
    /// Records that `process` is alive (and forgets processes that are not,
    /// with their sessions).
    pub async fn beat_process(&self, process: &str) -> Result<()> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO processes (id, beat_at) VALUES ($1, $2) \
             ON CONFLICT (id) DO UPDATE SET beat_at = excluded.beat_at",
        )
        .bind(process)
        .bind(now)
        .execute(&self.pool)
        .await?;
        let stale = now - 2 * PROCESS_STALE_MS;
        sqlx::query(
            "DELETE FROM live_sessions WHERE process IN \
             (SELECT id FROM processes WHERE beat_at < $1)",
        )
        .bind(stale)
        .execute(&self.pool)
        .await?;
        sqlx::query("DELETE FROM processes WHERE beat_at < $1")
            .bind(stale)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// `process` stops: its sessions no longer count.
    pub async fn end_process(&self, process: &str) -> Result<()> {
        sqlx::query("DELETE FROM live_sessions WHERE process = $1")
            .bind(process)
            .execute(&self.pool)
            .await?;
        sqlx::query("DELETE FROM processes WHERE id = $1")
            .bind(process)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Opens a session of `service` for the user, unless `max` of theirs are
    /// open already (`TooManySessions`); returns the session's id.
    pub async fn open_session(
        &self,
        user: (i64, &str),
        service: &str,
        process: &str,
        max: Option<u64>,
    ) -> Result<i64> {
        let (user_id, name) = user;
        let mut tx = self.pool.begin().await?;
        if self.backend == Backend::Postgres {
            // One login of the user at a time past this point, so two at
            // once cannot both see room for one more.
            sqlx::query("SELECT id FROM users WHERE id = $1 FOR UPDATE")
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
        }
        let now = now_ms();
        let row = sqlx::query(
            "INSERT INTO live_sessions (user_id, service, process, opened_at) \
             SELECT $1, $2, $3, $4 WHERE \
             (SELECT COUNT(*) FROM live_sessions s JOIN processes p ON p.id = s.process \
              WHERE s.user_id = $5 AND p.beat_at >= $6) < $7 \
             RETURNING id",
        )
        .bind(user_id)
        .bind(service)
        .bind(process)
        .bind(now)
        .bind(user_id)
        .bind(now - PROCESS_STALE_MS)
        .bind(max.map_or(i64::MAX, super::to_i64))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            drop(tx);
            let open = self.open_sessions(user_id).await?;
            return Err(Error::TooManySessions {
                user: name.to_owned(),
                open,
                max: max.unwrap_or(0),
            });
        };
        tx.commit().await?;
        Ok(row.try_get("id")?)
    }

    /// A session ended.
    pub async fn close_session(&self, id: i64) -> Result<()> {
        sqlx::query("DELETE FROM live_sessions WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The user's sessions open now, over every service and live process.
    pub async fn open_sessions(&self, user_id: i64) -> Result<u64> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM live_sessions s JOIN processes p ON p.id = s.process \
             WHERE s.user_id = $1 AND p.beat_at >= $2",
        )
        .bind(user_id)
        .bind(now_ms() - PROCESS_STALE_MS)
        .fetch_one(&self.pool)
        .await?;
        Ok(to_u64(row.try_get("n")?))
    }
}
