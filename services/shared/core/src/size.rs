//! Sizes as people write them, shared by every binary: `500MiB`, `2G`,
//! `1.5GB`, `1048576`, and, for quotas, `unlimited`.
//!
//! `K`, `M`, `G`, `T` alone and `KiB`..`TiB` are powers of 1024 (as in `head
//! -c 1G`); `KB`..`TB` are powers of 1000; `B` or no unit is bytes. Case does
//! not matter. Fractions round down to whole bytes.

use crate::error::{Error, Result};

/// Largest size accepted: what the database's signed 64-bit integers hold.
pub const MAX_SIZE: u64 = i64::MAX as u64;

fn invalid(input: &str, reason: &'static str) -> Error {
    Error::InvalidSize {
        input: input.chars().take(64).collect(),
        reason,
    }
}

fn multiplier(unit: &str) -> Option<u128> {
    let unit = unit.to_ascii_lowercase();
    let (power, base) = match unit.as_str() {
        "" | "b" => (0, 1024),
        "k" | "kib" => (1, 1024),
        "m" | "mib" => (2, 1024),
        "g" | "gib" => (3, 1024),
        "t" | "tib" => (4, 1024),
        "kb" => (1, 1000),
        "mb" => (2, 1000),
        "gb" => (3, 1000),
        "tb" => (4, 1000),
        _ => return None,
    };
    Some((base as u128).pow(power))
}

/// Parses a size in bytes. `unlimited` is refused: see [`parse_quota`].
pub fn parse_size(input: &str) -> Result<u64> {
    let s = input.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let mult = multiplier(unit.trim()).ok_or_else(|| invalid(input, "unknown unit"))?;
    let (int_part, frac_part) = match number.split_once('.') {
        Some((i, f)) => (i, f),
        None => (number, ""),
    };
    if int_part.is_empty() && frac_part.is_empty() {
        return Err(invalid(input, "no number"));
    }
    if frac_part.contains('.') || frac_part.len() > 18 || int_part.len() > 30 {
        return Err(invalid(input, "not a number"));
    }
    let int: u128 = if int_part.is_empty() {
        0
    } else {
        int_part
            .parse()
            .map_err(|_| invalid(input, "not a number"))?
    };
    let frac: u128 = if frac_part.is_empty() {
        0
    } else {
        frac_part
            .parse()
            .map_err(|_| invalid(input, "not a number"))?
    };
    let scale = 10u128.pow(frac_part.len() as u32);
    let bytes = int
        .checked_mul(mult)
        .and_then(|b| b.checked_add(frac * mult / scale))
        .filter(|b| *b <= MAX_SIZE as u128)
        .ok_or_else(|| invalid(input, "too large"))?;
    Ok(bytes as u64)
}

/// Parses a quota: a size, or `unlimited` (`None`).
pub fn parse_quota(input: &str) -> Result<Option<u64>> {
    if input.trim().eq_ignore_ascii_case("unlimited") {
        return Ok(None);
    }
    parse_size(input).map(Some)
}

/// Parses a rate, bytes per second: a size (`4MiB`, `500k`), with or
/// without `/s`; zero is refused (a rate that moves nothing).
pub fn parse_rate(input: &str) -> Result<u64> {
    let trimmed = input.trim();
    let size = trimmed
        .strip_suffix("/s")
        .or_else(|| trimmed.strip_suffix("/S"))
        .unwrap_or(trimmed);
    match parse_size(size)? {
        0 => Err(crate::Error::InvalidSize {
            input: input.to_owned(),
            reason: "a rate of zero would move nothing",
        }),
        n => Ok(n),
    }
}

/// Formats a rate: `4 MiB/s`, or `unlimited`.
pub fn format_rate(rate: Option<u64>) -> String {
    rate.map_or_else(
        || "unlimited".to_owned(),
        |r| format!("{}/s", format_size(r)),
    )
}

/// Formats bytes for people, in powers of 1024: `512 B`, `1.5 KiB`, `2 GiB`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    // As shown, to one decimal: 1023.96 KiB would read "1024 KiB".
    while (value * 10.0).round() >= 10240.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    let text = format!("{value:.1}");
    let text = text.strip_suffix(".0").unwrap_or(&text);
    format!("{text} {}", UNITS[unit])
}

/// Formats a quota: a size or `unlimited`.
pub fn format_quota(quota: Option<u64>) -> String {
    quota.map_or_else(|| "unlimited".to_owned(), format_size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_documented_form() {
        let cases: [(&str, u64); 14] = [
            ("0", 0),
            ("1048576", 1_048_576),
            ("500MiB", 500 * 1024 * 1024),
            ("2G", 2 * 1024 * 1024 * 1024),
            ("2g", 2 * 1024 * 1024 * 1024),
            ("1.5GB", 1_500_000_000),
            ("1.5 GiB", 1_610_612_736),
            ("10k", 10_240),
            ("10KB", 10_000),
            ("7B", 7),
            (".5K", 512),
            ("1T", 1 << 40),
            ("40M", 40 << 20),
            ("9223372036854775807", MAX_SIZE),
        ];
        for (input, want) in cases {
            assert_eq!(parse_size(input).ok(), Some(want), "{input}");
        }
        assert_eq!(parse_quota("unlimited").ok(), Some(None));
        assert_eq!(parse_quota("UNLIMITED").ok(), Some(None));
        assert_eq!(parse_quota("1K").ok(), Some(Some(1024)));
    }

    #[test]
    fn refuses_garbage_with_a_reason() {
        for bad in [
            "",
            "G",
            "-1",
            "1.2.3",
            "12XB",
            "1e9",
            "unlimited",
            "99999999999T",
            "9223372036854775808",
            "1 2",
            ".",
            "abc",
        ] {
            let err = parse_size(bad);
            assert!(
                matches!(err, Err(Error::InvalidSize { .. })),
                "{bad:?} gave {err:?}"
            );
        }
    }

    #[test]
    fn formats_in_binary_units() {
        assert_eq!(format_size(0), "0 B");
        assert_eq!(format_size(1023), "1023 B");
        assert_eq!(format_size(1024), "1 KiB");
        assert_eq!(format_size(1536), "1.5 KiB");
        assert_eq!(format_size(1 << 30), "1 GiB");
        assert_eq!(format_size(500 << 20), "500 MiB");
        // Just under a unit reads as that unit, not as 1024 of the one below.
        assert_eq!(format_size((1 << 30) - 20), "1 GiB");
        assert_eq!(format_size((1 << 20) - 1), "1 MiB");
        assert_eq!(format_size((1 << 20) - 60_000), "965.4 KiB");
        assert_eq!(format_quota(None), "unlimited");
    }
}
