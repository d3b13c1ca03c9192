//! `Lock` (a one-permit bounded semaphore) and `RLock` (a `Lock` plus an owner fiber and a
//! depth).
//!
//! RLock state:
//!
//! | owner  | depth | lock   | meaning                                             |
//! |--------|-------|--------|-----------------------------------------------------|
//! | None   | 0     | free   | unowned                                             |
//! | Some f | n ≥ 1 | held   | `f` acquired it `n` times                           |
//! | None   | 0     | held   | a waiter was granted the lock and has not run yet   |
//! | Some   | 0     | any    | impossible                                          |

use std::cell::{Cell, RefCell};
use std::time::Duration;

use super::SyncError;
use super::semaphore::BoundedSemaphore;
use crate::coroutine::{Coroutine, current};

/// A mutual-exclusion lock for fibers (gevent's `Lock`): a [`BoundedSemaphore`] of one permit.
/// Not re-entrant: a fiber that acquires it twice waits for itself. Releasing an unlocked
/// lock is [`SyncError::PastBound`]; any fiber may release it (as in gevent).
pub struct Lock {
    sem: BoundedSemaphore,
}

impl Default for Lock {
    fn default() -> Self {
        Lock::new()
    }
}

impl Lock {
    /// An unlocked lock.
    pub fn new() -> Lock {
        Lock { sem: BoundedSemaphore::new(1) }
    }

    /// Locks it, waiting as long as it takes.
    pub fn acquire(&self) {
        self.sem.acquire();
    }

    /// Locks it, waiting at most `d`; true if it got it.
    pub fn acquire_timeout(&self, d: Duration) -> bool {
        self.sem.acquire_timeout(d)
    }

    /// Locks it if it is free now.
    #[inline]
    pub fn try_acquire(&self) -> bool {
        self.sem.try_acquire()
    }

    /// Unlocks it, handing it to the first waiter if any.
    #[inline]
    pub fn release(&self) -> Result<(), SyncError> {
        self.sem.release()
    }

    /// True while held (or granted to a waiter that has not run yet).
    pub fn locked(&self) -> bool {
        self.sem.locked()
    }

    /// Acquires it and returns a guard that releases it when dropped (also on unwind).
    pub fn lock(&self) -> LockGuard<'_> {
        self.acquire();
        LockGuard { lock: self }
    }
}

/// Holds a [`Lock`] until dropped (from [`Lock::lock`]).
pub struct LockGuard<'a> {
    lock: &'a Lock,
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        // The guard holds the lock, so the release cannot go past the bound.
        let _ = self.lock.release();
    }
}

/// A re-entrant lock (gevent's `RLock`): its owning fiber may acquire it again; it is freed
/// when released as many times. Release by any other fiber is [`SyncError::NotOwner`].
#[derive(Default)]
pub struct RLock {
    lock: Lock,
    owner: RefCell<Option<Coroutine>>,
    depth: Cell<usize>,
}

impl RLock {
    /// An unowned lock.
    pub fn new() -> RLock {
        RLock::default()
    }

    fn is_mine(&self, me: &Coroutine) -> bool {
        self.owner.borrow().as_ref() == Some(me)
    }

    fn take(&self, me: Coroutine) {
        *self.owner.borrow_mut() = Some(me);
        self.depth.set(1);
    }

    /// Acquires it, waiting as long as it takes (at once if this fiber owns it).
    pub fn acquire(&self) {
        let me = current();
        if self.is_mine(&me) {
            self.depth.set(self.depth.get() + 1);
            return;
        }
        self.lock.acquire();
        self.take(me);
    }

    /// As [`acquire`](RLock::acquire), waiting at most `d`; true if it got it.
    pub fn acquire_timeout(&self, d: Duration) -> bool {
        let me = current();
        if self.is_mine(&me) {
            self.depth.set(self.depth.get() + 1);
            return true;
        }
        let ok = self.lock.acquire_timeout(d);
        if ok {
            self.take(me);
        }
        ok
    }

    /// Acquires it if it is free now or already this fiber's.
    pub fn try_acquire(&self) -> bool {
        let me = current();
        if self.is_mine(&me) {
            self.depth.set(self.depth.get() + 1);
            return true;
        }
        let ok = self.lock.try_acquire();
        if ok {
            self.take(me);
        }
        ok
    }

    /// Releases one level; the last one frees it for the first waiter.
    /// [`SyncError::NotOwner`] if the current fiber does not own it.
    pub fn release(&self) -> Result<(), SyncError> {
        if !self.is_mine(&current()) {
            return Err(SyncError::NotOwner);
        }
        let d = self.depth.get() - 1;
        self.depth.set(d);
        if d == 0 {
            *self.owner.borrow_mut() = None;
            self.lock.release()?;
        }
        Ok(())
    }

    /// True while some fiber holds it.
    pub fn locked(&self) -> bool {
        self.lock.locked()
    }

    /// True if the current fiber holds it.
    pub fn is_owned(&self) -> bool {
        self.is_mine(&current())
    }

    /// Frees it whatever its depth (for `Condition::wait`): the depth to give back to
    /// [`acquire_restore`](RLock::acquire_restore), or `None` if the current fiber does not
    /// own it. Does not switch.
    pub(crate) fn release_save(&self) -> Option<usize> {
        if !self.is_owned() {
            return None;
        }
        let depth = self.depth.replace(0);
        *self.owner.borrow_mut() = None;
        // The current fiber held it, so this release cannot go past the bound.
        let _ = self.lock.release();
        Some(depth)
    }

    /// Acquires it again at `depth` levels after [`release_save`](RLock::release_save). A
    /// kill or a timeout unwinds out of the wait without it.
    pub(crate) fn acquire_restore(&self, depth: usize) {
        self.lock.acquire();
        self.take(current());
        self.depth.set(depth);
    }
}
