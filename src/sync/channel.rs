//! `Channel<T>`: a rendezvous — no storage; a put meets a get.
//!
//! An item put while a getter waits is held until that getter runs, and the getter's grant is
//! a reservation of a held item, as a `Queue` getter's is (`queue.rs`): the getters that run
//! take the held items in the order they were put, and one killed before it runs passes its
//! reservation to the next waiting getter. `reserved` is the getters' list's `unclaimed`.
//!
//! | getters | putters | held         | meaning                                                 |
//! |---------|---------|--------------|---------------------------------------------------------|
//! | none    | none    | = reserved   | idle                                                    |
//! | some    | none    | = reserved   | a `put` holds its item, grants the first getter, yields |
//! | none    | some    | = reserved   | a `get` takes the first putter's offer and wakes it     |
//! | none    | any     | > reserved   | a granted getter unwound: the next `get` takes an item  |
//! | some    | some    | any          | impossible: each side checks the other before waiting   |
//! | some    | any     | > reserved   | impossible: a getter waits only when every held item is reserved, and an unwound getter's reservation goes to a waiting one |

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
    /// Getters; each grant is a reservation of a held item (module docs).
    getters: WaitList,
    putters: WaitList<T>,
    /// Items put for getters that have not run yet, in the order they were put (the table).
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
        if self.getters.is_empty() {
            return Err(Full(item));
        }
        self.held.borrow_mut().push_back(item);
        let _ = self.getters.grant_one(());
        // The getter is queued ahead of us: yielding lets it run first.
        crate::hub::yield_now();
        Ok(())
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
        if self.held.borrow().len() > self.getters.unclaimed() {
            return Ok(self.take_held());
        }
        self.putters.take_one().flatten().ok_or(Empty)
    }

    /// The first held item; there is one (the table).
    fn take_held(&self) -> T {
        self.held.borrow_mut().pop_front().expect("greenfiber: a channel's reserved item is held")
    }

    fn get_deadline(&self, deadline: Option<Instant>) -> Result<T, Empty> {
        if let Ok(v) = self.try_get() {
            return Ok(v);
        }
        // Rule 4 in hub/park.rs: no switch between try_get's check and the enqueue.
        // A getter that unwinds before it runs passes its reservation on; its item stays held.
        let pass_on = |()| {
            let _ = self.getters.grant_one(());
        };
        match self.getters.wait_for("a channel get", None, deadline, pass_on) {
            // Claimed: take the item it reserved, with no switch in between.
            Outcome::Granted(_) => Ok(self.take_held()),
            Outcome::TimedOut(_) => Err(Empty),
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
