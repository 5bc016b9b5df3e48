//! Users and their service rights.

use std::path::PathBuf;

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Backend, Store, is_unique_violation, to_i64, to_u64};
use crate::error::{Error, Result};
use wharf_core::service::{Service, ServiceSet};
use wharf_core::time::now_ms;

/// A user as stored.
#[derive(Clone)]
pub struct User {
    /// Database id.
    pub id: i64,
    /// Login name.
    pub name: String,
    /// argon2id PHC string.
    pub password_hash: String,
    /// Absolute path of the home directory.
    pub home: PathBuf,
    /// Byte quota; `None` is unlimited.
    pub quota_bytes: Option<u64>,
    /// Bytes stored in the home.
    pub used_bytes: u64,
    /// Bytes reserved by uploads in progress.
    pub reserved_bytes: u64,
    /// Entries stored in the home (files, directories, links).
    pub file_count: u64,
    /// The file-count quota, in entries; `None` is unlimited.
    pub quota_files: Option<u64>,
    /// Entries held by partial uploads.
    pub reserved_files: u64,
    /// Why the home could not be measured, while it cannot: its writes are
    /// refused until it can.
    pub usage_problem: Option<String>,
    /// Services the user may use.
    pub services: ServiceSet,
    /// Locked by an administrator.
    pub locked: bool,
    /// When created, unix ms.
    pub created_at: i64,
    /// Last successful login, unix ms.
    pub last_login_at: Option<i64>,
    /// The administrator's limits for this user; `None` in each takes the
    /// daemon's default.
    pub limits: UserLimits,
}

/// Per-user limits (`admin-cli user limit`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct UserLimits {
    /// Upload bytes per second, over all the user's sessions.
    pub upload_rate: Option<u64>,
    /// Download bytes per second, over all the user's sessions.
    pub download_rate: Option<u64>,
    /// Sessions at once, over every service and process.
    pub max_sessions: Option<u64>,
}

impl UserLimits {
    /// These limits, each falling back to `defaults`'.
    pub fn or(self, defaults: UserLimits) -> UserLimits {
        UserLimits {
            upload_rate: self.upload_rate.or(defaults.upload_rate),
            download_rate: self.download_rate.or(defaults.download_rate),
            max_sessions: self.max_sessions.or(defaults.max_sessions),
        }
    }
}

/// A change to a user's limits: `None` leaves one as it is, `Some(None)`
/// clears it (back to the daemon's default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitChange {
    /// The upload rate.
    pub upload_rate: Option<Option<u64>>,
    /// The download rate.
    pub download_rate: Option<Option<u64>>,
    /// Sessions at once.
    pub max_sessions: Option<Option<u64>>,
}

impl LimitChange {
    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        *self == LimitChange::default()
    }
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("home", &self.home)
            .field("quota_bytes", &self.quota_bytes)
            .field("used_bytes", &self.used_bytes)
            .field("services", &self.services)
            .field("locked", &self.locked)
            .finish_non_exhaustive()
    }
}

/// What `create_user` needs.
#[derive(Debug, Clone)]
pub struct NewUser {
    /// Login name, already validated.
    pub name: String,
    /// argon2id PHC string.
    pub password_hash: String,
    /// Absolute home path.
    pub home: PathBuf,
    /// Quota; `None` is unlimited.
    pub quota_bytes: Option<u64>,
    /// File-count quota; `None` is unlimited.
    pub quota_files: Option<u64>,
    /// Rights.
    pub services: ServiceSet,
}

/// Every column of a user, with the services joined by commas in the
/// back end's words for that.
macro_rules! select_user {
    ($agg:literal) => {
        concat!(
            "SELECT u.id, u.name, u.password_hash, u.home, u.quota_bytes, u.used_bytes, \
             u.reserved_bytes, u.file_count, u.quota_files, u.reserved_files, u.usage_problem, \
             u.locked, u.created_at, u.last_login_at, \
             u.upload_rate, u.download_rate, u.max_sessions, \
             (SELECT ",
            $agg,
            "(s.service, ',') FROM user_services s WHERE s.user_id = u.id) AS services \
             FROM users u"
        )
    };
}

impl Store {
    fn select_user(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => select_user!("group_concat"),
            Backend::Postgres => select_user!("string_agg"),
        }
    }
}

fn user_from_row(row: &AnyRow) -> Result<User> {
    let services: Option<String> = row.try_get("services")?;
    Ok(User {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        password_hash: row.try_get("password_hash")?,
        home: PathBuf::from(row.try_get::<String, _>("home")?),
        quota_bytes: row.try_get::<Option<i64>, _>("quota_bytes")?.map(to_u64),
        used_bytes: to_u64(row.try_get("used_bytes")?),
        reserved_bytes: to_u64(row.try_get("reserved_bytes")?),
        file_count: to_u64(row.try_get("file_count")?),
        quota_files: row.try_get::<Option<i64>, _>("quota_files")?.map(to_u64),
        reserved_files: to_u64(row.try_get("reserved_files")?),
        usage_problem: row.try_get("usage_problem")?,
        services: services.as_deref().unwrap_or("").parse()?,
        locked: row.try_get::<i64, _>("locked")? != 0,
        created_at: row.try_get("created_at")?,
        last_login_at: row.try_get("last_login_at")?,
        limits: UserLimits {
            upload_rate: row.try_get::<Option<i64>, _>("upload_rate")?.map(to_u64),
            download_rate: row.try_get::<Option<i64>, _>("download_rate")?.map(to_u64),
            max_sessions: row.try_get::<Option<i64>, _>("max_sessions")?.map(to_u64),
        },
    })
}

impl Store {
    /// Adds a user; `UserExists` if the name is taken.
    pub async fn create_user(&self, new: &NewUser) -> Result<User> {
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO users (name, password_hash, home, quota_bytes, created_at, quota_files) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(&new.name)
        .bind(&new.password_hash)
        .bind(new.home.to_string_lossy().into_owned())
        .bind(new.quota_bytes.map(to_i64))
        .bind(now_ms())
        .bind(new.quota_files.map(to_i64))
        .fetch_one(&mut *tx)
        .await;
        let id: i64 = match inserted {
            Ok(row) => row.try_get("id")?,
            Err(e) if is_unique_violation(&e) => return Err(Error::UserExists(new.name.clone())),
            Err(e) => return Err(e.into()),
        };
        for svc in new.services.iter() {
            sqlx::query("INSERT INTO user_services (user_id, service) VALUES ($1, $2)")
                .bind(id)
                .bind(svc.as_str())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.require_user(&new.name).await
    }

    /// Changes `name`'s limits; returns the user as it is now.
    pub async fn set_user_limits(&self, name: &str, change: LimitChange) -> Result<User> {
        let user = self.require_user(name).await?;
        let now = change_of(user.limits, change);
        sqlx::query(
            "UPDATE users SET upload_rate = $1, download_rate = $2, max_sessions = $3 WHERE id = $4",
        )
        .bind(now.upload_rate.map(to_i64))
        .bind(now.download_rate.map(to_i64))
        .bind(now.max_sessions.map(to_i64))
        .bind(user.id)
        .execute(&self.pool)
        .await?;
        self.require_user(name).await
    }

    /// The user named `name`, if any.
    pub async fn user(&self, name: &str) -> Result<Option<User>> {
        // Its numbers as of the uploads answered (see super::behind).
        self.settle_books().await;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "{} WHERE u.name = $1",
            self.select_user()
        )))
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    /// The user named `name`, or `NoSuchUser`.
    pub async fn require_user(&self, name: &str) -> Result<User> {
        self.user(name)
            .await?
            .ok_or_else(|| Error::NoSuchUser(name.to_owned()))
    }

    /// Every user, by name.
    pub async fn list_users(&self) -> Result<Vec<User>> {
        self.settle_books().await;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "{} ORDER BY u.name",
            self.select_user()
        )))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(user_from_row).collect()
    }

    /// True when no user exists yet.
    pub async fn has_no_users(&self) -> Result<bool> {
        let row =
            sqlx::query("SELECT CASE WHEN EXISTS (SELECT 1 FROM users) THEN 0 ELSE 1 END AS empty")
                .fetch_one(&self.pool)
                .await?;
        Ok(row.try_get::<i64, _>("empty")? != 0)
    }

    /// Removes a user and everything recorded about them; returns the user
    /// as it was.
    pub async fn delete_user(&self, name: &str) -> Result<User> {
        let user = self.require_user(name).await?;
        sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(user.id)
            .execute(&self.pool)
            .await?;
        Ok(user)
    }

    async fn update_user(
        &self,
        name: &str,
        query: sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments>,
    ) -> Result<()> {
        let done = query.execute(&self.pool).await?;
        if done.rows_affected() == 0 {
            return Err(Error::NoSuchUser(name.to_owned()));
        }
        Ok(())
    }

    /// Replaces a user's password hash.
    pub async fn set_password_hash(&self, name: &str, hash: &str) -> Result<()> {
        let q = sqlx::query("UPDATE users SET password_hash = $1 WHERE name = $2")
            .bind(hash.to_owned())
            .bind(name.to_owned());
        self.update_user(name, q).await
    }

    /// Locks or unlocks an account.
    pub async fn set_locked(&self, name: &str, locked: bool) -> Result<()> {
        let q = sqlx::query("UPDATE users SET locked = $1 WHERE name = $2")
            .bind(i64::from(locked))
            .bind(name.to_owned());
        self.update_user(name, q).await
    }

    /// Sets the quota; `None` is unlimited.
    pub async fn set_quota(&self, name: &str, quota: Option<u64>) -> Result<()> {
        let q = sqlx::query("UPDATE users SET quota_bytes = $1 WHERE name = $2")
            .bind(quota.map(to_i64))
            .bind(name.to_owned());
        self.update_user(name, q).await
    }

    /// Sets the file-count quota; `None` is unlimited.
    pub async fn set_quota_files(&self, name: &str, files: Option<u64>) -> Result<()> {
        let q = sqlx::query("UPDATE users SET quota_files = $1 WHERE name = $2")
            .bind(files.map(to_i64))
            .bind(name.to_owned());
        self.update_user(name, q).await
    }

    /// Records that the home could not be measured, and why: the user's
    /// writes are refused until a measurement succeeds.
    pub async fn set_usage_problem(&self, name: &str, why: &str) -> Result<()> {
        let q = sqlx::query("UPDATE users SET usage_problem = $1 WHERE name = $2")
            .bind(why.to_owned())
            .bind(name.to_owned());
        self.update_user(name, q).await
    }

    /// Points the user at another home directory.
    pub async fn set_home(&self, name: &str, home: &std::path::Path) -> Result<()> {
        let q = sqlx::query("UPDATE users SET home = $1 WHERE name = $2")
            .bind(home.to_string_lossy().into_owned())
            .bind(name.to_owned());
        self.update_user(name, q).await
    }

    /// Records what a measurement of the home found (and that it could be
    /// measured).
    pub async fn set_usage(&self, name: &str, usage: &crate::home::HomeUsage) -> Result<()> {
        // Commits queued before the measurement must not land after it.
        self.settle_books().await;
        let q = sqlx::query(
            "UPDATE users SET used_bytes = $1, file_count = $2, reserved_bytes = $3, \
             reserved_files = $4, usage_problem = NULL WHERE name = $5",
        )
        .bind(to_i64(usage.bytes))
        .bind(to_i64(usage.files))
        .bind(to_i64(usage.reserved))
        .bind(to_i64(usage.reserved_files))
        .bind(name.to_owned());
        self.update_user(name, q).await
    }

    /// Grants a service; false when the user had it already.
    pub async fn grant(&self, name: &str, service: Service) -> Result<bool> {
        let user = self.require_user(name).await?;
        let done = sqlx::query(
            "INSERT INTO user_services (user_id, service) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(user.id)
        .bind(service.as_str())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Revokes a service; false when the user did not have it.
    pub async fn revoke(&self, name: &str, service: Service) -> Result<bool> {
        let user = self.require_user(name).await?;
        let done = sqlx::query("DELETE FROM user_services WHERE user_id = $1 AND service = $2")
            .bind(user.id)
            .bind(service.as_str())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }
}

/// `limits` with `change` applied.
fn change_of(limits: UserLimits, change: LimitChange) -> UserLimits {
    UserLimits {
        upload_rate: change.upload_rate.unwrap_or(limits.upload_rate),
        download_rate: change.download_rate.unwrap_or(limits.download_rate),
        max_sessions: change.max_sessions.unwrap_or(limits.max_sessions),
    }
}
