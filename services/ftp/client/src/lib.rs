//! Wharf's file-transfer service, the client: the library behind
//! `wharf-ftp` ([`client::Client`]). The server is `wharf-ftpd`.
//!
//! Where it sits: above wharf-proto (frames, [`wharf_proto::ftp`]
//! messages), wharf-core (the data pipeline of [`wharf_core::transfer`],
//! which hashes in the same pass as it moves the bytes) and wharf-client
//! (the connection, the log-in, the line editor). Paths are the server's
//! virtual ones (`/` is the user's home); transfers are md5-checked before
//! anything becomes visible, and resumable.

pub mod client;
