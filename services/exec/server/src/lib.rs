//! Wharf remote exec, the server: `wharf-execd`.
//!
//! [`server`] runs users' command lines with `sh -c` in their homes, each in
//! its own sandbox ([`launch`]: own uid, namespaces, Landlock, seccomp,
//! limits, a cgroup) with a scrubbed environment, a time limit and an
//! output cap, and streams stdout and stderr back as separate frames. The
//! client is `wharf-exec`.

#![deny(missing_docs)]

pub mod launch;
pub mod server;
