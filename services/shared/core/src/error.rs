//! The errors of what a person types: a user name, a service, a size.
//! Every other failure belongs to the crate that meets it (the store's
//! [`wharf-store`'s `Error`], a client's connection errors, a daemon's
//! start-up errors).

use wharf_proto::ErrorCode;

/// `Result` with wharf-core's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Input a person typed that Wharf cannot take, with what to write instead.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A user name breaks the naming rules.
    #[error("invalid user name {name:?}: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// Not one of the services.
    #[error("unknown service {0:?}; services are ftp, chat and exec")]
    InvalidService(String),
    /// A size that does not parse.
    #[error(
        "invalid size {input:?}: {reason}; write it as 500MiB, 2G, 1.5GB, 1048576 or unlimited"
    )]
    InvalidSize {
        /// The size as given.
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl Error {
    /// The protocol code a service answers with: always a bad request.
    pub fn code(&self) -> ErrorCode {
        ErrorCode::BadRequest
    }
}
