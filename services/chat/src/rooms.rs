//! The room naming rule: 1 to 64 of `[A-Za-z0-9_.-]`, not starting with `.`
//! or `-`. Names appear in every client's output, so the rule is strict.

/// Longest room name.
pub const MAX_ROOM_LEN: usize = 64;

/// Checks a room name; the error says what is wrong.
pub fn validate_room(name: &str) -> Result<(), String> {
    let shown: String = name.chars().take(MAX_ROOM_LEN).collect();
    if name.is_empty() {
        return Err("a room name cannot be empty".into());
    }
    if name.len() > MAX_ROOM_LEN {
        return Err(format!(
            "room name {shown:?}... is longer than {MAX_ROOM_LEN} characters"
        ));
    }
    if name.starts_with(['.', '-']) {
        return Err(format!(
            "room name {shown:?} must start with a letter, a digit or '_'"
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        return Err(format!(
            "room name {shown:?} may hold only letters, digits, '_', '.' and '-'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_rule_and_nothing_else() {
        for ok in ["lobby", "Team-4", "a", "_x", "v1.2", &"r".repeat(64)] {
            assert!(validate_room(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".hidden",
            "-x",
            "has space",
            "slash/",
            "ünï",
            "nul\0",
            &"r".repeat(65),
        ] {
            assert!(validate_room(bad).is_err(), "{bad:?}");
        }
    }
}
