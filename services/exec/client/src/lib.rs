//! Wharf remote exec, the client: the library behind `wharf-exec`, a small
//! and safe ssh. The server is `wharf-execd`.

#![deny(missing_docs)]

pub mod client;
