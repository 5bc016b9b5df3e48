//! The `sftp` subsystem: SFTP version 3, as OpenSSH's sftp and scp,
//! WinSCP and FileZilla speak it, with the OpenSSH extensions clients use.
//!
//! Every operation goes through Wharf's storage layer, the one standard
//! FTP uses (`wharf_ftpd::server::stdftp::WharfStorage`): paths beneath
//! the home only (the same jail: `..`, absolute paths and links out of the
//! home are refused), an upload written to a hidden partial whose quota is
//! reserved as it grows, made visible whole at `close` with its md5
//! recorded (so `wharf-ftp get` serves it without hashing again), a cut
//! upload kept for a resume (`reput`), usage recorded. A refusal carries
//! Wharf's words, which OpenSSH's sftp shows.

mod attrs;
mod incoming;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use russh_sftp::protocol::{
    Data, ExtendedReply, File, FileAttributes, Handle, Name, OpenFlags, Packet, Status, StatusCode,
    Version,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use unftp_core::auth::{Principal, UserDetailProvider};
use unftp_core::storage::{Error as StorageError, ErrorKind, Metadata, StorageBackend};
use wharf_ftpd::paths::{AboveRoot, VPath};
use wharf_ftpd::server::stdftp::{Durable, FtpUser, WharfStorage};
use wharf_store::{Store, User};

use self::attrs::{attributes_of, long_name};
use self::incoming::Incoming;
use crate::server::SshServer;

/// The longest request taken, and answer sent: 256 KiB, what OpenSSH's
/// sftp takes at the most.
const MAX_PACKET: u32 = 256 * 1024;
/// The most a read answers with, and a write may carry: room is left for
/// the packet's header, as OpenSSH's sftp-server leaves it.
const MAX_DATA: u32 = MAX_PACKET - 1024;
/// Files and directories one session may hold open.
const MAX_HANDLES: usize = 256;
/// Entries a directory listing sends in one answer.
const LISTING_BATCH: usize = 128;
/// Writes in flight between the session and the upload.
const WRITE_QUEUE: usize = 16;

/// An upload whose writes add up to no more than this by its close is
/// kept in hand and stored whole then, without a task of its own (most
/// files of a tree; a task and its queue cost a small file more than the
/// storing). At most this much per open file: 16 MiB over all the handles
/// a session may hold, less than the queues of their tasks may.
const SMALL_UPLOAD: usize = 64 << 10;

/// One user's files, as the SFTP session reaches them.
pub struct Files {
    storage: WharfStorage,
    user: Arc<FtpUser>,
    store: Store,
    name: String,
}

impl Files {
    /// The files of `user`, whose home is prepared (made, and given to the
    /// user's own uid) as for standard FTP.
    pub(crate) async fn open(server: &SshServer, user: &User) -> Result<Files, String> {
        let principal = Principal {
            username: user.name.clone(),
        };
        let ftp_user = server
            .users
            .provide_user_detail(&principal)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Files {
            storage: server.storage.clone(),
            user: Arc::new(ftp_user.through("sftp")),
            store: server.auth.store().clone(),
            name: user.name.clone(),
        })
    }
}

/// An open handle.
enum Open {
    /// A directory being listed: what is left to send, once read.
    Dir {
        path: PathBuf,
        left: Option<Vec<File>>,
    },
    /// A file being read: where the reader is.
    Read {
        path: PathBuf,
        at: u64,
        reader: Option<Box<dyn AsyncRead + Send + Sync + Unpin>>,
    },
    /// A file being written: the upload runs in a task of its own, fed in
    /// order through a queue.
    Write(Upload),
}

struct Upload {
    path: PathBuf,
    /// Whether the file is written from its start (`TRUNCATE`): no write
    /// may then start elsewhere.
    fresh: bool,
    /// The next offset a write must come at; `None` before the first.
    next: Option<u64>,
    queue: Option<mpsc::Sender<std::io::Result<Bytes>>>,
    task: Option<JoinHandle<Result<u64, StorageError>>>,
    /// The upload's end, when it ended early: said to every later write.
    failed: Option<Refused>,
    /// The first writes, kept while they add up to a small file
    /// ([`SMALL_UPLOAD`]): stored whole at the close, in the session's own
    /// task, or handed to the upload's task once they grow past it.
    pending: Vec<u8>,
    /// The client asked for the file on disk (`fsync@openssh.com`): it is
    /// synced before the close is answered. Without it, as with OpenSSH,
    /// the close answers once the file has taken its name (whole, by a
    /// rename), and the kernel writes it back in its own time.
    durable: Arc<AtomicBool>,
}

impl Upload {
    fn new(path: PathBuf, fresh: bool, next: Option<u64>) -> Upload {
        Upload {
            path,
            fresh,
            next,
            queue: None,
            task: None,
            failed: None,
            pending: Vec::new(),
            durable: Arc::default(),
        }
    }

    /// Where the writes kept in hand start in the file (0 before any):
    /// they end where the next write must come.
    fn pending_from(&self) -> u64 {
        self.next
            .map_or(0, |next| next.saturating_sub(self.pending.len() as u64))
    }
}

/// A refusal as SFTP says it.
#[derive(Debug, Clone)]
struct Refused {
    code: StatusCode,
    words: String,
}

impl Refused {
    fn new(code: StatusCode, words: impl Into<String>) -> Refused {
        Refused {
            code,
            words: words.into(),
        }
    }
}

/// Wharf's words for a storage failure, with the code nearest its kind.
fn refused(e: &StorageError) -> Refused {
    use std::error::Error as _;
    let words = e
        .source()
        .map(|s| s.to_string())
        .unwrap_or_else(|| e.to_string());
    let code = match e.kind() {
        ErrorKind::PermanentFileNotAvailable | ErrorKind::PermanentDirectoryNotAvailable
            if words.contains("no such") || words.contains("not found") =>
        {
            StatusCode::NoSuchFile
        }
        ErrorKind::FileNameNotAllowedError | ErrorKind::PermissionDenied => {
            StatusCode::PermissionDenied
        }
        _ => StatusCode::Failure,
    };
    Refused { code, words }
}

/// One SFTP session.
struct Session {
    files: Files,
    handles: HashMap<String, Open>,
    next_handle: u64,
    version_said: bool,
}

/// Answers written ahead of the client's reading: more than the 64
/// requests OpenSSH's sftp keeps in flight.
const ANSWERS_AHEAD: usize = 128;

/// What the writer sends: an answer, or a line for the client's stderr.
enum Out {
    Answer(Bytes),
    Note(String),
}

/// Serves SFTP on `stream` (the channel) until the client goes. Uploads
/// left open are cut, their partials kept for a resume.
///
/// Answers are written apart from the reading: a write waits for the
/// client's window, and the window's adjustments arrive behind the
/// requests, which must go on being read meanwhile (read and write in one
/// loop stall a pipelined download for good).
pub(crate) async fn serve<S, N>(stream: S, notes: N, files: Files)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    N: AsyncWrite + Unpin + Send + 'static,
{
    let (read, write) = tokio::io::split(stream);
    let read = BufReader::with_capacity(MAX_PACKET as usize, read);
    let (answers, queue) = mpsc::channel::<Out>(ANSWERS_AHEAD);
    let writer = write_answers(queue, write, notes);
    let reader = read_requests(read, answers, files);
    // One task, both halves polled together: an answer handed over wakes
    // this task, not another thread.
    tokio::join!(reader, writer);
}

/// Reads the requests and answers each, in order, until the client goes
/// (or a request no client sends); then cuts the uploads left open.
async fn read_requests<R: AsyncRead + Unpin>(
    mut read: BufReader<R>,
    answers: mpsc::Sender<Out>,
    files: Files,
) {
    let name = files.name.clone();
    let mut session = Session {
        files,
        handles: HashMap::new(),
        next_handle: 0,
        version_said: false,
    };
    let mut last_note = String::new();
    while let Ok(len) = read.read_u32().await {
        if len == 0 || len > MAX_PACKET {
            tracing::info!(user = %name, len, via = "sftp", "request of a size no client sends; closing");
            break;
        }
        let mut body = vec![0u8; len as usize];
        if read.read_exact(&mut body).await.is_err() {
            break;
        }
        let mut body = Bytes::from(body);
        let reply = match Packet::try_from(&mut body) {
            Ok(request) => session.answer(request).await,
            Err(e) => {
                tracing::info!(user = %name, error = %e, via = "sftp", "a request that does not parse");
                status(0, StatusCode::BadMessage, "the request does not parse")
            }
        };
        // OpenSSH's sftp and scp show a refusal's code only ("Failure"):
        // its words go to the channel's standard error, which they print.
        // Once each, not per write of a pipelined upload.
        if let Packet::Status(st) = &reply
            && matches!(
                st.status_code,
                StatusCode::Failure | StatusCode::PermissionDenied | StatusCode::OpUnsupported
            )
            && st.error_message != last_note
        {
            last_note.clone_from(&st.error_message);
            if answers
                .send(Out::Note(st.error_message.clone()))
                .await
                .is_err()
            {
                break;
            }
        }
        let bytes = match Bytes::try_from(reply) {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::error!(user = %name, error = %e, via = "sftp", "cannot encode an answer");
                break;
            }
        };
        if answers.send(Out::Answer(bytes)).await.is_err() {
            break;
        }
    }
    session.cut().await;
}

/// Writes the answers in order, together while more are queued (a client
/// pipelines its reads and writes), at once otherwise.
async fn write_answers<W, N>(mut queue: mpsc::Receiver<Out>, mut write: W, mut notes: N)
where
    W: AsyncWrite + Unpin,
    N: AsyncWrite + Unpin,
{
    let mut out: Vec<u8> = Vec::with_capacity(MAX_PACKET as usize);
    while let Some(next) = queue.recv().await {
        match next {
            Out::Answer(bytes) => out.extend_from_slice(&bytes),
            Out::Note(words) => {
                let line = format!("wharf: {words}\n");
                if notes.write_all(line.as_bytes()).await.is_err() || notes.flush().await.is_err() {
                    break;
                }
            }
        }
        if (queue.is_empty() || out.len() >= MAX_PACKET as usize) && !out.is_empty() {
            if write.write_all(&out).await.is_err() || write.flush().await.is_err() {
                break;
            }
            out.clear();
        }
    }
    let _ = write.shutdown().await;
}

fn status(id: u32, code: StatusCode, words: &str) -> Packet {
    Packet::Status(Status {
        id,
        status_code: code,
        error_message: words.to_owned(),
        language_tag: "en".to_owned(),
    })
}

fn ok(id: u32) -> Packet {
    status(id, StatusCode::Ok, "ok")
}

fn refusal(id: u32, r: Refused) -> Packet {
    status(id, r.code, &r.words)
}

impl Session {
    async fn answer(&mut self, request: Packet) -> Packet {
        let id = request.get_request_id();
        match self.dispatch(request).await {
            Ok(packet) => packet,
            Err(r) => refusal(id, r),
        }
    }

    async fn dispatch(&mut self, request: Packet) -> Result<Packet, Refused> {
        if !self.version_said && !matches!(request, Packet::Init(_)) {
            return Err(Refused::new(StatusCode::BadMessage, "say init first"));
        }
        match request {
            Packet::Init(_) => {
                self.version_said = true;
                let mut version = Version::new();
                for (name, v) in [
                    ("posix-rename@openssh.com", "1"),
                    ("statvfs@openssh.com", "2"),
                    ("fsync@openssh.com", "1"),
                    ("limits@openssh.com", "1"),
                ] {
                    version.extensions.insert(name.to_owned(), v.to_owned());
                }
                Ok(Packet::Version(version))
            }
            Packet::RealPath(r) => {
                let v = VPath::root()
                    .resolve(&r.path, AboveRoot::Clamp)
                    .map_err(|e| Refused::new(StatusCode::NoSuchFile, e.reply().message))?;
                let shown = v.to_string();
                Ok(Packet::Name(Name {
                    id: r.id,
                    files: vec![File {
                        filename: shown.clone(),
                        longname: shown,
                        attrs: FileAttributes::empty(),
                    }],
                }))
            }
            Packet::Stat(s) => self.attrs(s.id, &s.path).await,
            Packet::Lstat(s) => self.attrs(s.id, &s.path).await,
            Packet::Fstat(f) => {
                let path = self.path_of(&f.handle)?;
                self.attrs_at(f.id, path).await
            }
            Packet::OpenDir(o) => {
                let path = self.vpath(&o.path)?;
                let meta = self.metadata(&path).await?;
                if !meta.is_dir() {
                    return Err(Refused::new(
                        StatusCode::Failure,
                        format!("{} is not a folder", o.path),
                    ));
                }
                self.hold(o.id, Open::Dir { path, left: None })
            }
            Packet::ReadDir(r) => self.read_dir(r.id, &r.handle).await,
            Packet::Open(o) => self.open(o.id, &o.filename, o.pflags).await,
            Packet::Read(r) => self.read(r.id, &r.handle, r.offset, r.len).await,
            Packet::Write(w) => self.write(w.id, &w.handle, w.offset, w.data).await,
            Packet::Close(c) => self.close(c.id, &c.handle).await,
            Packet::Remove(r) => {
                let path = self.vpath(&r.filename)?;
                self.files
                    .storage
                    .del(&*self.files.user, path)
                    .await
                    .map_err(|e| refused(&e))?;
                Ok(ok(r.id))
            }
            Packet::MkDir(m) => {
                let path = self.vpath(&m.path)?;
                self.files
                    .storage
                    .mkd(&*self.files.user, path)
                    .await
                    .map_err(|e| refused(&e))?;
                Ok(ok(m.id))
            }
            Packet::RmDir(r) => {
                let path = self.vpath(&r.path)?;
                self.files
                    .storage
                    .rmd(&*self.files.user, path)
                    .await
                    .map_err(|e| refused(&e))?;
                Ok(ok(r.id))
            }
            Packet::Rename(r) => {
                // SFTP v3: a rename onto an existing name fails (the
                // posix-rename extension replaces it).
                let to = self.vpath(&r.newpath)?;
                if self.metadata(&to).await.is_ok() {
                    return Err(Refused::new(
                        StatusCode::Failure,
                        format!("{} exists already; remove it first", r.newpath),
                    ));
                }
                self.rename(&r.oldpath, to).await?;
                Ok(ok(r.id))
            }
            Packet::SetStat(s) => {
                let path = self.vpath(&s.path)?;
                let size = self.metadata(&path).await?.len();
                set_stat(&s.attrs, size)?;
                Ok(ok(s.id))
            }
            Packet::FSetStat(s) => {
                // An upload's size is what it wrote so far.
                let size = match self.handles.get(&s.handle) {
                    Some(Open::Write(up)) => up.next.unwrap_or(0),
                    Some(_) => {
                        let path = self.path_of(&s.handle)?;
                        self.metadata(&path).await?.len()
                    }
                    None => return Err(no_handle()),
                };
                set_stat(&s.attrs, size)?;
                Ok(ok(s.id))
            }
            Packet::ReadLink(_) | Packet::Symlink(_) => Err(Refused::new(
                StatusCode::OpUnsupported,
                "links are neither made nor followed here",
            )),
            Packet::Extended(e) => self.extended(e.id, &e.request, &e.data).await,
            _ => Err(Refused::new(StatusCode::BadMessage, "not a request")),
        }
    }

    /// A client path as a path beneath the home: relative ones from the
    /// home's top, `..` past it refused.
    fn vpath(&self, given: &str) -> Result<PathBuf, Refused> {
        let v = VPath::root()
            .resolve(given, AboveRoot::Refuse)
            .map_err(|e| Refused::new(StatusCode::PermissionDenied, e.reply().message))?;
        Ok(PathBuf::from(v.to_string()))
    }

    async fn metadata(&self, path: &PathBuf) -> Result<wharf_ftpd::server::stdftp::Meta, Refused> {
        self.files
            .storage
            .metadata(&*self.files.user, path)
            .await
            .map_err(|e| refused(&e))
    }

    async fn attrs(&mut self, id: u32, given: &str) -> Result<Packet, Refused> {
        let path = self.vpath(given)?;
        self.attrs_at(id, path).await
    }

    async fn attrs_at(&self, id: u32, path: PathBuf) -> Result<Packet, Refused> {
        let meta = self.metadata(&path).await?;
        Ok(Packet::Attrs(russh_sftp::protocol::Attrs {
            id,
            attrs: attributes_of(&meta),
        }))
    }

    fn hold(&mut self, id: u32, open: Open) -> Result<Packet, Refused> {
        if self.handles.len() >= MAX_HANDLES {
            return Err(Refused::new(
                StatusCode::Failure,
                format!(
                    "{MAX_HANDLES} files are open already, the most a session may hold; close some"
                ),
            ));
        }
        self.next_handle += 1;
        let handle = self.next_handle.to_string();
        self.handles.insert(handle.clone(), open);
        Ok(Packet::Handle(Handle { id, handle }))
    }

    fn path_of(&self, handle: &str) -> Result<PathBuf, Refused> {
        match self.handles.get(handle) {
            Some(Open::Dir { path, .. } | Open::Read { path, .. }) => Ok(path.clone()),
            Some(Open::Write(up)) => Ok(up.path.clone()),
            None => Err(no_handle()),
        }
    }

    async fn read_dir(&mut self, id: u32, handle: &str) -> Result<Packet, Refused> {
        let owner = self.files.name.clone();
        let (path, left) = match self.handles.get_mut(handle) {
            Some(Open::Dir { path, left }) => (path.clone(), left),
            Some(_) => {
                return Err(Refused::new(
                    StatusCode::Failure,
                    "that handle is a file, not a folder",
                ));
            }
            None => return Err(no_handle()),
        };
        if left.is_none() {
            let listed = self
                .files
                .storage
                .list(&*self.files.user, &path)
                .await
                .map_err(|e| refused(&e))?;
            let mut entries: Vec<File> = listed
                .iter()
                .filter_map(|f| {
                    let name = f.path.file_name()?.to_str()?.to_owned();
                    Some(File {
                        longname: long_name(&name, &f.metadata, &owner),
                        attrs: attributes_of(&f.metadata),
                        filename: name,
                    })
                })
                .collect();
            entries.sort_by(|a, b| a.filename.cmp(&b.filename));
            // Last first: batches are taken from the end.
            entries.reverse();
            *left = Some(entries);
        }
        let Some(rest) = left.as_mut() else {
            return Err(no_handle());
        };
        if rest.is_empty() {
            return Ok(status(id, StatusCode::Eof, "end of the folder"));
        }
        let take = rest.len().min(LISTING_BATCH);
        let mut files = rest.split_off(rest.len() - take);
        files.reverse();
        Ok(Packet::Name(Name { id, files }))
    }

    async fn open(&mut self, id: u32, given: &str, flags: OpenFlags) -> Result<Packet, Refused> {
        let path = self.vpath(given)?;
        let writing = flags.intersects(OpenFlags::WRITE | OpenFlags::APPEND);
        if flags.contains(OpenFlags::READ) && writing {
            return Err(Refused::new(
                StatusCode::OpUnsupported,
                "open a file for reading or for writing, not both",
            ));
        }
        if !writing {
            let meta = self.metadata(&path).await?;
            if meta.is_dir() {
                return Err(Refused::new(
                    StatusCode::Failure,
                    format!("{given} is a folder"),
                ));
            }
            return self.hold(
                id,
                Open::Read {
                    path,
                    at: 0,
                    reader: None,
                },
            );
        }
        // A plain create-or-replace (what `put` sends) needs no look
        // first: the upload itself refuses a folder of that name, at its
        // first write or its close, before anything is stored.
        let replace = OpenFlags::CREATE | OpenFlags::TRUNCATE;
        if flags.contains(replace) && !flags.intersects(OpenFlags::EXCLUDE | OpenFlags::APPEND) {
            return self.hold(id, Open::Write(Upload::new(path, true, None)));
        }
        let exists = self
            .files
            .storage
            .lookup(&self.files.user, &path)
            .await
            .map_err(|e| refused(&e))?;
        if exists.as_ref().is_some_and(|m| m.is_dir()) {
            return Err(Refused::new(
                StatusCode::Failure,
                format!("{given} is a folder"),
            ));
        }
        if exists.is_some() && flags.contains(OpenFlags::CREATE | OpenFlags::EXCLUDE) {
            return Err(Refused::new(
                StatusCode::Failure,
                format!("{given} exists already"),
            ));
        }
        if exists.is_none() && !flags.contains(OpenFlags::CREATE) {
            return Err(Refused::new(
                StatusCode::NoSuchFile,
                format!("no file {given}"),
            ));
        }
        let fresh = flags.contains(OpenFlags::TRUNCATE) || exists.is_none();
        let next = if flags.contains(OpenFlags::APPEND) {
            Some(exists.as_ref().map_or(0, |m| m.len()))
        } else {
            None
        };
        self.hold(id, Open::Write(Upload::new(path, fresh, next)))
    }

    async fn read(
        &mut self,
        id: u32,
        handle: &str,
        offset: u64,
        len: u32,
    ) -> Result<Packet, Refused> {
        let storage = self.files.storage.clone();
        let user = Arc::clone(&self.files.user);
        let Some(Open::Read { path, at, reader }) = self.handles.get_mut(handle) else {
            return Err(no_handle());
        };
        if reader.is_none() || *at != offset {
            *reader = Some(
                storage
                    .get(&*user, path.clone(), offset)
                    .await
                    .map_err(|e| refused(&e))?,
            );
            *at = offset;
        }
        let Some(source) = reader.as_mut() else {
            return Err(no_handle());
        };
        let want = len.min(MAX_DATA) as usize;
        let mut data = vec![0u8; want];
        let mut got = 0;
        while got < want {
            match source.read(&mut data[got..]).await {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) => {
                    *reader = None;
                    return Err(Refused::new(
                        StatusCode::Failure,
                        format!("cannot read the file: {e}"),
                    ));
                }
            }
        }
        if got == 0 {
            return Ok(status(id, StatusCode::Eof, "end of the file"));
        }
        data.truncate(got);
        *at += got as u64;
        Ok(Packet::Data(Data { id, data }))
    }

    async fn write(
        &mut self,
        id: u32,
        handle: &str,
        offset: u64,
        data: Vec<u8>,
    ) -> Result<Packet, Refused> {
        let storage = self.files.storage.clone();
        let user = Arc::clone(&self.files.user);
        let Some(Open::Write(up)) = self.handles.get_mut(handle) else {
            return Err(no_handle());
        };
        if let Some(r) = &up.failed {
            return Err(r.clone());
        }
        if data.len() > MAX_DATA as usize {
            return Err(Refused::new(
                StatusCode::Failure,
                "a write of more than 256 KiB",
            ));
        }
        match up.next {
            Some(next) if next != offset => {
                return Err(Refused::new(
                    StatusCode::OpUnsupported,
                    format!("writes must come in order: the next is at {next}, not {offset}"),
                ));
            }
            None if up.fresh && offset != 0 => {
                return Err(Refused::new(
                    StatusCode::OpUnsupported,
                    "a new file is written from its start",
                ));
            }
            _ => {}
        }
        let len = data.len() as u64;
        if up.queue.is_none() {
            if up.pending.len() + data.len() <= SMALL_UPLOAD {
                // The first write says where the upload starts: 0, or the
                // end of what a cut upload or the file holds (a resume).
                up.pending.extend_from_slice(&data);
                up.next = Some(offset + len);
                return Ok(ok(id));
            }
            // What is kept ends at this write's offset.
            let start = offset - up.pending.len() as u64;
            start_stream(up, storage, user, start);
        }
        let sent = match &up.queue {
            Some(tx) => {
                let mut sent = true;
                if !up.pending.is_empty() {
                    let kept = Bytes::from(std::mem::take(&mut up.pending));
                    sent = tx.send(Ok(kept)).await.is_ok();
                }
                sent && tx.send(Ok(Bytes::from(data))).await.is_ok()
            }
            None => false,
        };
        if !sent {
            // The upload ended early: over the quota, most often.
            let why = finish(up)
                .await
                .err()
                .unwrap_or_else(|| Refused::new(StatusCode::Failure, "the upload ended early"));
            up.failed = Some(why.clone());
            return Err(why);
        }
        up.next = Some(offset + len);
        Ok(ok(id))
    }

    async fn close(&mut self, id: u32, handle: &str) -> Result<Packet, Refused> {
        match self.handles.remove(handle) {
            Some(Open::Write(mut up)) => {
                if let Some(r) = up.failed.take() {
                    return Err(r);
                }
                if up.queue.is_none() && (up.fresh || !up.pending.is_empty()) {
                    // A small file in hand (or, opened and closed without
                    // a write, an empty one): stored whole, here.
                    let start = up.pending_from();
                    let data = std::io::Cursor::new(std::mem::take(&mut up.pending));
                    let durable = Durable::OnRequest(Arc::clone(&up.durable));
                    self.files
                        .storage
                        .put_with(&self.files.user, data, up.path.clone(), start, durable)
                        .await
                        .map_err(|e| refused(&e))?;
                    return Ok(ok(id));
                }
                finish(&mut up).await?;
                Ok(ok(id))
            }
            Some(_) => Ok(ok(id)),
            None => Err(no_handle()),
        }
    }

    async fn rename(&mut self, from: &str, to: PathBuf) -> Result<(), Refused> {
        let from = self.vpath(from)?;
        self.files
            .storage
            .rename(&*self.files.user, from, to)
            .await
            .map_err(|e| refused(&e))
    }

    async fn extended(&mut self, id: u32, request: &str, data: &[u8]) -> Result<Packet, Refused> {
        match request {
            "posix-rename@openssh.com" => {
                let mut rest = data;
                let (from, to) = (ssh_string(&mut rest)?, ssh_string(&mut rest)?);
                let to = self.vpath(&to)?;
                self.rename(&from, to).await?;
                Ok(ok(id))
            }
            "fsync@openssh.com" => {
                // An upload is a partial until its close, which makes it
                // visible: asked here, the close syncs it first (data and
                // folder) and answers only then. A file open for reading
                // has nothing of the client's to sync.
                let mut rest = data;
                let handle = ssh_string(&mut rest)?;
                match self.handles.get(&handle) {
                    Some(Open::Write(up)) => up.durable.store(true, Ordering::Release),
                    Some(_) => {}
                    None => return Err(no_handle()),
                }
                Ok(ok(id))
            }
            "statvfs@openssh.com" => {
                let user = self
                    .files
                    .store
                    .require_user(&self.files.name)
                    .await
                    .map_err(|e| Refused::new(StatusCode::Failure, e.client_message()))?;
                Ok(Packet::ExtendedReply(ExtendedReply {
                    id,
                    data: attrs::statvfs(&user),
                }))
            }
            "limits@openssh.com" => {
                let mut reply = Vec::with_capacity(32);
                for n in [
                    u64::from(MAX_PACKET),
                    u64::from(MAX_DATA),
                    u64::from(MAX_DATA),
                    MAX_HANDLES as u64,
                ] {
                    reply.extend_from_slice(&n.to_be_bytes());
                }
                Ok(Packet::ExtendedReply(ExtendedReply { id, data: reply }))
            }
            "hardlink@openssh.com" => Err(Refused::new(
                StatusCode::OpUnsupported,
                "links are neither made nor followed here",
            )),
            other => Err(Refused::new(
                StatusCode::OpUnsupported,
                format!("{other} is not served here"),
            )),
        }
    }

    /// The session ended: uploads still open are cut (their partials kept,
    /// holding their quota, for a resume), as when a standard FTP data
    /// connection breaks.
    async fn cut(&mut self) {
        for (_, open) in self.handles.drain() {
            if let Open::Write(mut up) = open {
                if up.queue.is_none() && !up.pending.is_empty() {
                    // What arrived is kept for a resume, as a streamed
                    // upload's is.
                    let start = up.pending_from();
                    let (storage, user) =
                        (self.files.storage.clone(), Arc::clone(&self.files.user));
                    start_stream(&mut up, storage, user, start);
                    if let Some(tx) = &up.queue {
                        let kept = Bytes::from(std::mem::take(&mut up.pending));
                        let _ = tx.send(Ok(kept)).await;
                    }
                }
                if let Some(tx) = up.queue.take() {
                    let _ = tx
                        .send(Err(std::io::Error::new(
                            std::io::ErrorKind::ConnectionAborted,
                            "the SFTP session ended before the file was closed",
                        )))
                        .await;
                }
                if let Some(task) = up.task.take() {
                    let _ = task.await;
                }
            }
        }
    }
}

/// Starts `up`'s task, storing what is sent on its queue from `start` on.
fn start_stream(up: &mut Upload, storage: WharfStorage, user: Arc<FtpUser>, start: u64) {
    let (tx, rx) = mpsc::channel(WRITE_QUEUE);
    let path = up.path.clone();
    let durable = Durable::OnRequest(Arc::clone(&up.durable));
    up.task = Some(tokio::spawn(async move {
        storage
            .put_with(&user, Incoming::new(rx), path, start, durable)
            .await
    }));
    up.queue = Some(tx);
}

/// Ends an upload's input and waits for it to be made visible (or not).
async fn finish(up: &mut Upload) -> Result<u64, Refused> {
    up.queue = None;
    let Some(task) = up.task.take() else {
        return Ok(0);
    };
    match task.await {
        Ok(Ok(n)) => Ok(n),
        Ok(Err(e)) => Err(refused(&e)),
        Err(e) => Err(Refused::new(
            StatusCode::Failure,
            format!("the upload failed: {e}"),
        )),
    }
}

fn no_handle() -> Refused {
    Refused::new(
        StatusCode::Failure,
        "no such handle (closed, or never opened)",
    )
}

/// `setstat`: what a client may ask of a file's attributes. Modes and
/// times are taken and left as Wharf keeps them (files readable by their
/// user alone, dated by their upload), as scp and `put -p` ask them after
/// every upload; an owner is refused, and a size but the one the file has
/// (scp sets it after every upload).
fn set_stat(attrs: &FileAttributes, size: u64) -> Result<(), Refused> {
    if attrs.uid.is_some() || attrs.gid.is_some() {
        return Err(Refused::new(
            StatusCode::PermissionDenied,
            "a file's owner is its user; it cannot be given to another",
        ));
    }
    if attrs.size.is_some_and(|asked| asked != size) {
        return Err(Refused::new(
            StatusCode::OpUnsupported,
            "a file's size changes only by an upload; upload it again",
        ));
    }
    Ok(())
}

/// Reads an SSH string (a 32-bit length, then the bytes) off `data`.
fn ssh_string(data: &mut &[u8]) -> Result<String, Refused> {
    let bad = || Refused::new(StatusCode::BadMessage, "a malformed extension request");
    let (len, rest) = data.split_first_chunk::<4>().ok_or_else(bad)?;
    let len = u32::from_be_bytes(*len) as usize;
    if rest.len() < len {
        return Err(bad());
    }
    let (text, rest) = rest.split_at(len);
    *data = rest;
    String::from_utf8(text.to_vec()).map_err(|_| bad())
}
