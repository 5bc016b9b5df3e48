//! Wharf's file-transfer service: the server ([`server::run`]) and the client
//! library ([`client::Client`]) behind the `wharf-ftpd` and `wharf-ftp`
//! binaries.
//!
//! Where it sits: above wharf-proto (frames, [`wharf_proto::ftp`] messages)
//! and wharf-core (users, authentication, quotas, homes, connection limits).
//! A session goes: `hello`, `login` (the auth gate), then file commands;
//! paths are virtual (`/` is the user's home) and resolved through
//! [`paths::Jail`]. Transfers stream with md5 computed in the same pass on
//! both ends and checked before anything becomes visible.

pub mod client;
mod error;
pub mod paths;
pub mod server;
mod transfer;

pub use error::FtpError;
pub use transfer::md5_hex;
