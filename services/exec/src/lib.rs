//! Wharf remote exec: a small and safe ssh.
//!
//! [`server`] runs users' command lines with `sh -c` in their homes, each in
//! its own process group with a scrubbed environment, resource limits, a
//! time limit and an output cap, and streams stdout and stderr back as
//! separate frames; [`client`] is the library behind `wharf-exec`.

#![deny(missing_docs)]

pub mod client;
pub mod launch;
pub mod server;
