//! The client library behind `wharf-ftp`, usable on its own: connect and log
//! in, then one method per command. Transfers resume by themselves: `put`
//! continues a partial upload the server holds if its prefix md5 matches the
//! local file, `get` continues from `LOCAL.part` if the server's prefix
//! matches; either starts over otherwise.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use md5::{Digest, Md5};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::codec::Framed;
use wharf_proto::ftp::{Entry, FtpReply, FtpRequest};
use wharf_proto::message::{ClientHello, Login};
use wharf_proto::{ErrorCode, Frame, FrameCodec, Outbound, PROTOCOL_VERSION, Password, ProtoError};

use crate::transfer::{DEPTH, hash_prefix, hex, read_and_hash, write_and_hash};

/// Largest listing body the client accepts.
const MAX_LISTING_BYTES: u64 = 64 * 1024 * 1024;

/// What can go wrong on the client side.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No connection could be made.
    #[error("cannot connect to {addr}: {source}; is wharf-ftpd running there?")]
    Connect {
        /// Where.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
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
    /// A reply that does not fit the request.
    #[error("unexpected reply from the server: {0}")]
    Unexpected(String),
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

    fn local(context: impl Into<String>, source: std::io::Error) -> Self {
        ClientError::Local {
            context: context.into(),
            source,
        }
    }
}

type Result<T> = std::result::Result<T, ClientError>;

/// Follows a transfer's progress (a progress bar, or nothing).
pub trait Progress: Send {
    /// The transfer starts: `total` bytes, of which `resumed_at` are already there.
    fn begin(&mut self, total: u64, resumed_at: u64);
    /// `bytes` more moved.
    fn advance(&mut self, bytes: u64);
    /// Something worth telling the user.
    fn note(&mut self, message: &str);
    /// The transfer ended.
    fn finish(&mut self);
}

/// A [`Progress`] that shows nothing.
#[derive(Debug, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn begin(&mut self, _: u64, _: u64) {}
    fn advance(&mut self, _: u64) {}
    fn note(&mut self, _: &str) {}
    fn finish(&mut self) {}
}

/// Transfer options.
#[derive(Debug, Clone, Copy, Default)]
pub struct TransferOptions {
    /// Bytes per second at most.
    pub rate_limit: Option<u64>,
}

/// What a transfer did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transferred {
    /// Remote path (as the server names it) or local path.
    pub path: String,
    /// Size of the whole file.
    pub size: u64,
    /// md5 of the whole file.
    pub md5: String,
    /// Bytes that were already there (0 for a fresh transfer).
    pub resumed_at: u64,
}

/// Keeps a transfer under a byte rate.
struct Pace {
    rate: Option<u64>,
    start: Instant,
    bytes: u64,
}

impl Pace {
    fn new(rate: Option<u64>) -> Self {
        Pace {
            rate: rate.filter(|r| *r > 0),
            start: Instant::now(),
            bytes: 0,
        }
    }

    async fn step(&mut self, n: usize) {
        self.bytes += n as u64;
        if let Some(rate) = self.rate {
            let due = Duration::from_secs_f64(self.bytes as f64 / rate as f64);
            let elapsed = self.start.elapsed();
            if due > elapsed {
                tokio::time::sleep(due - elapsed).await;
            }
        }
    }
}

/// A logged-in connection to wharf-ftpd.
#[derive(Debug)]
pub struct Client {
    conn: Framed<TcpStream, FrameCodec<FtpReply>>,
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ClientError::Unexpected(format!("internal task failed: {e}")))?
}

impl Client {
    /// Connects to `addr`, says hello and logs in.
    pub async fn connect(addr: &str, user: &str, password: &Password) -> Result<Client> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|source| ClientError::Connect {
                addr: addr.to_owned(),
                source,
            })?;
        let _ = stream.set_nodelay(true);
        let mut client = Client {
            conn: Framed::new(stream, FrameCodec::new()),
        };
        let hello = FtpRequest::Hello(ClientHello {
            version: PROTOCOL_VERSION,
            client: format!("wharf-ftp/{}", env!("CARGO_PKG_VERSION")),
        });
        match client.request(hello).await? {
            FtpReply::Hello(_) => {}
            other => return Err(unexpected(&other)),
        }
        let login = FtpRequest::Login(Login {
            user: user.to_owned(),
            password: password.clone(),
        });
        match client.request(login).await? {
            FtpReply::LoginOk(_) => Ok(client),
            other => Err(unexpected(&other)),
        }
    }

    async fn send(&mut self, req: FtpRequest, body_len: u64) -> Result<()> {
        self.conn
            .send(Outbound::Header { msg: req, body_len })
            .await
            .map_err(|e| match e {
                ProtoError::Io(_) => ClientError::Closed,
                other => ClientError::Protocol(other),
            })
    }

    /// The next frame from the server; an `error` reply becomes `Err`.
    async fn recv(&mut self) -> Result<Frame<FtpReply>> {
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
    async fn recv_header(&mut self) -> Result<(FtpReply, u64)> {
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

    /// Uploads `local` to `remote`, resuming a partial upload the server
    /// holds when its prefix matches this file.
    pub async fn put(
        &mut self,
        local: &Path,
        remote: &str,
        opts: TransferOptions,
        progress: &mut dyn Progress,
    ) -> Result<Transferred> {
        let shown = local.display().to_string();
        let path = local.to_path_buf();
        let (file, size) = blocking(move || {
            let file = std::fs::File::open(&path)
                .map_err(|e| ClientError::local(format!("cannot open {shown}"), e))?;
            let meta = file
                .metadata()
                .map_err(|e| ClientError::local(format!("cannot read {shown}"), e))?;
            if !meta.is_file() {
                return Err(ClientError::local(
                    shown,
                    std::io::Error::other("not a regular file"),
                ));
            }
            Ok((file, meta.len()))
        })
        .await?;
        self.send(
            FtpRequest::Put {
                path: remote.to_owned(),
                size,
            },
            0,
        )
        .await?;
        let (offset, prefix_md5) = match self.recv_header().await? {
            (FtpReply::PutReady { offset, prefix_md5 }, 0) => (offset, prefix_md5),
            (other, _) => return Err(unexpected(&other)),
        };
        let shown = local.display().to_string();
        let (file, hasher, start) = blocking(move || {
            let mut file = file;
            if offset > 0 && offset <= size {
                let prefix = hash_prefix(&mut file, offset)
                    .map_err(|e| ClientError::local(format!("cannot read {shown}"), e))?;
                if prefix_md5.is_some_and(|p| p.eq_ignore_ascii_case(&hex(prefix.clone()))) {
                    return Ok((file, prefix, offset));
                }
                use std::io::Seek;
                file.rewind()
                    .map_err(|e| ClientError::local(format!("cannot read {shown}"), e))?;
            }
            Ok((file, Md5::new(), 0))
        })
        .await?;
        if offset > 0 && start == 0 {
            progress.note("the server's partial upload differs from this file; starting over");
        }
        progress.begin(size, start);
        let body_len = size - start;
        self.send(FtpRequest::PutData { offset: start }, body_len)
            .await?;
        let (tx, mut rx) = mpsc::channel(DEPTH);
        let reader = tokio::task::spawn_blocking(move || read_and_hash(file, hasher, body_len, tx));
        let mut pace = Pace::new(opts.rate_limit);
        let mut sent = 0u64;
        while let Some(chunk) = rx.recv().await {
            self.conn
                .get_mut()
                .write_all(&chunk)
                .await
                .map_err(|_| ClientError::Closed)?;
            sent += chunk.len() as u64;
            progress.advance(chunk.len() as u64);
            pace.step(chunk.len()).await;
        }
        let hasher = reader
            .await
            .map_err(|e| ClientError::Unexpected(format!("internal task failed: {e}")))?
            .map_err(|e| ClientError::local(format!("cannot read {}", local.display()), e))?;
        if sent != body_len {
            return Err(ClientError::local(
                format!("cannot read {}", local.display()),
                std::io::Error::other("the file changed size while it was being sent"),
            ));
        }
        let md5 = hex(hasher);
        self.send(FtpRequest::PutEnd { md5: md5.clone() }, 0)
            .await?;
        let result = match self.recv_header().await {
            Ok((
                FtpReply::PutOk {
                    path,
                    size,
                    md5: server_md5,
                },
                0,
            )) if server_md5 == md5 => Ok(Transferred {
                path,
                size,
                md5,
                resumed_at: start,
            }),
            Ok((other, _)) => Err(unexpected(&other)),
            Err(e) => Err(e),
        };
        progress.finish();
        result
    }

    /// Downloads `remote` to `local` through `local.part`, resuming from an
    /// existing `.part` when the server's prefix matches it. Returns the
    /// final local path.
    pub async fn get(
        &mut self,
        remote: &str,
        local: &Path,
        opts: TransferOptions,
        progress: &mut dyn Progress,
    ) -> Result<(PathBuf, Transferred)> {
        let part = part_path(local);
        let shown = part.display().to_string();
        let part_for_open = part.clone();
        let (file, have, hasher) = blocking(move || {
            let mut file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&part_for_open)
                .map_err(|e| ClientError::local(format!("cannot write {shown}"), e))?;
            let have = file
                .metadata()
                .map_err(|e| ClientError::local(format!("cannot read {shown}"), e))?
                .len();
            let hasher = hash_prefix(&mut file, have)
                .map_err(|e| ClientError::local(format!("cannot read {shown}"), e))?;
            Ok((file, have, hasher))
        })
        .await?;
        let prefix_md5 = (have > 0).then(|| hex(hasher.clone()));
        self.send(
            FtpRequest::Get {
                path: remote.to_owned(),
                offset: have,
                prefix_md5,
            },
            0,
        )
        .await?;
        let (size, offset, body_len) = match self.recv_header().await? {
            (FtpReply::GetData { size, offset }, body_len)
                if body_len == size.saturating_sub(offset) =>
            {
                (size, offset, body_len)
            }
            (other, _) => return Err(unexpected(&other)),
        };
        let shown = part.display().to_string();
        let (file, hasher) = if offset == have {
            (file, hasher)
        } else {
            if have > 0 {
                progress.note(
                    "the local partial download differs from the server's file; starting over",
                );
            }
            let file = blocking(move || {
                use std::io::Seek;
                let mut file = file;
                file.set_len(0)
                    .map_err(|e| ClientError::local(format!("cannot write {shown}"), e))?;
                file.rewind()
                    .map_err(|e| ClientError::local(format!("cannot write {shown}"), e))?;
                Ok(file)
            })
            .await?;
            (file, Md5::new())
        };
        progress.begin(size, offset);
        let (tx, rx) = mpsc::channel(DEPTH);
        let writer = tokio::task::spawn_blocking(move || write_and_hash(file, hasher, rx));
        let mut pace = Pace::new(opts.rate_limit);
        let mut received = 0u64;
        let mut broken = None;
        while received < body_len {
            match self.recv().await {
                Ok(Frame::Body { chunk, .. }) => {
                    let n = chunk.len();
                    received += n as u64;
                    if tx.send(chunk).await.is_err() {
                        break;
                    }
                    progress.advance(n as u64);
                    pace.step(n).await;
                }
                Ok(_) => {
                    broken = Some(ClientError::Unexpected("download data expected".into()));
                    break;
                }
                Err(e) => {
                    broken = Some(e);
                    break;
                }
            }
        }
        drop(tx);
        let (file, hasher, _) = writer
            .await
            .map_err(|e| ClientError::Unexpected(format!("internal task failed: {e}")))?
            .map_err(|e| ClientError::local(format!("cannot write {}", part.display()), e))?;
        if let Some(e) = broken {
            progress.finish();
            return Err(e); // LOCAL.part stays for a resume
        }
        let server_md5 = match self.recv_header().await? {
            (FtpReply::GetEnd { md5 }, 0) => md5.to_ascii_lowercase(),
            (other, _) => return Err(unexpected(&other)),
        };
        let md5 = hex(hasher);
        progress.finish();
        let (part2, local2) = (part.clone(), local.to_path_buf());
        if md5 != server_md5 {
            let _ = std::fs::remove_file(&part2);
            return Err(ClientError::Checksum(format!(
                "{remote} arrived with md5 {md5} but the server's file has md5 {server_md5}; nothing was kept, download it again"
            )));
        }
        blocking(move || {
            file.sync_all()
                .map_err(|e| ClientError::local(format!("cannot write {}", part2.display()), e))?;
            std::fs::rename(&part2, &local2)
                .map_err(|e| ClientError::local(format!("cannot create {}", local2.display()), e))
        })
        .await?;
        Ok((
            local.to_path_buf(),
            Transferred {
                path: remote.to_owned(),
                size,
                md5,
                resumed_at: offset,
            },
        ))
    }
}

/// `LOCAL.part`: where a download is written until its md5 checks out.
pub fn part_path(local: &Path) -> PathBuf {
    let mut name = local.as_os_str().to_owned();
    name.push(".part");
    PathBuf::from(name)
}

fn unexpected(reply: &FtpReply) -> ClientError {
    let text = serde_json::to_string(reply).unwrap_or_else(|_| format!("{reply:?}"));
    ClientError::Unexpected(text.chars().take(200).collect())
}
