//! The error type of the store, logins, homes and quotas, with messages a person can act on and
//! the protocol code a service sends for each.

use std::path::PathBuf;
use std::time::Duration;

use wharf_proto::ErrorCode;

use wharf_core::Service;
use wharf_core::size::format_size;

/// Result alias for wharf-store.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong with the store, a login, a home or a quota.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No user of that name.
    #[error("no user named {0:?}; `admin-cli user list` shows who exists")]
    NoSuchUser(String),
    /// A user of that name exists already.
    #[error(
        "a user named {0:?} already exists; pick another name or remove it first with `admin-cli user del`"
    )]
    UserExists(String),
    /// Input a person typed that Wharf cannot take (a name, a service, a
    /// size).
    #[error(transparent)]
    Input(#[from] wharf_core::Error),
    /// An SSH public key that cannot be taken, with why and what to give.
    #[error("invalid SSH public key: {0}")]
    InvalidKey(String),
    /// The user has that key already.
    #[error(
        "{user:?} already has the key {fingerprint}; `admin-cli user key list {user}` shows their keys"
    )]
    KeyExists {
        /// The user.
        user: String,
        /// The key's fingerprint.
        fingerprint: String,
    },
    /// The user has no key of that fingerprint.
    #[error("{user:?} has no key {fingerprint}; `admin-cli user key list {user}` shows their keys")]
    NoSuchKey {
        /// The user.
        user: String,
        /// The fingerprint asked for.
        fingerprint: String,
    },
    /// The user has as many keys as they may.
    #[error(
        "{user:?} has {max} keys, the most a user may have; remove one with `admin-cli user key rm` first"
    )]
    TooManyKeys {
        /// The user.
        user: String,
        /// The most.
        max: u64,
    },
    /// A password that is refused when set.
    #[error("password refused: {0}")]
    WeakPassword(&'static str),
    /// Wrong user name or password (deliberately not saying which).
    #[error("wrong user name or password")]
    AuthFailed,
    /// Too many failed logins from the client's address recently.
    #[error("too many failed logins from your address; try again in {}", humantime::format_duration(*retry_after))]
    RateLimited {
        /// When the next attempt from there will be considered.
        retry_after: Duration,
    },
    /// The user has as many sessions open as they may.
    #[error(
        "{user:?} has {open} sessions open, the most they may have at once ({max}); end one (log out, or quit a client left running) and try again"
    )]
    TooManySessions {
        /// The user.
        user: String,
        /// Sessions open now.
        open: u64,
        /// The most they may have.
        max: u64,
    },
    /// An administrator moved the home of a logged-in user.
    #[error("an administrator moved the home of {0:?}; connect again to work in the new one")]
    HomeMoved(String),
    /// An administrator removed the account while it was logged in.
    #[error("account {0:?} was removed by an administrator")]
    AccountRemoved(String),
    /// The account is locked by an administrator.
    #[error("account {0:?} is locked; ask an administrator to unlock it")]
    AccountLocked(String),
    /// The user lacks the right to this service.
    #[error(
        "user {user:?} may not use {service}; ask an administrator to run `admin-cli user grant {user} {service}`"
    )]
    NotPermitted {
        /// The user.
        user: String,
        /// The service asked for.
        service: Service,
    },
    /// A reservation that would go over the quota.
    #[error("over quota: this needs {} but only {} of the {} quota is free; delete files or ask an administrator to raise the quota", format_size(*needed), format_size(*free), format_size(*quota))]
    QuotaExceeded {
        /// Bytes asked for.
        needed: u64,
        /// Bytes still free.
        free: u64,
        /// The quota.
        quota: u64,
    },
    /// A new entry that would go over the file-count quota.
    #[error(
        "over the file quota: your home holds {held} of the {quota} entries (files, folders, links and interrupted uploads) it may; delete some, discard interrupted uploads, or ask an administrator to raise the quota"
    )]
    FileQuotaExceeded {
        /// Entries held now.
        held: u64,
        /// The quota, in entries.
        quota: u64,
    },
    /// The home could not be measured: it counts as over its quota until it
    /// can be.
    #[error(
        "the home of {user:?} could not be measured ({why}), so nothing more may be written to it; ask an administrator to run `admin-cli db check --fix`"
    )]
    HomeUnmeasured {
        /// The user.
        user: String,
        /// What went wrong.
        why: String,
    },
    /// Too many partial uploads held at once.
    #[error(
        "you have {max} interrupted or unfinished uploads, the most a user may; resume some, or discard them (`wharf-ftp partials`, `discard`)"
    )]
    TooManyPartials {
        /// The most there may be.
        max: u64,
    },
    /// The kernel refused a write: the file system holds the home to its
    /// quota (a btrfs qgroup) and it is full.
    #[error(
        "over quota: your home is full (the file system holds it to its quota, counting its own bookkeeping too); delete files or ask an administrator to raise the quota"
    )]
    DiskQuota,
    /// An administrator lowered the quota while an upload was under way,
    /// and the upload no longer fits.
    #[error("an administrator lowered your quota to {}, and this upload no longer fits; it stopped and nothing of it was kept; delete files or ask an administrator to raise the quota", format_size(*quota))]
    QuotaLowered {
        /// The new quota.
        quota: u64,
    },
    /// A file-system operation failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done: "create home directory".
        action: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// What this kind of database does with its own tools.
    #[error("{0}")]
    OtherTool(String),
    /// A database URL Wharf cannot use.
    #[error("cannot use that database URL: {0}")]
    BadDatabaseUrl(String),
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A migration failed to apply.
    #[error("cannot bring the database schema up to date: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A bug or resource failure inside wharf-store.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The code for a database failure: a database that is busy, read-only,
/// unreachable or failing is `unavailable` (a fault of the moment on the
/// server's side), one on a full disk `no_space`; anything else (a
/// constraint, a row that does not decode) is a bug: `internal`.
fn database_code(e: &sqlx::Error) -> ErrorCode {
    // SQLite's primary result codes (the low byte of an extended one).
    const BUSY: i64 = 5;
    const LOCKED: i64 = 6;
    const READONLY: i64 = 8;
    const IOERR: i64 = 10;
    const FULL: i64 = 13;
    const CANTOPEN: i64 = 14;
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            ErrorCode::Unavailable
        }
        sqlx::Error::Database(db) => {
            if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                // PostgreSQL's SQLSTATE classes: 53 insufficient resources
                // (53100 disk full), 08 connection, 57 operator intervention
                // (shutdown), 40 serialization or deadlock, 25006 read-only.
                let code = pg.code();
                return match code.get(..2) {
                    _ if code == "53100" => ErrorCode::NoSpace,
                    Some("08" | "57" | "40" | "53") => ErrorCode::Unavailable,
                    _ if code == "25006" => ErrorCode::Unavailable,
                    _ => ErrorCode::Internal,
                };
            }
            let primary = db
                .code()
                .and_then(|c| c.parse::<i64>().ok())
                .map(|c| c & 0xff);
            match primary {
                Some(FULL) => ErrorCode::NoSpace,
                Some(BUSY | LOCKED | READONLY | IOERR | CANTOPEN) => ErrorCode::Unavailable,
                _ => ErrorCode::Internal,
            }
        }
        _ => ErrorCode::Internal,
    }
}

impl Error {
    /// The protocol error code a service sends for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Input(e) => e.code(),
            Error::WeakPassword(_) | Error::InvalidKey(_) | Error::TooManyKeys { .. } => {
                ErrorCode::BadRequest
            }
            Error::KeyExists { .. } => ErrorCode::AlreadyExists,
            Error::NoSuchKey { .. } => ErrorCode::NotFound,
            Error::NoSuchUser(_) | Error::HomeMoved(_) => ErrorCode::NotFound,
            Error::UserExists(_) => ErrorCode::AlreadyExists,
            Error::AuthFailed => ErrorCode::AuthFailed,
            Error::RateLimited { .. } => ErrorCode::RateLimited,
            Error::TooManySessions { .. } => ErrorCode::TooManySessions,
            Error::AccountLocked(_) | Error::AccountRemoved(_) => ErrorCode::AccountLocked,
            Error::NotPermitted { .. } => ErrorCode::NotPermitted,
            Error::QuotaExceeded { .. }
            | Error::QuotaLowered { .. }
            | Error::FileQuotaExceeded { .. }
            | Error::DiskQuota
            | Error::TooManyPartials { .. }
            | Error::HomeUnmeasured { .. } => ErrorCode::QuotaExceeded,
            Error::Database(e) => database_code(e),
            Error::Io { .. }
            | Error::Migrate(_)
            | Error::Internal(_)
            | Error::BadDatabaseUrl(_)
            | Error::OtherTool(_) => ErrorCode::Internal,
        }
    }

    /// The message a service may send to a client: internal details (paths,
    /// SQL) stay in the server's log.
    pub fn client_message(&self) -> String {
        match (self, self.code()) {
            (_, ErrorCode::Internal) => {
                "internal server error; the administrator can find the details in the server log"
                    .to_owned()
            }
            (Error::Database(_), ErrorCode::NoSpace) => {
                "the server's database is on a full disk; nothing was changed; tell the administrator"
                    .to_owned()
            }
            (Error::Database(_), _) => {
                "the server cannot write its database just now (busy, read-only or failing); nothing was changed; try again in a moment, and tell the administrator if it lasts"
                    .to_owned()
            }
            _ => self.to_string(),
        }
    }

    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
