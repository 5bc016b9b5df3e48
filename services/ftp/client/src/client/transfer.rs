//! Transfers: `put` and `get` with resume, progress reporting and a rate
//! limit. Both stream through the shared pipeline of [`wharf_core::transfer`]:
//! one blocking thread reads or writes the file and hashes in the same pass.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use wharf_core::md5::Md5;
use wharf_proto::ftp::{FtpReply, FtpRequest};
use wharf_proto::{Frame, Outbound};

use super::{Client, ClientError, Result, blocking, unexpected};
use wharf_core::transfer::{
    DEPTH, Direct, HASH_APART, WriteMode, hash_prefix, hex, read_and_hash, write_and_hash,
};

/// Files up to this size are put at once, without waiting for
/// `put_ready`.
pub(super) const SMALL_PUT: u64 = 256 * 1024;

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
    /// `put`: send the whole file, whatever the server holds of an
    /// interrupted upload.
    pub restart: bool,
    /// `get`: sync the download to disk before it takes its name. Off by
    /// default, as in scp, sftp and curl: the md5 is checked either way,
    /// and what a crash could lose is a copy the server still has.
    pub fsync: bool,
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
pub(super) struct Pace {
    rate: Option<u64>,
    start: Instant,
    bytes: u64,
}

impl Pace {
    pub(super) fn new(rate: Option<u64>) -> Self {
        Pace {
            rate: rate.filter(|r| *r > 0),
            start: Instant::now(),
            bytes: 0,
        }
    }

    pub(super) async fn step(&mut self, n: usize) {
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

impl Client {
    /// Uploads `local` to `remote`, resuming a partial upload the server
    /// holds when its prefix matches this file.
    pub async fn put(
        &mut self,
        local: &Path,
        remote: &str,
        opts: TransferOptions,
        progress: &mut dyn Progress,
    ) -> Result<Transferred> {
        let path = local.to_path_buf();
        let (file, size) = match blocking(move || super::batch::load(&path)).await? {
            super::batch::Loaded::Large(file, size) => (file, size),
            super::batch::Loaded::Small(body, md5) => {
                let size = body.len() as u64;
                progress.begin(size, 0);
                let sent = self.send_at_once(remote, body, &md5).await;
                let result = match sent {
                    Ok(()) => {
                        progress.advance(size);
                        self.put_ok(md5, 0).await
                    }
                    Err(e) => Err(e),
                };
                progress.finish();
                return result;
            }
        };
        self.put_file(file, size, local, remote, opts, progress)
            .await
    }

    /// Uploads the open `file` of `size` bytes, waiting for `put_ready`
    /// (to resume what the server holds).
    pub(super) async fn put_file(
        &mut self,
        file: std::fs::File,
        size: u64,
        local: &Path,
        remote: &str,
        opts: TransferOptions,
        progress: &mut dyn Progress,
    ) -> Result<Transferred> {
        self.send(
            FtpRequest::Put {
                path: remote.to_owned(),
                size,
                at_once: false,
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
            if offset > 0 && offset <= size && !opts.restart {
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
        if offset > 0 && start == 0 && !opts.restart {
            progress.note("the server's partial upload differs from this file; starting over");
        }
        progress.begin(size, start);
        let body_len = size - start;
        self.send(FtpRequest::PutData { offset: start }, body_len)
            .await?;
        let (tx, mut rx) = mpsc::channel(DEPTH);
        let reader =
            tokio::task::spawn_blocking(move || read_and_hash(file, Some(hasher), body_len, tx));
        let mut pace = Pace::new(opts.rate_limit);
        let mut sent = 0u64;
        loop {
            // The server may stop the upload midway (full disk, lowered
            // quota, a lock): its error arrives while we send.
            let chunk = tokio::select! {
                chunk = rx.recv() => chunk,
                early = self.recv() => {
                    progress.finish();
                    return Err(match early {
                        Err(e) => e,
                        Ok(_) => ClientError::Unexpected("a reply in the middle of an upload".into()),
                    });
                }
            };
            let Some(chunk) = chunk else {
                break;
            };
            if self.conn.get_mut().write_all(&chunk).await.is_err() {
                progress.finish();
                return Err(self.reason_for_cut().await);
            }
            sent += chunk.len() as u64;
            progress.advance(chunk.len() as u64);
            pace.step(chunk.len()).await;
        }
        let hasher = reader
            .await
            .map_err(|e| ClientError::Unexpected(format!("internal task failed: {e}")))?
            .map_err(|e| ClientError::local(format!("cannot read {}", local.display()), e))?
            .unwrap_or_default();
        if sent != body_len {
            return Err(ClientError::local(
                format!("cannot read {}", local.display()),
                std::io::Error::other("the file changed size while it was being sent"),
            ));
        }
        let md5 = hex(hasher);
        self.send(FtpRequest::PutEnd { md5: md5.clone() }, 0)
            .await?;
        let result = self.put_ok(md5, start).await;
        progress.finish();
        result
    }

    /// Queues a small file's `put` (sent at once), its data and its
    /// `put_end` without flushing them: the server answers with `put_ok`
    /// or an error only, and drops the data of a put it refuses.
    pub(super) async fn feed_at_once(
        &mut self,
        remote: &str,
        body: bytes::Bytes,
        md5: &str,
    ) -> Result<()> {
        use futures_util::SinkExt;
        let size = body.len() as u64;
        let frames = [
            Outbound::Header {
                msg: FtpRequest::Put {
                    path: remote.to_owned(),
                    size,
                    at_once: true,
                },
                body_len: 0,
            },
            Outbound::Header {
                msg: FtpRequest::PutData { offset: 0 },
                body_len: size,
            },
            Outbound::Body(body),
            Outbound::Header {
                msg: FtpRequest::PutEnd {
                    md5: md5.to_owned(),
                },
                body_len: 0,
            },
        ];
        for frame in frames {
            self.conn
                .feed(frame)
                .await
                .map_err(|_| ClientError::Closed)?;
        }
        Ok(())
    }

    /// Sends what was fed.
    pub(super) async fn flush(&mut self) -> Result<()> {
        use futures_util::SinkExt;
        SinkExt::<Outbound<FtpRequest>>::flush(&mut self.conn)
            .await
            .map_err(|_| ClientError::Closed)
    }

    /// A small file in one go (see [`Client::feed_at_once`]).
    async fn send_at_once(&mut self, remote: &str, body: bytes::Bytes, md5: &str) -> Result<()> {
        self.feed_at_once(remote, body, md5).await?;
        self.flush().await
    }

    /// The server's `put_ok`, which must carry the `md5` this end sent.
    pub(super) async fn put_ok(&mut self, md5: String, resumed_at: u64) -> Result<Transferred> {
        let reply = self.recv_header().await;
        put_answer(reply, md5, resumed_at)
    }

    /// Why the server cut the connection, if it said so before it did.
    async fn reason_for_cut(&mut self) -> ClientError {
        match tokio::time::timeout(Duration::from_secs(2), self.recv()).await {
            Ok(Err(e @ ClientError::Server { .. })) => e,
            _ => ClientError::Closed,
        }
    }

    /// Downloads `remote` to `local` through `local.part`, resuming from an
    /// existing `.part` when the server's prefix matches it. Returns the
    /// final local path. A download that fails before a byte arrived
    /// leaves no `.part` behind (one that was there before stays).
    pub async fn get(
        &mut self,
        remote: &str,
        local: &Path,
        opts: TransferOptions,
        progress: &mut dyn Progress,
    ) -> Result<(PathBuf, Transferred)> {
        let part = part_path(local);
        let existed = std::fs::symlink_metadata(&part).is_ok();
        let got = self.get_through(remote, local, opts, progress).await;
        if got.is_err() && !existed && std::fs::metadata(&part).is_ok_and(|m| m.len() == 0) {
            let _ = std::fs::remove_file(&part);
        }
        got
    }

    async fn get_through(
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
        let writer = tokio::task::spawn_blocking(move || {
            let mode = WriteMode {
                durable: opts.fsync,
                hash_apart: body_len >= HASH_APART,
                // Past the page cache always when the disk is waited for
                // anyway, else while the disk keeps well ahead.
                direct: if opts.fsync {
                    Direct::Always
                } else {
                    Direct::WhileAhead
                },
            };
            write_and_hash(file, hasher, mode, rx)
        });
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
            // LOCAL.part stays for a resume.
            return Err(match e {
                ClientError::Closed
                | ClientError::Protocol(wharf_proto::ProtoError::Truncated { .. }) => {
                    ClientError::Interrupted(format!(
                        "the server ended the connection after {} of {size} bytes; they are kept in {}: run the same get to resume",
                        offset + received,
                        part.display()
                    ))
                }
                e => e,
            });
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
        let fsync = opts.fsync;
        blocking(move || {
            if fsync {
                file.sync_all().map_err(|e| {
                    ClientError::local(format!("cannot write {}", part2.display()), e)
                })?;
            }
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

/// Opens a local file to upload; returns it and its size.
pub(super) fn open_file(local: &Path) -> Result<(std::fs::File, u64)> {
    let shown = local.display().to_string();
    let file = std::fs::File::open(local)
        .map_err(|e| ClientError::local(format!("cannot open {shown}"), e))?;
    let meta = file
        .metadata()
        .map_err(|e| ClientError::local(format!("cannot read {shown}"), e))?;
    if meta.is_dir() {
        return Err(ClientError::local(
            shown,
            std::io::Error::other("a directory: put -r uploads it and everything under it"),
        ));
    }
    if !meta.is_file() {
        return Err(ClientError::local(
            shown,
            std::io::Error::other("not a regular file"),
        ));
    }
    Ok((file, meta.len()))
}

/// Reads a small file whole; returns its bytes and md5.
pub(super) fn read_whole(
    mut file: std::fs::File,
    size: u64,
    local: &Path,
) -> Result<(bytes::Bytes, String)> {
    use std::io::Read;
    let shown = local.display();
    let mut body = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    file.read_to_end(&mut body)
        .map_err(|e| ClientError::local(format!("cannot read {shown}"), e))?;
    if body.len() as u64 != size {
        return Err(ClientError::local(
            shown.to_string(),
            std::io::Error::other("the file changed size while it was being read"),
        ));
    }
    let md5 = wharf_core::transfer::md5_hex(&body);
    Ok((bytes::Bytes::from(body), md5))
}

/// The answer to an upload: `put_ok` with the md5 that was sent.
pub(super) fn put_answer(
    reply: Result<(FtpReply, u64)>,
    md5: String,
    resumed_at: u64,
) -> Result<Transferred> {
    match reply? {
        (
            FtpReply::PutOk {
                path,
                size,
                md5: server_md5,
            },
            0,
        ) if server_md5 == md5 => Ok(Transferred {
            path,
            size,
            md5,
            resumed_at,
        }),
        (other, _) => Err(unexpected(&other)),
    }
}
