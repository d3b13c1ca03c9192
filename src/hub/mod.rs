//! Layer 2: the gevent-style hub — one per thread — that spawns fibers, joins them, and turns
//! blocking into a switch.
//!
//! ```
//! use std::time::Duration;
//! use greenfiber::{joinall, sleep, spawn};
//!
//! let a = spawn(|| { sleep(Duration::from_millis(20)); "a" });
//! let b = spawn(|| { sleep(Duration::from_millis(10)); "b" });
//! assert_eq!(joinall(&[a.clone(), b.clone()], None), 2); // main blocks: the hub runs them
//! assert_eq!((a.get().unwrap(), b.get().unwrap()), ("a", "b"));
//! ```
//!
//! Blocking anywhere — in a fiber or in the main coroutine — switches to the hub, which runs
//! ready fibers, fires timers and polls the reactor until the blocked one is woken. (While the
//! hub's round of ready fibers lasts, a blocking fiber switches straight to the next one.)
//! There is no `run` or `block_on`: main returning ends the program even while fibers sleep,
//! as in gevent.
//! When something blocks and nothing could ever wake it, it gets a panic saying so
//! (gevent's LoopExit) instead of hanging.
//!
//! # Files
//! - `scheduler.rs`: the hub, its loop and its rounds of ready fibers.
//! - `park.rs`: the one way to block (`Waiter`), the wait list, cross-thread wake-ups.
//! - `unwind.rs`: which coroutines may be unwinding, so that nothing is raised into a
//!   destructor that runs during an unwind.
//! - `held.rs`: kills and timeouts that a C caller (a patched libc call) swallowed, held until
//!   they can be raised or reported.
//! - `greenlet.rs`, `time.rs`, `debug.rs`: the user API.
//! - `timers.rs`, `reactor.rs`, `remote.rs`: drivers; they never switch.

mod debug;
mod greenlet;
pub(crate) mod held;
// Parts of park.rs and reactor.rs serve the net and sync layers (socket waits, wait lists).
#[allow(dead_code)]
pub(crate) mod park;
#[allow(dead_code)]
pub(crate) mod reactor;
pub(crate) mod remote;
pub(crate) mod scheduler;
mod time;
#[allow(dead_code)]
pub(crate) mod timers;
pub(crate) mod unwind;

pub use debug::{FiberInfo, fibers};
pub use greenlet::{Greenlet, joinall, killall, spawn, spawn_later, spawn_named, spawn_with};
pub use park::{RemoteWait, RemoteWaker, remote_signal};
// Layer 5's hooks recognise a `with_timeout` expiry that reaches a wait inside them.
#[allow(unused_imports)]
pub(crate) use scheduler::in_hub;
pub(crate) use scheduler::is_live;
pub use time::{Timeout, sleep, with_timeout, yield_now};
pub(crate) use time::{TimeoutFired, after};
