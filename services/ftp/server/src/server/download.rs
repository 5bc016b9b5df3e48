//! `get`: stream a file from an offset, then the md5 trailer. The md5 comes
//! from the database when it was recorded for this very version of the file
//! (by its upload, or by an earlier download that hashed it); otherwise the
//! file is hashed while it is sent, and the result recorded. A resumed
//! download is only resumed if the client's prefix md5 matches.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::time::Instant;
use wharf_proto::ErrorCode;

use rustix::fs::{Mode, OFlags};
use tokio::sync::mpsc;
use wharf_core::md5::Md5;
use wharf_core::tls::Stream;
use wharf_proto::ftp::FtpReply;
use wharf_store::db::Direction;
use wharf_store::db::FileVersion;
use wharf_store::db::TransferRecord;

use super::FtpServer;
use super::commands::blocking;
use super::conn::{LoggedIn, Watch, Wire};
use crate::error::FtpError;
use crate::paths::{AboveRoot, Jail, VPath};
use wharf_core::transfer::{DEPTH, hash_prefix, hex, read_and_hash};

/// The file `v` opened for reading, with its metadata: the checks with
/// their clear errors, then the open that cannot leave the home whatever
/// changed in between.
pub(super) fn open_file(jail: &Jail, v: &VPath) -> Result<(File, std::fs::Metadata), FtpError> {
    jail.existing(v)?;
    let file = File::from(jail.open_beneath(
        &v.relative(),
        OFlags::RDONLY,
        Mode::empty(),
        &v.to_string(),
    )?);
    let meta = file
        .metadata()
        .map_err(|e| FtpError::io(v.to_string(), e))?;
    if !meta.is_file() {
        return Err(FtpError::refuse(
            ErrorCode::BadRequest,
            format!("{v} is not a file"),
        ));
    }
    Ok((file, meta))
}

pub(super) async fn get(
    server: &FtpServer,
    wire: &mut Wire,
    ends: &mut Watch,
    li: &LoggedIn,
    path: &str,
    offset: u64,
    prefix_md5: Option<String>,
) -> Result<(), FtpError> {
    let v = li.cwd.resolve(path, AboveRoot::Refuse)?;
    if offset > 0 && prefix_md5.is_none() {
        return Err(FtpError::refuse(
            ErrorCode::BadRequest,
            "a get with an offset needs the prefix_md5 of those bytes",
        ));
    }
    let jail = li.jail.clone();
    let shown = v.to_string();
    let (file, version) = blocking(move || {
        let (file, meta) = open_file(&jail, &v)?;
        Ok((file, FileVersion::of(&meta)))
    })
    .await?;
    let size = version.size;
    // The md5 recorded for this very version of the file, if any: then
    // nothing but a resumed prefix is hashed here.
    let store = server.store().clone();
    let known = match store.known_md5(li.user.id, &version).await {
        Ok(known) => known,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read recorded md5s; hashing the file");
            None
        }
    };
    let hashing = known.is_none();
    let fresh = move || hashing.then(Md5::new);
    // Hashed here, it is recorded at the end if the file did not change.
    let stat_later = if hashing {
        Some(
            file.try_clone()
                .map_err(|e| FtpError::io(shown.clone(), e))?,
        )
    } else {
        None
    };
    let (file, start, hasher) = if offset == 0 || offset > size {
        (file, 0, fresh())
    } else {
        let what = shown.clone();
        blocking(move || {
            let mut file = file;
            let prefix =
                hash_prefix(&mut file, offset).map_err(|e| FtpError::io(what.clone(), e))?;
            if prefix_md5.is_some_and(|p| p.eq_ignore_ascii_case(&hex(prefix.clone()))) {
                return Ok((file, offset, fresh().map(|_| prefix)));
            }
            file.seek(SeekFrom::Start(0))
                .map_err(|e| FtpError::io(what, e))?;
            Ok((file, 0, fresh()))
        })
        .await?
    };

    let started = Instant::now();
    let body_len = size - start;
    wire.send_header(
        FtpReply::GetData {
            size,
            offset: start,
        },
        body_len,
    )
    .await?;
    let stop_now = server.stop_now.clone();
    let mut watch = ends.standing.take();
    let home = ends.home.clone();
    // Past the shutdown's grace period, or once an administrator ends the
    // session, the download ends where it is (recorded, and resumable); a
    // write cut short leaves the stream out of step, so the connection
    // closes either way.
    let mut sent = 0u64;
    let mut client_gone = false;
    // The user's download rate, shared with their other sessions.
    let pace = li.lease.rates().down.clone();
    let read = {
        let mut stopped = std::pin::pin!(async {
            tokio::select! {
                _ = stop_now.cancelled() => {}
                _ = wharf_store::standing::ended(&mut watch, wharf_core::Service::Ftp, home.as_deref()) => {}
            }
        });
        match wire.conn.get_ref() {
            // Plaintext and nothing to hash: the kernel copies the file to the
            // socket (sendfile), the data never passes through this process.
            Stream::Plain(tcp) if hasher.is_none() => {
                let (tcp, mut offset) = (tcp, start);
                let sending = async {
                    while sent < body_len {
                        tcp.writable().await?;
                        let left = pace.step(
                            usize::try_from(body_len - sent)
                                .unwrap_or(usize::MAX)
                                .min(1 << 30),
                        );
                        match tcp.try_io(tokio::io::Interest::WRITABLE, || {
                            rustix::fs::sendfile(tcp, &file, Some(&mut offset), left)
                                .map_err(Into::into)
                        }) {
                            Ok(0) => {
                                return Err(std::io::Error::new(
                                    std::io::ErrorKind::UnexpectedEof,
                                    "the file is shorter than it was",
                                ));
                            }
                            Ok(n) => {
                                sent += n as u64;
                                pace.take(n).await;
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                            Err(e) => return Err(e),
                        }
                    }
                    Ok(())
                };
                tokio::select! {
                    biased;
                    _ = &mut stopped => {
                        client_gone = true;
                        Ok(None)
                    }
                    r = sending => match r {
                        Ok(()) => Ok(None),
                        // The socket failed: the client is gone. (A file that
                        // shrank is the other error, and breaks the stream too.)
                        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(e),
                        Err(_) => {
                            client_gone = true;
                            Ok(None)
                        }
                    },
                }
            }
            _ => {
                let (tx, mut rx) = mpsc::channel(DEPTH);
                let reader =
                    tokio::task::spawn_blocking(move || read_and_hash(file, hasher, body_len, tx));
                while let Some(chunk) = rx.recv().await {
                    let written = tokio::select! {
                        biased;
                        _ = &mut stopped => false,
                        r = async {
                            pace.take(chunk.len()).await;
                            wire.write_body(&chunk).await
                        } => r.is_ok(),
                    };
                    if !written {
                        client_gone = true;
                        break;
                    }
                    sent += chunk.len() as u64;
                }
                drop(rx);
                reader.await.map_err(|e| {
                    FtpError::closing(ErrorCode::BadRequest, format!("internal error: {e}"))
                })?
            }
        }
    };
    ends.standing = watch;
    let mut record = TransferRecord {
        user_id: li.user.id,
        direction: Direction::Down,
        path: shown.clone(),
        bytes: sent,
        md5: None,
        ok: false,
        duration: started.elapsed(),
    };
    let hasher = match read {
        Ok(h) if !client_gone && sent == body_len => h,
        Ok(_) => {
            store.record_transfer(&record).await?;
            return Err(FtpError::Closed);
        }
        Err(e) => {
            // The body was promised and cannot be delivered: the stream is broken.
            tracing::warn!(path = %shown, error = %e, "file changed or failed while being sent");
            store.record_transfer(&record).await?;
            return Err(FtpError::Closed);
        }
    };
    let md5 = match (known, hasher) {
        (Some(known), _) => known,
        (None, hasher) => {
            let md5 = hex(hasher.unwrap_or_default());
            // Hashed once: recorded, if the file stayed as it was meanwhile.
            let unchanged = stat_later
                .and_then(|f| f.metadata().ok())
                .is_some_and(|m| FileVersion::of(&m) == version);
            if unchanged && let Err(e) = store.remember_md5(li.user.id, &version, &md5).await {
                tracing::warn!(error = %e, "cannot record a file's md5");
            }
            md5
        }
    };
    wire.send(FtpReply::GetEnd { md5: md5.clone() }).await?;
    record.ok = true;
    record.md5 = Some(md5);
    record.duration = started.elapsed();
    store.record_transfer(&record).await?;
    Ok(())
}
