//! Which coroutines may be unwinding, so that nothing is raised into a destructor that runs
//! during an unwind (park.rs rule 5).
//!
//! Rust aborts the process when a panic leaves a destructor that runs during an unwind. A
//! fiber that is killed, times out or panics runs its destructors on the way down, and one of
//! them may block (a cleanup that sleeps, or writes a goodbye to a socket): a second kill, an
//! outer timeout or a throw raised at that wait would leave the destructor and abort. So the
//! hub must know whether a parked coroutine is unwinding; `std::thread::panicking()` alone
//! cannot say, as it counts the panics under way on the whole thread, and a coroutine
//! suspended mid-unwind still counts.
//!
//! While a coroutine runs, the count changes only through it; so it is *attributed*: each
//! coroutine keeps a word in [`Coroutine::hub_flags`], brought up to date where it is looked
//! at: as it parks or enters `with_timeout` (while it runs), and as the hub or a handing-off
//! park resumes or starts it (just before it runs):
//!
//! | part               | meaning                                              | raised / set                                                                         | cleared                                  |
//! |--------------------|------------------------------------------------------|--------------------------------------------------------------------------------------|------------------------------------------|
//! | depth (bits 1–7)   | how many unwinds it may be in, one inside the other; 0: none | the hub raises into it when it is in none (a raise into one that is goes through its park, which counts it only if it lets it through); or it is looked at with a panic under way that began since it was last seen with none (its own) | seen with no panic under way on the thread; `with_timeout` ending (its closure returned, or it caught its own timeout) puts back the depth it had on entry |
//! | `SEEN_PANICKING` (bit 0) | when last seen, a panic was under way on the thread | seen with one                                                               | seen with none                           |
//! | generation (bits 8–31) | which unwind the depth counts from: a fresh number from a per-thread counter each time the depth leaves 0 | with the depth | with the depth |
//!
//! The depth and generation tell a timeout set inside a cleanup from one set before: a
//! `with_timeout` records both as it begins, and its timeout may be raised into the cleanup
//! only while they are still those (no newer unwind has begun inside its closure, whose own
//! cleanup would be the destructor the timeout lands in, and the depth is not one left from an
//! unwind that has ended since).
//!
//! What it cannot tell apart, as it sees only whether the count is zero: a coroutine that
//! panics while another one is suspended mid-unwind, or panics again inside its own cleanup
//! (the count was not zero before: the new panic is not attributed, and a kill or timeout
//! raised into the cleanup of that second panic aborts as it would without this module); and a
//! coroutine that catches a raise itself and goes on while another one unwinds (it stays
//! marked until it, or the hub, sees no panic under way: raises into it wait until then). And
//! past 127 unwinds one inside the other the depth saturates: a timeout set in a cleanup that
//! deep then waits, like a kill, until its coroutine is seen unwinding no more.

use std::cell::Cell;

use crate::coroutine::Coroutine;

const SEEN_PANICKING: u32 = 1;
const DEPTH_SHIFT: u32 = 1;
const DEPTH_MAX: u32 = 0x7f;
const GEN_SHIFT: u32 = 8;

thread_local! {
    /// Source of generations (table above). Wraps after 2^24 unwinds: a `with_timeout` would
    /// need to outlive that many of its coroutine's unwinds to be confused.
    static NEXT_GEN: Cell<u32> = const { Cell::new(0) };
}

fn depth_of(bits: u32) -> u32 {
    (bits >> DEPTH_SHIFT) & DEPTH_MAX
}

/// A depth and generation, as a `with_timeout` records them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Mark(u32);

impl Mark {
    /// Not 0: the `with_timeout` began inside a cleanup.
    pub(crate) fn depth(self) -> u32 {
        depth_of(self.0)
    }
}

/// The bits of a coroutine that starts unwinding from none: depth 1, a new generation.
#[cold]
fn first_unwind() -> u32 {
    let g = NEXT_GEN.with(|n| {
        let g = n.get().wrapping_add(1);
        n.set(g);
        g
    });
    (g << GEN_SHIFT) | (1 << DEPTH_SHIFT) | SEEN_PANICKING
}

/// `bits` one unwind deeper (saturating), seen panicking.
fn deeper(bits: u32) -> u32 {
    let d = depth_of(bits);
    if d == 0 {
        return first_unwind();
    }
    (bits & !(DEPTH_MAX << DEPTH_SHIFT)) | ((d + 1).min(DEPTH_MAX) << DEPTH_SHIFT) | SEEN_PANICKING
}

/// Looks at `co`, the running coroutine, as it enters `with_timeout` or kills itself: true if
/// it may be unwinding.
#[inline]
pub(crate) fn look(co: &Coroutine) -> bool {
    look_as_it_parks(co, std::thread::panicking())
}

/// [`look`] as `co` parks, given `std::thread::panicking()`, which the park also passes on to
/// the coroutine it resumes ([`resuming`]).
#[inline(always)]
pub(crate) fn look_as_it_parks(co: &Coroutine, panicking: bool) -> bool {
    let f = co.hub_flags();
    if !panicking {
        f.set(0);
        return false;
    }
    look_panicking(f)
}

#[cold]
#[inline(never)]
fn look_panicking(f: &Cell<u32>) -> bool {
    let mut bits = f.get();
    if bits & SEEN_PANICKING == 0 {
        bits = deeper(bits); // the panic began while this coroutine ran: its own
    }
    f.set(bits | SEEN_PANICKING);
    depth_of(bits) > 0
}

/// `co` is about to be resumed or started by the hub's round or a park handing off, which
/// passes `std::thread::panicking()` (read anyway): seen so, without attributing anything to
/// it, as other coroutines ran since it was last seen.
#[inline(always)]
pub(crate) fn resuming(co: &Coroutine, panicking: bool) {
    if panicking {
        seen_panicking(co);
    } else {
        co.hub_flags().set(0);
    }
}

#[cold]
#[inline(never)]
fn seen_panicking(co: &Coroutine) {
    let f = co.hub_flags();
    f.set(f.get() | SEEN_PANICKING);
}

/// The hub raises into `co` (a kill, a timeout): one that unwinds from nothing yet starts
/// unwinding now, unless it catches the raise. (Counted by the sender, as the receiving park
/// has no normal way out to do it. One that may be unwinding already parked in the park that
/// keeps raises for later, which counts the raise itself if it lets it through:
/// [`unwinds_again`].) With no panic under way on the thread, any depth it has is left from
/// an unwind that ended, and counts for nothing.
#[inline]
pub(crate) fn raising(co: &Coroutine) {
    let f = co.hub_flags();
    if depth_of(f.get()) == 0 || !std::thread::panicking() {
        f.set(first_unwind());
    }
}

/// The running coroutine `co` starts one more unwind (a raise its park lets through, or
/// LoopExit).
pub(crate) fn unwinds_again(co: &Coroutine) {
    let f = co.hub_flags();
    f.set(deeper(f.get()));
}

/// What a `with_timeout` of `co`, the running coroutine, records as it begins (after
/// [`look`]).
pub(crate) fn mark(co: &Coroutine) -> Mark {
    Mark(co.hub_flags().get() & !SEEN_PANICKING)
}

/// A `with_timeout` of `co` ends: its closure returned, or it caught its own timeout. Every
/// unwind begun inside the closure was caught there, so `co` is back where it began.
pub(crate) fn back_to(co: &Coroutine, mark: Mark) {
    let f = co.hub_flags();
    if std::thread::panicking() {
        f.set(mark.0 | SEEN_PANICKING);
    } else {
        f.set(0);
    }
}

/// Whether `co` may be unwinding, as it was when last seen (for a suspended coroutine: when
/// it parked).
pub(crate) fn is_marked(co: &Coroutine) -> bool {
    depth_of(co.hub_flags().get()) > 0
}

/// Whether `payload` is the timeout of a `with_timeout` that `co` began inside a cleanup, and
/// no newer unwind has begun since: it can be raised there, its catch being in there too. Not
/// once the depth has saturated (a newer unwind would not show).
pub(crate) fn is_cleanup_timeout(co: &Coroutine, payload: &(dyn std::any::Any + Send)) -> bool {
    payload.downcast_ref::<super::time::TimeoutFired>().is_some_and(|t| {
        let d = t.mark.depth();
        d > 0 && d < DEPTH_MAX && t.mark == mark(co)
    })
}

/// True if `co` is the running coroutine and may be unwinding: a kill of it cannot be raised
/// now (it could only abort; it is kept instead), and waiting for its end would wait forever.
pub(crate) fn is_dying_current(co: &Coroutine) -> bool {
    co.is_current() && look(co)
}
