//! Temporary stand-in for the arena stack pool (being written on the `stack` branch): plain
//! corosensei default stacks, one mmap each.

/// Default usable stack size of a coroutine.
pub(crate) const DEFAULT_STACK_SIZE: usize = 256 * 1024;

/// The stack type coroutines run on.
pub(crate) type FiberStack = corosensei::stack::DefaultStack;

/// A stack of at least `size` usable bytes.
pub(crate) fn take(size: usize) -> FiberStack {
    corosensei::stack::DefaultStack::new(size)
        .expect("greenfiber: cannot allocate a coroutine stack")
}

/// Gives a stack back for reuse.
pub(crate) fn give(stack: FiberStack) {
    drop(stack)
}
