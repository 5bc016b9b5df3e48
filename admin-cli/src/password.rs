//! Reading a new password: from a terminal prompt (twice), or from stdin.

use std::io::{BufRead, IsTerminal};

use anyhow::{Context, Result, bail};
use wharf_core::Password;

use crate::UsageError;

/// Reads the new password for `user` as the flags say.
pub fn read_new_password(user: &str, from_stdin: bool) -> Result<Password> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("cannot read the password from standard input")?;
        let line = line.strip_suffix('\n').unwrap_or(&line);
        let line = line.strip_suffix('\r').unwrap_or(line);
        return Ok(Password::new(line));
    }
    if !std::io::stdin().is_terminal() {
        return Err(UsageError(
            "no terminal to ask for the password on; pipe it in with --password-stdin".into(),
        )
        .into());
    }
    let first = rpassword::prompt_password(format!("New password for {user}: "))
        .context("cannot read the password from the terminal")?;
    let second = rpassword::prompt_password("Repeat the password: ")
        .context("cannot read the password from the terminal")?;
    if first != second {
        bail!("the two passwords differ; nothing was changed, try again");
    }
    Ok(Password::new(first))
}
