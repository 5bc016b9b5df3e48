//! Small uploads sent at once (`put` with `at_once`), made durable together.
//!
//! A client sending many small files does not wait for each one: it sends
//! `put`, `put_data` and `put_end` of several files back to back. Each is
//! received, written to its partial and checked against its md5 as it
//! comes, then waits in the session's batch. The batch is committed when
//! the client pauses (no complete request waiting), when it is full, or
//! before any other request is answered: one pass syncs every file's data,
//! renames each into place, syncs each directory once, and records all of
//! them in one database transaction; then the `put_ok`s go out, in request
//! order. A `put_ok` is only ever sent for a file that is durable, so a
//! failure in the middle of a batch loses nothing acknowledged.

use std::collections::HashSet;
use std::fs::File;
use std::io::{Seek, Write};
use std::time::Instant;

use wharf_core::Store;
use wharf_core::store::{Direction, FileVersion, TransferRecord, UploadCommit};
use wharf_proto::Frame;
use wharf_proto::ftp::{FtpReply, FtpRequest};

use super::commands::blocking;
use super::session::{LoggedIn, Session};
use super::upload::{Partial, Prepared, abandon_if_empty, drop_partial, prepare, receive_small};
use crate::error::FtpError;
use crate::paths::{AboveRoot, VPath};
use crate::transfer::md5_hex;

/// Most bytes a `put` sent at once may carry: its data arrives before the
/// server could refuse it.
pub(super) const MAX_AT_ONCE: u64 = 1024 * 1024;

/// Most uploads a batch holds before it is committed.
pub(super) const MAX_BATCH: usize = 64;

/// An upload received whole and verified, waiting for its batch's commit.
pub(super) struct Verified {
    file: File,
    partial: Partial,
    v: VPath,
    size: u64,
    md5: String,
    user_id: i64,
    started: Instant,
}

impl Verified {
    fn record(&self, ok: bool) -> TransferRecord {
        TransferRecord {
            user_id: self.user_id,
            direction: Direction::Up,
            path: self.v.to_string(),
            bytes: self.size,
            md5: Some(self.md5.clone()),
            ok,
            duration: self.started.elapsed(),
        }
    }
}

/// Receives a `put` sent at once: reserves its quota, reads its data and
/// `put_end`, writes it to its partial and checks its md5. The file is not
/// yet synced or visible: that is [`commit`]'s work.
pub(super) async fn receive(
    s: &mut Session,
    li: &LoggedIn,
    path: &str,
    size: u64,
) -> Result<Verified, FtpError> {
    if size > MAX_AT_ONCE {
        return Err(FtpError::BadRequest(format!(
            "a put sent at once carries at most {MAX_AT_ONCE} bytes, not {size}; wait for put_ready before sending bigger files"
        )));
    }
    let started = Instant::now();
    let v = li.cwd.resolve(path, AboveRoot::Refuse)?;
    let partial = Partial::new(&li.jail, size, &v);
    let store = s.server.store().clone();
    let user_id = li.user.id;
    let Prepared {
        file,
        created,
        held,
        replacing,
        ..
    } = {
        let (jail, vv, p) = (li.jail.clone(), v.clone(), partial.clone());
        blocking(move || prepare(&jail, &vv, &p, size)).await?
    };
    if created && let Err(e) = store.reserve_replacing(user_id, size, replacing).await {
        drop(file);
        let p = partial.clone();
        let _ = blocking(move || p.remove()).await;
        return Err(e.into());
    }
    s.upload_began = true;
    let (body, claimed) = match receive_whole(s, size).await {
        Ok(got) => got,
        Err(e) => {
            drop(file);
            abandon_if_empty(&store, user_id, size, &partial, held).await;
            return Err(e);
        }
    };
    let written = blocking(move || {
        let mut file = file;
        if held > 0 {
            // What an interrupted upload left goes: this one starts at 0.
            file.set_len(0)
                .and_then(|()| file.rewind())
                .map_err(|e| FtpError::io("partial upload", e))?;
        }
        file.write_all(&body)
            .map_err(|e| FtpError::io("write the upload", e))?;
        Ok((file, md5_hex(&body)))
    })
    .await;
    let (file, md5) = match written {
        Ok(w) => w,
        Err(e) => {
            drop_partial(&store, user_id, size, &partial).await?;
            return Err(e);
        }
    };
    let verified = Verified {
        file,
        partial,
        v,
        size,
        md5,
        user_id,
        started,
    };
    if verified.md5 != claimed {
        let record = verified.record(false);
        let Verified {
            file, partial, md5, ..
        } = verified;
        drop(file);
        drop_partial(&store, user_id, size, &partial).await?;
        store.record_transfer(&record).await?;
        return Err(FtpError::ChecksumMismatch(format!(
            "{} arrived with md5 {md5}, but the sender's file has md5 {claimed}; nothing was stored, send it again",
            record.path
        )));
    }
    Ok(verified)
}

/// Reads `put_data` from 0 with all `size` bytes, then `put_end`; returns
/// the data and the md5 the client claims.
async fn receive_whole(s: &mut Session, size: u64) -> Result<(Vec<u8>, String), FtpError> {
    match s.next_frame_idle().await? {
        Frame::Header {
            msg: FtpRequest::PutData { offset: 0 },
            body_len,
        } if body_len == size => {}
        _ => {
            return Err(FtpError::Fatal(
                "a put sent at once must be followed by put_data from offset 0 with the whole file"
                    .into(),
            ));
        }
    }
    let body = receive_small(s, size).await?;
    match s.next_frame_idle().await? {
        Frame::Header {
            msg: FtpRequest::PutEnd { md5 },
            body_len: 0,
        } => Ok((body, md5.to_ascii_lowercase())),
        _ => Err(FtpError::Fatal(
            "the upload data must be followed by put_end".into(),
        )),
    }
}

/// What making one upload of a batch durable came to.
struct Durable {
    /// The file it replaced for good (device, inode), if any, and its size.
    replaced: Option<(u64, Option<(u64, u64)>)>,
    version: Option<FileVersion>,
}

/// Makes a batch durable: every file's data synced, then each renamed into
/// place, then each directory that changed synced once.
fn make_durable(batch: &[Verified]) -> Vec<Result<Durable, FtpError>> {
    let synced: Vec<Result<(), FtpError>> = batch
        .iter()
        .map(|u| {
            u.file
                .sync_data()
                .map_err(|e| FtpError::io(format!("sync {}", u.v), e))
        })
        .collect();
    let mut dirs = Vec::new();
    let mut seen = HashSet::new();
    let mut results: Vec<Result<Durable, FtpError>> = batch
        .iter()
        .zip(synced)
        .map(|(u, synced)| {
            synced?;
            let (dir, old) = u.partial.rename_into_place(&u.v)?;
            if let Ok(st) = rustix::fs::fstat(&dir)
                && seen.insert((st.st_dev, st.st_ino))
            {
                dirs.push((dir, u.v.clone()));
            }
            // Read after the rename, which moves the ctime.
            let version = u.file.metadata().ok().map(|m| FileVersion::of(&m));
            Ok(Durable {
                replaced: old.map(|o| (o.size, o.gone)),
                version,
            })
        })
        .collect();
    for (dir, v) in dirs {
        if let Err(e) = rustix::fs::fsync(&dir) {
            // The files are in place but may not survive a crash: say so
            // for every upload of the batch that landed in a directory.
            let e = FtpError::io(format!("sync the directory of {v}"), e.into());
            tracing::error!(error = %e, "a batch of uploads may not be durable");
            for r in results.iter_mut().filter(|r| r.is_ok()) {
                *r = Err(FtpError::io(
                    format!("sync the directory of {v}"),
                    std::io::Error::other("fsync failed"),
                ));
            }
            break;
        }
    }
    results
}

/// Commits a batch: durable on disk, recorded in one transaction; returns
/// each upload's answer, in order.
pub(super) async fn commit(store: &Store, batch: Vec<Verified>) -> Vec<Result<FtpReply, FtpError>> {
    let (batch, durable) = match tokio::task::spawn_blocking(move || {
        let durable = make_durable(&batch);
        (batch, durable)
    })
    .await
    {
        Ok(done) => done,
        Err(e) => {
            return vec![Err(FtpError::Fatal(format!("internal error: {e}")))];
        }
    };
    let mut commits = Vec::new();
    let mut answers = Vec::with_capacity(batch.len());
    for (u, d) in batch.iter().zip(durable) {
        match d {
            Ok(d) => {
                let size = i64::try_from(u.size).unwrap_or(i64::MAX);
                let (old, gone) = d.replaced.map_or((0, None), |(old, gone)| {
                    (i64::try_from(old).unwrap_or(i64::MAX), gone)
                });
                commits.push(UploadCommit {
                    reserved: u.size,
                    added_bytes: size - old,
                    added_files: if d.replaced.is_some() { 0 } else { 1 },
                    record: u.record(true),
                    version: d.version,
                    replaced: gone,
                });
                answers.push(Ok(FtpReply::PutOk {
                    path: u.v.to_string(),
                    size: u.size,
                    md5: u.md5.clone(),
                }));
            }
            Err(e) => {
                // Not renamed when the data could not be synced: it goes,
                // with its reservation.
                if let Err(e) = drop_partial(store, u.user_id, u.size, &u.partial).await {
                    tracing::error!(error = %e, "dropping a failed upload");
                }
                if let Err(e) = store.record_transfer(&u.record(false)).await {
                    tracing::error!(error = %e, "recording a failed upload");
                }
                answers.push(Err(e));
            }
        }
    }
    if let Err(e) = store.commit_uploads(&commits).await {
        // One cause answers every upload the transaction held.
        let reply = FtpError::from(e).reply();
        return answers
            .into_iter()
            .map(|a| a.and_then(|_| Err(FtpError::Replied(reply.clone()))))
            .collect();
    }
    answers
}
