//! `Condition`: a wait list of notifications beside an [`RLock`].

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::time::{Duration, Instant};

use super::lock::RLock;
use super::waiters::{Outcome, WaitList};
use crate::coroutine::GreenletExit;
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

/// Of what interrupted a wait before (`a`) and now (`b`), both kills or timeouts, what is
/// raised once the lock is back: the first kill, else the outermost timeout.
fn first_to_raise(a: Option<Payload>, b: Payload) -> Payload {
    match a {
        Some(a) if a.is::<GreenletExit>() => a,
        a if b.is::<TimeoutFired>() => outermost(a, b),
        _ => b,
    }
}

/// A kill or a timeout: what a wait takes the lock back for before it goes on.
fn retakes_lock(p: &Payload) -> bool {
    p.is::<GreenletExit>() || p.is::<TimeoutFired>()
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
/// [`with_timeout`](crate::with_timeout) or killed takes the lock back before the timeout or
/// the kill goes on (as `threading`'s `Condition.wait` does in its `finally`), so the caller's
/// own `release` on the way out (a guard's `Drop`) is right. A waiter killed while the lock is
/// held elsewhere dies once it gets the lock.
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

    /// Acquires the lock and returns a guard that releases one level of it when dropped, also
    /// on an unwind (Python's `with cond:`). A waiter killed in [`wait`](Condition::wait)
    /// takes the lock back before it unwinds, so the guard's release is right.
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
    /// (a guard's `Drop` during an unwind, where a second panic would abort the process): then
    /// the misuse is logged.
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
            Err(p) if retakes_lock(&p) => {
                let p = self.reacquire(Some(p), depth).expect("greenfiber: a raise to go on");
                resume_unwind(p)
            }
            // Anything else (LoopExit: the lock can never come back) goes on at once.
            Err(p) => resume_unwind(p),
        }
    }

    /// Takes the lock back after a wait, even if a kill or a `with_timeout` interrupts it
    /// meanwhile: what interrupted it (or `pending`, what ended the wait) is returned to be
    /// raised once the lock is held. Of several, a kill goes before a timeout (the first kill),
    /// and of timeouts the outermost. Anything else (LoopExit: nothing will ever release the
    /// lock) goes on at once, without the lock. This runs in ordinary code, not in a `Drop`,
    /// so waiting for the lock is an ordinary park.
    fn reacquire(&self, mut pending: Option<Payload>, depth: usize) -> Option<Payload> {
        loop {
            match catch_unwind(AssertUnwindSafe(|| self.lock.acquire_restore(depth))) {
                Ok(()) => return pending,
                Err(p) if retakes_lock(&p) => pending = Some(first_to_raise(pending, p)),
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

/// Holds one level of a [`Condition`]'s lock until dropped (from [`Condition::hold`]).
pub struct ConditionGuard<'a> {
    cond: &'a Condition,
}

impl Drop for ConditionGuard<'_> {
    fn drop(&mut self) {
        self.cond.release();
    }
}
