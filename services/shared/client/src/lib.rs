//! What every Wharf client is built from.
//!
//! Where it sits: above `wharf-core`, below the service clients; no daemon
//! links it. It holds the connection and its opening ([`session`]), the
//! verification of the server's certificate with pinning on first use
//! ([`tls`]), the log-in with the user's password or key ([`identity`]:
//! a key file, ssh-agent), the config file's
//! defaults ([`config`]) and the line editor of the interactive shells
//! ([`editor`]).

#![deny(missing_docs)]

pub mod cli;
pub mod config;
pub mod editor;
pub mod identity;
pub mod session;
pub mod tls;

pub use identity::Credential;
pub use session::{Session, SessionError, open_session};
