//! `put`: reserve quota, stream into a partial file while hashing, verify
//! the md5 trailer, make it durable, rename it into place, commit the quota.
//!
//! A partial upload lives in the home's internal directory, named after its
//! target size and path, and holds a reservation of the full size from the
//! moment it exists until it is published or swept. It survives disconnects
//! and restarts; a new `put` of the same path and size resumes it.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Instant;
use wharf_proto::ErrorCode;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use tokio::sync::mpsc;
use wharf_core::md5::Md5;
use wharf_core::size::MAX_SIZE;
use wharf_proto::Frame;
use wharf_proto::ftp::{FtpReply, FtpRequest};
use wharf_store::db::Direction;
use wharf_store::db::FileVersion;
use wharf_store::db::Need;
use wharf_store::db::TransferRecord;
use wharf_store::db::UploadCommit;
use wharf_store::home::INTERNAL_DIR;
use wharf_store::home::partial_name;

use super::FtpServer;
use super::commands::blocking;
use super::conn::{LoggedIn, Watch, Wire};
use crate::error::FtpError;
use crate::paths::{AboveRoot, Jail, VPath};
use wharf_core::transfer::{
    DEPTH, Direct, HASH_APART, WriteMode, hash_prefix, hex, md5_hex, write_and_hash,
};

/// A partial upload's file, reached only beneath the home (the home's
/// owner must not be able to redirect the server's writes with a link).
#[derive(Debug, Clone)]
pub(crate) struct Partial {
    jail: Jail,
    /// Relative to the home: `.wharf/partial/<size>-<key>.part`.
    rel: PathBuf,
}

impl Partial {
    fn new(jail: &Jail, size: u64, v: &VPath) -> Partial {
        let name = partial_name(size, &md5_hex(v.to_string().as_bytes()));
        Partial {
            jail: jail.clone(),
            rel: Path::new(INTERNAL_DIR).join("partial").join(name),
        }
    }

    /// A partial of its own for an upload of `v` that does not resume (a
    /// put sent at once): a name no other upload has.
    pub(super) fn unique(jail: &Jail, size: u64, v: &VPath) -> Partial {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let key = md5_hex(format!("{v}\0{}\0{nanos}\0{n}", std::process::id()).as_bytes());
        Partial {
            jail: jail.clone(),
            rel: Path::new(INTERNAL_DIR)
                .join("partial")
                .join(partial_name(size, &key)),
        }
    }

    /// The partial upload of `v` whose size is not known up front (standard
    /// FTP's `STOR`), named after the quota it holds, `held`.
    pub(super) fn streamed(jail: &Jail, held: u64, v: &VPath) -> Partial {
        Partial {
            jail: jail.clone(),
            rel: Path::new(INTERNAL_DIR)
                .join("partial")
                .join(partial_name(held, &streamed_key(v))),
        }
    }

    /// The streamed partial upload of `v` there is, and the quota it holds.
    pub(super) fn find_streamed(
        jail: &Jail,
        v: &VPath,
    ) -> Result<Option<(Partial, u64)>, FtpError> {
        let suffix = format!("-{}.part", streamed_key(v));
        let dir = match jail.open_beneath(
            &Path::new(INTERNAL_DIR).join("partial"),
            OFlags::RDONLY | OFlags::DIRECTORY,
            Mode::empty(),
            "the partial upload directory",
        ) {
            Ok(dir) => dir,
            Err(e) if e.is(ErrorCode::NotFound) => return Ok(None),
            Err(e) => return Err(e),
        };
        let entries = rustix::fs::Dir::read_from(&dir)
            .map_err(|e| FtpError::io("read the partial upload directory", e.into()))?;
        for entry in entries.flatten() {
            let Ok(name) = entry.file_name().to_str() else {
                continue;
            };
            if let (true, Some(held)) = (
                name.ends_with(&suffix),
                wharf_store::home::partial_target_size(name),
            ) {
                return Ok(Some((Partial::streamed(jail, held, v), held)));
            }
        }
        Ok(None)
    }

    /// The partial's metadata (its length: what it holds so far). A
    /// session still writing it (one whose client was just cut off, say)
    /// is waited for up to [`SETTLE_WAIT`], so that a client asking the
    /// size to resume from (SIZE, then REST + STOR) is told what the
    /// partial holds once that session is done, not a length it is still
    /// growing past.
    pub(super) fn metadata(&self, v: &VPath) -> Result<std::fs::Metadata, FtpError> {
        let what = format!("partial upload of {v}");
        let fd = self
            .jail
            .open_beneath(&self.rel, OFlags::RDONLY, Mode::empty(), &what)?;
        let file = File::from(fd);
        let began = std::time::Instant::now();
        while matches!(
            file.try_lock_shared(),
            Err(std::fs::TryLockError::WouldBlock)
        ) && began.elapsed() < SETTLE_WAIT
        {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        file.metadata().map_err(|e| FtpError::io(what, e))
    }

    /// Renames a streamed partial after the quota it now holds.
    pub(super) fn hold(&mut self, held: u64, v: &VPath) -> Result<(), FtpError> {
        let next = Partial::streamed(&self.jail, held, v);
        let (dir, from) = self.dir()?;
        let to = next.rel.file_name().unwrap_or_default();
        rustix::fs::renameat(&dir, from, &dir, to)
            .map_err(|e| FtpError::io(format!("partial upload of {v}"), e.into()))?;
        *self = next;
        Ok(())
    }

    /// Opens an existing partial upload and locks it; `None` if there is none.
    pub(super) fn open(&self, v: &VPath) -> Result<Option<File>, FtpError> {
        let what = format!("partial upload of {v}");
        match self
            .jail
            .open_beneath(&self.rel, OFlags::RDWR, Mode::empty(), &what)
        {
            Ok(fd) => lock(File::from(fd), v).map(Some),
            Err(e) if e.is(ErrorCode::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates the partial upload (and its directory), locked; `None` if
    /// another session created it first.
    pub(super) fn create(&self, v: &VPath) -> Result<Option<File>, FtpError> {
        // The partial upload directory is there but for a home's first
        // upload: made only when the create says it is missing.
        match self.create_in(v) {
            Err(e) if e.is(ErrorCode::NotFound) => {
                self.make_dir()?;
                self.create_in(v)
            }
            created => created,
        }
    }

    /// Makes the partial upload directory (and the servers' own above it).
    fn make_dir(&self) -> Result<(), FtpError> {
        let mut dir = PathBuf::from(".");
        for name in [INTERNAL_DIR, "partial"] {
            let parent = self.jail.open_beneath(
                &dir,
                OFlags::RDONLY | OFlags::DIRECTORY,
                Mode::empty(),
                "the partial upload directory",
            )?;
            match rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(0o700)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => {
                    return Err(FtpError::io(
                        "create the partial upload directory",
                        e.into(),
                    ));
                }
            }
            dir.push(name);
        }
        Ok(())
    }

    /// Creates the partial, in its directory.
    fn create_in(&self, v: &VPath) -> Result<Option<File>, FtpError> {
        let what = format!("create partial upload of {v}");
        match self.jail.open_beneath(
            &self.rel,
            OFlags::RDWR | OFlags::CREATE | OFlags::EXCL,
            Mode::from_raw_mode(0o600),
            &what,
        ) {
            Ok(fd) => {
                // The partial stays in the servers' own directory until it
                // is published, already the user's.
                self.jail
                    .adopt(&fd)
                    .map_err(|e| FtpError::io(format!("give {v} to its owner"), e))?;
                super::partials::record_target(&fd, &v.to_string());
                lock(File::from(fd), v).map(Some)
            }
            // Another session created it between our look and now.
            Err(e) if e.is(ErrorCode::AlreadyExists) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The directory holding the partial, and its name there.
    fn dir(&self) -> Result<(OwnedFd, &std::ffi::OsStr), FtpError> {
        let (Some(dir), Some(name)) = (self.rel.parent(), self.rel.file_name()) else {
            return Err(FtpError::closing(
                ErrorCode::BadRequest,
                "malformed partial upload path",
            ));
        };
        let fd = self.jail.open_beneath(
            dir,
            OFlags::RDONLY | OFlags::DIRECTORY,
            Mode::empty(),
            "the partial upload directory",
        )?;
        Ok((fd, name))
    }

    pub(super) fn remove(&self) -> Result<(), FtpError> {
        let (dir, name) = self.dir()?;
        rustix::fs::unlinkat(&dir, name, AtFlags::empty())
            .map_err(|e| FtpError::io("remove a partial upload", e.into()))
    }

    /// Renames the (synced) partial into place as `v` and makes the rename
    /// durable; returns the file it replaced, if any.
    fn publish(&self, v: &VPath) -> Result<Option<Replaced>, FtpError> {
        let (target_dir, old) = self.rename_into_place(v)?;
        rustix::fs::fsync(&target_dir)
            .map_err(|e| FtpError::io(format!("sync the directory of {v}"), e.into()))?;
        Ok(old)
    }

    /// Renames the (synced) partial into place as `v`; returns the
    /// directory it is now in, for the caller to sync, and the file it
    /// replaced, if any.
    pub(super) fn rename_into_place(
        &self,
        v: &VPath,
    ) -> Result<(OwnedFd, Option<Replaced>), FtpError> {
        let (target_dir, target) = self.jail.parent_of(v)?;
        let old = match rustix::fs::statat(&target_dir, target.as_str(), AtFlags::SYMLINK_NOFOLLOW)
        {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                return Err(FtpError::refuse(
                    ErrorCode::BadRequest,
                    format!("{v} is a directory"),
                ));
            }
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile => {
                Some(Replaced {
                    size: u64::try_from(st.st_size).unwrap_or(0),
                    gone: (st.st_nlink == 1).then_some((st.st_dev, st.st_ino)),
                })
            }
            _ => None,
        };
        let (dir, name) = self.dir()?;
        rustix::fs::renameat(&dir, name, &target_dir, target.as_str())
            .map_err(|e| FtpError::io(format!("store {v}"), e.into()))?;
        Ok((target_dir, old))
    }
}

/// The key of a streamed partial's name: not a native one's (those are
/// found by target size and path), so neither resumes the other.
fn streamed_key(v: &VPath) -> String {
    md5_hex(format!("ftp\0{v}").as_bytes())
}

/// The file an upload replaced.
pub(crate) struct Replaced {
    pub size: u64,
    /// Its device and inode, when the replacement was its last name.
    pub gone: Option<(u64, u64)>,
}

/// Locks a partial upload for this session. A `partials` listing holds
/// the lock for a moment, so a busy lock is tried a few times; a partial
/// discarded between its opening and its locking is refused.
/// How long a look at a partial's size waits for a session still writing
/// it.
const SETTLE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

fn lock(file: File, v: &VPath) -> Result<File, FtpError> {
    let mut tries = 0;
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(std::fs::TryLockError::WouldBlock) if tries < 5 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(FtpError::refuse(
                    ErrorCode::Busy,
                    format!("another upload of {v} is in progress; wait for it to finish"),
                ));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(FtpError::io(format!("lock partial upload of {v}"), e));
            }
        }
    }
    use std::os::unix::fs::MetadataExt;
    let links = file
        .metadata()
        .map_err(|e| FtpError::io(format!("partial upload of {v}"), e))?
        .nlink();
    if links == 0 {
        return Err(FtpError::refuse(
            ErrorCode::Busy,
            format!("the interrupted upload of {v} was discarded just now; run the put again"),
        ));
    }
    Ok(file)
}

/// Bodies up to this size are gathered in memory and written in the same
/// blocking call that syncs and publishes them: a small file costs one
/// hand-off to the blocking pool instead of a writer thread and three calls.
const SMALL_BODY: u64 = wharf_core::transfer::CHUNK as u64;

/// A partial upload, found or created, locked, with what it holds.
struct Prepared {
    file: File,
    created: bool,
    held: u64,
    prefix: Md5,
    /// The size of the regular file the upload would replace, if any.
    replacing: Option<u64>,
}

/// Checks the target and finds (or creates) its partial upload, in one
/// blocking call.
fn prepare(jail: &Jail, v: &VPath, partial: &Partial, size: u64) -> Result<Prepared, FtpError> {
    let target = jail.creatable(v)?;
    if target.is_dir() {
        return Err(FtpError::refuse(
            ErrorCode::BadRequest,
            format!("{v} is a directory"),
        ));
    }
    // A file this upload replaces: only the growth needs to be free.
    let replacing = std::fs::symlink_metadata(&target)
        .ok()
        .filter(|m| m.is_file())
        .map(|m| m.len());
    let (mut file, created) = match partial.open(v)? {
        Some(f) => (f, false),
        None => match partial.create(v)? {
            Some(f) => (f, true),
            // Another session created it between our look and now.
            None => (
                partial.open(v)?.ok_or_else(|| {
                    FtpError::refuse(
                        ErrorCode::Busy,
                        format!("another upload of {v} is starting; retry"),
                    )
                })?,
                false,
            ),
        },
    };
    let held = file
        .metadata()
        .map_err(|e| FtpError::io("partial upload", e))?
        .len();
    if held > size {
        file.set_len(0)
            .map_err(|e| FtpError::io("partial upload", e))?;
        return Ok(Prepared {
            file,
            created,
            held: 0,
            prefix: Md5::new(),
            replacing,
        });
    }
    let prefix = hash_prefix(&mut file, held).map_err(|e| FtpError::io("partial upload", e))?;
    Ok(Prepared {
        file,
        created,
        held,
        prefix,
        replacing,
    })
}

/// The body as received: in memory (small) or already written by the writer
/// thread (large).
enum Received {
    Small(File, Md5, Vec<u8>),
    Written(File, Md5),
}

/// What finishing an upload came to.
enum Finished {
    /// Published; the file it replaced, if any, and the version of the
    /// file now in place (what its md5 is recorded for).
    Stored {
        md5: String,
        replaced: Option<Replaced>,
        version: Option<FileVersion>,
    },
    /// The md5 did not match; the partial is gone.
    Mismatch { md5: String },
}

/// Writes a small body, syncs, checks the md5 and publishes or discards, in
/// one blocking call.
fn finish(
    received: Received,
    claimed: &str,
    partial: &Partial,
    v: &VPath,
) -> Result<Finished, FtpError> {
    let (file, hasher) = match received {
        Received::Small(mut file, mut hasher, body) => {
            use std::io::Write;
            hasher.update(&body);
            file.write_all(&body)
                .map_err(|e| FtpError::io(format!("write {v}"), e))?;
            (file, hasher)
        }
        Received::Written(file, hasher) => (file, hasher),
    };
    let md5 = hex(hasher);
    if md5 != claimed {
        drop(file);
        let _ = partial.remove();
        return Ok(Finished::Mismatch { md5 });
    }
    file.sync_all()
        .map_err(|e| FtpError::io("sync upload", e))?;
    let replaced = partial.publish(v)?;
    // Read after the rename, which moves the ctime.
    let version = file.metadata().ok().map(|m| FileVersion::of(&m));
    Ok(Finished::Stored {
        md5,
        replaced,
        version,
    })
}

pub(super) async fn receive_small(wire: &mut Wire, body_len: u64) -> Result<Vec<u8>, FtpError> {
    let mut body = Vec::with_capacity(body_len as usize);
    while (body.len() as u64) < body_len {
        match wire.next_frame_idle().await? {
            Frame::Body { chunk, .. } => body.extend_from_slice(&chunk),
            _ => {
                return Err(FtpError::closing(
                    ErrorCode::BadRequest,
                    "expected upload data",
                ));
            }
        }
    }
    Ok(body)
}

pub(super) async fn put(
    server: &FtpServer,
    wire: &mut Wire,
    ends: &mut Watch,
    li: &LoggedIn,
    path: &str,
    size: u64,
) -> Result<FtpReply, FtpError> {
    if size > MAX_SIZE {
        return Err(FtpError::refuse(
            ErrorCode::BadRequest,
            format!("size {size} is over the {MAX_SIZE}-byte limit"),
        ));
    }
    let v = li.cwd.resolve(path, AboveRoot::Refuse)?;
    let partial = Partial::new(&li.jail, size, &v);
    let store = server.store().clone();
    let user_id = li.user.id;
    // The quota before anything is reserved: one an administrator lowers
    // from here on, even before the bytes start to flow, ends the upload.
    let quota_from = wharf_store::standing::quota_now(&ends.standing, li.user.quota_bytes);

    // A partial exists if and only if its reservation is held: a new one
    // reserves its full size, or goes away again.
    let prepared = {
        let (jail, vv, p) = (li.jail.clone(), v.clone(), partial.clone());
        blocking(move || prepare(&jail, &vv, &p, size)).await?
    };
    let Prepared {
        file,
        created,
        held,
        prefix,
        replacing,
    } = prepared;
    if created
        && let Err(e) = store
            .reserve(
                user_id,
                Need::replacing(size, li.jail.replace_credit(replacing)),
            )
            .await
    {
        drop(file);
        let p = partial.clone();
        let _ = blocking(move || p.remove()).await;
        return Err(e.into());
    }
    // A resume holds the reservation made when the upload began; if an
    // administrator lowered the quota since and it no longer fits, it ends
    // as a live upload would: refused, and its partial dropped.
    let replacing = li.jail.replace_credit(replacing).unwrap_or(0);
    if !created && let Err(e) = store.still_fits(user_id, replacing).await {
        drop(file);
        let p = partial.clone();
        blocking(move || p.remove()).await?;
        store.release(user_id, size, 1).await?;
        return Err(e.into());
    }
    wire.send(FtpReply::PutReady {
        offset: held,
        prefix_md5: (held > 0).then(|| hex(prefix.clone())),
    })
    .await?;
    wire.upload_began = true;

    let (offset, body_len) = match wire.next_frame_idle().await {
        Ok(Frame::Header {
            msg: FtpRequest::PutData { offset },
            body_len,
        }) => (offset, body_len),
        other => {
            drop(file);
            abandon_if_empty(&store, user_id, size, &partial, held).await;
            return Err(match other {
                Err(e) => e,
                Ok(_) => FtpError::closing(
                    ErrorCode::BadRequest,
                    "put_ready must be followed by put_data",
                ),
            });
        }
    };
    if (offset != held && offset != 0) || body_len != size - offset {
        return Err(FtpError::closing(
            ErrorCode::BadRequest,
            format!("put_data must start at 0 or {held} and carry the rest of the {size} bytes"),
        ));
    }
    let (file, hasher) = if offset == 0 && held > 0 {
        let file = blocking(move || {
            file.set_len(0)
                .map_err(|e| FtpError::io("partial upload", e))?;
            let mut file = file;
            file.seek(SeekFrom::Start(0))
                .map_err(|e| FtpError::io("partial upload", e))?;
            Ok(file)
        })
        .await?;
        (file, Md5::new())
    } else {
        (file, prefix)
    };

    let started = Instant::now();
    let record = |ok: bool, bytes: u64, md5: Option<String>| TransferRecord {
        user_id,
        direction: Direction::Up,
        path: v.to_string(),
        bytes,
        md5,
        ok,
        duration: started.elapsed(),
    };
    let (received, written) = if body_len <= SMALL_BODY {
        match receive_small(wire, body_len).await {
            Ok(body) => (Received::Small(file, hasher, body), body_len),
            Err(e) => {
                // Nothing reached the disk: a fresh partial goes, as if never begun.
                drop(file);
                abandon_if_empty(&store, user_id, size, &partial, held).await;
                return Err(e);
            }
        }
    } else {
        let (tx, rx) = mpsc::channel(DEPTH);
        let writer = tokio::task::spawn_blocking(move || {
            let mode = WriteMode {
                durable: true,
                hash_apart: body_len >= HASH_APART,
                direct: Direct::Always,
            };
            write_and_hash(file, hasher, mode, rx)
        });
        let mut broken = None;
        let mut received = 0u64;
        let stop_now = server.stop_now.clone();
        let mut watch = ends.standing.take();
        // A second view of the standing, for a quota lowered meanwhile.
        let mut quota_watch = watch.clone();
        let home = ends.home.clone();
        // The user's upload rate: what the last chunk owes is waited off
        // before the next is read (so TCP slows the client down).
        let pace = li.lease.rates().up.clone();
        let mut owed = 0;
        while received < body_len {
            let frame = tokio::select! {
                biased;
                _ = stop_now.cancelled() => Err(FtpError::closing(ErrorCode::ShuttingDown,
                    "the server is shutting down; run the same put again later to resume",
                )),
                why = wharf_store::standing::ended(&mut watch, wharf_core::Service::Ftp, home.as_deref()) => Err(FtpError::Ended(why)),
                quota = wharf_store::standing::quota_lowered(&mut quota_watch, quota_from, replacing) => {
                    Err(FtpError::Core(wharf_store::Error::QuotaLowered { quota }))
                }
                frame = async {
                    pace.take(owed).await;
                    wire.next_frame_idle().await
                } => frame,
            };
            match frame {
                Ok(Frame::Body { chunk, .. }) => {
                    received += chunk.len() as u64;
                    owed = chunk.len();
                    if tx.send(chunk).await.is_err() {
                        break;
                    }
                }
                Ok(_) => {
                    broken = Some(FtpError::closing(
                        ErrorCode::BadRequest,
                        "expected upload data",
                    ));
                    break;
                }
                Err(e) => {
                    broken = Some(e);
                    break;
                }
            }
        }
        ends.standing = watch;
        drop(tx);
        let written = writer.await.map_err(|e| {
            FtpError::closing(ErrorCode::BadRequest, format!("internal error: {e}"))
        })?;
        let (file, hasher, written) = match written {
            Ok(w) => w,
            Err(e) => {
                // The disk refused (full, read-only): the upload cannot go
                // on. Its partial and reservation go, and the connection
                // closes after the error (the rest of the data is not read).
                drop_partial(&store, user_id, size, &partial).await?;
                store
                    .record_transfer(&record(false, received, None))
                    .await?;
                return Err(FtpError::Stopped(Box::new(FtpError::io(
                    format!("write {v}"),
                    e,
                ))));
            }
        };
        match broken {
            // It no longer fits: nothing of it is kept.
            Some(e @ FtpError::Core(wharf_store::Error::QuotaLowered { .. })) => {
                drop(file);
                drop_partial(&store, user_id, size, &partial).await?;
                store.record_transfer(&record(false, written, None)).await?;
                return Err(FtpError::Stopped(Box::new(e)));
            }
            Some(e) => {
                // The partial stays, with its reservation, for a resume.
                store.record_transfer(&record(false, written, None)).await?;
                return Err(e);
            }
            None => {}
        }
        (Received::Written(file, hasher), written)
    };

    let claimed = wire.put_end().await?;
    let finished = {
        let (p, vv, c) = (partial.clone(), v.clone(), claimed.clone());
        match blocking(move || finish(received, &c, &p, &vv)).await {
            Ok(f) => f,
            Err(e)
                if e.is(ErrorCode::NoSpace)
                    || matches!(e, FtpError::Core(wharf_store::Error::DiskQuota)) =>
            {
                drop_partial(&store, user_id, size, &partial).await?;
                store.record_transfer(&record(false, 0, None)).await?;
                return Err(e);
            }
            Err(e) => return Err(e),
        }
    };
    match finished {
        Finished::Mismatch { md5 } => {
            store.release(user_id, size, 1).await?;
            store
                .record_transfer(&record(false, written, Some(md5.clone())))
                .await?;
            Err(FtpError::refuse(
                ErrorCode::ChecksumMismatch,
                format!(
                    "{v} arrived with md5 {md5}, but the sender's file has md5 {claimed}; nothing was stored, send it again"
                ),
            ))
        }
        Finished::Stored {
            md5,
            replaced,
            version,
        } => {
            let record = record(true, written, Some(md5.clone()));
            store
                .commit_uploads(&[commit_of(size, replaced.as_ref(), record, version)])
                .await?;
            Ok(FtpReply::PutOk {
                path: v.to_string(),
                size,
                md5,
            })
        }
    }
}

/// What the database records of an upload of `size` bytes now in place:
/// its reservation becomes use (less what the file it replaced held), its
/// md5 is remembered for `version`, the replaced file's md5 forgotten.
pub(crate) fn commit_of(
    size: u64,
    replaced: Option<&Replaced>,
    record: TransferRecord,
    version: Option<FileVersion>,
) -> UploadCommit {
    // A file replaced under its last name is gone, and its bytes and entry
    // with it; one with other names stays on the books under them.
    let gone = replaced.filter(|r| r.gone.is_some());
    let old = gone.map_or(0, |r| i64::try_from(r.size).unwrap_or(i64::MAX));
    UploadCommit {
        reserved: size,
        reserved_files: 1,
        added_bytes: i64::try_from(size).unwrap_or(i64::MAX) - old,
        added_files: if gone.is_some() { 0 } else { 1 },
        record,
        version,
        replaced: replaced.and_then(|r| r.gone),
    }
}

/// Removes a partial upload that cannot go on and releases its reservation.
async fn drop_partial(
    store: &wharf_store::Store,
    user_id: i64,
    size: u64,
    partial: &Partial,
) -> Result<(), FtpError> {
    let p = partial.clone();
    let _ = blocking(move || p.remove()).await;
    store.release(user_id, size, 1).await?;
    Ok(())
}

/// A put that never sent data leaves no empty partial holding quota.
async fn abandon_if_empty(
    store: &wharf_store::Store,
    user_id: i64,
    size: u64,
    partial: &Partial,
    held: u64,
) {
    if held > 0 {
        return; // real data: keep it, and its reservation, for a resume
    }
    let p = partial.clone();
    let removed = blocking(move || p.remove()).await;
    if removed.is_ok() {
        let _ = store.release(user_id, size, 1).await;
    }
}
