//! The quota while a command runs: the kernel caps each file a command
//! writes at the user's free space (`RLIMIT_FSIZE`), but not the total, so
//! the home is measured every [`CHECK_EVERY`] and a command that takes it
//! past the quota is stopped.

use std::path::PathBuf;
use std::time::Duration;

use wharf_core::home::scan_home;

/// How often the home of a running command is measured.
pub(super) const CHECK_EVERY: Duration = Duration::from_millis(500);

/// Resolves once `home` holds more than `quota` bytes (its files plus the
/// reservations of partial uploads); never, without a quota. A home that
/// cannot be measured is logged and measured again next time.
pub(super) async fn exceeded(home: PathBuf, quota: Option<u64>) {
    let Some(quota) = quota else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(CHECK_EVERY).await;
        let dir = home.clone();
        match tokio::task::spawn_blocking(move || scan_home(&dir)).await {
            Ok(Ok(usage)) if usage.bytes.saturating_add(usage.reserved) > quota => return,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(home = %home.display(), error = %e, "cannot measure a home while a command runs");
            }
            Err(e) => tracing::warn!(error = %e, "home scan task failed"),
        }
    }
}
