//! The databases a test runs on: SQLite always, and PostgreSQL when a test
//! cluster is given in `WHARF_TEST_POSTGRES_URL` (`bash .ci/test` starts
//! one).

/// The environment variable naming the test cluster.
pub const POSTGRES_ENV: &str = "WHARF_TEST_POSTGRES_URL";

/// The database URLs to run a test on: a SQLite file under `dir`, and a
/// fresh PostgreSQL database when a cluster is given. Under CI a missing
/// cluster is an error, so that the PostgreSQL runs are never skipped
/// quietly.
pub async fn database_urls(dir: &std::path::Path) -> Vec<String> {
    let mut urls = vec![format!("sqlite://{}/wharf.db", dir.display())];
    match fresh_postgres().await {
        Some(url) => urls.push(url),
        None if std::env::var_os("CI").is_some() => {
            panic!(
                "CI runs every test on PostgreSQL too: run `bash .ci/test`, which starts a cluster and sets {POSTGRES_ENV}"
            )
        }
        None => {}
    }
    urls
}

/// A new, empty database on the test cluster; its URL. `None` when no
/// cluster is given.
pub async fn fresh_postgres() -> Option<String> {
    use sqlx::Connection;
    let base = std::env::var(POSTGRES_ENV).ok()?;
    let mut admin = sqlx::PgConnection::connect(&base)
        .await
        .unwrap_or_else(|e| panic!("{POSTGRES_ENV}={base}: cannot connect ({e})"));
    let name = format!(
        "wharf_test_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .expect("create a test database");
    let (prefix, _) = base.rsplit_once('/').expect("a database URL with a path");
    Some(format!("{prefix}/{name}"))
}

/// A fresh database for a test that needs PostgreSQL (two replicas on one
/// database): `None`, and the test skips, without a cluster; under CI a
/// missing cluster is an error.
pub async fn postgres_or_skip() -> Option<String> {
    let url = fresh_postgres().await;
    if url.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs the replica tests on PostgreSQL: bash .ci/test"
        );
        eprintln!("skipped: no PostgreSQL test cluster ({POSTGRES_ENV})");
    }
    url
}

static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Ends every connection to the database at `url` that listens for
/// notifications (as a server restart or a network cut would); how many.
pub async fn end_listeners(url: &str) -> u64 {
    use sqlx::{Connection, Row};
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .expect("connect to the test database");
    let row = sqlx::query(
        "SELECT COUNT(pg_terminate_backend(pid)) AS n FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid() AND query LIKE 'LISTEN%'",
    )
    .fetch_one(&mut conn)
    .await
    .expect("end the listening connections");
    let n: i64 = row.get("n");
    u64::try_from(n).unwrap_or(0)
}
