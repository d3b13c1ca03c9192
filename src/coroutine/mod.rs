//! Layer 1: greenlet-style coroutines.

// Stacks and overflow reporting. Nothing outside their tests calls them until the coroutine
// core lands, hence the dead-code allowance outside tests; drop it then.
#[cfg_attr(not(test), allow(dead_code))]
mod overflow;
#[cfg_attr(not(test), allow(dead_code))]
mod stack;
#[cfg_attr(not(test), allow(dead_code))]
mod stack_pool;
