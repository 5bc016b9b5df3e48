//! Standard FTP and FTPS (RFC 959, 2228, 3659) on Wharf's own users, homes,
//! jail and quotas, built on libunftp: Wharf supplies the authenticator
//! (the same argon2 logins, rights, locks and per-source penalties as the
//! native protocol) and the storage back end (every path resolved beneath
//! the home by the same [`Jail`], the same md5s and usage tables).
//!
//! Connections come through the native services' accept loop
//! ([`wharf_core::server::serve`]), with the same limits; libunftp (with a
//! cap on a control line's length, vendor/libunftp/WHARF.md) runs each
//! session, and speaks TLS itself after `AUTH TLS`.

use std::fmt::{Debug, Display};
use std::path::{Path, PathBuf};
use std::time::SystemTime;
use wharf_proto::ErrorCode;

use async_trait::async_trait;
use unftp_core::auth::{
    AuthenticationError, Authenticator as FtpAuthenticator, Credentials, Principal, UserDetail,
    UserDetailError, UserDetailProvider,
};
use unftp_core::storage::{
    Error as StorageError, ErrorKind, FEATURE_RESTART, FEATURE_SITEMD5, Fileinfo, Metadata,
    StorageBackend,
};
use wharf_core::owner::Owner;
use wharf_core::server::{Handler, Listener, LoginGate, Rejection};
use wharf_core::store::FileVersion;
use wharf_core::tls::Stream as Connection;
use wharf_core::{Authenticator, Password, Service, Store, User};

use md5::{Digest, Md5};
use wharf_core::store::{Direction, Need, TransferRecord};

use super::commands::{blocking, list_with_modes, mkdir_at, mv_at, rm_at, rmdir_at};
use super::download::open_file;
use super::upload::{Partial, commit_of};
use crate::error::FtpError;
use crate::paths::{AboveRoot, Jail, VPath};

/// Entries a listing may hold, as in the native protocol.
const MAX_LISTING: usize = 100_000;

/// How much of a file a download reads at once.
const READ_CHUNK: usize = 1 << 20;

/// A user logged in over standard FTP.
#[derive(Debug, Clone)]
pub struct FtpUser {
    user: User,
    jail: Jail,
    /// The user's transfer rates, shared with their other sessions.
    rates: wharf_core::sessions::Rates,
}

impl Display for FtpUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.user.name)
    }
}

/// No home of libunftp's: Wharf's jail confines every path.
impl UserDetail for FtpUser {}

/// Wharf's logins for libunftp.
#[derive(Debug)]
pub struct WharfAuthenticator {
    auth: Authenticator,
}

impl WharfAuthenticator {
    /// Logins checked by `auth`, as the native service checks them.
    pub fn new(auth: Authenticator) -> Self {
        WharfAuthenticator { auth }
    }
}

#[async_trait]
impl FtpAuthenticator for WharfAuthenticator {
    async fn authenticate(
        &self,
        username: &str,
        creds: &Credentials,
    ) -> Result<Principal, AuthenticationError> {
        self.login(username, creds).await.map(|(who, _)| who)
    }
}

impl WharfAuthenticator {
    /// A login, and the session it opens (counted while held).
    async fn login(
        &self,
        username: &str,
        creds: &Credentials,
    ) -> Result<(Principal, wharf_core::sessions::SessionLease), AuthenticationError> {
        let password = Password::new(creds.password.clone().unwrap_or_default());
        let peer = creds.source_ip;
        match self
            .auth
            .authenticate(username, &password, Service::Ftp, peer)
            .await
        {
            Ok((user, lease)) => {
                tracing::info!(%peer, user = %user.name, via = "standard ftp", "logged in");
                Ok((
                    Principal {
                        username: user.name,
                    },
                    lease,
                ))
            }
            Err(e) => {
                tracing::info!(%peer, user = %username, via = "standard ftp", error = %e, "login refused");
                // The native protocol's words, which the vendored libunftp
                // sends after 530 (vendor/libunftp/WHARF.md).
                Err(AuthenticationError::new(e.client_message()))
            }
        }
    }
}

/// Turns a logged-in name into the user and their jail.
#[derive(Debug)]
pub struct WharfUsers {
    store: Store,
    auth: Authenticator,
}

impl WharfUsers {
    /// Users read from `auth`'s database, with their rates.
    pub fn new(auth: Authenticator) -> Self {
        WharfUsers {
            store: auth.store().clone(),
            auth,
        }
    }
}

#[async_trait]
impl UserDetailProvider for WharfUsers {
    type User = FtpUser;

    async fn provide_user_detail(&self, principal: &Principal) -> Result<FtpUser, UserDetailError> {
        let user = match self.store.user(&principal.username).await {
            Ok(Some(user)) => user,
            Ok(None) => {
                return Err(UserDetailError::UserNotFound {
                    username: principal.username.clone(),
                });
            }
            Err(e) => return Err(UserDetailError::Generic(e.client_message())),
        };
        let home = user.home.clone();
        let owner = Owner::for_files(user.id);
        let jail = tokio::task::spawn_blocking(move || Jail::for_user(&home, owner))
            .await
            .map_err(|e| UserDetailError::Generic(format!("internal error: {e}")))?
            .map_err(|e| {
                tracing::error!(user = %user.name, error = %e, "cannot prepare a home");
                UserDetailError::Generic("your home directory cannot be prepared".into())
            })?;
        let rates = self.auth.sessions().rates(&user);
        Ok(FtpUser { user, jail, rates })
    }
}

/// What a listing or `SIZE`/`MDTM` shows of a file or directory.
#[derive(Debug, Clone)]
pub struct Meta {
    len: u64,
    dir: bool,
    modified: SystemTime,
    uid: u32,
    gid: u32,
    /// Permission bits.
    mode: u32,
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
    store: Store,
}

impl WharfStorage {
    /// Storage recording in `store`.
    pub fn new(store: Store) -> Self {
        WharfStorage { store }
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
        FtpError::Refused(r) => match r.code {
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
        run(move || {
            match jail.existing(&v) {
                Ok((_, canonical)) => {
                    let meta = std::fs::metadata(&canonical)
                        .map_err(|e| FtpError::io(v.to_string(), e))?;
                    Ok(Meta::of(&meta))
                }
                // No file yet, but an interrupted upload of it: its size is
                // what a client asks (SIZE) before it resumes (REST + STOR,
                // or APPE); the file itself stays invisible.
                Err(missing) if missing.is(ErrorCode::NotFound) => {
                    let found = Partial::find_streamed(&jail, &v)?;
                    let meta = found.map(|(p, _)| p.metadata(&v)).transpose()?;
                    meta.map(|m| Meta::of(&m)).ok_or(missing)
                }
                Err(e) => Err(e),
            }
        })
        .await
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
            let digest = crate::transfer::hash_prefix(&mut file, version.size)
                .map_err(|e| FtpError::io("hash the file", e))?;
            Ok(crate::transfer::hex(digest))
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
        let v = vpath(path.as_ref())?;
        let input = wharf_core::rate::Paced::new(input, user.rates.up.clone());
        stor(&self.store, user, v, input, start_pos)
            .await
            .map_err(storage_error)
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

/// Quota an upload of unknown size holds ahead of the bytes it wrote.
const HOLD_AHEAD: u64 = 4 << 20;

/// Bytes read from the data connection at a time.
const STOR_CHUNK: usize = 256 << 10;

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
async fn stor<R: tokio::io::AsyncRead + Unpin>(
    store: &Store,
    user: &FtpUser,
    v: VPath,
    mut input: R,
    start_pos: u64,
) -> Result<u64, FtpError> {
    let uid = user.user.id;
    let started = std::time::Instant::now();
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
                tracing::info!(user = %user.user.name, path = %v, bytes = up.written, error = %source, via = "standard ftp", "upload cut short");
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
    if up.held > written {
        store.release(uid, up.held - written, 0).await?;
        up.held = written;
    }
    let md5 = up.md5.take().map(crate::transfer::hex);
    let (partial, file, target) = (up.partial.clone(), up.file.take(), v.clone());
    let (replaced, version) = blocking(move || {
        let file = file
            .ok_or_else(|| FtpError::closing(ErrorCode::BadRequest, "the upload lost its file"))?;
        file.sync_data()
            .map_err(|e| FtpError::io(format!("sync {target}"), e))?;
        let version = file.metadata().ok().map(|m| FileVersion::of(&m));
        let (dir, replaced) = partial.rename_into_place(&target)?;
        rustix::fs::fsync(&dir)
            .map_err(|e| FtpError::io(format!("sync the directory of {target}"), e.into()))?;
        Ok((replaced, version))
    })
    .await?;
    let commit = commit_of(written, replaced.as_ref(), record(true, md5), version);
    store.commit_uploads(&[commit]).await?;
    tracing::info!(user = %user.user.name, path = %v, bytes = written, via = "standard ftp", "upload stored");
    Ok(written - start_pos)
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
            let md5 = crate::transfer::hash_prefix(&mut file, len).map_err(|e| FtpError::io(what, e))?;
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
    if let Some((partial, held)) = found {
        // A new STOR of the same path: the interrupted one goes.
        let p = partial.clone();
        blocking(move || p.remove()).await?;
        store.release(uid, held, 1).await?;
    }
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
        md5: Some(Md5::new()),
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
        let (visible, meta) = super::download::open_file(&jail, &target).map_err(|e| match e {
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
        let md5 = crate::transfer::hash_prefix(file, start_pos)
            .map_err(|e| FtpError::io(target.to_string(), e))?;
        let file = file
            .try_clone()
            .map_err(|e| FtpError::io(target.to_string(), e))?;
        Ok((file, md5))
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
    let internal = jail.home().join(wharf_core::home::INTERNAL_DIR);
    let mut names = Vec::new();
    for entry in
        rustix::fs::Dir::read_from(&dir).map_err(|e| FtpError::io(v.to_string(), e.into()))?
    {
        let entry = entry.map_err(|e| FtpError::io(v.to_string(), e.into()))?;
        let Ok(name) = entry.file_name().to_str() else {
            continue; // not UTF-8: cannot be named in the protocol
        };
        if name == "." || name == ".." || (v.is_root() && name == wharf_core::home::INTERNAL_DIR) {
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

/// Settings of the standard FTP listener.
#[derive(Debug, Clone)]
pub struct StdFtpConfig {
    /// Ports passive data connections are offered on.
    pub passive_ports: std::ops::RangeInclusive<u16>,
    /// The address announced for passive data connections, if not the one
    /// the client connected to.
    pub passive_host: Option<std::net::Ipv4Addr>,
    /// Connections at once, per source, and the idle timeout, as the
    /// native service has them.
    pub limits: wharf_core::server::Limits,
    /// The service's certificate and key (PEM), for `AUTH TLS`.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Refuse logins (and data) without TLS.
    pub require_tls: bool,
}

/// Serves standard FTP on `listener` until `shutdown`, with the native
/// service's accept loop and limits (connections at once and per source,
/// connections not logged in yet, the shutdown's grace period): each
/// connection is a libunftp session over Wharf's users and homes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    auth: Authenticator,
    store: Store,
    config: StdFtpConfig,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let limits = config.limits.clone();
    let server = std::sync::Arc::new(StdFtpServer {
        users: std::sync::Arc::new(WharfUsers::new(auth.clone())),
        auth: std::sync::Arc::new(WharfAuthenticator::new(auth)),
        store,
        config,
        stop_now: tokio_util::sync::CancellationToken::new(),
    });
    // libunftp speaks TLS itself, after `AUTH TLS`: the accept loop hands it
    // the plain connection.
    wharf_core::server::serve(Listener::new(listener, None), limits, server, shutdown).await;
}

/// What every standard FTP session shares.
struct StdFtpServer {
    auth: std::sync::Arc<WharfAuthenticator>,
    users: std::sync::Arc<WharfUsers>,
    store: Store,
    config: StdFtpConfig,
    /// Fires when a shutdown's grace period is over.
    stop_now: tokio_util::sync::CancellationToken,
}

impl StdFtpServer {
    /// A libunftp server for one connection, whose logins are told to
    /// `on_login`.
    fn session(
        &self,
        on_login: tokio::sync::oneshot::Sender<wharf_core::sessions::SessionLease>,
        peer: std::net::IpAddr,
    ) -> Result<libunftp::Server<WharfStorage, FtpUser>, libunftp::ServerError> {
        let storage = self.store.clone();
        let config = &self.config;
        let mut builder = libunftp::ServerBuilder::with_user_detail_provider(
            Box::new(move || WharfStorage::new(storage.clone())),
            self.users.clone(),
        )
        // Never libunftp's anonymous default: Wharf's logins only.
        .authenticator(std::sync::Arc::new(SessionLogin {
            auth: self.auth.clone(),
            on_login: std::sync::Mutex::new(Some(on_login)),
            peer,
        }))
        .greeting("Wharf file transfer (standard FTP)")
        .passive_ports(config.passive_ports.clone())
        .idle_session_timeout(config.limits.idle_timeout.as_secs().max(1));
        if let Some(host) = config.passive_host {
            builder = builder.passive_host(host);
        }
        if let Some((cert, key)) = &config.tls {
            // FTPS speaks TLS 1.2 with AEAD suites only (rustls has no
            // others), with forward secrecy, nothing older. Not 1.3: curl
            // ends a TLS 1.3 data connection without close_notify, which
            // must count as a cut upload (else anyone on the path could
            // truncate a file by closing the connection), so every curl
            // upload would fail.
            use libunftp::options::TlsFlags;
            builder = builder
                .ftps(cert.clone(), key.clone())
                .ftps_tls_flags(
                    TlsFlags::V1_2 | TlsFlags::RESUMPTION_SESS_ID | TlsFlags::RESUMPTION_TICKETS,
                )
                .ftps_required(config.require_tls, config.require_tls);
        }
        builder.build()
    }
}

impl Handler for StdFtpServer {
    fn service_name(&self) -> &'static str {
        "std-ftp"
    }

    async fn handle(
        self: std::sync::Arc<Self>,
        stream: Connection,
        peer: std::net::SocketAddr,
        shutdown: tokio_util::sync::CancellationToken,
        gate: LoginGate,
    ) {
        let Connection::Plain(tcp) = stream else {
            return;
        };
        // libunftp owns the connection and runs it in a task of its own;
        // this second handle on the socket is how the limits below end it.
        let hangup = match Hangup::of(&tcp) {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "standard ftp: cannot serve a connection");
                return;
            }
        };
        let (on_login, logged_in) = tokio::sync::oneshot::channel();
        let server = match self.session(on_login, peer.ip()) {
            Ok(server) => server,
            Err(e) => {
                tracing::error!(%peer, error = %e, "standard ftp: cannot serve a connection (is the certificate readable?)");
                return;
            }
        };
        let session = server.service(tcp);
        tokio::pin!(session);
        let login_time = self.config.limits.login_timeout;
        // Until the login: within the login timeout, and not past a shutdown.
        let mut _lease = None;
        tokio::select! {
            _ = &mut session => return,
            _ = shutdown.cancelled() => {
                hangup.now();
            }
            login = tokio::time::timeout(login_time, logged_in) => match login {
                Ok(Ok(lease)) => {
                    _lease = Some(lease);
                    gate.passed();
                }
                Ok(Err(_)) => {}
                Err(_) => {
                    tracing::info!(%peer, via = "standard ftp", "no login within {login_time:?}: connection closed");
                    hangup.now();
                }
            }
        }
        // Logged in: until the session ends, or the grace period after a
        // shutdown does.
        tokio::select! {
            _ = &mut session => {}
            _ = self.stop_now.cancelled() => {
                hangup.now();
                let _ = session.await;
            }
        }
    }

    fn abort(&self) {
        self.stop_now.cancel();
    }

    async fn reject(&self, stream: Connection, why: Rejection) {
        let reply = format!("421 {}.\r\n", why.message());
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            tokio::io::AsyncWriteExt::write_all(&mut { stream }, reply.as_bytes()),
        )
        .await;
    }
}

/// A second handle on a connection libunftp owns: [`Hangup::now`] (or
/// dropping it, as when the connection is dropped to make room for others)
/// shuts the socket down, which ends libunftp's session.
struct Hangup(std::net::TcpStream);

impl Hangup {
    fn of(tcp: &tokio::net::TcpStream) -> std::io::Result<Hangup> {
        use std::os::fd::AsFd;
        Ok(Hangup(std::net::TcpStream::from(
            tcp.as_fd().try_clone_to_owned()?,
        )))
    }

    fn now(&self) {
        let _ = self.0.shutdown(std::net::Shutdown::Both);
    }
}

impl Drop for Hangup {
    fn drop(&mut self) {
        self.now();
    }
}

/// One connection's view of Wharf's logins: tells the connection's handler
/// when a login succeeds (for the login timeout and the budget of
/// connections not logged in yet).
#[derive(Debug)]
struct SessionLogin {
    auth: std::sync::Arc<WharfAuthenticator>,
    /// Told of the login, with the session it opened (held by the
    /// connection while it lasts).
    on_login:
        std::sync::Mutex<Option<tokio::sync::oneshot::Sender<wharf_core::sessions::SessionLease>>>,
    /// The client's address as the accept loop knows it: behind a load
    /// balancer, the one its PROXY header named (libunftp sees the
    /// balancer's).
    peer: std::net::IpAddr,
}

#[async_trait]
impl FtpAuthenticator for SessionLogin {
    async fn authenticate(
        &self,
        username: &str,
        creds: &Credentials,
    ) -> Result<Principal, AuthenticationError> {
        let creds = Credentials {
            password: creds.password.clone(),
            certificate_chain: creds.certificate_chain.clone(),
            source_ip: self.peer,
            command_channel_security: creds.command_channel_security,
        };
        let (principal, lease) = self.auth.login(username, &creds).await?;
        let told = self
            .on_login
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(tell) = told {
            let _ = tell.send(lease);
        }
        Ok(principal)
    }
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
            tracing::info!(user_id, path = %record.path, bytes = record.bytes, via = "standard ftp", "download sent");
        } else {
            tracing::info!(user_id, path = %record.path, bytes = record.bytes, of = self.left, via = "standard ftp", "download cut short");
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
