//! What every Wharf binary's command line shares: the database flags, the
//! connection-limit flags of the daemons, logging, and the client's password
//! and user name.

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::config::{DATA_DIR_ENV, DATABASE_URL_ENV, DEFAULT_DATA_DIR, database_url};
use crate::server::Limits;
use crate::tls::TlsError;
use crate::{AuthConfig, Authenticator, Password, Result, Store};

/// `--data-dir` and `--database-url`.
#[derive(Debug, Clone, clap::Args)]
pub struct DatabaseArgs {
    /// Data directory (holds the default database).
    #[arg(long, env = DATA_DIR_ENV, default_value = DEFAULT_DATA_DIR, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Database [default: sqlite://DATA_DIR/wharf.db].
    #[arg(long, env = DATABASE_URL_ENV, value_name = "URL")]
    pub database_url: Option<String>,
}

impl DatabaseArgs {
    /// The database URL these flags name.
    pub fn url(&self) -> String {
        database_url(self.database_url.as_deref(), &self.data_dir)
    }

    /// How the quota of the homes under the data directory is enforced, in
    /// the words of a banner.
    pub fn quota_enforcement(&self) -> String {
        crate::home::btrfs::describe(&self.data_dir.join("homes"))
    }

    /// What commands run through exec must never reach: the data directory
    /// and the folder of the database file.
    pub fn private_dirs(&self) -> Vec<PathBuf> {
        let url = self.url();
        let file = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .map(|rest| rest.split('?').next().unwrap_or(rest));
        let mut dirs = vec![self.data_dir.clone()];
        if let Some(folder) = file.and_then(|f| std::path::Path::new(f).parent()) {
            dirs.push(folder.to_path_buf());
        }
        dirs
    }

    /// Opens the database (migrating it) and an authenticator over it with
    /// this login policy; warns when there is nobody to log in yet.
    pub async fn open(&self, policy: AuthConfig) -> Result<(Store, Authenticator)> {
        let url = self.url();
        let (store, auth) = self.open_quietly(policy).await?;
        if store.has_no_users().await? {
            tracing::warn!(
                "the database has no users yet; add one with `admin-cli --database-url {} user add NAME`",
                crate::config::shown_database_url(&url)
            );
        }
        Ok((store, auth))
    }

    /// Opens the database (migrating it) and an authenticator over it with
    /// this login policy.
    pub async fn open_quietly(&self, policy: AuthConfig) -> Result<(Store, Authenticator)> {
        let store = Store::open(&self.url()).await?;
        let auth = Authenticator::new(store.clone(), policy).await?;
        Ok((store, auth))
    }
}

/// The connection limits of a daemon.
#[derive(Debug, Clone, clap::Args)]
pub struct LimitArgs {
    /// Connections at once, over all clients.
    #[arg(long, default_value_t = 1024, value_name = "N")]
    pub max_connections: usize,
    /// Connections at once from one IP address.
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub max_per_ip: usize,
    /// Connections not logged in yet, at once; past it the oldest of them
    /// is dropped (a flood of idle connections never blocks a login).
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub max_unauthenticated: usize,
    /// Time allowed from connecting to logging in.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub login_timeout: Duration,
    /// Time a logged-in client may stay silent.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub idle_timeout: Duration,
    /// On SIGINT/SIGTERM, how long sessions may finish.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub shutdown_grace: Duration,
    /// Failed logins one address (an IPv6 /64) may make in a minute; past
    /// that it is refused for a minute, doubling with each further burst.
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub login_failures_per_minute: u32,
    /// The longest an address is refused for failed logins.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub login_penalty_max: Duration,
    /// A TCP load balancer's address (or network, 10.0.0.0/24): its
    /// connections must start with a PROXY protocol v2 header (HAProxy's
    /// `send-proxy-v2`), whose client address then counts for every limit
    /// and login penalty. Repeat for several. Never a network clients
    /// connect from: they could claim any address.
    #[arg(long, value_name = "ADDRESS[/PREFIX]")]
    pub proxy_protocol_from: Vec<crate::proxy_protocol::Network>,
    /// Upload rate of a user, over all their sessions in this process
    /// (4MiB, 500KiB/s), for users without one of their own (`admin-cli
    /// user limit NAME --upload-rate`). Unlimited when not given.
    #[arg(long, value_parser = crate::size::parse_rate, value_name = "RATE")]
    pub upload_rate: Option<u64>,
    /// Download rate of a user, as --upload-rate.
    #[arg(long, value_parser = crate::size::parse_rate, value_name = "RATE")]
    pub download_rate: Option<u64>,
    /// Sessions a user may have at once, over every service and every
    /// server process on the database, for users without a number of their
    /// own (`admin-cli user limit NAME --max-sessions`). Unlimited when not
    /// given.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..), value_name = "N")]
    pub max_sessions: Option<u64>,
}

impl LimitArgs {
    /// The login policy these flags set.
    pub fn login_policy(&self) -> AuthConfig {
        AuthConfig {
            source_max_failures: self.login_failures_per_minute.max(1),
            source_window: Duration::from_secs(60),
            source_max_penalty: self.login_penalty_max,
            user_limits: crate::store::UserLimits {
                upload_rate: self.upload_rate,
                download_rate: self.download_rate,
                max_sessions: self.max_sessions,
            },
            ..AuthConfig::default()
        }
    }

    /// The limits these flags set.
    pub fn limits(&self) -> Limits {
        Limits {
            max_connections: self.max_connections,
            max_per_ip: self.max_per_ip,
            max_unauthenticated: self.max_unauthenticated,
            login_timeout: self.login_timeout,
            idle_timeout: self.idle_timeout,
            shutdown_grace: self.shutdown_grace,
            proxy_protocol_from: self.proxy_protocol_from.clone(),
        }
    }
}

/// Runs a binary's async body on a tokio runtime; an error is printed on
/// one line as `program: what went wrong` and exits with 1 (or the code of
/// [`exit_code_of`]).
pub fn run_main<E: Into<Box<dyn std::error::Error + Send + Sync>>>(
    program: &str,
    body: impl Future<Output = std::result::Result<ExitCode, E>>,
) -> ExitCode {
    finish(program, 1, true, body)
}

/// [`run_main`] for a program whose own failures all end with `failure`
/// (`wharf-exec`: 255, as ssh, since 0 to 254 are the remote command's),
/// a changed server certificate included.
pub fn run_main_failing_with<E: Into<Box<dyn std::error::Error + Send + Sync>>>(
    program: &str,
    failure: u8,
    body: impl Future<Output = std::result::Result<ExitCode, E>>,
) -> ExitCode {
    finish(program, failure, false, body)
}

fn finish<E: Into<Box<dyn std::error::Error + Send + Sync>>>(
    program: &str,
    failure: u8,
    own_codes: bool,
    body: impl Future<Output = std::result::Result<ExitCode, E>>,
) -> ExitCode {
    quiet_broken_pipe();
    let result = match tokio::runtime::Runtime::new() {
        Ok(rt) => {
            let result = rt.block_on(body);
            // A read of standard input still blocked in its thread (a chat
            // session the server ended while the user was not typing) must
            // not hold the exit until the next line.
            rt.shutdown_background();
            result
        }
        Err(e) => {
            eprintln!("{program}: cannot start the async runtime: {e}");
            return ExitCode::from(failure);
        }
    };
    result.unwrap_or_else(|e| {
        let e: Box<dyn std::error::Error + Send + Sync> = e.into();
        let own = report(program, e.as_ref()).filter(|_| own_codes);
        ExitCode::from(own.unwrap_or(failure))
    })
}

/// Exit status of a program whose output pipe was closed (what a shell
/// reports for a program killed by SIGPIPE).
pub const BROKEN_PIPE_EXIT: i32 = 141;

/// Makes a closed standard output (`admin-cli user list | head -1`) end
/// the program quietly, as it ends `ls` or `cat`, instead of with a panic
/// message: Rust ignores SIGPIPE, so `println!` panics on a closed pipe.
pub fn quiet_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(BROKEN_PIPE_EXIT);
        }
        default(info);
    }));
}

/// Prints `err` with its causes on stderr, as `program: what: why`, on one
/// line, but for a changed server certificate, whose warning keeps its
/// lines. Returns the error's own exit code, if it has one.
pub fn report(program: &str, err: &(dyn std::error::Error + 'static)) -> Option<u8> {
    let own = exit_code_of(err);
    let text = describe(err);
    if own.is_some() {
        eprintln!("{program}: {text}");
    } else {
        eprintln!("{program}: {}", text.replace('\n', " "));
    }
    own
}

/// `err` and its causes as `what: why: why`, each said once (a cause
/// that its error's own message already quotes is not repeated).
pub fn describe(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

/// The exit code a client ends with for `err` (looked for along its
/// causes), when it has its own: a changed server certificate.
pub fn exit_code_of(err: &(dyn std::error::Error + 'static)) -> Option<u8> {
    let mut cause = Some(err);
    while let Some(c) = cause {
        if let Some(code) = c.downcast_ref::<TlsError>().and_then(TlsError::exit_code) {
            return Some(code);
        }
        if let Some(code) = c
            .downcast_ref::<crate::client::SessionError>()
            .and_then(crate::client::SessionError::exit_code)
        {
            return Some(code);
        }
        cause = c.source();
    }
    None
}

/// How a daemon writes its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Lines for people: time, level, message, fields.
    Text,
    /// One JSON object per line (for journald and log shippers): `timestamp`,
    /// `level`, `target`, `message` and the event's fields.
    Json,
}

/// What is logged unless `RUST_LOG` says otherwise: Wharf's own lines at
/// `info`; nothing of libunftp's (its per-command chatter, and spans whose
/// fields print a whole session with `Debug`): the standard FTP listener
/// logs its logins, transfers and refusals itself, one line each.
pub const DEFAULT_LOG_FILTER: &str = "info,sqlx::postgres::notice=warn,libunftp=off,unftp_core=off";

/// Logs to stderr at `info`, or as `RUST_LOG` says, as text (in colour
/// only on a terminal, and never with `NO_COLOR` set,
/// https://no-color.org) or as JSON lines.
pub fn init_tracing(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => {
            let colour = std::io::stderr().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
            builder.with_ansi(colour).init();
        }
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
}

/// Why a client has no credentials.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// No `--user`, `WHARF_USER` or `USER`.
    #[error("no user name: pass --user NAME or set WHARF_USER")]
    NoUser,
    /// No `WHARF_PASSWORD` and no terminal to ask on.
    #[error("no password: set WHARF_PASSWORD or run in a terminal ({0})")]
    NoPassword(std::io::Error),
    /// A new password was to be asked for, and there is no terminal.
    #[error("no terminal to ask for the new password on; pipe it in with --password-stdin")]
    NoTerminal,
    /// The new password, typed twice, differed.
    #[error("the two passwords differ; nothing was changed, try again")]
    Mismatch,
    /// The new password could not be read.
    #[error("cannot read the new password: {0}")]
    Unreadable(std::io::Error),
}

/// Reads a new password for `user`: one line of standard input with
/// `from_stdin`, else asked twice on the terminal.
pub fn read_new_password(
    user: &str,
    from_stdin: bool,
) -> std::result::Result<Password, CredentialsError> {
    use std::io::{BufRead, IsTerminal};
    if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(CredentialsError::Unreadable)?;
        let line = line.strip_suffix('\n').unwrap_or(&line);
        let line = line.strip_suffix('\r').unwrap_or(line);
        return Ok(Password::new(line));
    }
    if !std::io::stdin().is_terminal() {
        return Err(CredentialsError::NoTerminal);
    }
    let ask =
        |prompt: String| rpassword::prompt_password(prompt).map_err(CredentialsError::Unreadable);
    let first = ask(format!("New password for {user}: "))?;
    let second = ask("Repeat the password: ".to_owned())?;
    if first != second {
        return Err(CredentialsError::Mismatch);
    }
    Ok(Password::new(first))
}

/// The user to log in as: the flag, else `$USER`.
pub fn client_user(given: Option<String>) -> std::result::Result<String, CredentialsError> {
    given
        .or_else(|| std::env::var("USER").ok())
        .filter(|u| !u.is_empty())
        .ok_or(CredentialsError::NoUser)
}

/// The password: `WHARF_PASSWORD` when set and not empty, else asked on
/// the terminal.
pub fn client_password(
    user: &str,
    server: &str,
) -> std::result::Result<Password, CredentialsError> {
    if let Ok(pw) = std::env::var("WHARF_PASSWORD")
        && !pw.is_empty()
    {
        return Ok(Password::new(pw));
    }
    rpassword::prompt_password(format!("Password for {user} at {server}: "))
        .map(Password::new)
        .map_err(CredentialsError::NoPassword)
}

/// Passwords a login may try when they are typed at the terminal, as ssh.
pub const PASSWORD_TRIES: u32 = 3;

/// Why [`log_in`] failed.
#[derive(Debug, thiserror::Error)]
pub enum LogInError<E: std::error::Error + 'static> {
    /// No password to try.
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    /// The login itself.
    #[error("cannot log in to {server} as {user}")]
    Login {
        /// The server tried.
        server: String,
        /// The user.
        user: String,
        /// What went wrong.
        #[source]
        source: E,
    },
}

/// Logs in with [`client_password`]'s password: `attempt` connects with
/// it. A password typed at the terminal that the server calls wrong
/// (`is_wrong`) is asked again, [`PASSWORD_TRIES`] in all, as ssh does; one
/// from `WHARF_PASSWORD` is tried once. The client and the password that
/// worked.
pub async fn log_in<T, E, Fut>(
    user: &str,
    server: &str,
    mut attempt: impl FnMut(Password) -> Fut,
    is_wrong: impl Fn(&E) -> bool,
) -> std::result::Result<(T, Password), LogInError<E>>
where
    E: std::error::Error + 'static,
    Fut: Future<Output = std::result::Result<T, E>>,
{
    let typed = std::env::var("WHARF_PASSWORD").map_or(true, |p| p.is_empty());
    let mut tries = 0;
    loop {
        let password = client_password(user, server)?;
        tries += 1;
        match attempt(password.clone()).await {
            Ok(client) => return Ok((client, password)),
            Err(e) if typed && tries < PASSWORD_TRIES && is_wrong(&e) => {
                eprintln!("wrong user name or password; try again");
            }
            Err(source) => {
                return Err(LogInError::Login {
                    server: server.to_owned(),
                    user: user.to_owned(),
                    source,
                });
            }
        }
    }
}

/// Wharf's folder in one of the user's XDG directories: `$XDG_VAR/wharf`,
/// else `~/UNDER_HOME/wharf` (`.config`, `.local/share`).
pub fn user_dir(xdg_var: &str, under_home: &str) -> Option<std::path::PathBuf> {
    use std::path::PathBuf;
    let base = std::env::var_os(xdg_var)
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|d| !d.is_empty())
                .map(|h| PathBuf::from(h).join(under_home))
        })?;
    Some(base.join("wharf"))
}

/// What [`parse_client`] fills in from the config file, and the docs
/// flags it answers.
pub struct ClientFields<'a> {
    /// `--server`.
    pub server: &'a mut String,
    /// `--user`.
    pub user: &'a mut Option<String>,
    /// `--ca`.
    pub ca: &'a mut Option<std::path::PathBuf>,
    /// `--completions`, `--man`.
    pub docs: &'a DocsArgs,
}

/// Parses a client's command line: a usage error exits with
/// `usage_failure` (clap's message printed), `--completions` and `--man`
/// print and exit 0, and what the flags and environment left to defaults is
/// taken from the config file for `service`. A bad config file is said and
/// exits with 1 (with `usage_failure` when that is not clap's 2:
/// `wharf-exec` ends every failure of its own with 255).
pub fn parse_client<A: clap::Parser>(
    program: &str,
    service: &str,
    usage_failure: i32,
    fields: impl FnOnce(&mut A) -> ClientFields<'_>,
) -> A {
    let usage = |e: clap::Error| -> ! {
        let _ = e.print();
        std::process::exit(if e.use_stderr() { usage_failure } else { 0 });
    };
    let matches = A::command().try_get_matches().unwrap_or_else(|e| usage(e));
    let mut args = A::from_arg_matches(&matches).unwrap_or_else(|e| usage(e));
    let f = fields(&mut args);
    match f.docs.print::<A>() {
        Ok(true) => std::process::exit(0),
        Ok(false) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => {
            eprintln!("{program}: cannot print it: {e}");
            std::process::exit(1);
        }
    }
    if let Err(e) = crate::client_config::apply(&matches, service, f.server, f.user, f.ca) {
        eprintln!("{program}: {e}");
        std::process::exit(if usage_failure == 2 { 1 } else { usage_failure });
    }
    args
}

/// The flags that print a client's shell completions or man page.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DocsArgs {
    /// Print completions for SHELL (bash, zsh, fish, elvish, powershell)
    /// and exit.
    #[arg(long, value_name = "SHELL")]
    pub completions: Option<clap_complete::Shell>,
    /// Print the man page (roff) and exit.
    #[arg(long)]
    pub man: bool,
}

impl DocsArgs {
    /// Prints what was asked for the program `A`; true when something was
    /// asked (the program then exits).
    pub fn print<A: clap::CommandFactory>(&self) -> std::io::Result<bool> {
        use std::io::Write;
        let Some(text) = self.text(A::command())? else {
            return Ok(false);
        };
        let mut out = std::io::stdout().lock();
        out.write_all(&text)?;
        out.flush()?;
        Ok(true)
    }

    /// What was asked for `cmd`, if anything.
    pub fn text(&self, mut cmd: clap::Command) -> std::io::Result<Option<Vec<u8>>> {
        let name = cmd.get_name().to_owned();
        // Made in memory first: clap_complete panics on a failed write (a
        // closed pipe, say), and a failed write here is just an error.
        let mut text = Vec::new();
        if let Some(shell) = self.completions {
            clap_complete::generate(shell, &mut cmd, name, &mut text);
        } else if self.man {
            man_page(cmd, &mut text)?;
        } else {
            return Ok(None);
        }
        Ok(Some(text))
    }
}

/// One man page for `cmd` and all its subcommands: each subcommand's
/// synopsis, description and options in a section of its own, where clap's
/// page would point to `NAME-SUB(1)` pages that are never made.
pub fn man_page(cmd: clap::Command, out: &mut Vec<u8>) -> std::io::Result<()> {
    let mut cmd = cmd;
    cmd.build();
    let name = cmd.get_name().to_owned();
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut page)?;
    let mut page = String::from_utf8_lossy(&page).into_owned();
    let subs: Vec<clap::Command> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
        .cloned()
        .collect();
    // clap's own `help` subcommand is said in the list, with no page.
    let help_ref = format!("{name}-help(1)").replace('-', "\\-");
    page = page.replace(
        &help_ref,
        &format!("\\fB{}\\fR", format!("{name} help").replace('-', "\\-")),
    );
    for sub in &subs {
        // The list of subcommands names the section below, not a page.
        let page_ref = format!("{name}-{}(1)", sub.get_name()).replace('-', "\\-");
        let here = format!("{name} {}", sub.get_name()).replace('-', "\\-");
        page = page.replace(&page_ref, &format!("\\fB{here}\\fR (below)"));
    }
    out.extend_from_slice(page.as_bytes());
    subcommand_sections(&name, subs, out)
}

/// A section per subcommand (and theirs, in turn), titled by its full name.
fn subcommand_sections(
    parent: &str,
    subs: Vec<clap::Command>,
    out: &mut Vec<u8>,
) -> std::io::Result<()> {
    for sub in subs {
        let full = format!("{parent} {}", sub.get_name());
        let sub = sub.bin_name(full.clone());
        let mut part = Vec::new();
        let man = clap_mangen::Man::new(sub.clone());
        man.render_synopsis_section(&mut part)?;
        man.render_description_section(&mut part)?;
        if sub.get_arguments().any(|a| !a.is_hide_set()) {
            man.render_options_section(&mut part)?;
        }
        let part = String::from_utf8_lossy(&part).replace("\n.SH ", "\n.SS ");
        let part = part
            .strip_prefix(".SH ")
            .map_or(part.clone(), |p| format!(".SS {p}"));
        out.extend_from_slice(
            format!(".SH \"{}\"\n", full.to_uppercase().replace('-', "\\-")).as_bytes(),
        );
        out.extend_from_slice(part.as_bytes());
        let nested: Vec<clap::Command> = sub
            .get_subcommands()
            .filter(|s| !s.is_hide_set() && s.get_name() != "help")
            .cloned()
            .collect();
        subcommand_sections(&full, nested, out)?;
    }
    Ok(())
}
