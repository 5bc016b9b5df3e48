//! STOR and APPE: an upload streamed to a partial, its quota reserved
//! ahead as it grows, made visible whole with its md5.

use wharf_core::md5::Md5;
use wharf_proto::ErrorCode;
use wharf_store::Store;
use wharf_store::db::Direction;
use wharf_store::db::FileVersion;
use wharf_store::db::Need;
use wharf_store::db::TransferRecord;

use super::auth::FtpUser;
use crate::error::FtpError;
use crate::paths::{Jail, VPath};
use crate::server::commands::blocking;
use crate::server::upload::{Partial, commit_of};

/// Quota an upload of unknown size holds ahead of the bytes it wrote.
const HOLD_AHEAD: u64 = 4 << 20;

/// Bytes read from the data connection at a time.
const STOR_CHUNK: usize = 256 << 10;

/// When an upload is synced to disk before it is answered.
#[derive(Debug, Clone)]
pub enum Durable {
    /// Always: standard FTP has no way to ask, so every upload is synced
    /// (as native uploads are).
    Always,
    /// When the client asked by the time the upload ends (SFTP's
    /// `fsync@openssh.com`, `sftp put -f`): SFTP's own contract, OpenSSH's.
    /// Either way the file takes its name whole, by a rename.
    OnRequest(std::sync::Arc<std::sync::atomic::AtomicBool>),
}

impl Durable {
    fn wanted(&self) -> bool {
        match self {
            Durable::Always => true,
            Durable::OnRequest(asked) => asked.load(std::sync::atomic::Ordering::Acquire),
        }
    }
}

/// A chunk of an upload being written and hashed: gives back the file, the
/// md5 state and the buffer.
type WriteJob = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = Result<(Option<std::fs::File>, Option<Md5>, Vec<u8>), FtpError>,
            > + Send,
    >,
>;

/// Reads from `input` until `buf` is full or the input ends: how much was
/// read, and the error that ended it early, if one did.
async fn fill<R: tokio::io::AsyncRead + Unpin>(
    input: &mut R,
    buf: &mut [u8],
) -> (usize, Option<std::io::Error>) {
    use tokio::io::AsyncReadExt;
    let mut n = 0;
    while n < buf.len() {
        match input.read(&mut buf[n..]).await {
            Ok(0) => break,
            Ok(got) => n += got,
            Err(e) => return (n, Some(e)),
        }
    }
    (n, None)
}

/// An upload in progress: its partial (named after the quota it holds),
/// its file, what it wrote and its md5 so far.
struct Stream {
    partial: Partial,
    file: Option<std::fs::File>,
    held: u64,
    written: u64,
    md5: Option<Md5>,
    /// The size of the file it will replace, if there is one.
    replacing: Option<u64>,
}

/// `STOR` (and `REST n` + `STOR`): into a hidden partial of the home, the
/// quota held as it grows (so an upload of unknown size stops the moment it
/// would pass the quota), synced and renamed into place only at a clean
/// end. Cut short, the partial stays, holding what it wrote, for a `REST`.
pub(super) async fn stor<R: tokio::io::AsyncRead + Unpin>(
    store: &Store,
    user: &FtpUser,
    v: VPath,
    input: R,
    start_pos: u64,
    durable: Durable,
) -> Result<u64, FtpError> {
    use tokio::io::AsyncReadExt;
    let started = std::time::Instant::now();
    if start_pos > 0 {
        return stor_stream(store, user, v, input, start_pos, started, durable).await;
    }
    // The first chunk is read before anything is set up: an upload that
    // ends within it (most files) is stored in one go, its exact size
    // reserved once.
    let mut input = input;
    let mut first = vec![0u8; STOR_CHUNK];
    let (n, broke) = fill(&mut input, &mut first).await;
    first.truncate(n);
    match broke {
        None if n < STOR_CHUNK => stor_whole(store, user, v, first, started, durable).await,
        error => {
            let rest = AfterFirst { error, input };
            let input = std::io::Cursor::new(first).chain(rest);
            stor_stream(store, user, v, input, 0, started, durable).await
        }
    }
}

/// The input after its first chunk: the error that ended it, if one did,
/// else the rest.
struct AfterFirst<R> {
    error: Option<std::io::Error>,
    input: R,
}

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for AfterFirst<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if let Some(e) = self.error.take() {
            return std::task::Poll::Ready(Err(e));
        }
        std::pin::Pin::new(&mut self.input).poll_read(cx, buf)
    }
}

/// A new STOR of a path whose upload was interrupted: that partial goes,
/// and the quota it held with it.
async fn drop_interrupted(
    store: &Store,
    uid: i64,
    found: Option<(Partial, u64)>,
) -> Result<(), FtpError> {
    if let Some((partial, held)) = found {
        blocking(move || partial.remove()).await?;
        store.release(uid, held, 1).await?;
    }
    Ok(())
}

/// An upload whole in hand (`data`): its exact size reserved, then looked
/// at, written, hashed, (synced) and put in place in one step, and
/// committed: two trips to the database and one to the blocking pool,
/// where a streamed upload takes several of each.
///
/// Most such uploads are new files that fit, so the reservation is tried
/// first as for a new file. One that does not fit that way may still fit
/// by replacing a file (whose bytes it may count on) or once an
/// interrupted upload of the same name is dropped: then those are looked
/// at first and the reservation made with their credit, as a streamed
/// upload's is.
async fn stor_whole(
    store: &Store,
    user: &FtpUser,
    v: VPath,
    data: Vec<u8>,
    started: std::time::Instant,
    durable: Durable,
) -> Result<u64, FtpError> {
    let uid = user.user.id;
    let size = data.len() as u64;
    if store.reserve(uid, Need::upload(size)).await.is_err() {
        let (jail, target) = (user.jail.clone(), v.clone());
        let (replacing, found) = blocking(move || {
            let replacing = jail.replace_credit(replaced_size(&jail, &target)?);
            Ok((replacing, Partial::find_streamed(&jail, &target)?))
        })
        .await?;
        drop_interrupted(store, uid, found).await?;
        store
            .reserve(
                uid,
                Need {
                    bytes: size,
                    files: 1,
                    replacing: replacing.unwrap_or(0),
                    replacing_files: u64::from(replacing.is_some()),
                },
            )
            .await?;
    }
    let partial = Partial::streamed(&user.jail, size, &v);
    let (jail, p, target) = (user.jail.clone(), partial.clone(), v.clone());
    // Err(_, true): the file was put in place, but its directory could not
    // be synced. With it, what an interrupted upload of the same name that
    // was dropped held.
    let sync = durable.wanted();
    let stored = blocking(move || {
        use std::io::Write;
        // A folder of that name is refused; an interrupted upload of the
        // same name goes (this one replaces it).
        let dropped = match replaced_size(&jail, &target)
            .and_then(|_| Partial::find_streamed(&jail, &target))
        {
            Ok(Some((old, held))) => match old.remove() {
                Ok(()) => Some(held),
                Err(e) => return Ok((Err((e, false)), None)),
            },
            Ok(None) => None,
            Err(e) => return Ok((Err((e, false)), None)),
        };
        let mut file = match p.create(&target) {
            Ok(Some(file)) => file,
            Ok(None) => {
                let busy = FtpError::refuse(
                    ErrorCode::Busy,
                    format!("another upload of {target} is in progress; wait for it to finish"),
                );
                return Ok((Err((busy, false)), dropped));
            }
            Err(e) => return Ok((Err((e, false)), dropped)),
        };
        // From here on the partial is this upload's own: on a failure
        // before it is in place, it goes.
        let written = file
            .write_all(&data)
            .and_then(|()| if sync { file.sync_data() } else { Ok(()) })
            .map_err(|e| FtpError::io(format!("store {target}"), e));
        let placed = written.and_then(|()| {
            let (dir, replaced) = p.rename_into_place(&target)?;
            // The version as it is in place (the rename changed its ctime).
            let version = file.metadata().ok().map(|m| FileVersion::of(&m));
            Ok((dir, replaced, version))
        });
        let (dir, replaced, version) = match placed {
            Ok(placed) => placed,
            Err(e) => {
                drop(file);
                let _ = p.remove();
                return Ok((Err((e, false)), dropped));
            }
        };
        if sync && let Err(e) = rustix::fs::fsync(&dir) {
            let e = FtpError::io(format!("sync the directory of {target}"), e.into());
            return Ok((Err((e, true)), dropped));
        }
        let mut md5 = Md5::new();
        md5.update(&data);
        Ok((
            Ok((wharf_core::transfer::hex(md5), replaced, version)),
            dropped,
        ))
    })
    .await;
    let stored = match stored {
        Ok((stored, dropped)) => {
            // Failing, it stays held: stricter, until the next rescan.
            if let Some(held) = dropped
                && let Err(e) = store.release(uid, held, 1).await
            {
                tracing::warn!(user = %user.user.name, error = %e, "cannot give back what a dropped interrupted upload held (admin-cli usage --rescan settles it)");
            }
            stored
        }
        Err(e) => Err((e, false)),
    };
    let record = |ok: bool, md5: Option<String>| TransferRecord {
        user_id: uid,
        direction: Direction::Up,
        path: v.to_string(),
        bytes: if ok { size } else { 0 },
        md5,
        ok,
        duration: started.elapsed(),
    };
    let (e, placed) = match stored {
        Ok((md5, replaced, version)) => {
            let commit = commit_of(size, replaced.as_ref(), record(true, Some(md5)), version);
            store.commit_uploads(&[commit]).await?;
            tracing::info!(user = %user.user.name, path = %v, bytes = size, via = user.door, "upload stored");
            return Ok(size);
        }
        Err(failed) => failed,
    };
    // Not in place: the reservation goes with the partial. In place but
    // not durable: it stays held until the partials' sweep and the next
    // usage scan settle it.
    if !placed {
        store.release(uid, size, 1).await?;
    }
    if let Err(e) = store.record_transfer(&record(false, None)).await {
        tracing::warn!(error = %e, "cannot record a transfer");
    }
    Err(e)
}

/// An upload streamed to its partial (see [`stor`]).
async fn stor_stream<R: tokio::io::AsyncRead + Unpin>(
    store: &Store,
    user: &FtpUser,
    v: VPath,
    mut input: R,
    start_pos: u64,
    started: std::time::Instant,
    durable: Durable,
) -> Result<u64, FtpError> {
    let uid = user.user.id;
    let mut up = prepare_stream(store, user, &v, start_pos).await?;
    // Two buffers: the next chunk is read from the client while the one
    // before is written and hashed.
    let mut next = vec![0u8; STOR_CHUNK];
    let mut spare: Option<Vec<u8>> = None;
    let mut writing: Option<(usize, WriteJob)> = None;
    let outcome = loop {
        let filled = fill(&mut input, &mut next);
        let (filled, wrote) = match writing.take() {
            Some((n, job)) => {
                let (filled, wrote) = tokio::join!(filled, job);
                (filled, Some((n, wrote)))
            }
            None => (filled.await, None),
        };
        if let Some((n, wrote)) = wrote {
            match wrote {
                Ok((file, md5, buf)) => {
                    (up.file, up.md5) = (file, md5);
                    up.written += n as u64;
                    spare = Some(buf);
                }
                Err(e) => break Err(e),
            }
        }
        // What came before the data connection broke is kept, for a resume.
        let (n, broke) = filled;
        let broke = broke.map(|e| FtpError::io("the data connection", e));
        if n == 0 {
            match broke {
                None => break Ok(()),
                Some(e) => break Err(e),
            }
        }
        let need = up.written + n as u64;
        if need > up.held
            && let Err(e) = grow(store, user, &v, &mut up, need).await
        {
            break Err(e);
        }
        let (mut file, mut md5) = (up.file.take(), up.md5.take());
        let fresh = spare.take().unwrap_or_else(|| vec![0u8; STOR_CHUNK]);
        let chunk = std::mem::replace(&mut next, fresh);
        let what = v.to_string();
        let job: WriteJob = Box::pin(blocking(move || {
            use std::io::Write;
            if let Some(f) = file.as_mut() {
                f.write_all(&chunk[..n])
                    .map_err(|e| FtpError::io(what, e))?;
            }
            if let Some(m) = md5.as_mut() {
                m.update(&chunk[..n]);
            }
            Ok((file, md5, chunk))
        }));
        if let Some(e) = broke {
            match job.await {
                Ok((file, md5, _)) => {
                    (up.file, up.md5) = (file, md5);
                    up.written += n as u64;
                    break Err(e);
                }
                Err(write) => break Err(write),
            }
        }
        writing = Some((n, job));
    };
    let record = |ok: bool, md5: Option<String>| TransferRecord {
        user_id: uid,
        direction: Direction::Up,
        path: v.to_string(),
        bytes: up.written - start_pos,
        md5,
        ok,
        duration: started.elapsed(),
    };
    if let Err(e) = outcome {
        let failed = record(false, None);
        // A broken data connection is said once, here (the reply needs no
        // log line of its own); a refusal is logged with its reply.
        let e = match e {
            FtpError::Io { context, source } => {
                tracing::info!(user = %user.user.name, path = %v, bytes = up.written, error = %source, via = user.door, "upload cut short");
                FtpError::Replied(wharf_proto::message::ErrorReply::new(
                    wharf_proto::ErrorCode::Unavailable,
                    format!(
                        "{context}: {source}; what arrived is kept: resume with REST {} and STOR",
                        up.written
                    ),
                ))
            }
            other => other,
        };
        if matches!(&e, FtpError::Core(c) if c.code() == wharf_proto::ErrorCode::QuotaExceeded)
            && up.held > 0
        {
            // Refused by the kernel's quota: as past Wharf's, nothing is
            // kept and nothing held.
            drop(up.file.take());
            let p = up.partial.clone();
            let _ = blocking(move || p.remove()).await;
            store.release(uid, up.held, 1).await?;
        } else {
            // Cut short: the partial keeps what it wrote, and holds just that.
            shrink(store, uid, &v, &mut up).await;
        }
        if let Err(e) = store.record_transfer(&failed).await {
            tracing::warn!(error = %e, "cannot record a transfer");
        }
        return Err(e);
    }
    let written = up.written;
    let md5 = up.md5.take().map(wharf_core::transfer::hex);
    let (partial, file, target) = (up.partial.clone(), up.file.take(), v.clone());
    let sync = durable.wanted();
    let (replaced, version, file) = blocking(move || {
        let file = file
            .ok_or_else(|| FtpError::closing(ErrorCode::BadRequest, "the upload lost its file"))?;
        if sync {
            file.sync_data()
                .map_err(|e| FtpError::io(format!("sync {target}"), e))?;
        }
        let (dir, replaced) = partial.rename_into_place(&target)?;
        // The version as it is in place (the rename changed its ctime).
        let version = file.metadata().ok().map(|m| FileVersion::of(&m));
        if sync {
            rustix::fs::fsync(&dir)
                .map_err(|e| FtpError::io(format!("sync the directory of {target}"), e.into()))?;
        }
        Ok((replaced, version, file))
    })
    .await?;
    let hashed = md5.is_some();
    let mut commit = commit_of(written, replaced.as_ref(), record(true, md5), version);
    // What it held ahead of what it wrote is let go in the same step.
    commit.reserved = up.held;
    store.commit_uploads(&[commit]).await?;
    tracing::info!(user = %user.user.name, path = %v, bytes = written, via = user.door, "upload stored");
    if !hashed {
        hash_later(store.clone(), uid, v.to_string(), file);
    }
    Ok(written - start_pos)
}

/// Hashes an upload now in place, through its own descriptor (from the
/// page cache, where it was just written), and records its md5 for
/// downloads and in the transfer log, unless the file changed meanwhile.
/// The client does not wait for it: a streamed upload's md5 costs as much
/// CPU as the rest of the transfer, and no client of standard FTP or SFTP
/// asks for it. A download that comes first hashes as it sends, as for a
/// file a command wrote.
fn hash_later(store: Store, uid: i64, path: String, file: std::fs::File) {
    tokio::spawn(async move {
        let hashed = blocking(move || {
            use std::io::{Seek, SeekFrom};
            let mut file = file;
            let io = |e| FtpError::io("hash an upload", e);
            let version = file.metadata().map(|m| FileVersion::of(&m)).map_err(io)?;
            file.seek(SeekFrom::Start(0)).map_err(io)?;
            let md5 = wharf_core::transfer::hash_prefix(&mut file, version.size).map_err(io)?;
            let now = file.metadata().map(|m| FileVersion::of(&m)).map_err(io)?;
            Ok((wharf_core::transfer::hex(md5), version, now))
        })
        .await;
        match hashed {
            Ok((md5, version, now)) if now == version => {
                if let Err(e) = store.record_upload_md5(uid, &version, &path, &md5).await {
                    tracing::warn!(%path, error = %e, "cannot record an upload's md5");
                }
            }
            Ok(_) => tracing::debug!(%path, "changed before it was hashed: no md5 recorded"),
            Err(e) => tracing::warn!(%path, error = %e, "cannot hash an upload"),
        }
    });
}

/// Finds or starts the partial of `v`: `start_pos` 0 starts anew (an
/// interrupted upload of the same path is dropped), `start_pos` n resumes
/// one of exactly n bytes.
async fn prepare_stream(
    store: &Store,
    user: &FtpUser,
    v: &VPath,
    start_pos: u64,
) -> Result<Stream, FtpError> {
    let uid = user.user.id;
    let (jail, target) = (user.jail.clone(), v.clone());
    let found = blocking(move || {
        let replacing = jail.replace_credit(replaced_size(&jail, &target)?);
        let found = Partial::find_streamed(&jail, &target)?;
        let opened = match &found {
            Some((p, _)) => p.open(&target)?,
            None => None,
        };
        Ok((found, opened, replacing))
    })
    .await?;
    let (found, opened, replacing) = found;
    if start_pos > 0 {
        let (Some((partial, held)), Some(file)) = (found, opened) else {
            return resume_visible(store, user, v, start_pos, replacing).await;
        };
        let what = v.to_string();
        let (file, md5, len) = blocking(move || {
            let mut file = file;
            let len = file.metadata().map_err(|e| FtpError::io(what.clone(), e))?.len();
            if len != start_pos {
                return Err(FtpError::refuse(ErrorCode::BadRequest, format!(
                    "the interrupted upload of {what} holds {len} bytes, not {start_pos}; resume at {len}"
                )));
            }
            let md5 = wharf_core::transfer::hash_prefix(&mut file, len).map_err(|e| FtpError::io(what, e))?;
            Ok((file, md5, len))
        })
        .await?;
        return Ok(Stream {
            partial,
            file: Some(file),
            held,
            written: len,
            md5: Some(md5),
            replacing,
        });
    }
    drop_interrupted(store, uid, found).await?;
    // The partial is an entry of the home from the start: its bytes are
    // held as they come.
    store
        .reserve(
            uid,
            Need {
                bytes: 0,
                files: 1,
                replacing: 0,
                replacing_files: u64::from(replacing.is_some()),
            },
        )
        .await?;
    let partial = Partial::streamed(&user.jail, 0, v);
    let (p, target) = (partial.clone(), v.clone());
    let file = blocking(move || {
        p.create(&target)?.ok_or_else(|| {
            FtpError::refuse(
                ErrorCode::Busy,
                format!("another upload of {target} is in progress; wait for it to finish"),
            )
        })
    })
    .await;
    let file = match file {
        Ok(file) => file,
        Err(e) => {
            store.release(uid, 0, 1).await?;
            return Err(e);
        }
    };
    Ok(Stream {
        partial,
        file: Some(file),
        held: 0,
        written: 0,
        // Hashed once in place, off the transfer's path (see `hash_later`).
        md5: None,
        replacing,
    })
}

/// A resume (`REST n` + `STOR`, or `APPE`) onto a visible file with no
/// interrupted upload behind it: an upload stopped cleanly midway (curl
/// stopped with Ctrl-C closes its data connection, which stream mode takes
/// for the end of the file) left the first `start_pos` bytes visible. The
/// upload goes on in a new partial that starts as those bytes (copied with
/// `copy_file_range`, a reflink where the file system offers one), so the
/// visible file stays whole until the upload ends, then is replaced at
/// once with the md5 recorded; the quota holds the partial as it grows,
/// crediting the file it will replace.
async fn resume_visible(
    store: &Store,
    user: &FtpUser,
    v: &VPath,
    start_pos: u64,
    replacing: Option<u64>,
) -> Result<Stream, FtpError> {
    let uid = user.user.id;
    let need = Need {
        bytes: start_pos,
        files: 1,
        replacing: replacing.unwrap_or(0),
        replacing_files: u64::from(replacing.is_some()),
    };
    store.reserve(uid, need).await?;
    let partial = Partial::streamed(&user.jail, start_pos, v);
    let (jail, p, target) = (user.jail.clone(), partial.clone(), v.clone());
    let made = blocking(move || {
        let (visible, meta) = crate::server::download::open_file(&jail, &target).map_err(|e| match e {
            e if e.is(ErrorCode::NotFound) => FtpError::refuse(ErrorCode::NotFound, format!(
                "no interrupted upload of {target}, and no file, to resume at {start_pos} bytes; send it whole (without REST)"
            )),
            other => other,
        })?;
        if meta.len() < start_pos {
            return Err(FtpError::refuse(ErrorCode::BadRequest, format!(
                "{target} holds {} bytes, not {start_pos}; resume at {}",
                meta.len(),
                meta.len()
            )));
        }
        let mut file = p.create(&target)?.ok_or_else(|| {
            FtpError::refuse(ErrorCode::Busy, format!(
                "another upload of {target} is in progress; wait for it to finish"
            ))
        })?;
        // From here on the partial is this upload's own: on a failure it goes.
        let copied = copy_start(&visible, &mut file, start_pos, &target);
        if copied.is_err() {
            drop(file);
            let _ = p.remove();
        }
        copied
    })
    .await;
    match made {
        Ok((file, md5)) => Ok(Stream {
            partial,
            file: Some(file),
            held: start_pos,
            written: start_pos,
            md5: Some(md5),
            replacing,
        }),
        Err(e) => {
            store.release(uid, start_pos, 1).await?;
            Err(e)
        }
    }
}

/// Copies the first `start_pos` bytes of `visible` into the new partial
/// `file` (a reflink where the file system can) and hashes them.
fn copy_start(
    visible: &std::fs::File,
    file: &mut std::fs::File,
    start_pos: u64,
    target: &VPath,
) -> Result<(std::fs::File, Md5), FtpError> {
    {
        let (mut from, mut to) = (0u64, 0u64);
        while from < start_pos {
            let left = usize::try_from(start_pos - from).unwrap_or(usize::MAX);
            let copied =
                rustix::fs::copy_file_range(visible, Some(&mut from), &*file, Some(&mut to), left)
                    .map_err(|e| FtpError::io(format!("copy the start of {target}"), e.into()))?;
            if copied == 0 {
                return Err(FtpError::refuse(
                    ErrorCode::BadRequest,
                    format!("{target} changed while it was resumed; send it whole (without REST)"),
                ));
            }
        }
        let md5 = wharf_core::transfer::hash_prefix(file, start_pos)
            .map_err(|e| FtpError::io(target.to_string(), e))?;
        let file = file
            .try_clone()
            .map_err(|e| FtpError::io(target.to_string(), e))?;
        Ok((file, md5))
    }
}

/// The size of the regular file at `target` that storing it would
/// replace, if there is one; a directory there is refused.
fn replaced_size(jail: &Jail, target: &VPath) -> Result<Option<u64>, FtpError> {
    let path = jail.creatable(target)?;
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.is_dir() => Err(FtpError::refuse(
            ErrorCode::BadRequest,
            format!("{target} is a directory"),
        )),
        Ok(m) if m.is_file() => Ok(Some(m.len())),
        _ => Ok(None),
    }
}

/// Holds quota for at least `need` bytes (a few MiB ahead when the quota
/// allows, else exactly); past the quota the upload ends and its partial
/// goes, with all it held.
///
/// The file the upload will replace is looked at again each time: only
/// what is there now (and so still on the books) is credited, never a size
/// read when the upload began (a file removed meanwhile has freed its
/// bytes already, and would be credited twice).
async fn grow(
    store: &Store,
    user: &FtpUser,
    v: &VPath,
    up: &mut Stream,
    need: u64,
) -> Result<(), FtpError> {
    let uid = user.user.id;
    let (jail, target) = (user.jail.clone(), v.clone());
    up.replacing = blocking(move || {
        let size = replaced_size(&jail, &target)?;
        Ok(jail.replace_credit(size))
    })
    .await?;
    let ahead = need + HOLD_AHEAD - up.held;
    let exact = need - up.held;
    let need = |bytes| Need {
        bytes,
        replacing: up.replacing.unwrap_or(0),
        ..Need::default()
    };
    let took = match store.reserve(uid, need(ahead)).await {
        Ok(()) => ahead,
        Err(_) => match store.reserve(uid, need(exact)).await {
            Ok(()) => exact,
            Err(e) => {
                let p = up.partial.clone();
                let _ = blocking(move || p.remove()).await;
                store.release(uid, up.held, 1).await?;
                up.held = 0;
                return Err(FtpError::Core(e));
            }
        },
    };
    up.held += took;
    let (mut partial, held, target) = (up.partial.clone(), up.held, v.clone());
    up.partial = blocking(move || {
        partial.hold(held, &target)?;
        Ok(partial)
    })
    .await?;
    Ok(())
}

/// After an upload cut short: the partial holds just what it wrote.
async fn shrink(store: &Store, uid: i64, v: &VPath, up: &mut Stream) {
    if up.held <= up.written {
        return;
    }
    let (mut partial, written, target) = (up.partial.clone(), up.written, v.clone());
    let file = up.file.take();
    let renamed = blocking(move || {
        if let Some(f) = file {
            let _ = f.sync_data();
        }
        partial.hold(written, &target)?;
        Ok(partial)
    })
    .await;
    match renamed {
        Ok(partial) => {
            if let Err(e) = store.release(uid, up.held - written, 0).await {
                tracing::warn!(error = %e, "cannot release quota");
            }
            up.partial = partial;
            up.held = written;
        }
        Err(e) => tracing::warn!(error = %e, "cannot rename a partial upload"),
    }
}
