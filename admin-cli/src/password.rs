//! Reading a new password: from a terminal prompt (twice), or from stdin.

use anyhow::Result;
use wharf_core::Password;
use wharf_core::cli::CredentialsError;

use crate::UsageError;

/// Reads the new password for `user` as the flags say; no terminal to ask
/// on is a usage error.
pub fn read_new_password(user: &str, from_stdin: bool) -> Result<Password> {
    match wharf_core::cli::read_new_password(user, from_stdin) {
        Err(e @ CredentialsError::NoTerminal) => Err(UsageError(e.to_string()).into()),
        other => Ok(other?),
    }
}
