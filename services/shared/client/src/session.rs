//! What every client shares: connecting (TCP, TLS and the verification of
//! [`crate::tls::client`]), the `hello` and `login` opening, and the errors
//! of both. The three clients start every session with [`open_session`]; a
//! fourth service's client would too.

use futures_util::{SinkExt, StreamExt};
use tokio_util::codec::Framed;
use wharf_proto::message::{
    ClientHello, CommonReply, CommonRequest, KEY_LOGIN_NAMESPACE, KeyProof, Login, LoginOk,
    key_login_message,
};
use wharf_proto::{
    ErrorCode, Frame, FrameCodec, Message, Outbound, PROTOCOL_VERSION, Password, ProtoError,
};

use crate::identity::Credential;
use crate::tls::{ClientTls, TlsError};
use wharf_core::tls::Stream;

/// A session's frames: requests out, `R` replies in.
pub type Session<R> = Framed<Stream, FrameCodec<R>>;

/// What can go wrong opening a session (and, for the clients that reuse
/// these variants, later in it).
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// No connection, or no trust in the server.
    #[error("{0}")]
    Connect(#[from] TlsError),
    /// The server refused.
    #[error("{message}")]
    Server {
        /// The server's code.
        code: ErrorCode,
        /// The server's explanation.
        message: String,
    },
    /// The server's bytes are not Wharf frames.
    #[error("protocol error: {0}")]
    Protocol(ProtoError),
    /// The connection ended.
    #[error("the server closed the connection")]
    Closed,
    /// A reply that does not fit the request.
    #[error("unexpected reply from the server: {0}")]
    Unexpected(String),
    /// The key to log in with could not sign.
    #[error("{0}")]
    Key(#[source] crate::identity::IdentityError),
}

impl SessionError {
    /// The exit code a client ends with for this error, when it has its own
    /// ([`crate::tls::EXIT_KEY_CHANGED`]).
    pub fn exit_code(&self) -> Option<u8> {
        match self {
            SessionError::Connect(e) => e.exit_code(),
            _ => None,
        }
    }
}

/// Implements `From<SessionError>` for a client's own error type, which has
/// the same six variants (`Connect(TlsError)`, `Server { code, message }`,
/// `Protocol(ProtoError)`, `Closed`, `Unexpected(String)`,
/// `Key(IdentityError)`) beside its own.
#[macro_export]
macro_rules! from_session_error {
    ($error:ty) => {
        impl From<$crate::session::SessionError> for $error {
            fn from(e: $crate::session::SessionError) -> Self {
                use $crate::session::SessionError;
                match e {
                    SessionError::Connect(e) => Self::Connect(e),
                    SessionError::Server { code, message } => Self::Server { code, message },
                    SessionError::Protocol(e) => Self::Protocol(e),
                    SessionError::Closed => Self::Closed,
                    SessionError::Unexpected(what) => Self::Unexpected(what),
                    SessionError::Key(e) => Self::Key(e),
                }
            }
        }
    };
}

/// Connects to `addr`, verifies it as `tls` says, says hello as `client`
/// (`wharf-ftp/0.1.0`) and logs in with `credential`: a password, or a key
/// that signs this connection's challenge. `service` names the daemon in
/// errors (`wharf-ftpd`). Returns the session, ready for `R` replies.
pub async fn open_session<R: Message>(
    addr: &str,
    service: &str,
    client: &str,
    tls: &ClientTls,
    user: &str,
    credential: &Credential,
) -> Result<(Session<R>, LoginOk), SessionError> {
    let stream = tls.connect(addr, service).await?;
    let mut conn: Session<CommonReply> = Framed::new(stream, FrameCodec::new());
    let hello = CommonRequest::Hello(ClientHello {
        version: PROTOCOL_VERSION,
        client: client.to_owned(),
    });
    let hello = match exchange(&mut conn, hello).await? {
        CommonReply::Hello(hello) => hello,
        other => return Err(unexpected(&other)),
    };
    let login = match credential {
        Credential::Password(password) => Login {
            user: user.to_owned(),
            password: password.clone(),
            key: None,
        },
        Credential::Key(identity) => {
            let Some(challenge) = hello.challenge else {
                return Err(SessionError::Server {
                    code: ErrorCode::AuthFailed,
                    message: format!(
                        "{service} at {addr} takes passwords only (it is older than logins by key)"
                    ),
                });
            };
            let binding = conn.get_ref().channel_binding();
            let message = key_login_message(
                &hello.service,
                user,
                &challenge,
                binding.as_ref().map(|b| &b[..]),
            );
            let signature = identity
                .sign(KEY_LOGIN_NAMESPACE, &message)
                .await
                .map_err(SessionError::Key)?;
            Login {
                user: user.to_owned(),
                password: Password::new(""),
                key: Some(KeyProof {
                    public_key: identity.public_line(),
                    signature,
                }),
            }
        }
    };
    let ok = match exchange(&mut conn, CommonRequest::Login(login)).await? {
        CommonReply::LoginOk(ok) => ok,
        other => return Err(unexpected(&other)),
    };
    Ok((conn.map_codec(|_| FrameCodec::new()), ok))
}

async fn exchange(
    conn: &mut Session<CommonReply>,
    req: CommonRequest,
) -> Result<CommonReply, SessionError> {
    conn.send(Outbound::msg(req)).await.map_err(|e| match e {
        ProtoError::Io(_) => SessionError::Closed,
        other => SessionError::Protocol(other),
    })?;
    match conn.next().await {
        None => Err(SessionError::Closed),
        Some(Err(e)) => Err(SessionError::Protocol(e)),
        Some(Ok(Frame::Header {
            msg: CommonReply::Error(e),
            ..
        })) => Err(SessionError::Server {
            code: e.code,
            message: e.message,
        }),
        Some(Ok(Frame::Header { msg, .. })) => Ok(msg),
        Some(Ok(Frame::Body { .. })) => Err(SessionError::Unexpected(
            "body data where a reply was expected".into(),
        )),
        Some(Ok(Frame::Rejected(e))) => Err(SessionError::Unexpected(e.to_string())),
    }
}

fn unexpected(reply: &CommonReply) -> SessionError {
    SessionError::Unexpected(format!("{reply:?}").chars().take(200).collect())
}
