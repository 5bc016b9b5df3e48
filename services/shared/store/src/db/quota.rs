//! Quota accounting. Every change is one conditional UPDATE, so concurrent
//! sessions (and several server processes on one database) can never push
//! used + reserved bytes past the quota: SQLite serialises writers, and the
//! condition is checked by the same statement that changes the numbers.

use sqlx::Row;

use super::behind::Deferred;
use super::credit::SMALL;
use super::usage::TransferRecord;
use super::{FileVersion, Store, to_i64, to_u64};
use crate::error::{Error, Result};

const COMMIT: &str = "UPDATE users SET \
     reserved_bytes = CASE WHEN reserved_bytes > $1 THEN reserved_bytes - $1 ELSE 0 END, \
     used_bytes = CASE WHEN used_bytes + $2 > 0 THEN used_bytes + $2 ELSE 0 END, \
     file_count = CASE WHEN file_count + $3 > 0 THEN file_count + $3 ELSE 0 END, \
     reserved_files = CASE WHEN reserved_files > $5 THEN reserved_files - $5 ELSE 0 END \
     WHERE id = $4";

/// The most partial uploads (interrupted or under way) a user may hold at
/// once, whatever their quotas: each is an entry on disk, kept for a week.
pub const MAX_PARTIALS: u64 = 1000;

/// What a reservation asks for, and what it may count on: an upload that
/// replaces a file only needs its growth to be free.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Need {
    /// Bytes to hold.
    pub bytes: u64,
    /// Entries to hold: 1 for a new partial upload, 0 to grow one.
    pub files: u64,
    /// Bytes of the file the upload will replace, still on the books.
    pub replacing: u64,
    /// 1 when the upload replaces a file (which it then does not add).
    pub replacing_files: u64,
}

impl Need {
    /// A new partial upload of `bytes` (one entry), replacing nothing.
    pub fn upload(bytes: u64) -> Need {
        Need {
            bytes,
            files: 1,
            ..Need::default()
        }
    }

    /// A new partial upload of `bytes` that will take the place of a
    /// regular file of `replaced` bytes, if there is one.
    pub fn replacing(bytes: u64, replaced: Option<u64>) -> Need {
        Need {
            bytes,
            files: 1,
            replacing: replaced.unwrap_or(0),
            replacing_files: u64::from(replaced.is_some()),
        }
    }
}

impl Store {
    /// Reserves what `need` asks for, or fails with `QuotaExceeded` (bytes)
    /// or `FileQuotaExceeded` saying what is free, or with `HomeUnmeasured`
    /// while the home could not be measured. Nothing changes on failure.
    ///
    /// The whole size is held, also when a file is replaced (the old copy
    /// stays on disk until the new one takes its place), so while it runs
    /// the home may hold up to the replaced file's size over the quota.
    ///
    /// A small reservation of a new entry is taken from what this process
    /// holds ahead for the user, or holds more ahead (see [`super::credit`]).
    pub async fn reserve(&self, user_id: i64, need: Need) -> Result<()> {
        let small = need.replacing == 0 && need.replacing_files == 0 && need.bytes <= SMALL;
        if small && self.credit.take(user_id, need) {
            return Ok(());
        }
        let mut conn = self.pool.acquire().await?;
        if small && self.reserve_ahead(&mut conn, user_id, need).await? {
            return Ok(());
        }
        self.reserve_exact(&mut conn, user_id, need).await
    }

    /// The conditional reservation of `need` alone. What this process
    /// holds ahead for the user is never what refuses it: when it does
    /// not fit, that goes back first and it is tried again.
    async fn reserve_exact(
        &self,
        conn: &mut sqlx::AnyConnection,
        user_id: i64,
        need: Need,
    ) -> Result<()> {
        match reserve_on(conn, user_id, need).await {
            Err(
                e @ (Error::QuotaExceeded { .. }
                | Error::FileQuotaExceeded { .. }
                | Error::TooManyPartials { .. }),
            ) => {
                if self.return_credit_of(conn, user_id).await? {
                    reserve_on(conn, user_id, need).await
                } else {
                    Err(e)
                }
            }
            outcome => outcome,
        }
    }

    /// Reserves for several uploads of one user in one transaction;
    /// returns each one's outcome, in order (one that does not fit does not
    /// stop the others).
    pub async fn reserve_each(&self, user_id: i64, needs: &[Need]) -> Result<Vec<Result<()>>> {
        let mut tx = self.pool.begin().await?;
        let mut outcomes = Vec::with_capacity(needs.len());
        for &need in needs {
            match self.reserve_exact(&mut tx, user_id, need).await {
                Err(Error::Database(e)) => return Err(Error::Database(e)),
                outcome => outcomes.push(outcome),
            }
        }
        tx.commit().await?;
        Ok(outcomes)
    }

    /// Whether what the user holds (files and reservations, a resumed
    /// upload's among them) still fits under the quota, allowing `slack`
    /// bytes over it (a file the upload will replace): an administrator
    /// may have lowered the quota since the reservation was made. Fails
    /// with `QuotaLowered` when it does not.
    pub async fn still_fits(&self, user_id: i64, slack: u64) -> Result<()> {
        let row =
            sqlx::query("SELECT quota_bytes, used_bytes, reserved_bytes FROM users WHERE id = $1")
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await?
                .ok_or_else(|| Error::NoSuchUser(format!("#{user_id}")))?;
        let Some(quota) = row.try_get::<Option<i64>, _>("quota_bytes")?.map(to_u64) else {
            return Ok(());
        };
        // What this process holds ahead is no upload's.
        let ahead = self.credit.held_bytes(user_id);
        let taken = (to_u64(row.try_get("used_bytes")?) + to_u64(row.try_get("reserved_bytes")?))
            .saturating_sub(ahead);
        if taken > quota.saturating_add(slack) {
            return Err(Error::QuotaLowered { quota });
        }
        Ok(())
    }

    /// Gives back reserved bytes and entries that will not be used (a
    /// failed or discarded upload gives its entry back too; a partial
    /// that only shrinks keeps it).
    pub async fn release(&self, user_id: i64, bytes: u64, files: u64) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        release_on(&mut conn, user_id, bytes, files).await
    }

    /// Turns a reservation into usage in one statement: `reserved` bytes
    /// and `reserved_files` entries leave the reservation, `added_bytes`
    /// and `added_files` (negative when an upload replaced a larger file)
    /// change what is stored.
    pub async fn commit(
        &self,
        user_id: i64,
        reserved: (u64, u64),
        added_bytes: i64,
        added_files: i64,
    ) -> Result<()> {
        commit_books(&Books {
            user_id,
            reserved: reserved.0,
            reserved_files: reserved.1,
            added_bytes,
            added_files,
        })
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Charges a new entry that is not an upload (a directory) of `bytes`,
    /// if it fits: one conditional statement, as [`Store::reserve`].
    pub async fn add_entry(&self, user_id: i64, bytes: u64) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        self.reserve_exact(&mut conn, user_id, Need::upload(bytes))
            .await?;
        commit_books(&Books {
            user_id,
            reserved: bytes,
            reserved_files: 1,
            added_bytes: to_i64(bytes),
            added_files: 1,
        })
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    /// Finished uploads (one, or a batch made durable together): for each,
    /// [`Store::commit`] of its reservation, [`Store::record_transfer`],
    /// the md5 of the stored version of the file (the record's)
    /// remembered and that of the file it replaced forgotten, all written
    /// behind the reply (see [`super::behind`]), in that order.
    ///
    /// The quota's books may wait: until the commit is written the upload
    /// is counted as reserved instead of used, the same bytes and entries
    /// (more, when it replaced a file), so no check lets more in meanwhile.
    /// Reads of a user's numbers through this store wait for it.
    pub async fn commit_uploads(&self, uploads: &[UploadCommit]) -> Result<()> {
        let at = wharf_core::time::now_ms();
        let mut records = Vec::with_capacity(uploads.len() * 4);
        for u in uploads {
            let user_id = u.record.user_id;
            records.push(Deferred::Commit(Books {
                user_id,
                reserved: u.reserved,
                reserved_files: u.reserved_files,
                added_bytes: u.added_bytes,
                added_files: u.added_files,
            }));
            if let Some((dev, ino)) = u.replaced {
                records.push(Deferred::Forget(user_id, dev, ino));
            }
            records.push(Deferred::Transfer(u.record.clone(), at));
            if let (Some(version), Some(md5)) = (u.version, &u.record.md5) {
                records.push(Deferred::Md5(user_id, version, md5.clone()));
            }
            super::usage::count_transfer(&u.record);
        }
        self.defer(records).await;
        Ok(())
    }

    /// Frees stored bytes and entries (something was removed).
    pub async fn free(&self, user_id: i64, bytes: u64, files: u64) -> Result<()> {
        self.commit(user_id, (0, 0), -to_i64(bytes), -to_i64(files))
            .await
    }
}

/// A reservation turned into usage (see [`Store::commit`]), written behind.
#[derive(Debug, Clone, Copy)]
pub(super) struct Books {
    pub user_id: i64,
    pub reserved: u64,
    pub reserved_files: u64,
    pub added_bytes: i64,
    pub added_files: i64,
}

/// The statement of [`Store::commit`] for `b`.
pub(super) fn commit_books(
    b: &Books,
) -> sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments> {
    sqlx::query(COMMIT)
        .bind(to_i64(b.reserved))
        .bind(b.added_bytes)
        .bind(b.added_files)
        .bind(b.user_id)
        .bind(to_i64(b.reserved_files))
}

/// One finished upload for [`Store::commit_uploads`].
#[derive(Debug, Clone)]
pub struct UploadCommit {
    /// The reservation it held.
    pub reserved: u64,
    /// The entries it held (1: its partial).
    pub reserved_files: u64,
    /// Change in stored bytes (negative when it replaced a larger file).
    pub added_bytes: i64,
    /// Change in stored files (0 when it replaced one).
    pub added_files: i64,
    /// The transfer, with the md5 of the stored file.
    pub record: TransferRecord,
    /// The stored file's version, for its md5 to be recorded.
    pub version: Option<FileVersion>,
    /// Device and inode of a file it replaced for good, whose md5 goes.
    pub replaced: Option<(u64, u64)>,
}

/// Gives back reserved bytes and entries, on one connection.
pub(super) async fn release_on(
    conn: &mut sqlx::AnyConnection,
    user_id: i64,
    bytes: u64,
    files: u64,
) -> Result<()> {
    sqlx::query(
        "UPDATE users SET \
         reserved_bytes = CASE WHEN reserved_bytes > $1 THEN reserved_bytes - $1 ELSE 0 END, \
         reserved_files = CASE WHEN reserved_files > $2 THEN reserved_files - $2 ELSE 0 END \
         WHERE id = $3",
    )
    .bind(to_i64(bytes))
    .bind(to_i64(files))
    .bind(user_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The conditional reservation, on one connection.
async fn reserve_on(conn: &mut sqlx::AnyConnection, user_id: i64, need: Need) -> Result<()> {
    if try_reserve_on(conn, user_id, need).await? {
        return Ok(());
    }
    explain_refusal(conn, user_id, need).await
}

/// The conditional reservation: whether it was made (nothing changes
/// when it does not fit).
pub(super) async fn try_reserve_on(
    conn: &mut sqlx::AnyConnection,
    user_id: i64,
    need: Need,
) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE users SET reserved_bytes = reserved_bytes + $1, reserved_files = reserved_files + $2 \
         WHERE id = $3 AND usage_problem IS NULL \
         AND (quota_bytes IS NULL OR used_bytes + reserved_bytes + $1 <= quota_bytes + $4) \
         AND ($2 = 0 OR quota_files IS NULL OR file_count + reserved_files + $2 <= quota_files + $5) \
         AND ($2 = 0 OR reserved_files + $2 <= $6)",
    )
    .bind(to_i64(need.bytes))
    .bind(to_i64(need.files))
    .bind(user_id)
    .bind(to_i64(need.replacing))
    .bind(to_i64(need.replacing_files))
    .bind(to_i64(MAX_PARTIALS))
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Why a reservation of `need` did not fit: the error that says so.
async fn explain_refusal(conn: &mut sqlx::AnyConnection, user_id: i64, need: Need) -> Result<()> {
    let row = sqlx::query(
        "SELECT name, quota_bytes, used_bytes, reserved_bytes, quota_files, file_count, \
         reserved_files, usage_problem FROM users WHERE id = $1",
    )
    .bind(user_id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| Error::NoSuchUser(format!("#{user_id}")))?;
    if let Some(why) = row.try_get::<Option<String>, _>("usage_problem")? {
        return Err(Error::HomeUnmeasured {
            user: row.try_get("name")?,
            why,
        });
    }
    let quota = to_u64(
        row.try_get::<Option<i64>, _>("quota_bytes")?
            .unwrap_or(i64::MAX),
    );
    let taken = to_u64(row.try_get("used_bytes")?) + to_u64(row.try_get("reserved_bytes")?);
    if taken.saturating_add(need.bytes) > quota.saturating_add(need.replacing) {
        return Err(Error::QuotaExceeded {
            needed: need.bytes.saturating_sub(need.replacing),
            free: quota.saturating_sub(taken),
            quota,
        });
    }
    let partials = to_u64(row.try_get("reserved_files")?);
    if partials.saturating_add(need.files) > MAX_PARTIALS {
        return Err(Error::TooManyPartials { max: MAX_PARTIALS });
    }
    let files = to_u64(
        row.try_get::<Option<i64>, _>("quota_files")?
            .unwrap_or(i64::MAX),
    );
    Err(Error::FileQuotaExceeded {
        held: to_u64(row.try_get("file_count")?) + partials,
        quota: files,
    })
}
