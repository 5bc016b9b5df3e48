//! Records written behind the replies that made them: the transfer log,
//! the md5s of stored files, the command log, and an upload's commit of
//! its reservation. What a reply promises (the file in place, its bytes
//! held on the quota's books) is done before it; these records describe
//! it, or (a commit) move what is held from reserved to used, which
//! changes no sum a quota check adds up. Writing them one transaction per
//! upload or command cost more than the rest of a small upload. They are queued
//! in order and written together, one transaction per batch, by a writer
//! that runs while the queue is not empty.
//!
//! Every read of them through this [`Store`] (and [`Store::close`]) first
//! waits for the queue to be written, so a process reads what it wrote.
//! Another process (admin-cli) sees them a few milliseconds later. A
//! process killed outright loses what was still queued: records, and
//! commits, whose bytes stay held as reserved (stricter, never looser)
//! until the home is measured again (`admin-cli usage --rescan`) and the
//! books set from the disk.

use std::sync::Mutex;
use std::time::Duration;

use super::Store;
use super::digests::{FileVersion, forget, remember};
use super::quota::{Books, commit_books};
use super::usage::{ExecRecord, TransferRecord, insert_exec, insert_transfer, set_upload_md5};

/// Records queued at most; past it, a record is written before the reply
/// (the writer cannot keep up, and memory must stay bounded).
const MAX_QUEUED: usize = 10_000;

/// How long a read waits for the queue at most (a runtime shutting down
/// may never run the writer).
const SETTLE_LIMIT: Duration = Duration::from_secs(5);

/// One record to write.
#[derive(Debug)]
pub(super) enum Deferred {
    /// An upload's reservation turned into usage.
    Commit(Books),
    /// A transfer, ended at `at` (unix ms).
    Transfer(TransferRecord, i64),
    /// The md5 of a version of a file.
    Md5(i64, FileVersion, String),
    /// A file replaced or removed for good: its md5 goes.
    Forget(i64, u64, u64),
    /// The md5 of an upload hashed after it was stored, for its transfer.
    UploadMd5(i64, String, String),
    /// A command run, ended at `at`.
    Exec(ExecRecord, i64),
}

#[derive(Debug, Default)]
struct Queue {
    items: Vec<Deferred>,
    /// A writer runs (and will look at `items` again before it stops).
    writing: bool,
    /// Records queued so far, ever.
    queued: u64,
    /// Records written (or given up on) so far, ever: they were queued
    /// in order, so the first `done` of them are.
    done: u64,
    /// `queued` as it was just after the last commit of a reservation:
    /// once that many are written, the users' numbers are the books'.
    books: u64,
}

/// The queue, shared by every clone of a [`Store`].
#[derive(Debug, Default)]
pub(super) struct Behind {
    queue: Mutex<Queue>,
    /// Told when a batch is written.
    written: tokio::sync::Notify,
}

/// What became of records handed to the queue.
enum Enqueued {
    /// Queued; `start`: no writer runs, one must be started.
    Queued { start: bool },
    /// The queue is full (or unusable): they are to be written now.
    Full(Vec<Deferred>),
}

impl Behind {
    fn enqueue(&self, items: Vec<Deferred>) -> Enqueued {
        let Ok(mut queue) = self.queue.lock() else {
            return Enqueued::Full(items);
        };
        if queue.items.len() + items.len() > MAX_QUEUED {
            return Enqueued::Full(items);
        }
        for item in &items {
            queue.queued += 1;
            if matches!(item, Deferred::Commit(_)) {
                queue.books = queue.queued;
            }
        }
        queue.items.extend(items);
        Enqueued::Queued {
            start: !std::mem::replace(&mut queue.writing, true),
        }
    }

    /// What the writer writes next; `None` (the writer stops) once the
    /// queue is empty.
    fn next_batch(&self) -> Option<Vec<Deferred>> {
        let mut queue = self.queue.lock().ok()?;
        if queue.items.is_empty() {
            queue.writing = false;
            return None;
        }
        Some(std::mem::take(&mut queue.items))
    }

    /// `n` more records are written; waiting readers are told.
    fn written(&self, n: usize) {
        if let Ok(mut queue) = self.queue.lock() {
            queue.done += n as u64;
        }
        self.written.notify_waiters();
    }

    /// How many records were queued so far.
    fn queued(&self) -> u64 {
        self.queue.lock().map_or(0, |q| q.queued)
    }

    /// How many records must be written for every commit queued so far
    /// to be.
    fn books_queued(&self) -> u64 {
        self.queue.lock().map_or(0, |q| q.books)
    }

    /// Whether the first `n` records queued are written.
    fn has_written(&self, n: u64) -> bool {
        self.queue.lock().map_or(true, |q| q.done >= n)
    }
}

impl Store {
    /// Queues `items`, in order, to be written behind the reply; written
    /// now when the queue is full.
    pub(super) async fn defer(&self, items: Vec<Deferred>) {
        match self.behind.enqueue(items) {
            Enqueued::Queued { start: true } => {
                let store = self.clone();
                tokio::spawn(async move { store.write_behind().await });
            }
            Enqueued::Queued { start: false } => {}
            Enqueued::Full(items) => self.write_now(items).await,
        }
    }

    /// Writes `items` in one transaction; if that fails, one by one, so
    /// that one bad record (its user deleted meanwhile) loses only itself.
    async fn write_now(&self, items: Vec<Deferred>) {
        if items.len() > 1 && self.write_records(&items).await.is_ok() {
            return;
        }
        for item in items.chunks(1) {
            if let Err(e) = self.write_records(item).await {
                tracing::warn!(error = %e, record = ?item, "cannot write a record behind its reply (the transfer or command log, an md5, or an upload's quota commit, whose bytes then stay held: admin-cli usage --rescan settles them)");
            }
        }
    }

    /// The writer: batches until the queue is empty.
    async fn write_behind(&self) {
        while let Some(items) = self.behind.next_batch() {
            let n = items.len();
            self.write_now(items).await;
            self.behind.written(n);
        }
    }

    /// Waits until what was queued before this call is written (at most
    /// [`SETTLE_LIMIT`]); what is queued meanwhile is not waited for, so a
    /// steady stream of uploads never holds a reader up. Gives back what
    /// is held ahead for small uploads (see [`super::credit`]), so the
    /// quota's numbers read next are exact. Reads through this store do it
    /// themselves; call it before another connection or process reads
    /// what this one wrote.
    pub async fn settle(&self) {
        self.return_credit(false).await;
        self.settle_records().await;
    }

    /// [`Store::settle`] for reads of the users' numbers alone: waits for
    /// the commits of reservations queued before this call, not for the
    /// logs and md5s queued with them (a command's log line, written
    /// behind its reply, no longer holds up the next command's read of
    /// its user).
    pub(super) async fn settle_books(&self) {
        self.return_credit(false).await;
        self.wait_written(self.behind.books_queued()).await;
    }

    /// [`Store::settle`] for reads of the records only (not the quota's
    /// numbers): what is held ahead stays.
    pub(super) async fn settle_records(&self) {
        self.wait_written(self.behind.queued()).await;
    }

    /// Waits until the first `target` records queued are written (at
    /// most [`SETTLE_LIMIT`]).
    async fn wait_written(&self, target: u64) {
        let _ = tokio::time::timeout(SETTLE_LIMIT, async {
            loop {
                let written = self.behind.written.notified();
                tokio::pin!(written);
                written.as_mut().enable();
                if self.behind.has_written(target) {
                    return;
                }
                written.await;
            }
        })
        .await;
    }

    /// Writes `items` in one transaction.
    async fn write_records(&self, items: &[Deferred]) -> crate::error::Result<()> {
        let mut tx = self.pool.begin().await?;
        for item in items {
            match item {
                Deferred::Commit(books) => {
                    commit_books(books).execute(&mut *tx).await?;
                }
                Deferred::Transfer(t, at) => {
                    insert_transfer(t, *at).execute(&mut *tx).await?;
                }
                Deferred::Md5(user_id, version, md5) => {
                    remember(*user_id, version, md5).execute(&mut *tx).await?;
                }
                Deferred::Forget(user_id, dev, ino) => {
                    forget(*user_id, *dev, *ino).execute(&mut *tx).await?;
                }
                Deferred::UploadMd5(user_id, path, md5) => {
                    set_upload_md5(*user_id, path, md5)
                        .execute(&mut *tx)
                        .await?;
                }
                Deferred::Exec(e, at) => {
                    insert_exec(e, *at).execute(&mut *tx).await?;
                }
            }
        }
        tx.commit().await?;
        Ok(())
    }
}
