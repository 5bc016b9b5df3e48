//! Chat messages reach the database in batches, off the fan-out path: the
//! hub queues a record, one writer task inserts whatever has queued up in one
//! transaction. `flush` waits until everything queued before it is written,
//! so `history` reads its own writes.

use tokio::sync::{mpsc, oneshot};
use wharf_store::Store;
use wharf_store::db::ChatRecord;

/// Most records written in one transaction.
const BATCH: usize = 1000;

enum Cmd {
    Record(ChatRecord),
    Flush(oneshot::Sender<()>),
}

/// The queue in front of the writer task.
#[derive(Debug, Clone)]
pub(crate) struct Journal {
    tx: mpsc::Sender<Cmd>,
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cmd::Record(r) => write!(f, "Record({})", r.id),
            Cmd::Flush(_) => f.write_str("Flush"),
        }
    }
}

impl Journal {
    /// Starts the writer task; it ends once every `Journal` is dropped and
    /// the queue is written out.
    pub(crate) fn start(store: Store, capacity: usize) -> (Journal, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let task = tokio::spawn(write_forever(store, rx));
        (Journal { tx }, task)
    }

    /// Queues a record without waiting; `false` when the queue is full (the
    /// database is not keeping up).
    pub(crate) fn try_record(&self, record: ChatRecord) -> bool {
        self.tx.try_send(Cmd::Record(record)).is_ok()
    }

    /// Waits until everything queued so far is in the database.
    pub(crate) async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Cmd::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

async fn write_forever(store: Store, mut rx: mpsc::Receiver<Cmd>) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut waiting = Vec::new();
    while let Some(cmd) = rx.recv().await {
        let mut next = Some(cmd);
        while let Some(cmd) = next.take() {
            match cmd {
                Cmd::Record(r) => batch.push(r),
                Cmd::Flush(done) => waiting.push(done),
            }
            if batch.len() < BATCH {
                next = rx.try_recv().ok();
            }
        }
        write(&store, &mut batch).await;
        for done in waiting.drain(..) {
            let _ = done.send(());
        }
    }
}

async fn write(store: &Store, batch: &mut Vec<ChatRecord>) {
    if batch.is_empty() {
        return;
    }
    if let Err(e) = store.record_chat_messages(batch).await {
        // One bad row must not lose the others: write them one by one.
        tracing::warn!(error = %e, count = batch.len(), "writing a batch of chat messages failed; retrying one by one");
        for r in batch.iter() {
            if let Err(e) = store.record_chat_messages(std::slice::from_ref(r)).await {
                tracing::error!(error = %e, id = r.id, "chat message not saved to history");
            }
        }
    }
    batch.clear();
}
