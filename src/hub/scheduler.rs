//! The hub: one coroutine per thread that runs ready coroutines, fires timers and polls the
//! reactor. Parked coroutines are switched into by the hub, or directly by a coroutine that
//! parks while the round lasts (`park.rs`, "hand-off"); `park.rs` is the only code that
//! switches *to* the hub.
//!
//! ```text
//!            +--------------------------------------------------------------+
//!            v                                                              |
//!   1. a round: run ready coroutines in FIFO order until the queue is empty |
//!      or ROUND_BUDGET of them have run. A coroutine that parks hands       |
//!      control straight to the next one; the hub runs its callbacks (the    |
//!      kills `Greenlet::kill` asks for) as soon as control is back with it  |
//!   2. run callbacks                                                        |
//!   3. fire due timers  -> unpark (TimedOut) or raise Timeout in the owner  |
//!   4. poll mio: timeout 0 if anything is ready, else until the next timer, |
//!      else forever if a socket or another thread may wake someone,         |
//!      else nothing can ever run: wake the stuck waiter with LoopExit  -----+
//! ```
//!
//! This is gevent's loop: its hub runs queued callbacks (each one a greenlet switch) until the
//! queue is empty or its switch interval has passed, then polls. A `yield_now` re-queues its
//! coroutine behind every other ready one, so two fibers that yield in turn alternate
//! strictly, and timers and sockets are looked at at least every `ROUND_BUDGET` switches.
//!
//! Hand-off saves a switch per park: a fiber that blocks switches to the next ready fiber
//! instead of to the hub, which would only switch on to that same fiber. Two fibers that wake
//! each other (a queue ping-pong, two yielders) then cost one stack switch per turn. A
//! hand-off to a coroutine outside the resume chain nests a resume, so with a long ready
//! queue the parks go back to the hub every `HANDOFF_CHAIN` coroutines (`Hub::next_handoff`).
//!
//! The hub's parent is the thread's main coroutine. It is created by the first call that
//! needs it on a thread and never finishes. At thread exit it is not unwound (a thread-local
//! destructor cannot switch) but *abandoned*: marked dead without running again, because its
//! frames refer to the destroyed `Hub`, and its stack goes back to the pool (the few handles
//! and buffers its frames own are leaked), so a program that starts and ends threads does
//! not lose a stack per thread. A fiber parked at that moment stays parked, with its stack
//! (that one is leaked: it may own anything), unless a later thread-local destructor kills it
//! (Layer 1's `kill`; the drop of its last handle does not, as its park keeps it: coroutine
//! rule 7): it then unwinds without the hub (its guards look the hub up with `try_with` and
//! find none) and ends into main, the hub's parent.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::mem::MaybeUninit;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use super::park::{self, WaiterRef, Wake};
use super::reactor::Reactor;
use super::remote::Remote;
use super::timers::{TimerKey, Timers};
use super::unwind;
use crate::coroutine::{Coroutine, main_coroutine};

/// What a timer does when it fires.
pub(crate) enum TimerAction {
    /// Wake a parked waiter with `TimedOut`.
    Wake(WaiterRef),
    /// Raise `with_timeout`'s payload in `co` at its blocking point. `key` is the cell in the
    /// `with_timeout` frame that holds this timer's current key (re-armed timers update it).
    /// `mark`: where `co` stood in its unwinds when the `with_timeout` began (see
    /// `TimeoutFired`).
    Raise { co: Coroutine, id: u64, key: *const Cell<Option<TimerKey>>, mark: unwind::Mark },
    /// Put a fiber spawned with `spawn_later` on the ready queue.
    Start(Coroutine),
}

/// How many ready coroutines a round runs, at most, before the hub looks at timers, kill
/// callbacks and sockets again (tokio polls every 61 tasks, gevent every 50 callbacks or 5 ms).
const ROUND_BUDGET: u32 = 64;

/// Coroutines taken from a long ready queue, at most, before a park switches to the hub
/// instead of handing off ([`Hub::next_handoff`]).
const HANDOFF_CHAIN: u32 = 8;

/// The per-thread hub.
pub(crate) struct Hub {
    /// The hub's own coroutine.
    pub(crate) co: Coroutine,
    /// Coroutines to run, in order: woken waiters and new fibers.
    pub(crate) ready: RunQueue,
    /// How many more ready coroutines this round may run; 0 outside a round.
    budget: Cell<u32>,
    pub(crate) timers: RefCell<Timers<TimerAction>>,
    pub(crate) reactor: RefCell<Reactor<WaiterRef>>,
    /// How many waiters are registered with the reactor.
    pub(crate) io_waits: Cell<usize>,
    pub(crate) remote: Remote,
    /// Waiters for a wake-up from another thread, by id.
    pub(crate) remote_waits: RefCell<HashMap<u64, WaiterRef>>,
    pub(crate) next_remote_id: Cell<u64>,
    /// Callbacks to run from the hub (the kills `Greenlet::kill` asks for).
    pub(crate) callbacks: Callbacks,
    /// The message for the coroutine woken with `Wake::LoopExit`.
    pub(crate) loop_exit: Cell<Option<String>>,
    /// Live spawned fibers, for `fibers()` and the LoopExit message.
    pub(crate) fibers: RefCell<Registry>,
    pub(crate) next_timeout_id: Cell<u64>,
    /// Raises (kills, timeouts, throws) that reached a coroutine parked while it may have been
    /// unwinding, kept until it is seen unwinding no more (park.rs rule 5).
    pub(crate) deferred: RefCell<Vec<(Coroutine, Box<dyn Any + Send>)>>,
    /// Kills and timeouts a C caller swallowed, held for their coroutines (`held.rs`).
    pub(crate) held: RefCell<Vec<(Coroutine, Box<dyn Any + Send>)>>,
    /// True while `held` is not empty: the one check every park makes.
    pub(crate) held_any: Cell<bool>,
}

thread_local! {
    static HUB: Hub = Hub::new();
    /// True while this thread's hub exists. `const`-initialised and without a destructor, so
    /// reading it never creates the hub and works before `main` and during thread teardown
    /// (the monkey hooks' fast path reads it).
    static LIVE: Cell<bool> = const { Cell::new(false) };
}

/// True if this thread has a hub (without creating one).
#[inline(always)]
pub(crate) fn is_live() -> bool {
    LIVE.with(Cell::get)
}

/// Runs `f` with this thread's hub, creating it on first use.
#[inline]
pub(crate) fn with<T>(f: impl FnOnce(&Hub) -> T) -> T {
    HUB.with(f)
}

/// True if the running coroutine is this thread's hub (a callback or timer action), where
/// nothing may block or yield.
pub(crate) fn in_hub() -> bool {
    with(|hub| hub.co == crate::coroutine::current())
}

/// The end of a fiber that returned, as the hub sees it: unless a raise is held for some fiber
/// (`held.rs`; the fiber's end must then look for its own, and gets `None`), takes the fiber in
/// `slot` out of the registry and returns its handle there (`Some(None)` during thread
/// teardown, the hub gone). Inlined into each fiber's end (`try_with` out of line cost ~15
/// instructions a fiber; inlined everywhere, it moved `yield` by +5).
#[inline(always)]
pub(crate) fn fiber_returned(slot: usize) -> Option<Option<Coroutine>> {
    try_with_inline(|hub| (!hub.held_any.get()).then(|| hub.fibers.borrow_mut().remove(slot)))
        .unwrap_or(Some(None))
}

/// [`with`], always inlined: for the wait list's park, which `with` alone left a call.
/// (`HUB.with` here instead of `try_with`: queue ping-pong 520 -> 576 instructions.)
#[inline(always)]
pub(crate) fn with_inline<T>(f: impl FnOnce(&Hub) -> T) -> T {
    match HUB.try_with(f) {
        Ok(t) => t,
        Err(_) => panic!("greenfiber: the hub used during thread teardown"),
    }
}

/// Like [`with`], but `None` during thread teardown.
pub(crate) fn try_with<T>(f: impl FnOnce(&Hub) -> T) -> Option<T> {
    HUB.try_with(f).ok()
}

/// [`try_with`], always inlined: for the few small hot callers (a wake-up).
#[inline(always)]
pub(crate) fn try_with_inline<T>(f: impl FnOnce(&Hub) -> T) -> Option<T> {
    HUB.try_with(f).ok()
}

impl Hub {
    fn new() -> Hub {
        let reactor = Reactor::new().expect("greenfiber: cannot create the epoll reactor");
        let remote = Remote::new(reactor.waker());
        let co = Coroutine::builder().name("hub").parent(&main_coroutine()).build(|()| {
            with(|hub| hub.run());
        });
        let hub = Hub {
            co,
            ready: RunQueue::new(),
            budget: Cell::new(0),
            timers: RefCell::new(Timers::new()),
            reactor: RefCell::new(reactor),
            io_waits: Cell::new(0),
            remote,
            remote_waits: RefCell::new(HashMap::new()),
            next_remote_id: Cell::new(1),
            callbacks: Callbacks::default(),
            loop_exit: Cell::new(None),
            fibers: RefCell::new(Registry::default()),
            next_timeout_id: Cell::new(1),
            deferred: RefCell::new(Vec::new()),
            held: RefCell::new(Vec::new()),
            held_any: Cell::new(false),
        };
        LIVE.with(|l| l.set(true));
        hub
    }

    /// The hub loop (see the module docs). Never returns.
    fn run(&self) {
        let mut woken = Vec::new();
        let mut ids = Vec::new();
        loop {
            // 1. A round of ready coroutines.
            self.budget.set(ROUND_BUDGET);
            while let Some(co) = self.next_ready() {
                unwind::resuming(&co, std::thread::panicking());
                self.ready.long_pops.set(0);
                // SWITCH: runs `co`, and whatever it hands off to, until one of them comes back
                // here: the round is over, a callback is due, or a fiber ended. Only `()`
                // comes back from fibers; anything else is a stray end (below).
                if let Err(p) = catch_unwind(AssertUnwindSafe(|| co.switch::<(), ()>(()))) {
                    stray(&*p);
                }
                // A kill asked for meanwhile goes before the next fiber runs. (The flag first:
                // the call, with its borrow of the queue, cost ~29 instructions a fiber.)
                if !self.callbacks.is_empty() {
                    self.run_callbacks();
                }
            }
            self.budget.set(0);
            // 2. Callbacks, and raises kept while their coroutine may have been unwinding.
            self.run_callbacks();
            if !self.deferred.borrow().is_empty() {
                self.raise_deferred();
            }
            if self.held_any.get() && !std::thread::panicking() {
                super::held::raise_parked(self, false);
            }
            // 3. Timers.
            let mut now = None;
            if !self.timers.borrow().is_empty() {
                let t = Instant::now();
                now = Some(t);
                // One at a time (see `pop_one_due`): firing a timeout runs its fiber, whose
                // unwinding may cancel other due timers. At most as many as were pending, so
                // timers set meanwhile for `t` or earlier wait for the next pass.
                let pending = self.timers.borrow().len();
                for _ in 0..pending {
                    let due = self.timers.borrow_mut().pop_one_due(t);
                    let Some(action) = due else { break };
                    self.fire(action);
                    // A kill the fired fiber asked for goes before the next timer resumes one.
                    self.run_callbacks();
                }
            }
            // 4. The reactor.
            let busy = !self.ready.is_empty() || !self.callbacks.is_empty();
            let waits_outside = self.io_waits.get() > 0
                || !self.remote_waits.borrow().is_empty()
                || self.remote.has_pending();
            let timeout = if busy {
                if !waits_outside {
                    continue;
                }
                Some(Duration::ZERO)
            } else if let Some(d) = self.timers.borrow().next_deadline() {
                let now = now.unwrap_or_else(Instant::now);
                Some(d.saturating_duration_since(now))
            } else if waits_outside {
                None
            } else {
                self.loop_exit();
                continue;
            };
            let remote_fired = match self.reactor.borrow_mut().poll(timeout, &mut woken) {
                Ok(r) => r,
                Err(e) => {
                    log::error!("greenfiber: epoll failed: {e}");
                    false
                }
            };
            for w in woken.drain(..) {
                park::unpark_io(self, w);
            }
            if remote_fired {
                self.remote.drain(&mut ids);
                for id in ids.drain(..) {
                    let w = self.remote_waits.borrow_mut().remove(&id);
                    if let Some(w) = w {
                        park::unpark_in(self, w, Wake::Woken);
                    }
                }
            }
        }
    }

    /// Registers a new fiber and queues it to start; returns its slot in the registry.
    /// (Forced inline into `spawn_with`, it cost +19 instructions a spawn.)
    #[inline]
    pub(crate) fn add_fiber(&self, co: &Coroutine) -> usize {
        let slot = self.fibers.borrow_mut().insert(co.clone());
        self.ready.push_back(co.clone());
        slot
    }

    /// The next coroutine this round may run, taken off the ready queue; `None` when the queue
    /// is empty, the round's budget is spent or a callback waits for the hub.
    ///
    /// The first handle taken is almost always runnable: that case is inlined into every park,
    /// and skipping stale ones (a waiter that was woken and then killed) is out of line.
    #[inline]
    pub(crate) fn next_ready(&self) -> Option<Coroutine> {
        if self.budget.get() == 0 || !self.callbacks.is_empty() {
            return None;
        }
        let co = self.ready.pop_front()?;
        if runnable(&co) {
            self.budget.set(self.budget.get() - 1);
            return Some(co);
        }
        self.next_ready_after_stale(co)
    }

    /// [`next_ready`](Self::next_ready) for a park's hand-off; `None`, so that the park switches
    /// to the hub, once `HANDOFF_CHAIN` coroutines were taken from a long queue since the hub
    /// last ran one. Each hand-off to a coroutine not in the resume chain nests a resume
    /// (`switch.rs`), and the chain unwinds through every parked coroutine's frames when it
    /// ends; with a long queue, whose coroutines are all of that kind, the hub's round budget
    /// would let it grow to 64, whose frames and records the cache no longer holds by then
    /// (100k fibers spawned at once: chain of 64, 15.5-16.9 ms a batch; 8, 13.5-14.8). Shorter
    /// queues, such as two coroutines that wake each other, hand off as before.
    #[inline]
    pub(crate) fn next_handoff(&self) -> Option<Coroutine> {
        if self.ready.long_pops.get() >= HANDOFF_CHAIN {
            return None;
        }
        self.next_ready()
    }

    /// [`next_ready`](Self::next_ready) once it took a handle that is not runnable.
    #[cold]
    #[inline(never)]
    fn next_ready_after_stale(&self, stale: Coroutine) -> Option<Coroutine> {
        drop(stale);
        while self.budget.get() > 0 && self.callbacks.is_empty() {
            let co = self.ready.pop_front()?;
            if runnable(&co) {
                self.budget.set(self.budget.get() - 1);
                return Some(co);
            }
        }
        None
    }

    /// Runs the callbacks queued so far, in order.
    fn run_callbacks(&self) {
        loop {
            let cb = self.callbacks.pop_front();
            let Some(cb) = cb else { break };
            if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(cb)) {
                log::error!("a hub callback panicked: {}", crate::error::panic_message(&*p));
            }
        }
    }

    fn fire(&self, action: TimerAction) {
        match action {
            TimerAction::Wake(w) => park::unpark_in(self, w, Wake::TimedOut),
            TimerAction::Start(co) => self.ready.push_back(co),
            TimerAction::Raise { co, id, key, mark } => {
                if co.is_dead() {
                    return;
                }
                // Raised wherever `co` is suspended, as gevent's Timeout is at the pending
                // switch: a park (a queued wake-up left behind is skipped by `runnable`), or a
                // raw switch to another coroutine (`with_timeout(d, || other.switch(v))`), whose
                // later switch back then finds `co` elsewhere, as in greenlet.
                // SAFETY: `key` points into the `with_timeout` frame of `co`, which is alive:
                // that frame cancels this timer before it ends, so a timer that fires finds it
                // in place.
                unsafe { (*key).set(None) };
                raise_from_hub(&co, Box::new(super::time::TimeoutFired { id, mark }));
            }
        }
    }

    /// Raises what park.rs kept (rule 5) into each coroutine seen unwinding no more (or, for a
    /// timeout set in a cleanup, back at the depth it was set at), where it is suspended now;
    /// one that died meanwhile needs none. One at a time, each taken out of
    /// the list just before it is raised: what a raise runs may end a `with_timeout` whose
    /// own kept timeout must then leave the list, not be raised later.
    #[cold]
    #[inline(never)]
    fn raise_deferred(&self) {
        loop {
            let next = {
                let mut kept = self.deferred.borrow_mut();
                // With no panic under way on the thread, no coroutine is in a cleanup: a mark
                // left on one (it caught its raise while another unwound) is stale.
                let fresh = !std::thread::panicking();
                let i = kept.iter().position(|(co, p)| {
                    co.is_dead()
                        || fresh
                        || !unwind::is_marked(co)
                        || unwind::is_cleanup_timeout(co, &**p)
                });
                i.map(|i| kept.remove(i))
            };
            let Some((co, payload)) = next else { break };
            if !co.is_dead() {
                raise_from_hub(&co, payload);
            }
        }
    }

    /// Nothing can ever run again: wake the coroutine that is stuck with LoopExit.
    #[cold]
    fn loop_exit(&self) {
        // A raise held for a parked coroutine (held.rs) may be what everyone waits for.
        if self.held_any.get() && super::held::raise_parked(self, true) {
            return;
        }
        let main = main_coroutine();
        // Main if it is parked, else the parked fiber with the lowest id: the one that has
        // waited longest. One that may be unwinding only if there is no other: LoopExit raised
        // into a cleanup that blocks forever aborts the process (park.rs rule 5).
        let mut parked: Vec<_> = std::iter::once(&main)
            .chain(self.fibers.borrow().iter())
            .filter_map(|c| {
                park::waiter_of(c).filter(|w| w.is_parked()).map(|w| (c.clone(), w.as_ref()))
            })
            .collect();
        let panicking = std::thread::panicking();
        parked.sort_by_key(|(c, _)| (panicking && unwind::is_marked(c), !c.is_main(), c.id()));
        let victim = parked.into_iter().next();
        let listing = super::debug::describe(self);
        match victim {
            Some((co, w)) => {
                let what = park::waiter_of(&co).map(|w| w.what()).unwrap_or("?");
                self.loop_exit.set(Some(format!(
                    "greenfiber: LoopExit: {co:?} would block forever waiting on {what}: no \
                     fiber is ready, no timer is pending and no socket or other thread can wake \
                     anyone.\n{listing}"
                )));
                park::unpark_in(self, w, Wake::LoopExit);
            }
            None => {
                // Entered without anyone parked (a raw switch to the hub): give control back to
                // main with the message.
                log::error!("greenfiber: the hub has nothing to run and nobody waits on it");
                let _ = main.throw(format!("greenfiber: LoopExit: nothing to run\n{listing}"));
            }
        }
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        LIVE.with(|l| l.set(false));
        // Thread teardown: coroutines cannot be switched into any more, so the hub's stack and
        // the queued coroutines are leaked instead of killed.
        self.remote.close();
        // Nothing may run on the hub's stack again: its frames hold references to this `Hub`.
        // A fiber that a later thread-local destructor kills then ends into main instead.
        // SAFETY: the hub never parks, so no `Waiter` or wait-list entry lives on its stack;
        // its frames hold only this `Hub`'s address (gone with it), handles and buffers
        // (`Coroutine`s, the loop's `Vec`s, a message being routed), which are leaked.
        unsafe { self.co.abandon() };
        self.ready.leak_all();
        // A held or kept raise's handle may be its coroutine's last: dropping it would kill it
        // here, with no hub for its cleanup to park in.
        std::mem::forget(std::mem::take(&mut *self.held.borrow_mut()));
        std::mem::forget(std::mem::take(&mut *self.deferred.borrow_mut()));
        std::mem::forget(std::mem::take(&mut self.fibers.borrow_mut().slots));
        std::mem::forget(self.co.clone());
    }
}

/// The hub's callbacks, with a flag that says whether any is queued: the check every hand-off
/// makes (`next_ready`), without borrowing the queue.
#[derive(Default)]
pub(crate) struct Callbacks {
    queue: RefCell<VecDeque<Box<dyn FnOnce()>>>,
    /// True while `queue` is not empty.
    any: Cell<bool>,
}

impl Callbacks {
    /// The queue, to add a callback to with [`push_back`](CallbacksMut::push_back).
    pub(crate) fn borrow_mut(&self) -> CallbacksMut<'_> {
        CallbacksMut { queue: self.queue.borrow_mut(), any: &self.any }
    }

    /// True if no callback is queued.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        !self.any.get()
    }

    /// Takes the first callback out.
    fn pop_front(&self) -> Option<Box<dyn FnOnce()>> {
        let mut queue = self.queue.borrow_mut();
        let cb = queue.pop_front();
        self.any.set(!queue.is_empty());
        cb
    }
}

/// The callback queue, borrowed to add to it.
pub(crate) struct CallbacksMut<'a> {
    queue: std::cell::RefMut<'a, VecDeque<Box<dyn FnOnce()>>>,
    any: &'a Cell<bool>,
}

impl CallbacksMut<'_> {
    /// Queues `cb` behind the others.
    pub(crate) fn push_back(&mut self, cb: Box<dyn FnOnce()>) {
        self.queue.push_back(cb);
        self.any.set(true);
    }
}

/// The ready queue: coroutine handles in FIFO order, in a ring of slots whose number is a power
/// of two. Its state is in `Cell`s, not behind a `RefCell`: no method hands out a reference
/// into it or runs code that could reach it again (no handle is dropped inside a method, and
/// comparing handles compares addresses), so no borrow flag is needed, and each push and pop
/// is a few instructions (`VecDeque` behind a `RefCell` cost ~15 more a wake-up).
///
/// Rules (cited by the `SAFETY` comments):
/// 1. `slots` points at an allocation of `mask + 1` slots (a power of two, at least
///    `RunQueue::MIN`) made by [`RunQueue::alloc`], owned by the queue.
/// 2. `head` and `tail` count pushes and pops, wrapping; `tail - head` (wrapping) is the length,
///    at most `mask + 1`. The slots `i & mask` for `i` in `head..tail` hold live handles, owned by
///    the queue; the others are uninitialised.
pub(crate) struct RunQueue {
    slots: Cell<*mut MaybeUninit<Coroutine>>,
    mask: Cell<usize>,
    head: Cell<usize>,
    tail: Cell<usize>,
    /// Pops from a queue longer than `PREFETCH_LEN` since the hub last reset it (it counts for
    /// [`Hub::next_handoff`]).
    long_pops: Cell<u32>,
}

impl RunQueue {
    /// The slots a queue starts with.
    const MIN: usize = 64;

    fn new() -> RunQueue {
        RunQueue {
            slots: Cell::new(RunQueue::alloc(RunQueue::MIN)),
            mask: Cell::new(RunQueue::MIN - 1),
            head: Cell::new(0),
            tail: Cell::new(0),
            long_pops: Cell::new(0),
        }
    }

    /// `n` uninitialised slots, freed with [`free`](RunQueue::free).
    fn alloc(n: usize) -> *mut MaybeUninit<Coroutine> {
        Box::into_raw(Box::<[Coroutine]>::new_uninit_slice(n)).cast()
    }

    /// Frees the slots that [`alloc`](RunQueue::alloc) made; the handles in them are not
    /// dropped.
    ///
    /// # Safety
    /// `slots` came from `alloc(n)` and is not used again.
    unsafe fn free(slots: *mut MaybeUninit<Coroutine>, n: usize) {
        // SAFETY: the caller's contract: the box `alloc(n)` gave up, rebuilt whole.
        drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(slots, n)) });
    }

    /// Queues `co` at the back.
    #[inline]
    pub(crate) fn push_back(&self, co: Coroutine) {
        if self.tail.get().wrapping_sub(self.head.get()) > self.mask.get() {
            self.grow();
        }
        let tail = self.tail.get();
        // SAFETY: rules 1 and 2: the ring is not full (grown if it was), so slot `tail & mask`
        // is inside the allocation and holds no handle.
        unsafe { (*self.slots.get().add(tail & self.mask.get())).write(co) };
        self.tail.set(tail.wrapping_add(1));
    }

    /// Takes the first handle out.
    #[inline]
    pub(crate) fn pop_front(&self) -> Option<Coroutine> {
        let (head, tail) = (self.head.get(), self.tail.get());
        if head == tail {
            return None;
        }
        // SAFETY: rule 2: `head` is in `head..tail`, so its slot holds a live handle, which
        // leaves the queue's ownership as `head` moves past it.
        let co = unsafe { (*self.slots.get().add(head & self.mask.get())).assume_init_read() };
        self.head.set(head.wrapping_add(1));
        if tail.wrapping_sub(head) > RunQueue::PREFETCH_LEN {
            self.prefetch(head);
        }
        Some(co)
    }

    /// A queue longer than this holds coroutines whose records and stacks have left the cache
    /// by the time they run, so [`pop_front`](RunQueue::pop_front) has them prefetched a few
    /// places ahead. (Shorter, as with batches of 100 fibers, they are still cached, and the
    /// prefetches would only cost instructions.)
    const PREFETCH_LEN: usize = 256;
    /// How many places behind the one taken the stack is prefetched; the record twice as far
    /// (100k fibers spawned at once, warm: 2 places, 230 ns a fiber; 4, 197 ns; 8, 200 ns).
    const AHEAD: usize = 4;

    /// Prefetches for the coroutines `AHEAD` and `2 * AHEAD` places behind `head`, just taken,
    /// and counts the pop in `long_pops`. Out of line, so that the pops of short queues pay
    /// only for the length test.
    #[cold]
    #[inline(never)]
    fn prefetch(&self, head: usize) {
        self.long_pops.set(self.long_pops.get().saturating_add(1));
        let (slots, mask) = (self.slots.get(), self.mask.get());
        const { assert!(2 * RunQueue::AHEAD < RunQueue::PREFETCH_LEN) };
        // SAFETY: rule 2: the queue held more than `PREFETCH_LEN` > 2 * AHEAD handles from
        // `head` on, so both slots are in `head + 1..tail` and hold live handles.
        let (soon, later) = unsafe {
            (
                (*slots.add(head.wrapping_add(RunQueue::AHEAD) & mask)).assume_init_ref(),
                (*slots.add(head.wrapping_add(2 * RunQueue::AHEAD) & mask)).assume_init_ref(),
            )
        };
        crate::coroutine::prefetch_ahead(soon, later);
    }

    /// Takes out the last queued handle to `co`, if any; the others keep their order.
    pub(crate) fn remove_last(&self, co: &Coroutine) -> Option<Coroutine> {
        let (head, tail, mask, slots) =
            (self.head.get(), self.tail.get(), self.mask.get(), self.slots.get());
        let slot = |i: usize| {
            // SAFETY: rule 1: `i & mask` is a slot of the allocation.
            unsafe { slots.add(i & mask) }
        };
        let mut found = tail;
        loop {
            if found == head {
                return None;
            }
            found = found.wrapping_sub(1);
            // SAFETY: rule 2: `found` is in `head..tail`, so its slot holds a live handle; it
            // is only read (comparing handles compares addresses).
            if unsafe { (*slot(found)).assume_init_ref() } == co {
                break;
            }
        }
        // SAFETY: as above: `found` holds a live handle, which leaves the queue.
        let out = unsafe { (*slot(found)).assume_init_read() };
        let mut i = found;
        while i.wrapping_add(1) != tail {
            // SAFETY: rule 2: moves the live handle at `i + 1` into the slot just vacated at
            // `i`; the one at `i + 1` is then a bitwise copy that is not used again (the next
            // step fills it, or `tail` moves down past it).
            unsafe { slot(i).write(slot(i.wrapping_add(1)).read()) };
            i = i.wrapping_add(1);
        }
        self.tail.set(tail.wrapping_sub(1));
        Some(out)
    }

    /// Doubles the slots, keeping the handles in order (from slot 0).
    #[cold]
    #[inline(never)]
    fn grow(&self) {
        let (head, tail, mask, old) =
            (self.head.get(), self.tail.get(), self.mask.get(), self.slots.get());
        let n = mask + 1;
        let new = RunQueue::alloc(2 * n);
        for k in 0..tail.wrapping_sub(head) {
            // SAFETY: rules 1 and 2: moves each live handle bitwise to slot `k` of the new
            // allocation (of `2 * n` slots, `k` < `n`); the old slots are freed below without
            // dropping them.
            unsafe { new.add(k).write(old.add(head.wrapping_add(k) & mask).read()) };
        }
        // SAFETY: rule 1: `old` came from `alloc(n)`, and its handles have moved out.
        unsafe { RunQueue::free(old, n) };
        self.slots.set(new);
        self.mask.set(2 * n - 1);
        self.head.set(0);
        self.tail.set(tail.wrapping_sub(head));
    }

    /// True if nothing is queued.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.head.get() == self.tail.get()
    }

    /// Thread teardown: forgets every queued handle without dropping it (see `Hub`'s `Drop`).
    fn leak_all(&self) {
        self.head.set(self.tail.get());
    }
}

impl Drop for RunQueue {
    fn drop(&mut self) {
        // Each handle is out of the queue before it is dropped (its drop may kill a coroutine).
        while let Some(co) = self.pop_front() {
            drop(co);
        }
        // SAFETY: rule 1: the queue's own allocation, of `mask + 1` slots, now empty.
        unsafe { RunQueue::free(self.slots.get(), self.mask.get() + 1) };
    }
}

/// The live spawned fibers: a slab, so adding and removing one is O(1) with no hashing.
#[derive(Default)]
pub(crate) struct Registry {
    slots: Vec<Option<Coroutine>>,
    free: Vec<usize>,
}

impl Registry {
    /// Adds a fiber; returns its slot for [`remove`](Registry::remove).
    #[inline]
    pub(crate) fn insert(&mut self, co: Coroutine) -> usize {
        match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(co);
                i
            }
            None => {
                self.slots.push(Some(co));
                self.slots.len() - 1
            }
        }
    }

    /// Removes the fiber in `slot` (a no-op if it is already gone).
    #[inline]
    pub(crate) fn remove(&mut self, slot: usize) -> Option<Coroutine> {
        let co = self.slots.get_mut(slot)?.take();
        if co.is_some() {
            self.free.push(slot);
        }
        co
    }

    /// The live fibers.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Coroutine> {
        self.slots.iter().flatten()
    }
}

/// The hub raises `payload` (a timeout, a kill, a kept or held raise) in `co` where it is
/// suspended; `co` runs until it blocks again. A stray end that comes back instead is logged.
pub(crate) fn raise_from_hub(co: &Coroutine, payload: Box<dyn Any + Send>) {
    unwind::raising(co);
    // SWITCH: raise it in `co`; it runs until it blocks again.
    if let Err(p) = catch_unwind(AssertUnwindSafe(|| co.raise(payload))) {
        stray(&*p);
    }
}

/// Something other than a fiber's `()` reached the hub's loop: the end of a raw coroutine
/// whose parent chain leads to the hub (one made in a fiber that ended first), with a value or
/// a panic. The hub has nobody to pass it to: it is logged, and the hub goes on.
#[cold]
#[inline(never)]
fn stray(p: &(dyn Any + Send)) {
    log::error!(
        "greenfiber: the hub was sent what it cannot take (a coroutine whose parent chain \
         leads to the hub ended with a value or a panic; give such coroutines a parent that \
         outlives them): {}",
        crate::error::panic_message(p)
    );
}

/// May the hub switch into `co` now? A new fiber, or a waiter that was woken and has not run.
///
/// The waiter first, as most handles queued are woken waiters: a coroutine with one is parked,
/// so started and not dead (a park's guard clears the slot however the park ends, and only the
/// hub's own coroutine, which never parks, is abandoned at thread teardown with frames left).
#[inline]
fn runnable(co: &Coroutine) -> bool {
    match park::waiter_of(co) {
        Some(w) => w.is_woken(),
        None => !co.is_started() && !co.is_dead(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_queue_keeps_fifo_order_across_growth_wrap_and_removal() {
        let q = RunQueue::new();
        let cs: Vec<Coroutine> = (0..200).map(|_| Coroutine::new(|()| ())).collect();
        let mut model = std::collections::VecDeque::new();
        // Wrap around the first ring, then grow twice with the contents wrapped.
        for (round, c) in cs.iter().enumerate() {
            q.push_back(c.clone());
            model.push_back(c.clone());
            if round % 3 == 0 {
                assert!(q.pop_front() == model.pop_front());
            }
        }
        // Remove from the back, the middle and the front; a handle not queued is not found.
        for i in [model.len() - 1, model.len() / 2, 0] {
            let c = model.remove(i).unwrap();
            assert!(q.remove_last(&c) == Some(c));
        }
        assert!(q.remove_last(&Coroutine::new(|()| ())).is_none());
        while let Some(c) = q.pop_front() {
            assert!(Some(c) == model.pop_front());
        }
        assert!(model.is_empty() && q.is_empty());
        // Handles still queued are dropped with the queue (the last one of a new coroutine).
        q.push_back(cs[0].clone());
        q.push_back(Coroutine::new(|()| ()));
        drop(q);
    }

    #[test]
    fn a_long_ready_queue_nests_at_most_handoff_chain_resumes() {
        use std::cell::RefCell;
        use std::rc::Rc;
        // Each fiber, as it starts, counts the fibers in the resume chain: those that handed
        // off to it in a row, nested (`next_handoff`), and itself.
        let all: Rc<RefCell<Vec<Coroutine>>> = Rc::default();
        let deepest = Rc::new(Cell::new(0usize));
        let n = 4 * RunQueue::PREFETCH_LEN;
        let gs: Vec<_> = (0..n)
            .map(|_| {
                let (all, deepest) = (all.clone(), deepest.clone());
                crate::spawn(move || {
                    let depth = all.borrow().iter().filter(|c| c.in_chain()).count();
                    deepest.set(deepest.get().max(depth));
                    crate::yield_now();
                })
            })
            .collect();
        all.borrow_mut().extend(gs.iter().map(|g| g.coroutine().clone()));
        assert_eq!(crate::joinall(&gs, None), n);
        // Hand-offs still happen, up to the limit (the round budget alone would allow 64).
        let d = deepest.get();
        assert!(d > 1 && d <= HANDOFF_CHAIN as usize + 1, "deepest chain {d}");
    }
}
