//! Per-thread state: the main coroutine, the current one, and the message in flight.
//!
//! Created lazily by the first call that needs it on a thread (`current()`, `Coroutine::new`,
//! any switch) and reached afterwards through a `const` thread-local pointer, so a switch pays
//! one TLS load for it, not a lazy-initialisation check. Torn down by the thread-local
//! destructor at thread exit, on the thread's own stack, when main is current again. A
//! coroutine whose last handle is dropped after that point (by another thread-local's
//! destructor) is leaked with a `log::warn!` instead of killed (see `Coroutine`'s `Drop`).

use std::cell::{Cell, RefCell, UnsafeCell};
use std::mem::{ManuallyDrop, MaybeUninit, align_of, size_of};
use std::ptr;

use super::blocks::FreeBlocks;
use super::counted::CoreRef;
use super::stack_pool::StackCache;
use super::switch::Msg;
use super::{Core, Coroutine};

/// The state every thread with coroutines has.
pub(crate) struct ThreadState {
    /// The thread's main coroutine: the OS thread's own stack.
    pub(crate) main: Coroutine,
    /// The coroutine that runs now (greenlet's `getcurrent()`). It does not own a strong count:
    /// rule 2 keeps the running coroutine alive through its handles or through `retired`.
    current: Cell<*const Core>,
    /// Where the message in flight goes. The sender keeps the target alive until it arrives:
    /// through a handle its suspended frame holds, through `hold`, or, for a finished
    /// coroutine's return value, through its parent links (rule 2).
    pub(crate) target: Cell<*const Core>,
    /// Whether a value is in flight: null when the message is in `slow` instead, and once the
    /// receiver has moved the value out. Else the value, of the type the receiver waits for
    /// (checked by the sender), is in `slot` if that type fits there, and this is
    /// [`ValueSlot::IN_SLOT`]; if not, it is at this address, in the sender's suspended frame.
    /// The sender never drops it: the receiver moves it out.
    pub(crate) value: Cell<*mut ()>,
    /// A message that is not a checked value: a return value or a payload to raise.
    pub(crate) slow: Cell<Option<Msg>>,
    /// Where a value in flight whose type fits waits: a switched value, or the return value of a
    /// finishing coroutine, whose own stack is about to go back to the pool (see `switch.rs`).
    pub(crate) slot: ValueSlot,
    /// A handle that keeps the message's target alive when neither the sender's frame nor
    /// the parent links do (where a finishing coroutine's raise was routed).
    pub(crate) hold: Cell<Option<Coroutine>>,
    /// The last handle of the running coroutine, dropped while it ran: released (and the
    /// coroutine killed if it is still suspended then) once another coroutine runs.
    pub(crate) retired: Cell<Option<Coroutine>>,
    /// True while `hold` or `retired` holds a handle for the next arrival to drop.
    pub(crate) pending: Cell<bool>,
    /// Source of coroutine ids on this thread (main is 0).
    pub(crate) next_id: Cell<u64>,
    /// Whether `Builder::build` has made sure of the overflow reporter on this thread
    /// (`overflow::install`), so the next ones need not ask.
    pub(crate) overflow_ready: Cell<bool>,
    /// Freed blocks of cores and fibers' records, for the next ones made here (`blocks.rs`).
    pub(crate) blocks: FreeBlocks,
    /// Free stacks of the default size, for the next coroutines made here (`stack_pool.rs`).
    pub(crate) stacks: StackCache,
    /// The releases under way, one per coroutine whose stack runs one, with the parent links
    /// queued for it ([`drop_parent_link`](Self::drop_parent_link)). Usually empty; more than
    /// one only while a release waits in a killed coroutine's destructor that switched away.
    drains: RefCell<Vec<Drain>>,
    /// Links a release left behind when it unwound, for the next release to drop.
    stray: RefCell<Vec<Coroutine>>,
}

/// A release under way on one coroutine's stack.
struct Drain {
    /// The coroutine it runs on (an identity only: that stack keeps the core alive).
    owner: *const Core,
    /// Parent links released inside it, to drop once the current one is dropped.
    queued: Vec<Coroutine>,
}

impl ThreadState {
    fn new() -> ThreadState {
        let main = Coroutine::new_main();
        ThreadState {
            current: Cell::new(main.0.as_ptr()),
            main,
            target: Cell::new(ptr::null()),
            value: Cell::new(ptr::null_mut()),
            slow: Cell::new(None),
            slot: ValueSlot(UnsafeCell::new(MaybeUninit::uninit())),
            hold: Cell::new(None),
            retired: Cell::new(None),
            pending: Cell::new(false),
            next_id: Cell::new(1),
            overflow_ready: Cell::new(false),
            blocks: FreeBlocks::new(),
            stacks: StackCache::new(),
            drains: RefCell::new(Vec::new()),
            stray: RefCell::new(Vec::new()),
        }
    }

    /// Drops `parent`, the parent link of a core just released. That may release the parent,
    /// and its own parent link in turn, all the way up a chain: done nested, each level would
    /// take frames on this stack (a chain of a few thousand overflows it). So only the
    /// outermost release on a stack drops links, one after another; a release nested in it
    /// queues its link there.
    ///
    /// The queue belongs to the coroutine whose stack runs the release, not to the thread: a
    /// link dropped may kill a coroutine whose destructor switches away (a sleep, under the
    /// hub) and leaves this release waiting; other coroutines release meanwhile on their own
    /// stacks, at once.
    pub(crate) fn drop_parent_link(&self, parent: Coroutine) {
        let me = self.current_ptr();
        {
            let mut drains = self.drains.borrow_mut();
            if let Some(d) = drains.iter_mut().find(|d| ptr::eq(d.owner, me)) {
                d.queued.push(parent);
                return;
            }
            drains.push(Drain { owner: me, queued: Vec::new() });
        }
        /// Ends this stack's drain, however the loop ends. If a drop unwound (a destructor
        /// of a never-started coroutine's closure that panics), the links still queued are
        /// left for the next release: dropping them here, during the unwind, could panic again.
        struct Done<'a>(&'a ThreadState, *const Core);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                let mut drains = self.0.drains.borrow_mut();
                if let Some(i) = drains.iter().position(|d| ptr::eq(d.owner, self.1)) {
                    let left = drains.swap_remove(i).queued;
                    self.0.stray.borrow_mut().extend(left);
                }
            }
        }
        let _done = Done(self, me);
        let mut next = Some(parent);
        while let Some(p) = next {
            // May kill a suspended coroutine, which switches away and back here.
            drop(p);
            next = self.next_link(me);
        }
    }

    /// The next link for `me`'s drain to drop: one queued on its stack, else a stray one.
    fn next_link(&self, me: *const Core) -> Option<Coroutine> {
        let mut drains = self.drains.borrow_mut();
        let d = drains.iter_mut().find(|d| ptr::eq(d.owner, me))?;
        d.queued.pop().or_else(|| self.stray.borrow_mut().pop())
    }

    /// The running coroutine's core (alive: rule 2).
    #[inline]
    pub(crate) fn current_ptr(&self) -> *const Core {
        self.current.get()
    }

    /// Makes `me` the running coroutine.
    #[inline]
    pub(crate) fn set_current(&self, me: *const Core) {
        self.current.set(me);
    }

    /// A new handle to the running coroutine.
    #[inline]
    pub(crate) fn current(&self) -> Coroutine {
        let p = self.current.get();
        // SAFETY: rule 2: the running coroutine's core is alive (a handle or `retired` counts
        // for it), and `p` came from `CoreRef::as_ptr` of it.
        Coroutine(unsafe { CoreRef::from_core(p) })
    }

    /// A handle to the running coroutine that does not count (see [`super::current_uncounted`]).
    ///
    /// # Safety
    /// As [`CoreRef::borrow_core`]: not used once the running coroutine's core may be freed.
    #[inline(always)]
    pub(crate) unsafe fn current_uncounted(&self) -> ManuallyDrop<Coroutine> {
        // SAFETY: rule 2: the running coroutine's core is alive now, and `p` came from
        // `CoreRef::as_ptr` of it; the caller's contract covers the later uses.
        let h = unsafe { CoreRef::borrow_core(self.current.get()) };
        ManuallyDrop::new(Coroutine(ManuallyDrop::into_inner(h)))
    }

    /// Drops the handles `hold` and `retired` kept for this arrival (see `arrive`).
    #[cold]
    pub(crate) fn release(&self) {
        self.pending.set(false);
        let held = self.hold.take();
        let retired = self.retired.take();
        // Either may be a last handle: dropping it may kill a suspended coroutine, which
        // switches away and back here.
        drop(held);
        drop(retired);
    }
}

/// Room for the value in flight when its type fits: the sender's `put` and the receiver's
/// `take` need no pointer between them, and a return value outlives its sender's stack.
///
/// Only one message is in flight at a time and its receiver moves the value out before anything
/// else runs (rule 4), so the slot is free whenever a value is sent. What is left behind are
/// the bytes of a moved-out value, which are never dropped.
#[repr(C, align(16))]
pub(crate) struct ValueSlot(UnsafeCell<MaybeUninit<[u8; ValueSlot::BYTES]>>);

impl ValueSlot {
    const BYTES: usize = 64;

    /// What `ThreadState::value` holds while the value in flight is in the slot: not null,
    /// and never read through (a receiver whose type fits takes the value from the slot).
    pub(crate) const IN_SLOT: *mut () = ptr::dangling_mut();

    /// True if a `V` fits the slot (decided at compile time).
    #[inline(always)]
    pub(crate) const fn fits<V>() -> bool {
        size_of::<V>() <= Self::BYTES && align_of::<V>() <= align_of::<ValueSlot>()
    }

    /// Moves `v`, whose type fits, into the slot; returns [`IN_SLOT`](Self::IN_SLOT).
    #[inline(always)]
    pub(crate) fn put<V>(&self, v: V) -> *mut () {
        assert!(Self::fits::<V>(), "greenfiber: a value put in a slot it does not fit");
        // SAFETY: the slot is large and aligned enough for a `V` (asserted above) and holds no
        // value that still needs a drop (see the type's docs): at worst a moved-out one.
        unsafe { (self.0.get() as *mut V).write(v) };
        Self::IN_SLOT
    }

    /// Moves the value out of the slot.
    ///
    /// # Safety
    /// The slot holds a `V` that was `put` there and not taken since.
    #[inline(always)]
    pub(crate) unsafe fn take<V>(&self) -> V {
        // SAFETY: the caller's contract; the slot keeps the bytes, which are never dropped.
        unsafe { (self.0.get() as *const V).read() }
    }
}

impl Drop for ThreadState {
    fn drop(&mut self) {
        PTR.with(|p| p.set(ptr::null()));
        // Nothing can be switched into any more: leak rather than kill anything left.
        if let Some(c) = self.retired.take() {
            std::mem::forget(c);
        }
        if let Some(c) = self.hold.take() {
            std::mem::forget(c);
        }
    }
}

thread_local! {
    static STATE: ThreadState = ThreadState::new();
    /// `STATE`'s address while it is alive, else null. `const` and without a destructor, so
    /// reading it is one TLS load that never creates `STATE`.
    static PTR: Cell<*const ThreadState> = const { Cell::new(ptr::null()) };
}

/// Runs `f` with this thread's state. Panics only during thread-local teardown.
#[inline(always)]
pub(crate) fn with<T>(f: impl FnOnce(&ThreadState) -> T) -> T {
    let p = PTR.with(Cell::get);
    if p.is_null() {
        return init(f).expect("greenfiber: coroutine state used during thread teardown");
    }
    // SAFETY: `PTR` is non-null only between `init` storing `STATE`'s address and `STATE`'s
    // destructor clearing it, and a thread-local is not moved while it lives; `f` runs on this
    // thread, so the destructor cannot run while the reference is in use.
    f(unsafe { &*p })
}

/// Runs `f` with this thread's state if it exists; never creates it.
#[inline]
pub(crate) fn if_live<T>(f: impl FnOnce(&ThreadState) -> T) -> Option<T> {
    let p = PTR.with(Cell::get);
    // SAFETY: as in `with`: a non-null `PTR` points at the live `STATE`.
    (!p.is_null()).then(|| f(unsafe { &*p }))
}

/// Like [`with`], but `None` once the thread's state has been torn down.
pub(crate) fn try_with<T>(f: impl FnOnce(&ThreadState) -> T) -> Option<T> {
    if PTR.with(Cell::get).is_null() { init(f) } else { Some(with(f)) }
}

/// Creates `STATE` if needed and records its address in `PTR`; `None` during teardown.
#[cold]
#[inline(never)]
fn init<T>(f: impl FnOnce(&ThreadState) -> T) -> Option<T> {
    STATE
        .try_with(|ts| {
            PTR.with(|p| p.set(ts));
            f(ts)
        })
        .ok()
}

/// The running coroutine, without creating this thread's state.
#[allow(dead_code)] // see `super::try_current`
pub(crate) fn try_current() -> Option<Coroutine> {
    if_live(ThreadState::current)
}
