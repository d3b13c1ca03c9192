//! `Channel<T>`: a rendezvous — no storage; a put meets a get.
//!
//! | getters | putters | held | meaning                                                    |
//! |---------|---------|------|------------------------------------------------------------|
//! | none    | none    | none | idle                                                       |
//! | some    | none    | none | a `put` grants its item to the first getter, then yields   |
//! | none    | some    | none | a `get` takes the first putter's offer and wakes it        |
//! | none    | any     | some | a getter granted an item unwound: the next `get` takes it  |
//! | some    | some    | any  | impossible: each side checks the other before waiting      |

use std::cell::RefCell;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::waiters::{Outcome, WaitList};
use super::{Empty, Full};

/// A rendezvous channel for fibers (gevent's `Channel`): `put` returns only after a getter has
/// taken the item and run with it (until it blocked or yielded).
///
/// ```
/// use std::rc::Rc;
/// use greenfiber::{spawn, sync::Channel};
/// let ch = Rc::new(Channel::new());
/// let ch2 = ch.clone();
/// let putter = spawn(move || ch2.put("hi"));
/// assert_eq!(ch.get(), "hi");
/// putter.join();
/// ```
pub struct Channel<T> {
    getters: WaitList<T>,
    putters: WaitList<T>,
    /// Items handed to a getter that unwound before it ran (see the table).
    held: RefCell<VecDeque<T>>,
}

impl<T> Default for Channel<T> {
    fn default() -> Self {
        Channel::new()
    }
}

impl<T> Channel<T> {
    /// A channel with nobody waiting.
    pub fn new() -> Channel<T> {
        Channel {
            getters: WaitList::new(),
            putters: WaitList::new(),
            held: RefCell::new(VecDeque::new()),
        }
    }

    /// Hands `item` to a getter — the first waiting one, or the next to come — and returns after
    /// that getter has run.
    pub fn put(&self, item: T) {
        let put = self.put_deadline(item, None);
        debug_assert!(put.is_ok(), "a put without deadline meets a getter");
    }

    /// As [`put`](Channel::put), waiting at most `d` for a getter; `Err(Full(item))` gives the
    /// item back if none came.
    pub fn put_timeout(&self, item: T, d: Duration) -> Result<(), Full<T>> {
        self.put_deadline(item, super::deadline(d))
    }

    /// Hands `item` to a getter waiting now, and returns after that getter has run;
    /// `Err(Full(item))` if nobody waits.
    pub fn try_put(&self, item: T) -> Result<(), Full<T>> {
        match self.getters.grant_one(item) {
            Ok(()) => {
                // The getter is queued ahead of us: yielding lets it run first.
                crate::hub::yield_now();
                Ok(())
            }
            Err(item) => Err(Full(item)),
        }
    }

    fn put_deadline(&self, item: T, deadline: Option<Instant>) -> Result<(), Full<T>> {
        let Err(Full(item)) = self.try_put(item) else { return Ok(()) };
        // Rule 4 in hub/park.rs: no switch between try_put's check and the enqueue.
        match self.putters.wait_for("a channel put", Some(item), deadline, |_| {}) {
            Outcome::Granted(_) => Ok(()),
            Outcome::TimedOut(item) => {
                Err(Full(item.expect("greenfiber: a put timed out without its offer")))
            }
        }
    }

    /// Takes an item, waiting for a putter.
    pub fn get(&self) -> T {
        self.get_deadline(None).expect("a get without deadline gets an item")
    }

    /// As [`get`](Channel::get), waiting at most `d`; `Err(Empty)` if no putter came.
    pub fn get_timeout(&self, d: Duration) -> Result<T, Empty> {
        self.get_deadline(super::deadline(d))
    }

    /// Takes an item from a waiting putter, if there is one now.
    pub fn try_get(&self) -> Result<T, Empty> {
        if let Some(v) = self.held.borrow_mut().pop_front() {
            return Ok(v);
        }
        self.putters.take_one().flatten().ok_or(Empty)
    }

    fn get_deadline(&self, deadline: Option<Instant>) -> Result<T, Empty> {
        if let Ok(v) = self.try_get() {
            return Ok(v);
        }
        // Rule 4 in hub/park.rs: no switch between try_get's check and the enqueue.
        let hand_on = |item| {
            if let Err(item) = self.getters.grant_one(item) {
                self.held.borrow_mut().push_front(item);
            }
        };
        match self.getters.wait_for("a channel get", None, deadline, hand_on) {
            Outcome::Granted(Some(v)) => Ok(v),
            _ => Err(Empty),
        }
    }

    /// Fibers waiting in `get`.
    pub fn getters_waiting(&self) -> usize {
        self.getters.len()
    }

    /// Fibers waiting in `put`.
    pub fn putters_waiting(&self) -> usize {
        self.putters.len()
    }
}
