//! `get`: stream a file from an offset while hashing, then the md5 trailer.
//! A resumed download is only resumed if the client's prefix md5 matches.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::time::Instant;

use md5::{Digest, Md5};
use rustix::fs::{Mode, OFlags};
use tokio::sync::mpsc;
use wharf_core::store::{Direction, TransferRecord};
use wharf_proto::ftp::FtpReply;

use super::commands::blocking;
use super::session::{LoggedIn, Session};
use crate::error::FtpError;
use crate::paths::AboveRoot;
use crate::transfer::{DEPTH, hash_prefix, hex, read_and_hash};

pub(super) async fn get(
    s: &mut Session,
    li: &LoggedIn,
    path: &str,
    offset: u64,
    prefix_md5: Option<String>,
) -> Result<(), FtpError> {
    let v = li.cwd.resolve(path, AboveRoot::Refuse)?;
    if offset > 0 && prefix_md5.is_none() {
        return Err(FtpError::BadRequest(
            "a get with an offset needs the prefix_md5 of those bytes".into(),
        ));
    }
    let jail = li.jail.clone();
    let shown = v.to_string();
    let (file, size, start, hasher) = blocking(move || {
        // The checks with their clear errors, then the open that cannot
        // leave the home whatever changed in between.
        jail.existing(&v)?;
        let mut file = File::from(jail.open_beneath(
            &v.relative(),
            OFlags::RDONLY,
            Mode::empty(),
            &v.to_string(),
        )?);
        let meta = file
            .metadata()
            .map_err(|e| FtpError::io(v.to_string(), e))?;
        if !meta.is_file() {
            return Err(FtpError::BadRequest(format!("{v} is not a file")));
        }
        let size = meta.len();
        if offset == 0 || offset > size {
            return Ok((file, size, 0, Md5::new()));
        }
        let prefix = hash_prefix(&mut file, offset).map_err(|e| FtpError::io(v.to_string(), e))?;
        if prefix_md5.is_some_and(|p| p.eq_ignore_ascii_case(&hex(prefix.clone()))) {
            return Ok((file, size, offset, prefix));
        }
        file.seek(SeekFrom::Start(0))
            .map_err(|e| FtpError::io(v.to_string(), e))?;
        Ok((file, size, 0, Md5::new()))
    })
    .await?;

    let started = Instant::now();
    let body_len = size - start;
    s.send_header(
        FtpReply::GetData {
            size,
            offset: start,
        },
        body_len,
    )
    .await?;
    let (tx, mut rx) = mpsc::channel(DEPTH);
    let reader = tokio::task::spawn_blocking(move || read_and_hash(file, hasher, body_len, tx));
    let mut sent = 0u64;
    let mut client_gone = false;
    let stop_now = s.server.stop_now.clone();
    let mut watch = s.standing.take();
    let home = s.home.clone();
    while let Some(chunk) = rx.recv().await {
        // Past the shutdown's grace period the download ends where it is
        // (recorded, and resumable); a write cut short leaves the stream
        // out of step, so the connection closes either way.
        let written = tokio::select! {
            biased;
            _ = stop_now.cancelled() => false,
            _ = wharf_core::standing::ended(&mut watch, wharf_core::Service::Ftp, home.as_deref()) => false,
            r = s.write_body(&chunk) => r.is_ok(),
        };
        if !written {
            client_gone = true;
            break;
        }
        sent += chunk.len() as u64;
    }
    s.standing = watch;
    drop(rx);
    let read = reader
        .await
        .map_err(|e| FtpError::Fatal(format!("internal error: {e}")))?;
    let store = s.server.store().clone();
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
    let md5 = hex(hasher);
    s.send(FtpReply::GetEnd { md5: md5.clone() }).await?;
    record.ok = true;
    record.md5 = Some(md5);
    record.duration = started.elapsed();
    store.record_transfer(&record).await?;
    Ok(())
}
