//! Wharf's store: the database and what it decides.
//!
//! Where it sits: above `wharf-core`, below `wharf-server` and
//! `admin-cli`; no client links it. It owns the database ([`Store`]: every
//! SQL statement, the embedded migrations), users and their rights,
//! password hashing and the [`Authenticator`] (argon2id on the blocking
//! pool behind a semaphore, with lockout), the sessions a login opens, the
//! administrator's word as open sessions see it ([`standing`]), quota
//! reservations, usage events, home directories and who owns them, users'
//! SSH public keys ([`keys`]), and the counters of [`metrics`]. It knows nothing of any one service's protocol.

#![deny(missing_docs)]

pub mod auth;
pub mod db;
mod error;
pub mod home;
pub mod keys;
pub mod metrics;
pub mod owner;
pub mod sessions;
pub mod standing;

pub use auth::{AuthConfig, Authenticator, Proof};
pub use db::{Store, User};
pub use error::{Error, Result};
