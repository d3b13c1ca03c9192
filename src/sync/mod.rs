//! Layer 4: cooperative synchronisation primitives — gevent's `Event`,
//! `AsyncResult`, `Semaphore`, `Lock`, `RLock`, `Condition`, `Queue` and friends — for fibers of
//! one thread.
//!
//! ```
//! use std::rc::Rc;
//! use greenfiber::{spawn, sync::Queue};
//!
//! let q = Rc::new(Queue::bounded(2));
//! let q2 = q.clone();
//! let producer = spawn(move || for i in 0..5 { q2.put(i) }); // blocks while 2 are queued
//! let got: Vec<i32> = (0..5).map(|_| q.get()).collect();     // main blocks: the hub runs it
//! assert_eq!(got, [0, 1, 2, 3, 4]);
//! producer.join();
//! ```
//!
//! # Model: every primitive is `waiters.rs` plus a state word
//!
//! Each primitive keeps a small state (a permit count, a flag, a storage) and one or two wait
//! lists from `waiters.rs` — one mechanism, the hub's `WaitList` with direct hand-off. The
//! rules every primitive follows:
//!
//! 1. **FIFO.** Waiters are served in the order they started waiting. A release goes to the
//!    first waiter, never to a fiber that arrives later (no barging): a permit is *granted* to
//!    the waiter, not left for whoever runs first. A `Queue`'s or `Channel`'s getter is granted
//!    a reservation: the item stays stored, nobody else may take it, and the getter takes the
//!    storage's next item when it runs (as in gevent), so the getters that run get the items in
//!    the storage's order even if one of them is killed first.
//! 2. **Kill and timeout lose nothing.** A waiter that is killed, times out or is interrupted
//!    by `with_timeout` leaves its list. If it had already been granted something and had not
//!    yet run, the grant passes to the next waiter or back to the primitive. No wake-up is lost
//!    and none is delivered to a dead fiber.
//! 3. **Check and enqueue are one step.** A primitive tests its state and enqueues with no
//!    switch in between (written down at each call as "rule 4 in hub/park.rs").
//! 4. **No poisoning.** A fiber that panics while holding a `Lock` does not poison it; like
//!    gevent, acquire and release are explicit, so a lock taken with `acquire` by a fiber that
//!    died stays held (a [`LockGuard`] from `Lock::lock` releases it as the
//!    fiber unwinds).
//! 5. **One thread.** Primitives are `!Send`: they coordinate fibers of the hub of the thread
//!    that made them. [`AsyncResult::sender`] is the one door from other OS threads.
//!
//! Primitives are plain values; share them between fibers with `Rc` (as you would share a
//! `std::sync::Mutex` with `Arc`). `AsyncResult` is itself a cheap `Clone` handle because its
//! cross-thread sender must reach it.

mod channel;
mod condition;
mod event;
mod lock;
mod queue;
mod semaphore;
mod waiters;

use std::fmt;

pub use channel::Channel;
pub use condition::{Condition, ConditionGuard};
pub use event::{AsyncResult, AsyncSender, Event};
pub use lock::{Lock, LockGuard, RLock};
pub use queue::{JoinableQueue, LifoQueue, PriorityQueue, Queue};
pub use semaphore::{BoundedSemaphore, Semaphore};

/// A put that could not complete: the queue was full (`try_put`) or stayed full until the
/// timeout (`put_timeout`). Gives the item back.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Full<T>(pub T);

/// A get that could not complete: the queue was empty (`try_get`) or stayed empty until the
/// timeout (`get_timeout`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Empty;

/// A release or `task_done` that the primitive's state does not allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SyncError {
    /// A `BoundedSemaphore` or `Lock` released more times than it was acquired.
    PastBound,
    /// An `RLock` released by a fiber that does not own it.
    NotOwner,
    /// `JoinableQueue::task_done` called more times than items were put.
    TooManyTaskDone,
}

impl<T> fmt::Debug for Full<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Full(..)")
    }
}

impl<T> fmt::Display for Full<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("queue is full")
    }
}

impl<T> std::error::Error for Full<T> {}

impl fmt::Display for Empty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("queue is empty")
    }
}

impl std::error::Error for Empty {}

impl fmt::Display for SyncError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SyncError::PastBound => "released more times than acquired",
            SyncError::NotOwner => "released by a fiber that does not own the lock",
            SyncError::TooManyTaskDone => "task_done called more times than items were put",
        })
    }
}

impl std::error::Error for SyncError {}

/// `now + d`, saturating far in the future instead of overflowing.
fn deadline(d: std::time::Duration) -> Option<std::time::Instant> {
    Some(crate::hub::after(d))
}
