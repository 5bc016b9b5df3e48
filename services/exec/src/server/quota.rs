//! The quota while a command runs: the kernel caps each file a command
//! writes at the user's free space (`RLIMIT_FSIZE`), but not the total, so
//! the home is measured every [`CHECK_EVERY`] and a command that takes it
//! past the quota is stopped. The quota is read again at every
//! measurement, so an administrator who lowers it reaches running commands
//! within [`CHECK_EVERY`] and a bit.

use std::path::PathBuf;
use std::time::Duration;

use wharf_core::home::scan_home;

/// How often the home of a running command is measured.
pub(super) const CHECK_EVERY: Duration = Duration::from_millis(500);

/// Resolves with the quota once `home` holds more than the quota `quota()`
/// gives at that moment (its files plus the reservations of partial
/// uploads); a home without a quota is not measured. A home that cannot be
/// measured is logged and measured again next time.
pub(super) async fn exceeded(home: PathBuf, quota: impl Fn() -> Option<u64>) -> u64 {
    loop {
        tokio::time::sleep(CHECK_EVERY).await;
        if quota().is_none() {
            continue;
        }
        let dir = home.clone();
        let measured = tokio::task::spawn_blocking(move || scan_home(&dir)).await;
        let Some(limit) = quota() else {
            continue;
        };
        match measured {
            Ok(Ok(usage)) if usage.bytes.saturating_add(usage.reserved) > limit => return limit,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(home = %home.display(), error = %e, "cannot measure a home while a command runs");
            }
            Err(e) => tracing::warn!(error = %e, "home scan task failed"),
        }
    }
}
