//! `CoreRef`: the counted pointer behind every [`Coroutine`](super::Coroutine).
//!
//! A `CoreRef` is `Rc<Core>` with two differences: its memory is a block from the thread's free
//! lists (`blocks.rs`), so creating and dropping coroutines — what fibers do all day, one per
//! spawn, one per connection — costs no `malloc`; and the release of a core drops its parent
//! link last, not nested (`ThreadState::drop_parent_link`), so a long chain of parents does not
//! overflow the stack.
//!
//! ```text
//!   CoreRef ──> Counted { handles: Cell<usize>, core: Core }      (one block, 144-byte class)
//!                 last handle dropped: drop `core` in place, then the block goes back to
//!                 this thread's free list for its size class (blocks.rs)
//! ```
//!
//! # Rules (cited by the `SAFETY` comments)
//! 1. A handle never leaves its thread (it is `!Send` and `!Sync`; rule 1 of `coroutine/mod.rs`),
//!    so the count is a plain `Cell` and the last handle is dropped on the core's own thread.
//! 2. `handles` counts the live `CoreRef`s; the block holds a live `Core` while it is non-zero.

use std::cell::Cell;
use std::marker::PhantomData;
use std::mem::{ManuallyDrop, offset_of};
use std::ops::Deref;
use std::ptr::{self, NonNull};

use super::Core;
use super::blocks::{FreeBlocks, alloc_block, free_block};
use super::thread;

/// A `Core` and the number of handles to it.
#[repr(C)]
struct Counted {
    handles: Cell<usize>,
    core: Core,
}

/// At most this many bytes: a block (16-aligned) then lies within three cache lines, the ones
/// `prefetch_ahead` asks for.
const _: () = assert!(size_of::<Counted>() <= 144, "a core's block outgrew three cache lines");

/// A block for a core, not written yet (dropped unwritten, it leaks).
pub(crate) struct CoreBlock(NonNull<Counted>);

impl CoreBlock {
    /// The address the core will have.
    #[inline(always)]
    pub(crate) fn core_ptr(&self) -> *const Core {
        // SAFETY: an address inside the block's allocation; nothing is read or referenced.
        unsafe { &raw const (*self.0.as_ptr()).core }
    }

    /// Writes `core` in the block: the first handle to it.
    #[inline(always)]
    pub(crate) fn init(self, core: Core) -> CoreRef {
        CoreRef::new_in(self.0, core)
    }
}

/// A counted, thread-bound pointer to a `Core`.
pub(crate) struct CoreRef {
    ptr: NonNull<Counted>,
    /// `!Send` and `!Sync` (rule 1).
    _thread_bound: PhantomData<*const Counted>,
}

impl CoreRef {
    /// A handle to `core`, in a block from this thread's free list (`blocks.rs`).
    pub(crate) fn new(core: Core) -> CoreRef {
        CoreRef::new_in(alloc_block::<Counted>(), core)
    }

    /// A block from the thread's free blocks for a core that needs its own address before it
    /// is made (a coroutine's root closure does): [`CoreBlock::init`] makes the handle.
    #[inline(always)]
    pub(crate) fn alloc_with(blocks: &FreeBlocks) -> CoreBlock {
        CoreBlock(blocks.alloc::<Counted>())
    }

    #[inline(always)]
    fn new_in(block: NonNull<Counted>, core: Core) -> CoreRef {
        // SAFETY: `block` is unused memory with `Counted`'s size and alignment (`alloc_block`).
        // Writing does not drop it.
        unsafe { block.as_ptr().write(Counted { handles: Cell::new(1), core }) };
        CoreRef { ptr: block, _thread_bound: PhantomData }
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
        // SAFETY: the caller's contract is `borrow_core`'s, and the count taken here makes the
        // handle a counted one.
        let h = unsafe { CoreRef::borrow_core(core) };
        h.counted().handles.set(h.count() + 1);
        ManuallyDrop::into_inner(h)
    }

    /// A handle to the core at `core` that is not counted: it is never dropped (a drop would
    /// take a count it never added) unless a count is handed to it
    /// (`Coroutine::drop_adopted`); [`from_core`](CoreRef::from_core)
    /// without the count's increment.
    ///
    /// # Safety
    /// `core` came from [`as_ptr`](CoreRef::as_ptr) of a handle whose core is still alive, and
    /// the handle (or a reference into it) is not used once that core may have been freed:
    /// nothing counts for it.
    #[inline(always)]
    pub(crate) unsafe fn borrow_core(core: *const Core) -> ManuallyDrop<CoreRef> {
        // SAFETY: the caller's contract: `core` is the `core` field of a live `Counted`.
        let block = unsafe { core.byte_sub(offset_of!(Counted, core)) } as *mut Counted;
        // SAFETY: as above, `block` is a live `Counted`, so it is not null.
        let block = unsafe { NonNull::new_unchecked(block) };
        ManuallyDrop::new(CoreRef { ptr: block, _thread_bound: PhantomData })
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

/// Drops the core and gives its block back (`blocks.rs`).
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
    let core = unsafe { &mut (*block.as_ptr()).core };
    let parent = core.parent.take();
    if core.owns_more() {
        // SAFETY: as above; `core` is not used again.
        unsafe { drop_core(core) };
    }
    // Else nothing in it needs dropping (its `Drop` would do nothing either): it is left as
    // it is, the way `mem::forget` leaves a value.
    // SAFETY: the block came from `alloc_block::<Counted>`; its core was just dropped and no
    // handle is left (this function's contract).
    unsafe { free_block(block) };
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

/// Drops a released core that still owns something.
///
/// # Safety
/// As `ptr::drop_in_place`: `core` is valid and never used again.
#[cold]
#[inline(never)]
unsafe fn drop_core(core: &mut Core) {
    // SAFETY: the caller's contract.
    unsafe { ptr::drop_in_place(core) };
}

impl Core {
    /// Whether dropping this core would do anything besides dropping its parent link: it has
    /// a name or a raw coroutine. A finished or killed coroutine's core usually has neither.
    #[inline]
    fn owns_more(&mut self) -> bool {
        // Every field, none left out with `..`: a field added to `Core` must be looked at here.
        let Core {
            id: _,
            name,
            started: _,
            dead: _,
            in_chain: _,
            parent,
            expect: _,
            yielder: _,
            raw,
            park_slot: _,
            hub_flags: _,
            adopted: _,
            cut_short: _,
            stack_top: _,
            depth: _,
        } = self;
        name.is_some() || parent.get_mut().is_some() || raw.get_mut().is_some()
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
