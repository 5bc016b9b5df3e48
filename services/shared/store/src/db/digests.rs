//! The md5 of stored files, so a download need not hash what an upload
//! already did. A digest holds only for the version of the file it was
//! computed from: the same inode, size, mtime and ctime. A user can set a
//! file's mtime but not its ctime, which every change moves (and, on Linux
//! 6.13 and later, moves to a fine-grained time once it has been read), so
//! a changed file never matches an old digest.

use std::os::unix::fs::MetadataExt;

use sqlx::Row;

use super::Store;
use crate::error::Result;

/// One version of a file's content, as the file system tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileVersion {
    /// Device of the file system.
    pub dev: u64,
    /// Inode.
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// Last modification, nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// Last status change, nanoseconds since the epoch.
    pub ctime_ns: i64,
}

impl FileVersion {
    /// The version `meta` describes.
    pub fn of(meta: &std::fs::Metadata) -> FileVersion {
        FileVersion {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: meta
                .mtime()
                .saturating_mul(1_000_000_000)
                .saturating_add(meta.mtime_nsec()),
            ctime_ns: meta
                .ctime()
                .saturating_mul(1_000_000_000)
                .saturating_add(meta.ctime_nsec()),
        }
    }
}

/// SQLite integers are signed: device and inode numbers are stored with
/// their bits as they are.
fn bits(n: u64) -> i64 {
    i64::from_ne_bytes(n.to_ne_bytes())
}

pub(super) const REMEMBER: &str = "INSERT INTO file_md5 (user_id, dev, ino, size, mtime_ns, ctime_ns, md5) \
     VALUES ($1, $2, $3, $4, $5, $6, $7) \
     ON CONFLICT (user_id, dev, ino) DO UPDATE SET size = $4, mtime_ns = $5, ctime_ns = $6, md5 = $7";

/// `query` with its first six parameters bound to `user_id` and `version`.
fn bind_version<'q>(
    query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    user_id: i64,
    version: &FileVersion,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    query
        .bind(user_id)
        .bind(bits(version.dev))
        .bind(bits(version.ino))
        .bind(bits(version.size))
        .bind(version.mtime_ns)
        .bind(version.ctime_ns)
}

/// The statement recording `md5` for `version` of a file of `user_id`.
pub(super) fn remember<'q>(
    user_id: i64,
    version: &FileVersion,
    md5: &'q str,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    bind_version(sqlx::query(REMEMBER), user_id, version).bind(md5)
}

/// The statement forgetting the digest of inode `ino` of device `dev`.
pub(super) fn forget<'q>(
    user_id: i64,
    dev: u64,
    ino: u64,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    sqlx::query("DELETE FROM file_md5 WHERE user_id = $1 AND dev = $2 AND ino = $3")
        .bind(user_id)
        .bind(bits(dev))
        .bind(bits(ino))
}

impl Store {
    /// The md5 recorded for exactly `version` of a file of `user_id`, if any.
    pub async fn known_md5(&self, user_id: i64, version: &FileVersion) -> Result<Option<String>> {
        self.settle_records().await;
        let row = bind_version(
            sqlx::query(
                "SELECT md5 FROM file_md5 WHERE user_id = $1 AND dev = $2 AND ino = $3 \
                 AND size = $4 AND mtime_ns = $5 AND ctime_ns = $6",
            ),
            user_id,
            version,
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.try_get("md5")).transpose()?)
    }

    /// Forgets the digest of the file of `user_id` at inode `ino` of device
    /// `dev` (it was removed or replaced).
    pub async fn forget_md5(&self, user_id: i64, dev: u64, ino: u64) -> Result<()> {
        forget(user_id, dev, ino).execute(&self.pool).await?;
        Ok(())
    }

    /// Records `md5` as the digest of `version` of a file of `user_id`.
    pub async fn remember_md5(&self, user_id: i64, version: &FileVersion, md5: &str) -> Result<()> {
        remember(user_id, version, md5).execute(&self.pool).await?;
        Ok(())
    }
}
