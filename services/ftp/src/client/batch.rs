//! Many uploads on one connection (`mput`, `put -r`): small files are sent
//! at once and pipelined, several in flight, while a reader thread loads
//! and hashes the next ones; the server makes them durable in batches and
//! answers each in order. Large files go one at a time, resumable, as
//! `put` sends them.

use std::collections::VecDeque;
use std::path::PathBuf;

use tokio::sync::mpsc;

use super::transfer::{Pace, SMALL_PUT, open_file, put_answer, read_whole};
use super::{Client, ClientError, Progress, Result, TransferOptions, Transferred};

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

/// A job as the reader thread prepared it.
enum Loaded {
    /// Read whole, with its md5.
    Small(bytes::Bytes, String),
    /// Too big to send at once: opened, with its size.
    Large(std::fs::File, u64),
    /// Could not be read.
    Failed(ClientError),
}

/// Reads the jobs in order, small files whole, on a blocking thread.
fn load(jobs: Vec<PutJob>, tx: mpsc::Sender<(PutJob, Loaded)>) {
    for job in jobs {
        let loaded = match open_file(&job.local) {
            Ok((file, size)) if size <= SMALL_PUT => match read_whole(file, size, &job.local) {
                Ok((body, md5)) => Loaded::Small(body, md5),
                Err(e) => Loaded::Failed(e),
            },
            Ok((file, size)) => Loaded::Large(file, size),
            Err(e) => Loaded::Failed(e),
        };
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

/// Whether an error leaves the connection usable for the next file.
fn connection_lost(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Closed
            | ClientError::Interrupted(_)
            | ClientError::Protocol(_)
            | ClientError::Unexpected(_)
    )
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
        let (tx, mut rx) = mpsc::channel(WINDOW);
        let reader = tokio::task::spawn_blocking(move || load(jobs, tx));
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
                    let Some((job, md5)) = in_flight.pop_front() else { continue };
                    match put_answer(reply, md5, 0) {
                        Ok(t) => done(job, Ok(t)),
                        Err(e) if connection_lost(&e) => break Err(e),
                        Err(e) => done(job, Err(e)),
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
        loaded: Loaded,
        in_flight: &mut VecDeque<(PutJob, String)>,
        opts: TransferOptions,
        progress: &mut dyn Progress,
        done: &mut (dyn FnMut(PutJob, Result<Transferred>) + Send),
        pace: &mut Pace,
        rx: &mut mpsc::Receiver<(PutJob, Loaded)>,
    ) -> Result<()> {
        let mut next = Some((job, loaded));
        while let Some((job, loaded)) = next.take() {
            match loaded {
                Loaded::Failed(e) => done(job, Err(e)),
                Loaded::Small(body, md5) => {
                    let size = body.len() as u64;
                    self.feed_at_once(&job.remote, body, &md5).await?;
                    in_flight.push_back((job, md5));
                    progress.advance(size);
                    pace.step(usize::try_from(size).unwrap_or(usize::MAX)).await;
                }
                Loaded::Large(file, size) => {
                    self.flush().await?;
                    while let Some((job, md5)) = in_flight.pop_front() {
                        let reply = self.recv_header().await;
                        match put_answer(reply, md5, 0) {
                            Ok(t) => done(job, Ok(t)),
                            Err(e) if connection_lost(&e) => return Err(e),
                            Err(e) => done(job, Err(e)),
                        }
                    }
                    let local = job.local.clone();
                    let result = self
                        .put_file(file, size, &local, &job.remote, opts, &mut Within(progress))
                        .await;
                    match result {
                        Err(e) if connection_lost(&e) => return Err(e),
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
