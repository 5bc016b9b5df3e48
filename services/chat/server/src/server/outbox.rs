//! A TCP session's queue of encoded frames: the hub and the session itself
//! put frames in, and the session's own task writes them out.
//!
//! tokio's mpsc channel would do, but it allocates a block of 32 slots per
//! channel up front: over a kilobyte for each of 10,000 idle sessions. This
//! queue holds nothing while it is empty, and a queued frame is one pointer
//! ([`Frame`]): a message to a room is encoded once and its frame shared by
//! every member's queue. As `Bytes` (four words a slot), 500 members' queues
//! of 1,024 frames took 16 MiB; as a pointer, 4 MiB.
//!
//! The queue is also how the hub ends a session that does not read:
//! [`Outbox::drop_session`] marks it and wakes its task, which says why and
//! closes. No task and no token of its own: an idle session is one task
//! waiting on its socket and on this queue.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};
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

/// A session's queue; a clone is another handle on the same queue (the hub
/// keeps one per endpoint, the session one).
#[derive(Clone)]
pub(crate) struct Outbox {
    inner: Arc<Inner>,
}

struct Inner {
    queue: Mutex<VecDeque<Frame>>,
    capacity: usize,
    /// A frame was queued, or the session was dropped: its task looks.
    wake: Notify,
    /// The hub dropped the session: it did not read its messages.
    dropped: AtomicBool,
    /// The session is ending: nothing more is queued.
    closed: AtomicBool,
}

impl Outbox {
    /// A queue the hub fills up to `capacity` frames.
    pub(crate) fn new(capacity: usize) -> Outbox {
        Outbox {
            inner: Arc::new(Inner {
                queue: Mutex::new(VecDeque::new()),
                capacity: capacity.max(1),
                wake: Notify::new(),
                dropped: AtomicBool::new(false),
                closed: AtomicBool::new(false),
            }),
        }
    }

    fn queue(&self) -> MutexGuard<'_, VecDeque<Frame>> {
        self.inner.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `frame` if there is room: the hub never waits for a member.
    pub(crate) fn try_send(&self, frame: Frame) -> Result<(), Refused> {
        if self.inner.closed.load(Ordering::Acquire) || self.is_dropped() {
            return Err(Refused::Closed);
        }
        {
            let mut q = self.queue();
            if q.len() >= self.inner.capacity {
                return Err(Refused::Full);
            }
            q.push_back(frame);
        }
        self.inner.wake.notify_one();
        Ok(())
    }

    /// Queues the session's own reply, past the capacity if need be: the
    /// session writes its queue out before it reads another request once
    /// the queue is full, so what it adds itself stays within one request's
    /// replies.
    pub(crate) fn push(&self, frame: Frame) {
        self.queue().push_back(frame);
    }

    /// Ends the session (the hub's doing): it stops taking frames, and its
    /// task tells the client why and closes.
    pub(crate) fn drop_session(&self) {
        self.inner.dropped.store(true, Ordering::Release);
        self.inner.wake.notify_one();
    }

    /// Whether the hub dropped the session.
    pub(crate) fn is_dropped(&self) -> bool {
        self.inner.dropped.load(Ordering::Acquire)
    }

    /// The session is ending: the hub's frames are refused from now (what
    /// is queued is still written).
    pub(crate) fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
    }

    /// Whether the queue is at its capacity (or past it, with the session's
    /// own replies).
    pub(crate) fn is_full(&self) -> bool {
        self.queue().len() >= self.inner.capacity
    }

    /// Whether nothing is queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.queue().is_empty()
    }

    /// Takes what is queued, up to about `max` bytes, as one buffer for one
    /// write; `None` when nothing is. Several frames are gathered in a
    /// buffer made for them and freed once written: a session keeps nothing
    /// between bursts, and an emptied queue gives its slots back.
    pub(crate) fn take(&self, max: usize) -> Option<Bytes> {
        let mut q = self.queue();
        let first = q.pop_front()?;
        // How many more fit, so the buffer is made to the batch's size: a
        // batch the socket takes slowly is held until written.
        let mut len = first.len();
        let more = q
            .iter()
            .take_while(|f| {
                let fits = len + f.len() <= max;
                if fits {
                    len += f.len();
                }
                fits
            })
            .count();
        let data = if more == 0 {
            Bytes::clone(&first)
        } else {
            let mut batch = BytesMut::with_capacity(len);
            batch.extend_from_slice(&first);
            for f in q.drain(..more) {
                batch.extend_from_slice(&f);
            }
            batch.freeze()
        };
        if q.is_empty() && q.capacity() > 0 {
            q.shrink_to_fit();
        }
        Some(data)
    }

    /// Resolves once a frame was queued or the session dropped since the
    /// last time it resolved (a wake that came before the wait is kept).
    pub(crate) async fn woken(&self) {
        self.inner.wake.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(bytes: &'static [u8]) -> Frame {
        Arc::new(Bytes::from_static(bytes))
    }

    #[tokio::test]
    async fn frames_come_out_in_order_batched_and_a_full_queue_refuses_the_hub_not_the_session() {
        let out = Outbox::new(2);
        assert_eq!(out.try_send(frame(b"a")), Ok(()));
        assert_eq!(out.try_send(frame(b"bc")), Ok(()));
        assert!(out.is_full());
        assert_eq!(out.try_send(frame(b"d")), Err(Refused::Full));
        // The session's own reply goes in regardless.
        out.push(frame(b"ef"));
        // The wake was kept for the task that waits next.
        out.woken().await;
        // Batches stop before going past `max`.
        assert_eq!(out.take(3).as_deref(), Some(&b"abc"[..]));
        assert!(!out.is_full());
        assert_eq!(out.take(3).as_deref(), Some(&b"ef"[..]));
        assert_eq!(out.take(3), None);
        assert!(out.is_empty());
        // A frame longer than `max` still goes, alone.
        out.push(frame(b"long frame"));
        out.push(frame(b"x"));
        assert_eq!(out.take(3).as_deref(), Some(&b"long frame"[..]));
        assert_eq!(out.take(3).as_deref(), Some(&b"x"[..]));
        // Closed, or dropped by the hub: refused.
        out.close();
        assert_eq!(out.try_send(frame(b"g")), Err(Refused::Closed));
        let other = Outbox::new(2);
        other.drop_session();
        assert!(other.is_dropped());
        other.woken().await;
        assert_eq!(other.try_send(frame(b"h")), Err(Refused::Closed));
    }
}
