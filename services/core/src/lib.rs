//! Wharf's core: what every service and `admin-cli` share.
//!
//! Where it sits: below the service crates and `admin-cli`, beside
//! `wharf-proto`. It owns the database ([`Store`]: every SQL statement, the
//! embedded migrations), users and their rights, password hashing and
//! [`Authenticator`] (argon2id on the blocking pool behind a semaphore, with
//! lockout), quota reservations, usage events, home directories and the size
//! syntax of every command line. It knows nothing of any one service's
//! protocol.

#![deny(missing_docs)]

pub mod auth;
pub mod cli;
pub mod client;
pub mod client_config;
pub mod config;
pub mod daemon;
pub mod daemon_config;
pub mod editor;
mod error;
pub mod home;
pub mod metrics;
pub mod names;
pub mod opening;
pub mod owner;
pub mod proxy_protocol;
pub mod rate;
pub mod refusal;
pub mod server;
pub mod service;
pub mod sessions;
pub mod size;
pub mod standing;
pub mod store;
pub mod time;
pub mod tls;
pub mod waiting;

pub use auth::{AuthConfig, Authenticator};
pub use error::{Error, Result};
pub use refusal::Refusal;
pub use service::{Service, ServiceSet};
pub use store::{Store, User};
pub use wharf_proto::Password;
