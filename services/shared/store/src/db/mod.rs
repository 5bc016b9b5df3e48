//! The database: opening it, migrating it, and every SQL statement Wharf
//! runs. SQL lives only here. Two back ends: SQLite (`sqlite://FILE`, one
//! machine, the default) and PostgreSQL (`postgres://...`, several
//! replicas on one database). Both go through sqlx's `Any` driver with the
//! same statements (`$N` parameters, which SQLite reads too); the few that
//! differ ask [`Store::backend`]. Each back end has its own migrations
//! (`migrations/sqlite`, `migrations/postgres`).

mod behind;
mod chat;
mod copy;
mod credit;
mod digests;
mod keys;
mod logins;
mod quota;
mod sessions;
mod usage;
mod users;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{AnyPool, ConnectOptions};

use crate::error::{Error, Result};

pub use chat::{
    Beat, CHAT_CHANNEL, ChatEvent, ChatListener, ChatNotice, ChatRecord, HistoryPolicy, HistoryRow,
    NewChatMessage, PostedMessage,
};
pub use copy::CopyReport;
pub use digests::FileVersion;
pub use keys::UserKey;
pub use quota::{MAX_PARTIALS, Need, UploadCommit};
pub use sessions::PROCESS_STALE_MS;
pub use usage::{Direction, ExecLogRow, ExecRecord, TransferRecord, TransferRow, UsageRow};
pub use users::{LimitChange, NewUser, User, UserLimits};

/// How long a statement waits for another process's write lock (SQLite).
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Which database a [`Store`] is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// One SQLite file.
    Sqlite,
    /// A PostgreSQL database.
    Postgres,
}

impl Backend {
    /// The back end a database URL names, or an error that says which URLs
    /// Wharf takes (never quoting the URL itself: it may hold a password).
    pub fn of_url(url: &str) -> Result<Backend> {
        let scheme = url.split_once(':').map(|(s, _)| s.to_ascii_lowercase());
        match scheme.as_deref() {
            Some("sqlite") => Ok(Backend::Sqlite),
            Some("postgres" | "postgresql") => Ok(Backend::Postgres),
            Some(other) if other.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) => {
                Err(Error::BadDatabaseUrl(format!(
                    "Wharf does not serve {other}: databases are sqlite://FILE (one machine) or postgres://USER@HOST/DATABASE"
                )))
            }
            _ => Err(Error::BadDatabaseUrl(
                "it has no scheme: write sqlite://FILE (one machine) or postgres://USER@HOST/DATABASE".into(),
            )),
        }
    }
}

/// A handle on the shared database; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// The SQLite file, for health checks on a connection of their own.
    file: Option<std::sync::Arc<Path>>,
    /// The PostgreSQL URL, for listeners on a connection of their own.
    url: Option<SecretUrl>,
    /// Records written behind the replies that made them.
    behind: std::sync::Arc<behind::Behind>,
    /// Quota held ahead for small uploads.
    credit: std::sync::Arc<credit::Credit>,
}

/// A database URL that may hold a password: never printed.
#[derive(Clone)]
struct SecretUrl(std::sync::Arc<str>);

impl SecretUrl {
    fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&wharf_core::config::shown_database_url(&self.0))
    }
}

impl Store {
    /// Opens the database at `url` (`sqlite://data/wharf.db`, or
    /// `postgres://USER@HOST/DATABASE`), creating a SQLite file and its
    /// folder when missing, and applies pending migrations.
    pub async fn open(url: &str) -> Result<Store> {
        sqlx::any::install_default_drivers();
        match Backend::of_url(url)? {
            Backend::Sqlite => Self::open_sqlite(url).await,
            Backend::Postgres => Self::open_postgres(url).await,
        }
    }

    async fn open_sqlite(url: &str) -> Result<Store> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| {
                Error::BadDatabaseUrl(format!(
                    "{url:?} is not a SQLite URL ({e}); write sqlite://FILE"
                ))
            })?
            .create_if_missing(true);
        let file = options.get_filename();
        if file != Path::new(":memory:")
            && let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io("create the database folder", dir, e))?;
        }
        if file != Path::new(":memory:") {
            private_files(file)?;
        }
        // The Any driver takes a URL; what it cannot say is set on every
        // new connection.
        let any = AnyConnectOptions::from_url(&options.to_url_lossy())?;
        let pool = AnyPoolOptions::new()
            .max_connections(8)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                         PRAGMA foreign_keys = ON; PRAGMA busy_timeout = {};",
                        BUSY_TIMEOUT.as_millis()
                    )))
                    .execute(conn)
                    .await?;
                    Ok(())
                })
            })
            .connect_with(any)
            .await?;
        sqlx::migrate!("../../../migrations/sqlite")
            .run(&pool)
            .await?;
        let file = (file != Path::new(":memory:")).then(|| std::sync::Arc::from(file));
        Ok(Store {
            pool,
            backend: Backend::Sqlite,
            file,
            url: None,
            behind: std::sync::Arc::default(),
            credit: std::sync::Arc::default(),
        })
    }

    async fn open_postgres(url: &str) -> Result<Store> {
        let any = AnyConnectOptions::from_str(url).map_err(|_| {
            Error::BadDatabaseUrl(
                "it is not a PostgreSQL URL: write postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE"
                    .into(),
            )
        })?;
        // One connection first, for the real reason when there is none (a
        // pool only says it timed out).
        let probe = <sqlx::AnyConnection as sqlx::Connection>::connect_with(&any).await.map_err(|e| {
            Error::BadDatabaseUrl(format!(
                "cannot connect to PostgreSQL ({e}); check that it runs there and that the URL's user, password and database are right"
            ))
        })?;
        let _ = sqlx::Connection::close(probe).await;
        let pool = AnyPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(any)
            .await?;
        sqlx::migrate!("../../../migrations/postgres")
            .run(&pool)
            .await?;
        Ok(Store {
            pool,
            backend: Backend::Postgres,
            file: None,
            url: Some(SecretUrl(std::sync::Arc::from(url))),
            behind: std::sync::Arc::default(),
            credit: std::sync::Arc::default(),
        })
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Writes what is queued, then closes every connection (on SQLite,
    /// checkpointing the WAL).
    pub async fn close(&self) {
        self.settle().await;
        self.pool.close().await;
    }
}

/// Makes the database file (created here when missing) and its `-wal` and
/// `-shm` readable and writable by this account only: they hold every
/// password hash and every chat message. SQLite gives the `-wal` and `-shm`
/// it creates the mode of the database file.
fn private_files(db: &Path) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};

    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(db)
    {
        Ok(file) => give_to_folder_owner(&file, db)?,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io("create the database file", db, e)),
    }
    let mut paths = vec![db.to_path_buf()];
    for suffix in ["-wal", "-shm"] {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        paths.push(name.into());
    }
    for path in paths {
        let mode = match std::fs::metadata(&path) {
            Ok(meta) => meta.permissions().mode(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("inspect the database file", &path, e)),
        };
        if mode & 0o077 != 0 {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(
                |e| {
                    Error::io(
                        "make the database private (it is readable by other accounts; chmod 600 it)",
                        &path,
                        e,
                    )
                },
            )?;
            tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "the database was readable by other accounts; made it 0600");
        }
    }
    Ok(())
}

/// A database created by root in a folder that belongs to another account
/// (a container's data volume, say) is given to that account, so that
/// daemons run unprivileged there can open it too. SQLite, run as root,
/// gives the `-wal` and `-shm` it creates the database file's owner.
fn give_to_folder_owner(file: &std::fs::File, db: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;

    if !rustix::process::geteuid().is_root() {
        return Ok(());
    }
    let folder = db
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let meta = std::fs::metadata(folder).map_err(|e| Error::io("inspect", folder, e))?;
    if meta.uid() != 0 {
        std::os::unix::fs::fchown(file, Some(meta.uid()), Some(meta.gid()))
            .map_err(|e| Error::io("give the database to its folder's owner", db, e))?;
    }
    Ok(())
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

impl Store {
    /// A consistent copy of the whole database in `file`, taken while the
    /// services run and write (SQLite's `VACUUM INTO`); the file is made
    /// readable by this account only (it holds every password hash) and
    /// must not exist yet. PostgreSQL's own tool does this there.
    pub async fn backup_to(&self, file: &Path) -> Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        if self.backend == Backend::Postgres {
            return Err(Error::OtherTool(
                "a PostgreSQL database is backed up with PostgreSQL's tools: pg_dump -Fc -f FILE URL (restore with pg_restore -d URL FILE)".into(),
            ));
        }
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(file)
            .map_err(|e| {
                let action = if e.kind() == std::io::ErrorKind::AlreadyExists {
                    "create the backup file (it must not exist yet, and one of that name does: pick a new name; a backup never overwrites)"
                } else {
                    "create the backup file"
                };
                Error::io(action, file, e)
            })?;
        let done = sqlx::query("VACUUM INTO $1")
            .bind(file.to_string_lossy().into_owned())
            .execute(&self.pool)
            .await;
        if let Err(e) = done {
            let _ = std::fs::remove_file(file);
            return Err(e.into());
        }
        Ok(())
    }

    /// What is wrong inside the database: nothing when it is sound. On
    /// SQLite, `PRAGMA integrity_check` (PostgreSQL's server checks its own
    /// pages); on both, rows that belong to no user.
    pub async fn integrity_problems(&self) -> Result<Vec<String>> {
        use sqlx::Row;
        let mut problems = Vec::new();
        if self.backend == Backend::Sqlite {
            for row in sqlx::query("PRAGMA integrity_check")
                .fetch_all(&self.pool)
                .await?
            {
                let said: String = row.try_get(0)?;
                if said != "ok" {
                    problems.push(said);
                }
            }
        }
        // A row whose user is gone (SQLite with foreign keys once off, or a
        // hand-made change).
        for (table, column) in [
            ("user_services", "user_id"),
            ("transfers", "user_id"),
            ("exec_log", "user_id"),
            ("file_md5", "user_id"),
            ("chat_messages", "sender_id"),
        ] {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT COUNT(*) AS n FROM {table} t \
                 WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.id = t.{column})"
            )))
            .fetch_one(&self.pool)
            .await?;
            let n: i64 = row.try_get("n")?;
            if n > 0 {
                problems.push(format!("{n} rows of {table} belong to no user"));
            }
        }
        Ok(problems)
    }
}

impl Store {
    /// Bytes stored and bytes reserved, over all users.
    pub async fn quota_totals(&self) -> Result<(u64, u64)> {
        use sqlx::Row;
        self.settle_books().await;
        let row = sqlx::query(
            "SELECT CAST(COALESCE(SUM(used_bytes), 0) AS BIGINT) AS used, \
             CAST(COALESCE(SUM(reserved_bytes), 0) AS BIGINT) AS reserved FROM users",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok((
            to_u64(row.try_get("used")?),
            to_u64(row.try_get("reserved")?),
        ))
    }

    /// Whether the database answers now: for SQLite, a new connection to
    /// the file reads it (the pool's connections would go on reading a
    /// file deleted or replaced under them); for PostgreSQL, the server
    /// answers a query.
    pub async fn health(&self) -> Result<()> {
        use sqlx::Connection;
        match &self.file {
            Some(file) => {
                let options = SqliteConnectOptions::new()
                    .filename(file.as_ref())
                    .read_only(true)
                    .create_if_missing(false);
                let mut conn = sqlx::SqliteConnection::connect_with(&options).await?;
                sqlx::query("SELECT COUNT(*) FROM users")
                    .execute(&mut conn)
                    .await?;
                let _ = conn.close().await;
            }
            None => {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
            }
        }
        Ok(())
    }
}
