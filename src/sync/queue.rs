//! `Queue<T>` over a private storage — FIFO, LIFO or priority (smallest first) — plus
//! `JoinableQueue`. One core, three storages (Habit 9); the public types are thin wrappers.
//!
//! Every item put is stored; a getter takes its item from the storage when it runs, as in
//! gevent. What a waiting getter is granted is a *reservation*: one of the stored items is
//! its, and nobody else may take it, but which one is decided when it runs (the front of a
//! FIFO, the top of a LIFO, the smallest of a priority queue, at that moment). So a getter
//! killed before it runs gives up only its reservation, which passes to the next waiting
//! getter, and the getters that run take the items in the storage's order, whichever died.
//!
//! Core state (`cap` ≥ 1; `usize::MAX` when unbounded; `reserved` is the getters' wait
//! list's `unclaimed`: getters granted that have not run yet):
//!
//! | storage                 | getters | putters | meaning                                        |
//! |-------------------------|---------|---------|------------------------------------------------|
//! | len = reserved          | none    | none    | idle (every item is some granted getter's)     |
//! | len = reserved          | some    | none    | each `put` stores and grants the first getter  |
//! | reserved < len < cap    | none    | none    | `put` stores, `get` pops                       |
//! | len ≥ cap               | none    | some    | each `get` pops, then moves the first putter's item in |
//! | len = reserved = cap    | some    | some    | every slot holds a granted getter's item: each claim pops one, admits the first putter's item and grants it to the first getter |
//! | len > reserved          | some    | any     | impossible: a getter waits only when every item is reserved, and every item stored while getters wait (put, or admitted from a putter) grants one |
//! | < cap                   | any     | some    | impossible: a putter waits only on a full queue, and every pop admits the first putter |
//!
//! Invariant: `len ≥ reserved`. A granted getter takes its reservation out of the list and an
//! item out of the storage in one step (no switch between); one that dies first passes its
//! reservation on (`pass_reservation`), leaving the item stored.

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

use super::waiters::{Outcome, WaitList};
use super::{Empty, Full, SyncError};

/// Where a queue keeps its items.
trait Storage<T>: Default {
    fn push(&mut self, v: T);
    fn pop(&mut self) -> Option<T>;
    fn len(&self) -> usize;
}

struct Fifo<T>(VecDeque<T>);
struct Lifo<T>(Vec<T>);
struct Priority<T>(BinaryHeap<Reverse<T>>);

impl<T> Default for Fifo<T> {
    fn default() -> Self {
        Fifo(VecDeque::new())
    }
}
impl<T> Default for Lifo<T> {
    fn default() -> Self {
        Lifo(Vec::new())
    }
}
impl<T: Ord> Default for Priority<T> {
    fn default() -> Self {
        Priority(BinaryHeap::new())
    }
}

impl<T> Storage<T> for Fifo<T> {
    fn push(&mut self, v: T) {
        self.0.push_back(v)
    }
    fn pop(&mut self) -> Option<T> {
        self.0.pop_front()
    }
    fn len(&self) -> usize {
        self.0.len()
    }
}

impl<T> Storage<T> for Lifo<T> {
    fn push(&mut self, v: T) {
        self.0.push(v)
    }
    fn pop(&mut self) -> Option<T> {
        self.0.pop()
    }
    fn len(&self) -> usize {
        self.0.len()
    }
}

impl<T: Ord> Storage<T> for Priority<T> {
    fn push(&mut self, v: T) {
        self.0.push(Reverse(v))
    }
    fn pop(&mut self) -> Option<T> {
        self.0.pop().map(|Reverse(v)| v)
    }
    fn len(&self) -> usize {
        self.0.len()
    }
}

/// The one queue implementation.
struct Core<T, S> {
    items: RefCell<S>,
    cap: usize,
    /// Getters; each grant is a reservation of a stored item (module docs).
    getters: WaitList,
    putters: WaitList<T>,
    /// Items accepted so far (stored or handed to a getter): `JoinableQueue` counts with it.
    accepted: Cell<usize>,
}

impl<T, S: Storage<T>> Core<T, S> {
    fn new(cap: usize) -> Self {
        assert!(
            cap > 0,
            "greenfiber: a bounded queue needs a capacity of at least 1 (use Channel)"
        );
        Core {
            items: RefCell::new(S::default()),
            cap,
            getters: WaitList::new(),
            putters: WaitList::new(),
            accepted: Cell::new(0),
        }
    }

    /// Stores `item`, and grants it to the first waiting getter, if that needs no wait; else
    /// gives it back.
    #[inline]
    fn put_now(&self, item: T) -> Result<(), T> {
        let mut items = self.items.borrow_mut();
        if items.len() >= self.cap {
            return Err(item);
        }
        items.push(item);
        drop(items);
        self.accepted.set(self.accepted.get() + 1);
        // With a getter waiting, every other item was reserved: this one is its.
        let _ = self.getters.grant_one(());
        Ok(())
    }

    #[inline]
    fn put_deadline(&self, item: T, deadline: Option<Instant>) -> Result<(), Full<T>> {
        match self.put_now(item) {
            Ok(()) => Ok(()),
            // Rule 4 in hub/park.rs: no switch between put_now's check and the enqueue.
            Err(item) => self.put_wait(item, deadline),
        }
    }

    /// The wait of a put that found the queue full: out of line, so that a put that needs no
    /// wait does not pay for the wait's frame.
    #[inline(never)]
    fn put_wait(&self, item: T, deadline: Option<Instant>) -> Result<(), Full<T>> {
        match self.putters.wait_for("a full queue", Some(item), deadline, |_| {}) {
            // A getter moved the offer into the queue (and counted it).
            Outcome::Granted(_) => Ok(()),
            Outcome::TimedOut(item) => Err(Full(item.expect("an untaken offer is still there"))),
        }
    }

    /// Takes an item that is not reserved for a granted getter, if there is one.
    #[inline]
    fn get_now(&self) -> Option<T> {
        if self.items.borrow().len() <= self.getters.unclaimed() {
            return None;
        }
        self.take()
    }

    /// Pops the storage's next item, and admits the first waiting putter's item to the slot
    /// it opened.
    #[inline]
    fn take(&self) -> Option<T> {
        let mut items = self.items.borrow_mut();
        let v = items.pop()?;
        // A slot opened: admit the first waiting putter's item. (The test first: with no
        // putter waiting, the common case, no call.)
        if !self.putters.is_empty()
            && let Some(Some(x)) = self.putters.take_one()
        {
            items.push(x);
            self.accepted.set(self.accepted.get() + 1);
            // Every other item may be reserved (a full queue of granted getters' items, with
            // getters and putters waiting): the one admitted is the first waiting getter's.
            let _ = self.getters.grant_one(());
        }
        Some(v)
    }

    #[inline]
    fn get_deadline(&self, deadline: Option<Instant>) -> Result<T, Empty> {
        match self.get_now() {
            Some(v) => Ok(v),
            // Rule 4 in hub/park.rs: no switch between get_now's check and the enqueue.
            None => self.get_wait(deadline),
        }
    }

    /// The wait of a get that found the queue empty: out of line, as `put_wait`.
    #[inline(never)]
    fn get_wait(&self, deadline: Option<Instant>) -> Result<T, Empty> {
        let pass_on = |()| self.pass_reservation();
        match self.getters.wait_for("an empty queue", None, deadline, pass_on) {
            // The reservation is claimed (no longer counted): take the item it kept, with no
            // switch in between (the invariant in the module docs).
            Outcome::Granted(_) => {
                Ok(self.take().expect("greenfiber: a granted getter's item is stored"))
            }
            Outcome::TimedOut(_) => Err(Empty),
        }
    }

    /// The reservation of a getter that unwound before it ran: to the next waiting getter;
    /// without one, its item is simply free to take.
    fn pass_reservation(&self) {
        let _ = self.getters.grant_one(());
    }

    fn len(&self) -> usize {
        self.items.borrow().len()
    }
}

macro_rules! queue_api {
    ($name:ident, $storage:ident, $what:literal $(, $bound:path)?) => {
        impl<T $(: $bound)?> Default for $name<T> {
            fn default() -> Self {
                Self::new()
            }
        }

        impl<T $(: $bound)?> $name<T> {
            #[doc = concat!("An unbounded ", $what, ".")]
            pub fn new() -> Self {
                $name { core: Core::new(usize::MAX) }
            }

            #[doc = concat!("A ", $what, " holding at most `cap` items (`cap` ≥ 1).")]
            ///
            /// # Panics
            /// If `cap` is 0 (a rendezvous is [`Channel`](super::Channel)).
            pub fn bounded(cap: usize) -> Self {
                $name { core: Core::new(cap) }
            }

            /// Adds `item`, waiting while the queue is full.
            #[inline]
            pub fn put(&self, item: T) {
                let _ = self.core.put_deadline(item, None);
            }

            /// Adds `item`, waiting at most `d` while full; `Err(Full(item))` if still full.
            pub fn put_timeout(&self, item: T, d: Duration) -> Result<(), Full<T>> {
                self.core.put_deadline(item, super::deadline(d))
            }

            /// Adds `item` if there is room now; else `Err(Full(item))`.
            pub fn try_put(&self, item: T) -> Result<(), Full<T>> {
                self.core.put_now(item).map_err(Full)
            }

            /// Removes and returns the next item, waiting while the queue is empty.
            #[inline]
            pub fn get(&self) -> T {
                self.core.get_deadline(None).expect("a get without deadline gets an item")
            }

            /// As [`get`](Self::get), waiting at most `d`; `Err(Empty)` if still empty.
            pub fn get_timeout(&self, d: Duration) -> Result<T, Empty> {
                self.core.get_deadline(super::deadline(d))
            }

            /// The next item if there is one now; else `Err(Empty)`.
            pub fn try_get(&self) -> Result<T, Empty> {
                self.core.get_now().ok_or(Empty)
            }

            /// Items held now.
            pub fn len(&self) -> usize {
                self.core.len()
            }

            /// True if no item is held.
            pub fn is_empty(&self) -> bool {
                self.core.len() == 0
            }

            /// True if a `put` would wait now.
            pub fn is_full(&self) -> bool {
                self.core.len() >= self.core.cap
            }

            /// The capacity, `None` if unbounded.
            pub fn capacity(&self) -> Option<usize> {
                (self.core.cap != usize::MAX).then_some(self.core.cap)
            }

            /// Fibers waiting in `get`.
            pub fn getters_waiting(&self) -> usize {
                self.core.getters.len()
            }

            /// Fibers waiting in `put`.
            pub fn putters_waiting(&self) -> usize {
                self.core.putters.len()
            }
        }
    };
}

/// A first-in, first-out queue for fibers (gevent's `Queue`), unbounded or bounded.
///
/// `get` waits while empty, `put` while full; waiters are served in FIFO order. An item put
/// while getters wait is reserved for the first of them, which takes the queue's front when it
/// runs; a getter killed before it runs passes its reservation to the next getter, so the
/// getters that run get the items in order. A putter killed after its item was accepted leaves
/// the item in the queue (the put happened). As in gevent, an item reserved for a getter that
/// has not run yet still counts in `len` and toward the capacity.
///
/// ```
/// use greenfiber::sync::{Empty, Full, Queue};
/// let q = Queue::bounded(1);
/// q.put("a");
/// assert_eq!(q.try_put("b"), Err(Full("b")));
/// assert_eq!(q.get(), "a");
/// assert_eq!(q.try_get(), Err(Empty));
/// ```
pub struct Queue<T> {
    core: Core<T, Fifo<T>>,
}

/// A last-in, first-out queue (gevent's `LifoQueue`): the [`Queue`] API over a stack.
pub struct LifoQueue<T> {
    core: Core<T, Lifo<T>>,
}

/// A queue that returns its smallest item first (gevent's `PriorityQueue`): the [`Queue`] API
/// over a binary heap. Use `std::cmp::Reverse` for largest-first.
pub struct PriorityQueue<T> {
    core: Core<T, Priority<T>>,
}

queue_api!(Queue, Fifo, "FIFO queue");
queue_api!(LifoQueue, Lifo, "LIFO queue");
queue_api!(PriorityQueue, Priority, "priority queue", Ord);

/// A FIFO [`Queue`] that counts unfinished work (gevent's `JoinableQueue`): every item put is
/// unfinished until a `task_done`; `join` waits until none is.
///
/// An item counts from the moment the queue accepts it (stored or handed to a getter), so a
/// put that times out or is killed before acceptance does not count.
#[derive(Default)]
pub struct JoinableQueue<T> {
    queue: Queue<T>,
    done: Cell<usize>,
    joiners: WaitList<()>,
}

impl<T> JoinableQueue<T> {
    /// An unbounded joinable queue.
    pub fn new() -> Self {
        JoinableQueue { queue: Queue::new(), done: Cell::new(0), joiners: WaitList::new() }
    }

    /// A joinable queue of at most `cap` items.
    pub fn bounded(cap: usize) -> Self {
        JoinableQueue { queue: Queue::bounded(cap), done: Cell::new(0), joiners: WaitList::new() }
    }

    /// The underlying queue, for everything but the counting (`get`, `try_get`, `len` …).
    pub fn queue(&self) -> &Queue<T> {
        &self.queue
    }

    /// [`Queue::put`]; the item counts as unfinished.
    pub fn put(&self, item: T) {
        self.queue.put(item)
    }

    /// [`Queue::put_timeout`]; the item counts as unfinished if it was accepted.
    pub fn put_timeout(&self, item: T, d: Duration) -> Result<(), Full<T>> {
        self.queue.put_timeout(item, d)
    }

    /// [`Queue::try_put`].
    pub fn try_put(&self, item: T) -> Result<(), Full<T>> {
        self.queue.try_put(item)
    }

    /// [`Queue::get`].
    pub fn get(&self) -> T {
        self.queue.get()
    }

    /// [`Queue::get_timeout`].
    pub fn get_timeout(&self, d: Duration) -> Result<T, Empty> {
        self.queue.get_timeout(d)
    }

    /// [`Queue::try_get`].
    pub fn try_get(&self) -> Result<T, Empty> {
        self.queue.try_get()
    }

    /// Items held now.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// True if no item is held.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Items accepted and not yet marked done.
    pub fn unfinished_tasks(&self) -> usize {
        self.queue.core.accepted.get() - self.done.get()
    }

    /// Marks one item done; the last one wakes every `join`.
    /// [`SyncError::TooManyTaskDone`] if nothing is unfinished.
    pub fn task_done(&self) -> Result<(), SyncError> {
        if self.unfinished_tasks() == 0 {
            return Err(SyncError::TooManyTaskDone);
        }
        self.done.set(self.done.get() + 1);
        if self.unfinished_tasks() == 0 {
            self.joiners.notify_all();
        }
        Ok(())
    }

    /// Waits until every accepted item is marked done.
    ///
    /// As Python's `queue.Queue.join`: a joiner woken by the last `task_done` checks the count
    /// again when it runs, so an item put meanwhile keeps it waiting (gevent's, an `Event`,
    /// returns then). Under a producer that never lets the count reach zero, `join` waits.
    pub fn join(&self) {
        self.join_deadline(None);
    }

    /// As [`join`](Self::join), waiting at most `d`; true if all work is done.
    pub fn join_timeout(&self, d: Duration) -> bool {
        self.join_deadline(super::deadline(d))
    }

    fn join_deadline(&self, deadline: Option<Instant>) -> bool {
        while self.unfinished_tasks() > 0 {
            // Rule 4 in hub/park.rs: no switch between the check above and the enqueue.
            if self.joiners.wait("a JoinableQueue join", deadline)
                == crate::hub::park::Wake::TimedOut
            {
                break;
            }
        }
        self.unfinished_tasks() == 0
    }
}
