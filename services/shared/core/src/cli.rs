//! What every Wharf binary's command line shares: running the program and
//! reporting its error, a new password typed twice, the user's folders,
//! and the `--completions`/`--man` flags. The daemons' flags live in
//! `wharf-server`, the clients' log-in in `wharf-client`.

use std::future::Future;
use std::process::ExitCode;

use crate::Password;

/// Finds an error's own exit code along its causes, when it has one (a
/// client's changed server certificate: `wharf-client`'s `exit_code_of`).
pub type OwnExitCode = fn(&(dyn std::error::Error + 'static)) -> Option<u8>;

/// Runs a binary's async body on a tokio runtime; an error is printed on
/// one line as `program: what went wrong` and exits with 1.
pub fn run_main<E: Into<Box<dyn std::error::Error + Send + Sync>>>(
    program: &str,
    body: impl Future<Output = std::result::Result<ExitCode, E>>,
) -> ExitCode {
    run_program(program, 1, |_| None, true, Threads::PerCore, body)
}

/// What a program's async runtime runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threads {
    /// A worker thread per core: the daemons, serving many connections.
    PerCore,
    /// The main thread alone (blocking work still goes to tokio's blocking
    /// threads): a client, whose connection's events then need no other
    /// thread woken. With workers, the main thread blocked in `block_on`
    /// was woken by a worker for each of them: streaming 1 GiB of a
    /// command's output, 12,000 futex calls and a third of the client's
    /// time in the scheduler.
    Main,
}

/// Runs a binary's async body on a tokio runtime. An error is printed by
/// [`report`] and ends the program with `failure`, or with the error's own
/// code (`own_code`) when `use_own_codes`.
pub fn run_program<E: Into<Box<dyn std::error::Error + Send + Sync>>>(
    program: &str,
    failure: u8,
    own_code: OwnExitCode,
    use_own_codes: bool,
    threads: Threads,
    body: impl Future<Output = std::result::Result<ExitCode, E>>,
) -> ExitCode {
    quiet_broken_pipe();
    let runtime = match threads {
        Threads::PerCore => tokio::runtime::Runtime::new(),
        Threads::Main => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
    };
    let result = match runtime {
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
        let own = report(program, e.as_ref(), own_code).filter(|_| use_own_codes);
        ExitCode::from(own.unwrap_or(failure))
    })
}

/// Prints `err` with its causes on stderr, as `program: what: why`, on one
/// line, but for an error with its own exit code (a changed server
/// certificate), whose warning keeps its lines. Returns that code.
pub fn report(
    program: &str,
    err: &(dyn std::error::Error + 'static),
    own_code: OwnExitCode,
) -> Option<u8> {
    let own = own_code(err);
    let text = describe(err);
    if own.is_some() {
        eprintln!("{program}: {text}");
    } else {
        eprintln!("{program}: {}", text.replace('\n', " "));
    }
    own
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
