//! `LocalRc<T>`: `Rc<T>` on the thread's free blocks (`blocks.rs`), for state that every fiber
//! brings and drops (a `Greenlet`'s shared record), so that spawning one costs no `malloc`.
//!
//! It has what the crate needs of `Rc` and nothing more: `new`, `clone`, `Deref`, and dropping
//! the value with the last handle. Like `Rc`, it is `!Send` and `!Sync`.
//!
//! # Rules (cited by the `SAFETY` comments)
//! 1. `count` counts the live handles; the block holds a live `T` while it is non-zero, and goes
//!    back to the free blocks when the last handle drops the `T`.
//! 2. A handle never leaves its thread (`PhantomData<*const ()>`), so the count is a plain `Cell`.

use std::cell::Cell;
use std::marker::PhantomData;
use std::ops::Deref;
use std::ptr::NonNull;

use super::blocks::{alloc_block, free_block};

#[repr(C)]
struct Block<T> {
    count: Cell<usize>,
    value: T,
}

/// A counted, thread-bound pointer to a `T` in a block from the thread's free lists.
pub(crate) struct LocalRc<T> {
    ptr: NonNull<Block<T>>,
    /// Owns a `Block<T>` (for drop check); `!Send` and `!Sync` (rule 2).
    _owns: PhantomData<(Block<T>, *const ())>,
}

impl<T> LocalRc<T> {
    pub(crate) fn new(value: T) -> LocalRc<T> {
        let ptr = alloc_block::<Block<T>>();
        // SAFETY: `ptr` is unused memory with `Block<T>`'s size and alignment (`alloc_block`);
        // writing does not drop anything.
        unsafe { ptr.as_ptr().write(Block { count: Cell::new(1), value }) };
        LocalRc { ptr, _owns: PhantomData }
    }

    #[inline]
    fn block(&self) -> &Block<T> {
        // SAFETY: rule 1: this handle keeps the block and its `T` alive.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T> Clone for LocalRc<T> {
    #[inline]
    fn clone(&self) -> LocalRc<T> {
        let c = &self.block().count;
        // As `Rc` does: a count that would wrap (handles leaked with `mem::forget`) aborts
        // rather than free the value under the handles still using it.
        c.set(c.get().checked_add(1).unwrap_or_else(|| std::process::abort()));
        LocalRc { ptr: self.ptr, _owns: PhantomData }
    }
}

impl<T> Drop for LocalRc<T> {
    #[inline]
    fn drop(&mut self) {
        let c = &self.block().count;
        c.set(c.get() - 1);
        if c.get() == 0 {
            // SAFETY: rule 1: that was the last handle, so nobody else uses the `T`, which
            // `new` initialised. Its drop may drop other handles, never this block's.
            unsafe { std::ptr::drop_in_place(&raw mut (*self.ptr.as_ptr()).value) };
            // SAFETY: the block came from `alloc_block::<Block<T>>`, its `T` was just dropped
            // and no handle is left to use it.
            unsafe { free_block(self.ptr) };
        }
    }
}

impl<T> Deref for LocalRc<T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        &self.block().value
    }
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use super::*;

    #[test]
    fn the_value_is_dropped_once_with_the_last_handle() {
        let dropped = Rc::new(Cell::new(0));
        struct D(Rc<Cell<u32>>, #[allow(dead_code)] [u64; 5]);
        impl Drop for D {
            fn drop(&mut self) {
                self.0.set(self.0.get() + 1);
            }
        }
        let a = LocalRc::new(D(dropped.clone(), [7; 5]));
        let b = a.clone();
        assert_eq!(b.1, [7; 5]);
        drop(a);
        assert_eq!(dropped.get(), 0);
        let addr = b.ptr.as_ptr() as usize;
        drop(b);
        assert_eq!(dropped.get(), 1);
        let c = LocalRc::new(D(dropped.clone(), [8; 5]));
        assert_eq!(c.ptr.as_ptr() as usize, addr, "the block is reused");
        assert_eq!(c.1, [8; 5]);
    }

    #[test]
    fn a_value_that_drops_other_handles() {
        // The last handle to a chain: each value holds the next one's handle.
        struct Node(#[allow(dead_code)] Option<LocalRc<Node>>);
        let mut head = None;
        for _ in 0..1000 {
            head = Some(LocalRc::new(Node(head.take())));
        }
        drop(head);
    }
}
