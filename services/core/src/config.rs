//! Defaults every binary shares.

/// Default data directory (homes live in `<data-dir>/homes/<name>`).
pub const DEFAULT_DATA_DIR: &str = "data";

/// Environment variable that overrides `--database-url`.
pub const DATABASE_URL_ENV: &str = "WHARF_DATABASE_URL";

/// Environment variable that overrides `--data-dir`.
pub const DATA_DIR_ENV: &str = "WHARF_DATA_DIR";

/// Quota of a new user unless the administrator gives one.
pub const DEFAULT_QUOTA: &str = "1GiB";

/// The database URL to use: the one given (flag or environment), else the
/// SQLite file `wharf.db` in the data directory.
pub fn database_url(given: Option<&str>, data_dir: &std::path::Path) -> String {
    match given {
        Some(url) => url.to_owned(),
        None => format!("sqlite://{}/wharf.db", data_dir.display()),
    }
}
