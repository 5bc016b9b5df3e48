//! `cd`, `ls`, `mkdir`, `rm`, `rmdir`, `mv`: one function each, returning the
//! reply. File-system work runs on the blocking pool.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::SystemTime;
use wharf_proto::ErrorCode;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags};

use wharf_proto::ftp::{Entry, EntryKind, FtpReply};
use wharf_store::Store;
use wharf_store::home::ENTRY_COST;
use wharf_store::home::INTERNAL_DIR;
use wharf_store::home::charge;

use super::conn::LoggedIn;
use crate::error::FtpError;
use crate::paths::{AboveRoot, Jail, VPath};

/// Runs blocking file-system work off the async runtime.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, FtpError> + Send + 'static,
) -> Result<T, FtpError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| FtpError::closing(ErrorCode::BadRequest, format!("internal error: {e}")))?
}

pub(super) async fn cd(li: &mut LoggedIn, path: &str) -> Result<FtpReply, FtpError> {
    let v = li.cwd.resolve(path, AboveRoot::Clamp)?;
    let jail = li.jail.clone();
    let target = v.clone();
    blocking(move || {
        let (_, canonical) = jail.existing(&target)?;
        if !canonical.is_dir() {
            return Err(FtpError::refuse(
                ErrorCode::BadRequest,
                format!("{target} is not a directory"),
            ));
        }
        Ok(())
    })
    .await?;
    li.cwd = v;
    Ok(FtpReply::Cwd {
        path: li.cwd.to_string(),
    })
}

pub(super) fn rfc3339(t: std::io::Result<SystemTime>) -> String {
    let t = t.unwrap_or(SystemTime::UNIX_EPOCH);
    humantime::format_rfc3339_seconds(t).to_string()
}

fn entry(name: String, meta: &std::fs::Metadata) -> Option<Entry> {
    let kind = if meta.is_dir() {
        EntryKind::Dir
    } else if meta.is_file() {
        EntryKind::File
    } else {
        return None; // sockets, fifos, devices: not for transfer
    };
    Some(Entry {
        name,
        kind,
        size: if meta.is_file() { meta.len() } else { 0 },
        mtime: rfc3339(meta.modified()),
    })
}

pub(crate) fn list(jail: &Jail, v: &VPath, max: usize) -> Result<Vec<Entry>, FtpError> {
    Ok(list_with_modes(jail, v, max)?
        .into_iter()
        .map(|(e, _)| e)
        .collect())
}

/// [`list`], each entry with its permission bits (of what a link leads to).
pub(crate) fn list_with_modes(
    jail: &Jail,
    v: &VPath,
    max: usize,
) -> Result<Vec<(Entry, u32)>, FtpError> {
    use std::os::unix::fs::PermissionsExt;
    let (_, canonical) = jail.existing(v)?;
    // What is listed is what was opened beneath the home, whatever changed
    // since the check: read through the open descriptor.
    let opened = File::from(jail.open_beneath(
        &v.relative(),
        OFlags::PATH,
        Mode::empty(),
        &v.to_string(),
    )?);
    let meta = opened
        .metadata()
        .map_err(|e| FtpError::io(v.to_string(), e))?;
    if !meta.is_dir() {
        let name = v.file_name().unwrap_or("/").to_owned();
        let mode = meta.permissions().mode();
        return Ok(entry(name, &meta).map(|e| (e, mode)).into_iter().collect());
    }
    let through_fd = PathBuf::from(format!("/proc/self/fd/{}", opened.as_raw_fd()));
    let dir = if through_fd.exists() {
        through_fd
    } else {
        canonical // no /proc: the checked path, as before
    };
    let internal = jail.home().join(INTERNAL_DIR);
    let mut entries = Vec::new();
    let read = std::fs::read_dir(&dir).map_err(|e| FtpError::io(v.to_string(), e))?;
    for item in read {
        let item = item.map_err(|e| FtpError::io(v.to_string(), e))?;
        let path = item.path();
        if v.is_root() && item.file_name() == INTERNAL_DIR {
            continue;
        }
        let Ok(name) = item.file_name().into_string() else {
            continue; // not UTF-8: cannot be named in the protocol
        };
        let Ok(link_meta) = item.metadata() else {
            continue;
        };
        let meta = if link_meta.file_type().is_symlink() {
            // Show a link as what it points to, only if that is inside the home.
            match std::fs::canonicalize(&path) {
                Ok(target) if target.starts_with(jail.home()) && !target.starts_with(&internal) => {
                    match std::fs::metadata(&target) {
                        Ok(m) => m,
                        Err(_) => continue,
                    }
                }
                _ => continue,
            }
        } else {
            link_meta
        };
        if let Some(e) = entry(name, &meta) {
            entries.push((e, meta.permissions().mode()));
            if entries.len() > max {
                return Err(FtpError::refuse(
                    ErrorCode::BadRequest,
                    format!("{v} has more than {max} entries; list a subdirectory instead"),
                ));
            }
        }
    }
    entries.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    Ok(entries)
}

/// A listing reply and its JSON body.
pub(super) async fn ls(
    li: &LoggedIn,
    path: Option<&str>,
    max: usize,
) -> Result<(FtpReply, Vec<u8>), FtpError> {
    let v = li.cwd.resolve(path.unwrap_or("."), AboveRoot::Refuse)?;
    let jail = li.jail.clone();
    let shown = v.to_string();
    let entries = blocking(move || list(&jail, &v, max)).await?;
    let body = serde_json::to_vec(&entries)
        .map_err(|e| FtpError::closing(ErrorCode::BadRequest, format!("internal error: {e}")))?;
    Ok((
        FtpReply::Listing {
            path: shown,
            count: entries.len() as u64,
        },
        body,
    ))
}

pub(super) async fn mkdir(li: &LoggedIn, store: &Store, path: &str) -> Result<FtpReply, FtpError> {
    let v = li.cwd.resolve(path, AboveRoot::Refuse)?;
    mkdir_at(&li.jail, store, li.user.id, v).await?;
    Ok(FtpReply::Done)
}

/// Makes the directory `v`, the user's: an entry of the home, charged
/// (bytes and file quota) before it is made.
pub(crate) async fn mkdir_at(
    jail: &Jail,
    store: &Store,
    user_id: i64,
    v: VPath,
) -> Result<(), FtpError> {
    store.add_entry(user_id, ENTRY_COST).await?;
    let jail = jail.clone();
    let made = blocking(move || {
        jail.creatable(&v)?;
        let (dir, name) = jail.parent_of(&v)?;
        rustix::fs::mkdirat(&dir, name.as_str(), Mode::from_raw_mode(0o700))
            .map_err(|e| FtpError::io(v.to_string(), e.into()))?;
        jail.adopt_at(&dir, name.as_str())
            .map_err(|e| FtpError::io(format!("give {v} to its owner"), e))
    })
    .await;
    if made.is_err() {
        store.free(user_id, ENTRY_COST, 1).await?;
    }
    made
}

pub(super) async fn rm(li: &LoggedIn, store: &Store, path: &str) -> Result<FtpReply, FtpError> {
    let v = li.cwd.resolve(path, AboveRoot::Refuse)?;
    rm_at(&li.jail, store, li.user.id, v).await?;
    Ok(FtpReply::Done)
}

/// Removes the file `v` of the user `user_id`, freeing its quota.
pub(crate) async fn rm_at(
    jail: &Jail,
    store: &Store,
    user_id: i64,
    v: VPath,
) -> Result<(), FtpError> {
    let jail = jail.clone();
    let freed = blocking(move || {
        jail.creatable(&v)?;
        let (dir, name) = jail.parent_of(&v)?;
        let kind = kind_of(&dir, &name, &v)?;
        if kind == FileType::Directory {
            return Err(FtpError::refuse(
                ErrorCode::BadRequest,
                format!("{v} is a directory; use rmdir"),
            ));
        }
        let st = rustix::fs::statat(&dir, name.as_str(), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| FtpError::io(v.to_string(), e.into()))?;
        // A file with other names stays (and stays on the books); the last
        // name takes the entry, what it was charged, and its md5 with it.
        let last = kind != FileType::RegularFile || st.st_nlink == 1;
        let freed = last.then(|| charge(&st));
        let gone = (kind == FileType::RegularFile && last).then_some((st.st_dev, st.st_ino));
        rustix::fs::unlinkat(&dir, name.as_str(), AtFlags::empty())
            .map_err(|e| FtpError::io(v.to_string(), e.into()))?;
        Ok((freed, gone))
    })
    .await?;
    if let (Some(bytes), gone) = freed {
        store.free(user_id, bytes, 1).await?;
        if let Some((dev, ino)) = gone {
            store.forget_md5(user_id, dev, ino).await?;
        }
    }
    Ok(())
}

pub(super) async fn rmdir(li: &LoggedIn, store: &Store, path: &str) -> Result<FtpReply, FtpError> {
    let v = li.cwd.resolve(path, AboveRoot::Refuse)?;
    rmdir_at(&li.jail, store, li.user.id, v).await?;
    Ok(FtpReply::Done)
}

/// Removes the empty directory `v`, freeing what it was charged.
pub(crate) async fn rmdir_at(
    jail: &Jail,
    store: &Store,
    user_id: i64,
    v: VPath,
) -> Result<(), FtpError> {
    if v.is_root() {
        return Err(FtpError::refuse(
            ErrorCode::BadRequest,
            "cannot remove your home directory",
        ));
    }
    let jail = jail.clone();
    let freed = blocking(move || {
        jail.creatable(&v)?;
        let (dir, name) = jail.parent_of(&v)?;
        let st = rustix::fs::statat(&dir, name.as_str(), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| FtpError::io(v.to_string(), e.into()))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
            return Err(FtpError::refuse(
                ErrorCode::BadRequest,
                format!("{v} is not a directory; use rm"),
            ));
        }
        rustix::fs::unlinkat(&dir, name.as_str(), AtFlags::REMOVEDIR)
            .map_err(|e| FtpError::io(v.to_string(), e.into()))?;
        Ok(charge(&st))
    })
    .await?;
    store.free(user_id, freed, 1).await?;
    Ok(())
}

pub(super) async fn mv(li: &LoggedIn, from: &str, to: &str) -> Result<FtpReply, FtpError> {
    let src = li.cwd.resolve(from, AboveRoot::Refuse)?;
    let dst = li.cwd.resolve(to, AboveRoot::Refuse)?;
    mv_at(&li.jail, src, dst).await?;
    Ok(FtpReply::Done)
}

/// Renames `src` to `dst`, never over an existing name.
pub(crate) async fn mv_at(jail: &Jail, src: VPath, dst: VPath) -> Result<(), FtpError> {
    if src.is_root() || dst.is_root() {
        return Err(FtpError::refuse(
            ErrorCode::BadRequest,
            "cannot move your home directory",
        ));
    }
    let jail = jail.clone();
    blocking(move || {
        jail.creatable(&src)?;
        let (from_dir, from) = jail.parent_of(&src)?;
        kind_of(&from_dir, &from, &src)?;
        jail.creatable(&dst)?;
        let (to_dir, to) = jail.parent_of(&dst)?;
        let exists = || {
            FtpError::refuse(
                ErrorCode::AlreadyExists,
                format!("{dst} exists already; remove it first"),
            )
        };
        rustix::fs::renameat_with(
            &from_dir,
            from.as_str(),
            &to_dir,
            to.as_str(),
            RenameFlags::NOREPLACE,
        )
        .map_err(|e| match e {
            rustix::io::Errno::EXIST => exists(),
            e => FtpError::io(format!("{src} -> {dst}"), e.into()),
        })
    })
    .await
}

/// What `name` in `dir` is, without following a link.
fn kind_of(dir: &OwnedFd, name: &str, v: &VPath) -> Result<FileType, FtpError> {
    rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
        .map(|st| FileType::from_raw_mode(st.st_mode))
        .map_err(|e| FtpError::io(v.to_string(), e.into()))
}
