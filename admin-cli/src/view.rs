//! What listings print: JSON objects with stable field names, and tables.

use std::io::IsTerminal;

use comfy_table::{CellAlignment, ContentArrangement, LineStyle, Table, presets};
use serde::Serialize;
use wharf_core::size::format_quota;
use wharf_core::size::format_rate;
use wharf_core::size::format_size;
use wharf_core::time::rfc3339;
use wharf_store::User;
use wharf_store::auth::NameSlowdown;
use wharf_store::db::ExecLogRow;
use wharf_store::db::TransferRow;
use wharf_store::db::UsageRow;
use wharf_store::db::UserKey;
use wharf_store::db::UserLimits;
use wharf_store::owner::Owner;

/// A user, as `user show --json` and `user list --json` print it.
#[derive(Debug, Serialize)]
pub struct UserView {
    pub name: String,
    pub home: String,
    /// The kernel identity the user's files and commands have.
    pub uid: Option<u32>,
    pub quota_bytes: Option<u64>,
    pub used_bytes: u64,
    pub reserved_bytes: u64,
    /// Entries stored (files, folders, links).
    pub files: u64,
    /// Entries held by interrupted uploads.
    pub reserved_files: u64,
    /// The file quota; `None` is unlimited.
    pub quota_files: Option<u64>,
    /// Why a server could not measure the home, while it cannot (its
    /// writes are refused meanwhile).
    pub usage_problem: Option<String>,
    pub services: Vec<&'static str>,
    pub locked: bool,
    /// Failed logins on the name within the last 15 minutes.
    pub failed_logins: u64,
    /// What each login attempt on the name waits now (0: not slowed).
    pub login_delay_ms: u64,
    /// When that slowdown ends unless more failures come.
    pub slowed_until: Option<String>,
    pub created_at: String,
    pub last_login_at: Option<String>,
    /// The user's own limits (`null`: the servers' default holds).
    pub upload_rate: Option<u64>,
    pub download_rate: Option<u64>,
    pub max_sessions: Option<u64>,
    /// Sessions open now, over every service and server process.
    pub sessions_open: u64,
}

impl UserView {
    pub fn new(user: &User, slowdown: NameSlowdown, sessions_open: u64) -> Self {
        UserView {
            name: user.name.clone(),
            home: user.home.display().to_string(),
            uid: Owner::of_user(user.id).map(|o| o.uid),
            quota_bytes: user.quota_bytes,
            used_bytes: user.used_bytes,
            reserved_bytes: user.reserved_bytes,
            files: user.file_count,
            reserved_files: user.reserved_files,
            quota_files: user.quota_files,
            usage_problem: user.usage_problem.clone(),
            services: user.services.names(),
            locked: user.locked,
            failed_logins: slowdown.failures,
            login_delay_ms: u64::try_from(slowdown.delay.as_millis()).unwrap_or(u64::MAX),
            slowed_until: slowdown.until.map(rfc3339),
            created_at: rfc3339(user.created_at),
            last_login_at: user.last_login_at.map(rfc3339),
            upload_rate: user.limits.upload_rate,
            download_rate: user.limits.download_rate,
            max_sessions: user.limits.max_sessions,
            sessions_open,
        }
    }
}

/// A user's limits in words; the servers' default where they have none.
pub fn limits_text(limits: &UserLimits) -> String {
    let rate =
        |r: Option<u64>| r.map_or_else(|| "server default".to_owned(), |r| format_rate(Some(r)));
    format!(
        "upload {}, download {}, sessions {}",
        rate(limits.upload_rate),
        rate(limits.download_rate),
        limits
            .max_sessions
            .map_or_else(|| "server default".to_owned(), |n| format!("at most {n}")),
    )
}

/// A usage report line, as `usage --json` prints it.
#[derive(Debug, Serialize)]
pub struct UsageView {
    pub name: String,
    pub quota_bytes: Option<u64>,
    pub used_bytes: u64,
    pub reserved_bytes: u64,
    pub used_percent: Option<f64>,
    pub files: u64,
    pub reserved_files: u64,
    pub quota_files: Option<u64>,
    pub uploads: u64,
    pub downloads: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub chat_messages: u64,
    pub exec_commands: u64,
    pub last_login_at: Option<String>,
    /// The user's own limits (`null` in each: the servers' default).
    pub limits: UserLimits,
    /// With `usage NAME` only: the latest transfers, newest first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recent_transfers: Option<Vec<TransferView>>,
    /// With `usage NAME` only: the latest commands, newest first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recent_commands: Option<Vec<CommandView>>,
}

/// A transfer in `usage NAME --json`.
#[derive(Debug, Serialize)]
pub struct TransferView {
    pub at: String,
    pub direction: &'static str,
    pub path: String,
    pub bytes: u64,
    pub ok: bool,
    pub md5: Option<String>,
    pub duration_ms: u64,
}

impl From<&TransferRow> for TransferView {
    fn from(t: &TransferRow) -> Self {
        TransferView {
            at: rfc3339(t.at),
            direction: t.direction.as_str(),
            path: t.path.clone(),
            bytes: t.bytes,
            ok: t.ok,
            md5: t.md5.clone(),
            duration_ms: t.duration_ms,
        }
    }
}

/// A command in `usage NAME --json`.
#[derive(Debug, Serialize)]
pub struct CommandView {
    pub at: String,
    pub command: String,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub duration_ms: u64,
    pub bytes_out: u64,
}

impl From<&ExecLogRow> for CommandView {
    fn from(e: &ExecLogRow) -> Self {
        CommandView {
            at: rfc3339(e.at),
            command: e.command.clone(),
            exit_code: e.exit_code,
            signal: e.signal,
            duration_ms: e.duration_ms,
            bytes_out: e.bytes_out,
        }
    }
}

impl From<&UsageRow> for UsageView {
    fn from(r: &UsageRow) -> Self {
        UsageView {
            name: r.name.clone(),
            quota_bytes: r.quota_bytes,
            used_bytes: r.used_bytes,
            reserved_bytes: r.reserved_bytes,
            used_percent: used_percent(r.used_bytes, r.quota_bytes),
            files: r.file_count,
            reserved_files: r.reserved_files,
            quota_files: r.quota_files,
            uploads: r.uploads,
            downloads: r.downloads,
            bytes_up: r.bytes_up,
            bytes_down: r.bytes_down,
            chat_messages: r.chat_messages,
            exec_commands: r.exec_commands,
            limits: UserLimits::default(),
            recent_transfers: None,
            recent_commands: None,
            last_login_at: r.last_login_at.map(rfc3339),
        }
    }
}

/// Used share of the quota, in percent with one decimal; `None` if unlimited.
fn used_percent(used: u64, quota: Option<u64>) -> Option<f64> {
    let quota = quota?;
    if quota == 0 {
        return Some(if used == 0 { 0.0 } else { 100.0 });
    }
    Some((used as f64 * 1000.0 / quota as f64).round() / 10.0)
}

/// Whether tables go to a terminal (fitted to it, lines drawn) or to a
/// pipe or file (plain aligned text, never wrapped, no box characters).
fn on_terminal() -> bool {
    std::io::stdout().is_terminal()
}

fn table(header: &[&str], right_aligned: &[usize]) -> Table {
    let mut table = Table::new();
    if on_terminal() {
        table
            .load_style(presets::UTF8_NO_BORDERS.row_separator(LineStyle::none()))
            .set_content_arrangement(ContentArrangement::Dynamic);
    } else {
        // Plain text: columns apart by spaces, the header underlined with
        // dashes, as `ps` or psql's aligned output.
        table
            .load_style(
                presets::NOTHING.header_separator(LineStyle::none().fill('-').junction(' ')),
            )
            .set_content_arrangement(ContentArrangement::Disabled);
    }
    if !header.is_empty() {
        table.set_header(header.to_vec());
    }
    for &i in right_aligned {
        if let Some(col) = table.column_mut(i) {
            col.set_cell_alignment(CellAlignment::Right);
        }
    }
    table
}

fn when(ms: Option<i64>) -> String {
    ms.map_or_else(|| "never".to_owned(), rfc3339)
}

/// What a user's logins meet: an administrator's lock, a slowdown after
/// failed logins (and when it ends), or nothing.
fn login_state(v: &UserView) -> String {
    if v.locked {
        return "locked".to_owned();
    }
    match &v.slowed_until {
        Some(until) => format!(
            "slowed ({} s per attempt) until {}",
            v.login_delay_ms as f64 / 1000.0,
            until.replacen('T', " ", 1)
        ),
        None => "open".to_owned(),
    }
}

pub fn users_table(users: &[UserView]) -> Table {
    let mut t = table(
        &["user", "services", "quota", "used", "login", "last login"],
        &[2, 3],
    );
    for u in users {
        let services = if u.services.is_empty() {
            "none".to_owned()
        } else {
            u.services.join(",")
        };
        t.add_row(vec![
            u.name.clone(),
            services,
            format_quota(u.quota_bytes),
            format_size(u.used_bytes),
            login_state(u),
            u.last_login_at
                .clone()
                .unwrap_or_else(|| "never".to_owned()),
        ]);
    }
    t
}

pub fn user_table(v: &UserView, user: &User) -> Table {
    let mut t = table(&[], &[]);
    let services = if v.services.is_empty() {
        "none".to_owned()
    } else {
        v.services.join(",")
    };
    let rows = [
        ("name", v.name.clone()),
        ("home", v.home.clone()),
        (
            "uid",
            v.uid.map_or_else(|| "-".to_owned(), |u| u.to_string()),
        ),
        ("quota", format_quota(v.quota_bytes)),
        ("used", format_size(v.used_bytes)),
        ("reserved", format_size(v.reserved_bytes)),
        ("files", files_of(v.files + v.reserved_files, v.quota_files)),
        ("services", services),
        ("locked", if v.locked { "yes" } else { "no" }.to_owned()),
        ("login", login_state(v)),
        (
            "failed logins",
            format!("{} in the last 15 minutes", v.failed_logins),
        ),
        (
            "limits",
            limits_text(&UserLimits {
                upload_rate: v.upload_rate,
                download_rate: v.download_rate,
                max_sessions: v.max_sessions,
            }),
        ),
        ("sessions", format!("{} open now", v.sessions_open)),
        ("created", v.created_at.clone()),
        ("last login", when(user.last_login_at)),
    ];
    for (k, val) in rows {
        t.add_row(vec![k.to_owned(), val]);
    }
    if let Some(why) = &v.usage_problem {
        t.add_row(vec![
            "usage".to_owned(),
            format!(
                "cannot be measured ({why}): writes are refused; fix the home, then run `admin-cli db check --fix`"
            ),
        ]);
    }
    t
}

/// Entries held, of the file quota.
fn files_of(held: u64, quota: Option<u64>) -> String {
    match quota {
        Some(q) => format!("{held} of {q}"),
        None => held.to_string(),
    }
}

pub fn usage_table(rows: &[UsageRow]) -> Table {
    if !on_terminal() {
        return usage_plain(rows);
    }
    // Fitted to a terminal: short headers and values, local times, so the
    // usual report fits 80 columns without cells broken over lines.
    let mut t = table(
        &[
            "user",
            "used",
            "files",
            "up",
            "down",
            "chat",
            "cmds",
            "last login",
        ],
        &[1, 2, 3, 4, 5, 6],
    );
    for r in rows {
        let used = match r.quota_bytes {
            Some(q) => format!(
                "{}/{} {:.0}%",
                short_size(r.used_bytes),
                short_size(q),
                used_percent(r.used_bytes, Some(q)).unwrap_or(0.0)
            ),
            None => short_size(r.used_bytes),
        };
        let files = match r.quota_files {
            Some(q) => format!(
                "{}/{}",
                short_count(r.file_count + r.reserved_files),
                short_count(q)
            ),
            None => short_count(r.file_count + r.reserved_files),
        };
        t.add_row(vec![
            r.name.clone(),
            used,
            files,
            short_size(r.bytes_up),
            short_size(r.bytes_down),
            r.chat_messages.to_string(),
            r.exec_commands.to_string(),
            r.last_login_at
                .map_or_else(|| "never".to_owned(), local_time),
        ]);
    }
    t
}

/// The usage report for a pipe: every column, full values, plain text.
fn usage_plain(rows: &[UsageRow]) -> Table {
    let mut t = table(
        &[
            "user",
            "quota",
            "used",
            "used %",
            "files",
            "up",
            "down",
            "chat msgs",
            "commands",
            "last login",
        ],
        &[1, 2, 3, 4, 5, 6, 7, 8],
    );
    for r in rows {
        let pct = used_percent(r.used_bytes, r.quota_bytes)
            .map_or_else(|| "-".to_owned(), |p| format!("{p:.1}%"));
        t.add_row(vec![
            r.name.clone(),
            format_quota(r.quota_bytes),
            format_size(r.used_bytes),
            pct,
            files_of(r.file_count + r.reserved_files, r.quota_files),
            format_size(r.bytes_up),
            format_size(r.bytes_down),
            r.chat_messages.to_string(),
            r.exec_commands.to_string(),
            when(r.last_login_at),
        ]);
    }
    t
}

/// A size in few characters: `512B`, `5.1M`, `1G`.
fn short_size(bytes: u64) -> String {
    let long = format_size(bytes);
    match long.split_once(' ') {
        Some((n, "B")) => format!("{n}B"),
        Some((n, unit)) => format!("{n}{}", &unit[..1]),
        None => long,
    }
}

/// A count in few characters: `950`, `12k`, `1.5M`.
fn short_count(n: u64) -> String {
    match n {
        0..10_000 => n.to_string(),
        10_000..1_000_000 => format!("{}k", n / 1000),
        _ => {
            let m = format!("{:.1}", n as f64 / 1e6);
            format!("{}M", m.strip_suffix(".0").unwrap_or(&m))
        }
    }
}

/// Unix milliseconds as this machine's local time, to the minute.
fn local_time(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| {
            jiff::tz::TimeZone::system()
                .to_datetime(t)
                .strftime("%Y-%m-%d %H:%M")
                .to_string()
        })
        .unwrap_or_else(|_| rfc3339(ms))
}

/// One user's latest transfers.
pub fn transfers_table(rows: &[TransferRow]) -> Table {
    let mut t = table(&["when", "", "path", "size", "result", "took"], &[3, 5]);
    for r in rows {
        t.add_row(vec![
            rfc3339(r.at),
            r.direction.as_str().to_owned(),
            r.path.clone(),
            format_size(r.bytes),
            if r.ok { "ok" } else { "cut short" }.to_owned(),
            format!("{:.1} s", r.duration_ms as f64 / 1000.0),
        ]);
    }
    t
}

/// One user's latest commands.
pub fn commands_table(rows: &[ExecLogRow]) -> Table {
    let mut t = table(&["when", "command", "status", "output", "took"], &[2, 3, 4]);
    for r in rows {
        let status = match (r.exit_code, r.signal) {
            (Some(code), _) => code.to_string(),
            (None, Some(sig)) => format!("signal {sig}"),
            (None, None) => "-".to_owned(),
        };
        let mut command: String = r.command.chars().take(60).collect();
        if command.len() < r.command.len() {
            command.push('…');
        }
        t.add_row(vec![
            rfc3339(r.at),
            command.replace('\n', " "),
            status,
            format_size(r.bytes_out),
            format!("{:.1} s", r.duration_ms as f64 / 1000.0),
        ]);
    }
    t
}

/// A key in `user key list --json`.
#[derive(Debug, Serialize)]
pub struct KeyView {
    pub key_type: String,
    pub fingerprint: String,
    pub comment: String,
    pub added_at: String,
    pub last_used_at: Option<String>,
    pub public_key: String,
}

impl From<&UserKey> for KeyView {
    fn from(k: &UserKey) -> Self {
        KeyView {
            key_type: k.key_type.clone(),
            fingerprint: k.fingerprint.clone(),
            comment: k.comment.clone(),
            added_at: rfc3339(k.added_at),
            last_used_at: k.last_used_at.map(rfc3339),
            public_key: k.public_key.clone(),
        }
    }
}

/// A user's SSH keys.
pub fn keys_table(keys: &[UserKey]) -> Table {
    let mut t = table(
        &["type", "fingerprint", "comment", "added", "last used"],
        &[],
    );
    for k in keys {
        t.add_row(vec![
            k.key_type.clone(),
            k.fingerprint.clone(),
            k.comment.clone(),
            rfc3339(k.added_at),
            when(k.last_used_at),
        ]);
    }
    t
}

pub fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// What `db copy` wrote, per table.
pub fn copy_table(tables: &[(&str, u64)]) -> Table {
    let mut t = table(&["table", "rows copied"], &[1]);
    for (name, rows) in tables {
        t.add_row(vec![name.to_string(), rows.to_string()]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::used_percent;

    #[test]
    fn percent_rounds_to_one_decimal_and_handles_edges() {
        assert_eq!(used_percent(1, Some(3)), Some(33.3));
        assert_eq!(used_percent(0, Some(0)), Some(0.0));
        assert_eq!(used_percent(5, Some(0)), Some(100.0));
        assert_eq!(used_percent(5, None), None);
    }
}
