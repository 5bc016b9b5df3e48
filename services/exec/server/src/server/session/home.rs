//! The home as commands find it: made, and handed to the user's uid.

use std::path::{Path, PathBuf};

use wharf_proto::ErrorCode;
use wharf_store::owner::Owner;
use wharf_store::owner::ensure_owned;

use super::Session;
use wharf_server::Refusal;

/// The home exists and, given an owner, is that owner's, private.
fn make_home(home: &Path, owner: Option<Owner>) -> Result<PathBuf, Refusal> {
    let internal = |what: &str, e: &dyn std::fmt::Display| {
        tracing::error!(home = %home.display(), error = %e, "{what}");
        Refusal::new(
            ErrorCode::Internal,
            format!("{what}; an administrator can check the server's log"),
        )
    };
    let (home, _) = wharf_store::home::ensure_home(home)
        .map_err(|e| internal("your home directory cannot be created", &e))?;
    if let Some(owner) = owner {
        ensure_owned(&home, owner)
            .map_err(|e| internal("your home directory cannot be given to your uid", &e))?;
    }
    Ok(home)
}

impl Session {
    /// Prepares the home for commands: it exists, and when the server runs
    /// as root it belongs to the user's own uid (a first hand-over walks
    /// the home, on the blocking pool). Done once per session, again only
    /// if an administrator moves the home.
    pub(super) async fn prepare_home(
        &mut self,
        stored: &Path,
        owner: Option<Owner>,
    ) -> Result<PathBuf, Refusal> {
        if let Some((path, prepared)) = &self.home
            && path == stored
        {
            return Ok(prepared.clone());
        }
        let path = stored.to_owned();
        let prepared = tokio::task::spawn_blocking(move || make_home(&path, owner))
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "home preparation task failed");
                Refusal::new(ErrorCode::Internal, "internal error; retry")
            })??;
        self.home = Some((stored.to_owned(), prepared.clone()));
        Ok(prepared)
    }
}
