//! Time: `sleep`, `yield_now`, `with_timeout` and `Timeout`, the user API over `park.rs` and
//! the timer driver.

use std::cell::Cell;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::time::{Duration, Instant};

use super::park::{Waiter, Wake};
use super::scheduler::{self, TimerAction};
use super::unwind;
use crate::coroutine::current;

/// The instant `d` from now, or about 30 years from now if that cannot be represented (a
/// `Duration::MAX` timeout is a wait without end, not an overflow panic).
pub(crate) fn after(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d).unwrap_or_else(|| now + Duration::from_secs(86_400 * 365 * 30))
}

/// Suspends the current coroutine for `d`; other fibers run meanwhile. `sleep(Duration::ZERO)`
/// is [`yield_now`].
pub fn sleep(d: Duration) {
    if d.is_zero() {
        return yield_now();
    }
    let deadline = after(d);
    let w = Waiter::new("sleep");
    while w.park(Some(deadline)) != Wake::TimedOut {}
}

/// Lets every other ready fiber run once, then returns.
pub fn yield_now() {
    super::park::yield_current();
}

/// `with_timeout` gave up: the closure did not finish in time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeout;

impl fmt::Display for Timeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("timed out")
    }
}

impl std::error::Error for Timeout {}

/// The payload raised inside the closure when its timeout fires.
#[derive(Debug)]
pub(crate) struct TimeoutFired {
    pub(crate) id: u64,
    /// Where the coroutine stood in its unwinds when the `with_timeout` began (`unwind.rs`).
    /// At a depth other than 0, it may sit in a destructor that runs during an unwind, and then
    /// catches its timeout right there, so the timeout is raised even into a park that defers
    /// other raises, while no newer unwind has begun (park.rs rule 5).
    pub(crate) mark: unwind::Mark,
}

/// Runs `f`, giving up after `d`: if `f` is still blocked when `d` has passed, its stack is
/// unwound from the blocking point (its destructors run) and `Err(Timeout)` is returned.
///
/// Timeouts nest: each fires on its own, whichever is shorter. A closure that never blocks
/// cannot be interrupted (there is no preemption); it is checked at its next blocking call.
/// A timeout that comes due while the closure's coroutine waits in a destructor during an
/// unwind (a kill's cleanup) is raised only once that unwind is over, as a kill is
/// ([`Greenlet::kill`](crate::Greenlet::kill)), unless this `with_timeout` is itself inside
/// that cleanup. A timeout that fires inside a patched libc call (feature `monkey`) makes that
/// call fail instead, and the closure's later patched waits fail at once; if the closure then
/// returns, the result is still `Err(Timeout)` (a panic it raises goes on).
pub fn with_timeout<T>(d: Duration, f: impl FnOnce() -> T) -> Result<T, Timeout> {
    let key = Cell::new(None);
    let me = current();
    // Inside a destructor that runs during an unwind, this timeout is raised even into a park
    // that keeps other raises for later (park.rs rule 5): its catch below is in there too.
    unwind::look(&me);
    let mark = unwind::mark(&me);
    let id = scheduler::with(|hub| {
        let id = hub.next_timeout_id.get();
        hub.next_timeout_id.set(id + 1);
        let action = TimerAction::Raise { co: me.clone(), id, key: &key, mark };
        key.set(Some(hub.timers.borrow_mut().insert(after(d), action)));
        id
    });
    // Cancels the timer however `f` ends, so it never fires into a later wait; a firing that
    // park.rs kept for later (rule 5) is moot too once this frame ends.
    struct Cancel<'a>(&'a Cell<Option<super::timers::TimerKey>>, u64);
    impl Drop for Cancel<'_> {
        fn drop(&mut self) {
            let key = self.0.take();
            scheduler::try_with(|hub| {
                if let Some(k) = key {
                    hub.timers.borrow_mut().cancel(k);
                } else if !hub.deferred.borrow().is_empty() {
                    let mine = |p: &Box<dyn std::any::Any + Send>| {
                        p.downcast_ref::<TimeoutFired>().is_some_and(|t| t.id == self.1)
                    };
                    hub.deferred.borrow_mut().retain(|(_, p)| !mine(p));
                }
            });
        }
    }
    let cancel = Cancel(&key, id);
    let r = catch_unwind(AssertUnwindSafe(f));
    // A firing that a C caller swallowed (held.rs): the closure went on, but timed out.
    let swallowed = super::held::take_timeout(id);
    drop(cancel);
    let out = match r {
        // The closure went on after its timeout was swallowed, and returned: it timed out all
        // the same. (A panic goes on, even one that answers the error the timeout gave it: it
        // may as well be a bug of its own.)
        Ok(_) if swallowed => Err(Timeout),
        Ok(v) => Ok(v),
        Err(p) if p.downcast_ref::<TimeoutFired>().is_some_and(|t| t.id == id) => Err(Timeout),
        Err(p) => resume_unwind(p),
    };
    // Every unwind begun inside the closure ended here.
    unwind::back_to(&me, mark);
    out
}
