//! Layer 1: greenlet-style coroutines on corosensei stacks.
//!
//! A [`Coroutine`] is a stackful coroutine that any other coroutine of its thread can
//! [`switch`](Coroutine::switch) to, passing a value. Every thread has a main coroutine (the
//! thread's own stack); each coroutine has a parent that receives its return value or its panic.
//!
//! ```
//! use greenfiber::Coroutine;
//!
//! let squarer = Coroutine::new(|mut x: i32| loop {
//!     // Give x*x back to whoever switched to us; wait for the next x.
//!     x = greenfiber::current().parent().unwrap().switch(x * x);
//! });
//! let nine: i32 = squarer.switch(3);
//! let sixteen: i32 = squarer.switch(4);
//! assert_eq!((nine, sixteen), (9, 16));
//! ```
//!
//! # Files
//! - `switch.rs`: the symmetric switch over corosensei's resume/suspend (with a diagram).
//! - `tree.rs`: parent links; `thread.rs`: per-thread state; `exit.rs`: `GreenletExit`.
//! - `handle.rs`: the counted handle behind `Coroutine`, and the free list cores come from.
//! - `stack_pool.rs`, `stack.rs`, `overflow.rs`: guarded stacks and the overflow report.
//!
//! # State of a coroutine
//!
//! | started | dead  | in_chain | meaning                                                     |
//! |---------|-------|----------|-------------------------------------------------------------|
//! | false   | false | false    | new: its closure waits on its stack for the first switch    |
//! | true    | false | true     | running (it is `current`), or waiting inside `resume()` of   |
//! |         |       |          | a coroutine above it in the resume chain (see `switch.rs`)  |
//! | true    | false | false    | suspended at its own corosensei `suspend()`                 |
//! | true    | true  | false    | finished, panicked or killed; its stack went back to the pool |
//! | false   | true  | false    | killed before it ever ran; its closure was dropped          |
//!
//! `in_chain` without `started`, and `dead` with `in_chain`, never happen. Main is always
//! `started` and `in_chain` and never has `raw`.
//!
//! # Rules (cited by the `SAFETY` comments)
//! 1. A coroutine, its handles and its stack belong to one thread: `Coroutine` is `!Send` and
//!    `!Sync`, so every switch is between coroutines of the running thread.
//! 2. A `Core` whose coroutine is running or in the resume chain is never freed. Dropping the
//!    last handle of the running coroutine moves it to `ThreadState::retired` instead, which the
//!    next arrival elsewhere drops; dropping the last handle of a started coroutine that is not
//!    running first kills it (unwinding it out of the chain) and leaks it if it refuses to die.
//!    The target of the message in flight is kept alive by its sender until it arrives: by a
//!    handle the suspended sender's frame holds, or by `ThreadState::hold`.
//! 3. `Core::raw` is touched only while its coroutine is neither running nor in the chain: by
//!    `drive` to resume it, by `drive` to recycle its stack once it returned, and to drop the
//!    closure of a coroutine that never started.
//! 4. A value in flight lives in the sender's slot, and the sender stays suspended until the
//!    receiver has taken it: `arrive` takes the value before anything else runs.
//! 5. `Core::yielder` is set when the coroutine starts and is valid until it finishes; only the
//!    running coroutine uses its own yielder.

mod builder;
mod exit;
mod handle;
mod overflow;
mod stack;
mod stack_pool;
mod switch;
mod thread;
mod tree;

use std::any::Any;
use std::cell::{Cell, RefCell, UnsafeCell};
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};

pub use builder::Builder;
pub use exit::GreenletExit;
use handle::Handle;
use stack::FiberStack;
use switch::{Expect, Msg};

use crate::error::SwitchError;

type RawCoroutine = corosensei::Coroutine<(), (), (), FiberStack>;
type Yielder = corosensei::Yielder<(), ()>;

/// The shared state behind every handle to one coroutine.
pub(crate) struct Core {
    id: u64,
    name: Option<Box<str>>,
    is_main: bool,
    started: Cell<bool>,
    dead: Cell<bool>,
    in_chain: Cell<bool>,
    parent: RefCell<Option<Coroutine>>,
    expect: Cell<&'static Expect>,
    yielder: Cell<*const Yielder>,
    raw: UnsafeCell<Option<RawCoroutine>>,
    /// Owned by the scheduler above (the hub): what this coroutine currently waits on, or null.
    /// Layer 1 only stores it.
    park_slot: Cell<*const ()>,
}

impl Core {
    fn label(&self) -> String {
        match &self.name {
            Some(n) => format!("#{} {n:?}", self.id),
            None => format!("#{}", self.id),
        }
    }

    /// Marks a coroutine that never ran as dead and drops its closure.
    fn kill_unstarted(&self) {
        debug_assert!(!self.started.get() && !self.in_chain.get());
        self.dead.set(true);
        // SAFETY: rule 3: a coroutine that never started is not in the chain and not running.
        let raw = unsafe { (*self.raw.get()).take() };
        if let Some(mut raw) = raw {
            // Dropping the closure runs user destructors: keep a panic there from escaping.
            if let Err(p) = catch_unwind(AssertUnwindSafe(|| raw.force_unwind())) {
                log::error!(
                    "coroutine {}: a destructor panicked while its closure was dropped: {}",
                    self.label(),
                    crate::error::panic_message(&*p)
                );
            }
            stack_pool::give(raw.into_stack());
        }
        log::trace!("coroutine {} killed before it started", self.label());
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        if let Some(raw) = self.raw.get_mut().take() {
            if raw.started() && !raw.done() {
                // Only reached for a coroutine that survived its kill (see Coroutine's Drop):
                // unwinding it with corosensei's own mechanism would run through our root
                // function, so its stack is leaked instead.
                std::mem::forget(raw);
            } else {
                drop(raw);
            }
        }
    }
}

/// A handle to a greenlet-style coroutine: cheap to clone, equal by identity, `!Send`.
///
/// Dropping the last handle to a suspended coroutine kills it (see [`Coroutine::kill`]) before
/// `drop` returns, and control comes back to the dropper.
///
/// Handles cannot leave their thread:
///
/// ```compile_fail
/// let c = greenfiber::Coroutine::new(|()| ());
/// std::thread::spawn(move || c.switch::<(), ()>(()));
/// ```
///
/// ```compile_fail
/// fn needs_sync<T: Sync>(_: &T) {}
/// needs_sync(&greenfiber::current());
/// ```
#[derive(Clone)]
pub struct Coroutine(Handle);

impl Coroutine {
    /// A new coroutine running `f`, whose parent is the current coroutine. It starts at the
    /// first switch to it, with the switched value as `f`'s argument.
    pub fn new<A: 'static, R: 'static>(f: impl FnOnce(A) -> R + 'static) -> Coroutine {
        Builder::new().build(f)
    }

    /// A [`Builder`] to set the stack size, parent or name.
    pub fn builder() -> Builder {
        Builder::new()
    }

    fn new_main() -> Coroutine {
        Coroutine(Handle::new(Core {
            id: 0,
            name: Some("main".into()),
            is_main: true,
            started: Cell::new(true),
            dead: Cell::new(false),
            in_chain: Cell::new(true),
            parent: RefCell::new(None),
            expect: Cell::new(Expect::of::<()>()),
            yielder: Cell::new(std::ptr::null()),
            raw: UnsafeCell::new(None),
            park_slot: Cell::new(std::ptr::null()),
        }))
    }

    /// Moves control and `value` to this coroutine; returns the value that is switched back.
    ///
    /// The first switch starts the coroutine with `value` as its argument; a later one resumes
    /// it, and its own pending `switch` returns `value`. Switching to the current coroutine
    /// returns `value` at once; switching to a dead one goes to its first live ancestor.
    ///
    /// Types are checked at run time, so give literals a suffix: `switch(1u32)` where the
    /// receiver waits for a `u32` (a bare `1` is an `i32` and is refused).
    ///
    /// # Panics
    /// If the receiver waits for a type other than `T` (the message names both types; see
    /// [`try_switch`](Coroutine::try_switch)), or if what comes back is not an `R`. A panic in
    /// a child that returns here, or a [`throw`](Coroutine::throw) aimed at this coroutine, is
    /// raised from this call.
    #[inline]
    pub fn switch<T: 'static, R: 'static>(&self, value: T) -> R {
        match self.try_switch(value) {
            Ok(r) => r,
            Err(e) => panic!("greenfiber: {e}"),
        }
    }

    /// Like [`switch`](Coroutine::switch), but a value of the wrong type is refused before
    /// switching: the target is untouched and the value is dropped.
    #[inline]
    pub fn try_switch<T: 'static, R: 'static>(&self, value: T) -> Result<R, SwitchError> {
        switch::switch_value(self, value)
    }

    /// Raises `payload` inside this coroutine at its pending switch, as a panic it can catch.
    ///
    /// If it catches it, `throw` returns what it switches back (boxed). If not, it dies and the
    /// payload goes to its parent (re-raised there, unless it is [`GreenletExit`], which arrives
    /// as a value). A coroutine that never started dies without running; `throw` into the
    /// current coroutine raises at once.
    pub fn throw<E: Any + Send + 'static>(&self, payload: E) -> Box<dyn Any> {
        switch::transfer::<Box<dyn Any>>(self, Msg::Raise(Box::new(payload)))
    }

    /// Kills this coroutine: raises [`GreenletExit`] at its pending switch so its stack unwinds
    /// and its destructors run, and waits until it is dead. The `GreenletExit` comes back here
    /// as a value, never as a panic: for the duration of the kill the victim's parent is the
    /// killer (unless that would make a cycle). A coroutine that never started is marked dead
    /// without running; killing a dead one does nothing; killing the current one raises
    /// `GreenletExit` at once.
    pub fn kill(&self) {
        let c = &*self.0;
        if c.dead.get() || c.is_main {
            return;
        }
        if !c.started.get() {
            c.kill_unstarted();
            return;
        }
        let me = current();
        if me == *self {
            std::panic::resume_unwind(Box::new(GreenletExit));
        }
        let old_parent = if self.set_parent(&me).is_ok() { None } else { self.parent() };
        let _exit: Box<dyn Any> = self.throw(GreenletExit);
        if !c.dead.get() {
            // It caught GreenletExit and lives on: give it its old parent back.
            if let Some(p) = old_parent {
                let _ = self.set_parent(&p);
            }
        }
    }

    /// True once the coroutine has been switched into.
    pub fn is_started(&self) -> bool {
        self.0.started.get()
    }

    /// True once it has finished, panicked or been killed.
    pub fn is_dead(&self) -> bool {
        self.0.dead.get()
    }

    /// Started and not dead.
    pub fn is_active(&self) -> bool {
        self.is_started() && !self.is_dead()
    }

    /// True for the main coroutine of a thread.
    pub fn is_main(&self) -> bool {
        self.0.is_main
    }

    /// The name given with [`Builder::name`] (`"main"` for main coroutines).
    pub fn name(&self) -> Option<&str> {
        self.0.name.as_deref()
    }

    /// A number unique among this thread's coroutines (main is 0).
    pub fn id(&self) -> u64 {
        self.0.id
    }

    /// A word for the scheduler above layer 1: the hub keeps a pointer to the coroutine's
    /// current wait record here. Layer 1 never reads it.
    pub(crate) fn park_slot(&self) -> &Cell<*const ()> {
        &self.0.park_slot
    }

    pub(crate) fn is_current(&self) -> bool {
        thread::with(|ts| std::ptr::eq(ts.current_ptr(), self.0.as_ptr()))
    }

    /// The slow half of `Drop`, for the last handle: a running coroutine is retired until
    /// another one runs; a suspended one is killed.
    #[cold]
    #[inline(never)]
    fn drop_last(&mut self) {
        if self.0.is_main {
            return;
        }
        let me = self.0.as_ptr();
        let running = thread::try_with(|ts| {
            let running = std::ptr::eq(ts.current_ptr(), me);
            if running {
                // Rule 2: the running coroutine must outlive this drop; `retired` keeps it
                // until the next arrival, which drops it as a suspended coroutine's handle.
                debug_assert!(ts.retired.take().is_none(), "two retired coroutines");
                ts.retired.set(Some(Coroutine(self.0.clone())));
                ts.pending.set(true);
            }
            running
        });
        match running {
            Some(true) => {}
            Some(false) if self.0.started.get() && !self.0.dead.get() => self.kill_on_drop(),
            Some(false) => {}
            None if self.0.started.get() && !self.0.dead.get() => {
                log::warn!(
                    "coroutine {} dropped during thread teardown while suspended: its stack is \
                     leaked",
                    self.0.label()
                );
                std::mem::forget(self.0.clone());
            }
            None => {}
        }
    }

    /// Kills a suspended coroutine whose last handle this is.
    fn kill_on_drop(&mut self) {
        let me = current();
        // The victim has no other handle, so no child names it as parent: no cycle is possible.
        let old = self.0.parent.replace(Some(me));
        drop(old);
        let r = catch_unwind(AssertUnwindSafe(|| {
            let _: Box<dyn Any> = self.throw(GreenletExit);
        }));
        if let Err(p) = r {
            log::error!(
                "coroutine {} panicked while it was killed by the drop of its last handle: {}",
                self.0.label(),
                crate::error::panic_message(&*p)
            );
        }
        if !self.0.dead.get() {
            log::warn!(
                "coroutine {} caught GreenletExit and lives on with no handle: it is leaked",
                self.0.label()
            );
            std::mem::forget(self.0.clone());
        }
    }
}

impl Drop for Coroutine {
    #[inline]
    fn drop(&mut self) {
        if self.0.count() == 1 {
            self.drop_last();
        }
    }
}

impl PartialEq for Coroutine {
    fn eq(&self, other: &Coroutine) -> bool {
        std::ptr::eq(self.0.as_ptr(), other.0.as_ptr())
    }
}

impl Eq for Coroutine {}

impl fmt::Debug for Coroutine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &*self.0;
        let state = if c.dead.get() {
            "dead"
        } else if !c.started.get() {
            "new"
        } else if self.is_current() {
            "running"
        } else {
            "suspended"
        };
        f.debug_struct("Coroutine")
            .field("id", &c.id)
            .field("name", &c.name)
            .field("state", &state)
            .finish()
    }
}

/// The coroutine running now; the thread's main coroutine outside any other.
pub fn current() -> Coroutine {
    thread::with(|ts| ts.current())
}

/// [`current`], or `None` if this thread has no coroutine state (never created, or torn down).
/// Never creates the state.
#[allow(dead_code)] // used by layer 5's hooks, which must not create thread state
pub(crate) fn try_current() -> Option<Coroutine> {
    thread::try_current()
}

/// The main coroutine of the current thread.
pub fn main_coroutine() -> Coroutine {
    thread::with(|ts| ts.main.clone())
}
