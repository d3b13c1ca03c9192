//! Per-thread state: the main coroutine, the current one, and the message in flight.
//!
//! Created lazily by the first call that needs it on a thread (`current()`, `Coroutine::new`,
//! any switch). Torn down by the thread-local destructor at thread exit: the `current` and
//! `main` handles are dropped then; a coroutine whose last handle is dropped after that point
//! (by another thread-local's destructor) cannot be switched into any more and is leaked with a
//! `log::warn!` instead of killed (see `Coroutine`'s `Drop`).

use std::cell::{Cell, RefCell};

use super::switch::Pending;
use super::{Core, Coroutine};

/// The state every thread with coroutines has.
pub(crate) struct ThreadState {
    /// The thread's main coroutine: the OS thread's own stack.
    pub(crate) main: Coroutine,
    /// The coroutine that runs now (greenlet's `getcurrent()`). Replaced by each coroutine as a
    /// message arrives for it; the handle it replaces is dropped only after the arrival settled.
    pub(crate) current: RefCell<Coroutine>,
    /// Where the message in flight goes (raw copy of `pending`'s target, readable without
    /// taking `pending` out of its cell).
    pub(crate) target: Cell<*const Core>,
    /// The message in flight between a sender and its receiver.
    pub(crate) pending: Cell<Option<Pending>>,
    /// Source of coroutine ids on this thread (main is 0).
    pub(crate) next_id: Cell<u64>,
}

impl ThreadState {
    fn new() -> ThreadState {
        let main = Coroutine::new_main();
        ThreadState {
            current: RefCell::new(main.clone()),
            main,
            target: Cell::new(std::ptr::null()),
            pending: Cell::new(None),
            next_id: Cell::new(1),
        }
    }
}

thread_local! {
    static STATE: ThreadState = ThreadState::new();
}

/// Runs `f` with this thread's state. Panics only during thread-local teardown.
#[inline]
pub(crate) fn with<T>(f: impl FnOnce(&ThreadState) -> T) -> T {
    STATE.with(f)
}

/// Like [`with`], but `None` once the thread's state has been torn down.
pub(crate) fn try_with<T>(f: impl FnOnce(&ThreadState) -> T) -> Option<T> {
    STATE.try_with(f).ok()
}
