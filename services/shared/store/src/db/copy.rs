//! Copying a whole database into another, empty one (SQLite into
//! PostgreSQL when an organisation outgrows one machine, or back): every
//! row of every table, ids kept, in batches.

use futures_util::TryStreamExt;
use sqlx::Row;

use super::{Backend, Store};
use crate::error::{Error, Result};

/// A column's kind: every Wharf column is a number or text, either of
/// them nullable.
#[derive(Clone, Copy)]
enum Kind {
    Int,
    Text,
}

/// A table's name, its columns, and the key its rows are read in.
type TableSpec = (&'static str, &'static [(&'static str, Kind)], &'static str);

/// The tables in an order that keeps every reference valid.
const TABLES: &[TableSpec] = &[
    (
        "users",
        &[
            ("id", Kind::Int),
            ("name", Kind::Text),
            ("password_hash", Kind::Text),
            ("home", Kind::Text),
            ("quota_bytes", Kind::Int),
            ("used_bytes", Kind::Int),
            ("reserved_bytes", Kind::Int),
            ("file_count", Kind::Int),
            ("quota_files", Kind::Int),
            ("reserved_files", Kind::Int),
            ("usage_problem", Kind::Text),
            ("locked", Kind::Int),
            ("created_at", Kind::Int),
            ("last_login_at", Kind::Int),
            ("upload_rate", Kind::Int),
            ("download_rate", Kind::Int),
            ("max_sessions", Kind::Int),
        ],
        "id",
    ),
    (
        "user_services",
        &[("user_id", Kind::Int), ("service", Kind::Text)],
        "user_id, service",
    ),
    (
        "user_keys",
        &[
            ("id", Kind::Int),
            ("user_id", Kind::Int),
            ("fingerprint", Kind::Text),
            ("key_type", Kind::Text),
            ("public_key", Kind::Text),
            ("comment", Kind::Text),
            ("added_at", Kind::Int),
            ("last_used_at", Kind::Int),
        ],
        "id",
    ),
    (
        "login_failures",
        &[
            ("id", Kind::Int),
            ("name", Kind::Text),
            ("at", Kind::Int),
            ("source", Kind::Text),
        ],
        "id",
    ),
    (
        "transfers",
        &[
            ("id", Kind::Int),
            ("user_id", Kind::Int),
            ("direction", Kind::Text),
            ("path", Kind::Text),
            ("bytes", Kind::Int),
            ("md5", Kind::Text),
            ("ok", Kind::Int),
            ("duration_ms", Kind::Int),
            ("at", Kind::Int),
        ],
        "id",
    ),
    (
        "chat_messages",
        &[
            ("id", Kind::Int),
            ("room", Kind::Text),
            ("recipient_id", Kind::Int),
            ("sender_id", Kind::Int),
            ("body", Kind::Text),
            ("at", Kind::Int),
            ("seq", Kind::Int),
        ],
        "id",
    ),
    (
        "exec_log",
        &[
            ("id", Kind::Int),
            ("user_id", Kind::Int),
            ("command", Kind::Text),
            ("exit_code", Kind::Int),
            ("signal", Kind::Int),
            ("duration_ms", Kind::Int),
            ("bytes_out", Kind::Int),
            ("at", Kind::Int),
        ],
        "id",
    ),
    (
        "file_md5",
        &[
            ("user_id", Kind::Int),
            ("dev", Kind::Int),
            ("ino", Kind::Int),
            ("size", Kind::Int),
            ("mtime_ns", Kind::Int),
            ("ctime_ns", Kind::Int),
            ("md5", Kind::Text),
        ],
        "user_id, dev, ino",
    ),
];

/// Rows written per transaction.
const BATCH: usize = 500;

/// How many rows of each table a copy wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyReport {
    /// `(table, rows)`, in the order copied.
    pub tables: Vec<(&'static str, u64)>,
}

/// One value read from a row.
enum Value {
    Int(Option<i64>),
    Text(Option<String>),
}

impl Store {
    /// Copies every row of this database into `to`, which must hold no
    /// users yet (a fresh database: `Store::open` has made its tables).
    /// Ids are kept, so history, usage and rights stay attached to the same
    /// users; PostgreSQL's id sequences are moved past the copied ids.
    pub async fn copy_into(&self, to: &Store) -> Result<CopyReport> {
        // What is queued to be written, and held ahead, first: the rows
        // copied are the books as they are.
        self.settle().await;
        if !to.has_no_users().await? {
            return Err(Error::Internal(
                "the target database already has users; copy into a new, empty database".into(),
            ));
        }
        let mut report = CopyReport { tables: Vec::new() };
        for (table, columns, key) in TABLES {
            let names = columns
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ");
            let marks = (1..=columns.len())
                .map(|i| format!("${i}"))
                .collect::<Vec<_>>()
                .join(", ");
            let select = format!("SELECT {names} FROM {table} ORDER BY {key}");
            let insert = format!("INSERT INTO {table} ({names}) VALUES ({marks})");
            let mut rows = sqlx::query(sqlx::AssertSqlSafe(select)).fetch(&self.pool);
            let mut batch: Vec<Vec<Value>> = Vec::with_capacity(BATCH);
            let mut copied = 0u64;
            while let Some(row) = rows.try_next().await? {
                let mut values = Vec::with_capacity(columns.len());
                for (name, kind) in columns.iter() {
                    values.push(match kind {
                        Kind::Int => Value::Int(row.try_get::<Option<i64>, _>(*name)?),
                        Kind::Text => Value::Text(row.try_get::<Option<String>, _>(*name)?),
                    });
                }
                batch.push(values);
                if batch.len() == BATCH {
                    copied += to.insert_batch(&insert, &mut batch).await?;
                }
            }
            copied += to.insert_batch(&insert, &mut batch).await?;
            report.tables.push((table, copied));
        }
        if to.backend == Backend::Postgres {
            for table in ["users", "login_failures", "transfers", "exec_log"] {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT setval(pg_get_serial_sequence('{table}', 'id'), \
                     COALESCE((SELECT MAX(id) FROM {table}), 0) + 1, false)"
                )))
                .execute(&to.pool)
                .await?;
            }
            sqlx::query(
                "SELECT setval('chat_message_ids', \
                 COALESCE((SELECT MAX(id) FROM chat_messages), 0) + 1, false)",
            )
            .execute(&to.pool)
            .await?;
        }
        Ok(report)
    }

    /// Writes `batch` with `insert` in one transaction and empties it.
    async fn insert_batch(&self, insert: &str, batch: &mut Vec<Vec<Value>>) -> Result<u64> {
        if batch.is_empty() {
            return Ok(0);
        }
        let mut tx = self.pool.begin().await?;
        let n = batch.len() as u64;
        for values in batch.drain(..) {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(insert.to_owned()));
            for value in values {
                q = match value {
                    Value::Int(v) => q.bind(v),
                    Value::Text(v) => q.bind(v),
                };
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(n)
    }

    /// Rows in each table, for comparing a copy with its source.
    pub async fn row_counts(&self) -> Result<Vec<(&'static str, u64)>> {
        let mut out = Vec::new();
        for (table, _, _) in TABLES {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT COUNT(*) AS n FROM {table}"
            )))
            .fetch_one(&self.pool)
            .await?;
            out.push((*table, super::to_u64(row.try_get("n")?)));
        }
        Ok(out)
    }
}
