//! `Semaphore` and `BoundedSemaphore`: a permit count plus one wait list.
//!
//! | permits | waiters   | meaning                                                    |
//! |---------|-----------|------------------------------------------------------------|
//! | > 0     | none      | free: `acquire` takes one at once                          |
//! | 0       | none      | all held                                                   |
//! | 0       | some      | all held; each `release` grants one to the first waiter    |
//! | > 0     | some      | impossible: `release` grants to a waiter before it counts  |
//!
//! Permits granted to waiters that have not run yet (the wait list's `unclaimed`) count as
//! free for the bound, as in gevent (where such a permit sits in the counter until its waiter
//! takes it): free + unclaimed + held = bound, and a release is only valid while one is held,
//! so a double release right after a hand-off is refused instead of letting two fibers in.

use std::cell::Cell;
use std::time::{Duration, Instant};

use super::SyncError;
use super::waiters::{Outcome, WaitList};

/// A counting semaphore for fibers (gevent's `Semaphore`): `acquire` waits while no permit is
/// free, `release` gives one back (to the first waiter, if any — FIFO, no barging).
///
/// ```
/// use greenfiber::sync::Semaphore;
/// let s = Semaphore::new(1);
/// assert!(s.try_acquire());
/// assert!(!s.try_acquire());
/// s.release();
/// assert_eq!(s.available(), 1);
/// ```
pub struct Semaphore {
    permits: Cell<usize>,
    /// `Some(n)`: releasing past `n` free permits is an error (`BoundedSemaphore`).
    bound: Option<usize>,
    waiters: WaitList<()>,
}

impl Semaphore {
    /// A semaphore with `permits` free permits.
    pub fn new(permits: usize) -> Semaphore {
        Semaphore { permits: Cell::new(permits), bound: None, waiters: WaitList::new() }
    }

    /// Takes a permit, waiting as long as it takes.
    pub fn acquire(&self) {
        self.acquire_deadline(None);
    }

    /// Takes a permit, waiting at most `d`; true if it got one.
    pub fn acquire_timeout(&self, d: Duration) -> bool {
        self.acquire_deadline(super::deadline(d))
    }

    /// Takes a permit if one is free now.
    #[inline]
    pub fn try_acquire(&self) -> bool {
        let n = self.permits.get();
        if n > 0 {
            self.permits.set(n - 1);
            true
        } else {
            false
        }
    }

    pub(crate) fn acquire_deadline(&self, deadline: Option<Instant>) -> bool {
        if self.try_acquire() {
            return true;
        }
        // Rule 4 in hub/park.rs: no switch between the check above and the enqueue.
        let hand_on = |()| self.release_unbounded();
        matches!(self.waiters.wait_for("a semaphore", None, deadline, hand_on), Outcome::Granted(_))
    }

    /// Gives a permit back: to the first waiter if any, else to the count.
    #[inline]
    pub fn release(&self) {
        self.release_unbounded();
    }

    #[inline]
    fn release_unbounded(&self) {
        // Nobody waiting, the common case, inline; a grant (which wakes a fiber) out of line,
        // so that this path saves no registers for it.
        if self.waiters.is_empty() {
            self.permits.set(self.permits.get() + 1);
        } else {
            self.release_to_waiter();
        }
    }

    #[inline(never)]
    fn release_to_waiter(&self) {
        if self.waiters.grant_one(()).is_err() {
            self.permits.set(self.permits.get() + 1);
        }
    }

    fn release_bounded(&self) -> Result<(), SyncError> {
        if Some(self.permits.get() + self.waiters.unclaimed()) >= self.bound {
            return Err(SyncError::PastBound);
        }
        self.release_unbounded();
        Ok(())
    }

    /// Free permits right now.
    pub fn available(&self) -> usize {
        self.permits.get()
    }

    /// True if no permit is free.
    pub fn locked(&self) -> bool {
        self.permits.get() == 0
    }

    /// How many fibers wait for a permit.
    pub fn waiting(&self) -> usize {
        self.waiters.len()
    }
}

/// A [`Semaphore`] that refuses to be released more times than it was acquired (gevent's
/// `BoundedSemaphore`): `release` past the initial count is [`SyncError::PastBound`].
pub struct BoundedSemaphore {
    sem: Semaphore,
}

impl BoundedSemaphore {
    /// A bounded semaphore with `permits` free permits, which is also its bound.
    pub fn new(permits: usize) -> BoundedSemaphore {
        BoundedSemaphore { sem: Semaphore { bound: Some(permits), ..Semaphore::new(permits) } }
    }

    /// Takes a permit, waiting as long as it takes.
    pub fn acquire(&self) {
        self.sem.acquire();
    }

    /// Takes a permit, waiting at most `d`; true if it got one.
    pub fn acquire_timeout(&self, d: Duration) -> bool {
        self.sem.acquire_timeout(d)
    }

    /// Takes a permit if one is free now.
    #[inline]
    pub fn try_acquire(&self) -> bool {
        self.sem.try_acquire()
    }

    /// Gives a permit back; [`SyncError::PastBound`] if every permit is already free.
    #[inline]
    pub fn release(&self) -> Result<(), SyncError> {
        self.sem.release_bounded()
    }

    /// Free permits right now.
    pub fn available(&self) -> usize {
        self.sem.available()
    }

    /// True if no permit is free.
    pub fn locked(&self) -> bool {
        self.sem.locked()
    }

    /// How many fibers wait for a permit.
    pub fn waiting(&self) -> usize {
        self.sem.waiting()
    }
}
