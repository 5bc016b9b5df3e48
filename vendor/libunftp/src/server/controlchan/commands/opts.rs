//! The RFC 2389 Options (`OPTS`) command
//
// The OPTS (options) command allows a user-PI to specify the desired
// behavior of a server-FTP process when another FTP command (the target
// command) is later issued.  The exact behavior, and syntax, will vary
// with the target command indicated, and will be specified with the
// definition of that command.  Where no OPTS behavior is defined for a
// particular command there are no options available for that command.

use crate::{
    auth::UserDetail,
    server::controlchan::{
        Reply, ReplyCode,
        error::ControlChanError,
        handler::{CommandContext, CommandHandler},
    },
    storage::{Metadata, StorageBackend},
};
use async_trait::async_trait;

/// The parameters that can be given to the `OPTS` command, specifying the option the client wants
/// to set.
#[derive(Debug, PartialEq, Eq, Clone)]
pub enum Opt {
    /// The client wants us to enable UTF-8 encoding for file paths and such.
    Utf8 { on: bool },
    /// Wharf's patch: the algorithm `HASH` uses (`None`: which it is).
    Hash { algorithm: Option<String> },
}

#[derive(Debug)]
pub struct Opts {
    option: Opt,
}

impl Opts {
    pub fn new(option: Opt) -> Self {
        Opts { option }
    }
}

#[async_trait]
impl<Storage, User> CommandHandler<Storage, User> for Opts
where
    User: UserDetail + 'static,
    Storage: StorageBackend<User> + 'static,
    Storage::Metadata: Metadata,
{
    #[tracing_attributes::instrument]
    async fn handle(&self, args: CommandContext<Storage, User>) -> Result<Reply, ControlChanError> {
        match &self.option {
            Opt::Utf8 { on: true } => Ok(Reply::new(ReplyCode::CommandOkay, "Always in UTF-8 mode.")),
            Opt::Utf8 { on: false } => Ok(Reply::new(ReplyCode::CommandNotImplementedForParameter, "Non UTF-8 mode not supported")),
            Opt::Hash { algorithm } => {
                let mut session = args.session.lock().await;
                match algorithm.as_deref() {
                    None => {}
                    Some("SHA-256") => session.hash_sha256 = true,
                    Some("MD5") => session.hash_sha256 = false,
                    Some(_) => {
                        return Ok(Reply::new(
                            ReplyCode::ParameterSyntaxError,
                            "Unknown algorithm (SHA-256 or MD5); the selection was not changed",
                        ));
                    }
                }
                let now = if session.hash_sha256 { "SHA-256" } else { "MD5" };
                Ok(Reply::new(ReplyCode::CommandOkay, now))
            }
        }
    }
}
