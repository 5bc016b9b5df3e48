//! Why a client would not, or could not, trust a server.

use std::path::PathBuf;

use super::EXIT_KEY_CHANGED;

/// Why a connection was not made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// No TCP connection.
    #[error("cannot connect to {addr}: {source}; is {service} running there?")]
    Connect {
        /// Where.
        addr: String,
        /// Which daemon was expected.
        service: String,
        /// Why.
        source: std::io::Error,
    },
    /// `--ca` names nothing usable.
    #[error("cannot use {path} as the CA: {reason}; give a PEM certificate with --ca or WHARF_CA")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The certificate is not one `--ca` vouches for.
    #[error(
        "the server at {addr} presented a certificate that {ca} does not vouch for ({reason}); \
         check that --ca (or WHARF_CA) is your server's certificate, and that {addr} is your server"
    )]
    NotTrusted {
        /// Where.
        addr: String,
        /// The CA file.
        ca: String,
        /// What the verification said.
        reason: String,
    },
    /// First contact, and nobody could say yes.
    #[error(
        "the server at {addr} is not known: its certificate is not signed by a CA this machine trusts, and \
         no fingerprint is pinned for it. Its SHA-256 fingerprint is {fingerprint}. Compare it with what \
         the administrator gets from `admin-cli tls fingerprint`, then connect once with --accept-new (or run \
         in a terminal to be asked), or pass the server's certificate with --ca"
    )]
    UnknownServer {
        /// Where.
        addr: String,
        /// The certificate's fingerprint.
        fingerprint: String,
    },
    /// The user said no.
    #[error("not connecting to {addr}: its certificate was not accepted; nothing was sent")]
    Declined {
        /// Where.
        addr: String,
    },
    /// The certificate is not the pinned one.
    #[error(
        "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n\
         @    WARNING: THE WHARF SERVER'S CERTIFICATE HAS CHANGED!  @\n\
         @@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n\
         IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!\n\
         Someone could be eavesdropping on you right now (a man-in-the-middle attack),\n\
         or the administrator has replaced the server's certificate.\n\
         The certificate of {addr} has SHA-256 fingerprint\n{presented}\n\
         but {file} line {line} pins\n{pinned}\n\
         Nothing was sent. If the administrator confirms the new fingerprint \
         (`admin-cli tls fingerprint`), delete line {line} of {file} and connect again."
    )]
    KeyChanged {
        /// Where.
        addr: String,
        /// The presented certificate's fingerprint.
        presented: String,
        /// The pinned fingerprint.
        pinned: String,
        /// The known-servers file.
        file: String,
        /// Its line.
        line: usize,
    },
    /// The server does not speak TLS.
    #[error(
        "the server at {addr} did not answer in TLS; if it runs with --no-tls, connect with --no-tls \
         too (only on a network you trust)"
    )]
    NotTls {
        /// Where.
        addr: String,
    },
    /// The handshake failed otherwise.
    #[error(
        "TLS with {addr} failed: {reason}; check that {addr} is a Wharf server and that \
         both ends run the same Wharf version"
    )]
    Handshake {
        /// Where.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The known-servers file could not be read or written.
    #[error("cannot {action} {}: {source}; check the file and its folder", path.display())]
    KnownServers {
        /// "read", "add to".
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `HOST:PORT` expected.
    #[error("{addr:?} is not HOST:PORT; write it like localhost:2121 or [::1]:2121")]
    BadAddress {
        /// What was given.
        addr: String,
    },
}

impl TlsError {
    /// The exit code a client should end with for this error:
    /// [`EXIT_KEY_CHANGED`] for a changed certificate, else `None`.
    pub fn exit_code(&self) -> Option<u8> {
        matches!(self, TlsError::KeyChanged { .. }).then_some(EXIT_KEY_CHANGED)
    }
}
