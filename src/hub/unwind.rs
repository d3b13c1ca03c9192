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
//! coroutine keeps a byte in [`Coroutine::hub_flags`], brought up to date where it is looked
//! at: as it parks or enters `with_timeout` (while it runs), and as the hub or a handing-off
//! park resumes or starts it (just before it runs):
//!
//! | part             | meaning                                              | raised / set                                                                         | cleared                                  |
//! |------------------|------------------------------------------------------|--------------------------------------------------------------------------------------|------------------------------------------|
//! | depth (7 bits)   | how many unwinds it may be in, one inside the other; 0: none | the hub raises into it when it is in none (a raise into one that is goes through its park, which counts it only if it lets it through); or it is looked at with a panic under way that began since it was last seen with none (its own) | seen with no panic under way on the thread; `with_timeout` catching its own timeout puts back the depth it had on entry |
//! | `SEEN_PANICKING` | when last seen, a panic was under way on the thread  | seen with one                                                                        | seen with none                           |
//!
//! The depth tells a timeout set inside a cleanup from one set before: a `with_timeout` records
//! the depth it began at, and its timeout may be raised into the cleanup only while the depth
//! is still that (no newer unwind has begun inside its closure, whose own cleanup would be the
//! destructor the timeout lands in).
//!
//! What it cannot tell apart, as it sees only whether the count is zero: a coroutine that
//! panics while another one is suspended mid-unwind, or panics again inside its own cleanup
//! (the count was not zero before: the new panic is not attributed, and a kill or timeout
//! raised into the cleanup of that second panic aborts as it would without this module); and a
//! coroutine that catches a raise itself and goes on while another one unwinds (it stays
//! marked until it is seen with no panic under way: raises into it wait until then).

use std::cell::Cell;

use crate::coroutine::Coroutine;

const SEEN_PANICKING: u8 = 1;
const DEPTH_ONE: u8 = 2;
const DEPTH_MAX: u8 = 0x7f;

fn depth_of(bits: u8) -> u8 {
    bits >> 1
}

fn with_depth(bits: u8, depth: u8) -> u8 {
    (bits & SEEN_PANICKING) | (depth.min(DEPTH_MAX) << 1)
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
fn look_panicking(f: &Cell<u8>) -> bool {
    let mut bits = f.get();
    if bits & SEEN_PANICKING == 0 {
        // The panic began while this coroutine ran: its own.
        bits = with_depth(bits, depth_of(bits) + 1);
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
/// [`unwinds_again`].)
#[inline]
pub(crate) fn raising(co: &Coroutine) {
    let f = co.hub_flags();
    if depth_of(f.get()) == 0 {
        f.set(SEEN_PANICKING | DEPTH_ONE);
    }
}

/// The running coroutine `co` starts one more unwind (a raise its park lets through, or
/// LoopExit).
pub(crate) fn unwinds_again(co: &Coroutine) {
    let f = co.hub_flags();
    f.set(with_depth(f.get(), depth_of(f.get()) + 1) | SEEN_PANICKING);
}

/// How many unwinds `co` may be in, as last seen.
pub(crate) fn depth(co: &Coroutine) -> u8 {
    depth_of(co.hub_flags().get())
}

/// `with_timeout` of `co` caught its own timeout: `co` is back to the depth it entered at.
pub(crate) fn caught_own_timeout(co: &Coroutine, depth: u8) {
    let f = co.hub_flags();
    if std::thread::panicking() {
        f.set(SEEN_PANICKING | with_depth(0, depth));
    } else {
        f.set(0);
    }
}

/// Whether `co` may be unwinding, as it was when last seen (for a suspended coroutine: when
/// it parked).
pub(crate) fn is_marked(co: &Coroutine) -> bool {
    depth(co) > 0
}

/// Whether `payload` is the timeout of a `with_timeout` that `co` began inside a cleanup, and
/// no newer unwind has begun since: it can be raised there, its catch being in there too.
pub(crate) fn is_cleanup_timeout(co: &Coroutine, payload: &(dyn std::any::Any + Send)) -> bool {
    payload
        .downcast_ref::<super::time::TimeoutFired>()
        .is_some_and(|t| t.depth > 0 && t.depth == depth(co))
}

/// True if `co` is the running coroutine and may be unwinding: a kill of it has nothing left
/// to do (it is dying already, and raising again could only abort), and waiting for its end
/// would wait forever.
pub(crate) fn is_dying_current(co: &Coroutine) -> bool {
    co.is_current() && look(co)
}
