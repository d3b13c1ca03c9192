//! `GreenletExit`: the payload that kills a coroutine.
//!
//! `kill()`, dropping the last handle to a suspended coroutine, and `Greenlet::kill()` all raise
//! `GreenletExit` inside the victim at its pending switch with [`std::panic::resume_unwind`], so
//! the victim's stack unwinds and its destructors run. The payload rides Rust's own unwinding
//! (no panic hook runs for `resume_unwind`, so nothing is printed). At the coroutine's root,
//! `switch.rs` recognises it: a coroutine that dies of `GreenletExit` hands the `GreenletExit`
//! to its parent as a *value*, never as a panic — greenlet's rule.

use std::fmt;

/// The payload a coroutine sees when it is killed.
///
/// Inside the victim, `catch_unwind(..).unwrap_err().is::<GreenletExit>()` holds. A coroutine
/// may catch it to clean up, but should let it go on (with `resume_unwind`) so that it dies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct GreenletExit;

impl fmt::Display for GreenletExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GreenletExit")
    }
}

impl std::error::Error for GreenletExit {}
