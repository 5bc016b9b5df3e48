//! Defaults every binary shares.

/// Default database, relative to the working directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/wharf.db";

/// Default data directory (homes live in `<data-dir>/homes/<name>`).
pub const DEFAULT_DATA_DIR: &str = "data";

/// Environment variable that overrides `--database-url`.
pub const DATABASE_URL_ENV: &str = "WHARF_DATABASE_URL";

/// Environment variable that overrides `--data-dir`.
pub const DATA_DIR_ENV: &str = "WHARF_DATA_DIR";

/// Quota of a new user unless the administrator gives one.
pub const DEFAULT_QUOTA: &str = "1GiB";
