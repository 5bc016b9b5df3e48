//! What a `run` request may ask for, checked before anything runs.

use wharf_proto::ErrorCode;
use wharf_proto::exec::{MAX_COMMAND_BYTES, MAX_TERM_BYTES, Tty};

use wharf_server::Refusal;

/// A `run` request.
pub(super) struct Run {
    pub(super) command: String,
    pub(super) stdin: bool,
    pub(super) cwd: Option<String>,
    pub(super) tty: Option<Tty>,
    pub(super) report_cwd: bool,
}

/// What runs after a command whose directory the client asked for: on
/// success, the directory and the home, a line each.
pub(super) const REPORT_CWD: &str = "__wharf_status=$?; [ \"$__wharf_status\" = 0 ] && printf '%s\\n%s\\n' \"$PWD\" \"$HOME\"; exit \"$__wharf_status\"";

/// Longest `cwd` a client may send, in bytes (as `PATH_MAX`).
const MAX_CWD_BYTES: usize = 4096;

pub(super) fn check_run(run: &Run) -> Result<(), Refusal> {
    // An empty command on a terminal is the login shell.
    if run.tty.is_none() || !run.command.is_empty() {
        check_command(&run.command)?;
    }
    if let Some(tty) = &run.tty
        && !Tty::term_is_valid(&tty.term)
    {
        return Err(Refusal::new(
            ErrorCode::BadRequest,
            format!(
                "TERM must be 1 to {MAX_TERM_BYTES} letters, digits or . _ + -; set TERM to a usual value such as xterm-256color"
            ),
        ));
    }
    if let Some(cwd) = &run.cwd
        && (cwd.is_empty() || cwd.len() > MAX_CWD_BYTES || cwd.contains('\0'))
    {
        return Err(Refusal::new(
            ErrorCode::BadRequest,
            format!("the directory to start in must be 1 to {MAX_CWD_BYTES} bytes with no NUL"),
        ));
    }
    Ok(())
}

fn check_command(command: &str) -> Result<(), Refusal> {
    if command.trim().is_empty() {
        return Err(Refusal::new(
            ErrorCode::BadRequest,
            "the command is empty; send a command line to run",
        ));
    }
    if command.len() > MAX_COMMAND_BYTES {
        return Err(Refusal::new(
            ErrorCode::MessageTooLarge,
            format!(
                "the command is {} bytes; the limit is {MAX_COMMAND_BYTES}: put long scripts in a file in your home and run that",
                command.len()
            ),
        ));
    }
    if command.contains('\0') {
        return Err(Refusal::new(
            ErrorCode::BadRequest,
            "the command contains a NUL byte, which no command line can hold",
        ));
    }
    Ok(())
}
