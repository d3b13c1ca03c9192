//! `Event` (a flag that wakes every waiter when set) and `AsyncResult<T>` (a value that is set
//! once, possibly from another OS thread).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::waiters::WaitList;
use crate::error::Error;
use crate::hub::{self, RemoteWaker, remote_signal};

/// A flag fibers can wait for (gevent's `Event`): `set` wakes every waiter, `wait` returns at
/// once while it is set, `clear` resets it.
///
/// ```
/// use std::rc::Rc;
/// use greenfiber::{spawn, sync::Event};
/// let ev = Rc::new(Event::new());
/// let ev2 = ev.clone();
/// let w = spawn(move || { ev2.wait(); "released" });
/// greenfiber::yield_now();
/// ev.set();
/// assert_eq!(w.get().unwrap(), "released");
/// ```
#[derive(Default)]
pub struct Event {
    flag: Cell<bool>,
    waiters: WaitList<()>,
}

impl Event {
    /// A cleared event.
    pub fn new() -> Event {
        Event::default()
    }

    /// Sets the flag and wakes every waiter (each is granted the wake-up, so a `clear` before
    /// they run does not strand them).
    pub fn set(&self) {
        self.flag.set(true);
        self.waiters.grant_all(|| ());
    }

    /// Clears the flag.
    pub fn clear(&self) {
        self.flag.set(false);
    }

    /// True while set.
    pub fn is_set(&self) -> bool {
        self.flag.get()
    }

    /// Waits until the flag is set (at once if it is). Returns true.
    pub fn wait(&self) -> bool {
        self.wait_deadline(None)
    }

    /// Waits at most `d`; true if the event was set.
    pub fn wait_timeout(&self, d: Duration) -> bool {
        self.wait_deadline(super::deadline(d))
    }

    fn wait_deadline(&self, deadline: Option<Instant>) -> bool {
        if self.flag.get() {
            // Those the last `set` woke return first, as in gevent (its issue 1520): yield
            // until they have run. (Not in the hub, which cannot yield; nor then needed.)
            while self.waiters.unclaimed() > 0 && !hub::in_hub() {
                hub::yield_now();
            }
            return true;
        }
        // Rule 4 in hub/park.rs: no switch between the check above and the enqueue.
        match self.waiters.wait_for("an event", None, deadline, |()| {}) {
            super::waiters::Outcome::Granted(_) => true,
            super::waiters::Outcome::TimedOut(_) => self.flag.get(),
        }
    }

    /// How many fibers wait.
    pub fn waiting(&self) -> usize {
        self.waiters.len()
    }
}

/// A result that is produced once and read by any number of fibers (gevent's `AsyncResult`).
/// A cheap `Clone` handle, `!Send`; use [`sender`](AsyncResult::sender) to complete it from
/// another OS thread.
///
/// [`get`](AsyncResult::get) returns `Ok(value)`, or `Err(e)` for a result completed with
/// [`set_error`](AsyncResult::set_error) — an error comes back as an `Err`, never a panic.
/// A later `set` replaces the value and wakes any new waiters (as in gevent).
///
/// ```
/// use greenfiber::{spawn, sync::AsyncResult};
/// let r = AsyncResult::new();
/// let r2 = r.clone();
/// spawn(move || r2.set(42));
/// assert_eq!(r.get(), Ok(42)); // main waits; the hub runs the setter
/// ```
pub struct AsyncResult<T> {
    inner: Rc<Inner<T>>,
}

struct Inner<T> {
    value: RefCell<Option<Result<T, Error>>>,
    waiters: WaitList<()>,
}

impl<T> Clone for AsyncResult<T> {
    fn clone(&self) -> Self {
        AsyncResult { inner: self.inner.clone() }
    }
}

impl<T: Clone> Default for AsyncResult<T> {
    fn default() -> Self {
        AsyncResult::new()
    }
}

impl<T: Clone> AsyncResult<T> {
    /// An empty result.
    pub fn new() -> AsyncResult<T> {
        AsyncResult {
            inner: Rc::new(Inner { value: RefCell::new(None), waiters: WaitList::new() }),
        }
    }

    /// Stores `v` and wakes every waiter.
    pub fn set(&self, v: T) {
        self.complete(Ok(v));
    }

    /// Stores the error `e` (which `get` returns as `Err`) and wakes every waiter.
    pub fn set_error(&self, e: Error) {
        self.complete(Err(e));
    }

    fn complete(&self, r: Result<T, Error>) {
        *self.inner.value.borrow_mut() = Some(r);
        self.inner.waiters.grant_all(|| ());
    }

    /// True once set (with a value or an error).
    pub fn ready(&self) -> bool {
        self.inner.value.borrow().is_some()
    }

    /// True once set with a value.
    pub fn successful(&self) -> bool {
        matches!(*self.inner.value.borrow(), Some(Ok(_)))
    }

    /// Waits until set; the value, or the error given to `set_error`.
    pub fn get(&self) -> Result<T, Error> {
        self.get_deadline(None)
    }

    /// As [`get`](AsyncResult::get), waiting at most `d`: `Err(Error::TimedOut)` if still unset.
    pub fn get_timeout(&self, d: Duration) -> Result<T, Error> {
        self.get_deadline(super::deadline(d))
    }

    /// The outcome if set, without waiting: `Err(Error::NotReady)` if not.
    pub fn try_get(&self) -> Result<T, Error> {
        self.inner.value.borrow().clone().unwrap_or(Err(Error::NotReady))
    }

    fn get_deadline(&self, deadline: Option<Instant>) -> Result<T, Error> {
        loop {
            if let Some(r) = self.inner.value.borrow().clone() {
                return r;
            }
            // Rule 4 in hub/park.rs: no switch between the check above and the enqueue.
            if self.inner.waiters.wait("an AsyncResult", deadline) == hub::park::Wake::TimedOut {
                return self.inner.value.borrow().clone().unwrap_or(Err(Error::TimedOut));
            }
        }
    }

    /// A `Send` handle that completes this result from any OS thread. A helper fiber on this
    /// thread waits for it (through `hub::remote_signal`) and calls `set`; dropping the sender
    /// unused ends that fiber and leaves the result unset.
    pub fn sender(&self) -> AsyncSender<T>
    where
        T: Send + 'static,
    {
        let slot = Arc::new(Mutex::new(None));
        let (mut wait, waker) = remote_signal();
        let (me, theirs) = (self.clone(), slot.clone());
        hub::spawn_named("AsyncResult sender", move || {
            wait.wait();
            let r = theirs.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(r) = r {
                me.complete(r);
            }
        });
        AsyncSender { slot, waker, sent: false }
    }
}

/// Completes an [`AsyncResult`] from any OS thread (from [`AsyncResult::sender`]).
pub struct AsyncSender<T> {
    slot: Arc<Mutex<Option<Result<T, Error>>>>,
    waker: RemoteWaker,
    sent: bool,
}

impl<T> AsyncSender<T> {
    /// Sets the result to `v`.
    pub fn send(mut self, v: T) {
        self.finish(Ok(v));
    }

    /// Sets the result to the error `e`.
    pub fn send_error(mut self, e: Error) {
        self.finish(Err(e));
    }

    fn finish(&mut self, r: Result<T, Error>) {
        *self.slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
        self.sent = true;
        self.waker.wake();
    }
}

impl<T> Drop for AsyncSender<T> {
    fn drop(&mut self) {
        if !self.sent {
            // Let the helper fiber end instead of keeping the hub waiting on another thread.
            self.waker.wake();
        }
    }
}
