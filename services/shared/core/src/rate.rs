//! A user's transfer rate, shared by all their sessions in the process: a
//! token bucket in bytes, refilled at the rate, holding an eighth of a
//! second's worth. A transfer takes what it moves and, when the bucket is in
//! debt, waits until it is paid off, so sessions of one user share the rate
//! in the order they asked and together never go faster.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Bytes moved at most in one step of a rate-limited transfer (a sendfile
/// call, say), so the bucket is asked often enough to hold the rate.
pub const STEP: usize = 64 * 1024;

/// One user's rate in one direction.
#[derive(Debug)]
pub struct Limiter {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Bytes per second; `u64::MAX` when unlimited.
    rate: u64,
    /// Bytes that may go now; negative: the debt to wait off.
    tokens: f64,
    last: Instant,
}

impl State {
    fn burst(&self) -> f64 {
        (self.rate as f64 / 8.0).max(STEP as f64)
    }

    fn refill(&mut self) {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate as f64).min(self.burst());
    }
}

impl Limiter {
    /// A limiter at `rate` bytes per second (at least 1), or none.
    pub fn new(rate: Option<u64>) -> Arc<Limiter> {
        let rate = rate.map_or(u64::MAX, |r| r.max(1));
        Arc::new(Limiter {
            state: Mutex::new(State {
                rate,
                tokens: (rate as f64 / 8.0).max(STEP as f64),
                last: Instant::now(),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes per second now, if limited.
    pub fn rate(&self) -> Option<u64> {
        let rate = self.lock().rate;
        (rate != u64::MAX).then_some(rate)
    }

    /// Changes the rate (an administrator's new word), from now on.
    pub fn set_rate(&self, rate: Option<u64>) {
        let mut st = self.lock();
        st.refill();
        st.rate = rate.map_or(u64::MAX, |r| r.max(1));
        st.tokens = st.tokens.min(st.burst());
    }

    /// The most to move in one step: all of `want` when unlimited.
    pub fn step(&self, want: usize) -> usize {
        if self.rate().is_some() {
            want.min(STEP)
        } else {
            want
        }
    }

    /// Takes `bytes` from the bucket; how long the caller must wait before
    /// moving more.
    pub fn reserve(&self, bytes: usize) -> Duration {
        let mut st = self.lock();
        if st.rate == u64::MAX {
            return Duration::ZERO;
        }
        st.refill();
        st.tokens -= bytes as f64;
        if st.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-st.tokens / st.rate as f64)
        }
    }

    /// Takes `bytes`, waiting off any debt.
    pub async fn take(&self, bytes: usize) {
        let wait = self.reserve(bytes);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// A reader paced by a [`Limiter`]: what it reads is taken from the
/// bucket, and a read waits off the debt the one before it left.
pub struct Paced<R> {
    inner: R,
    limiter: Arc<Limiter>,
    sleep: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    scratch: Vec<u8>,
}

impl<R> Paced<R> {
    /// `inner`, paced by `limiter`.
    pub fn new(inner: R, limiter: Arc<Limiter>) -> Paced<R> {
        Paced {
            inner,
            limiter,
            sleep: None,
            scratch: Vec::new(),
        }
    }

    /// The reader inside.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    fn pay(&mut self, bytes: usize) {
        let wait = self.limiter.reserve(bytes);
        if !wait.is_zero() {
            self.sleep = Some(Box::pin(tokio::time::sleep(wait)));
        }
    }
}

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Paced<R> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::future::Future;
        use std::task::{Poll, ready};
        let this = self.get_mut();
        if let Some(sleep) = this.sleep.as_mut() {
            ready!(sleep.as_mut().poll(cx));
            this.sleep = None;
        }
        if this.limiter.rate().is_none() || buf.remaining() <= STEP {
            let before = buf.filled().len();
            ready!(std::pin::Pin::new(&mut this.inner).poll_read(cx, buf))?;
            let read = buf.filled().len() - before;
            this.pay(read);
            return Poll::Ready(Ok(()));
        }
        // Limited: a step at most, so the pacing stays smooth.
        this.scratch.resize(STEP, 0);
        let mut step = tokio::io::ReadBuf::new(&mut this.scratch);
        ready!(std::pin::Pin::new(&mut this.inner).poll_read(cx, &mut step))?;
        let read = step.filled().len();
        buf.put_slice(step.filled());
        this.pay(read);
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_paced_reader_goes_at_the_rate() {
        use tokio::io::AsyncReadExt;
        let data = vec![7u8; 600_000];
        let started = Instant::now();
        let mut paced = Paced::new(&data[..], Limiter::new(Some(1_000_000)));
        let mut out = Vec::new();
        paced.read_to_end(&mut out).await.expect("read");
        assert_eq!(out, data);
        // 600 kB at 1 MB/s, less the 125 kB burst.
        assert!(
            started.elapsed() >= Duration::from_millis(470),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn the_debt_is_waited_off_at_the_rate() {
        let l = Limiter::new(Some(1_000_000));
        // The burst (125 kB) goes at once; a megabyte more waits a second.
        assert_eq!(l.reserve(125_000), Duration::ZERO);
        let wait = l.reserve(1_000_000);
        assert!(
            wait > Duration::from_millis(990) && wait <= Duration::from_millis(1000),
            "{wait:?}"
        );
        l.set_rate(Some(2_000_000));
        assert!(l.reserve(0) < Duration::from_millis(1000));
        l.set_rate(None);
        assert_eq!(l.reserve(1 << 40), Duration::ZERO);
        assert_eq!(l.step(1 << 30), 1 << 30);
    }
}
