//! A fair budget of connections that have not yet earned their place: not
//! logged in yet on a service's port, a request not read yet on the metrics
//! port.
//!
//! A new connection is always let in; when the budget is full, one already
//! waiting is ended to make room, and the one chosen is the oldest of the
//! address that holds the most (the newcomer's own oldest when its address
//! is among those holding the most). So one address flooding the port ends
//! only its own connections, never another address's, and a real client
//! that finishes its login or request at once is never the one that goes.
//! An address may also be held to a number of its own waiting at once.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio_util::sync::CancellationToken;

/// The connections waiting, oldest first.
pub struct Waiting {
    /// Waiting at once, over all addresses.
    max: usize,
    /// Waiting at once from one address.
    max_per_address: usize,
    conns: Mutex<VecDeque<Entry>>,
    next: AtomicU64,
}

struct Entry {
    id: u64,
    ip: IpAddr,
    evict: CancellationToken,
}

/// A connection's place in [`Waiting`]: [`Ticket::evicted`] resolves when it
/// is ended to make room; [`Ticket::passed`] (or dropping the ticket) gives
/// the place back, after which it is never ended for room.
pub struct Ticket {
    waiting: Arc<Waiting>,
    id: u64,
    evict: CancellationToken,
}

impl Waiting {
    /// A budget of `max` waiting at once, `max_per_address` of them from one
    /// address.
    pub fn new(max: usize, max_per_address: usize) -> Arc<Waiting> {
        Arc::new(Waiting {
            max: max.max(1),
            max_per_address: max_per_address.max(1),
            conns: Mutex::new(VecDeque::new()),
            next: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Entry>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A place for a connection from `ip`, ending one waiting if the budget
    /// (or the address's share of it) is full.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Ticket {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let evict = CancellationToken::new();
        let evicted = {
            let mut conns = self.lock();
            let evicted = self.choose(&conns, ip).and_then(|at| conns.remove(at));
            conns.push_back(Entry {
                id,
                ip,
                evict: evict.clone(),
            });
            evicted
        };
        if let Some(entry) = evicted {
            tracing::debug!(address = %entry.ip, "too many connections waiting: ending the oldest of the address holding the most");
            entry.evict.cancel();
        }
        Ticket {
            waiting: Arc::clone(self),
            id,
            evict,
        }
    }

    /// Which entry goes to make room for one more from `ip`, if any.
    fn choose(&self, conns: &VecDeque<Entry>, ip: IpAddr) -> Option<usize> {
        let own = conns.iter().filter(|e| e.ip == ip).count();
        if own >= self.max_per_address {
            return conns.iter().position(|e| e.ip == ip);
        }
        if conns.len() < self.max {
            return None;
        }
        let mut counts: HashMap<IpAddr, usize> = HashMap::new();
        for e in conns {
            *counts.entry(e.ip).or_insert(0) += 1;
        }
        let most = counts.values().copied().max().unwrap_or(0);
        // The newcomer's own oldest, when its address is among those
        // holding the most (it would hold one more); else the oldest of an
        // address holding the most (every address holding one: the oldest).
        if own > 0 && own + 1 >= most {
            return conns.iter().position(|e| e.ip == ip);
        }
        conns.iter().position(|e| counts[&e.ip] == most)
    }

    /// Connections waiting now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn remove(&self, id: u64) {
        let mut conns = self.lock();
        if let Some(at) = conns.iter().position(|e| e.id == id) {
            conns.remove(at);
        }
    }
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket").field("id", &self.id).finish()
    }
}

impl Ticket {
    /// The connection earned its place: it is never ended for room from now.
    pub fn passed(&self) {
        self.waiting.remove(self.id);
    }

    /// Resolves when the connection is ended to make room (a future of its
    /// own, so the ticket can move on to the session).
    pub fn evicted(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.evict.clone().cancelled_owned()
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.waiting.remove(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    fn gone(t: &Ticket) -> bool {
        t.evict.is_cancelled()
    }

    #[test]
    fn a_flooding_address_ends_only_its_own() {
        let w = Waiting::new(4, usize::MAX);
        let others: Vec<_> = (1..=2).map(|i| w.admit(ip(i))).collect();
        let flood: Vec<_> = (0..100).map(|_| w.admit(ip(9))).collect();
        assert!(others.iter().all(|t| !gone(t)), "another address was ended");
        assert_eq!(flood.iter().filter(|t| !gone(t)).count(), 2);
        // A newcomer from elsewhere takes the flooder's oldest place.
        let late = w.admit(ip(3));
        assert!(!gone(&late));
        assert_eq!(flood.iter().filter(|t| !gone(t)).count(), 1);
        assert!(others.iter().all(|t| !gone(t)));
        assert_eq!(w.len(), 4);
    }

    #[test]
    fn the_budget_holds_when_every_address_has_one() {
        let w = Waiting::new(3, usize::MAX);
        let first = w.admit(ip(1));
        let _others: Vec<_> = (2..=3).map(|i| w.admit(ip(i))).collect();
        let late = w.admit(ip(4));
        assert!(gone(&first), "the oldest makes room");
        assert!(!gone(&late));
        assert_eq!(w.len(), 3);
    }

    #[test]
    fn an_address_is_held_to_its_share_and_passed_ones_stay() {
        let w = Waiting::new(100, 2);
        let a = w.admit(ip(1));
        a.passed();
        let b = w.admit(ip(1));
        let c = w.admit(ip(1));
        let d = w.admit(ip(1));
        assert!(!gone(&a), "a connection that passed was ended");
        assert!(gone(&b), "the address's oldest waiting goes");
        assert!(!gone(&c) && !gone(&d));
        drop(c);
        assert_eq!(w.len(), 1);
    }
}
