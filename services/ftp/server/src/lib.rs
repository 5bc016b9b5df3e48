//! Wharf's file-transfer service, the server: `wharf-ftpd`
//! ([`server::run`]) and its standard FTP door ([`server::stdftp`]).
//!
//! Where it sits: above wharf-proto (frames, [`wharf_proto::ftp`]
//! messages), wharf-store (users, quotas, homes, file digests) and
//! wharf-server (the accept loop, the opening, limits). A session goes:
//! `hello`, `login`, then file commands; paths are virtual (`/` is the
//! user's home) and resolved through [`paths::Jail`]. Transfers stream with
//! md5 computed in the same pass ([`wharf_core::transfer`]) and checked
//! before anything becomes visible. The client is `wharf-ftp`.

mod error;
pub mod paths;
pub mod server;

pub use error::FtpError;
