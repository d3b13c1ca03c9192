//! Layer 1: greenlet-style coroutines on corosensei stacks.
//!
//! A [`Coroutine`] is a stackful coroutine that any other coroutine of its thread can
//! [`switch`](Coroutine::switch) to, passing a value. Every thread has a main coroutine (the
//! thread's own stack); each coroutine has a parent that receives its return value or its panic.
//!
//! ```
//! use greenfiber::Coroutine;
//!
//! let squarer = Coroutine::new(|mut x: i32| {
//!     let parent = greenfiber::current().parent().unwrap();
//!     loop {
//!         // Give x*x back to whoever switched to us; wait for the next x.
//!         x = parent.switch(x * x);
//!     }
//! });
//! let nine: i32 = squarer.switch(3);
//! let sixteen: i32 = squarer.switch(4);
//! assert_eq!((nine, sixteen), (9, 16));
//! ```
//!
//! # Files
//! - `switch.rs`: the symmetric switch over corosensei's resume/suspend (with a diagram).
//! - `tree.rs`: parent links; `thread.rs`: per-thread state; `exit.rs`: `GreenletExit`.
//! - `handle.rs`: `Coroutine`, the public handle; `counted.rs`: the counted pointer behind it;
//!   `blocks.rs`: the per-thread free lists its cores come from, which `local_rc.rs`
//!   (`LocalRc`, an `Rc` on those blocks) offers the hub for fibers' records.
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
//! |         |       |          | (or abandoned at thread teardown: frames not unwound, stack  |
//! |         |       |          | back to the pool)                                           |
//! | false   | true  | false    | killed before it ever ran; its closure was dropped          |
//!
//! `in_chain` without `started`, and `dead` with `in_chain`, never happen. Main is always
//! `started` and `in_chain`, never has `raw`, and is the only coroutine whose `stack_top` is 0.
//!
//! # Rules (cited by the `SAFETY` comments)
//! 1. A coroutine, its handles and its stack belong to one thread: `Coroutine` is `!Send` and
//!    `!Sync`, so every switch is between coroutines of the running thread.
//! 2. A `Core` whose coroutine is running or in the resume chain is never freed. Dropping the
//!    last handle of the running coroutine moves it to `ThreadState::retired` instead, which the
//!    next arrival elsewhere drops; dropping the last handle of a started coroutine that is not
//!    running first kills it (unwinding it out of the chain) and leaks it if it refuses to die,
//!    unless the scheduler above has it parked: then the count passes to the park (rule 7).
//!    The target of the message in flight is kept alive by its sender until it arrives: by a
//!    handle the suspended sender's frame holds, or by `ThreadState::hold`; the return value
//!    of a finished coroutine, by its chain of parent links, which nothing changes before the
//!    value arrives: no user code runs in between (boxing a return value that does not fit
//!    the value slot calls the global allocator there, which must not switch coroutines), and
//!    the finished core itself lives on by its handles (or `retired`), which only code after
//!    the arrival drops.
//! 3. `Core::raw` is touched only while its coroutine is neither running nor in the chain: by
//!    `drive` to resume it, by `drive` to recycle its stack once it returned, and to drop the
//!    closure of a coroutine that never started.
//! 4. A value in flight lives in the thread's value slot if its type fits there, else in the
//!    sender's frame, which stays suspended until the receiver has taken it: `arrive` moves the
//!    value out before anything else runs, exactly once (it nulls `ThreadState::value` as it
//!    does), and the sender never drops it. Nothing is put in flight before the switch's trace
//!    line is logged (a logger may switch).
//! 5. `Core::yielder` is set when the coroutine starts and is valid until it finishes; only the
//!    running coroutine uses its own yielder.
//! 6. `Core::expect` is `Expect::nothing` (`switch.rs`), which no sender's type
//!    matches, while its coroutine runs (`arrive` sets it as it makes a coroutine current; main
//!    starts with it) and once it is dead (`Core::set_dead`); otherwise it is the type the
//!    coroutine waits for. So a sender that finds its value's type there has found a live
//!    coroutine other than itself, waiting for exactly that type.
//! 7. A coroutine whose `Core::park_slot` is not null is parked by the scheduler above (the
//!    hub's wait record sits in one of its frames). Dropping its last handle while it is
//!    suspended neither kills nor frees it: that handle's count passes to the park
//!    (`Core::adopted`, at most one at a time, as it is taken only from a last handle), and
//!    the scheduler drops it once the park ends, on the coroutine's own stack while it runs
//!    (`Coroutine::drop_adopted`), where it retires the coroutine if it was the last. So a
//!    record in one of a coroutine's frames may hold it by an uncounted handle
//!    (`current_uncounted`) and use it while that frame lives: a started coroutine's core
//!    is freed only once it is dead (dropping the last handle retires a running one, passes
//!    the count of a parked one to its park, kills any other suspended one or leaks it if it
//!    refuses to die, and leaks one left at thread teardown), and it dies only after its
//!    frames have ended (unwound, or returned), or abandoned at thread teardown, after which
//!    its frames are never used again.
//! 8. `Core::stack_top` and `Core::depth` are never dereferenced: they only tell
//!    `prefetch_ahead` where to ask the CPU for cache lines. A prefetch never faults and
//!    changes nothing but the cache, so a stale top or depth (the coroutine finished, and its
//!    stack went on to another) is harmless.

mod blocks;
mod builder;
mod counted;
mod exit;
mod handle;
mod local_rc;
mod overflow;
mod stack;
mod stack_pool;
mod switch;
mod thread;
mod tree;

use std::cell::{Cell, UnsafeCell};
use std::panic::{AssertUnwindSafe, catch_unwind};

pub use builder::Builder;
pub use exit::GreenletExit;
pub use handle::Coroutine;
pub(crate) use local_rc::LocalRc;
use stack::FiberStack;
use switch::Expect;

type RawCoroutine = corosensei::Coroutine<(), (), (), FiberStack>;
type Yielder = corosensei::Yielder<(), ()>;

/// The shared state behind every handle to one coroutine.
pub(crate) struct Core {
    id: u64,
    name: Option<Box<str>>,
    started: Cell<bool>,
    dead: Cell<bool>,
    in_chain: Cell<bool>,
    /// A `Cell`, not a `RefCell` (8 bytes fewer per coroutine): read with [`Core::parent_handle`].
    parent: Cell<Option<Coroutine>>,
    /// What it waits for; nothing while it runs and once it is dead (rule 6).
    expect: Cell<&'static Expect>,
    yielder: Cell<*const Yielder>,
    raw: UnsafeCell<Option<RawCoroutine>>,
    /// Owned by the scheduler above (the hub): what this coroutine currently waits on, or null.
    /// Layer 1 only stores it.
    park_slot: Cell<*const ()>,
    /// Owned by the scheduler above too: its per-coroutine state bits. Layer 1 only stores them.
    hub_flags: Cell<u32>,
    /// The last handle was dropped while the scheduler above had it parked (`park_slot` set):
    /// that handle's count passed to the park, which drops it when the park ends (rule 7).
    adopted: Cell<bool>,
    /// A kill of it came back while it lived on and a panic was under way on the thread: it may
    /// be suspended in a destructor halfway through that kill's unwind (its cleanup switched
    /// away), where another raise would abort the process. Rechecked before each kill and
    /// drop: with no panic under way on the thread, it cannot be (`Coroutine::kill`).
    cut_short: Cell<bool>,
    /// The base (highest address) of the stack it was made with; 0 for main, which has none of
    /// ours (and is the only one without: [`Core::is_main`]). Otherwise only a hint for
    /// [`prefetch_ahead`] (rule 8).
    stack_top: usize,
    /// How far below `stack_top` its stack pointer was when it last switched away; 0 before
    /// it first does. Only a hint for [`prefetch_ahead`] (rule 8). (A `u32` fits in the
    /// padding after the flags; stacks are far smaller than 4 GiB.)
    depth: Cell<u32>,
}

impl Core {
    /// Whether it is its thread's main coroutine: the only one that runs on a stack not ours.
    #[inline]
    fn is_main(&self) -> bool {
        self.stack_top == 0
    }

    /// Notes how deep in its stack it is as it switches away, for [`prefetch_ahead`] (rule 8).
    #[inline(always)]
    fn note_depth(&self) {
        self.depth.set(self.stack_top.wrapping_sub(stack_pointer()) as u32);
    }

    /// A handle to the parent (cloning it runs no user code, so nothing can see the `Cell`
    /// empty meanwhile).
    fn parent_handle(&self) -> Option<Coroutine> {
        let p = self.parent.take();
        let handle = p.clone();
        self.parent.set(p);
        handle
    }

    /// The parent's core, without a handle: alive as long as this core and its parent link
    /// are unchanged.
    fn parent_ptr(&self) -> Option<*const Core> {
        // SAFETY: rule 1: only this thread touches the `Cell`, and nothing replaces its value
        // while this reads it (no user code runs here).
        unsafe { &*self.parent.as_ptr() }.as_ref().map(|p| p.0.as_ptr())
    }

    fn label(&self) -> String {
        match &self.name {
            Some(n) => format!("#{} {n:?}", self.id),
            None => format!("#{}", self.id),
        }
    }

    /// Marks it dead: from now on it waits for nothing (rule 6).
    fn set_dead(&self) {
        self.dead.set(true);
        self.expect.set(Expect::nothing());
    }

    /// Marks a coroutine that never ran as dead and drops its closure.
    fn kill_unstarted(&self) {
        debug_assert!(!self.started.get() && !self.in_chain.get());
        self.set_dead();
        // SAFETY: rule 3: a coroutine that never started is not in the chain and not running.
        let raw = unsafe { (*self.raw.get()).take() };
        if let Some(mut raw) = raw {
            self.drop_closure(&mut raw);
            stack_pool::give(raw.into_stack());
        }
        log::trace!("coroutine {} killed before it started", self.label());
    }

    /// Drops the closure of a coroutine that never started, leaving `raw` finished. A panic in
    /// one of its destructors is logged, not propagated.
    fn drop_closure(&self, raw: &mut RawCoroutine) {
        if let Err(p) = catch_unwind(AssertUnwindSafe(|| raw.force_unwind())) {
            // The drop glue went on dropping the rest of the closure while the panic unwound,
            // but corosensei did not record it as dropped: mark it finished, so that neither
            // `into_stack` nor corosensei's own `Drop` drops it a second time.
            // SAFETY: `force_reset` requires that nothing on the coroutine's stack still needs
            // dropping; the only object there, the closure, has just been dropped in full.
            unsafe { raw.force_reset() };
            log::error!(
                "coroutine {}: a destructor panicked while its closure was dropped: {}",
                self.label(),
                crate::error::panic_message(&*p)
            );
        }
    }
}

impl Drop for Core {
    // Inlined into the release of a core: usually its coroutine finished or was killed, and its
    // stack went back to the pool already.
    #[inline]
    fn drop(&mut self) {
        if let Some(raw) = self.raw.get_mut().take() {
            self.drop_raw(raw);
        }
    }
}

impl Core {
    /// `Drop` of a core that still has its raw coroutine: one that never ran, or one that
    /// survived its kill.
    #[cold]
    #[inline(never)]
    fn drop_raw(&self, mut raw: RawCoroutine) {
        if !raw.started() {
            self.drop_closure(&mut raw);
            drop(raw);
        } else if !raw.done() {
            // Only reached for a coroutine that survived its kill (see Coroutine's Drop):
            // unwinding it with corosensei's own mechanism would run through our root
            // function, so its stack is leaked instead.
            std::mem::forget(raw);
        } else {
            drop(raw);
        }
    }
}

/// Cache lines below a stack's top that [`prefetch_ahead`] asks for, for a coroutine that has
/// not started: 384 bytes, what a fiber touches from its start to a yield in the hub (360
/// bytes measured for `spawn(yield_now)`: corosensei's entry, `body`, the fiber's closure, the
/// park and its switch). (Each line more costs memory bandwidth for every fiber that does not
/// use it: with 10 lines the same 100k fibers took ~15% longer.)
const START_LINES: usize = 6;

/// Cache lines from a suspended coroutine's stack pointer up that [`prefetch_ahead`] asks for
/// (fewer if its stack is not that deep): the switch's saved registers and the frames a resume
/// returns through, up into the caller's. A socket read parks 410 bytes below its caller's
/// frame (the park, the I/O loop and the read), a `yield_now` about 300. With 100k fibers
/// yielding in turn from 100-byte frames (`benches/hub.rs`), 8 lines gave 110-122 ms a batch,
/// 10 lines 94-100 ms, 16 lines the same as 10.
const RESUME_LINES: usize = 10;

/// Asks the CPU to start loading what resuming two coroutines of a long ready queue will touch
/// first, so that the memory latency overlaps the coroutines that run before them: `soon`'s
/// record and the stack lines it will run on, `later`'s record only (where `soon`'s stack and
/// stack pointer are comes from its record, which the call for it as `later` loaded a few
/// resumes before).
///
/// A scheduler calls it as it takes a coroutine to run, for the ones some places behind it in
/// its queue. With 100,000 fibers ready at once each resume otherwise waits for the record
/// and every stack line it touches, none of them in the cache any more. It changes nothing but
/// the cache (rule 8); main has no stack of ours, so only its record is fetched.
#[inline]
pub(crate) fn prefetch_ahead(soon: &Coroutine, later: &Coroutine) {
    let record = later.0.as_ptr() as usize;
    // The block of a core (`counted.rs`) is at most 144 bytes, 16-aligned (asserted there):
    // these three lines hold it.
    prefetch_line(record);
    prefetch_line(record + 64);
    prefetch_line(record + 128);
    let (top, depth) = (soon.0.stack_top, soon.0.depth.get() as usize);
    if top == 0 {
        return;
    }
    if depth == 0 {
        // Not started: its first frames go just below the top.
        for line in 1..=START_LINES {
            prefetch_line(top - line * 64);
        }
        return;
    }
    // Suspended `depth` bytes below the top: from the line under its stack pointer (where the
    // switch saved its registers) up, but not past the top.
    let from = top.wrapping_sub(depth + 64);
    for line in 0..RESUME_LINES.min(depth.div_ceil(64) + 1) {
        prefetch_line(from + line * 64);
    }
}

/// The current stack pointer, near enough: a hint for [`prefetch_ahead`] (rule 8).
#[inline(always)]
fn stack_pointer() -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        let sp: usize;
        // SAFETY: reads a register into another; touches no memory, the stack or the flags.
        unsafe {
            std::arch::asm!("mov {}, rsp", out(reg) sp, options(nomem, nostack, preserves_flags))
        };
        sp
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let here = 0u8;
        std::hint::black_box(&here) as *const u8 as usize
    }
}

/// Asks for the cache line holding `addr` (a hint: nothing on targets other than x86_64).
#[inline(always)]
fn prefetch_line(addr: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: rule 8: a prefetch is a hint that never faults, whatever the address, and changes
    // no memory; `_mm_prefetch` needs SSE, which every x86_64 CPU has.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(addr as *const i8)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = addr;
}

/// The coroutine running now; the thread's main coroutine outside any other.
///
/// # Panics
/// In a thread-local destructor that runs after this thread's coroutine state is gone (Rust
/// then aborts, as for any panic in a thread-local destructor).
#[inline]
pub fn current() -> Coroutine {
    thread::with(|ts| ts.current())
}

/// [`current`] without the count: a handle that is never dropped, for a record that lives in a
/// frame of the running coroutine (the hub's wait records), saving the count's increment and
/// decrement.
///
/// # Safety
/// The handle (or a reference into it) must not be used once the running coroutine's core may
/// have been freed: kept in a frame of the running coroutine and used (by any coroutine) only
/// while that frame lives, it is not (rule 7).
#[inline]
pub(crate) unsafe fn current_uncounted() -> std::mem::ManuallyDrop<Coroutine> {
    // SAFETY: the caller's contract is the one of `ThreadState::current_uncounted`.
    thread::with(|ts| unsafe { ts.current_uncounted() })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_top_is_the_top_of_the_coroutines_own_stack() {
        let page = stack::page_size();
        let main = current();
        assert_eq!(main.0.stack_top, 0, "main has no stack of ours");
        // Where a local of the coroutine's closure lives: on its stack, below the top.
        let c = Coroutine::new(|()| {
            let local = 0u8;
            std::hint::black_box(&local) as *const u8 as usize
        });
        let small = Coroutine::builder().stack_size(16 << 10).build(|()| {
            let local = 0u8;
            std::hint::black_box(&local) as *const u8 as usize
        });
        let (top, small_top) = (c.0.stack_top, small.0.stack_top);
        assert!(top.is_multiple_of(page) && small_top.is_multiple_of(page));
        // Not yet started, dead or main: a hint, whatever the state.
        prefetch_ahead(&c, &small);
        prefetch_ahead(&main, &c);
        let local: usize = c.switch(());
        assert!(local < top && top - local < stack_pool::DEFAULT_STACK_SIZE, "{local:#x} {top:#x}");
        let local: usize = small.switch(());
        assert!(local < small_top && small_top - local < 16 << 10, "{local:#x} {small_top:#x}");
        prefetch_ahead(&c, &small);
        assert_eq!(c.0.stack_top, top, "kept after its end");
    }

    #[test]
    fn depth_is_where_the_stack_pointer_was_at_the_last_switch_away() {
        // Switches to `to` from a frame `pad` bytes deep, sending where that frame is.
        #[inline(never)]
        fn from_frame<const N: usize>(to: &Coroutine) {
            let pad = [0u8; N];
            let at = std::hint::black_box(&pad).as_ptr() as usize;
            to.switch::<usize, ()>(at);
        }
        let me = current();
        let c = Coroutine::new(move |()| {
            from_frame::<16>(&me);
            from_frame::<4096>(&me);
        });
        assert_eq!(c.0.depth.get(), 0, "not started");
        let mut shallower = 0;
        for _ in 0..2 {
            let local: usize = c.switch(());
            let (top, depth) = (c.0.stack_top, c.0.depth.get() as usize);
            // The switch runs in frames below the one that sent `local`, a few hundred bytes
            // down; the prefetch takes the lines from there up.
            assert!(top - depth < local, "{:#x} not below {local:#x}", top - depth);
            assert!(local - (top - depth) < 2048, "{:#x} far below {local:#x}", top - depth);
            assert!(depth > shallower, "{depth} after {shallower}");
            shallower = depth;
        }
        prefetch_ahead(&c, &c);
        c.switch::<(), ()>(());
        assert!(c.is_dead());
    }
}
