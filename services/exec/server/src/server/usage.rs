//! Commands change homes behind the quota's back, so after commands the
//! home is measured again and the user's usage updated: a scan starts a
//! moment after a command ends, so that a burst of commands costs one scan;
//! one scan at a time per user, and one more if commands ended during it.
//! The moment grows with the home: after a scan that took T, the next
//! waits at least [`PAUSE_PER_SCAN`] times T, so a user who runs commands
//! without pause over a home of a million files keeps the server's disk
//! walks to a fifth of a core, not a whole one. (While a command runs its
//! writes are watched apart, see `quota.rs`; these scans set the books the
//! other doors read.)

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::task::TaskTracker;
use wharf_store::Store;
use wharf_store::home::measure_and_record;

/// How long after a command its home is measured, at least.
const SETTLE: Duration = Duration::from_millis(250);

/// The pause before a scan, in multiples of the last scan's time.
const PAUSE_PER_SCAN: u32 = 4;

/// How long to wait before a scan when the last one took `last`.
fn pause_after(last: Duration) -> Duration {
    SETTLE.max(last.saturating_mul(PAUSE_PER_SCAN))
}

/// Home scans in flight, per user id; `true` when another is wanted after.
pub(super) struct Rescans {
    store: Store,
    pending: Arc<Mutex<HashMap<i64, bool>>>,
    tasks: TaskTracker,
}

impl Rescans {
    pub(super) fn new(store: Store) -> Self {
        Rescans {
            store,
            pending: Arc::default(),
            tasks: TaskTracker::new(),
        }
    }

    /// Measures `home` again in a moment, and records what it holds.
    pub(super) fn after_command(&self, user_id: i64, name: &str, home: PathBuf) {
        {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(again) = pending.get_mut(&user_id) {
                *again = true;
                return;
            }
            pending.insert(user_id, false);
        }
        let store = self.store.clone();
        let pending = Arc::clone(&self.pending);
        let name = name.to_owned();
        self.tasks.spawn(async move {
            let mut last = Duration::ZERO;
            loop {
                tokio::time::sleep(pause_after(last)).await;
                if let Some(again) = pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_mut(&user_id)
                {
                    *again = false;
                }
                let started = std::time::Instant::now();
                measure_and_record(&store, &name, home.clone()).await;
                last = started.elapsed();
                let mut pending = pending.lock().unwrap_or_else(|p| p.into_inner());
                match pending.get_mut(&user_id) {
                    Some(again) if *again => *again = false,
                    _ => {
                        pending.remove(&user_id);
                        break;
                    }
                }
            }
        });
    }

    /// Measures `home` and records what it holds, before returning: a run
    /// stopped over quota is on the books before its client hears of it, so
    /// the next command already finds no room.
    pub(super) async fn measure_now(&self, name: &str, home: PathBuf) {
        measure_and_record(&self.store, name, home).await;
    }

    /// Waits for the scans in flight.
    pub(super) async fn wait(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_scan_waits_longer_before_the_next() {
        assert_eq!(pause_after(Duration::ZERO), SETTLE);
        assert_eq!(pause_after(Duration::from_millis(40)), SETTLE);
        assert_eq!(pause_after(Duration::from_secs(2)), Duration::from_secs(8));
        assert_eq!(pause_after(Duration::MAX), Duration::MAX);
    }
}
