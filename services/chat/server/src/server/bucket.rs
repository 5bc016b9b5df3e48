//! A token bucket: `burst` at once, refilled at `per_sec`.

use std::time::Instant;

#[derive(Debug, Clone)]
pub(crate) struct Bucket {
    tokens: f64,
    last: Instant,
}

/// A bucket's shape.
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    /// Most taken at once.
    pub burst: u32,
    /// Refill per second.
    pub per_sec: f64,
}

impl Bucket {
    pub(crate) fn full(rate: Rate) -> Self {
        Bucket {
            tokens: f64::from(rate.burst),
            last: Instant::now(),
        }
    }

    /// Takes one token if there is one.
    pub(crate) fn take(&mut self, rate: Rate) -> bool {
        self.take_n(1.0, rate)
    }

    /// Takes `n` tokens if there are as many.
    pub(crate) fn take_n(&mut self, n: f64, rate: Rate) -> bool {
        if self.has(n, rate) {
            self.tokens -= n;
            true
        } else {
            false
        }
    }

    /// Whether `n` tokens are there now (refilled first, nothing taken).
    pub(crate) fn has(&mut self, n: f64, rate: Rate) -> bool {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * rate.per_sec).min(f64::from(rate.burst));
        self.tokens >= n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_the_burst_then_refuses() {
        let rate = Rate {
            burst: 20,
            per_sec: 0.001,
        };
        let mut b = Bucket::full(rate);
        for _ in 0..20 {
            assert!(b.take(rate));
        }
        assert!(!b.take(rate));
    }
}
