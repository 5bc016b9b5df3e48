//! A TCP session's queue of encoded frames, between the hub (and the
//! session itself) and the session's writer task.
//!
//! tokio's mpsc channel would do, but it allocates a block of 32 slots per
//! channel up front: over a kilobyte for each of 10,000 idle sessions. This
//! queue holds nothing while it is empty, and a queued frame is one pointer
//! ([`Frame`]): a message to a room is encoded once and its frame shared by
//! every member's queue. As `Bytes` (four words a slot), 500 members' queues
//! of 1,024 frames took 16 MiB; as a pointer, 4 MiB.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::Notify;

/// An encoded frame, shared by the queues it is in.
pub(crate) type Frame = Arc<Bytes>;

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The queue is at its capacity: the reader is slow.
    Full,
    /// The session is ending.
    Closed,
}

/// The sending side; cheap to clone. The queue closes when the last clone
/// is dropped (the writer then ends once it has written what is queued).
pub(crate) struct Outbox {
    inner: Arc<Inner>,
}

impl Clone for Outbox {
    fn clone(&self) -> Self {
        self.inner.senders.fetch_add(1, Ordering::AcqRel);
        Outbox {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        if self.inner.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.inner.closed.store(true, Ordering::Release);
            self.inner.filled.notify_one();
        }
    }
}

/// The writer's side.
pub(crate) struct Inbox {
    inner: Arc<Inner>,
}

struct Inner {
    queue: Mutex<VecDeque<Frame>>,
    capacity: usize,
    /// A frame was queued, or the queue closed.
    filled: Notify,
    /// Room was made.
    drained: Notify,
    /// Live [`Outbox`]es.
    senders: AtomicUsize,
    closed: AtomicBool,
}

impl Inner {
    fn queue(&self) -> MutexGuard<'_, VecDeque<Frame>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A queue of at most `capacity` frames.
pub(crate) fn outbox(capacity: usize) -> (Outbox, Inbox) {
    let inner = Arc::new(Inner {
        queue: Mutex::new(VecDeque::new()),
        capacity: capacity.max(1),
        filled: Notify::new(),
        drained: Notify::new(),
        senders: AtomicUsize::new(1),
        closed: AtomicBool::new(false),
    });
    (
        Outbox {
            inner: Arc::clone(&inner),
        },
        Inbox { inner },
    )
}

impl Outbox {
    /// Queues `frame` if there is room.
    pub(crate) fn try_send(&self, frame: Frame) -> Result<(), Refused> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Refused::Closed);
        }
        {
            let mut q = self.inner.queue();
            if q.len() >= self.inner.capacity {
                return Err(Refused::Full);
            }
            q.push_back(frame);
        }
        self.inner.filled.notify_one();
        Ok(())
    }

    /// Queues `frame`, waiting for room.
    pub(crate) async fn send(&self, frame: Frame) -> Result<(), Refused> {
        loop {
            let drained = self.inner.drained.notified();
            tokio::pin!(drained);
            // Registered before looking, so a drain in between is not missed.
            drained.as_mut().enable();
            match self.try_send(frame.clone()) {
                Err(Refused::Full) => drained.await,
                other => return other,
            }
        }
    }
}

impl Inbox {
    /// The next frame; `None` once the queue is closed and empty.
    pub(crate) async fn recv(&self) -> Option<Frame> {
        loop {
            let filled = self.inner.filled.notified();
            tokio::pin!(filled);
            filled.as_mut().enable();
            if let Some(frame) = self.try_recv() {
                return Some(frame);
            }
            if self.inner.closed.load(Ordering::Acquire) {
                return self.try_recv();
            }
            filled.await;
        }
    }

    /// The next frame, if one is queued.
    pub(crate) fn try_recv(&self) -> Option<Frame> {
        let frame = {
            let mut q = self.inner.queue();
            let frame = q.pop_front();
            if q.is_empty() && q.capacity() > 0 {
                // An idle session keeps no slots.
                q.shrink_to_fit();
            }
            frame
        };
        if frame.is_some() {
            self.inner.drained.notify_waiters();
        }
        frame
    }

    /// True when nothing is queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.inner.queue().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(bytes: &'static [u8]) -> Frame {
        Arc::new(Bytes::from_static(bytes))
    }

    #[tokio::test]
    async fn frames_arrive_in_order_a_full_queue_refuses_and_the_last_sender_ends_it_after_the_rest()
     {
        let (tx, rx) = outbox(2);
        assert_eq!(tx.try_send(frame(b"a")), Ok(()));
        assert_eq!(tx.try_send(frame(b"b")), Ok(()));
        assert_eq!(tx.try_send(frame(b"c")), Err(Refused::Full));
        // A waiting sender gets in once the writer takes one.
        let waiting = {
            let tx = tx.clone();
            tokio::spawn(async move { tx.send(frame(b"c")).await })
        };
        assert_eq!(rx.recv().await.as_deref().map(|f| &f[..]), Some(&b"a"[..]));
        assert_eq!(waiting.await.ok(), Some(Ok(())));
        let other = tx.clone();
        drop(tx);
        assert_eq!(rx.recv().await.as_deref().map(|f| &f[..]), Some(&b"b"[..]));
        assert_eq!(other.try_send(frame(b"d")), Ok(()));
        drop(other);
        assert_eq!(rx.recv().await.as_deref().map(|f| &f[..]), Some(&b"c"[..]));
        assert_eq!(rx.recv().await.as_deref().map(|f| &f[..]), Some(&b"d"[..]));
        assert_eq!(rx.recv().await, None);
        assert!(rx.is_empty());
    }
}
