//! Many uploads on one connection (`mput`, `put -r`): small files are sent
//! at once and pipelined, several in flight, while a reader thread loads
//! and hashes the next ones; the server makes them durable in batches and
//! answers each in order. Large files go one at a time, resumable, as
//! `put` sends them.

use std::collections::VecDeque;
use std::path::PathBuf;

use tokio::sync::mpsc;

use super::transfer::{Pace, SMALL_PUT, open_file, put_answer, read_whole};
use super::{Client, Progress, Result, TransferOptions, Transferred};

/// Most small uploads sent and not yet answered: two of the server's
/// batches, so one is sent while the other is committed.
const WINDOW: usize = 128;

/// One file of [`Client::put_all`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutJob {
    /// Local file.
    pub local: PathBuf,
    /// Remote path.
    pub remote: String,
}

/// A file to upload, as [`load`] prepared it.
pub(super) enum Loaded {
    /// Read whole, with its md5.
    Small(bytes::Bytes, String),
    /// Too big to send at once: opened, with its size.
    Large(std::fs::File, u64),
}

/// Files loaded ahead of the connection (small ones are held whole).
const LOAD_AHEAD: usize = 16;

/// Opens a file to upload and, when it is small enough to send at once,
/// reads it whole and hashes it.
pub(super) fn load(local: &std::path::Path) -> Result<Loaded> {
    let (file, size) = open_file(local)?;
    if size > SMALL_PUT {
        return Ok(Loaded::Large(file, size));
    }
    let (body, md5) = read_whole(file, size, local)?;
    Ok(Loaded::Small(body, md5))
}

/// Loads the jobs in order, on a blocking thread.
fn load_all(jobs: Vec<PutJob>, tx: mpsc::Sender<(PutJob, Result<Loaded>)>) {
    for job in jobs {
        let loaded = load(&job.local);
        if tx.blocking_send((job, loaded)).is_err() {
            return;
        }
    }
}

/// A [`Progress`] for one file inside a batch: its bytes count towards the
/// batch's bar, which it neither starts nor ends.
pub struct Within<'a>(pub &'a mut dyn Progress);

impl Progress for Within<'_> {
    fn begin(&mut self, _: u64, resumed_at: u64) {
        self.0.advance(resumed_at);
    }
    fn advance(&mut self, bytes: u64) {
        self.0.advance(bytes);
    }
    fn note(&mut self, message: &str) {
        self.0.note(message);
    }
    fn finish(&mut self) {}
}

impl Client {
    /// Uploads `jobs` on this connection: small files pipelined (up to 128
    /// in flight, made durable by the server in batches), large ones one
    /// at a time and resumable. `done` hears each file's outcome as it is
    /// known; a `put_ok` arrives only for a file that is durable on the
    /// server. Returns an error only when the connection is lost: the files
    /// `done` did not hear of were not acknowledged (run the same command
    /// again: what arrived is replaced, large files resume). `progress`
    /// advances by the bytes of each file as it is sent; the caller begins
    /// and finishes it.
    pub async fn put_all(
        &mut self,
        jobs: Vec<PutJob>,
        opts: TransferOptions,
        progress: &mut dyn Progress,
        done: &mut (dyn FnMut(PutJob, Result<Transferred>) + Send),
    ) -> Result<()> {
        let (tx, mut rx) = mpsc::channel(LOAD_AHEAD);
        let reader = tokio::task::spawn_blocking(move || load_all(jobs, tx));
        let mut in_flight: VecDeque<(PutJob, String)> = VecDeque::new();
        let mut pace = Pace::new(opts.rate_limit);
        let mut loading = true;
        let outcome = loop {
            if !loading && in_flight.is_empty() {
                break Ok(());
            }
            tokio::select! {
                biased;
                reply = self.recv_header(), if !in_flight.is_empty() => {
                    if let Err(e) = answered(reply, &mut in_flight, done) {
                        break Err(e);
                    }
                }
                item = rx.recv(), if loading && in_flight.len() < WINDOW => {
                    let Some((job, loaded)) = item else {
                        loading = false;
                        continue;
                    };
                    match self.send_loaded(job, loaded, &mut in_flight, opts, progress, done, &mut pace, &mut rx).await {
                        Ok(()) => {}
                        Err(e) => break Err(e),
                    }
                }
            }
        };
        drop(rx);
        let _ = reader.await;
        outcome
    }

    /// Sends one loaded job, and as many more as are loaded and fit the
    /// window, then flushes; a large job first waits for every answer in
    /// flight, then goes alone.
    #[allow(clippy::too_many_arguments)]
    async fn send_loaded(
        &mut self,
        job: PutJob,
        loaded: Result<Loaded>,
        in_flight: &mut VecDeque<(PutJob, String)>,
        opts: TransferOptions,
        progress: &mut dyn Progress,
        done: &mut (dyn FnMut(PutJob, Result<Transferred>) + Send),
        pace: &mut Pace,
        rx: &mut mpsc::Receiver<(PutJob, Result<Loaded>)>,
    ) -> Result<()> {
        let mut next = Some((job, loaded));
        while let Some((job, loaded)) = next.take() {
            match loaded {
                Err(e) => done(job, Err(e)),
                Ok(Loaded::Small(body, md5)) => {
                    let size = body.len() as u64;
                    self.feed_at_once(&job.remote, body, &md5).await?;
                    in_flight.push_back((job, md5));
                    progress.advance(size);
                    pace.step(usize::try_from(size).unwrap_or(usize::MAX)).await;
                }
                Ok(Loaded::Large(file, size)) => {
                    self.flush().await?;
                    while !in_flight.is_empty() {
                        let reply = self.recv_header().await;
                        answered(reply, in_flight, done)?;
                    }
                    let local = job.local.clone();
                    let result = self
                        .put_file(file, size, &local, &job.remote, opts, &mut Within(progress))
                        .await;
                    match result {
                        Err(e) if e.is_connection_lost() => return Err(e),
                        result => done(job, result),
                    }
                }
            }
            if in_flight.len() < WINDOW {
                next = rx.try_recv().ok();
            }
        }
        self.flush().await
    }
}

/// Hands the answer `reply` to the oldest upload in flight to `done`; an
/// error only when the connection is lost.
fn answered(
    reply: Result<(wharf_proto::ftp::FtpReply, u64)>,
    in_flight: &mut VecDeque<(PutJob, String)>,
    done: &mut (dyn FnMut(PutJob, Result<Transferred>) + Send),
) -> Result<()> {
    let Some((job, md5)) = in_flight.pop_front() else {
        return Ok(());
    };
    match put_answer(reply, md5, 0) {
        Err(e) if e.is_connection_lost() => Err(e),
        result => {
            done(job, result);
            Ok(())
        }
    }
}
