//! The command line, as clap sees it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use wharf_core::config::DATA_DIR_ENV;
use wharf_core::config::DATABASE_URL_ENV;
use wharf_core::config::DEFAULT_DATA_DIR;
use wharf_core::config::DEFAULT_FILE_QUOTA;
use wharf_core::config::DEFAULT_QUOTA;

const AFTER_HELP: &str = "\
Sizes: 500MiB, 2G (powers of 1024), 1.5GB (powers of 1000), 1048576 (bytes), unlimited.
Services: ftp, chat, exec. Passwords are never taken as arguments: they are
prompted for twice on a terminal, or read from standard input with --password-stdin.

Exit codes: 0 success, 1 failure, 2 usage error, 3 no such user or key, 4 already exists.

Examples:
  admin-cli user add alice --quota 2G
  echo 'correct horse battery' | admin-cli user add bob --password-stdin --services ftp,chat,exec
  admin-cli user grant alice exec
  admin-cli user key add alice ~alice/.ssh/id_ed25519.pub
  admin-cli usage --rescan
  admin-cli tls fingerprint
  admin-cli ssh fingerprint
  admin-cli db backup backups/wharf-2026-12-01.db
  admin-cli db check
  admin-cli db copy --to postgres://wharf@db.example/wharf";

/// Manage Wharf's users, quotas, homes and service rights, and read usage reports.
#[derive(Debug, Parser)]
#[command(name = "admin-cli", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// Database to manage [default: sqlite://DATA_DIR/wharf.db].
    #[arg(long, global = true, env = DATABASE_URL_ENV, value_name = "URL")]
    pub database_url: Option<String>,

    /// Data directory; new homes go to DIR/homes/NAME.
    #[arg(long, global = true, env = DATA_DIR_ENV, default_value = DEFAULT_DATA_DIR, value_name = "DIR")]
    pub data_dir: PathBuf,

    #[command(flatten)]
    pub docs: wharf_core::cli::DocsArgs,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Add, inspect, change and remove users.
    #[command(subcommand)]
    User(UserCommand),
    /// Change quotas.
    #[command(subcommand)]
    Quota(QuotaCommand),
    /// Change home directories.
    #[command(subcommand)]
    Home(HomeCommand),
    /// Usage report: quota, space used, transfers, chat and commands per user.
    Usage(UsageArgs),
    /// The servers' TLS certificate.
    #[command(subcommand)]
    Tls(TlsCommand),
    /// The SSH door's host key.
    #[command(subcommand)]
    Ssh(SshCommand),
    /// The database itself.
    #[command(subcommand)]
    Db(DbCommand),
}

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Copy every user, right, quota, usage record, chat message and command
    /// log of this database (--database-url) into a new, empty one, ids
    /// kept: how Wharf moves from SQLite to PostgreSQL. Stop the services
    /// first; then start them with --database-url set to the new one.
    Copy {
        /// The database to fill (postgres://USER@HOST/DATABASE or
        /// sqlite://FILE); its tables are made, and it must hold no user.
        #[arg(long, value_name = "URL")]
        to: String,
    },
    /// Write a consistent copy of the database to FILE while the services
    /// run (SQLite; PostgreSQL is backed up with pg_dump), then check the
    /// copy. FILE must not exist; it is readable by you only.
    Backup {
        /// Where the copy goes.
        file: PathBuf,
    },
    /// Check the database: its integrity, and each user's quota
    /// bookkeeping against what their home holds. Changes nothing unless
    /// --fix is given. Exits 1 when something is wrong.
    Check {
        /// Store what the homes hold as each user's usage (as `usage
        /// --rescan` does) where it differs. Run it with no upload in
        /// progress: an upload's reservation counts as a difference.
        #[arg(long)]
        fix: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum TlsCommand {
    /// Print the SHA-256 fingerprint of the servers' certificate, for users
    /// to compare with what their client shows at the first connection.
    Fingerprint {
        /// Certificate (PEM) [default: DATA_DIR/tls/server.crt, made by the daemons].
        #[arg(long, value_name = "FILE")]
        cert: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum SshCommand {
    /// Print the SHA256 fingerprint of the SSH door's host key, as
    /// ssh-keygen -lf prints it, for users to compare with what ssh shows
    /// at their first connection.
    Fingerprint {
        /// The host key [default: DATA_DIR/ssh/ssh_host_ed25519_key, made by
        /// wharf-sshd or wharfd --ssh-listen].
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user and create their home directory.
    Add(AddArgs),
    /// List every user.
    List(JsonFlag),
    /// Show one user.
    Show {
        /// User name.
        name: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Remove a user and their records (the home stays unless --purge-home).
    Del {
        /// User name.
        name: String,
        /// Also delete the home directory and everything in it (asked first
        /// on a terminal; elsewhere --yes is needed).
        #[arg(long)]
        purge_home: bool,
        /// Do not ask: yes, purge the home.
        #[arg(long, short = 'y', requires = "purge_home")]
        yes: bool,
    },
    /// Set a new password.
    Passwd {
        /// User name.
        name: String,
        #[command(flatten)]
        password: PasswordArgs,
    },
    /// Lock an account: no login anywhere until unlocked.
    Lock {
        /// User name.
        name: String,
    },
    /// Unlock an account, and lift a lockout after failed logins.
    Unlock {
        /// User name.
        name: String,
    },
    /// Allow a user a service (ftp, chat, exec).
    Grant {
        /// User name.
        name: String,
        /// ftp, chat or exec.
        service: String,
    },
    /// Set a user's limits: transfer rates over all their sessions, and
    /// sessions at once over every service; `none` clears one (the
    /// servers' default then holds: --upload-rate, --download-rate,
    /// --max-sessions).
    Limit {
        /// User name.
        name: String,
        #[command(flatten)]
        limits: LimitFlags,
    },
    /// Withdraw a service from a user.
    Revoke {
        /// User name.
        name: String,
        /// ftp, chat or exec.
        service: String,
    },
    /// A user's SSH public keys, for logging in without a password.
    #[command(subcommand)]
    Key(KeyCommand),
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Give a user the public keys in FILE (OpenSSH lines, as in
    /// ~/.ssh/id_ed25519.pub or authorized_keys; `-` reads standard input).
    Add {
        /// User name.
        name: String,
        /// The public key file, or `-`.
        file: PathBuf,
    },
    /// List a user's keys: type, SHA256 fingerprint, comment, when added
    /// and last used.
    List {
        /// User name.
        name: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Take a key from a user, by its fingerprint (as `user key list` or
    /// `ssh-keygen -lf` shows it, with or without `SHA256:`).
    Rm {
        /// User name.
        name: String,
        /// The key's SHA256 fingerprint.
        fingerprint: String,
    },
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// User name: 1-32 of a-z 0-9 _ . - starting with a letter.
    pub name: String,
    #[command(flatten)]
    pub password: PasswordArgs,
    /// Byte quota (a size or "unlimited").
    #[arg(long, default_value = DEFAULT_QUOTA, value_name = "SIZE")]
    pub quota: String,
    /// File quota: how many entries (files, folders, links, interrupted
    /// uploads) the home may hold, or "unlimited".
    #[arg(long, default_value = DEFAULT_FILE_QUOTA, value_name = "N")]
    pub files: String,
    /// Home directory [default: DATA_DIR/homes/NAME]; created if missing.
    #[arg(long, value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// Services the user may use, comma separated.
    #[arg(long, default_value = "ftp,chat", value_name = "LIST")]
    pub services: String,
    #[command(flatten)]
    pub limits: LimitFlags,
}

/// A user's limits, as `user add` and `user limit` take them.
#[derive(Debug, Args)]
pub struct LimitFlags {
    /// Upload rate over all the user's sessions (4MiB, 500KiB/s), or none.
    #[arg(long, value_parser = parse_limit_rate, value_name = "RATE")]
    pub upload_rate: Option<Cleared>,
    /// Download rate over all the user's sessions, or none.
    #[arg(long, value_parser = parse_limit_rate, value_name = "RATE")]
    pub download_rate: Option<Cleared>,
    /// Sessions at once over every service and server process, or none.
    #[arg(long, value_parser = parse_limit_count, value_name = "N")]
    pub max_sessions: Option<Cleared>,
}

/// A limit given on the command line: a value, or `none` (cleared).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cleared(pub Option<u64>);

fn parse_limit_rate(s: &str) -> Result<Cleared, String> {
    if s.trim().eq_ignore_ascii_case("none") {
        return Ok(Cleared(None));
    }
    wharf_core::size::parse_rate(s)
        .map(|r| Cleared(Some(r)))
        .map_err(|e| e.to_string())
}

fn parse_limit_count(s: &str) -> Result<Cleared, String> {
    if s.trim().eq_ignore_ascii_case("none") {
        return Ok(Cleared(None));
    }
    match s.trim().parse::<u64>() {
        Ok(n) if n > 0 => Ok(Cleared(Some(n))),
        _ => Err(format!("{s:?} is not a number above 0 or `none`")),
    }
}

impl LimitFlags {
    /// The change these flags ask for.
    pub fn change(&self) -> wharf_store::db::LimitChange {
        wharf_store::db::LimitChange {
            upload_rate: self.upload_rate.map(|c| c.0),
            download_rate: self.download_rate.map(|c| c.0),
            max_sessions: self.max_sessions.map(|c| c.0),
        }
    }
}

#[derive(Debug, Args)]
pub struct PasswordArgs {
    /// Read the password from the first line of standard input instead of prompting.
    #[arg(long)]
    pub password_stdin: bool,
}

#[derive(Debug, Args)]
pub struct JsonFlag {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum QuotaCommand {
    /// Set a user's quota (a size or "unlimited"), and with --files their
    /// file quota.
    Set {
        /// User name.
        name: String,
        /// 500MiB, 2G, 1.5GB, 1048576 or unlimited.
        size: String,
        /// How many entries (files, folders, links, interrupted uploads)
        /// the home may hold, or "unlimited"; left as it is when not given.
        #[arg(long, value_name = "N")]
        files: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum HomeCommand {
    /// Point a user at another home directory (created if missing); with
    /// --move the files go along (asked on a terminal otherwise).
    Set {
        /// User name.
        name: String,
        /// The new home directory.
        dir: PathBuf,
        /// Move the old home's files into the new one (which must be new
        /// or empty).
        #[arg(long = "move")]
        move_files: bool,
    },
}

#[derive(Debug, Args)]
pub struct UsageArgs {
    /// Only this user, with their latest transfers and commands.
    pub name: Option<String>,
    /// Measure the homes again before reporting (fixes drifted numbers).
    #[arg(long)]
    pub rescan: bool,
    /// Count activity only this far back: 1h, 7d, 30days.
    #[arg(long, value_name = "DURATION")]
    pub since: Option<String>,
    #[command(flatten)]
    pub json: JsonFlag,
}
