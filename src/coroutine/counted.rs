//! `CoreRef`: the counted pointer behind every [`Coroutine`](super::Coroutine), and the
//! per-thread free list its `Core`s are allocated from.
//!
//! A `CoreRef` is `Rc<Core>` with one difference: when the last handle goes, the core's memory
//! goes back to its thread's free list ([`FreeCores`]) instead of to `free`, and the next
//! coroutine created on that thread takes it from there. Creating and dropping coroutines is
//! what fibers do all day (one per spawn, one per connection); a free list makes their
//! bookkeeping a pointer pop and push, where glibc's `malloc`/`free` cost ~130 instructions a
//! pair, and several hundred once tens of thousands are freed at once and tcache overflows.
//!
//! ```text
//!   CoreRef ──> Counted { handles: Cell<usize>, core: Core }      (one allocation)
//!                 last handle dropped: drop `core` in place, then
//!                 this thread's FreeCores: head ──> freed ──> freed ──> null
//!                                      (the first word of a freed block holds the link)
//! ```
//!
//! Like the stack pool, the list keeps its high-water mark: a thread that once had 100,000
//! coroutines keeps ~100,000 × `size_of::<Counted>()` (136) bytes for later ones (about 3% of the
//! stack page each of them also kept). It is freed when the thread's state is torn down.
//!
//! # Rules (cited by the `SAFETY` comments)
//! 1. A handle never leaves its thread (it is `!Send` and `!Sync`; rule 1 of `coroutine/mod.rs`),
//!    so the count is a plain `Cell` and the last handle is dropped on the core's own thread.
//! 2. `handles` counts the live `CoreRef`s; the block is alive while it is non-zero. A block on a
//!    free list holds no `Core`, only the link in its first word.
//! 3. Every block has the layout of `Counted`, whether it came from the free list or from the
//!    global allocator, so either may release it.

use std::alloc::{Layout, alloc, dealloc, handle_alloc_error};
use std::cell::Cell;
use std::marker::PhantomData;
use std::mem::offset_of;
use std::ops::Deref;
use std::ptr::{self, NonNull};

use super::Core;
use super::thread;

/// A `Core` and the number of handles to it.
#[repr(C)]
struct Counted {
    handles: Cell<usize>,
    core: Core,
}

/// A counted, thread-bound pointer to a `Core`.
pub(crate) struct CoreRef {
    ptr: NonNull<Counted>,
    /// `!Send` and `!Sync` (rule 1).
    _thread_bound: PhantomData<*const Counted>,
}

impl CoreRef {
    /// A handle to `core`, in a block from `free` if it has one.
    pub(crate) fn new_in(free: &FreeCores, core: Core) -> CoreRef {
        let block = free.take().unwrap_or_else(Self::fresh);
        // SAFETY: `block` is unused memory with `Counted`'s layout (rule 3): fresh, or taken
        // off the free list, whose blocks hold no `Core` (rule 2). Writing does not drop it.
        unsafe { block.as_ptr().write(Counted { handles: Cell::new(1), core }) };
        CoreRef { ptr: block, _thread_bound: PhantomData }
    }

    /// A handle to `core` in a block from the global allocator: for a thread's main coroutine,
    /// created while the thread's state (and its free list) is being built.
    pub(crate) fn new(core: Core) -> CoreRef {
        CoreRef::new_in(&FreeCores::new(), core)
    }

    #[cold]
    fn fresh() -> NonNull<Counted> {
        let layout = Layout::new::<Counted>();
        // SAFETY: `Counted` is not zero-sized.
        let p = unsafe { alloc(layout) } as *mut Counted;
        NonNull::new(p).unwrap_or_else(|| handle_alloc_error(layout))
    }

    /// The core's address: the coroutine's identity (`ThreadState::current` holds it).
    #[inline]
    pub(crate) fn as_ptr(&self) -> *const Core {
        // SAFETY: rule 2: this handle keeps the block alive.
        unsafe { &raw const (*self.ptr.as_ptr()).core }
    }

    /// How many handles there are to this core.
    #[inline]
    pub(crate) fn count(&self) -> usize {
        self.counted().handles.get()
    }

    /// A new handle to the core at `core`.
    ///
    /// # Safety
    /// `core` came from [`as_ptr`](CoreRef::as_ptr) of a handle whose core is still alive.
    #[inline]
    pub(crate) unsafe fn from_core(core: *const Core) -> CoreRef {
        // SAFETY: the caller's contract: `core` is the `core` field of a live `Counted`.
        let block = unsafe { core.byte_sub(offset_of!(Counted, core)) } as *mut Counted;
        // SAFETY: as above, `block` is a live `Counted`, so it is not null.
        let block = unsafe { NonNull::new_unchecked(block) };
        let h = CoreRef { ptr: block, _thread_bound: PhantomData };
        h.counted().handles.set(h.count() + 1);
        h
    }

    #[inline]
    fn counted(&self) -> &Counted {
        // SAFETY: rule 2: this handle keeps the block alive.
        unsafe { self.ptr.as_ref() }
    }
}

impl Clone for CoreRef {
    #[inline]
    fn clone(&self) -> CoreRef {
        self.counted().handles.set(self.count() + 1);
        CoreRef { ptr: self.ptr, _thread_bound: PhantomData }
    }
}

impl Drop for CoreRef {
    #[inline]
    fn drop(&mut self) {
        let n = self.count() - 1;
        self.counted().handles.set(n);
        if n == 0 {
            // SAFETY: that was the last handle (rule 2), dropped on the core's thread (rule 1).
            unsafe { release(self.ptr) };
        }
    }
}

impl Deref for CoreRef {
    type Target = Core;

    #[inline]
    fn deref(&self) -> &Core {
        &self.counted().core
    }
}

/// Drops the core and gives its block to this thread's free list (or back to the allocator
/// once the thread's state has been torn down).
///
/// # Safety
/// No handle to `block` is left, and this runs on the core's thread.
#[cold]
#[inline(never)]
unsafe fn release(block: NonNull<Counted>) {
    // Nothing can make a new handle to this core while it is dropped: `from_core` is only
    // given `current`'s pointer, and rule 2 of `coroutine/mod.rs` keeps a running core's count
    // above 0 (through a handle, or `ThreadState::retired`). Its drop may drop other handles.
    // The parent link goes last, and not nested in this frame (`drop_parent_link`).
    // SAFETY: no handle is left, so nobody else uses the core, which `new_in` initialised.
    let parent = unsafe { (*block.as_ptr()).core.parent.take() };
    // SAFETY: as above.
    unsafe { ptr::drop_in_place(&raw mut (*block.as_ptr()).core) };
    // SAFETY: the core was just dropped and no handle is left (this function's contract).
    let kept = thread::if_live(|ts| unsafe { ts.free_cores.put(block) });
    if kept.is_none() {
        // SAFETY: rule 3: the block has `Counted`'s layout and came from the global allocator
        // (directly, or through a free list it was taken from).
        unsafe { dealloc(block.as_ptr() as *mut u8, Layout::new::<Counted>()) };
    }
    let Some(p) = parent else { return };
    if p.0.count() > 1 {
        // Not the parent's last handle: only a decrement, nothing released in turn.
        drop(p);
    } else if thread::if_live(|_| ()).is_some() {
        thread::with(move |ts| ts.drop_parent_link(p));
    } else {
        // Thread teardown (a thread-local destroyed after the thread's state held the chain):
        // no state to queue links in, so the chain is unlinked here, one level per turn.
        let mut next = Some(p);
        while let Some(p) = next {
            next = if p.0.count() == 1 { p.0.parent.take() } else { None };
            drop(p);
        }
    }
}

/// A thread's list of freed core blocks (rule 2: each holds only the link to the next).
pub(crate) struct FreeCores {
    head: Cell<*mut Counted>,
}

impl FreeCores {
    pub(crate) fn new() -> FreeCores {
        FreeCores { head: Cell::new(ptr::null_mut()) }
    }

    #[inline]
    fn take(&self) -> Option<NonNull<Counted>> {
        let head = NonNull::new(self.head.get())?;
        // SAFETY: rule 2: a block on the list holds the next link in its first word, which
        // is aligned for a pointer (`Counted` starts with a `usize`).
        self.head.set(unsafe { (head.as_ptr() as *mut *mut Counted).read() });
        Some(head)
    }

    /// Puts `block` on the list.
    ///
    /// # Safety
    /// `block` has `Counted`'s layout (rule 3), its core has been dropped, no handle to it is
    /// left, and it is on no list.
    #[inline]
    unsafe fn put(&self, block: NonNull<Counted>) {
        // SAFETY: the contract: nobody uses `block` any more, so its first word is free for the
        // link (rule 2); it is aligned for a pointer (`Counted` starts with a `usize`).
        unsafe { (block.as_ptr() as *mut *mut Counted).write(self.head.get()) };
        self.head.set(block.as_ptr());
    }
}

impl Drop for FreeCores {
    fn drop(&mut self) {
        while let Some(block) = self.take() {
            // SAFETY: rule 3: every block has `Counted`'s layout, from the global allocator.
            unsafe { dealloc(block.as_ptr() as *mut u8, Layout::new::<Counted>()) };
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use crate::coroutine::Coroutine;

    #[test]
    fn a_finished_coroutines_core_is_reused_by_the_next_one() {
        let first = Coroutine::new(|x: u32| x);
        let _: u32 = first.switch(1u32);
        let addr = first.0.as_ptr();
        drop(first);
        let second = Coroutine::new(|x: u32| x);
        assert_eq!(second.0.as_ptr(), addr, "the freed block is taken first");
        let third = Coroutine::new(|x: u32| x);
        assert_ne!(third.0.as_ptr(), addr, "a live core is never handed out twice");
        assert_eq!(second.0.count(), 1);
        let again = second.clone();
        assert_eq!(second.0.count(), 2);
        drop(again);
        assert_eq!(second.0.count(), 1);
        assert_eq!(second.switch::<u32, u32>(5), 5);
        assert_eq!(third.switch::<u32, u32>(6), 6);
    }

    #[test]
    fn cores_outlive_their_threads_free_list_and_are_freed_once() {
        // Cores freed while the thread runs go to its list, which is freed at thread exit;
        // a core whose last handle goes after that (here: in another thread-local's
        // destructor) goes straight back to the allocator. A double free would abort.
        struct Late(RefCell<Vec<Coroutine>>);
        impl Drop for Late {
            fn drop(&mut self) {
                self.0.borrow_mut().clear();
            }
        }
        thread_local!(static LATE: Late = const { Late(RefCell::new(Vec::new())) });
        for _ in 0..20 {
            std::thread::spawn(|| {
                // Registered before the coroutine state, so destroyed after it.
                LATE.with(|_| {});
                let done: Vec<Coroutine> = (0..200u32)
                    .map(|i| {
                        let c = Coroutine::new(move |x: u32| x + i);
                        assert_eq!(c.switch::<u32, u32>(1), 1 + i);
                        c
                    })
                    .collect();
                drop(done);
                LATE.with(|l| l.0.borrow_mut().extend((0..50).map(|_| Coroutine::new(|()| ()))));
            })
            .join()
            .unwrap();
        }
    }
}
