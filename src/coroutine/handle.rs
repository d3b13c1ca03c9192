//! `Coroutine`: the public handle to a coroutine — cheap to clone, equal by identity, `!Send` —
//! and its methods. Switching itself is in `switch.rs`, parent links in `tree.rs`; what a handle
//! points at (`Core`, its states and rules) is in `mod.rs`, and how it is counted and allocated
//! in `counted.rs`.

use std::any::Any;
use std::cell::{Cell, UnsafeCell};
use std::fmt;
use std::mem::ManuallyDrop;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

use super::counted::CoreRef;
use super::switch::{self, Expect, Msg};
use super::{Builder, Core, GreenletExit, current, thread};
use crate::error::SwitchError;

/// A handle to a greenlet-style coroutine: cheap to clone, equal by identity, `!Send`.
///
/// Dropping the last handle to a suspended coroutine kills it (see [`Coroutine::kill`]) before
/// `drop` returns, and control comes back to the dropper; one parked in the hub (waiting in a
/// `sleep`, a `join`, a `Queue::get` ...) is not killed but waits on, held by its wait as if
/// that held a handle of its own. A panic of the victim while it unwinds is logged, not
/// raised in the dropper; but if the victim's cleanup switches away and
/// the dropper, waiting inside `drop`, is killed meanwhile, the dropper dies of its own kill
/// (unless that `drop` may run during an unwind, where a panic would abort: then it is
/// logged; Layer 1 asks `std::thread::panicking()`, which is also true while any other
/// coroutine of the thread is suspended halfway through an unwind).
///
/// A handle a coroutine holds to *itself* while it is suspended keeps it alive, as any
/// reference cycle does (Python's greenlet has a garbage collector for those; Rust does not).
/// The usual culprit is a temporary: in `current().parent().unwrap().switch(v)` the
/// `current()` handle lives until the end of the statement, across the switch. Bind what
/// you switch to first (`let parent = current().parent().unwrap();`).
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
pub struct Coroutine(pub(super) CoreRef);

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

    pub(super) fn new_main() -> Coroutine {
        Coroutine(CoreRef::new(Core {
            id: 0,
            name: Some("main".into()),
            started: Cell::new(true),
            dead: Cell::new(false),
            in_chain: Cell::new(true),
            parent: Cell::new(None),
            // Rule 6: main is running.
            expect: Cell::new(Expect::nothing()),
            yielder: Cell::new(std::ptr::null()),
            raw: UnsafeCell::new(None),
            park_slot: Cell::new(std::ptr::null()),
            hub_flags: Cell::new(0),
            adopted: Cell::new(false),
            cut_short: Cell::new(false),
            stack_top: 0,
            depth: Cell::new(0),
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
    // Inlined, with the closure in `switch::switch_or_panic`, so the whole fast path lands in
    // the caller: no call, and no save and restore of six registers around it. The refused
    // value's panic is out of line there (its locals deepened every caller's frame).
    // Measured (callgrind op_loops rt): all three inlined 132 instructions per round trip; only
    // the closure 143; only these two 150 (the closure then stays a call that returns its
    // `Result` through memory).
    #[inline(always)]
    pub fn switch<T: 'static, R: 'static>(&self, value: T) -> R {
        switch::switch_or_panic(self, value)
    }

    /// Like [`switch`](Coroutine::switch), but a value of the wrong type is refused before
    /// switching: the target is untouched and the value is dropped.
    #[inline(always)]
    pub fn try_switch<T: 'static, R: 'static>(&self, value: T) -> Result<R, SwitchError> {
        switch::switch_value(self, value)
    }

    /// Raises `payload` inside this coroutine at its pending switch, as a panic it can catch.
    ///
    /// If it catches it, `throw` returns what it switches back (boxed). If not, it dies and the
    /// payload goes to its parent (re-raised there, unless it is [`GreenletExit`], which arrives
    /// as a value). A coroutine that never started dies without running; `throw` into the
    /// current coroutine raises at once. Into a dead coroutine, the payload goes to its first
    /// live ancestor, except a `GreenletExit`, which the dead one eats: it arrives there as a
    /// value.
    pub fn throw<E: Any + Send + 'static>(&self, payload: E) -> Box<dyn Any> {
        self.raise(Box::new(payload))
    }

    /// [`throw`](Self::throw) of a payload that is boxed already (one caught by
    /// `catch_unwind`), so it arrives as itself and not boxed twice.
    pub(crate) fn raise(&self, payload: Box<dyn Any + Send>) -> Box<dyn Any> {
        switch::transfer::<Box<dyn Any>>(self, Msg::Raise(payload))
    }

    /// Kills this coroutine: raises [`GreenletExit`] at its pending switch so its stack unwinds
    /// and its destructors run, and waits until it is dead. The `GreenletExit` comes back here
    /// as a value, never as a panic: for the duration of the kill the victim's parent is the
    /// killer (unless that would make a cycle). A coroutine that never started is marked dead
    /// without running; killing a dead one does nothing; killing the current one raises
    /// `GreenletExit` at once (main included). Killing the main coroutine from another one does
    /// nothing: main has no parent to end into and never dies ([`throw`](Self::throw) raises in
    /// it).
    ///
    /// A victim whose cleanup switches away halfway through its unwind (a `Drop` that
    /// switches) makes `kill` return with the victim alive; while it may still sit in that
    /// destructor, another `kill` is refused (logged) and dropping its last handle leaks it
    /// (logged), because raising there would abort the process. Switch to it to let it finish.
    /// A killer whose victim switches elsewhere and never comes back stays inside `kill`, kept
    /// alive by the victim's parent link (the killer stands in as parent during the kill).
    pub fn kill(&self) {
        self.kill_as(Killer::User);
    }

    /// [`kill`](Self::kill) for a scheduler above Layer 1 that knows itself which coroutines
    /// may be unwinding (the hub, `hub/unwind.rs`): no kill of a coroutine that came back
    /// halfway through an earlier one is refused, and none is noted.
    pub(crate) fn kill_scheduled(&self) {
        self.kill_as(Killer::Scheduler);
    }

    fn kill_as(&self, by: Killer) {
        let c = &*self.0;
        if c.is_main() && self.is_current() {
            std::panic::resume_unwind(Box::new(GreenletExit));
        }
        if c.dead.get() || c.is_main() {
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
        if by == Killer::User && self.may_be_mid_kill() {
            log::error!(
                "kill of coroutine {} refused: an earlier kill of it came back while it may be \
                 suspended in a destructor halfway through its unwind, where a second raise would \
                 abort the process; switch to it to let it finish",
                c.label()
            );
            return;
        }
        // The exit comes back here: the killer is the parent while it unwinds. (If the killer
        // descends from the victim that would be a cycle; it then goes to the victim's parent.)
        let old_parent = self.parent();
        let cycle = self.set_parent(&me).is_err();
        // No handle to the killer stays on its own stack across the throw: a killer left
        // suspended here (the victim switched elsewhere) must still die when its last handle
        // goes. It is the current coroutine again whenever this frame goes on.
        drop(me);
        if cycle {
            let _exit: Box<dyn Any> = self.throw(GreenletExit);
            if by == Killer::User {
                self.note_kill_returned();
            }
            return;
        }
        /// Gives the victim its parent back however the kill ends, a `with_timeout` or a
        /// throw at the killer cutting it short included.
        struct Restore<'a>(&'a Coroutine, Option<Coroutine>);
        impl Drop for Restore<'_> {
            fn drop(&mut self) {
                self.0.restore_parent(&current(), self.1.take());
            }
        }
        let _restore = Restore(self, old_parent);
        let _exit: Box<dyn Any> = self.throw(GreenletExit);
        if by == Killer::User {
            self.note_kill_returned();
        }
    }

    /// True if a raise into this coroutine may land in a destructor halfway through an unwind:
    /// an earlier kill came back while it lived on, with a panic under way on the thread
    /// (`Core::cut_short`), and a panic still is. With none under way, nothing on the thread
    /// is halfway through an unwind, and the note is cleared.
    fn may_be_mid_kill(&self) -> bool {
        let c = &*self.0;
        if c.cut_short.get() && !std::thread::panicking() {
            c.cut_short.set(false);
        }
        c.cut_short.get()
    }

    /// After a kill (or the drop of the last handle) came back: notes whether it may have come
    /// back from halfway through the victim's unwind.
    fn note_kill_returned(&self) {
        let c = &*self.0;
        c.cut_short.set(!c.dead.get() && std::thread::panicking());
    }

    /// After a kill: gives `self` back the parent it had before the killer stood in, unless it
    /// chose another meanwhile (greenlet's `test_parent_restored_on_kill`, for one that caught
    /// `GreenletExit` and lives on; a dead one keeps its place in the tree too).
    fn restore_parent(&self, killer: &Coroutine, old: Option<Coroutine>) {
        let Some(old) = old else { return };
        if self.parent().as_ref() == Some(killer) {
            let _ = self.set_parent(&old);
        }
        // This may be the old parent's last handle, and so on up its chain: dropped the way
        // a released core's parent link is, not nested here.
        let _ = thread::if_live(move |ts| ts.drop_parent_link(old));
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
        self.0.is_main()
    }

    /// Whether it is in the resume chain: running, or below the running one (`switch.rs`).
    #[cfg(test)]
    pub(crate) fn in_chain(&self) -> bool {
        self.0.in_chain.get()
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
    /// current wait record here. Layer 1 only asks whether it is null (rule 7: not null, the
    /// coroutine is parked, and the drop of its last handle passes the count to the park).
    pub(crate) fn park_slot(&self) -> &Cell<*const ()> {
        &self.0.park_slot
    }

    /// Rule 7: as a park of this coroutine ends (on its own stack, while it runs), drops the
    /// count the park took over from a last handle dropped meanwhile, if any. That count may
    /// be the last: the coroutine is then retired, as by the drop of its last handle.
    #[inline(always)]
    pub(crate) fn drop_adopted(&self) {
        if self.0.adopted.get() {
            self.drop_adopted_slow();
        }
    }

    #[cold]
    #[inline(never)]
    fn drop_adopted_slow(&self) {
        self.0.adopted.set(false);
        // SAFETY: rule 7: `adopted` was set, so the park holds one count for this core, which
        // the handle made here owns from now on (and gives up as it is dropped); the core is
        // alive, as this runs on its coroutine's stack.
        let h = unsafe { CoreRef::borrow_core(self.0.as_ptr()) };
        drop(Coroutine(ManuallyDrop::into_inner(h)));
    }

    /// How many handles there are to it (counts the parks took over too), for tests.
    #[cfg(test)]
    pub(crate) fn handle_count(&self) -> usize {
        self.0.count()
    }

    /// Rule 7: the last handle of a coroutine parked by the scheduler above passes its count to
    /// the park instead of killing the coroutine.
    fn pass_to_park(&self) {
        debug_assert!(!self.0.adopted.get(), "greenfiber: a park took over two counts");
        self.0.adopted.set(true);
        // The clone's count stays (this handle's own goes as it is dropped): the park's.
        std::mem::forget(self.0.clone());
    }

    /// A word for the scheduler above layer 1: the hub's per-coroutine state bits (whether it
    /// may be unwinding). Layer 1 never reads it.
    pub(crate) fn hub_flags(&self) -> &Cell<u32> {
        &self.0.hub_flags
    }

    /// Thread teardown: marks this suspended coroutine dead without resuming it, so that a
    /// switch to it goes to its parent and nothing runs on its stack again. Its frames are
    /// never unwound: their destructors do not run (what they own is leaked), and the stack
    /// goes back to the pool. One that never started just dies unstarted (its closure is
    /// dropped). A no-op for main, for a coroutine that is running or in the resume chain, and
    /// for one that has finished.
    ///
    /// # Safety
    /// Nothing on the coroutine's stack may be referred to from elsewhere by address, and no
    /// destructor there may be needed for soundness (leaking must be all that skipping them
    /// does): the stack is reused.
    pub(crate) unsafe fn abandon(&self) {
        let c = &*self.0;
        if c.is_main() || c.dead.get() || c.in_chain.get() {
            return;
        }
        if !c.started.get() {
            c.kill_unstarted();
            return;
        }
        c.set_dead();
        // SAFETY: rule 3: suspended at its own `suspend()` and not in the chain, so no
        // `resume()` of it is active and nothing else borrows `raw`.
        if let Some(mut raw) = unsafe { (*c.raw.get()).take() } {
            // SAFETY: `force_reset` needs that nothing on the stack must run `Drop`; the
            // caller's contract says skipping those destructors only leaks.
            unsafe { raw.force_reset() };
            super::stack_pool::give(raw.into_stack());
        }
        log::trace!("coroutine {} abandoned at thread teardown", c.label());
    }

    pub(crate) fn is_current(&self) -> bool {
        thread::with(|ts| std::ptr::eq(ts.current_ptr(), self.0.as_ptr()))
    }

    /// The slow half of `Drop`, for the last handle: a running coroutine is retired until
    /// another one runs; a suspended one is killed, or, parked, kept by its park (rule 7).
    #[cold]
    #[inline(never)]
    fn drop_last(&mut self) {
        if self.0.is_main() {
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
            Some(false) if self.0.started.get() && !self.0.dead.get() => {
                if self.0.park_slot.get().is_null() {
                    self.kill_on_drop();
                } else {
                    self.pass_to_park();
                }
            }
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
    ///
    /// A panic that reaches the dropper here is either the victim's (it panicked while it
    /// unwound, and died: logged, not raised, as a drop must not fail) or the dropper's own: the
    /// victim's cleanup switched away and something raised into the dropper, waiting inside
    /// this drop (a kill of the dropper). That one is raised on in the dropper, unless this drop
    /// may itself run during an unwind, where a panic leaving it would abort the process.
    fn kill_on_drop(&mut self) {
        if self.may_be_mid_kill() {
            log::warn!(
                "coroutine {} dropped while it may be suspended in a destructor halfway through \
                 the unwind of an earlier kill: a second raise there would abort the process, so \
                 it is leaked",
                self.0.label()
            );
            std::mem::forget(self.0.clone());
            return;
        }
        let in_unwind = std::thread::panicking();
        // The victim has no other handle, so no child names it as parent: no cycle is possible.
        // (No handle to the dropper stays in this frame across the throw, as in `kill`.)
        let old = self.0.parent.replace(Some(current()));
        let r = catch_unwind(AssertUnwindSafe(|| {
            let _: Box<dyn Any> = self.throw(GreenletExit);
        }));
        self.note_kill_returned();
        let mut own = None;
        if let Err(p) = r {
            if self.0.dead.get() {
                log::error!(
                    "coroutine {} panicked while it was killed by the drop of its last handle: {}",
                    self.0.label(),
                    crate::error::panic_message(&*p)
                );
            } else if in_unwind {
                log::error!(
                    "{:?} was raised into while it dropped the last handle to coroutine {} \
                     during an unwind; dropped, as raising it there would abort: {}",
                    current(),
                    self.0.label(),
                    crate::error::panic_message(&*p)
                );
            } else {
                own = Some(p);
            }
        }
        self.restore_parent(&current(), old);
        // A survivor with another handle now (it took one to itself while it unwound) is owned
        // by that handle, and dropping it kills it again, as greenlet does; one parked in the
        // hub is kept by its park (rule 7), as if the park held a handle.
        if !self.0.dead.get() && self.0.count() == 1 {
            if !self.0.park_slot.get().is_null() {
                self.pass_to_park();
            } else {
                log::warn!(
                    "coroutine {} did not die of the drop of its last handle (it caught \
                     GreenletExit, or its dropper was killed while it unwound) and lives on with \
                     no handle: it is leaked",
                    self.0.label()
                );
                std::mem::forget(self.0.clone());
            }
        }
        if let Some(p) = own {
            resume_unwind(p);
        }
    }
}

/// Who kills: a user, or the scheduler above (see [`Coroutine::kill_scheduled`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Killer {
    User,
    Scheduler,
}

impl Drop for Coroutine {
    #[inline]
    fn drop(&mut self) {
        let c = &*self.0;
        // A dead coroutine out of the chain is neither running nor suspended (its stack went
        // back to the pool, or it never had one): `drop_last` would have nothing to do.
        if self.0.count() == 1 && (!c.dead.get() || c.in_chain.get()) {
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
