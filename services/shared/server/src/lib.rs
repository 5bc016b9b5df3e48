//! What every Wharf daemon is built from.
//!
//! Where it sits: above `wharf-store`, below the service daemons and
//! `wharfd`; no client links it. It holds the accept loop with its limits
//! ([`listener`]), the PROXY protocol, the budget of connections not yet
//! logged in ([`waiting`]), the opening every service's session starts
//! with ([`opening`]) and the one [`Refusal`] type, the server's TLS
//! certificate ([`tls`]), the `/metrics` and `/health` responder, the
//! daemons' flags and config file, and their start-up ([`daemon`]).

#![deny(missing_docs)]

pub mod cli;
pub mod config;
pub mod daemon;
pub mod listener;
pub mod metrics;
pub mod opening;
pub mod proxy_protocol;
pub mod refusal;
pub mod tls;
pub mod waiting;

pub use refusal::Refusal;
