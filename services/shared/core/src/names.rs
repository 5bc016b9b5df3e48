//! The user naming rule: 1 to 32 of `[a-z0-9_.-]`, starting with a letter.
//! Names become directory names and appear in logs, so the rule is strict.

use crate::error::{Error, Result};

/// Longest user name.
pub const MAX_NAME_LEN: usize = 32;

/// Checks a user name against the rule.
pub fn validate_user_name(name: &str) -> Result<()> {
    let fail = |reason| {
        Err(Error::InvalidName {
            name: name.chars().take(64).collect(),
            reason,
        })
    };
    if name.is_empty() {
        return fail("it is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return fail("it is longer than 32 characters");
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return fail("it must start with a lowercase letter a-z");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-'))
    {
        return fail("only lowercase letters a-z, digits 0-9, '_', '.' and '-' are allowed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_rule_and_nothing_else() {
        for ok in ["a", "alice", "bob.smith", "x_1-2", &"a".repeat(32)] {
            assert!(validate_user_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "1abc",
            "_a",
            "Alice",
            "a b",
            "a/b",
            "..",
            "é",
            &"a".repeat(33),
            "a\0",
        ] {
            assert!(validate_user_name(bad).is_err(), "{bad:?}");
        }
    }
}
