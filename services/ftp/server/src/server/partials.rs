//! The user's interrupted uploads: `partials` lists them, `discard` drops
//! them and releases the quota they hold. Each partial upload records its
//! target in an extended attribute ([`PATH_XATTR`]); its name holds only the
//! target's size and a hash of its path.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use wharf_proto::ErrorCode;

use rustix::fs::{AtFlags, Mode, OFlags};
use wharf_proto::ftp::{FtpReply, PartialUpload};
use wharf_store::home::INTERNAL_DIR;
use wharf_store::home::partial_target_size;

use super::commands::{blocking, rfc3339};
use super::conn::LoggedIn;
use crate::error::FtpError;
use crate::paths::{AboveRoot, Jail};
use wharf_core::transfer::md5_hex;

/// The extended attribute holding a partial upload's target path.
pub(super) const PATH_XATTR: &str = "user.wharf.path";

/// Longest target path read back from [`PATH_XATTR`].
const MAX_PATH: usize = 4096;

/// Records `path` as the target of the partial upload `fd`; a file system
/// without user extended attributes lists the upload without its path.
pub(super) fn record_target(fd: &OwnedFd, path: &str) {
    if let Err(e) = rustix::fs::fsetxattr(
        fd,
        PATH_XATTR,
        path.as_bytes(),
        rustix::fs::XattrFlags::empty(),
    ) {
        tracing::debug!(error = %e, "cannot record a partial upload's target");
    }
}

/// The partial upload directory, if there is one.
fn open_dir(jail: &Jail) -> Result<Option<OwnedFd>, FtpError> {
    match jail.open_beneath(
        &Path::new(INTERNAL_DIR).join("partial"),
        OFlags::RDONLY | OFlags::DIRECTORY,
        Mode::empty(),
        "the partial upload directory",
    ) {
        Ok(fd) => Ok(Some(fd)),
        Err(e) if e.is(ErrorCode::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Names (and target sizes) of the partial uploads in `dir`.
fn names(dir: &OwnedFd) -> Result<Vec<(String, u64)>, FtpError> {
    let entries = rustix::fs::Dir::read_from(dir)
        .map_err(|e| FtpError::io("read the partial upload directory", e.into()))?;
    let mut out = Vec::new();
    for entry in entries {
        let entry =
            entry.map_err(|e| FtpError::io("read the partial upload directory", e.into()))?;
        let Ok(name) = entry.file_name().to_str() else {
            continue;
        };
        if let Some(size) = partial_target_size(name) {
            out.push((name.to_owned(), size));
        }
    }
    Ok(out)
}

/// Opens one partial upload without following links.
fn open(dir: &OwnedFd, name: &str) -> Option<File> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()
    .map(File::from)
}

/// True when a session holds the upload's lock (it is uploading now).
/// Taking the lock to find out holds it for a moment; an upload starting
/// in that moment retries (see `upload::lock`).
fn active(file: &File) -> bool {
    match file.try_lock() {
        Ok(()) => {
            let _ = file.unlock();
            false
        }
        Err(_) => true,
    }
}

fn target(file: &File) -> Option<String> {
    let mut buf = vec![0u8; MAX_PATH];
    let n = rustix::fs::fgetxattr(file, PATH_XATTR, &mut buf[..]).ok()?;
    buf.truncate(n);
    String::from_utf8(buf).ok()
}

fn list(jail: &Jail, max: usize) -> Result<Vec<PartialUpload>, FtpError> {
    let Some(dir) = open_dir(jail)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (name, size) in names(&dir)? {
        let Some(file) = open(&dir, &name) else {
            continue; // gone meanwhile
        };
        let Ok(meta) = file.metadata() else {
            continue;
        };
        out.push(PartialUpload {
            path: target(&file),
            size,
            received: meta.size(),
            mtime: rfc3339(meta.modified()),
            active: active(&file),
        });
        if out.len() > max {
            return Err(FtpError::refuse(
                ErrorCode::BadRequest,
                format!(
                    "you have more than {max} interrupted uploads; discard them all with `discard --all`"
                ),
            ));
        }
    }
    // By path; those without a known path last.
    out.sort_by(|a, b| (a.path.is_none(), &a.path).cmp(&(b.path.is_none(), &b.path)));
    Ok(out)
}

/// The `partial_list` reply and its JSON body.
pub(super) async fn partials(li: &LoggedIn, max: usize) -> Result<(FtpReply, Vec<u8>), FtpError> {
    let jail = li.jail.clone();
    let found = blocking(move || list(&jail, max)).await?;
    let body = serde_json::to_vec(&found)
        .map_err(|e| FtpError::closing(ErrorCode::BadRequest, format!("internal error: {e}")))?;
    Ok((
        FtpReply::PartialList {
            count: found.len() as u64,
        },
        body,
    ))
}

/// What a discard removed, and whether it had to leave uploads under way.
struct Removed {
    sizes: Vec<u64>,
    left_active: bool,
}

/// Removes the partial uploads whose name ends in `-KEY.part` (all of them
/// without a key), except those a session is uploading into.
fn remove(jail: &Jail, key: Option<&str>) -> Result<Removed, FtpError> {
    let mut removed = Removed {
        sizes: Vec::new(),
        left_active: false,
    };
    let Some(dir) = open_dir(jail)? else {
        return Ok(removed);
    };
    let suffix = key.map(|k| format!("-{k}.part"));
    for (name, size) in names(&dir)? {
        if suffix.as_ref().is_some_and(|s| !name.ends_with(s.as_str())) {
            continue;
        }
        let Some(file) = open(&dir, &name) else {
            continue;
        };
        // Held while unlinking: an upload that opened it meanwhile finds it
        // unlinked once it has the lock, and starts afresh.
        if file.try_lock().is_err() {
            removed.left_active = true;
            continue;
        }
        match rustix::fs::unlinkat(&dir, name.as_str(), AtFlags::empty()) {
            Ok(()) => removed.sizes.push(size),
            Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(FtpError::io("remove an interrupted upload", e.into())),
        }
    }
    Ok(removed)
}

/// Drops the interrupted uploads of `path` (all without a path) and
/// releases their quota.
pub(super) async fn discard(
    li: &LoggedIn,
    store: &wharf_store::Store,
    path: Option<&str>,
) -> Result<FtpReply, FtpError> {
    let target = match path {
        Some(p) => Some(li.cwd.resolve(p, AboveRoot::Refuse)?),
        None => None,
    };
    let key = target.as_ref().map(|v| md5_hex(v.to_string().as_bytes()));
    let jail = li.jail.clone();
    let removed = blocking(move || remove(&jail, key.as_deref())).await?;
    let bytes: u64 = removed.sizes.iter().sum();
    if !removed.sizes.is_empty() {
        let count = removed.sizes.len() as u64;
        store.release(li.user.id, bytes, count).await?;
    }
    if let Some(v) = &target
        && removed.sizes.is_empty()
    {
        return Err(if removed.left_active {
            FtpError::refuse(
                ErrorCode::Busy,
                format!("the upload of {v} is under way in another session; stop it first"),
            )
        } else {
            FtpError::refuse(
                ErrorCode::NotFound,
                format!("there is no interrupted upload of {v}; `partials` lists them"),
            )
        });
    }
    Ok(FtpReply::Discarded {
        count: removed.sizes.len() as u64,
        bytes,
    })
}
