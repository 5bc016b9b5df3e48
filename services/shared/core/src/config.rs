//! Defaults every binary shares.

/// Default data directory (homes live in `<data-dir>/homes/<name>`).
pub const DEFAULT_DATA_DIR: &str = "data";

/// Environment variable that overrides `--database-url`.
pub const DATABASE_URL_ENV: &str = "WHARF_DATABASE_URL";

/// Environment variable that overrides `--data-dir`.
pub const DATA_DIR_ENV: &str = "WHARF_DATA_DIR";

/// Quota of a new user unless the administrator gives one.
pub const DEFAULT_QUOTA: &str = "1GiB";

/// The file quota a new user gets unless told otherwise: entries of any
/// kind, so that no home can take a file system's inodes.
pub const DEFAULT_FILE_QUOTA: &str = "100000";

/// The database URL to use: the one given (flag or environment), else the
/// SQLite file `wharf.db` in the data directory.
pub fn database_url(given: Option<&str>, data_dir: &std::path::Path) -> String {
    match given {
        Some(url) => url.to_owned(),
        None => format!("sqlite://{}/wharf.db", data_dir.display()),
    }
}

/// The file of a SQLite database URL (`sqlite://data/wharf.db`,
/// `sqlite:data/wharf.db?mode=rwc`), made absolute; `None` for any other.
pub fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    let rest = url.strip_prefix("sqlite:")?;
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let path = rest.split_once('?').map_or(rest, |(p, _)| p);
    if path.is_empty() || path == ":memory:" {
        return None;
    }
    std::path::absolute(path).ok()
}

/// `url` as it may be shown or logged: a password in it is replaced by
/// `***`.
pub fn shown_database_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((credentials, host)) => match credentials.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::shown_database_url;

    #[test]
    fn a_password_in_a_database_url_is_never_shown() {
        assert_eq!(
            shown_database_url("postgres://wharf:s3cret@db.example:5432/wharf?sslmode=require"),
            "postgres://wharf:***@db.example:5432/wharf?sslmode=require"
        );
        assert_eq!(
            shown_database_url("postgres://wharf@db/wharf"),
            "postgres://wharf@db/wharf"
        );
        assert_eq!(
            shown_database_url("sqlite://data/wharf.db"),
            "sqlite://data/wharf.db"
        );
    }
}
