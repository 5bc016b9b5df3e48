//! Quota accounting. Every change is one conditional UPDATE, so concurrent
//! sessions (and several server processes on one database) can never push
//! used + reserved bytes past the quota: SQLite serialises writers, and the
//! condition is checked by the same statement that changes the numbers.

use sqlx::Row;

use super::usage::{TransferRecord, insert_transfer};
use super::{FileVersion, Store, to_i64, to_u64};
use crate::error::{Error, Result};

const COMMIT: &str = "UPDATE users SET reserved_bytes = MAX(reserved_bytes - ?1, 0), \
     used_bytes = MAX(used_bytes + ?2, 0), file_count = MAX(file_count + ?3, 0) \
     WHERE id = ?4";

impl Store {
    /// Reserves `bytes` for an upload, or fails with `QuotaExceeded` saying
    /// how much is free. Nothing changes on failure.
    pub async fn reserve(&self, user_id: i64, bytes: u64) -> Result<()> {
        self.reserve_replacing(user_id, bytes, 0).await
    }

    /// Reserves `bytes` for an upload that will replace a file of
    /// `replacing` bytes: only the growth must be free. The whole `bytes`
    /// is held (the old copy stays on disk until the new one takes its
    /// place), so while it runs the home may hold up to `replacing` bytes
    /// over the quota. Nothing changes on failure.
    pub async fn reserve_replacing(&self, user_id: i64, bytes: u64, replacing: u64) -> Result<()> {
        let done = sqlx::query(
            "UPDATE users SET reserved_bytes = reserved_bytes + ?1 \
             WHERE id = ?2 AND (quota_bytes IS NULL OR used_bytes + reserved_bytes + ?1 <= quota_bytes + ?3)",
        )
        .bind(to_i64(bytes))
        .bind(user_id)
        .bind(to_i64(replacing))
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 1 {
            return Ok(());
        }
        let row =
            sqlx::query("SELECT quota_bytes, used_bytes, reserved_bytes FROM users WHERE id = ?1")
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await?
                .ok_or_else(|| Error::NoSuchUser(format!("#{user_id}")))?;
        let quota = to_u64(
            row.try_get::<Option<i64>, _>("quota_bytes")?
                .unwrap_or(i64::MAX),
        );
        let taken = to_u64(row.try_get("used_bytes")?) + to_u64(row.try_get("reserved_bytes")?);
        Err(Error::QuotaExceeded {
            needed: bytes.saturating_sub(replacing),
            free: quota.saturating_sub(taken),
            quota,
        })
    }

    /// Gives back reserved bytes that will not be used (failed upload).
    pub async fn release(&self, user_id: i64, bytes: u64) -> Result<()> {
        sqlx::query("UPDATE users SET reserved_bytes = MAX(reserved_bytes - ?1, 0) WHERE id = ?2")
            .bind(to_i64(bytes))
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Turns a reservation into usage in one statement: `reserved` bytes
    /// leave the reservation, `added_bytes` and `added_files` (negative when
    /// an upload replaced a larger file) change what is stored.
    pub async fn commit(
        &self,
        user_id: i64,
        reserved: u64,
        added_bytes: i64,
        added_files: i64,
    ) -> Result<()> {
        sqlx::query(COMMIT)
            .bind(to_i64(reserved))
            .bind(added_bytes)
            .bind(added_files)
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// [`Store::commit`] and [`Store::record_transfer`] of a finished upload,
    /// with the md5 of the stored `version` of the file (the record's), in
    /// one transaction: one round trip to the database per upload.
    pub async fn commit_upload(
        &self,
        reserved: u64,
        added_bytes: i64,
        added_files: i64,
        record: &TransferRecord,
        version: Option<&FileVersion>,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(COMMIT)
            .bind(to_i64(reserved))
            .bind(added_bytes)
            .bind(added_files)
            .bind(record.user_id)
            .execute(&mut *tx)
            .await?;
        insert_transfer(record).execute(&mut *tx).await?;
        if let (Some(version), Some(md5)) = (version, &record.md5) {
            super::digests::remember(record.user_id, version, md5)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Frees stored bytes (a file was removed).
    pub async fn free(&self, user_id: i64, bytes: u64, files: u64) -> Result<()> {
        self.commit(user_id, 0, -to_i64(bytes), -to_i64(files))
            .await
    }
}
