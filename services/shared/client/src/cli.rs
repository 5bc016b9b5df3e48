//! The clients' command line: running a client (with the exit code of a
//! changed server certificate), the user name and password, the log-in
//! with retries as ssh does, and the config file's defaults.

use std::future::Future;
use std::process::ExitCode;

use wharf_core::Password;

use crate::identity::{Credential, IdentityError, identities};
pub use wharf_core::cli::CredentialsError;
use wharf_core::cli::{DocsArgs, Threads};

use crate::tls::TlsError;

/// Runs a client's async body on a tokio runtime
/// ([`wharf_core::cli::run_program`]): an error is printed on one line and
/// exits with 1, or with its own code ([`exit_code_of`]).
pub fn run_main<E: Into<Box<dyn std::error::Error + Send + Sync>>>(
    program: &str,
    body: impl Future<Output = std::result::Result<ExitCode, E>>,
) -> ExitCode {
    wharf_core::cli::run_program(program, 1, exit_code_of, true, Threads::Main, body)
}

/// [`run_main`] for a program whose own failures all end with `failure`
/// (`wharf-exec`: 255, as ssh, since 0 to 254 are the remote command's),
/// a changed server certificate included.
pub fn run_main_failing_with<E: Into<Box<dyn std::error::Error + Send + Sync>>>(
    program: &str,
    failure: u8,
    body: impl Future<Output = std::result::Result<ExitCode, E>>,
) -> ExitCode {
    wharf_core::cli::run_program(program, failure, exit_code_of, false, Threads::Main, body)
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
            .downcast_ref::<crate::session::SessionError>()
            .and_then(crate::session::SessionError::exit_code)
        {
            return Some(code);
        }
        cause = c.source();
    }
    None
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
    /// The key given cannot be used.
    #[error(transparent)]
    Identity(#[from] IdentityError),
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

/// How a client logs in.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct LoginArgs {
    /// Log in with this key (an OpenSSH private key, as ssh's -i; its
    /// passphrase is asked, or ssh-agent signs when it holds the key),
    /// and with nothing else [default: the keys of ssh-agent and
    /// ~/.ssh/id_ed25519, then the password].
    #[arg(long, env = "WHARF_IDENTITY", value_name = "FILE")]
    pub identity: Option<std::path::PathBuf>,
}

/// Logs in: by key first (see [`identities`]), then with
/// [`client_password`]'s password. `attempt` connects with a credential.
/// A key the server does not know for the user is passed over; a password
/// typed at the terminal that the server calls wrong (`is_wrong`) is asked
/// again, [`PASSWORD_TRIES`] in all, as ssh does; one from
/// `WHARF_PASSWORD` is tried once. With `--identity`, that key alone is
/// tried. The client and the credential that worked.
pub async fn log_in<T, E, Fut>(
    user: &str,
    server: &str,
    how: &LoginArgs,
    mut attempt: impl FnMut(Credential) -> Fut,
    is_wrong: impl Fn(&E) -> bool,
) -> std::result::Result<(T, Credential), LogInError<E>>
where
    E: std::error::Error + 'static,
    Fut: Future<Output = std::result::Result<T, E>>,
{
    let failed = |source| LogInError::Login {
        server: server.to_owned(),
        user: user.to_owned(),
        source,
    };
    let keys = identities(how.identity.as_deref()).await?;
    for key in keys {
        let credential = Credential::Key(key);
        match attempt(credential.clone()).await {
            Ok(client) => return Ok((client, credential)),
            Err(e) if is_wrong(&e) && how.identity.is_none() => {}
            Err(e) => return Err(failed(e)),
        }
    }
    let typed = std::env::var("WHARF_PASSWORD").map_or(true, |p| p.is_empty());
    let mut tries = 0;
    loop {
        let password = Credential::Password(client_password(user, server)?);
        tries += 1;
        match attempt(password.clone()).await {
            Ok(client) => return Ok((client, password)),
            Err(e) if typed && tries < PASSWORD_TRIES && is_wrong(&e) => {
                eprintln!("wrong user name or password; try again");
            }
            Err(source) => return Err(failed(source)),
        }
    }
}

/// The password to confirm a change of password with: the one the login
/// took, or (logged in by key) one asked for.
pub fn current_password(
    logged_in_with: &Credential,
    user: &str,
    server: &str,
) -> std::result::Result<Password, CredentialsError> {
    match logged_in_with {
        Credential::Password(password) => Ok(password.clone()),
        Credential::Key(_) => client_password(user, server),
    }
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
    if let Err(e) = crate::config::apply(&matches, service, f.server, f.user, f.ca) {
        eprintln!("{program}: {e}");
        std::process::exit(if usage_failure == 2 { 1 } else { usage_failure });
    }
    args
}
