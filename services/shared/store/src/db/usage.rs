//! Usage events the services record, and the report built from them.

use std::time::Duration;

use sqlx::Row;

use super::behind::Deferred;
use super::{Store, to_i64, to_u64};
use crate::error::Result;
use wharf_core::time::{duration_ms, now_ms};

/// Which way a transfer went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client to server.
    Up,
    /// Server to client.
    Down,
}

impl Direction {
    /// `up` or `down`, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Up => "up",
            Direction::Down => "down",
        }
    }
}

/// One file transfer, finished or failed.
#[derive(Debug, Clone)]
pub struct TransferRecord {
    /// Who.
    pub user_id: i64,
    /// Which way.
    pub direction: Direction,
    /// Virtual path in the home.
    pub path: String,
    /// Bytes moved.
    pub bytes: u64,
    /// md5 of the whole file, hex, when known.
    pub md5: Option<String>,
    /// True when the transfer completed and verified.
    pub ok: bool,
    /// How long it took.
    pub duration: Duration,
}

/// One command run by the exec service.
#[derive(Debug, Clone)]
pub struct ExecRecord {
    /// Who.
    pub user_id: i64,
    /// The command line.
    pub command: String,
    /// Exit code, when it exited.
    pub exit_code: Option<i32>,
    /// Signal number, when a signal ended it.
    pub signal: Option<i32>,
    /// How long it ran.
    pub duration: Duration,
    /// Bytes of stdout and stderr sent.
    pub bytes_out: u64,
}

/// One transfer, as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferRow {
    /// Which way.
    pub direction: Direction,
    /// Virtual path in the home.
    pub path: String,
    /// Bytes moved.
    pub bytes: u64,
    /// md5 of the whole file, when it completed.
    pub md5: Option<String>,
    /// True when it completed and verified.
    pub ok: bool,
    /// How long it took, in milliseconds.
    pub duration_ms: u64,
    /// When it ended, unix ms.
    pub at: i64,
}

/// One line of `exec_log`, as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecLogRow {
    /// Who ran it.
    pub user: String,
    /// The command line.
    pub command: String,
    /// Exit code, when it exited.
    pub exit_code: Option<i32>,
    /// Signal number, when a signal ended it.
    pub signal: Option<i32>,
    /// How long it ran, in milliseconds.
    pub duration_ms: u64,
    /// Bytes of output sent.
    pub bytes_out: u64,
    /// When it ended, unix ms.
    pub at: i64,
}

/// One user's line in the usage report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    /// User name.
    pub name: String,
    /// Quota; `None` is unlimited.
    pub quota_bytes: Option<u64>,
    /// Bytes stored.
    pub used_bytes: u64,
    /// Bytes reserved by uploads in progress.
    pub reserved_bytes: u64,
    /// Entries stored (files, folders, links).
    pub file_count: u64,
    /// Entries held by interrupted uploads.
    pub reserved_files: u64,
    /// The file quota; `None` is unlimited.
    pub quota_files: Option<u64>,
    /// Completed uploads in the period.
    pub uploads: u64,
    /// Completed downloads in the period.
    pub downloads: u64,
    /// Bytes uploaded in the period.
    pub bytes_up: u64,
    /// Bytes downloaded in the period.
    pub bytes_down: u64,
    /// Chat messages sent in the period.
    pub chat_messages: u64,
    /// Commands run in the period.
    pub exec_commands: u64,
    /// Last successful login, unix ms.
    pub last_login_at: Option<i64>,
}

const INSERT_TRANSFER: &str = "INSERT INTO transfers (user_id, direction, path, bytes, md5, ok, duration_ms, at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

/// The statement recording `t`, ready to run on a pool or in a transaction.
pub(super) fn insert_transfer(
    t: &TransferRecord,
    at: i64,
) -> sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments> {
    sqlx::query(INSERT_TRANSFER)
        .bind(t.user_id)
        .bind(t.direction.as_str())
        .bind(&t.path)
        .bind(to_i64(t.bytes))
        .bind(&t.md5)
        .bind(i64::from(t.ok))
        .bind(duration_ms(t.duration))
        .bind(at)
}

/// The statement giving the latest upload of `path` by `user_id` its md5,
/// hashed after it was stored.
pub(super) fn set_upload_md5<'q>(
    user_id: i64,
    path: &'q str,
    md5: &'q str,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    sqlx::query(
        "UPDATE transfers SET md5 = $1 WHERE id = (SELECT MAX(id) FROM transfers \
         WHERE user_id = $2 AND path = $3 AND direction = 'up' AND ok = 1) AND md5 IS NULL",
    )
    .bind(md5)
    .bind(user_id)
    .bind(path)
}

/// The statement recording `e`, ended at `at` (unix ms).
pub(super) fn insert_exec(
    e: &ExecRecord,
    at: i64,
) -> sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments> {
    sqlx::query(
        "INSERT INTO exec_log (user_id, command, exit_code, signal, duration_ms, bytes_out, at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(e.user_id)
    .bind(&e.command)
    .bind(e.exit_code)
    .bind(e.signal)
    .bind(duration_ms(e.duration))
    .bind(to_i64(e.bytes_out))
    .bind(at)
}

impl Store {
    /// Records a transfer (written behind: see [`super::behind`]).
    pub async fn record_transfer(&self, t: &TransferRecord) -> Result<()> {
        count_transfer(t);
        self.defer(vec![Deferred::Transfer(t.clone(), now_ms())])
            .await;
        Ok(())
    }

    /// Records a command run (written behind: see [`super::behind`]).
    pub async fn record_exec(&self, e: &ExecRecord) -> Result<()> {
        self.defer(vec![Deferred::Exec(e.clone(), now_ms())]).await;
        let m = crate::metrics::metrics();
        let outcome = match (e.exit_code, e.signal) {
            (Some(0), _) => "exit_0",
            (Some(_), _) => "exit_nonzero",
            (None, _) => "signal",
        };
        m.commands
            .get_or_create(&crate::metrics::outcome(outcome))
            .inc();
        m.command_seconds.observe(e.duration.as_secs_f64());
        Ok(())
    }

    /// Records `md5` as the digest of `version`, the upload of `path` by
    /// `user_id` hashed after it was stored, both for downloads and in the
    /// transfer log (written behind, after the upload's own record).
    pub async fn record_upload_md5(
        &self,
        user_id: i64,
        version: &super::digests::FileVersion,
        path: &str,
        md5: &str,
    ) -> Result<()> {
        self.defer(vec![
            Deferred::Md5(user_id, *version, md5.to_owned()),
            Deferred::UploadMd5(user_id, path.to_owned(), md5.to_owned()),
        ])
        .await;
        Ok(())
    }

    /// The latest `limit` transfers of `name` since `since` (unix ms),
    /// newest first.
    pub async fn recent_transfers(
        &self,
        name: &str,
        since: i64,
        limit: u32,
    ) -> Result<Vec<TransferRow>> {
        self.settle_records().await;
        let rows = sqlx::query(
            "SELECT t.direction, t.path, t.bytes, t.md5, t.ok, t.duration_ms, t.at \
             FROM transfers t JOIN users u ON u.id = t.user_id \
             WHERE u.name = $1 AND t.at >= $2 ORDER BY t.id DESC LIMIT $3",
        )
        .bind(name)
        .bind(since)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let direction: String = r.try_get("direction")?;
                Ok(TransferRow {
                    direction: if direction == "up" {
                        Direction::Up
                    } else {
                        Direction::Down
                    },
                    path: r.try_get("path")?,
                    bytes: to_u64(r.try_get("bytes")?),
                    md5: r.try_get("md5")?,
                    ok: r.try_get::<i64, _>("ok")? == 1,
                    duration_ms: to_u64(r.try_get("duration_ms")?),
                    at: r.try_get("at")?,
                })
            })
            .collect()
    }

    /// The latest `limit` commands run since `since` (unix ms), of `name` or
    /// of everyone, newest first.
    pub async fn exec_log(
        &self,
        name: Option<&str>,
        since: i64,
        limit: u32,
    ) -> Result<Vec<ExecLogRow>> {
        self.settle_records().await;
        let rows = sqlx::query(
            "SELECT u.name, e.command, e.exit_code, e.signal, e.duration_ms, e.bytes_out, e.at \
             FROM exec_log e JOIN users u ON u.id = e.user_id \
             WHERE (CAST($1 AS TEXT) IS NULL OR u.name = $1) AND e.at >= $2 ORDER BY e.id DESC LIMIT $3",
        )
        .bind(name)
        .bind(since)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ExecLogRow {
                    user: r.try_get("name")?,
                    command: r.try_get("command")?,
                    exit_code: r.try_get("exit_code")?,
                    signal: r.try_get("signal")?,
                    duration_ms: to_u64(r.try_get("duration_ms")?),
                    bytes_out: to_u64(r.try_get("bytes_out")?),
                    at: r.try_get("at")?,
                })
            })
            .collect()
    }

    /// The usage report: one row per user (or just `name`), with activity
    /// counted from `since` (unix ms; 0 for all time).
    pub async fn usage_report(&self, name: Option<&str>, since: i64) -> Result<Vec<UsageRow>> {
        self.settle().await;
        let rows = sqlx::query(
            "SELECT u.name, u.quota_bytes, u.used_bytes, u.reserved_bytes, u.file_count, \
               u.reserved_files, u.quota_files, u.last_login_at, \
               (SELECT COUNT(*) FROM transfers t WHERE t.user_id = u.id AND t.ok = 1 AND t.direction = 'up' AND t.at >= $1) AS uploads, \
               (SELECT COUNT(*) FROM transfers t WHERE t.user_id = u.id AND t.ok = 1 AND t.direction = 'down' AND t.at >= $1) AS downloads, \
               (SELECT CAST(COALESCE(SUM(t.bytes), 0) AS BIGINT) FROM transfers t WHERE t.user_id = u.id AND t.direction = 'up' AND t.at >= $1) AS bytes_up, \
               (SELECT CAST(COALESCE(SUM(t.bytes), 0) AS BIGINT) FROM transfers t WHERE t.user_id = u.id AND t.direction = 'down' AND t.at >= $1) AS bytes_down, \
               (SELECT COUNT(*) FROM chat_messages c WHERE c.sender_id = u.id AND c.at >= $1) AS chat_messages, \
               (SELECT COUNT(*) FROM exec_log e WHERE e.user_id = u.id AND e.at >= $1) AS exec_commands \
             FROM users u WHERE CAST($2 AS TEXT) IS NULL OR u.name = $2 ORDER BY u.name",
        )
        .bind(since)
        .bind(name)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(UsageRow {
                    name: r.try_get("name")?,
                    quota_bytes: r.try_get::<Option<i64>, _>("quota_bytes")?.map(to_u64),
                    used_bytes: to_u64(r.try_get("used_bytes")?),
                    reserved_bytes: to_u64(r.try_get("reserved_bytes")?),
                    file_count: to_u64(r.try_get("file_count")?),
                    reserved_files: to_u64(r.try_get("reserved_files")?),
                    quota_files: r.try_get::<Option<i64>, _>("quota_files")?.map(to_u64),
                    uploads: to_u64(r.try_get("uploads")?),
                    downloads: to_u64(r.try_get("downloads")?),
                    bytes_up: to_u64(r.try_get("bytes_up")?),
                    bytes_down: to_u64(r.try_get("bytes_down")?),
                    chat_messages: to_u64(r.try_get("chat_messages")?),
                    exec_commands: to_u64(r.try_get("exec_commands")?),
                    last_login_at: r.try_get("last_login_at")?,
                })
            })
            .collect()
    }
}

/// A recorded transfer in the metrics.
pub(super) fn count_transfer(t: &TransferRecord) {
    let m = crate::metrics::metrics();
    let direction = t.direction.as_str().to_owned();
    m.bytes
        .get_or_create(&crate::metrics::Dir {
            direction: direction.clone(),
        })
        .inc_by(t.bytes);
    m.transfers
        .get_or_create(&crate::metrics::DirOutcome {
            direction,
            outcome: if t.ok { "ok" } else { "failed" }.to_owned(),
        })
        .inc();
}
