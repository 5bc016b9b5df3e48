//! Wharf's core: what every Wharf crate shares, clients and servers
//! alike.
//!
//! Where it sits: at the bottom, beside `wharf-proto`. It holds the names
//! and rules a person types (user names, services, sizes, rates), the
//! time, the TLS stream and fingerprint both ends use, where the data and
//! the database are by default, the file transfer's data pipeline (read
//! or write a file and hash it in one pass), and how a binary runs and
//! reports its error. It links no database, no server and no line editor: the store is
//! `wharf-store`, the daemons' parts `wharf-server`, the clients'
//! `wharf-client`.

#![deny(missing_docs)]

pub mod cli;
pub mod config;
mod error;
pub mod md5;
pub mod names;
pub mod rate;
pub mod service;
pub mod size;
pub mod time;
pub mod tls;
pub mod transfer;

pub use error::{Error, Result};
pub use service::{Service, ServiceSet};
pub use wharf_proto::Password;
