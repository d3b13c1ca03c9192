//! Per-thread free lists of small memory blocks, by size class: where coroutine cores
//! ([`CoreRef`](super::counted::CoreRef)) and fibers' shared state
//! ([`LocalRc`](super::LocalRc)) get their memory.
//!
//! Creating and finishing coroutines is what a fiber program does all day (one per spawn, one
//! per connection), and each brings a few small, thread-bound records. glibc's `malloc`/`free`
//! cost ~130 instructions a pair, and several hundred once more than a handful of one size are
//! live (its per-thread cache holds seven), as with a hundred fibers spawned and joined at once.
//! Taking a block here is a pop from a list and giving it back a push.
//!
//! ```text
//!   class k (1..=CLASSES): blocks of k × 16 bytes, 16-aligned, whatever type they hold
//!   FreeBlocks::heads[k - 1] ──> freed ──> freed ──> null   (the link in a freed block's first word)
//! ```
//!
//! A type too large for the largest class, or aligned to more than 16, goes to the global
//! allocator with its own layout. The lists keep their high-water mark: a thread that once had
//! 100,000 fibers keeps their blocks (a few percent of the stack memory it also keeps) for later
//! ones. They are freed when the thread's state is torn down; a block given back after that goes
//! to the global allocator.
//!
//! # Rules (cited by the `SAFETY` comments)
//! 1. Every block of class `k` has the layout `k × 16` bytes, aligned to 16, whichever type it
//!    held and whether it came from a list or the global allocator; so any list of that class,
//!    or the global allocator, may take it back.
//! 2. A block on a list holds nothing but the link to the next, in its first word.
//! 3. A list is only touched by its own thread (it lives in the thread's state).

use std::alloc::{Layout, alloc, dealloc, handle_alloc_error};
use std::cell::Cell;
use std::ptr::{self, NonNull};

use super::thread;

/// Block sizes 16, 32, …, 512 bytes.
const CLASSES: usize = 32;
const GRAIN: usize = 16;

/// The size class index (0-based) of `T`, or `None` if `T` goes to the global allocator.
const fn class_of<T>() -> Option<usize> {
    let (size, align) = (size_of::<T>(), align_of::<T>());
    if size == 0 || size > CLASSES * GRAIN || align > GRAIN {
        None
    } else {
        Some(size.div_ceil(GRAIN) - 1)
    }
}

/// The layout of every block of class `index` (rule 1).
const fn class_layout(index: usize) -> Layout {
    match Layout::from_size_align((index + 1) * GRAIN, GRAIN) {
        Ok(l) => l,
        Err(_) => panic!("a size class has a valid layout"),
    }
}

/// The layout `T`'s blocks have: its class's, or its own outside the classes.
const fn layout_of<T>() -> Layout {
    match class_of::<T>() {
        Some(index) => class_layout(index),
        None => Layout::new::<T>(),
    }
}

/// A thread's free lists, one per size class (rule 2: each block holds only the next link).
pub(crate) struct FreeBlocks {
    heads: [Cell<*mut u8>; CLASSES],
}

impl FreeBlocks {
    pub(crate) fn new() -> FreeBlocks {
        FreeBlocks { heads: std::array::from_fn(|_| Cell::new(ptr::null_mut())) }
    }

    /// [`alloc_block`] from these lists (the caller has the thread's state at hand).
    #[inline]
    pub(crate) fn alloc<T>(&self) -> NonNull<T> {
        const { assert!(size_of::<T>() > 0, "blocks are never zero-sized") };
        match class_of::<T>().and_then(|index| self.take(index)) {
            Some(block) => block.cast(),
            None => fresh::<T>(),
        }
    }

    #[inline]
    fn take(&self, index: usize) -> Option<NonNull<u8>> {
        let head = NonNull::new(self.heads[index].get())?;
        // SAFETY: rule 2: a block on the list holds the next link in its first word, which is
        // aligned for a pointer (blocks are 16-aligned) and inside it (blocks are ≥ 16 bytes).
        self.heads[index].set(unsafe { (head.as_ptr() as *mut *mut u8).read() });
        Some(head)
    }

    /// # Safety
    /// `block` has class `index`'s layout (rule 1), nobody uses it any more, and it is on no
    /// list.
    #[inline]
    unsafe fn put(&self, index: usize, block: NonNull<u8>) {
        // SAFETY: the contract: the block is unused, so its first word is free for the link
        // (rule 2); it is aligned for a pointer and large enough (rule 1).
        unsafe { (block.as_ptr() as *mut *mut u8).write(self.heads[index].get()) };
        self.heads[index].set(block.as_ptr());
    }
}

impl Drop for FreeBlocks {
    fn drop(&mut self) {
        for index in 0..CLASSES {
            while let Some(block) = self.take(index) {
                // SAFETY: rule 1: every block of the class has its layout and came from the
                // global allocator (directly, or through the list it was given back to).
                unsafe { dealloc(block.as_ptr(), class_layout(index)) };
            }
        }
    }
}

/// Uninitialised memory for a `T` (not zero-sized), from this thread's free list for `T`'s size
/// class if it has a block, else from the global allocator with that class's layout.
#[inline]
pub(crate) fn alloc_block<T>() -> NonNull<T> {
    thread::if_live(|ts| ts.blocks.alloc::<T>()).unwrap_or_else(fresh::<T>)
}

#[cold]
fn fresh<T>() -> NonNull<T> {
    let layout = layout_of::<T>();
    // SAFETY: the layout is not zero-sized (`alloc_block` asserts it of `T`, and classes are
    // at least 16 bytes).
    let p = unsafe { alloc(layout) };
    NonNull::new(p).unwrap_or_else(|| handle_alloc_error(layout)).cast()
}

/// Gives back a block from [`alloc_block::<T>`]: to this thread's free list, or to the global
/// allocator for a `T` outside the classes or once the thread's state is gone.
///
/// # Safety
/// `block` came from `alloc_block::<T>()` (on any thread), holds no live `T` (it was dropped or
/// never written), and nobody uses it any more.
#[inline]
pub(crate) unsafe fn free_block<T>(block: NonNull<T>) {
    if let Some(index) = class_of::<T>() {
        // SAFETY: rule 1: the block has class `index`'s layout, whether it came from a list or
        // the global allocator; the contract says it is unused and on no list (rule 3: this
        // is this thread's list).
        let kept = thread::if_live(|ts| unsafe { ts.blocks.put(index, block.cast()) });
        if kept.is_some() {
            return;
        }
    }
    // SAFETY: rule 1 (or `T`'s own layout outside the classes): the block has the layout it
    // was allocated with.
    unsafe { dealloc(block.as_ptr() as *mut u8, layout_of::<T>()) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        assert_eq!(class_of::<u8>(), Some(0));
        assert_eq!(class_of::<[u8; 16]>(), Some(0));
        assert_eq!(class_of::<[u8; 17]>(), Some(1));
        assert_eq!(class_of::<[u64; 64]>(), Some(31));
        assert_eq!(class_of::<[u64; 65]>(), None);
        #[repr(align(32))]
        struct Wide(#[allow(dead_code)] u8);
        assert_eq!(class_of::<Wide>(), None);
        assert_eq!(class_of::<()>(), None);
        assert_eq!(layout_of::<[u8; 20]>(), Layout::from_size_align(32, 16).unwrap());
    }

    #[test]
    fn a_freed_block_is_taken_again_by_any_type_of_its_class() {
        let a = alloc_block::<[u64; 3]>();
        // SAFETY: fresh from `alloc_block`, never written.
        unsafe { free_block(a) };
        let b = alloc_block::<[u32; 7]>();
        assert_eq!(b.as_ptr() as usize, a.as_ptr() as usize, "same class: the block comes back");
        let c = alloc_block::<[u32; 7]>();
        assert_ne!(
            c.as_ptr() as usize,
            b.as_ptr() as usize,
            "a live block is never handed out twice"
        );
        let big = alloc_block::<[u64; 100]>();
        // SAFETY: each from `alloc_block` of its type, unused.
        unsafe {
            free_block(b);
            free_block(c);
            free_block(big);
        }
    }

    #[test]
    fn blocks_given_back_after_the_threads_state_are_freed_once() {
        use std::cell::RefCell;
        // A block freed after the thread's lists are gone goes straight to the allocator (a
        // double free would abort); a block taken on one thread may be freed on another.
        struct Late(RefCell<Vec<usize>>);
        impl Drop for Late {
            fn drop(&mut self) {
                for p in self.0.borrow_mut().drain(..) {
                    // SAFETY: each came from `alloc_block::<[u64; 4]>` and is unused.
                    unsafe { free_block(NonNull::new(p as *mut [u64; 4]).unwrap()) };
                }
            }
        }
        thread_local!(static LATE: Late = const { Late(RefCell::new(Vec::new())) });
        for _ in 0..20 {
            let moved = std::thread::spawn(|| {
                LATE.with(|_| {}); // registered first: destroyed after the thread's state
                crate::coroutine::current(); // the thread's state
                let blocks: Vec<usize> =
                    (0..50).map(|_| alloc_block::<[u64; 4]>().as_ptr() as usize).collect();
                LATE.with(|l| l.0.borrow_mut().extend(&blocks[..25]));
                blocks[25..].to_vec()
            })
            .join()
            .unwrap();
            for p in moved {
                // SAFETY: from `alloc_block::<[u64; 4]>` on the other thread, unused.
                unsafe { free_block(NonNull::new(p as *mut [u64; 4]).unwrap()) };
            }
        }
    }
}
