//! The memory sources may hold before their data reaches a queue.
//!
//! Queues bound what sinks hold. Before that, every connection holds bytes of its own: a read
//! buffer, the request arriving in it, the payload a compressed request inflates to, the
//! batch waiting for queue room, and split lines being joined. Each is bounded per
//! connection, but with thousands of connections the sum is not, so every connection of every
//! source draws from one [`Budget`] (`global.max_input_buffer_bytes`). A connection that
//! cannot get room waits before it reads (TCP then slows its client), exactly as a full
//! queue makes it wait; nothing is dropped and no connection is closed for it.
//!
//! The first [`ALLOWANCE`] bytes of each connection are not counted: an idle connection keeps
//! one small read buffer, and charging it would make a budget below `max_connections` × 4 KiB
//! refuse idle clients. That part of the memory is bounded by `max_connections` instead.
//!
//! # Why it cannot deadlock
//!
//! Waiting for room while holding room can deadlock: every connection holding half of a large
//! request, each waiting for the others. So the budget keeps a reserve outside the shared pool,
//! big enough for the largest request a source accepts plus its decompressed payload. A
//! connection that cannot get room from the pool queues for the reserve (first come, first
//! served) and, once it holds it, can always finish the request in hand; it gives the reserve
//! back as soon as what it drew is released (the request was queued). Whatever the others
//! hold, the reserve holder moves forward, and when it is done the next one does.

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{Mutex, OwnedMutexGuard, Semaphore};

/// Bytes per connection the budget does not count (the smallest read buffer).
pub const ALLOWANCE: usize = 4 << 10;

/// Gauges and counters of the budget.
#[derive(Debug, Clone, Default)]
pub struct BudgetMetrics {
    /// Bytes held now, across connections (the reserve's share included).
    pub held: Gauge,
    /// The configured bound.
    pub max: Gauge,
    /// Times a connection had to wait for room.
    pub waits: Counter,
}

/// The shared bound; cloned into every source.
#[derive(Debug, Clone)]
pub struct Budget(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    /// Free bytes of the shared part, as permits. Held permits are forgotten and given back
    /// with `add_permits`, so a [`Held`] is a count, not a bag of permit objects.
    pool: Semaphore,
    /// Whoever holds the lock may draw up to `reserve` bytes without the pool.
    reserve_lock: Arc<Mutex<()>>,
    reserve: usize,
    metrics: BudgetMetrics,
}

impl Budget {
    /// A budget of `max_bytes`, of which `reserve` is kept for one request at a time.
    /// `max_bytes` is clamped to at least `reserve` plus one [`ALLOWANCE`] (configuration
    /// validates the real bound) and the pool to what a semaphore holds.
    pub fn new(max_bytes: usize, reserve: usize, metrics: BudgetMetrics) -> Budget {
        let max_bytes = max_bytes.max(reserve + ALLOWANCE);
        metrics.max.set(max_bytes as i64);
        let pool = (max_bytes - reserve).min(Semaphore::MAX_PERMITS);
        Budget(Arc::new(Inner {
            pool: Semaphore::new(pool),
            reserve_lock: Arc::new(Mutex::new(())),
            reserve,
            metrics,
        }))
    }

    /// An empty share for one connection.
    pub fn held(&self) -> Held {
        Held {
            budget: self.0.clone(),
            pool: 0,
            drawn: 0,
            reserve: None,
        }
    }
}

impl Default for Budget {
    /// Large enough never to be the limit (unit tests, tools).
    fn default() -> Self {
        Budget::new(usize::MAX >> 4, 64 << 20, BudgetMetrics::default())
    }
}

/// What one connection holds of the budget. Dropping it gives everything back.
#[derive(Debug)]
pub struct Held {
    budget: Arc<Inner>,
    /// Bytes taken from the pool.
    pool: usize,
    /// Bytes drawn from the reserve; only while `reserve` is held.
    drawn: usize,
    reserve: Option<OwnedMutexGuard<()>>,
}

impl Held {
    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.pool + self.drawn
    }

    /// Whether this connection holds the reserve.
    pub fn has_reserve(&self) -> bool {
        self.reserve.is_some()
    }

    /// Takes `n` more bytes if they are free now: from the pool, else from the reserve when
    /// this connection holds it.
    pub fn try_grow(&mut self, n: usize) -> bool {
        if self.take_pool(n) {
            return true;
        }
        if self.reserve.is_some() && self.drawn + n <= self.budget.reserve {
            self.drawn += n;
            self.budget.metrics.held.inc_by(n as i64);
            return true;
        }
        false
    }

    /// Takes what is missing up to `total` bytes if the pool has it now. Never draws on the
    /// reserve: for memory that is not the request in hand (a copy that could be avoided,
    /// split lines), which must not keep the reserve from the next connection in line.
    pub fn try_grow_to(&mut self, total: usize) -> bool {
        self.take_pool(total.saturating_sub(self.bytes()))
    }

    fn take_pool(&mut self, n: usize) -> bool {
        if n == 0 {
            return true;
        }
        let b = &self.budget;
        let taken = u32::try_from(n).is_ok_and(|n| match b.pool.try_acquire_many(n) {
            Ok(p) => {
                p.forget();
                true
            }
            Err(_) => false,
        });
        if taken {
            self.pool += n;
            b.metrics.held.inc_by(n as i64);
        }
        taken
    }

    /// Waits until at least `total` bytes are held: from the pool when it has room, else
    /// through the reserve.
    ///
    /// # Cancel safety
    /// Cancel safe: what was taken before the cancellation stays held, and a later call with
    /// the same `total` takes only the rest.
    pub async fn grow_to(&mut self, total: usize) {
        let mut counted = false;
        loop {
            let need = total.saturating_sub(self.bytes());
            if self.try_grow(need) {
                return;
            }
            if !counted {
                self.budget.metrics.waits.inc();
                counted = true;
            }
            let need = u32::try_from(need).unwrap_or(u32::MAX);
            let inner = self.budget.clone();
            let from_pool = async {
                // The semaphore is never closed.
                if let Ok(p) = inner.pool.acquire_many(need).await {
                    p.forget();
                }
            };
            if self.reserve.is_some() {
                // The reserve cannot cover it (only a request beyond the configured limits
                // could get here): the pool is the only way left.
                from_pool.await;
            } else {
                tokio::select! {
                    () = from_pool => {}
                    guard = inner.reserve_lock.clone().lock_owned() => {
                        self.reserve = Some(guard);
                        continue;
                    }
                }
            }
            self.pool += need as usize;
            inner.metrics.held.inc_by(i64::from(need));
        }
    }

    /// Waits for the reserve (first come, first served), so that a request this connection
    /// could not get room for can be processed again with it.
    ///
    /// # Cancel safety
    /// Cancel safe: nothing is taken until the lock is.
    pub async fn take_reserve(&mut self) {
        if self.reserve.is_none() {
            self.budget.metrics.waits.inc();
            self.reserve = Some(self.budget.reserve_lock.clone().lock_owned().await);
        }
    }

    /// Gives back everything above `total`: what was drawn from the reserve first, so the
    /// reserve is released (to the next in line) as soon as possible.
    pub fn shrink_to(&mut self, total: usize) {
        let mut extra = self.bytes().saturating_sub(total);
        if extra == 0 {
            if self.drawn == 0 {
                self.reserve = None;
            }
            return;
        }
        self.budget.metrics.held.dec_by(extra as i64);
        let from_reserve = extra.min(self.drawn);
        self.drawn -= from_reserve;
        extra -= from_reserve;
        if extra > 0 {
            self.pool -= extra;
            self.budget.pool.add_permits(extra);
        }
        if self.drawn == 0 {
            self.reserve = None;
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.shrink_to(0);
    }
}

/// The charge for a connection holding `bytes` in all.
pub fn charge(bytes: usize) -> usize {
    bytes.saturating_sub(ALLOWANCE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn budget(max: usize, reserve: usize) -> (Budget, BudgetMetrics) {
        let m = BudgetMetrics::default();
        (Budget::new(max, reserve, m.clone()), m)
    }

    #[test]
    fn grows_from_the_pool_and_gives_back() {
        let (b, m) = budget(100_000, 10_000);
        let mut a = b.held();
        assert!(a.try_grow(60_000));
        assert!(!b.held().try_grow(40_000), "only 30 000 left in the pool");
        assert_eq!(m.held.get(), 60_000);
        a.shrink_to(20_000);
        assert_eq!((a.bytes(), m.held.get()), (20_000, 20_000));
        assert!(b.held().try_grow(70_000));
        drop(a);
        assert_eq!(m.held.get(), 0, "dropped shares give everything back");
    }

    #[tokio::test]
    async fn a_waiter_gets_room_when_another_shrinks() {
        let (b, m) = budget(20_000, 5_000);
        let mut a = b.held();
        assert!(a.try_grow(15_000));
        // Someone else holds the reserve, so only the pool can serve the waiter.
        let mut r = b.held();
        r.take_reserve().await;
        assert!(r.try_grow(5_000));
        let b2 = b.clone();
        let waiter = tokio::spawn(async move {
            let mut w = b2.held();
            w.grow_to(10_000).await;
            w.bytes()
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        a.shrink_to(0);
        assert_eq!(waiter.await.unwrap(), 10_000);
        assert_eq!(m.waits.get(), 2);
    }

    #[tokio::test]
    async fn the_reserve_lets_one_holder_finish_when_the_pool_is_exhausted() {
        // Two connections hold the whole pool, each waiting for more: without the reserve,
        // neither could ever finish.
        let (b, _) = budget(30_000, 10_000);
        let mut a = b.held();
        let mut c = b.held();
        assert!(a.try_grow(10_000) && c.try_grow(10_000));
        tokio::time::timeout(Duration::from_secs(1), a.grow_to(18_000))
            .await
            .expect("a gets the reserve");
        assert!(a.has_reserve());
        assert_eq!(a.bytes(), 18_000);
        // c waits: the pool is empty and the reserve is taken.
        let waiting = tokio::time::timeout(Duration::from_millis(50), c.grow_to(18_000)).await;
        assert!(waiting.is_err());
        // a finishes its request: what it drew goes back, and with it the reserve.
        a.shrink_to(10_000);
        assert!(!a.has_reserve());
        tokio::time::timeout(Duration::from_secs(1), c.grow_to(18_000))
            .await
            .expect("c gets the reserve next");
        assert!(c.has_reserve());
    }

    #[test]
    fn the_reserve_is_drawn_only_up_to_its_size() {
        let (b, _) = budget(20_000, 8_000);
        let mut a = b.held();
        assert!(a.try_grow(12_000));
        assert!(!a.try_grow(1), "pool empty, no reserve held");
        let lock = b.0.reserve_lock.clone().try_lock_owned().unwrap();
        a.reserve = Some(lock);
        assert!(a.try_grow(8_000));
        assert!(!a.try_grow(1), "reserve used up");
        a.shrink_to(12_000);
        assert!(!a.has_reserve(), "drawn back to zero releases the reserve");
    }

    #[test]
    fn the_allowance_is_free() {
        assert_eq!(charge(ALLOWANCE), 0);
        assert_eq!(charge(ALLOWANCE + 10), 10);
        assert_eq!(charge(0), 0);
    }
}
