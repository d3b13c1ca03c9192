//! The one way a coroutine blocks: a [`Waiter`] on its own stack, parked until something
//! unparks it, its deadline passes, or it is killed.
//!
//! ```text
//!  fiber's stack                       hub structures (hold WaiterRef = NonNull<Waiter>)
//!  +------------------------------+
//!  | Waiter { co, state, timer,   | <-- timers: TimerAction::Wake(ref)   (deadline)
//!  |          io, what }          | <-- reactor: waiters of (token, dir)  (socket readiness)
//!  |   park() -> switch to the    | <-- WaitList of a Greenlet, Event, Lock, Queue ...
//!  |   next ready one, or the hub |
//!  +------------------------------+ <-- remote_waits: id -> ref           (another OS thread)
//! ```
//!
//! # Rules (cited by the `SAFETY` comments)
//! 1. A `WaiterRef` sits in a hub structure only while its `Waiter` is alive: the `Waiter`'s
//!    `Drop` removes it from the timers, the reactor and the remote table, and every `WaitList`
//!    entry is removed by the guard that added it before that guard's frame ends. A kill or a
//!    timeout unwinds through those same `Drop`s, so nothing dangles.
//! 2. A `Waiter` never moves while it is registered: it is a local of the parked frame, and is
//!    only handed out by shared reference.
//! 3. Exactly one wake per park: [`unpark`] acts only on a waiter in state `Parked` and moves
//!    it to `Woken` in the same step as queueing its coroutine; later wakes are no-ops.
//! 4. A [`WaitList`] caller checks its state and enqueues with no switch in between; granting
//!    unlinks an entry in the same step as it stores the grant, and only the waiter's own guard
//!    unlinks a waiting entry (see `WaitList`'s state table).
//! 5. Nothing is raised into a destructor that runs during an unwind: a panic leaving one
//!    aborts the process, and a killed fiber's cleanup may block (it sleeps, or writes a
//!    goodbye). A coroutine that parks while it may be unwinding (`unwind.rs` says which) keeps
//!    a kill, timeout or throw that reaches it in `Hub::deferred`, and the park goes on; the
//!    hub raises it once the coroutine is seen unwinding no more (one that died meanwhile needs
//!    none). The exception is a timeout whose `with_timeout` began while its coroutine was
//!    unwinding, if no newer unwind has begun since: it sits inside the cleanup and catches its
//!    timeout there, so it is raised at once.
//!
//! | state  | meaning                                   | who moves it on                         |
//! |--------|-------------------------------------------|-----------------------------------------|
//! | Idle   | not parked (before or after a park)       | `park` → Parked                         |
//! | Parked | switched away (to the hub, or hand-off to | `unpark`/timer/reactor → Woken          |
//! |        | the next ready coroutine), waiting        |                                         |
//! | Woken  | in the ready queue with a reason          | the hub or a parking coroutine runs it; |
//! |        |                                           | `park` → Idle                           |

use std::any::Any;
use std::cell::Cell;
use std::mem::ManuallyDrop;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mio::Token;

use super::reactor::{Direction, Reactor};
use super::remote::Remote;
use super::scheduler::{self, Hub, TimerAction};
use super::unwind;
use crate::coroutine::{Coroutine, current_uncounted};

/// Why a park ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wake {
    /// Something unparked it (a socket became ready, an event was set, a yield came round).
    Woken,
    /// Its deadline passed.
    TimedOut,
    /// Nothing else could ever run: raise LoopExit.
    LoopExit,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Idle,
    Parked,
    Woken(Wake),
}

/// One coroutine's wait record. Lives on the waiting coroutine's stack (rule 2).
pub(crate) struct Waiter {
    /// Its coroutine, uncounted: the waiter lives in one of that coroutine's frames, and rule 7
    /// of `coroutine/mod.rs` frees a core only after its frames are gone (`current_uncounted`).
    /// While it is parked the park holds it all the same: a parked coroutine whose every other
    /// handle is gone (a detached fiber whose result's `Drop` waits, a raw coroutine parked in
    /// the hub) is not killed by whoever drops the last one, as that handle's count passes to
    /// the park (dropped by `Parked`'s `Drop`), and it is woken as usual.
    ///
    /// What keeps that true: between `Parked`'s `Drop` and this waiter's own, only library
    /// code that never switches runs (the retried socket call, the wait list's bookkeeping; an
    /// offered value is dropped after the waiter), never user code, so a coroutine is never
    /// suspended with a live waiter and no park, where the drop of its last handle would kill
    /// it instead.
    co: ManuallyDrop<Coroutine>,
    state: Cell<State>,
    timer: Cell<Option<super::timers::TimerKey>>,
    /// Where else it is registered: one word for both kinds, so that a waiter with neither
    /// (every wait-list entry) is made and dropped with one store and one test.
    reg: Cell<Registration>,
    what: &'static str,
}

/// A waiter's registration outside wait lists and timers. A waiter has at most one: a socket
/// wait never waits for another thread, and a remote wait never for a socket.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Registration {
    None,
    /// With the reactor, for readiness of a token in a direction.
    Io(Token, Direction),
    /// In `Hub::remote_waits`, under this id.
    Remote(u64),
}

/// A pointer to a live [`Waiter`], as the hub's structures hold it (rule 1).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct WaiterRef(NonNull<Waiter>);

impl Waiter {
    /// A waiter for the current coroutine; `what` names the wait in `fibers()` and LoopExit.
    #[inline]
    pub(crate) fn new(what: &'static str) -> Waiter {
        // The handle stays in this waiter, a local of a frame of the running coroutine (rule
        // 2), used only while the waiter lives: by this coroutine, or by whoever finds the
        // waiter in a hub structure, which holds it only while it lives (rule 1).
        // SAFETY: so by rule 7 of `coroutine/mod.rs` (a core is freed only after its
        // coroutine's frames, this one among them, have ended) its core outlives every use.
        let co = unsafe { current_uncounted() };
        Waiter {
            co,
            state: Cell::new(State::Idle),
            timer: Cell::new(None),
            reg: Cell::new(Registration::None),
            what,
        }
    }

    pub(crate) fn as_ref(&self) -> WaiterRef {
        WaiterRef(NonNull::from(self))
    }

    /// What this waiter waits on.
    pub(crate) fn what(&self) -> &'static str {
        self.what
    }

    /// True while it sits in the ready queue, woken and not yet run.
    pub(crate) fn is_woken(&self) -> bool {
        matches!(self.state.get(), State::Woken(_))
    }

    /// True while parked and not yet woken.
    pub(crate) fn is_parked(&self) -> bool {
        self.state.get() == State::Parked
    }

    /// Registers this waiter for readiness of `token` in direction `dir` until it is dropped or
    /// [`clear_io`](Waiter::clear_io) is called.
    pub(crate) fn set_io(&self, hub: &Hub, token: Token, dir: Direction) -> bool {
        self.clear_io(hub);
        debug_assert!(self.reg.get() == Registration::None, "a remote wait waits on no socket");
        if hub.reactor.borrow_mut().add_waiter(token, dir, self.as_ref()).is_err() {
            return false;
        }
        hub.io_waits.set(hub.io_waits.get() + 1);
        self.reg.set(Registration::Io(token, dir));
        true
    }

    /// Undoes [`set_io`](Waiter::set_io).
    pub(crate) fn clear_io(&self, hub: &Hub) {
        if let Registration::Io(token, dir) = self.reg.get() {
            self.reg.set(Registration::None);
            hub.reactor.borrow_mut().remove_waiter(token, dir, &self.as_ref());
            hub.io_waits.set(hub.io_waits.get() - 1);
        }
    }

    /// Lets other coroutines run (the hub, or straight the next ready one) until this waiter is
    /// woken or `deadline` passes.
    ///
    /// # Panics
    /// With the LoopExit message when nothing else can ever run; when called in the hub.
    #[inline]
    pub(crate) fn park(&self, deadline: Option<Instant>) -> Wake {
        scheduler::with(|hub| self.park_in(hub, deadline))
    }

    #[inline(never)]
    fn park_in(&self, hub: &Hub, deadline: Option<Instant>) -> Wake {
        self.park_at(hub, deadline, false)
    }

    /// The park itself, inlined into its three users: `park_in`, [`WaitList::wait_for`] and
    /// [`yield_current`] (`ready`: queue this coroutine first, behind every other ready one).
    #[inline(always)]
    fn park_at(&self, hub: &Hub, deadline: Option<Instant>, ready: bool) -> Wake {
        if *self.co == hub.co {
            in_hub(self.what);
        }
        debug_assert!(self.co.is_current(), "a waiter parks only its own coroutine");
        let panicking = std::thread::panicking();
        let unwinding = unwind::look_as_it_parks(&self.co, panicking);
        if hub.held_any.get() {
            super::held::raise_at_park(hub, &self.co, unwinding);
        }
        self.state.set(State::Parked);
        if ready {
            unpark_in(hub, self.as_ref(), Wake::Woken);
        }
        if let Some(d) = deadline {
            self.set_timer(hub, d);
        }
        let _parked = Parked::enter(self);
        // Hand-off (scheduler.rs): while the hub's round lasts, switch straight to the next
        // ready coroutine, which is what the hub would do next; else to the hub.
        let next = hub.next_handoff();
        if let Some(n) = &next {
            unwind::resuming(n, panicking);
        }
        if unwinding {
            self.switch_while_unwinding(hub, next);
        } else {
            // SWITCH: every other coroutine may run; only `self` and `hub` are known to be
            // unchanged.
            let () = next.as_ref().unwrap_or(&hub.co).switch(());
        }
        match self.state.get() {
            State::Woken(Wake::LoopExit) => self.loop_exit(hub),
            State::Woken(w) => w,
            // A raw switch into this coroutine (not by the hub or a hand-off): spurious.
            State::Parked | State::Idle => Wake::Woken,
        }
    }

    // The park's rare paths, out of line: inlined, their locals made the frame of every park
    // (and of `yield_current`, where a fiber sits on its first yield) a cache line deeper.

    /// The park's timer for `d`.
    #[inline(never)]
    fn set_timer(&self, hub: &Hub, d: Instant) {
        self.timer.set(Some(hub.timers.borrow_mut().insert(d, TimerAction::Wake(self.as_ref()))));
    }

    /// The end of a park that LoopExit woke: raises it.
    #[cold]
    #[inline(never)]
    fn loop_exit(&self, hub: &Hub) -> ! {
        let msg = hub.loop_exit.take().unwrap_or_default();
        unwind::unwinds_again(&self.co);
        panic!("{msg}");
    }
}

/// A park in the hub itself: a bug of the caller (a hub callback or timer action that waits).
#[cold]
#[inline(never)]
fn in_hub(what: &str) -> ! {
    panic!(
        "greenfiber: cannot block inside the hub (a hub callback or timer action tried to wait on \
         {what})"
    );
}

impl Waiter {
    /// The park's switch of a coroutine that may be unwinding (rule 5): a raise that arrives
    /// while a panic is under way on the thread, other than a timeout set in the cleanup this
    /// park is in, is kept for the hub to raise later, and the park goes on. (With none under way, this
    /// coroutine is not unwinding after all: it caught what it unwound from.)
    #[cold]
    #[inline(never)]
    fn switch_while_unwinding(&self, hub: &Hub, next: Option<Coroutine>) {
        let mut to = next.unwrap_or_else(|| hub.co.clone());
        loop {
            // SWITCH: as in `park_in`. It waits for any value (what resumes a park sends `()`):
            // a second user of `park_in`'s own switch instance here made the compiler stop
            // inlining that one into `park_in`, at +27 instructions a yield. `hub` may be gone
            // when this comes back (below): not used after it.
            let r = catch_unwind(AssertUnwindSafe(|| {
                let _: Box<dyn Any> = to.switch(());
            }));
            let Err(payload) = r else { return };
            if !std::thread::panicking() {
                // Not unwinding after all: this raise starts its first unwind.
                unwind::raising(&self.co);
                resume_unwind(payload);
            }
            if unwind::is_cleanup_timeout(&self.co, &*payload) {
                unwind::unwinds_again(&self.co);
                resume_unwind(payload);
            }
            log::debug!(
                "greenfiber: {:?} parked while it may be unwinding: a raise into it waits until \
                 that unwind is over",
                self.co
            );
            // The hub is looked up again: a thread-local destructor of an ending thread may
            // raise into a coroutine that was parked when the hub went (see `Parked`).
            let co = (*self.co).clone();
            let hub_co = scheduler::try_with(move |hub| {
                hub.deferred.borrow_mut().push((co, payload));
                hub.co.clone()
            });
            to = match hub_co {
                // Back to waiting: to the hub, which runs what is ready (and resumes each,
                // looking).
                Some(hub_co) => hub_co,
                // No hub will ever resume this park, and a raise here would abort: the raise
                // is dropped and the coroutine stays parked (leaked, as every coroutine parked
                // when its hub went). Control goes back to the raiser: a killer is the parent
                // while its kill lasts, and it takes any value.
                None => {
                    log::warn!(
                        "greenfiber: {:?}, parked in a cleanup when its thread's hub went, was \
                         raised into: the raise is dropped and it stays parked",
                        self.co
                    );
                    self.co.parent().unwrap_or_else(crate::coroutine::main_coroutine)
                }
            };
        }
    }
}

/// Marks the coroutine parked for the duration of one park; on the way out — a normal return
/// or an unwind for kill/timeout — cancels the timer and resets the state.
///
/// It holds no `&Hub`: a coroutine parked when its thread exits may be unwound by a
/// thread-local destructor after the hub is gone (a `Coroutine::kill` there), so the hub is
/// looked up again, if it still exists.
struct Parked<'a> {
    w: &'a Waiter,
    prev: *const (),
}

impl<'a> Parked<'a> {
    #[inline]
    fn enter(w: &'a Waiter) -> Parked<'a> {
        // The hub finds the coroutine's waiter through this slot (LoopExit, fibers(), timeouts).
        let prev = w.co.park_slot().replace(w as *const Waiter as *const ());
        Parked { w, prev }
    }
}

impl Drop for Parked<'_> {
    // Always inlined: every park runs it, and out of line it cost ~20 instructions a yield.
    #[inline(always)]
    fn drop(&mut self) {
        // The tag alone first: most parks have no timer, and `take` would move the whole key.
        if self.w.timer.get().is_some()
            && let Some(k) = self.w.timer.take()
        {
            cancel_timer(k);
        }
        self.w.co.park_slot().set(self.prev);
        self.w.state.set(State::Idle);
        // A last handle dropped while it was parked passed its count to this park (rule 7 of
        // `coroutine/mod.rs`): the park is over, so the count goes.
        self.w.co.drop_adopted();
    }
}

/// `yield_now`: the current coroutine goes behind every other ready one, which run meanwhile.
/// Its own copy of the park, with the waiter made and dropped in the same frame.
#[inline(never)]
pub(crate) fn yield_current() {
    scheduler::with(|hub| {
        let w = Waiter::new("yield");
        w.park_at(hub, None, true);
    });
}

/// A park's deadline that did not fire: its timer goes.
#[inline(never)]
fn cancel_timer(k: super::timers::TimerKey) {
    scheduler::try_with(|hub| hub.timers.borrow_mut().cancel(k));
}

impl Drop for Waiter {
    #[inline]
    fn drop(&mut self) {
        if self.reg.get() != Registration::None {
            scheduler::try_with(|hub| {
                self.clear_io(hub);
                if let Registration::Remote(id) = self.reg.replace(Registration::None) {
                    hub.remote_waits.borrow_mut().remove(&id);
                }
            });
        }
    }
}

/// Wakes the waiter: queues its coroutine with `why`. A no-op unless it is parked (rule 3),
/// and during thread teardown once the hub is gone (nothing runs the waiter any more).
///
/// # Safety
/// `w` must point at a live waiter: one that is registered in a hub structure (rule 1).
#[inline]
pub(crate) unsafe fn unpark(w: WaiterRef, why: Wake) {
    scheduler::try_with_inline(|hub| unpark_in(hub, w, why));
}

#[inline]
pub(crate) fn unpark_in(hub: &Hub, w: WaiterRef, why: Wake) {
    // SAFETY: rule 1: every `WaiterRef` the hub or a wait list holds is alive; callers outside
    // this module go through `unpark`, whose contract says the same.
    let waiter = unsafe { w.0.as_ref() };
    if waiter.state.get() != State::Parked {
        return;
    }
    waiter.state.set(State::Woken(why));
    hub.ready.push_back((*waiter.co).clone());
}

/// Wakes a waiter the reactor has handed back (its socket became ready, or was deregistered).
/// The reactor already took it off the token's list, so the waiter forgets that registration
/// here; else its next `set_io` or its drop would search the list for an entry that is gone,
/// which costs O(n) per wake with n fibers on one socket.
pub(crate) fn unpark_io(hub: &Hub, w: WaiterRef) {
    // SAFETY: rule 1: the reactor held `w` until this step, so its waiter is alive.
    let waiter = unsafe { w.0.as_ref() };
    if matches!(waiter.reg.get(), Registration::Io(..)) {
        waiter.reg.set(Registration::None);
        hub.io_waits.set(hub.io_waits.get() - 1);
    }
    unpark_in(hub, w, Wake::Woken);
}

/// Runs `f` on the hub's reactor, then wakes the waiters it handed back into the `Vec` (a
/// registration that ended), once the reactor is no longer borrowed. Every change that can end
/// a registration goes through here, so none leaves a fiber parked on a dead token.
pub(crate) fn with_reactor<R>(
    hub: &Hub,
    f: impl FnOnce(&mut Reactor<WaiterRef>, &mut Vec<WaiterRef>) -> R,
) -> R {
    let mut parked = Vec::new();
    let r = f(&mut hub.reactor.borrow_mut(), &mut parked);
    for w in parked {
        unpark_io(hub, w);
    }
    r
}

/// The waiter a coroutine is parked on, if any.
pub(crate) fn waiter_of(co: &Coroutine) -> Option<&Waiter> {
    let p = co.park_slot().get() as *const Waiter;
    // SAFETY: `park_slot` is set by `Parked::enter` and reset by its `Drop` before the waiter
    // dies, so a non-null slot points at a live waiter (rules 1 and 2).
    unsafe { p.as_ref() }
}

/// A FIFO list of parked coroutines with direct hand-off: what every primitive that waits is
/// built on (Greenlet joiners here; every `sync` primitive through `sync/waiters.rs`).
///
/// Each entry is a [`Node`] on the waiter's own stack, linked into the list through its own
/// `prev`/`next` pointers (an intrusive doubly-linked list), so an entry that leaves early — a
/// kill, a timeout — unlinks itself in O(1) wherever it sits. A releaser does not merely wake the
/// first waiter: it *grants* it what it waited for (a permit, an item, a notification: the `V`)
/// in the same step as unlinking it. The waiter's guard then either returns the grant to its
/// caller or, if the waiter unwinds first (kill, `with_timeout`, LoopExit), passes it on through
/// the caller's `hand_on` — so no grant is ever delivered to a dead fiber and none is lost.
/// A waiter may also *offer* a value (a putter's item) that a releaser takes with
/// [`take_one`](WaitList::take_one).
///
/// ```text
///   WaitList { head, tail, len }        entries: one Node per waiter, each in its waiter's
///      |                   |            `wait_for` frame (rule 2)
///      v                   v
///   [Node A] <--> [Node B] <--> [Node C]      granting pops A and marks it granted in one step;
///   (stack A)     (stack B)     (stack C)     B timing out unlinks B (A <--> C) from B's guard
/// ```
///
/// # Entry states
///
/// | state   | in list | `value` holds                         | moved on by                          |
/// |---------|---------|---------------------------------------|--------------------------------------|
/// | Waiting | yes     | the offer, or nothing                 | `grant_one`/`grant_all`/`take_one` → Granted; the waiter's own timeout or unwind → Left |
/// | Granted | no      | the grant, or nothing (offer taken)   | the waiter returns it → Done; an unwind → `hand_on(grant)` → Done |
/// | Left    | no      | the offer, handed back to the caller  | — (the guard unlinked it)            |
/// | Done    | no      | nothing                               | —                                    |
///
/// Impossible: Granted while still in the list (granting unlinks in the same step, in
/// [`pop_granted`](WaitList::pop_granted), before anything that could panic); Waiting outside
/// the list (only the guard unlinks a waiting entry, and it ends the wait). So `granted` alone
/// tells the guard whether its entry is linked. A timer that fires for an entry which is then
/// granted before it runs does not matter: the entry's state, not the [`Wake`], decides the
/// outcome (a grant wins).
///
/// Rule 4 (Habit 6): a caller checks its primitive's state and calls [`wait_for`](Self::wait_for)
/// with no switch in between, so no release can fall between the check and the enqueue.
pub(crate) struct WaitList<V = ()> {
    /// The first entry (the next to be granted), or null.
    head: Cell<*const Node<V>>,
    /// The last entry, or null.
    tail: Cell<*const Node<V>>,
    len: Cell<usize>,
    /// Entries granted whose waiters have not yet come back out of `wait_for` (see
    /// [`unclaimed`](Self::unclaimed)).
    unclaimed: Cell<usize>,
}

impl<V> Default for WaitList<V> {
    fn default() -> Self {
        WaitList {
            head: Cell::new(std::ptr::null()),
            tail: Cell::new(std::ptr::null()),
            len: Cell::new(0),
            unclaimed: Cell::new(0),
        }
    }
}

/// One entry: lives in the frame of [`WaitList::wait_for`] (rule 2); its links are valid while
/// it is Waiting (rule 1).
struct Node<V> {
    waiter: Waiter,
    prev: Cell<*const Node<V>>,
    next: Cell<*const Node<V>>,
    granted: Cell<bool>,
    value: Cell<Option<V>>,
}

/// How a [`WaitList::wait_for`] ended without unwinding.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome<V> {
    /// A releaser granted the entry: the grant, or `None` if it took the offer instead.
    Granted(Option<V>),
    /// The deadline passed first: the offer comes back.
    TimedOut(Option<V>),
}

impl<V> WaitList<V> {
    /// An empty list.
    pub(crate) fn new() -> WaitList<V> {
        WaitList::default()
    }

    /// Parks the current coroutine at the back of the list until a releaser grants it, or
    /// `deadline` passes. `offer` is a value for a releaser to [`take_one`](Self::take_one).
    /// If the waiter unwinds (kill, `with_timeout`, LoopExit) after it was granted a value,
    /// `hand_on` receives that value (it must not block or panic).
    ///
    /// The caller must not switch between checking its state and this call (rule 4).
    #[inline]
    pub(crate) fn wait_for(
        &self,
        what: &'static str,
        offer: Option<V>,
        deadline: Option<Instant>,
        hand_on: impl FnOnce(V),
    ) -> Outcome<V> {
        let node = Node {
            waiter: Waiter::new(what),
            prev: Cell::new(std::ptr::null()),
            next: Cell::new(std::ptr::null()),
            granted: Cell::new(false),
            value: Cell::new(offer),
        };
        self.push_back(&node);
        let mut guard = Enqueued { list: self, node: &node, hand_on: Some(hand_on) };
        loop {
            // SWITCH (inside park): any coroutine may run and grant this entry; `node` is ours
            // and pinned in this frame, the list may have changed. The park is inlined here,
            // not called (`park_in`): one frame, one save of the callee-saved registers, for
            // a wait and its park (queue ping-pong 601 -> 563 instructions a round trip).
            let wake = scheduler::with_inline(
                #[inline(always)]
                |hub| node.waiter.park_at(hub, deadline, false),
            );
            if node.granted.get() {
                // Claimed: what the guard's drop does for a granted entry whose value was taken,
                // done here without the call (unwinds still go through the guard).
                let v = node.value.take();
                self.unclaimed.set(self.unclaimed.get() - 1);
                // Disarmed before the closure is dropped: a panic there must not claim twice.
                let hand_on = guard.hand_on.take();
                std::mem::forget(guard);
                drop(hand_on);
                return Outcome::Granted(v);
            }
            if wake == Wake::TimedOut {
                // The guard unlinks the entry when this frame ends.
                return Outcome::TimedOut(node.value.take());
            }
            // Woken without a grant (a raw switch into this coroutine): wait on.
        }
    }

    /// Links `node` in at the back. It must stay where it is until it is unlinked (rule 2).
    #[inline]
    fn push_back(&self, node: &Node<V>) {
        let tail = self.tail.get();
        node.prev.set(tail);
        node.next.set(std::ptr::null());
        // SAFETY: rule 1: a non-null `tail` is an entry in the list, so its frame is alive.
        match unsafe { tail.as_ref() } {
            Some(t) => t.next.set(node),
            None => self.head.set(node),
        }
        self.tail.set(node);
        self.len.set(self.len.get() + 1);
    }

    /// Unlinks `node`, wherever it is in the list.
    ///
    /// # Safety
    /// `node` must be an entry of this list (Waiting: not granted, not yet unlinked).
    #[inline]
    unsafe fn unlink(&self, node: &Node<V>) {
        let (prev, next) = (node.prev.get(), node.next.get());
        // SAFETY: rule 1: `node` is in the list (the caller's contract), so its neighbours are
        // entries too, and alive.
        match unsafe { prev.as_ref() } {
            Some(p) => p.next.set(next),
            None => self.head.set(next),
        }
        // SAFETY: as above.
        match unsafe { next.as_ref() } {
            Some(n) => n.prev.set(prev),
            None => self.tail.set(prev),
        }
        // `node`'s own links are left as they are: an entry out of the list is never linked in
        // again, and its links are not read (`granted` says whether it is in the list).
        self.len.set(self.len.get() - 1);
    }

    /// Unlinks the first entry and marks it granted, in one step (rule 4); the caller then
    /// stores the grant and wakes it with [`granted`](Self::granted).
    #[inline]
    fn pop_granted(&self) -> Option<&Node<V>> {
        // SAFETY: rule 1: a non-null `head` is an entry in the list, so its frame is alive; it
        // stays alive until its waiter runs again, which needs a switch, and the reference
        // does not outlive the caller's (non-switching) step.
        let node = unsafe { self.head.get().as_ref() }?;
        // `unlink` for the first entry, whose `prev` is null.
        let next = node.next.get();
        self.head.set(next);
        // SAFETY: rule 1: a non-null `next` is an entry in the list, so its frame is alive.
        match unsafe { next.as_ref() } {
            Some(n) => n.prev.set(std::ptr::null()),
            None => self.tail.set(std::ptr::null()),
        }
        self.len.set(self.len.get() - 1);
        node.granted.set(true);
        self.unclaimed.set(self.unclaimed.get() + 1);
        Some(node)
    }

    /// Grants `v` to the first waiter and wakes it; `Err(v)` if nobody waits.
    ///
    /// The test for a waiter is always inlined (a release nobody waits for costs one load and
    /// one branch); the grant itself is left to the inliner ([`grant_first`](Self::grant_first)),
    /// which puts it in line in a put that hands its item over (the queue ping-pong) and keeps
    /// it out of fast paths that would otherwise save registers for it.
    #[inline(always)]
    pub(crate) fn grant_one(&self, v: V) -> Result<(), V> {
        if self.head.get().is_null() {
            return Err(v);
        }
        self.grant_first(v);
        Ok(())
    }

    /// [`grant_one`](Self::grant_one) once it found a waiter.
    #[inline]
    fn grant_first(&self, v: V) {
        let node = self.pop_granted().expect("greenfiber: a wait list with a head is not empty");
        node.value.set(Some(v));
        Self::granted(node);
    }

    /// Takes the first waiter's offer, marks it granted and wakes it; `None` if nobody waits.
    /// The outer `Option` says whether there was a waiter, the inner one is its offer.
    pub(crate) fn take_one(&self) -> Option<Option<V>> {
        self.pop_granted().map(|node| {
            let v = node.value.take();
            Self::granted(node);
            v
        })
    }

    /// Grants every waiter a value made by `mk`; returns how many.
    pub(crate) fn grant_all(&self, mut mk: impl FnMut() -> V) -> usize {
        // Nobody can join while this runs (no switch), so `len` entries is everyone.
        let n = self.len.get();
        for _ in 0..n {
            let node = self.pop_granted().expect("greenfiber: a wait list shorter than its len");
            node.value.set(Some(mk()));
            Self::granted(node);
        }
        n
    }

    /// Wakes a node that [`pop_granted`](Self::pop_granted) returned.
    #[inline]
    fn granted(node: &Node<V>) {
        // SAFETY: rule 1: the waiter lives in the node's frame, which is alive (the node was
        // in the list until this step and the waiter has not run since).
        unsafe { unpark(node.waiter.as_ref(), Wake::Woken) };
    }

    /// Grants made that their waiters have not yet taken (they are queued to run, or
    /// unwinding): a bounded semaphore counts these permits as free, and an `Event` lets
    /// their waiters return before a new `wait` on the set event does.
    pub(crate) fn unclaimed(&self) -> usize {
        self.unclaimed.get()
    }

    /// Number of waiters.
    pub(crate) fn len(&self) -> usize {
        self.len.get()
    }

    /// True if nobody waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.len.get() == 0
    }
}

impl WaitList<()> {
    /// Parks until notified or `deadline`: `Woken` if notified, else `TimedOut`. A notification
    /// that reaches a waiter which then unwinds is dropped (callers re-check their state).
    pub(crate) fn wait(&self, what: &'static str, deadline: Option<Instant>) -> Wake {
        match self.wait_for(what, None, deadline, |()| {}) {
            Outcome::Granted(_) => Wake::Woken,
            Outcome::TimedOut(_) => Wake::TimedOut,
        }
    }

    /// Wakes the first waiter; false if there was none.
    pub(crate) fn notify_one(&self) -> bool {
        self.grant_one(()).is_ok()
    }

    /// Wakes every waiter; returns how many.
    pub(crate) fn notify_all(&self) -> usize {
        self.grant_all(|| ())
    }
}

/// Unlinks a waiting entry, or hands on an unclaimed grant, however the wait ends.
struct Enqueued<'a, V, F: FnOnce(V)> {
    list: &'a WaitList<V>,
    node: &'a Node<V>,
    hand_on: Option<F>,
}

impl<V, F: FnOnce(V)> Drop for Enqueued<'_, V, F> {
    #[inline]
    fn drop(&mut self) {
        if self.node.granted.get() {
            // Granted: already unlinked, and now claimed. A normal return took the value; an
            // unwind did not.
            self.list.unclaimed.set(self.list.unclaimed.get() - 1);
            if let (Some(v), Some(h)) = (self.node.value.take(), self.hand_on.take()) {
                h(v);
            }
        } else {
            // SAFETY: not granted means Waiting, so still in the list (entry-state table).
            unsafe { self.list.unlink(self.node) };
        }
    }
}

/// The waiting half of a cross-thread wake-up: lives on the hub's thread (`!Send`). One fiber
/// waits on it at a time, which `&mut self` makes the compiler check.
///
/// ```
/// use greenfiber::hub::remote_signal;
/// let (mut wait, waker) = remote_signal();
/// let t = std::thread::spawn(move || {
///     std::thread::sleep(std::time::Duration::from_millis(10));
///     waker.wake();
/// });
/// wait.wait(); // other fibers run meanwhile
/// t.join().unwrap();
/// ```
///
/// Two fibers cannot share one (each would need it mutably):
///
/// ```compile_fail
/// let (wait, _waker) = greenfiber::hub::remote_signal();
/// let wait = std::rc::Rc::new(wait);
/// let w2 = wait.clone();
/// greenfiber::spawn(move || w2.wait());
/// ```
pub struct RemoteWait {
    id: u64,
    shared: Arc<Signal>,
    _not_send: std::marker::PhantomData<*const ()>,
}

/// The state one signal's two halves share.
struct Signal {
    /// Woken and not yet seen by the waiting side.
    woken: AtomicBool,
    /// Live `RemoteWaker` clones. At 0 nothing can wake the waiting side any more, so its
    /// wait is no longer one "outside" the thread: blocking forever on it is LoopExit.
    wakers: AtomicUsize,
}

/// The waking half: `Send + Sync + Clone`, for any OS thread. Only an id and an `Arc` cross
/// threads, never a coroutine handle.
pub struct RemoteWaker {
    remote: Remote,
    id: u64,
    shared: Arc<Signal>,
}

impl Clone for RemoteWaker {
    fn clone(&self) -> RemoteWaker {
        self.shared.wakers.fetch_add(1, Ordering::Relaxed);
        RemoteWaker { remote: self.remote.clone(), id: self.id, shared: self.shared.clone() }
    }
}

impl Drop for RemoteWaker {
    fn drop(&mut self) {
        // The last waker gone without a wake-up pending: tell the hub, so that a fiber waiting
        // on the signal stops counting as a wait another thread may end (LoopExit then sees
        // it). With a wake-up pending, the waiting side sees it first and never waits again
        // on a registered id.
        if self.shared.wakers.fetch_sub(1, Ordering::AcqRel) == 1
            && !self.shared.woken.load(Ordering::Acquire)
        {
            self.remote.wake(self.id);
        }
    }
}

/// A pair for waking a fiber of this thread from another OS thread (built on the reactor's
/// eventfd waker).
/// A wake that comes before the wait is kept: the next wait returns at once. Once every
/// `RemoteWaker` is dropped, a wait that nothing else can end raises LoopExit, like any.
pub fn remote_signal() -> (RemoteWait, RemoteWaker) {
    scheduler::with(|hub| {
        let id = hub.next_remote_id.get();
        hub.next_remote_id.set(id + 1);
        let shared =
            Arc::new(Signal { woken: AtomicBool::new(false), wakers: AtomicUsize::new(1) });
        (
            RemoteWait { id, shared: shared.clone(), _not_send: std::marker::PhantomData },
            RemoteWaker { remote: hub.remote.clone(), id, shared },
        )
    })
}

impl RemoteWaker {
    /// Wakes the fiber waiting on the paired [`RemoteWait`] (or the next one to wait).
    /// Wakes before that fiber runs again count once, like a flag.
    pub fn wake(&self) {
        // The flag is the wake-up; the id only tells the hub to look. Only the wake that sets
        // the flag queues the id, so however often this is called, at most one id per wait is
        // queued for the hub.
        if !self.shared.woken.swap(true, Ordering::AcqRel) {
            self.remote.wake(self.id);
        }
    }
}

impl RemoteWait {
    /// Waits until woken; other fibers run meanwhile.
    pub fn wait(&mut self) {
        self.wait_deadline(None);
    }

    /// Waits at most `d`; true if woken.
    pub fn wait_timeout(&mut self, d: Duration) -> bool {
        self.wait_deadline(Some(super::time::after(d)))
    }

    /// `&mut self`: a second waiter on the same id would replace the first in the hub's table,
    /// and the first would never be woken.
    pub(crate) fn wait_deadline(&mut self, deadline: Option<Instant>) -> bool {
        loop {
            // Read before the flag: a waker's `wake` comes before its drop, so if no waker is
            // left now, every wake-up there will ever be is already in the flag. (Read after
            // it, a wake and the last drop could both fall between the two reads: the wake
            // was then missed, and the wait never registered for the id it queued.)
            let wakers_left = self.shared.wakers.load(Ordering::Acquire) > 0;
            if self.shared.woken.swap(false, Ordering::Acquire) {
                return true;
            }
            let w = Waiter::new("a wake-up from another thread");
            // With no waker left, only a deadline (or a kill) can end this wait: it is not
            // registered as one another thread may end.
            if wakers_left {
                scheduler::with(|hub| {
                    hub.remote_waits.borrow_mut().insert(self.id, w.as_ref());
                    w.reg.set(Registration::Remote(self.id));
                });
            }
            if w.park(deadline) == Wake::TimedOut {
                return self.shared.woken.swap(false, Ordering::Acquire);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::rc::Rc;
    use std::time::Duration;

    use crate::coroutine::{Coroutine, current};
    use crate::hub::{Greenlet, sleep, spawn, with_timeout};

    /// A fiber that waits until it is killed: joining it is a wait that `kill` ends.
    fn gate() -> Greenlet<()> {
        spawn(|| sleep(Duration::from_secs(3600)))
    }

    #[test]
    fn a_park_that_kept_its_coroutine_gives_the_count_back_as_it_ends() {
        // A raw coroutine's last handle goes while it waits (in a join): the park takes the
        // count over (rule 7 of `coroutine/mod.rs`) and drops it as it ends, which retires the
        // coroutine; as it parks again the retired handle goes, and the new park takes it over.
        // Once it has finished, the handle it left behind is the only one: no count was kept.
        let (first, second) = (gate(), gate());
        let seen: Rc<Cell<Option<Coroutine>>> = Rc::new(Cell::new(None));
        let (g1, g2, s2) = (first.clone(), second.clone(), seen.clone());
        let f = spawn(move || {
            let v = Coroutine::new(move |()| {
                g1.join();
                g2.join();
                s2.set(Some(current()));
            });
            // It parks, and this fiber is left in its switch until the timeout ends that.
            let r = with_timeout(Duration::from_millis(5), || v.switch::<(), ()>(()));
            assert!(r.is_err());
            drop(v);
        });
        f.join();
        first.kill();
        sleep(Duration::from_millis(2));
        assert!(seen.take().is_none(), "it waits again");
        second.kill();
        sleep(Duration::from_millis(2));
        let me = seen.take().expect("woken twice, it finished");
        assert!(me.is_dead());
        assert_eq!(me.handle_count(), 1, "a count a park took over was kept");
    }

    #[test]
    fn a_coroutine_that_survives_the_drop_of_its_last_handle_and_parks_is_kept_by_the_park() {
        // The drop of its last handle kills it; it catches the kill and parks. The dropper's
        // own timeout ends the kill while it lives on: parked, it is kept by its park (rule 7
        // of `coroutine/mod.rs`) and woken as usual, and the count comes back as it finishes.
        let open = gate();
        let seen: Rc<Cell<Option<Coroutine>>> = Rc::new(Cell::new(None));
        let (g2, s2) = (open.clone(), seen.clone());
        let f = spawn(move || {
            let v = Coroutine::new(move |()| {
                let caught = catch_unwind(AssertUnwindSafe(|| {
                    let creator = current().parent().expect("a parent");
                    creator.switch::<(), ()>(());
                }));
                assert!(caught.is_err(), "killed");
                g2.join();
                s2.set(Some(current()));
            });
            v.switch::<(), ()>(());
            let r = with_timeout(Duration::from_millis(5), || drop(v));
            assert!(r.is_err(), "the kill comes back only through the timeout");
        });
        f.join();
        open.kill();
        sleep(Duration::from_millis(2));
        let me = seen.take().expect("the join woke it");
        assert!(me.is_dead());
        assert_eq!(me.handle_count(), 1, "its last handle's count was kept");
    }
}
