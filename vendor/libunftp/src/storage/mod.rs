//! Re-exports storage traits/types from unftp-core.

pub(crate) use unftp_core::storage::{Error, ErrorKind, FEATURE_RESTART, FEATURE_SITEMD5, Metadata, StorageBackend};

/// Wharf's patch: a storage back end's reason for a failure, meant for the client. An
/// [`Error`] whose source is a `ClientReason` is answered with the reply code of its kind and
/// these words (on one line) instead of the generic text.
#[derive(Debug)]
pub struct ClientReason(pub String);

impl std::fmt::Display for ClientReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ClientReason {}
