//! Message types shared by every service: the `hello` / `login` opening, the
//! `error` reply and its stable codes.
//!
//! Each service defines its own request and reply enums (internally tagged by
//! `op`) that embed these structs as variants, and implements [`Message`] for
//! them so the codec can tell an unknown `op` from a malformed one.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::Password;

/// A header type the codec can decode: a serde enum tagged by `op`.
///
/// No message may have a field named `body_len`: the codec owns that name.
pub trait Message: Serialize + DeserializeOwned {
    /// Every `op` value this type accepts.
    const OPS: &'static [&'static str];
}

/// Stable, machine-readable error codes. Clients branch on these; the
/// accompanying message is for people. Codes a client does not know decode
/// as [`ErrorCode::Unknown`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Malformed request: wrong fields, wrong order, missing `op`.
    BadRequest,
    /// The `op` is not one this service knows.
    UnknownOp,
    /// The byte stream is not Wharf frames; the connection closes.
    InvalidFrame,
    /// The header is over the limit; the connection closes.
    HeaderTooLarge,
    /// A message or body over the service's limit.
    MessageTooLarge,
    /// The client speaks a protocol version this server does not.
    UnsupportedVersion,
    /// Wrong user name or password.
    AuthFailed,
    /// Too many failed logins; retry later.
    LockedOut,
    /// An administrator locked the account.
    AccountLocked,
    /// The user has no right to this service.
    NotPermitted,
    /// A request that needs a login came before one.
    NotLoggedIn,
    /// The upload would go over the user's quota.
    QuotaExceeded,
    /// No such file, user, room...
    NotFound,
    /// The target exists already.
    AlreadyExists,
    /// A path that leaves the user's home or is not allowed.
    ForbiddenPath,
    /// A data integrity check (md5) failed.
    ChecksumMismatch,
    /// Too many requests at once; retry later.
    Busy,
    /// Flood control; slow down.
    RateLimited,
    /// A time limit ran out.
    Timeout,
    /// The user has as many sessions open as an administrator allows;
    /// end one and log in again.
    TooManySessions,
    /// The server is shutting down.
    ShuttingDown,
    /// The client did not read its messages fast enough and was dropped.
    SlowConsumer,
    /// Something failed on the server; details are in its log.
    Internal,
    /// The server speaks TLS only and the client connected without it.
    TlsRequired,
    /// The server's disk is full or read-only: nothing could be written.
    NoSpace,
    /// The server cannot write its database just now (busy, read-only,
    /// failing); nothing was changed; retry later.
    Unavailable,
    /// A code newer than this client.
    #[serde(other)]
    Unknown,
}

/// `hello` from the client: the first frame of every session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientHello {
    /// Protocol version the client speaks ([`crate::PROTOCOL_VERSION`]).
    pub version: u32,
    /// Client program and version, for logs: `wharf-ftp/0.1.0`.
    pub client: String,
}

/// `hello` from the server: the answer to the client's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerHello {
    /// Protocol version the server speaks.
    pub version: u32,
    /// Server program and version.
    pub server: String,
    /// Which service this is: `ftp`, `chat` or `exec`.
    pub service: String,
    /// A fresh random challenge (64 hex digits) for a login by key: the
    /// client signs [`key_login_message`] with it. Absent: the server takes
    /// passwords only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub challenge: Option<String>,
}

/// `login` from the client, after `hello`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Login {
    /// User name.
    pub user: String,
    /// Password, as typed: the connection's TLS layer keeps it private
    /// (only a `--no-tls` pair sends it in clear). Empty with `key`.
    #[serde(default = "no_password")]
    pub password: Password,
    /// A login by key instead of a password; see [`KeyProof`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<KeyProof>,
}

fn no_password() -> Password {
    Password::new("")
}

/// Proof that the client holds a key an administrator gave the user
/// (`admin-cli user key add`): an SSH signature (the `sshsig` format of
/// `ssh-keygen -Y sign`, namespace [`KEY_LOGIN_NAMESPACE`]) of
/// [`key_login_message`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyProof {
    /// The public key, as an OpenSSH line (`ssh-ed25519 AAAA...`, the
    /// comment optional).
    pub public_key: String,
    /// The signature, armored (`-----BEGIN SSH SIGNATURE-----`).
    pub signature: String,
}

/// The namespace of a login signature: a signature made for anything else
/// (a git commit, a file) can never log in.
pub const KEY_LOGIN_NAMESPACE: &str = "login@wharf";

/// Longest [`KeyProof`] field a server reads, in bytes (an RSA key of
/// 16384 bits and its signature fit).
pub const MAX_KEY_PROOF_BYTES: usize = 8192;

/// What a client signs to log in by key: the service, the user, the
/// server's challenge, and the TLS connection's exported keying material
/// (RFC 9266's `tls-exporter`, hex; `none` without TLS). A signature is
/// good for this connection only: replayed, or relayed by a server in the
/// middle, it names another connection's keying material.
pub fn key_login_message(
    service: &str,
    user: &str,
    challenge: &str,
    binding: Option<&[u8]>,
) -> Vec<u8> {
    let binding = binding.map_or_else(
        || "none".to_owned(),
        |b| b.iter().map(|x| format!("{x:02x}")).collect(),
    );
    format!(
        "wharf key login v1\nservice {service}\nuser {user}\nchallenge {challenge}\ntls {binding}\n"
    )
    .into_bytes()
}

/// `passwd` from a logged-in client: change its own password. Every
/// service takes it; the answer is `passwd_ok` or an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangePassword {
    /// The password now (asked again, as passwd(1) does).
    pub old: Password,
    /// The new one: 8 characters or more, at most 1024 bytes.
    pub new: Password,
}

/// `login_ok` from the server: the session is authenticated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginOk {
    /// The authenticated user's name.
    pub user: String,
}

/// `error` from the server: a request failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// What went wrong, for programs.
    pub code: ErrorCode,
    /// What went wrong and what to do, for people.
    pub message: String,
}

impl ErrorReply {
    /// An error reply.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorReply {
            code,
            message: message.into(),
        }
    }
}

/// The opening requests every service accepts. Services embed these variants
/// in their own request enums; this type serves clients and tests that only
/// need the opening.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum CommonRequest {
    /// See [`ClientHello`].
    Hello(ClientHello),
    /// See [`Login`].
    Login(Login),
}

impl Message for CommonRequest {
    const OPS: &'static [&'static str] = &["hello", "login"];
}

/// The opening replies every service sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum CommonReply {
    /// See [`ServerHello`].
    Hello(ServerHello),
    /// See [`LoginOk`].
    LoginOk(LoginOk),
    /// See [`ErrorReply`].
    Error(ErrorReply),
}

impl Message for CommonReply {
    const OPS: &'static [&'static str] = &["hello", "login_ok", "error"];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_serialises_flat_with_op_tag() {
        let req = CommonRequest::Login(Login {
            user: "alice".into(),
            password: Password::new("pw"),
            key: None,
        });
        let json = serde_json::to_string(&req).unwrap_or_default();
        assert_eq!(json, r#"{"op":"login","user":"alice","password":"pw"}"#);
    }

    #[test]
    fn unknown_error_codes_decode_as_unknown() {
        let code: Result<ErrorCode, _> = serde_json::from_str("\"from_the_future\"");
        assert_eq!(code.ok(), Some(ErrorCode::Unknown));
        let code: Result<ErrorCode, _> = serde_json::from_str("\"quota_exceeded\"");
        assert_eq!(code.ok(), Some(ErrorCode::QuotaExceeded));
    }
}
