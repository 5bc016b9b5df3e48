//! `admin-cli`: Wharf's administration tool. Thin glue over wharf-core: parse
//! the command line, run one command against the database, turn the error
//! (if any) into one line on stderr and a distinct exit code.

mod cli;
mod commands;
mod password;
mod view;

use std::process::ExitCode;

use clap::Parser;

/// A mistake in what was typed: exit code 2, like clap's own usage errors.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

const EXIT_FAILURE: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_NO_SUCH_USER: u8 = 3;
const EXIT_EXISTS: u8 = 4;

fn exit_code(err: &anyhow::Error) -> u8 {
    use wharf_store::Error;
    for cause in err.chain() {
        if cause.downcast_ref::<UsageError>().is_some() {
            return EXIT_USAGE;
        }
        if cause.downcast_ref::<wharf_core::Error>().is_some() {
            return EXIT_USAGE;
        }
        if let Some(store) = cause.downcast_ref::<Error>() {
            return match store {
                Error::NoSuchUser(_) | Error::NoSuchKey { .. } => EXIT_NO_SUCH_USER,
                Error::UserExists(_) | Error::KeyExists { .. } => EXIT_EXISTS,
                Error::Input(_) | Error::InvalidKey(_) => EXIT_USAGE,
                _ => EXIT_FAILURE,
            };
        }
    }
    EXIT_FAILURE
}

fn main() -> ExitCode {
    wharf_core::cli::quiet_broken_pipe();
    let mut cli = cli::Cli::parse();
    match cli.docs.print::<cli::Cli>() {
        Ok(true) => return ExitCode::SUCCESS,
        Ok(false) => {}
        Err(e) => {
            eprintln!("admin-cli: cannot print it: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    }
    let Some(command) = cli.command.take() else {
        use clap::CommandFactory;
        let _ = cli::Cli::command().print_help();
        return ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("admin-cli: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    match runtime.block_on(commands::run(cli, command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let line = format!("{err:#}").replace('\n', " ");
            eprintln!("admin-cli: {line}");
            ExitCode::from(exit_code(&err))
        }
    }
}
