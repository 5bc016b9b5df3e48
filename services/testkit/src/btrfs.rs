//! A btrfs file system with quotas on, for the tests of the quota the
//! kernel enforces: `WHARF_TEST_BTRFS` names its mount point (`.ci/test`
//! makes one in a loop file, as root). Without it those tests are skipped
//! (said on stderr), and under CI they fail.

use std::path::PathBuf;

/// The mount point, or `None` (skipped) outside CI.
pub fn btrfs_root() -> Option<PathBuf> {
    match std::env::var_os("WHARF_TEST_BTRFS") {
        Some(dir) => Some(PathBuf::from(dir)),
        None if std::env::var_os("CI").is_some() => {
            panic!("WHARF_TEST_BTRFS is not set under CI: .ci/test makes the btrfs file system")
        }
        None => {
            eprintln!("skipped on btrfs: set WHARF_TEST_BTRFS to a btrfs mount with quotas on");
            None
        }
    }
}

/// Where a test's server keeps its data: the ordinary disk, and the btrfs
/// file system when there is one.
pub fn roots() -> Vec<Option<PathBuf>> {
    let mut roots = vec![None];
    roots.extend(btrfs_root().map(Some));
    roots
}
