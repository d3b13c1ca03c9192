//! Layer 4: [`Group`], a set of fibers to join or kill together, and [`Pool`] = `Group` +
//! [`Semaphore`]: at most N of its fibers run at once (gevent's `gevent.pool`).
//!
//! ```
//! use greenfiber::pool::Pool;
//! let pool = Pool::new(2);
//! let squares = pool.map(1..=5, |i: u32| i * i); // at most 2 fibers at a time, order kept
//! assert_eq!(squares, [1, 4, 9, 16, 25]);
//! ```
//!
//! A `Pool` fiber holds its permit from `spawn` until it ends — by returning, panicking or being
//! killed, even before it started: the permit is owned by the fiber's closure, so it is
//! released whenever that closure is dropped. `Group` and `Pool` are cheap `Clone` handles.

use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::coroutine::{Coroutine, GreenletExit};
use crate::error::Payload;
use crate::hub::{self, Greenlet};
use crate::sync::{Queue, Semaphore};

/// What a group needs of a fiber, whatever its result type.
trait Member {
    fn coroutine(&self) -> &Coroutine;
    fn ready(&self) -> bool;
    fn join_deadline(&self, deadline: Option<Instant>) -> bool;
    /// Sends the group's kill, once per member however many times the group is killed (a
    /// fiber that survives its kill is not shot again, as in gevent's `Group.dying`).
    fn shoot(&self);
}

/// A member fiber and whether the group has sent it a kill.
struct Tracked<T> {
    g: Greenlet<T>,
    dying: Cell<bool>,
}

impl<T: 'static> Member for Tracked<T> {
    fn coroutine(&self) -> &Coroutine {
        self.g.coroutine()
    }
    fn ready(&self) -> bool {
        self.g.ready()
    }
    fn join_deadline(&self, deadline: Option<Instant>) -> bool {
        self.g.join_deadline(deadline)
    }
    fn shoot(&self) {
        if !self.dying.replace(true) {
            self.g.send_kill();
        }
    }
}

/// A set of fibers (gevent's `Group`): spawn into it, then join or kill them all. Finished
/// fibers leave it.
#[derive(Clone, Default)]
pub struct Group {
    members: Rc<Members>,
}

/// A group's members. Finished ones are dropped whenever the group is asked about them, and
/// otherwise each time the list has doubled since the last sweep: a group (or a pool) that runs
/// forever keeps at most about twice its unfinished members, at amortized O(1) per `add`.
#[derive(Default)]
struct Members {
    list: RefCell<Vec<Rc<dyn Member>>>,
    /// The length at which `add` sweeps next.
    sweep_at: Cell<usize>,
}

/// The smallest `sweep_at`: below it, sweeping would cost more than it keeps.
const MIN_SWEEP: usize = 64;

impl Group {
    /// An empty group.
    pub fn new() -> Group {
        Group::default()
    }

    /// Spawns `f` (see [`hub::spawn`]) as a member.
    pub fn spawn<T: 'static>(&self, f: impl FnOnce() -> T + 'static) -> Greenlet<T> {
        let g = hub::spawn(f);
        self.add(&g);
        g
    }

    /// Adds an already spawned fiber.
    pub fn add<T: 'static>(&self, g: &Greenlet<T>) {
        let len = {
            let mut list = self.members.list.borrow_mut();
            list.push(Rc::new(Tracked { g: g.clone(), dying: Cell::new(false) }));
            list.len()
        };
        if len >= self.members.sweep_at.get() {
            self.prune();
        }
    }

    /// Is `co` one of the members?
    fn contains(&self, co: &Coroutine) -> bool {
        self.members.list.borrow().iter().any(|m| m.coroutine() == co)
    }

    /// Drops the finished members.
    fn prune(&self) {
        let finished: Vec<_> = {
            let mut list = self.members.list.borrow_mut();
            let finished = list.extract_if(.., |m| m.ready()).collect();
            self.members.sweep_at.set((2 * list.len()).max(MIN_SWEEP));
            finished
        };
        // Dropped outside the borrow: a result's `Drop` may use this group.
        drop(finished);
    }

    /// Members that have not finished.
    pub fn len(&self) -> usize {
        self.prune();
        self.members.list.borrow().len()
    }

    /// True if every member has finished.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until every member has finished, including ones added meanwhile.
    pub fn join(&self) {
        self.join_deadline(None);
    }

    /// As [`join`](Group::join), waiting at most `d`; true if all have finished.
    pub fn join_timeout(&self, d: Duration) -> bool {
        self.join_deadline(Some(crate::hub::after(d)))
    }

    fn join_deadline(&self, deadline: Option<Instant>) -> bool {
        loop {
            self.prune();
            // A snapshot, out of the borrow: each join switches (Habit 8). Members added
            // meanwhile are joined by the next pass.
            let all = self.members.list.borrow().clone();
            if all.is_empty() {
                return true;
            }
            for m in all {
                if !m.join_deadline(deadline) {
                    return false;
                }
            }
        }
    }

    /// Kills every member (see [`Greenlet::kill`]) and returns when they are dead, including
    /// members added meanwhile.
    ///
    /// As gevent's `Group.kill`: every kill is sent before any wait, each member is shot once
    /// however often the group is killed, and members stay in the group until they end. So
    /// a member that survives its kill does not spare the others, a
    /// [`with_timeout`](crate::with_timeout) around the call leaves the survivors counted
    /// and joinable, and a member that kills its own group dies last, once it waits.
    pub fn kill(&self) {
        self.kill_deadline(None);
    }

    /// As [`kill`](Group::kill), waiting at most `d` for the members to die; true if all did.
    pub fn kill_timeout(&self, d: Duration) -> bool {
        self.kill_deadline(Some(crate::hub::after(d)))
    }

    fn kill_deadline(&self, deadline: Option<Instant>) -> bool {
        kill_groups(&[self], deadline)
    }

    /// Sends the kill to every unfinished member not shot yet; returns them all (a snapshot,
    /// out of the borrow: the waits that follow switch, Habit 8).
    fn shoot_all(&self) -> Vec<Rc<dyn Member>> {
        self.prune();
        let all = self.members.list.borrow().clone();
        all.iter().for_each(|m| m.shoot());
        all
    }
}

/// Kills the members of `groups`, every kill sent before any wait, until all are empty or
/// `deadline` passes (true if all died). Members added meanwhile are killed on the next pass.
fn kill_groups(groups: &[&Group], deadline: Option<Instant>) -> bool {
    if !hub::is_live() {
        // Thread teardown, the hub gone: its fibers were abandoned with it and cannot die.
        return false;
    }
    loop {
        let mut all: Vec<_> = groups.iter().flat_map(|g| g.shoot_all()).collect();
        // A member that kills its own group from its cleanup is dying already: no wait for it.
        all.retain(|m| !hub::unwind::is_dying_current(m.coroutine()));
        if all.is_empty() {
            return true;
        }
        for m in &all {
            if !m.join_deadline(deadline) {
                return false;
            }
        }
    }
}

/// Releases a pool permit when dropped: owned by a pool fiber's closure.
struct Permit(Rc<Semaphore>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// Runs `f`, catching its panic as a payload; a kill (`GreenletExit`) still unwinds the fiber.
fn catching<T>(f: impl FnOnce() -> T) -> Result<T, Payload> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Err(p) if p.is::<GreenletExit>() => resume_unwind(p),
        r => r,
    }
}

fn unwrap_task<T: 'static>(g: &Greenlet<Result<T, Payload>>) -> T {
    g.join();
    match g.take() {
        Some(Ok(Ok(v))) => v,
        Some(Ok(Err(p))) => resume_unwind(p),
        Some(Err(e)) => panic!("greenfiber: a pool task ended without a value: {e}"),
        None => panic!("greenfiber: a pool task's result was already taken"),
    }
}

/// A group of at most `size` running fibers (gevent's `Pool`): `spawn` waits while it is full.
#[derive(Clone)]
pub struct Pool {
    group: Group,
    /// `imap_unordered` feeders: not counted in `len`, killed and joined with the pool.
    feeders: Group,
    slots: Rc<Semaphore>,
    size: usize,
}

impl Pool {
    /// A pool of at most `size` fibers.
    ///
    /// # Panics
    /// If `size` is 0.
    pub fn new(size: usize) -> Pool {
        assert!(size > 0, "greenfiber: a pool needs a size of at least 1");
        Pool {
            group: Group::new(),
            feeders: Group::new(),
            slots: Rc::new(Semaphore::new(size)),
            size,
        }
    }

    /// Spawns `f` in the pool, first waiting (FIFO) while `size` fibers run.
    pub fn spawn<T: 'static>(&self, f: impl FnOnce() -> T + 'static) -> Greenlet<T> {
        self.slots.acquire();
        let permit = Permit(self.slots.clone());
        self.group.spawn(move || {
            let _permit = permit;
            f()
        })
    }

    /// Runs `f` in the pool and returns its value; a panic in `f` is re-raised here with its
    /// original payload. A task killed meanwhile (by [`kill`](Pool::kill)) makes this panic.
    ///
    /// Called from one of the pool's own fibers, it runs `f` right there, as gevent does:
    /// waiting for a slot that the caller itself holds could never end.
    pub fn apply<T: 'static>(&self, f: impl FnOnce() -> T + 'static) -> T {
        if self.group.contains(&crate::coroutine::current()) {
            return f();
        }
        unwrap_task(&self.spawn(move || catching(f)))
    }

    /// Runs `f` on every item, at most `size` at a time, and returns the results in item
    /// order. The first panic (in item order) is re-raised here once all have finished.
    pub fn map<I: 'static, T: 'static>(
        &self,
        items: impl IntoIterator<Item = I>,
        f: impl Fn(I) -> T + 'static,
    ) -> Vec<T> {
        let f = Rc::new(f);
        let gs: Vec<_> = items
            .into_iter()
            .map(|i| {
                let f = f.clone();
                self.spawn(move || catching(|| f(i)))
            })
            .collect();
        gs.iter().for_each(|g| g.join());
        gs.iter().map(unwrap_task).collect()
    }

    /// Runs `f` on every item, at most `size` at a time, yielding results as they finish. A
    /// feeder fiber pulls the items one at a time and spawns a task for each, waiting while
    /// the pool is full, so the first results arrive while later items are not even read: an
    /// endless or slow source works, as in gevent. A task's panic is re-raised by `next`, and
    /// so is a panic of the source once the feeder meets it (later calls still return the
    /// results of the tasks already spawned); a killed task makes `next` panic.
    pub fn imap_unordered<I: 'static, T: 'static>(
        &self,
        items: impl IntoIterator<Item = I, IntoIter: 'static>,
        f: impl Fn(I) -> T + 'static,
    ) -> ImapUnordered<T> {
        let results = Rc::new(Queue::new());
        let (q, pool, f) = (results.clone(), self.clone(), Rc::new(f));
        let mut items = items.into_iter();
        // Tells the iterator how many results to expect, however the feeder ends: made here
        // and moved in, so a feeder killed before it ever ran reports too.
        let end = FeedEnd { q: q.clone(), spawned: 0, error: None };
        let feeder = self.feeders.spawn(move || {
            let mut end = end; // the whole guard, not its fields
            loop {
                let item = match catching(|| items.next()) {
                    Ok(Some(item)) => item,
                    Ok(None) => break,
                    Err(p) => {
                        end.error = Some(p);
                        break;
                    }
                };
                // From here this task reports exactly once: with its outcome, or, if it is
                // dropped first (a kill while it waits for a slot or before it starts), as
                // killed.
                let reporter = Reporter { q: q.clone(), sent: false };
                end.spawned += 1;
                let f = f.clone();
                pool.spawn(move || {
                    let mut reporter = reporter;
                    let r = catching(|| f(item));
                    reporter.sent = true;
                    reporter.q.put(Report::Done(r));
                });
            }
        });
        ImapUnordered { results, received: 0, total: None, feeder }
    }

    /// Fibers running (or spawned and not yet finished) in the pool.
    pub fn len(&self) -> usize {
        self.group.len()
    }

    /// True if no fiber runs in the pool.
    pub fn is_empty(&self) -> bool {
        self.group.is_empty()
    }

    /// The pool's size.
    pub fn size(&self) -> usize {
        self.size
    }

    /// How many more fibers could start now without waiting.
    pub fn free_count(&self) -> usize {
        self.slots.available()
    }

    /// Waits until every fiber of the pool has finished.
    pub fn join(&self) {
        self.feeders.join();
        self.group.join();
    }

    /// As [`join`](Pool::join), waiting at most `d`; true if all have finished.
    pub fn join_timeout(&self, d: Duration) -> bool {
        let deadline = crate::hub::after(d);
        self.feeders.join_deadline(Some(deadline)) && self.group.join_deadline(Some(deadline))
    }

    /// Kills every fiber of the pool and any `imap_unordered` feeder, all kills sent before
    /// any wait; see [`Group::kill`].
    pub fn kill(&self) {
        kill_groups(&[&self.feeders, &self.group], None);
    }

    /// As [`kill`](Pool::kill), waiting at most `d` for them to die; true if all did.
    pub fn kill_timeout(&self, d: Duration) -> bool {
        kill_groups(&[&self.feeders, &self.group], Some(crate::hub::after(d)))
    }
}

/// What an `imap_unordered` iterator receives.
enum Report<T> {
    /// A task's outcome.
    Done(Result<T, Payload>),
    /// The feeder has ended, after spawning `spawned` tasks; `error`: the source panicked.
    End { spawned: usize, error: Option<Payload> },
}

/// Sends a task's outcome to its `imap_unordered` iterator, or a "killed" payload if the task
/// ended (or was dropped unstarted) without one.
struct Reporter<T> {
    q: Rc<Queue<Report<T>>>,
    sent: bool,
}

impl<T> Drop for Reporter<T> {
    fn drop(&mut self) {
        if !self.sent {
            // An unbounded put never waits, so it is safe while unwinding.
            let killed: Payload = Box::new("greenfiber: an imap_unordered task was killed");
            self.q.put(Report::Done(Err(killed)));
        }
    }
}

/// Lives in an `imap_unordered` feeder: reports how many tasks it spawned when it ends,
/// including by a kill.
struct FeedEnd<T> {
    q: Rc<Queue<Report<T>>>,
    spawned: usize,
    error: Option<Payload>,
}

impl<T> Drop for FeedEnd<T> {
    fn drop(&mut self) {
        // An unbounded put never waits, so it is safe while unwinding.
        self.q.put(Report::End { spawned: self.spawned, error: self.error.take() });
    }
}

/// The iterator of [`Pool::imap_unordered`]: results in the order the tasks finish.
///
/// Dropping it stops its feeder: no more items are read or spawned (the tasks already spawned
/// run on), so dropping an iterator over an endless source ends the work.
pub struct ImapUnordered<T> {
    results: Rc<Queue<Report<T>>>,
    received: usize,
    /// How many results there are in all, once the feeder has ended.
    total: Option<usize>,
    feeder: Greenlet<()>,
}

impl<T> Drop for ImapUnordered<T> {
    fn drop(&mut self) {
        self.feeder.send_kill();
    }
}

impl<T> Iterator for ImapUnordered<T> {
    type Item = T;

    /// Waits for the next task to finish; re-raises its panic, or the source's.
    fn next(&mut self) -> Option<T> {
        loop {
            if self.total == Some(self.received) {
                return None;
            }
            match self.results.get() {
                Report::Done(r) => {
                    self.received += 1;
                    return Some(r.unwrap_or_else(|p| resume_unwind(p)));
                }
                Report::End { spawned, error } => {
                    self.total = Some(spawned);
                    if let Some(p) = error {
                        resume_unwind(p);
                    }
                }
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match self.total {
            Some(t) => (t - self.received, Some(t - self.received)),
            None => (0, None),
        }
    }
}
