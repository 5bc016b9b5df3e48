//! Wharf's patch: the `HASH` command (draft-bryan-ftpext-hash): the MD5
//! (from the storage back end, which may know it already) or the SHA-256
//! (read through) of a whole file, as `213 ALGORITHM 0-END HASH PATH`.
//! `OPTS HASH` chooses the algorithm for the session.

use crate::{
    auth::UserDetail,
    server::{
        chancomms::ControlChanMsg,
        controlchan::{
            Reply, ReplyCode,
            error::ControlChanError,
            handler::{CommandContext, CommandHandler},
        },
    },
    storage::{FEATURE_SITEMD5, Metadata, StorageBackend},
};
use async_trait::async_trait;
use sha2::Digest;
use std::{path::PathBuf, sync::Arc};
use tokio::io::AsyncReadExt;

#[derive(Debug)]
pub struct Hash {
    path: PathBuf,
}

impl Hash {
    pub fn new(path: PathBuf) -> Self {
        Hash { path }
    }
}

#[async_trait]
impl<Storage, User> CommandHandler<Storage, User> for Hash
where
    User: UserDetail,
    Storage: StorageBackend<User> + 'static,
    Storage::Metadata: Metadata,
{
    async fn handle(&self, args: CommandContext<Storage, User>) -> Result<Reply, ControlChanError> {
        let session = args.session.lock().await;
        let user = Arc::clone(&session.user);
        if user.is_none() {
            return Ok(Reply::new(ReplyCode::NotLoggedIn, "Please log in first"));
        }
        let storage = Arc::clone(&session.storage);
        let path = session.cwd.join(self.path.clone());
        let sha256 = session.hash_sha256;
        drop(session);
        if args.storage_features & FEATURE_SITEMD5 == 0 {
            return Ok(Reply::new(ReplyCode::CommandNotImplemented, "Not supported by the selected storage back-end."));
        }
        let tx = args.tx_control_chan.clone();
        tokio::spawn(async move {
            let hashed = async {
                let user = (*user)
                    .as_ref()
                    .ok_or_else(|| crate::storage::Error::from(crate::storage::ErrorKind::PermissionDenied))?;
                let meta = storage.metadata(user, &path).await?;
                if !meta.is_file() {
                    return Err(crate::storage::Error::from(crate::storage::ErrorKind::PermanentFileNotAvailable));
                }
                let hex = if sha256 {
                    let mut input = storage.get(user, &path, 0).await?;
                    let mut hasher = sha2::Sha256::new();
                    let mut buf = vec![0u8; 256 * 1024];
                    loop {
                        let n = input
                            .read(&mut buf)
                            .await
                            .map_err(|e| crate::storage::Error::new(crate::storage::ErrorKind::LocalError, e))?;
                        if n == 0 {
                            break;
                        }
                        hasher.update(&buf[..n]);
                    }
                    hasher.finalize().iter().map(|b| format!("{b:02x}")).collect::<String>()
                } else {
                    storage.md5(user, &path).await?
                };
                Ok((meta.len(), hex))
            }
            .await;
            let message = match hashed {
                Ok((len, hex)) => ControlChanMsg::CommandChannelReply(Reply::new_with_string(
                    ReplyCode::FileStatus,
                    format!(
                        "{} 0-{} {} {}",
                        if sha256 { "SHA-256" } else { "MD5" },
                        len.saturating_sub(1),
                        hex,
                        path.display()
                    ),
                )),
                Err(err) => ControlChanMsg::StorageError(err),
            };
            let _ = tx.send(message).await;
        });
        Ok(Reply::none())
    }
}
