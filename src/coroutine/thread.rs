//! Per-thread state: the main coroutine, the current one, and the message in flight.
//!
//! Created lazily by the first call that needs it on a thread (`current()`, `Coroutine::new`,
//! any switch). Torn down by the thread-local destructor at thread exit, on the thread's own
//! stack, when main is current again: the strong counts it owns are released then, without the
//! kill-on-drop logic (nothing can be switched into during teardown). A coroutine whose last
//! handle is dropped after that point (by another thread-local's destructor) is leaked with a
//! `log::warn!` instead of killed (see `Coroutine`'s `Drop`).

use std::cell::Cell;
use std::rc::Rc;

use super::switch::Msg;
use super::{Core, Coroutine};

/// The state every thread with coroutines has.
pub(crate) struct ThreadState {
    /// The thread's main coroutine: the OS thread's own stack.
    pub(crate) main: Coroutine,
    /// The coroutine that runs now (greenlet's `getcurrent()`). The pointer owns one strong
    /// count of its `Rc<Core>` (rule 2): `swap_current` moves that count to the arriving
    /// coroutine and hands the old one back as a handle to drop once the arrival settled.
    current: Cell<*const Core>,
    /// Where the message in flight goes. The sender keeps the target alive until it arrives:
    /// through the handle it switches with (borrowed by its suspended frame) or through `hold`.
    pub(crate) target: Cell<*const Core>,
    /// The message in flight between a sender and its receiver.
    pub(crate) msg: Cell<Option<Msg>>,
    /// A handle that keeps the message's target alive when the sender's frame does not
    /// (a target found by walking up from a dead coroutine, or a finishing coroutine's parent).
    pub(crate) hold: Cell<Option<Coroutine>>,
    /// Source of coroutine ids on this thread (main is 0).
    pub(crate) next_id: Cell<u64>,
}

impl ThreadState {
    fn new() -> ThreadState {
        let main = Coroutine::new_main();
        let ts = ThreadState {
            current: Cell::new(Rc::into_raw(main.0.clone())),
            main,
            target: Cell::new(std::ptr::null()),
            msg: Cell::new(None),
            hold: Cell::new(None),
            next_id: Cell::new(1),
        };
        STATE_LIVE.with(|l| l.set(true));
        ts
    }

    /// The running coroutine's core (alive: rule 2).
    #[inline]
    pub(crate) fn current_ptr(&self) -> *const Core {
        self.current.get()
    }

    /// A new handle to the running coroutine.
    #[inline]
    pub(crate) fn current(&self) -> Coroutine {
        let p = self.current.get();
        // SAFETY: `current` owns a strong count of a live `Rc<Core>` built by `Rc::into_raw`,
        // so adding one and making a second `Rc` from the same pointer is sound.
        unsafe {
            Rc::increment_strong_count(p);
            Coroutine(Rc::from_raw(p))
        }
    }

    /// Makes `me` the current coroutine; returns the previous one's handle, which the caller
    /// drops once it has settled (dropping it may kill that coroutine if it was the last).
    ///
    /// # Safety
    /// `me` must be the core of the coroutine that runs now, which is alive (rule 2).
    #[inline]
    pub(crate) unsafe fn swap_current(&self, me: *const Core) -> Coroutine {
        // SAFETY: the caller's contract: `me` is a live `Rc<Core>` allocation; the new strong
        // count is owned by `current`.
        unsafe { Rc::increment_strong_count(me) };
        let prev = self.current.replace(me);
        // SAFETY: `prev` carried the strong count `current` owned; it moves into the handle.
        Coroutine(unsafe { Rc::from_raw(prev) })
    }
}

impl Drop for ThreadState {
    fn drop(&mut self) {
        STATE_LIVE.with(|l| l.set(false));
        // SAFETY: `current` owns one strong count (see the field); released as a plain `Rc`,
        // without `Coroutine`'s kill-on-drop, because nothing can be switched into any more.
        drop(unsafe { Rc::from_raw(self.current.get()) });
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

thread_local! {
    /// True while `STATE` is alive; `const`, so reading it never creates `STATE`.
    static STATE_LIVE: Cell<bool> = const { Cell::new(false) };
}

/// The running coroutine, without creating this thread's state.
#[allow(dead_code)] // see `super::try_current`
pub(crate) fn try_current() -> Option<Coroutine> {
    if !STATE_LIVE.with(Cell::get) {
        return None;
    }
    try_with(|ts| ts.current())
}
