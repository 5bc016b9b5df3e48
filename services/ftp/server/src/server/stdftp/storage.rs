//! The storage back end: every path beneath the home through the same
//! jail, the same md5s and usage books as the native protocol.

use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use async_trait::async_trait;
use unftp_core::storage::{
    Error as StorageError, ErrorKind, FEATURE_RESTART, FEATURE_SITEMD5, Fileinfo, Metadata,
    StorageBackend,
};
use wharf_proto::ErrorCode;
use wharf_store::Store;
use wharf_store::db::Direction;
use wharf_store::db::FileVersion;
use wharf_store::db::TransferRecord;

use super::auth::FtpUser;
use super::stor::{Durable, stor};
use crate::error::FtpError;
use crate::paths::{AboveRoot, Jail, VPath};
use crate::server::commands::{blocking, list_with_modes, mkdir_at, mv_at, rm_at, rmdir_at};
use crate::server::download::open_file;
use crate::server::upload::Partial;

/// Entries a listing may hold, as in the native protocol.
const MAX_LISTING: usize = 100_000;

/// How much of a file a download reads at once.
const READ_CHUNK: usize = 1 << 20;

/// What a listing or `SIZE`/`MDTM` shows of a file or directory.
#[derive(Debug, Clone)]
pub struct Meta {
    pub(super) len: u64,
    pub(super) dir: bool,
    pub(super) modified: SystemTime,
    pub(super) uid: u32,
    pub(super) gid: u32,
    /// Permission bits.
    pub(super) mode: u32,
}

impl Meta {
    fn of(m: &std::fs::Metadata) -> Meta {
        use std::os::unix::fs::MetadataExt;
        Meta {
            len: if m.is_dir() { 0 } else { m.len() },
            dir: m.is_dir(),
            modified: m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            uid: m.uid(),
            gid: m.gid(),
            mode: m.mode(),
        }
    }
}

impl Metadata for Meta {
    fn len(&self) -> u64 {
        self.len
    }
    fn is_dir(&self) -> bool {
        self.dir
    }
    fn is_file(&self) -> bool {
        !self.dir
    }
    fn is_symlink(&self) -> bool {
        false
    }
    fn modified(&self) -> unftp_core::storage::Result<SystemTime> {
        Ok(self.modified)
    }
    fn gid(&self) -> u32 {
        self.gid
    }
    fn uid(&self) -> u32 {
        self.uid
    }
    fn permissions(&self) -> unftp_core::storage::Permissions {
        unftp_core::storage::Permissions(self.mode & 0o777)
    }
}

/// The homes, as libunftp's storage.
#[derive(Debug, Clone)]
pub struct WharfStorage {
    pub(super) store: Store,
}

impl WharfStorage {
    /// Storage recording in `store`.
    pub fn new(store: Store) -> Self {
        WharfStorage { store }
    }

    /// Stores an upload as `put` does, synced to disk as `durable` says
    /// (standard FTP's `put` always syncs).
    pub async fn put_with<P: AsRef<Path>, R: tokio::io::AsyncRead + Unpin>(
        &self,
        user: &FtpUser,
        input: R,
        path: P,
        start_pos: u64,
        durable: Durable,
    ) -> unftp_core::storage::Result<u64> {
        let v = vpath(path.as_ref())?;
        let input = wharf_core::rate::Paced::new(input, user.rates.up.clone());
        stor(&self.store, user, v, input, start_pos, durable)
            .await
            .map_err(storage_error)
    }

    /// What [`StorageBackend::metadata`] says, or `None` when there is
    /// nothing by that name: a look before a create, not a refusal (and so
    /// not logged as one).
    pub async fn lookup<P: AsRef<Path>>(
        &self,
        user: &FtpUser,
        path: P,
    ) -> unftp_core::storage::Result<Option<Meta>> {
        let v = vpath(path.as_ref())?;
        let jail = user.jail.clone();
        let found = blocking(move || match metadata_of(&jail, &v) {
            Ok(meta) => Ok(Some(meta)),
            Err(e) if e.is(ErrorCode::NotFound) => Ok(None),
            Err(e) => Err(e),
        });
        found.await.map_err(storage_error)
    }
}

/// The metadata of `v`: the file's, or, when there is none, that of an
/// interrupted upload of it, whose size is what a client asks (SIZE)
/// before it resumes (REST + STOR, or APPE); the file itself stays
/// invisible.
fn metadata_of(jail: &Jail, v: &VPath) -> Result<Meta, FtpError> {
    match jail.existing(v) {
        Ok((_, canonical)) => {
            let meta = std::fs::metadata(&canonical).map_err(|e| FtpError::io(v.to_string(), e))?;
            Ok(Meta::of(&meta))
        }
        Err(missing) if missing.is(ErrorCode::NotFound) => {
            let found = Partial::find_streamed(jail, v)?;
            let meta = found.map(|(p, _)| p.metadata(v)).transpose()?;
            meta.map(|m| Meta::of(&m)).ok_or(missing)
        }
        Err(e) => Err(e),
    }
}

/// A path libunftp hands over (absolute, from its own current directory),
/// as a path beneath the home; `..` past the top is refused.
fn vpath(path: &Path) -> Result<VPath, StorageError> {
    let text = path.to_str().ok_or_else(|| {
        StorageError::new(ErrorKind::FileNameNotAllowedError, "the name is not UTF-8")
    })?;
    VPath::root()
        .resolve(text, AboveRoot::Refuse)
        .map_err(storage_error)
}

/// Wharf's errors as FTP replies: a missing file is 550, a name Wharf
/// refuses (an escape, a link out of the home) 553, the rest 451.
fn storage_error(e: FtpError) -> StorageError {
    let kind = match &e {
        // A refusal that ends the session (a stream out of step, a timeout,
        // a shutdown) is a local error, as before the refusals were one type.
        FtpError::Refused(r) if !r.close => match r.code {
            ErrorCode::NotFound | ErrorCode::AlreadyExists | ErrorCode::BadRequest => {
                ErrorKind::PermanentFileNotAvailable
            }
            ErrorCode::ForbiddenPath => ErrorKind::FileNameNotAllowedError,
            ErrorCode::NoSpace => ErrorKind::InsufficientStorageSpaceError,
            ErrorCode::Busy => ErrorKind::TransientFileNotAvailable,
            _ => ErrorKind::LocalError,
        },
        // Over the byte or the file quota, or a home that cannot be
        // measured (which counts as over it).
        FtpError::Core(e) if e.code() == wharf_proto::ErrorCode::QuotaExceeded => {
            ErrorKind::ExceededStorageAllocationError
        }
        _ => ErrorKind::LocalError,
    };
    // The native protocol's words for it (internal details only in the
    // log), sent after the reply code by the vendored libunftp.
    let reason = e.reply().message;
    match (&e, kind) {
        // Already said where it happened.
        (FtpError::Replied(_), _) => {}
        (_, ErrorKind::LocalError) => {
            tracing::warn!(error = %e, via = "standard ftp", "a command failed")
        }
        _ => tracing::info!(reason = %reason, via = "standard ftp", "refused"),
    }
    StorageError::new(kind, libunftp::storage::ClientReason(reason))
}

async fn run<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, FtpError> + Send + 'static,
) -> Result<T, StorageError> {
    blocking(work).await.map_err(storage_error)
}

#[async_trait]
impl StorageBackend<FtpUser> for WharfStorage {
    type Metadata = Meta;

    fn name(&self) -> &str {
        "wharf"
    }

    fn supported_features(&self) -> u32 {
        FEATURE_RESTART | FEATURE_SITEMD5
    }

    async fn metadata<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &FtpUser,
        path: P,
    ) -> unftp_core::storage::Result<Meta> {
        let v = vpath(path.as_ref())?;
        let jail = user.jail.clone();
        run(move || metadata_of(&jail, &v)).await
    }

    async fn md5<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &FtpUser,
        path: P,
    ) -> unftp_core::storage::Result<String> {
        let v = vpath(path.as_ref())?;
        let jail = user.jail.clone();
        let (file, meta) = run(move || open_file(&jail, &v)).await?;
        let version = FileVersion::of(&meta);
        let user_id = user.user.id;
        if let Ok(Some(md5)) = self.store.known_md5(user_id, &version).await {
            return Ok(md5);
        }
        let md5 = run(move || {
            let mut file = file;
            let digest = wharf_core::transfer::hash_prefix(&mut file, version.size)
                .map_err(|e| FtpError::io("hash the file", e))?;
            Ok(wharf_core::transfer::hex(digest))
        })
        .await?;
        if let Err(e) = self.store.remember_md5(user_id, &version, &md5).await {
            tracing::warn!(error = %e, "cannot record an md5");
        }
        Ok(md5)
    }

    /// `NLST`: names only, read without looking at each entry (a folder of
    /// a million names lists in a moment), links shown only when they lead
    /// somewhere inside the home, as `LIST` shows them.
    async fn nlst<P>(
        &self,
        user: &FtpUser,
        path: P,
    ) -> Result<std::io::Cursor<Vec<u8>>, std::io::Error>
    where
        P: AsRef<Path> + Send + Debug,
        Self::Metadata: Metadata + 'static,
    {
        let v = vpath(path.as_ref()).map_err(|e| std::io::Error::other(e.to_string()))?;
        let jail = user.jail.clone();
        let named = blocking(move || names(&jail, &v, MAX_NAMES)).await;
        named
            .map(|n| std::io::Cursor::new(n.into_bytes()))
            .map_err(|e| std::io::Error::other(e.reply().message))
    }

    /// `LIST`: as `ls -l` shows it, with the entries' own permission bits
    /// and the user's name as owner and group (no numeric ids).
    async fn list_fmt<P>(
        &self,
        user: &FtpUser,
        path: P,
    ) -> Result<std::io::Cursor<Vec<u8>>, StorageError>
    where
        P: AsRef<Path> + Send + Debug,
        Self::Metadata: Metadata + 'static,
    {
        let entries = self.list(user, path).await?;
        let name = &user.user.name;
        let this_year = jiff::Timestamp::now()
            .to_zoned_datetime(jiff::tz::TimeZone::UTC)
            .year();
        let mut out = String::with_capacity(entries.len() * 64);
        for e in &entries {
            let m = &e.metadata;
            let kind = if m.dir { 'd' } else { '-' };
            let when = jiff::Timestamp::try_from(m.modified)
                .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
                .to_zoned_datetime(jiff::tz::TimeZone::UTC);
            let when = if when.year() == this_year {
                when.strftime("%b %d %H:%M").to_string()
            } else {
                when.strftime("%b %d  %Y").to_string()
            };
            let file = e.path.to_string_lossy();
            out.push_str(&format!(
                "{kind}{} 1 {name:<8} {name:<8} {:>12} {when} {file}\r\n",
                m.permissions(),
                m.len
            ));
        }
        Ok(std::io::Cursor::new(out.into_bytes()))
    }

    async fn list<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &FtpUser,
        path: P,
    ) -> unftp_core::storage::Result<Vec<Fileinfo<PathBuf, Meta>>> {
        let v = vpath(path.as_ref())?;
        let jail = user.jail.clone();
        run(move || {
            let entries = list_with_modes(&jail, &v, MAX_LISTING)?;
            let mut out = Vec::with_capacity(entries.len());
            for (e, mode) in entries {
                let modified = humantime::parse_rfc3339(&e.mtime).unwrap_or(SystemTime::UNIX_EPOCH);
                out.push(Fileinfo {
                    path: PathBuf::from(&e.name),
                    metadata: Meta {
                        len: e.size,
                        dir: e.kind == wharf_proto::ftp::EntryKind::Dir,
                        modified,
                        uid: 0,
                        gid: 0,
                        mode,
                    },
                });
            }
            Ok(out)
        })
        .await
    }

    async fn get<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &FtpUser,
        path: P,
        start_pos: u64,
    ) -> unftp_core::storage::Result<Box<dyn tokio::io::AsyncRead + Send + Sync + Unpin>> {
        let v = vpath(path.as_ref())?;
        let (jail, shown) = (user.jail.clone(), v.to_string());
        let (file, left) = run(move || {
            use std::io::{Seek, SeekFrom};
            let (mut file, meta) = open_file(&jail, &v)?;
            let start = start_pos.min(meta.len());
            file.seek(SeekFrom::Start(start))
                .map_err(|e| FtpError::io(v.to_string(), e))?;
            Ok((file, meta.len() - start))
        })
        .await?;
        Ok(Box::new(Counted {
            // libunftp copies 8 KiB at a time: each would be a blocking read
            // of its own; the file is read 1 MiB at a time instead.
            file: wharf_core::rate::Paced::new(
                tokio::io::BufReader::with_capacity(READ_CHUNK, tokio::fs::File::from_std(file)),
                user.rates.down.clone(),
            ),
            sent: 0,
            left,
            record: Some((self.store.clone(), user.user.id, shown)),
            door: user.door,
            started: std::time::Instant::now(),
        }))
    }

    async fn put<
        P: AsRef<Path> + Send + Debug,
        R: tokio::io::AsyncRead + Send + Sync + Unpin + 'static,
    >(
        &self,
        user: &FtpUser,
        input: R,
        path: P,
        start_pos: u64,
    ) -> unftp_core::storage::Result<u64> {
        self.put_with(user, input, path, start_pos, Durable::Always)
            .await
    }

    async fn del<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &FtpUser,
        path: P,
    ) -> unftp_core::storage::Result<()> {
        let v = vpath(path.as_ref())?;
        rm_at(&user.jail, &self.store, user.user.id, v)
            .await
            .map_err(storage_error)
    }

    async fn mkd<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &FtpUser,
        path: P,
    ) -> unftp_core::storage::Result<()> {
        let v = vpath(path.as_ref())?;
        mkdir_at(&user.jail, &self.store, user.user.id, v)
            .await
            .map_err(storage_error)
    }

    async fn rename<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &FtpUser,
        from: P,
        to: P,
    ) -> unftp_core::storage::Result<()> {
        let (src, dst) = (vpath(from.as_ref())?, vpath(to.as_ref())?);
        mv_at(&user.jail, src, dst).await.map_err(storage_error)
    }

    async fn rmd<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &FtpUser,
        path: P,
    ) -> unftp_core::storage::Result<()> {
        let v = vpath(path.as_ref())?;
        rmdir_at(&user.jail, &self.store, user.user.id, v)
            .await
            .map_err(storage_error)
    }

    async fn cwd<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &FtpUser,
        path: P,
    ) -> unftp_core::storage::Result<()> {
        let v = vpath(path.as_ref())?;
        let jail = user.jail.clone();
        run(move || {
            let (_, canonical) = jail.existing(&v)?;
            if !canonical.is_dir() {
                return Err(FtpError::refuse(
                    ErrorCode::BadRequest,
                    format!("{v} is not a directory"),
                ));
            }
            Ok(())
        })
        .await
    }
}

/// The most names `NLST` lists.
const MAX_NAMES: usize = 1_000_000;

/// The names in the folder `v`, one per line (CRLF), for `NLST`.
fn names(jail: &Jail, v: &VPath, max: usize) -> Result<String, FtpError> {
    use rustix::fs::{FileType, Mode, OFlags};
    jail.existing(v)?;
    let dir = jail.open_beneath(
        &v.relative(),
        OFlags::RDONLY | OFlags::DIRECTORY,
        Mode::empty(),
        &v.to_string(),
    )?;
    let internal = jail.home().join(wharf_store::home::INTERNAL_DIR);
    let mut names = Vec::new();
    for entry in
        rustix::fs::Dir::read_from(&dir).map_err(|e| FtpError::io(v.to_string(), e.into()))?
    {
        let entry = entry.map_err(|e| FtpError::io(v.to_string(), e.into()))?;
        let Ok(name) = entry.file_name().to_str() else {
            continue; // not UTF-8: cannot be named in the protocol
        };
        if name == "." || name == ".." || (v.is_root() && name == wharf_store::home::INTERNAL_DIR) {
            continue;
        }
        let kind = match entry.file_type() {
            FileType::Unknown => {
                rustix::fs::statat(&dir, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
                    .map(|st| FileType::from_raw_mode(st.st_mode))
                    .unwrap_or(FileType::Unknown)
            }
            kind => kind,
        };
        let shown = match kind {
            FileType::RegularFile | FileType::Directory => true,
            FileType::Symlink => std::fs::canonicalize(jail.home().join(v.relative()).join(name))
                .is_ok_and(|t| t.starts_with(jail.home()) && !t.starts_with(&internal)),
            _ => false,
        };
        if shown {
            names.push(name.to_owned());
            if names.len() > max {
                return Err(FtpError::refuse(
                    ErrorCode::BadRequest,
                    format!("{v} has more than {max} entries; list a subfolder instead"),
                ));
            }
        }
    }
    names.sort();
    let mut out = String::with_capacity(names.iter().map(|n| n.len() + 2).sum());
    for n in names {
        out.push_str(&n);
        out.push_str("\r\n");
    }
    Ok(out)
}

/// A download's file, counting what is read from it; when the transfer is
/// over (the reader dropped), it is recorded in the usage tables as the
/// native service records downloads.
struct Counted {
    file: wharf_core::rate::Paced<tokio::io::BufReader<tokio::fs::File>>,
    sent: u64,
    left: u64,
    record: Option<(Store, i64, String)>,
    started: std::time::Instant,
    /// The door, as the log names it.
    door: &'static str,
}

impl tokio::io::AsyncRead for Counted {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.file).poll_read(cx, buf);
        let read = (buf.filled().len() - before) as u64;
        self.sent += read;
        polled
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let Some((store, user_id, path)) = self.record.take() else {
            return;
        };
        let record = TransferRecord {
            user_id,
            direction: Direction::Down,
            path,
            bytes: self.sent,
            md5: None,
            ok: self.sent >= self.left,
            duration: self.started.elapsed(),
        };
        if record.ok {
            tracing::info!(user_id, path = %record.path, bytes = record.bytes, via = self.door, "download sent");
        } else {
            tracing::info!(user_id, path = %record.path, bytes = record.bytes, of = self.left, via = self.door, "download cut short");
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = store.record_transfer(&record).await {
                    tracing::warn!(error = %e, "cannot record a transfer");
                }
            });
        }
    }
}
