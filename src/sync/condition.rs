//! `Condition`: a wait list of notifications beside an [`RLock`].

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::time::{Duration, Instant};

use super::lock::RLock;
use super::waiters::{Outcome, WaitList};
use crate::hub::TimeoutFired;

use crate::error::Payload;

/// Of two `TimeoutFired` payloads (or none and one), the one of the outer `with_timeout`: ids
/// grow with each `with_timeout`, and an outer one started first.
fn outermost(a: Option<Payload>, b: Payload) -> Payload {
    let id = |p: &Payload| p.downcast_ref::<TimeoutFired>().map_or(u64::MAX, |t| t.id);
    match a {
        Some(a) if id(&a) <= id(&b) => a,
        _ => b,
    }
}

/// A condition variable for fibers (gevent's/`threading`'s `Condition`) over its own [`RLock`].
///
/// As in `threading`, the lock is re-entrant and owned: `wait`, `notify` and `release` by a
/// fiber that does not hold it panic (Python's `RuntimeError: cannot wait on un-acquired
/// lock`), and never touch a lock another fiber holds. `wait` releases the lock however many
/// times its fiber acquired it, waits for a `notify`, and takes it back at the same depth
/// before returning.
/// Waiters are notified in FIFO order. A notification that reaches a waiter which is killed
/// (or interrupted by `with_timeout`) before it runs passes to the next waiter; with none left
/// it is dropped, as a `notify` with nobody waiting is. A waiter interrupted by
/// [`with_timeout`](crate::with_timeout) takes the lock back before the timeout goes on (as
/// `threading`'s `Condition.wait` does in its `finally`), so the caller's own `release` after
/// the timeout is right. A killed waiter dies without waiting for the lock (`threading` takes
/// it back first, which would leave it held for good by a waiter that releases it by hand
/// after `wait`); hold the lock with [`hold`](Condition::hold), whose guard releases it only
/// if the fiber holds it, so it is right either way.
///
/// ```
/// use std::{cell::Cell, rc::Rc};
/// use greenfiber::{spawn, sync::Condition};
///
/// let c = Rc::new((Condition::new(), Cell::new(false)));
/// let c2 = c.clone();
/// let waiter = spawn(move || {
///     let _held = c2.0.hold(); // released when the closure ends, or unwinds
///     while !c2.1.get() { c2.0.wait(); }
/// });
/// greenfiber::yield_now();
/// c.0.acquire();
/// c.1.set(true);
/// c.0.notify();
/// c.0.release();
/// waiter.join();
/// ```
#[derive(Default)]
pub struct Condition {
    lock: RLock,
    waiters: WaitList<()>,
}

impl Condition {
    /// A condition with a new, unlocked lock.
    pub fn new() -> Condition {
        Condition::default()
    }

    /// The underlying lock.
    pub fn lock(&self) -> &RLock {
        &self.lock
    }

    /// Acquires the lock (again, if this fiber holds it).
    pub fn acquire(&self) {
        self.lock.acquire();
    }

    /// Acquires the lock and returns a guard that releases one level of it when dropped, if
    /// the fiber still holds it (Python's `with cond:`): after a kill in
    /// [`wait`](Condition::wait), which leaves without the lock, it releases nothing.
    pub fn hold(&self) -> ConditionGuard<'_> {
        self.acquire();
        ConditionGuard { cond: self }
    }

    /// Acquires the lock, waiting at most `d`; true if it got it.
    pub fn acquire_timeout(&self, d: Duration) -> bool {
        self.lock.acquire_timeout(d)
    }

    /// Acquires the lock if it is free now or already this fiber's.
    pub fn try_acquire(&self) -> bool {
        self.lock.try_acquire()
    }

    /// Releases one level of the lock.
    ///
    /// # Panics
    /// If the current fiber does not hold the lock, unless a panic is under way on the thread
    /// (a hand-written guard's `Drop` during an unwind, where a second panic would abort the
    /// process): then the misuse is logged.
    pub fn release(&self) {
        if self.lock.release().is_err() {
            let msg = "greenfiber: cannot release a Condition's un-acquired lock (another fiber \
                       holds it, or nobody does)";
            if std::thread::panicking() {
                log::error!("{msg}; ignored during an unwind");
            } else {
                panic!("{msg}");
            }
        }
    }

    /// Panics unless the current fiber holds the lock, as `threading` raises.
    fn check_owned(&self, what: &str) {
        assert!(
            self.lock.is_owned(),
            "greenfiber: cannot {what} on un-acquired lock (acquire the Condition first)"
        );
    }

    /// Releases the lock, waits for a notification, re-acquires the lock.
    ///
    /// # Panics
    /// If the current fiber does not hold the lock.
    pub fn wait(&self) {
        self.wait_deadline(None);
    }

    /// As [`wait`](Condition::wait), giving up after `d`; true if notified. The lock is
    /// re-acquired either way.
    ///
    /// # Panics
    /// If the current fiber does not hold the lock.
    pub fn wait_timeout(&self, d: Duration) -> bool {
        self.wait_deadline(super::deadline(d))
    }

    fn wait_deadline(&self, deadline: Option<Instant>) -> bool {
        // Rule 4 in hub/park.rs: neither the release nor the enqueue switches, so no notify
        // can fall between them.
        self.check_owned("wait");
        let depth = self.lock.release_save().expect("greenfiber: the lock was just owned");
        let hand_on = |()| {
            let _ = self.waiters.grant_one(());
        };
        let o = catch_unwind(AssertUnwindSafe(|| {
            self.waiters.wait_for("a condition", None, deadline, hand_on)
        }));
        match o {
            Ok(o) => {
                if let Some(p) = self.reacquire(None, depth) {
                    resume_unwind(p);
                }
                matches!(o, Outcome::Granted(_))
            }
            Err(p) if p.is::<TimeoutFired>() => {
                let p = self.reacquire(Some(p), depth).expect("greenfiber: a timeout to raise");
                resume_unwind(p)
            }
            Err(p) => resume_unwind(p),
        }
    }

    /// Takes the lock back after a wait, even if a `with_timeout` fires meanwhile: such a
    /// timeout (or `pending`, one that ended the wait) is returned to be raised once the lock
    /// is held, the outermost if there are several; a kill goes on at once. This runs in
    /// ordinary code, not in a `Drop`, so waiting for the lock is an ordinary park.
    fn reacquire(&self, mut pending: Option<Payload>, depth: usize) -> Option<Payload> {
        loop {
            match catch_unwind(AssertUnwindSafe(|| self.lock.acquire_restore(depth))) {
                Ok(()) => return pending,
                Err(p) if p.is::<TimeoutFired>() => pending = Some(outermost(pending, p)),
                Err(p) => resume_unwind(p),
            }
        }
    }

    /// Wakes the first waiter, if any; true if there was one.
    ///
    /// # Panics
    /// If the current fiber does not hold the lock.
    pub fn notify(&self) -> bool {
        self.check_owned("notify");
        self.waiters.grant_one(()).is_ok()
    }

    /// Wakes up to `n` waiters; returns how many.
    ///
    /// # Panics
    /// If the current fiber does not hold the lock.
    pub fn notify_n(&self, n: usize) -> usize {
        self.check_owned("notify");
        (0..n).take_while(|_| self.notify()).count()
    }

    /// Wakes every waiter; returns how many.
    ///
    /// # Panics
    /// If the current fiber does not hold the lock.
    pub fn notify_all(&self) -> usize {
        self.check_owned("notify");
        self.waiters.grant_all(|| ())
    }

    /// How many fibers wait.
    pub fn waiting(&self) -> usize {
        self.waiters.len()
    }
}

/// Holds one level of a [`Condition`]'s lock until dropped (from [`Condition::hold`]); the
/// drop releases it only if the fiber holds it (a kill in `wait` leaves without it).
pub struct ConditionGuard<'a> {
    cond: &'a Condition,
}

impl Drop for ConditionGuard<'_> {
    fn drop(&mut self) {
        if self.cond.lock.is_owned() {
            self.cond.release();
        }
    }
}
