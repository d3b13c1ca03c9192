//! The symmetric switch, built on corosensei's asymmetric resume/suspend.
//!
//! greenlet lets any coroutine switch to any other of its thread; corosensei only lets a
//! coroutine *resume* a suspended one (which then runs on top of it) and *suspend* back to
//! whoever resumed it. We keep corosensei's picture as the **resume chain**: main at the
//! bottom, then each coroutine that is blocked inside `resume()`, then the running one on top.
//! A coroutine in the chain is suspended in greenlet's sense (it waits in a `switch`), but its
//! native frames sit below the running one:
//!
//! ```text
//!   main's stack          A's stack             B's stack (running)
//!   +---------------+     +---------------+     +---------------+
//!   | user frames   |     | user frames   |     | user frames   |
//!   | A.switch(..)  |     | B.switch(..)  |     | main.switch() |  <- B wants main
//!   |  drive()      |     |  drive()      |     |  drive()      |
//!   |   resume(A) ------->|   resume(B) ------->|   suspend() ---+  (A is in the chain:
//!   +---------------+     +---------------+     +---------------+   go *down* to it)
//!          ^                     |
//!          +---- suspend() <-----+   A's drive() sees the message is not for A and
//!                                    suspends further down; main's drive() takes it.
//! ```
//!
//! Every `switch` ends in [`drive`], the trampoline: it looks at the message in flight and
//! either suspends (the target is below us in the chain) or resumes the target on top of us
//! (it is suspended at its own `suspend()` or not started), and loops until a message for us
//! arrives. A switch to the coroutine that resumed us — the common case, a fiber going back to
//! its hub — is one corosensei suspend; a switch to a suspended coroutine is one resume. A
//! coroutine that returns goes back to its corosensei resumer, whose `drive()` forwards the
//! result to the dead coroutine's parent.
//!
//! The chain never grows past the number of live coroutines and no switch grows any native
//! stack: each `resume()` frame lives on the resumer's own stack.
//!
//! Values cross without allocation. The sender checks, before anything moves, that the receiver
//! waits for the value's type (boxing it first if the receiver takes any type), and puts the
//! value in the thread's value slot (`ThreadState::slot`) if the type fits there (64 bytes),
//! else in a slot on its own stack that it never drops, whose address goes in the thread state;
//! the receiver, which knows the same type, moves the value out with one read before anything
//! else runs (rule 4 in `coroutine/mod.rs`): the null it leaves in `ThreadState::value` makes
//! that read happen once. So a
//! switch between two coroutines that agree on the type — a fiber and its hub, a generator and
//! its consumer — costs a few loads and stores on top of corosensei's own switch. Everything
//! else (a panic, a `throw`, a value the receiver did not expect) travels as a [`Msg`] and is
//! checked on arrival. A return value cannot stay on the returning stack, which is about to be
//! recycled: when the parent waits for its type and it fits the thread's value slot it crosses
//! there like a switched value, else it is boxed (free for zero-sized types).

use std::any::{Any, TypeId, type_name};
use std::mem::MaybeUninit;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::ptr;

use corosensei::CoroutineResult;

use super::exit::GreenletExit;
use super::thread::{self, ThreadState, ValueSlot};
use super::{Core, Coroutine};
use crate::error::SwitchError;

/// A message that is not a checked value.
pub(crate) enum Msg {
    /// An owned value (a return value), with its type's name for error messages; the receiver
    /// checks its type on arrival.
    Boxed(Box<dyn Any>, &'static str),
    /// Raise this payload in the receiver: a `throw`/`kill`, or a child's panic.
    Raise(Box<dyn Any + Send>),
}

/// The type a coroutine waits to receive: the `R` of its pending `switch`, or the argument type
/// of a coroutine not started yet; [`Expect::nothing`] while it runs and once it is dead (rule 6
/// in `coroutine/mod.rs`). `Box<dyn Any>` accepts anything (used by `throw`). One static per
/// type, so noting what a coroutine waits for is a single pointer store.
///
/// Senders compare `type_id`, not the pointer: each crate (and codegen unit) that instantiates
/// `of::<R>` may get its own copy of the constant, so a pointer compare fails between user code
/// and this crate. Tried: every switch from user code then took the slow path (+65
/// instructions per round trip).
pub(crate) struct Expect {
    type_id: TypeId,
    name: fn() -> &'static str,
}

impl Expect {
    #[inline(always)]
    pub(crate) fn of<R: 'static>() -> &'static Expect {
        &const { Expect { type_id: TypeId::of::<R>(), name: type_name::<R> } }
    }

    /// What a running or dead coroutine waits for: a type that is private to this module and
    /// has no values, so no sender's `T` is it. The fast path's one type check thereby also
    /// sends a switch to the current coroutine or to a dead one down the slow path.
    #[inline(always)]
    pub(crate) fn nothing() -> &'static Expect {
        Expect::of::<Nothing>()
    }
}

/// See [`Expect::nothing`].
enum Nothing {}

/// `value` as an `R`: itself if `T` is `R`, boxed if `R` is `Box<dyn Any>`, else an error.
fn convert<T: 'static, R: 'static>(value: T) -> Result<R, SwitchError> {
    let mut v = Some(value);
    if let Some(r) = (&mut v as &mut dyn Any).downcast_mut::<Option<R>>() {
        return Ok(r.take().expect("greenfiber: a value converted twice"));
    }
    let boxed: Box<dyn Any> = Box::new(v.take().expect("greenfiber: a value converted twice"));
    let mut b = Some(boxed);
    match (&mut b as &mut dyn Any).downcast_mut::<Option<R>>() {
        Some(r) => Ok(r.take().expect("greenfiber: a value converted twice")),
        None => Err(SwitchError { expected: type_name::<R>(), received: type_name::<T>() }),
    }
}

/// The first coroutine at or above `target` that is not dead (main never is).
pub(crate) fn first_live(target: &Coroutine) -> Coroutine {
    let mut t = target.clone();
    while t.0.dead.get() {
        let parent = t.0.parent_handle();
        t = parent.expect("greenfiber: a dead coroutine without a parent");
    }
    t
}

/// The first live coroutine above `me` (a dead one), by its parent links, without handles.
///
/// # Safety
/// `me` is alive, and no user code runs while this walks (it could change the links).
#[inline]
unsafe fn first_live_ancestor(me: &Core) -> *const Core {
    let mut t = me;
    loop {
        let p = t.parent_ptr().expect("greenfiber: a dead coroutine without a parent");
        // SAFETY: `t`'s parent link keeps its parent alive, and `t` is alive: `me` by the
        // caller's contract, an ancestor by the link walked to reach it (unchanged meanwhile).
        let parent = unsafe { &*p };
        if !parent.dead.get() {
            return p;
        }
        t = parent;
    }
}

/// Where `msg` really goes: dead targets pass it to their parents; a raise into a coroutine
/// that never started kills it without running it and passes on to its parent (greenlet). A
/// `GreenletExit` thrown at a dead coroutine is eaten by it: it arrives as a value
/// (greenlet's `test_throw.py::test_kill`).
fn route(target: &Coroutine, mut msg: Msg) -> (Coroutine, Msg) {
    if target.0.dead.get() {
        msg = exit_as_value(msg);
    }
    let mut t = first_live(target);
    while !t.0.started.get() {
        let Msg::Raise(p) = msg else { break };
        t.0.kill_unstarted();
        msg = exit_as_value(Msg::Raise(p));
        t = first_live(&t);
    }
    (t, msg)
}

/// A raised `GreenletExit` as the value it becomes when the target dies without unwinding.
fn exit_as_value(msg: Msg) -> Msg {
    match msg {
        Msg::Raise(p) if p.is::<GreenletExit>() => Msg::Boxed(p, type_name::<GreenletExit>()),
        m => m,
    }
}

/// `try_switch`: checks the receiver waits for a `T`, then sends `value`.
///
/// The fast path — a live target other than the current coroutine that waits for exactly a
/// `T` — is the whole cost of a switch besides corosensei's. One type check finds it: the
/// current coroutine and dead ones wait for [`Expect::nothing`] (rule 6).
#[inline(always)]
pub(crate) fn switch_value<T: 'static, R: 'static>(
    target: &Coroutine,
    value: T,
) -> Result<R, SwitchError> {
    switch_with(target, value, Ok, switch_value_slow::<T, R>)
}

/// `switch`: [`switch_value`] that panics if the value is refused. The slow path, with the
/// refusal's error and message, is out of line: inlined, their locals made the frame of every
/// caller (every park, on each waiting fiber's stack) a cache line deeper.
#[inline(always)]
pub(crate) fn switch_or_panic<T: 'static, R: 'static>(target: &Coroutine, value: T) -> R {
    switch_with(target, value, |r| r, switch_slow_or_panic::<T, R>)
}

/// The fast path of [`switch_value`] and [`switch_or_panic`]: `ok` wraps what arrives, `slow`
/// takes every other case.
#[inline(always)]
fn switch_with<T: 'static, R: 'static, O>(
    target: &Coroutine,
    value: T,
    ok: impl FnOnce(R) -> O,
    slow: impl FnOnce(&ThreadState, &Coroutine, T) -> O,
) -> O {
    thread::with(
        // Inlined into `Coroutine::switch`, itself inlined into its caller (see there).
        #[inline(always)]
        |ts| {
            let me = ts.current_ptr();
            let t = &*target.0;
            if t.expect.get().type_id != TypeId::of::<T>() {
                return slow(ts, target, value);
            }
            // Rule 6: a coroutine that waits for a `T` is neither dead nor running.
            debug_assert!(!t.dead.get() && !ptr::eq(t, me));
            // Rule 2: `target` is borrowed by this frame, which keeps it alive until it arrives.
            ok(go::<T, R>(ts, me, t, Payload::Value(value)))
        },
    )
}

/// The slow path of [`switch_or_panic`].
#[cold]
#[inline(never)]
fn switch_slow_or_panic<T: 'static, R: 'static>(
    ts: &ThreadState,
    target: &Coroutine,
    value: T,
) -> R {
    match switch_value_slow(ts, target, value) {
        Ok(r) => r,
        Err(e) => panic!("greenfiber: {e}"),
    }
}

/// A switch to a dead coroutine (the value goes to its first live ancestor), to the current
/// one, to one that takes any type, or with the wrong type.
#[cold]
#[inline(never)]
fn switch_value_slow<T: 'static, R: 'static>(
    ts: &ThreadState,
    target: &Coroutine,
    value: T,
) -> Result<R, SwitchError> {
    let recv = first_live(target);
    let me = ts.current_ptr();
    if ptr::eq(recv.0.as_ptr(), me) {
        return convert::<T, R>(value);
    }
    let expect = recv.0.expect.get();
    // Rule 2: `recv` lives in this frame until the message arrived.
    if expect.type_id == TypeId::of::<T>() {
        return Ok(go::<T, R>(ts, me, &recv.0, Payload::Value(value)));
    }
    if expect.type_id == TypeId::of::<Box<dyn Any>>() {
        let boxed: Box<dyn Any> = Box::new(value);
        return Ok(go::<Box<dyn Any>, R>(ts, me, &recv.0, Payload::Value(boxed)));
    }
    Err(SwitchError { expected: (expect.name)(), received: type_name::<T>() })
}

/// Sends `msg` to `target` (routed: dead targets pass it up; raises kill unstarted ones) and
/// returns what the current coroutine receives next.
pub(crate) fn transfer<R: 'static>(target: &Coroutine, msg: Msg) -> R {
    thread::with(|ts| {
        let (recv, msg) = route(target, msg);
        let me = ts.current_ptr();
        if ptr::eq(recv.0.as_ptr(), me) {
            return deliver::<R>(msg);
        }
        // Rule 2: `recv` lives in this frame until the message arrived.
        go::<(), R>(ts, me, &recv.0, Payload::Msg(msg))
    })
}

/// What a sender puts in flight.
enum Payload<T> {
    /// A value of the type the receiver waits for (checked by the sender).
    Value(T),
    /// A message the receiver checks on arrival.
    Msg(Msg),
}

/// Puts the message in flight to `target`, drives control there, and takes what comes back.
/// `target` is not `me`: no coroutine sends to itself (rule 6 on the fast path; the other
/// senders check).
#[inline(always)]
fn go<T: 'static, R: 'static>(
    ts: &ThreadState,
    me: *const Core,
    target: &Core,
    what: Payload<T>,
) -> R {
    // SAFETY: rule 2: the running coroutine's core is alive.
    let me_ref = unsafe { &*me };
    // First, as the logger may switch itself (a socket write that waits, under monkey
    // patching): that switch leaves `me` waiting for nothing (rule 6) when it comes back here,
    // and uses the thread's value slot and `ts.slow`, so nothing may be in flight yet either.
    if trace_on() {
        trace_switch(me_ref, target);
    }
    me_ref.expect.set(Expect::of::<R>());
    ts.target.set(target);
    // Where a value that does not fit the thread's slot waits: this frame, which is suspended
    // until the receiver has moved it out (rule 4) and never drops it.
    let mut frame_slot = MaybeUninit::<T>::uninit();
    let value = match what {
        Payload::Value(v) if ValueSlot::fits::<T>() => ts.slot.put(v),
        Payload::Value(v) => frame_slot.write(v) as *mut T as *mut (),
        Payload::Msg(msg) => {
            ts.slow.set(Some(msg));
            ptr::null_mut()
        }
    };
    ts.value.set(value);
    drive(ts, me_ref, target);
    // SWITCH: other coroutines ran; only `ts` and `me` are known to be unchanged.
    arrive::<R>(ts, me)
}

#[cold]
#[inline(never)]
fn trace_switch(from: &Core, to: &Core) {
    // The logger's own filter too (`trace_on` in `go` tests only the level): the maximum level
    // is Trace whenever any target is traced (env_logger's `RUST_LOG=app=trace`), and without
    // the filter every switch would format two labels for a logger that drops them.
    if log::log_enabled!(log::Level::Trace) {
        log::trace!("switch {} -> {}", from.label(), to.label());
    }
}

/// Takes the message that arrived for the current coroutine and makes it `current`, then drops
/// the handles kept for this arrival (which may kill a coroutine whose last handle it was).
#[inline(always)]
fn arrive<R: 'static>(ts: &ThreadState, me: *const Core) -> R {
    // Rule 4: take the value before anything else can run; the null left behind means no
    // second read of it can happen.
    let value = ts.value.replace(ptr::null_mut());
    if value.is_null() {
        return arrive_slow::<R>(ts, me);
    }
    // SAFETY: `me` is alive (rule 2); nothing changed `expect` since the sender read it:
    // no user code runs between a send and its arrival.
    debug_assert!(unsafe { &*me }.expect.get().type_id == TypeId::of::<R>());
    // Rule 4: the value in flight is a `T` that nobody has moved out yet (`ts.value` was not
    // null) and that the sender never drops; the sender checked that `T` is the `R` this
    // coroutine waits for (its `expect`, set by `go::<_, R>`, or the argument type of
    // `body::<R, _, _>`).
    // SAFETY: by rule 4 as above, the value is in the thread's slot if an `R` fits there, else
    // at `value` (in the sender's suspended frame), and this read moves it here.
    let v = unsafe {
        if ValueSlot::fits::<R>() { ts.slot.take::<R>() } else { ptr::read(value as *const R) }
    };
    ts.set_current(me);
    // Rule 6: running, it waits for nothing.
    // SAFETY: rule 2: the running coroutine's core is alive.
    unsafe { &*me }.expect.set(Expect::nothing());
    if ts.pending.get() {
        ts.release();
    }
    v
}

/// `arrive` of a message that is not a checked value (it is in `ts.slow`).
#[cold]
#[inline(never)]
fn arrive_slow<R: 'static>(ts: &ThreadState, me: *const Core) -> R {
    let msg = ts.slow.take().expect("greenfiber: arrived without a message");
    ts.set_current(me);
    // Rule 6, as in `arrive`.
    // SAFETY: rule 2: the running coroutine's core is alive.
    unsafe { &*me }.expect.set(Expect::nothing());
    if ts.pending.get() {
        ts.release();
    }
    deliver::<R>(msg)
}

/// What a [`Msg`] means for a receiver waiting for an `R`: the value, or a panic.
#[cold]
#[inline(never)]
fn deliver<R: 'static>(msg: Msg) -> R {
    match msg {
        Msg::Boxed(b, name) => {
            let mut any = Some(b);
            if let Some(r) = (&mut any as &mut dyn Any).downcast_mut::<Option<R>>() {
                // `R` is `Box<dyn Any>`: it takes the box as it is.
                return r.take().expect("greenfiber: a value delivered twice");
            }
            let b = any.take().expect("greenfiber: a value delivered twice");
            match b.downcast::<R>() {
                Ok(v) => *v,
                Err(_) => {
                    let e = SwitchError { expected: type_name::<R>(), received: name };
                    panic!("greenfiber: {e}")
                }
            }
        }
        Msg::Raise(p) => resume_unwind(p),
    }
}

/// The trampoline: moves control toward the message's target until a message for `me` arrives.
/// `t` is the target of the message `me` just sent, which is not `me` (see `go`).
#[inline(always)]
fn drive(ts: &ThreadState, me: &Core, mut t: &Core) {
    loop {
        debug_assert!(!ptr::eq(t, me), "greenfiber: a coroutine sent a message to itself");
        if t.in_chain.get() {
            // `t` is below us in the resume chain (it is not `me`, which is on top): go down
            // one link. `me` is not main, because main is the bottom of the chain and nothing
            // is below it.
            me.in_chain.set(false);
            me.note_depth();
            // SAFETY: rule 5: `me` is running and not main, so its yielder is set and valid.
            unsafe { (*me.yielder.get()).suspend(()) };
            // Only the `resume` below brings a coroutine back from its `suspend`, and it puts
            // the coroutine back in the chain first.
            debug_assert!(me.in_chain.get());
        } else {
            t.in_chain.set(true);
            // SAFETY: rule 3: `t` is neither running nor in the chain, so no `resume()` of it
            // is active and nobody else borrows its `raw`; rule 2 keeps it alive meanwhile.
            let raw =
                unsafe { (*t.raw.get()).as_mut() }.expect("greenfiber: resume of a dead coroutine");
            if let CoroutineResult::Return(()) = raw.resume(()) {
                finished(ts, t);
            }
        }
        // Whoever sent last sent to someone else than itself, as `me` did.
        let next = ts.target.get();
        if ptr::eq(next, me) {
            return;
        }
        // SAFETY: rule 2: the sender keeps the message's target alive until it arrives, and
        // only the target takes the message (in `arrive`).
        t = unsafe { &*next };
    }
}

/// `t` returned from its root function: its stack goes back to the pool.
#[cold]
#[inline(never)]
fn finished(ts: &ThreadState, t: &Core) {
    // SAFETY: rule 3: `t` finished (its `resume` returned), so no `resume()` of it is active,
    // and the borrow of `raw` in `drive` has ended.
    let raw = unsafe { (*t.raw.get()).take() }.expect("greenfiber: no stack to recycle");
    ts.stacks.give(raw.into_stack());
    // Out of the chain only now: should giving the stack back panic, `t` is still current and
    // in the chain, so the unwind that drops its last handle retires it instead of freeing it
    // (`Coroutine`'s `Drop` skips only dead coroutines out of the chain).
    t.in_chain.set(false);
}

/// Logs for a coroutine that is ending, past its closure's `catch_unwind`. A logger may switch
/// away (a hooked socket write that waits) and be raised into meanwhile (a kill, a throw): the
/// raise (or the logger's own panic) is dropped here, unlogged (logging it could switch and be
/// raised into again), as the coroutine ends anyway, instead of unwinding out of its root
/// function into corosensei's `resume`.
#[inline(always)]
fn log_ending(log: impl FnOnce()) {
    let _dropped = catch_unwind(AssertUnwindSafe(log));
}

/// Whether trace lines may be logged, as far as the level tells: the level test of
/// `log::trace!` without its metadata, which takes room in the frame of the function it is
/// inlined into. The out-of-line logging behind it asks the logger too (`log_enabled!`).
#[inline(always)]
pub(super) fn trace_on() -> bool {
    log::Level::Trace <= log::STATIC_MAX_LEVEL && log::Level::Trace <= log::max_level()
}

/// [`body`]'s trace line for a coroutine that returned, out of line: inlined, the formatting's
/// locals made the frame of every coroutine's root function, on its stack below whatever it
/// does, a cache line deeper.
#[inline(never)]
fn log_finished(me: &Core) {
    // The logger's own filter too, as in `trace_switch`.
    if log::log_enabled!(log::Level::Trace) {
        log_ending(|| log::trace!("coroutine {} finished", me.label()));
    }
}

/// The root function of every coroutine: runs `f` and sends the outcome to the parent.
///
/// # Safety
/// `core` is the core of the coroutine this runs in, alive while it runs (rule 2).
pub(crate) unsafe fn body<A: 'static, R: 'static, F: FnOnce(A) -> R>(
    core: *const Core,
    yielder: &super::Yielder,
    f: F,
) {
    // SAFETY: the caller's contract.
    let me = unsafe { &*core };
    me.yielder.set(yielder);
    me.started.set(true);
    let result = catch_unwind(AssertUnwindSafe(|| {
        let arg: A = thread::with(|ts| arrive::<A>(ts, core));
        f(arg)
    }));
    match result {
        Ok(r) => body_returned(me, r),
        Err(p) => body_raised(me, p),
    }
    // Returning hands control to our corosensei resumer, whose drive() forwards the message.
}

/// The end of [`body`] for a coroutine whose closure returned `r`: `r` goes to the parent.
/// Out of line, like [`body_raised`]: `body`'s frame, on every coroutine's stack above all it
/// does, then holds little more than what lives across the closure's call.
#[inline(never)]
fn body_returned<R: 'static>(me: &Core, r: R) {
    // Logged while it is alive: dead, it waits for nothing (rule 6), and a logger that
    // switched would make it wait for something.
    if trace_on() {
        log_finished(me);
    }
    me.set_dead();
    thread::with(|ts| {
        // From here until the receiver has arrived no user code runs, so the parent links from
        // `me` stay as they are, and they keep the receiver alive (rule 2): no handle to it is
        // needed.
        // SAFETY: `me` is alive (rule 2) and no user code runs while the walk goes on.
        let recv = unsafe { first_live_ancestor(me) };
        // SAFETY: as above: `recv` is kept alive by the parent links from `me`.
        let waits_for_r = unsafe { &*recv }.expect.get().type_id == TypeId::of::<R>();
        // The return value goes to the parent like a switched value when the parent waits for
        // an `R` and it fits the thread's value slot (the stack it was made on is about to be
        // recycled); else it travels boxed and is checked on arrival. `me` is dead, so the
        // receiver is a live ancestor, never `me`. Rule 4 for a value in the thread's slot:
        // `arrive` takes it before anything else runs.
        let value = if ValueSlot::fits::<R>() && waits_for_r {
            ts.slot.put(r)
        } else {
            ts.slow.set(Some(Msg::Boxed(Box::new(r), type_name::<R>())));
            ptr::null_mut()
        };
        ts.target.set(recv);
        ts.value.set(value);
    });
}

/// The end of [`body`] for a coroutine that a panic (its own, a `throw` or a kill) ended: the
/// payload goes to its parent, raised there, except a `GreenletExit`, which arrives as a value.
#[cold]
#[inline(never)]
fn body_raised(me: &Core, p: Box<dyn Any + Send>) {
    let msg = if p.is::<GreenletExit>() {
        Msg::Boxed(p, type_name::<GreenletExit>())
    } else {
        let text = crate::error::panic_message(&*p);
        log_ending(|| log::debug!("coroutine {} panicked: {text}", me.label()));
        Msg::Raise(p)
    };
    // Logged while alive, as in `body`, and before the parent is read: a logger that switched
    // away may come back with another parent set meanwhile (a kill sets the killer).
    log_ending(|| log::trace!("coroutine {} finished", me.label()));
    // A raise is routed while this coroutine still lives: routing kills never-started
    // ancestors, and dropping their closures may kill coroutines (their last handles), whose
    // ends come back here, to the current coroutine, not past it (greenlet releases such a
    // parent's `run` in the context of the coroutine that dies).
    let parent = me.parent_handle().expect("greenfiber: a coroutine without a parent");
    let (recv, msg) = route(&parent, msg);
    me.set_dead();
    thread::with(|ts| {
        // Routed while alive; the receiver may have died meanwhile (a coroutine the routing
        // killed ended into it): on to its first live ancestor.
        let recv = first_live(&recv);
        ts.slow.set(Some(msg));
        drop(parent);
        // This frame is about to end, and routing ran user code (closures dropped): `hold`
        // keeps the target alive until it arrives.
        ts.target.set(recv.0.as_ptr());
        ts.value.set(ptr::null_mut());
        ts.hold.set(Some(recv));
        ts.pending.set(true);
    });
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use crate::coroutine::{Coroutine, current};

    #[test]
    fn switched_values_of_every_size_and_alignment_arrive_whole_and_drop_once() {
        // Values that fit cross in the thread's value slot, others wait in the sender's frame:
        // either way the receiver gets the value itself, and it is dropped once, by the receiver.
        thread_local!(static DROPS: Cell<u32> = const { Cell::new(0) });
        struct Counted([u64; 2]);
        impl Drop for Counted {
            fn drop(&mut self) {
                DROPS.with(|d| d.set(d.get() + 1));
            }
        }
        struct Big(#[allow(dead_code)] [u64; 32], Counted);
        #[repr(align(64))]
        struct Aligned(u8, #[allow(dead_code)] Counted);

        let c = Coroutine::new(|mut x: Counted| {
            let main = current().parent().unwrap();
            loop {
                let n = x.0[0];
                drop(x);
                let b: Big = main.switch(Counted([n + 1, 0]));
                let (first, last) = (b.1.0[0], b.0[31]);
                drop(b);
                let mut a: Aligned = main.switch(Big([first; 32], Counted([last * 2, 0])));
                assert_eq!(&a as *const Aligned as usize % 64, 0);
                a.0 += 1;
                x = main.switch(a);
            }
        });
        for n in 0..3u64 {
            let drops = DROPS.with(Cell::get);
            let x: Counted = c.switch(Counted([n, 0]));
            assert_eq!(x.0[0], n + 1);
            let b: Big = c.switch(Big([x.0[0]; 32], Counted([7, 0])));
            assert_eq!((b.0, b.1.0[0]), ([7; 32], 2 * (n + 1)));
            let a: Aligned = c.switch(Aligned(5, Counted([0, 0])));
            assert_eq!(a.0, 6);
            assert_eq!(&a as *const Aligned as usize % 64, 0);
            drop((x, b, a));
            // Five values crossed (the `Aligned` went there and back): each dropped once, by
            // its last receiver, none on the way.
            assert_eq!(DROPS.with(Cell::get) - drops, 5);
        }
    }
}
