//! Adaptive concurrency per registry host.
//!
//! Each host starts with `jobs` request slots. A 429 (Too Many Requests)
//! halves the host's slots (never below one) and holds new requests to that
//! host until its `Retry-After` (or one second) has passed; a run of
//! successful answers gives one slot back at a time (additive increase,
//! multiplicative decrease), up to `jobs` again. Other hosts are not
//! affected: a throttling Docker Hub does not slow the target registry.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, SemaphorePermit};

/// The slots of one host.
#[derive(Debug)]
pub(crate) struct HostGate {
    sem: Semaphore,
    max: usize,
    /// Slots currently taken away (the limit is `max - removed`).
    removed: AtomicUsize,
    /// Permits to forget when they come back (a decrease while they were out).
    debt: AtomicUsize,
    /// Successes since the last change.
    streak: AtomicUsize,
    cool_until: Mutex<Option<Instant>>,
}

/// A slot; gives it back (or retires it, after a decrease) when dropped.
pub(crate) struct Slot<'a> {
    gate: &'a HostGate,
    permit: Option<SemaphorePermit<'a>>,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if let Some(p) = self.permit.take() {
            let retire = self
                .gate
                .debt
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |d| d.checked_sub(1))
                .is_ok();
            if retire {
                p.forget();
            }
        }
    }
}

impl HostGate {
    pub(crate) fn new(max: usize) -> HostGate {
        let max = max.max(1);
        HostGate {
            sem: Semaphore::new(max),
            max,
            removed: AtomicUsize::new(0),
            debt: AtomicUsize::new(0),
            streak: AtomicUsize::new(0),
            cool_until: Mutex::new(None),
        }
    }

    /// The current number of slots.
    pub(crate) fn limit(&self) -> usize {
        self.max - self.removed.load(Ordering::SeqCst)
    }

    /// Waits out a cool-down, then takes a slot.
    pub(crate) async fn enter(&self) -> Slot<'_> {
        loop {
            let wait = self
                .cool_until
                .lock()
                .ok()
                .and_then(|c| *c)
                .and_then(|until| until.checked_duration_since(Instant::now()));
            match wait {
                Some(d) if !d.is_zero() => tokio::time::sleep(d).await,
                _ => break,
            }
        }
        Slot {
            gate: self,
            permit: self.sem.acquire().await.ok(),
        }
    }

    /// A 429: halve the slots and cool down. Returns the new limit.
    pub(crate) fn throttled(&self, retry_after: Option<Duration>) -> usize {
        let pause = retry_after.unwrap_or(Duration::from_secs(1));
        if let Ok(mut c) = self.cool_until.lock() {
            let until = Instant::now() + pause;
            if c.is_none_or(|old| old < until) {
                *c = Some(until);
            }
        }
        self.streak.store(0, Ordering::SeqCst);
        let current = self.limit();
        let target = (current / 2).max(1);
        let cut = current - target;
        if cut > 0 {
            self.removed.fetch_add(cut, Ordering::SeqCst);
            let forgotten = self.sem.forget_permits(cut);
            self.debt.fetch_add(cut - forgotten, Ordering::SeqCst);
        }
        self.limit()
    }

    /// A success: after as many successes in a row as twice the limit, one
    /// slot comes back. Returns the new limit when it changed.
    pub(crate) fn succeeded(&self) -> Option<usize> {
        if self.removed.load(Ordering::SeqCst) == 0 {
            return None;
        }
        let n = self.streak.fetch_add(1, Ordering::SeqCst) + 1;
        if n < 2 * self.limit() {
            return None;
        }
        self.streak.store(0, Ordering::SeqCst);
        let gave_back = self
            .removed
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |r| r.checked_sub(1))
            .is_ok();
        if !gave_back {
            return None;
        }
        // Pay a pending retirement instead of adding a permit.
        let paid = self
            .debt
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |d| d.checked_sub(1))
            .is_ok();
        if !paid {
            self.sem.add_permits(1);
        }
        Some(self.limit())
    }

    /// Permits free right now (tests).
    #[cfg(test)]
    fn available(&self) -> usize {
        self.sem.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn throttling_halves_the_slots_and_successes_restore_them() {
        let g = HostGate::new(8);
        assert_eq!(g.limit(), 8);
        // Two slots are out when the 429 comes: they retire on return.
        let a = g.enter().await;
        let b = g.enter().await;
        assert_eq!(g.throttled(Some(Duration::from_millis(1))), 4);
        assert_eq!(g.throttled(Some(Duration::from_millis(1))), 2);
        assert_eq!(g.throttled(None), 1);
        assert_eq!(g.throttled(None), 1, "never below one");
        drop(a);
        drop(b);
        assert_eq!(
            g.available(),
            1,
            "exactly the limit is free once all are back"
        );
        // Successes give slots back one at a time.
        let mut limit = 1;
        for _ in 0..200 {
            if let Some(l) = g.succeeded() {
                assert_eq!(l, limit + 1);
                limit = l;
            }
        }
        assert_eq!(g.limit(), 8);
        assert_eq!(g.available(), 8);
        assert_eq!(g.succeeded(), None);
    }

    #[tokio::test]
    async fn a_cool_down_holds_new_requests() {
        let g = HostGate::new(2);
        g.throttled(Some(Duration::from_millis(200)));
        let t = Instant::now();
        let _s = g.enter().await;
        assert!(
            t.elapsed() >= Duration::from_millis(150),
            "{:?}",
            t.elapsed()
        );
    }
}
