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
//! Values cross without allocation: the sender keeps `Some(value)` in a slot on its own stack
//! and sends a [`Slot`] pointing at it; the receiver takes the value out before anything else
//! runs (rule 4 in `coroutine/mod.rs`). A return value is boxed (free for `()` and other
//! zero-sized types) because the returning stack is about to be recycled.

use std::any::{Any, TypeId, type_name};
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::ptr;
use std::rc::Rc;

use corosensei::CoroutineResult;

use super::exit::GreenletExit;
use super::thread::{self, ThreadState};
use super::{Core, Coroutine, stack_pool};
use crate::error::SwitchError;

/// What a switch carries.
pub(crate) enum Msg {
    /// A value still in the sender's slot.
    Value(Slot),
    /// An owned value (a return value), with its type's name for error messages.
    Boxed(Box<dyn Any>, &'static str),
    /// Raise this payload in the receiver: a `throw`/`kill`, or a child's panic.
    Raise(Box<dyn Any + Send>),
}

/// A pointer to the sender's `Option<T>` plus what the receiver needs to check and take it.
pub(crate) struct Slot {
    ptr: *mut (),
    type_id: TypeId,
    type_name: &'static str,
    boxer: unsafe fn(*mut ()) -> Box<dyn Any>,
}

impl Slot {
    /// Describes `slot`, which must stay in place until the receiver took its value (rule 4).
    pub(crate) fn new<T: 'static>(slot: &mut Option<T>) -> Slot {
        Slot {
            ptr: slot as *mut Option<T> as *mut (),
            type_id: TypeId::of::<T>(),
            type_name: type_name::<T>(),
            boxer: box_slot::<T>,
        }
    }
}

/// # Safety
/// `ptr` must point at a live `Option<T>` holding `Some` (the `Slot` built for that `T`).
unsafe fn box_slot<T: 'static>(ptr: *mut ()) -> Box<dyn Any> {
    // SAFETY: the caller's contract: `ptr` is the `Option<T>` the slot was built from.
    let slot = unsafe { &mut *(ptr as *mut Option<T>) };
    Box::new(slot.take().expect("greenfiber: switch value taken twice"))
}

/// The type a coroutine waits to receive: the `R` of its pending `switch`, or the argument type
/// of a coroutine not started yet. `Box<dyn Any>` accepts anything (used by `throw`).
#[derive(Clone, Copy)]
pub(crate) struct Expect {
    type_id: TypeId,
    name: &'static str,
}

impl Expect {
    pub(crate) fn of<R: 'static>() -> Expect {
        Expect { type_id: TypeId::of::<R>(), name: type_name::<R>() }
    }

    fn check(self, type_id: TypeId, received: &'static str) -> Result<(), SwitchError> {
        if self.type_id == type_id || self.type_id == TypeId::of::<Box<dyn Any>>() {
            Ok(())
        } else {
            Err(SwitchError { expected: self.name, received })
        }
    }
}

/// What arrived, taken out of the message so that nothing points at the sender any more.
enum Outcome<R> {
    Value(R),
    Raise(Box<dyn Any + Send>),
    Mismatch(SwitchError),
}

impl<R> Outcome<R> {
    /// Returns the value, or raises in the current coroutine.
    fn deliver(self) -> R {
        match self {
            Outcome::Value(v) => v,
            Outcome::Raise(p) => resume_unwind(p),
            Outcome::Mismatch(e) => panic!("greenfiber: {e}"),
        }
    }
}

/// `Box<dyn Any>` as `R`, when `R` is `Box<dyn Any>`.
fn any_as<R: 'static>(b: Box<dyn Any>) -> R {
    let mut b = Some(b);
    (&mut b as &mut dyn Any)
        .downcast_mut::<Option<R>>()
        .and_then(Option::take)
        .expect("greenfiber: any_as called with R other than Box<dyn Any>")
}

fn take_msg<R: 'static>(msg: Msg) -> Outcome<R> {
    let wants_any = TypeId::of::<R>() == TypeId::of::<Box<dyn Any>>();
    match msg {
        Msg::Value(slot) if slot.type_id == TypeId::of::<R>() => {
            // SAFETY: rule 4: the slot is the sender's live `Option<T>`, and `T` is `R` (same
            // `TypeId`), so it may be read as `Option<R>`.
            let slot = unsafe { &mut *(slot.ptr as *mut Option<R>) };
            Outcome::Value(slot.take().expect("greenfiber: switch value taken twice"))
        }
        // SAFETY: rule 4, and `boxer` is `box_slot::<T>` for the slot's own `T`.
        Msg::Value(slot) if wants_any => Outcome::Value(any_as(unsafe { (slot.boxer)(slot.ptr) })),
        Msg::Value(slot) => {
            Outcome::Mismatch(SwitchError { expected: type_name::<R>(), received: slot.type_name })
        }
        Msg::Boxed(b, _) if wants_any => Outcome::Value(any_as(b)),
        Msg::Boxed(b, name) => match b.downcast::<R>() {
            Ok(v) => Outcome::Value(*v),
            Err(_) => Outcome::Mismatch(SwitchError { expected: type_name::<R>(), received: name }),
        },
        Msg::Raise(p) => Outcome::Raise(p),
    }
}

/// The first coroutine at or above `target` that is not dead (main never is).
pub(crate) fn first_live(target: &Coroutine) -> Coroutine {
    let mut t = target.clone();
    while t.0.dead.get() {
        let parent = t.0.parent.borrow().clone();
        t = parent.expect("greenfiber: a dead coroutine without a parent");
    }
    t
}

/// Where `msg` really goes: dead targets pass it to their parents; a raise into a coroutine
/// that never started kills it without running it and passes on to its parent (greenlet).
fn route(target: &Coroutine, mut msg: Msg) -> (Coroutine, Msg) {
    let mut t = first_live(target);
    while !t.0.started.get() {
        let Msg::Raise(p) = msg else { break };
        t.0.kill_unstarted();
        msg = if p.is::<GreenletExit>() {
            Msg::Boxed(p, type_name::<GreenletExit>())
        } else {
            Msg::Raise(p)
        };
        t = first_live(&t);
    }
    (t, msg)
}

/// `switch`/`try_switch`: checks the receiver waits for a `T`, then sends `value`.
#[inline]
pub(crate) fn switch_value<T: 'static, R: 'static>(
    target: &Coroutine,
    value: T,
) -> Result<R, SwitchError> {
    thread::with(|ts| {
        let me = ts.current_ptr();
        let t = Rc::as_ptr(&target.0);
        if target.0.dead.get() {
            return switch_value_slow(ts, target, value);
        }
        if ptr::eq(t, me) {
            Expect::of::<R>().check(TypeId::of::<T>(), type_name::<T>())?;
            let mut slot = Some(value);
            return Ok(take_msg::<R>(Msg::Value(Slot::new(&mut slot))).deliver());
        }
        target.0.expect.get().check(TypeId::of::<T>(), type_name::<T>())?;
        let mut slot = Some(value);
        // Rule 4: `slot` stays in this frame until the receiver has taken the value; `target`
        // is borrowed by this frame, which keeps it alive until it arrives.
        Ok(go::<R>(ts, me, t, Msg::Value(Slot::new(&mut slot))))
    })
}

/// A switch to a dead coroutine: the value goes to its first live ancestor.
#[cold]
fn switch_value_slow<T: 'static, R: 'static>(
    ts: &ThreadState,
    target: &Coroutine,
    value: T,
) -> Result<R, SwitchError> {
    let recv = first_live(target);
    let expect = if recv.is_current() { Expect::of::<R>() } else { recv.0.expect.get() };
    expect.check(TypeId::of::<T>(), type_name::<T>())?;
    let mut slot = Some(value);
    Ok(send_routed::<R>(ts, recv, Msg::Value(Slot::new(&mut slot))))
}

/// Sends `msg` to `target` (routed: dead targets pass it up; raises kill unstarted ones) and
/// returns what the current coroutine receives next.
pub(crate) fn transfer<R: 'static>(target: &Coroutine, msg: Msg) -> R {
    thread::with(|ts| {
        let (recv, msg) = route(target, msg);
        send_routed::<R>(ts, recv, msg)
    })
}

fn send_routed<R: 'static>(ts: &ThreadState, recv: Coroutine, msg: Msg) -> R {
    let me = ts.current_ptr();
    let t = Rc::as_ptr(&recv.0);
    if ptr::eq(t, me) {
        return take_msg::<R>(msg).deliver();
    }
    // `hold` keeps the routed target alive until it arrives (it drops the handle then).
    ts.hold.set(Some(recv));
    go::<R>(ts, me, t, msg)
}

/// Puts `msg` in flight to `target`, drives control there, and takes what comes back.
#[inline]
fn go<R: 'static>(ts: &ThreadState, me: *const Core, target: *const Core, msg: Msg) -> R {
    // SAFETY: rule 2: the running coroutine's core is alive.
    let me_ref = unsafe { &*me };
    me_ref.expect.set(Expect::of::<R>());
    if log::log_enabled!(log::Level::Trace) {
        // SAFETY: rule 2: the sender keeps the message's target alive until it arrives.
        log::trace!("switch {} -> {}", me_ref.label(), unsafe { &*target }.label());
    }
    ts.target.set(target);
    ts.msg.set(Some(msg));
    drive(ts, me_ref);
    // SWITCH: other coroutines ran; only `ts` and `me` are known to be unchanged.
    arrive::<R>(ts, me)
}

/// Takes the message that arrived for the current coroutine, makes it `current`, then drops
/// the previous `current` handle (which may kill that coroutine if it was the last).
#[inline]
fn arrive<R: 'static>(ts: &ThreadState, me: *const Core) -> R {
    let msg = ts.msg.take().expect("greenfiber: arrived without a message");
    // Rule 4: take the value before anything else can run.
    let outcome = take_msg::<R>(msg);
    // SAFETY: `me` is the coroutine running now (its own drive() just returned).
    let prev = unsafe { ts.swap_current(me) };
    let held = ts.hold.take();
    drop(prev);
    drop(held);
    outcome.deliver()
}

/// The trampoline: moves control toward the message's target until a message for `me` arrives.
fn drive(ts: &ThreadState, me: &Core) {
    loop {
        let t = ts.target.get();
        if ptr::eq(t, me) {
            return;
        }
        // SAFETY: rule 2: the sender keeps the message's target alive until it arrives, and
        // only the target takes the message (in `arrive`).
        let t = unsafe { &*t };
        if t.in_chain.get() {
            // `t` is below us in the resume chain: go down one link. `me` is not main, because
            // main is the bottom of the chain and nothing is below it.
            me.in_chain.set(false);
            // SAFETY: rule 5: `me` is running and not main, so its yielder is set and valid.
            unsafe { (*me.yielder.get()).suspend(()) };
            me.in_chain.set(true);
        } else {
            t.in_chain.set(true);
            // SAFETY: rule 3: `t` is neither running nor in the chain, so no `resume()` of it
            // is active and nobody else borrows its `raw`; rule 2 keeps it alive meanwhile.
            let raw =
                unsafe { (*t.raw.get()).as_mut() }.expect("greenfiber: resume of a dead coroutine");
            if let CoroutineResult::Return(()) = raw.resume(()) {
                t.in_chain.set(false);
                // SAFETY: rule 3: `t` finished; the borrow above has ended.
                let raw =
                    unsafe { (*t.raw.get()).take() }.expect("greenfiber: no stack to recycle");
                stack_pool::give(raw.into_stack());
            }
        }
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
    let msg = match result {
        Ok(r) => Msg::Boxed(Box::new(r), type_name::<R>()),
        Err(p) if p.is::<GreenletExit>() => Msg::Boxed(p, type_name::<GreenletExit>()),
        Err(p) => {
            log::debug!("coroutine {} panicked: {}", me.label(), crate::error::panic_message(&*p));
            Msg::Raise(p)
        }
    };
    me.dead.set(true);
    log::trace!("coroutine {} finished", me.label());
    let parent = me.parent.borrow().clone().expect("greenfiber: a coroutine without a parent");
    thread::with(|ts| {
        let (recv, msg) = route(&parent, msg);
        drop(parent);
        // This frame is about to end: `hold` keeps the target alive until it arrives.
        ts.target.set(Rc::as_ptr(&recv.0));
        ts.msg.set(Some(msg));
        ts.hold.set(Some(recv));
    });
    // Returning hands control to our corosensei resumer, whose drive() forwards the message.
}
