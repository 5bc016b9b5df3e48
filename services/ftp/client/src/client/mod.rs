//! The client library behind `wharf-ftp`, usable on its own: connect and log
//! in, then one method per command. Transfers resume by themselves: `put`
//! continues a partial upload the server holds if its prefix md5 matches the
//! local file, `get` continues from `LOCAL.part` if the server's prefix
//! matches; either starts over otherwise.

mod batch;
mod transfer;

use futures_util::{SinkExt, StreamExt};
use wharf_client::Credential;
use wharf_client::session::Session;
use wharf_client::session::open_session;
use wharf_client::tls::ClientTls;
use wharf_client::tls::TlsError;
use wharf_proto::ftp::{Entry, FtpReply, FtpRequest, PartialUpload};
use wharf_proto::message::ChangePassword;
use wharf_proto::{ErrorCode, Frame, Outbound, Password, ProtoError};

pub use batch::{PutJob, Within};
pub use transfer::{NoProgress, Progress, TransferOptions, Transferred, part_path};

/// Largest listing body the client accepts.
const MAX_LISTING_BYTES: u64 = 64 * 1024 * 1024;

/// What can go wrong on the client side.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No connection could be made, or the server is not trusted.
    #[error("{0}")]
    Connect(#[source] TlsError),
    /// The server refused the request.
    #[error("{message}")]
    Server {
        /// The server's code.
        code: ErrorCode,
        /// The server's explanation.
        message: String,
    },
    /// The server's bytes are not Wharf frames.
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtoError),
    /// The connection ended.
    #[error("the server closed the connection")]
    Closed,
    /// The connection ended in the middle of a transfer; what arrived is
    /// kept for a resume.
    #[error("{0}")]
    Interrupted(String),
    /// A reply that does not fit the request.
    #[error("unexpected reply from the server: {0}")]
    Unexpected(String),
    /// The key to log in with could not sign.
    #[error("{0}")]
    Key(#[source] wharf_client::identity::IdentityError),
    /// A local file could not be read or written.
    #[error("{context}: {source}")]
    Local {
        /// What was being done.
        context: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A downloaded file did not match the server's md5.
    #[error("{0}")]
    Checksum(String),
}

impl ClientError {
    /// The server's error code, if the server refused.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether the connection cannot carry another request after this
    /// error: it ended, or the stream is out of step.
    pub fn is_connection_lost(&self) -> bool {
        matches!(
            self,
            ClientError::Closed
                | ClientError::Interrupted(_)
                | ClientError::Protocol(_)
                | ClientError::Unexpected(_)
        )
    }

    pub(crate) fn local(context: impl Into<String>, source: std::io::Error) -> Self {
        ClientError::Local {
            context: context.into(),
            source,
        }
    }
}

wharf_client::from_session_error!(ClientError);

pub(crate) type Result<T> = std::result::Result<T, ClientError>;

/// A user's disk quota and what uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Quota {
    /// Bytes stored.
    pub used: u64,
    /// Bytes held for uploads under way or interrupted.
    pub reserved: u64,
    /// The quota in bytes; `None` when unlimited.
    pub quota: Option<u64>,
    /// Entries stored (files, folders, links).
    pub files: u64,
    /// Entries held by interrupted or unfinished uploads.
    pub reserved_files: u64,
    /// The file quota, in entries; `None` when unlimited.
    pub files_quota: Option<u64>,
}

impl Quota {
    /// Bytes an upload may still take; `None` when unlimited.
    pub fn free(&self) -> Option<u64> {
        self.quota
            .map(|q| q.saturating_sub(self.used.saturating_add(self.reserved)))
    }
}

/// A logged-in connection to wharf-ftpd.
#[derive(Debug)]
pub struct Client {
    conn: Session<FtpReply>,
    user: String,
}

pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ClientError::Unexpected(format!("internal task failed: {e}")))?
}

impl Client {
    /// Connects to `addr` (verifying it as `tls` says), says hello and
    /// logs in.
    pub async fn connect(
        addr: &str,
        tls: &ClientTls,
        user: &str,
        credential: impl Into<Credential>,
    ) -> Result<Client> {
        let credential = &credential.into();
        let client = format!("wharf-ftp/{}", env!("CARGO_PKG_VERSION"));
        let (conn, _) = open_session(addr, "wharf-ftpd", &client, tls, user, credential).await?;
        Ok(Client {
            conn,
            user: user.to_owned(),
        })
    }

    /// The logged-in user.
    pub fn user(&self) -> &str {
        &self.user
    }

    pub(crate) async fn send(&mut self, req: FtpRequest, body_len: u64) -> Result<()> {
        self.conn
            .send(Outbound::Header { msg: req, body_len })
            .await
            .map_err(|e| match e {
                ProtoError::Io(_) => ClientError::Closed,
                other => ClientError::Protocol(other),
            })
    }

    /// The next frame from the server; an `error` reply becomes `Err`.
    pub(crate) async fn recv(&mut self) -> Result<Frame<FtpReply>> {
        match self.conn.next().await {
            None => Err(ClientError::Closed),
            Some(Err(e)) => Err(e.into()),
            Some(Ok(Frame::Header {
                msg: FtpReply::Error(e),
                ..
            })) => Err(ClientError::Server {
                code: e.code,
                message: e.message,
            }),
            Some(Ok(Frame::Rejected(e))) => Err(ClientError::Unexpected(e.to_string())),
            Some(Ok(frame)) => Ok(frame),
        }
    }

    /// The next header, with the length of the body that follows it.
    pub(crate) async fn recv_header(&mut self) -> Result<(FtpReply, u64)> {
        match self.recv().await? {
            Frame::Header { msg, body_len } => Ok((msg, body_len)),
            _ => Err(ClientError::Unexpected(
                "body data where a reply was expected".into(),
            )),
        }
    }

    async fn request(&mut self, req: FtpRequest) -> Result<FtpReply> {
        self.send(req, 0).await?;
        match self.recv_header().await? {
            (reply, 0) => Ok(reply),
            (reply, _) => Err(unexpected(&reply)),
        }
    }

    async fn expect_done(&mut self, req: FtpRequest) -> Result<()> {
        match self.request(req).await? {
            FtpReply::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Changes the user's password from `old` to `new`.
    pub async fn passwd(&mut self, old: &Password, new: &Password) -> Result<()> {
        let change = FtpRequest::Passwd(ChangePassword {
            old: old.clone(),
            new: new.clone(),
        });
        match self.request(change).await? {
            FtpReply::PasswdOk => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// The current directory.
    pub async fn pwd(&mut self) -> Result<String> {
        match self.request(FtpRequest::Pwd).await? {
            FtpReply::Cwd { path } => Ok(path),
            other => Err(unexpected(&other)),
        }
    }

    /// Changes directory; returns the new current directory.
    pub async fn cd(&mut self, path: &str) -> Result<String> {
        match self
            .request(FtpRequest::Cd {
                path: path.to_owned(),
            })
            .await?
        {
            FtpReply::Cwd { path } => Ok(path),
            other => Err(unexpected(&other)),
        }
    }

    /// Lists a directory (or one file), sorted by name.
    pub async fn ls(&mut self, path: Option<&str>) -> Result<Vec<Entry>> {
        self.send(
            FtpRequest::Ls {
                path: path.map(str::to_owned),
            },
            0,
        )
        .await?;
        let (reply, body_len) = self.recv_header().await?;
        let FtpReply::Listing { .. } = reply else {
            return Err(unexpected(&reply));
        };
        self.json_body(body_len).await
    }

    /// A JSON body of `body_len` bytes (a listing).
    async fn json_body<T: serde::de::DeserializeOwned>(&mut self, body_len: u64) -> Result<T> {
        if body_len > MAX_LISTING_BYTES {
            return Err(ClientError::Unexpected(format!(
                "listing of {body_len} bytes is too large"
            )));
        }
        let mut body = Vec::with_capacity(body_len as usize);
        while (body.len() as u64) < body_len {
            match self.recv().await? {
                Frame::Body { chunk, .. } => body.extend_from_slice(&chunk),
                _ => return Err(ClientError::Unexpected("listing body expected".into())),
            }
        }
        serde_json::from_slice(&body)
            .map_err(|e| ClientError::Unexpected(format!("bad listing: {e}")))
    }

    /// The interrupted uploads the server holds, by path.
    pub async fn partials(&mut self) -> Result<Vec<PartialUpload>> {
        self.send(FtpRequest::Partials, 0).await?;
        let (reply, body_len) = self.recv_header().await?;
        let FtpReply::PartialList { .. } = reply else {
            return Err(unexpected(&reply));
        };
        self.json_body(body_len).await
    }

    /// Drops the interrupted uploads of `path` (all of them without one)
    /// and releases the quota they held; returns how many, and the bytes
    /// released.
    pub async fn discard(&mut self, path: Option<&str>) -> Result<(u64, u64)> {
        match self
            .request(FtpRequest::Discard {
                path: path.map(str::to_owned),
            })
            .await?
        {
            FtpReply::Discarded { count, bytes } => Ok((count, bytes)),
            other => Err(unexpected(&other)),
        }
    }

    /// The user's quota and use.
    pub async fn quota(&mut self) -> Result<Quota> {
        match self.request(FtpRequest::Quota).await? {
            FtpReply::Quota {
                used,
                reserved,
                quota,
                files,
                reserved_files,
                files_quota,
            } => Ok(Quota {
                used,
                reserved,
                quota,
                files,
                reserved_files,
                files_quota,
            }),
            other => Err(unexpected(&other)),
        }
    }

    /// Creates a directory.
    pub async fn mkdir(&mut self, path: &str) -> Result<()> {
        self.expect_done(FtpRequest::Mkdir {
            path: path.to_owned(),
        })
        .await
    }

    /// Removes a file.
    pub async fn rm(&mut self, path: &str) -> Result<()> {
        self.expect_done(FtpRequest::Rm {
            path: path.to_owned(),
        })
        .await
    }

    /// Removes an empty directory.
    pub async fn rmdir(&mut self, path: &str) -> Result<()> {
        self.expect_done(FtpRequest::Rmdir {
            path: path.to_owned(),
        })
        .await
    }

    /// Renames or moves.
    pub async fn mv(&mut self, from: &str, to: &str) -> Result<()> {
        self.expect_done(FtpRequest::Mv {
            from: from.to_owned(),
            to: to.to_owned(),
        })
        .await
    }

    /// Ends the session politely.
    pub async fn quit(mut self) -> Result<()> {
        match self.request(FtpRequest::Quit).await? {
            FtpReply::Bye => Ok(()),
            other => Err(unexpected(&other)),
        }
    }
}

pub(crate) fn unexpected(reply: &FtpReply) -> ClientError {
    let text = serde_json::to_string(reply).unwrap_or_else(|_| format!("{reply:?}"));
    ClientError::Unexpected(text.chars().take(200).collect())
}
