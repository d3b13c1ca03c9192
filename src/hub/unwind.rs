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
//! coroutine keeps two bits in [`Coroutine::hub_flags`], brought up to date where it is looked
//! at: as it parks or enters `with_timeout` (while it runs), and as the hub or a handing-off
//! park resumes or starts it (just before it runs):
//!
//! | bit              | meaning                                          | set                                                                                   | cleared                                  |
//! |------------------|--------------------------------------------------|---------------------------------------------------------------------------------------|------------------------------------------|
//! | `UNWINDING`      | it may be unwinding                              | the hub raises into it; or it is looked at with a panic under way that began since it was last seen with none (its own) | seen with no panic under way on the thread; `with_timeout` catching its own timeout puts back the value it had on entry |
//! | `SEEN_PANICKING` | when last seen, a panic was under way on the thread | seen with one                                                                      | seen with none                           |
//!
//! What it cannot tell apart, as it sees only whether the count is zero: a coroutine that
//! panics while another one is suspended mid-unwind, or panics again inside its own cleanup
//! (the count was not zero before: the new panic is not attributed, and a kill or timeout
//! raised into the cleanup of that second panic aborts as it would without this module); and a
//! coroutine that catches a raise itself and goes on while another one unwinds (it stays
//! marked until it is seen with no panic under way: raises into it wait until then).

use std::cell::Cell;

use crate::coroutine::Coroutine;

const UNWINDING: u8 = 1;
const SEEN_PANICKING: u8 = 2;

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
        bits |= UNWINDING; // the panic began while this coroutine ran: its own
    }
    f.set(bits | SEEN_PANICKING);
    bits & UNWINDING != 0
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

/// The hub raises into `co` (a kill, a timeout, LoopExit): from now on it unwinds, unless
/// it catches the raise. (Marked by the sender, as the receiving park has no normal way out
/// to do it; a raise into a park that keeps it for later leaves the mark as it was: set.)
#[inline]
pub(crate) fn raising(co: &Coroutine) {
    co.hub_flags().set(UNWINDING | SEEN_PANICKING);
}

/// `with_timeout` of `co` caught its own timeout: `co` unwinds no more than when it entered
/// (`was`: what [`look`] said then).
pub(crate) fn caught_own_timeout(co: &Coroutine, was: bool) {
    let f = co.hub_flags();
    if std::thread::panicking() {
        f.set(SEEN_PANICKING | if was { UNWINDING } else { 0 });
    } else {
        f.set(0);
    }
}

/// Whether `co` may be unwinding, as it was when last seen (for a suspended coroutine: when
/// it parked).
pub(crate) fn is_marked(co: &Coroutine) -> bool {
    co.hub_flags().get() & UNWINDING != 0
}

/// True if `co` is the running coroutine and may be unwinding: a kill of it has nothing left
/// to do (it is dying already, and raising again could only abort), and waiting for its end
/// would wait forever.
pub(crate) fn is_dying_current(co: &Coroutine) -> bool {
    co.is_current() && look(co)
}
