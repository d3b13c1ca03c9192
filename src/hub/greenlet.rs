//! `Greenlet<T>`: a spawned fiber and the handle to its outcome; `spawn`, `spawn_later`,
//! `joinall`, `killall`.

use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use super::park::{WaitList, Wake};
use super::scheduler;
use super::timers::TimerKey;
use super::unwind;
use crate::coroutine::{Coroutine, GreenletExit, LocalRc, current};
use crate::error::Error;

/// A handle to a spawned fiber and its outcome. Cheap to clone; `!Send`.
///
/// Dropping every handle does not stop the fiber: like gevent, a spawned fiber runs to its end
/// (use [`kill`](Greenlet::kill) to stop it).
///
/// A fiber belongs to the thread that spawned it:
///
/// ```compile_fail
/// let g = greenfiber::spawn(|| 1);
/// std::thread::spawn(move || g.join());
/// ```
pub struct Greenlet<T> {
    co: Coroutine,
    inner: LocalRc<Inner<T>>,
}

type Link<T> = Box<dyn FnOnce(&Greenlet<T>)>;

/// The outcome cell, shared by the handles and the fiber's own closure (which holds it until
/// the fiber ends; it does not hold the coroutine, so there is no cycle).
///
/// Kept small: every spawn writes it whole into its block, and past 128 bytes that was a
/// `memcpy` call (~35 instructions a fiber). What few fibers use lives in [`Rare`].
struct Inner<T> {
    /// How the fiber ended, once it has; kept when [`Greenlet::take`] takes the result.
    ended: Cell<Ended>,
    /// The fiber's slot in the hub's registry.
    slot: Cell<usize>,
    result: RefCell<Option<Result<T, Error>>>,
    joiners: WaitList,
    /// Links and the `spawn_later` timer, boxed on first use; taken by [`Inner::finish_as`].
    rare: Cell<Option<Box<Rare<T>>>>,
}

/// The part of a fiber's record that most fibers never use.
struct Rare<T> {
    /// Links in the order added, each with whether a joiner already waited when it was added
    /// (gevent runs links and joins in the order they were added).
    links: Vec<(bool, Link<T>)>,
    /// The `spawn_later` timer that starts it, until it fires or a kill cancels it.
    start: Option<TimerKey>,
}

impl<T> Inner<T> {
    /// Runs `f` on the rare part, boxing it first if need be. `f` must not reach this
    /// `Inner`'s rare part again (it is out of its cell meanwhile).
    fn with_rare<R>(&self, f: impl FnOnce(&mut Rare<T>) -> R) -> R {
        let mut rare =
            self.rare.take().unwrap_or_else(|| Box::new(Rare { links: Vec::new(), start: None }));
        let r = f(&mut rare);
        self.rare.set(Some(rare));
        r
    }

    /// Takes the `spawn_later` timer, if any (without boxing a rare part for it).
    fn take_start(&self) -> Option<TimerKey> {
        let mut rare = self.rare.take()?;
        let start = rare.start.take();
        self.rare.set(Some(rare));
        start
    }
}

/// Where a fiber is in its life, as its handles see it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ended {
    No,
    Returned,
    Failed,
}

/// Captured by a fiber's closure: if the closure is dropped before the fiber ran (a kill
/// before its start, through its `Greenlet` or its Layer 1 coroutine), the fiber ends as
/// killed all the same, so its joiners and links are not left waiting.
struct Unfinished<T: 'static>(Option<LocalRc<Inner<T>>>);

impl<T: 'static> Drop for Unfinished<T> {
    // Inlined: at a fiber's end the guard is already empty, and the drop then compiles away.
    #[inline]
    fn drop(&mut self) {
        if let Some(inner) = self.0.take() {
            Self::killed(inner);
        }
    }
}

impl<T: 'static> Unfinished<T> {
    #[cold]
    #[inline(never)]
    fn killed(inner: LocalRc<Inner<T>>) {
        // A `spawn_later` fiber killed before its start, whichever way (its `Greenlet` cancels
        // the timer itself; its Layer 1 coroutine does not): the start timer would hold the
        // coroutine until the deadline and make the hub wait for it. (Not while the timers
        // are borrowed: a start action dropped by the timers themselves has no timer left.)
        if let Some(k) = inner.take_start() {
            let start = scheduler::try_with(|hub| {
                hub.timers.try_borrow_mut().ok().and_then(|mut timers| timers.cancel(k))
            });
            drop(start);
        }
        Inner::finish(inner, Err(Error::Killed));
    }
}

impl<T> Clone for Greenlet<T> {
    fn clone(&self) -> Self {
        Greenlet { co: self.co.clone(), inner: self.inner.clone() }
    }
}

impl<T: 'static> std::fmt::Debug for Greenlet<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Greenlet")
            .field("coroutine", &self.co)
            .field("ready", &self.ready())
            .finish()
    }
}

/// Spawns a fiber running `f` and returns at once, without running it. Spawned fibers start in
/// spawn order when the spawner blocks or yields; their parent is the hub.
///
/// A panic in `f` is logged with `log::error!` (with the fiber's name and message) and kept
/// for [`Greenlet::get`]; it never reaches the hub or other fibers.
pub fn spawn<T: 'static>(f: impl FnOnce() -> T + 'static) -> Greenlet<T> {
    spawn_with(Coroutine::builder(), f)
}

/// [`spawn`] with a name, shown by `fibers()`, in logs and in the stack-overflow message.
pub fn spawn_named<T: 'static>(name: &str, f: impl FnOnce() -> T + 'static) -> Greenlet<T> {
    spawn_with(Coroutine::builder().name(name), f)
}

/// Spawns `f` to start after `delay` (gevent's `spawn_later`). Until then it is not started,
/// and a `kill` before the delay means it never runs.
pub fn spawn_later<T: 'static>(delay: Duration, f: impl FnOnce() -> T + 'static) -> Greenlet<T> {
    let g = spawn_with(Coroutine::builder(), f);
    // Take it off the ready queue until its timer fires: it waits on a timer of the hub.
    scheduler::with(|hub| {
        drop(hub.ready.remove_last(&g.co));
        let key = hub
            .timers
            .borrow_mut()
            .insert(super::time::after(delay), scheduler::TimerAction::Start(g.co.clone()));
        g.inner.with_rare(|r| r.start = Some(key));
    });
    g
}

/// Spawns with a configured coroutine builder (stack size, name). The builder's parent is
/// replaced: a fiber's parent is always the hub.
pub fn spawn_with<T: 'static>(
    builder: crate::coroutine::Builder,
    f: impl FnOnce() -> T + 'static,
) -> Greenlet<T> {
    let inner = LocalRc::new(Inner {
        ended: Cell::new(Ended::No),
        slot: Cell::new(usize::MAX),
        result: RefCell::new(None),
        joiners: WaitList::new(),
        rare: Cell::new(None),
    });
    let unfinished = Unfinished(Some(inner.clone()));
    // Two small hub accesses rather than one around it all: with the build inside, the
    // thread-local access stayed a call through the key (~15 instructions a spawn).
    let builder = scheduler::with(|hub| builder.parent(&hub.co));
    let co = builder.build(move |()| {
        let unfinished = unfinished;
        let r = catch_unwind(AssertUnwindSafe(f));
        Inner::end(unfinished, r);
    });
    scheduler::with(|hub| inner.slot.set(hub.add_fiber(&co)));
    Greenlet { co, inner }
}

impl<T: 'static> Inner<T> {
    /// The end of a fiber's closure, with what `f` returned or raised: the outcome, then
    /// [`finish_as`](Inner::finish_as). One call from the closure, with the common case — it
    /// returned, and no raise is held for any fiber — inlined in it.
    #[inline(never)]
    fn end(mut unfinished: Unfinished<T>, r: std::thread::Result<T>) {
        let r = match r {
            Ok(v) => {
                let this = unfinished.0.as_ref().expect("greenfiber: a fiber finished twice");
                // The registry's handle is the fiber's own coroutine (the running one), the
                // handle the links see; none without a hub (a fiber killed by a thread-local
                // destructor at thread exit).
                match scheduler::fiber_returned(this.slot.get()) {
                    Some(co) => {
                        let this = unfinished.0.take().expect("greenfiber: a fiber finished twice");
                        return Inner::finish_as(this, Ok(v), co);
                    }
                    None => Ok(v),
                }
            }
            r => r,
        };
        Self::end_slow(unfinished, r);
    }

    /// The end of a fiber that panicked or was killed, or of any while a raise is held. User
    /// code runs here (the logger): it may wait, and be killed meanwhile. So the fiber stays in
    /// the registry and `unfinished` stays armed until the outcome is known; a kill meanwhile
    /// unwinds from here, and `unfinished` records it.
    #[cold]
    #[inline(never)]
    fn end_slow(mut unfinished: Unfinished<T>, r: std::thread::Result<T>) {
        let me = current();
        // A kill a C caller swallowed (held.rs): the closure went on to its end, but the
        // fiber was killed.
        let killed = super::held::take_kill(&me);
        let outcome = match r {
            Ok(v) if !killed => Ok(v),
            r => Self::failed(r, killed, &me),
        };
        let this = unfinished.0.take().expect("greenfiber: a fiber finished twice");
        Inner::finish(this, outcome);
    }

    /// The outcome of a fiber that did not return, or was killed all the same.
    fn failed(r: std::thread::Result<T>, killed: bool, me: &Coroutine) -> Result<T, Error> {
        match r {
            // A panic after a swallowed kill is most likely the fiber's answer to the error
            // that kill gave it (`unwrap` of ECANCELED): it was killed all the same.
            Ok(_) | Err(_) if killed => {
                if let Err(p) = &r {
                    let msg = crate::error::panic_message(&**p);
                    log::warn!("fiber {me:?}, killed in a C caller, then panicked: {msg}");
                }
                Err(Error::Killed)
            }
            Ok(v) => Ok(v),
            Err(p) if p.is::<GreenletExit>() => Err(Error::Killed),
            Err(p) => {
                let e = Error::from_panic(me.name(), &*p);
                log::error!("fiber {me:?} panicked: {e}");
                Err(e)
            }
        }
    }

    /// Records the outcome of a fiber still in the hub's registry (one that never ran, see
    /// [`Unfinished`], or one ending the slow way): takes it out, then
    /// [`finish_as`](Inner::finish_as).
    fn finish(this: LocalRc<Inner<T>>, outcome: Result<T, Error>) {
        let co = scheduler::try_with(|hub| hub.fibers.borrow_mut().remove(this.slot.get()));
        Inner::finish_as(this, outcome, co.flatten());
    }

    /// Records the fiber's outcome, starts the links and wakes the joiners. `co` is the
    /// fiber's handle from the hub's registry, already taken out of it (`None` without a hub:
    /// then nothing runs the links).
    ///
    /// Links and joiners resume in the order they came: a link added before any joiner waited
    /// goes on the ready queue before the joiners, so if it does not block it has run by the
    /// time `join` returns (gevent's `test__order.py`; gevent's `join` is itself a link, run
    /// after those added before it); one added while a joiner waited, after them.
    #[inline(always)]
    fn finish_as(this: LocalRc<Inner<T>>, outcome: Result<T, Error>, co: Option<Coroutine>) {
        this.ended.set(if outcome.is_ok() { Ended::Returned } else { Ended::Failed });
        // The only store: `Unfinished` lets a fiber finish once. The old `None` is forgotten
        // rather than dropped, which spares the drop glue's checks.
        let old = this.result.replace(Some(outcome));
        debug_assert!(old.is_none(), "greenfiber: a fiber's outcome stored twice");
        std::mem::forget(old);
        match (this.rare.take(), co) {
            (Some(rare), Some(co)) if !rare.links.is_empty() => {
                Self::finish_links(&this, co, rare.links)
            }
            _ => {
                if !this.joiners.is_empty() {
                    this.joiners.notify_all();
                }
            }
        }
    }

    /// [`finish_as`](Inner::finish_as) for a fiber with links.
    #[cold]
    #[inline(never)]
    fn finish_links(this: &LocalRc<Inner<T>>, co: Coroutine, links: Vec<(bool, Link<T>)>) {
        let g = Greenlet { co, inner: this.clone() };
        let mut links = links.into_iter().peekable();
        while let Some((_, l)) = links.next_if(|(after, _)| !after) {
            start_link(&g, l);
        }
        this.joiners.notify_all();
        for (_, l) in links {
            start_link(&g, l);
        }
    }
}

/// Runs one link in a fiber of its own, as gevent's `SpawnedLink` runs each callback in a new
/// greenlet: a callback may block (a `put` into a full queue waits for room) without holding
/// back the links after it, which start in order.
fn start_link<T: 'static>(g: &Greenlet<T>, link: Link<T>) {
    let g = g.clone();
    spawn_named("link", move || {
        if let Err(p) = catch_unwind(AssertUnwindSafe(|| link(&g))) {
            if p.is::<GreenletExit>() {
                std::panic::resume_unwind(p); // this link's fiber is being killed
            }
            log::error!("a link callback panicked: {}", crate::error::panic_message(&*p));
        }
    });
}

impl<T: 'static> Greenlet<T> {
    /// Waits until the fiber has finished (returned, panicked or been killed).
    pub fn join(&self) {
        while !self.ready() {
            self.inner.joiners.wait("join", None);
        }
    }

    /// Waits at most `d`; true if the fiber has finished.
    pub fn join_timeout(&self, d: Duration) -> bool {
        self.join_deadline(Some(super::time::after(d)))
    }

    pub(crate) fn join_deadline(&self, deadline: Option<Instant>) -> bool {
        while !self.ready() {
            if self.inner.joiners.wait("join", deadline) == Wake::TimedOut {
                break;
            }
        }
        self.ready()
    }

    /// Waits for the fiber and returns its value, or the [`Error`] that ended it:
    /// [`Error::Panicked`] with the panic message, or [`Error::Killed`].
    pub fn get(&self) -> Result<T, Error>
    where
        T: Clone,
    {
        self.join();
        self.inner.result.borrow().clone().expect("greenfiber: the fiber's outcome was taken")
    }

    /// The outcome if the fiber has finished, taking it out of the handle (for `T: !Clone`).
    /// [`ready`](Greenlet::ready) and [`successful`](Greenlet::successful) still answer
    /// afterwards, and links still run; [`get`](Greenlet::get) then panics.
    pub fn take(&self) -> Option<Result<T, Error>> {
        self.inner.result.borrow_mut().take()
    }

    /// Kills the fiber: raises [`GreenletExit`] where it blocks (a sleep, a socket, a queue),
    /// removing it from that wait and unwinding its stack, and returns when it is dead. A
    /// fiber that has not started never runs. A no-op on a finished fiber.
    ///
    /// As in gevent, the hub raises the exit and the caller waits for the end like a
    /// [`join`](Greenlet::join): a [`with_timeout`](crate::with_timeout) around `kill` ends the
    /// wait if the fiber catches the exit and goes on blocking. Called from the hub itself, it
    /// raises the exit directly.
    ///
    /// A fiber that blocks inside a destructor while it unwinds (its cleanup sleeps, or writes
    /// a goodbye, after a first kill, a timeout or a panic) is not raised into there: Rust would
    /// abort the process for a panic leaving a destructor during an unwind. The kill waits
    /// until that unwind is over, and is raised then if the fiber still lives (usually it has
    /// died of the first); a `with_timeout` the cleanup itself sets still fires inside it. A
    /// fiber that kills itself, or a group it belongs to, from such a cleanup is not waited for
    /// (its own kill is kept the same way).
    /// (`hub/unwind.rs` says how a fiber is known to be unwinding, and the one case it misses.)
    ///
    /// The kill goes before fibers already woken and waiting to run: a victim woken by an
    /// `Event::set` (or a queue item handed to it) just before the kill dies at that wait
    /// without seeing the wake (an item handed to it goes back to its queue). gevent's hub, one
    /// FIFO queue for both, lets such a victim run on to its next wait first.
    ///
    /// A killed fiber is [`ready`](Greenlet::ready) but not
    /// [`successful`](Greenlet::successful), and `get()` returns `Err(Error::Killed)` (gevent
    /// returns a `GreenletExit` value instead; Rust has no such value of type `T`).
    ///
    /// In a thread-local destructor that runs after the thread's hub is gone, it does nothing:
    /// the fiber was abandoned with the hub and never runs again.
    pub fn kill(&self) {
        if scheduler::is_live() && self.co.is_started() && !self.ready() && self.co == current() {
            if unwind::look(&self.co) {
                // Unwinding already (a kill from its own cleanup), most likely.
                self.keep_own_kill();
                return;
            }
            unwind::raising(&self.co);
            std::panic::resume_unwind(Box::new(GreenletExit));
        }
        if self.send_kill() {
            self.join();
        }
    }

    /// Sends the kill without waiting for the end (gevent's `kill(block=False)`): true if the
    /// fiber is still to die. A fiber that has not started dies at once; one that runs
    /// (possibly the caller) gets the exit from the hub, at its blocking point.
    pub(crate) fn send_kill(&self) -> bool {
        if self.ready() {
            return false;
        }
        if !scheduler::is_live() {
            // Thread teardown, the hub gone (a thread-local destructor): the fiber was
            // abandoned with it and can never run again.
            log::debug!("greenfiber: kill of {:?} during thread teardown: left as it is", self.co);
            return false;
        }
        if unwind::is_dying_current(&self.co) {
            self.keep_own_kill();
            return false;
        }
        let co = &self.co;
        if !co.is_started() {
            // A `spawn_later` fiber: its timer would keep the coroutine until the deadline.
            if let Some(k) = self.inner.take_start() {
                let start = scheduler::with(|hub| hub.timers.borrow_mut().cancel(k));
                drop(start);
            }
            // Dropping its closure unstarted records the kill (`Unfinished`).
            co.kill();
            return false;
        }
        if scheduler::in_hub() {
            unwind::raising(co);
            co.kill_scheduled();
            return false;
        }
        // As gevent does: the hub raises GreenletExit in the victim, and the killer waits for
        // its end like any join, so a `with_timeout` around the kill can still interrupt it
        // (a victim that catches the exit may block for as long as it likes).
        let victim = co.clone();
        scheduler::with(|hub| {
            hub.callbacks.borrow_mut().push_back(Box::new(move || {
                if !victim.is_dead() {
                    unwind::raising(&victim);
                    victim.kill_scheduled();
                }
            }))
        });
        true
    }

    /// The running fiber kills itself while it may be unwinding: raising now could land in a
    /// destructor (park.rs rule 5), so the kill is kept like any raise that reaches such a
    /// fiber. If the fiber was indeed in its own cleanup, it dies of that unwind and the kept
    /// kill is dropped; if the mark was stale (it caught a raise while another fiber unwound),
    /// the hub raises it once nothing unwinds.
    fn keep_own_kill(&self) {
        scheduler::with(|hub| {
            hub.deferred.borrow_mut().push((self.co.clone(), Box::new(GreenletExit)));
        });
    }

    /// True once the fiber has finished, whatever the outcome.
    pub fn ready(&self) -> bool {
        self.inner.ended.get() != Ended::No
    }

    /// True if it finished by returning a value.
    pub fn successful(&self) -> bool {
        self.inner.ended.get() == Ended::Returned
    }

    /// Calls `f` once the fiber has finished — never inside `link` itself, even for a finished
    /// fiber — exactly once, in a new fiber of its own (as gevent's `link` does), so `f` may
    /// block without holding back other links. Links start in the order they were added; one
    /// added before any fiber waited in [`join`](Greenlet::join) starts before the joiners
    /// resume, so if it does not block it has run when `join` returns, as in gevent; one added
    /// while a fiber waited in `join`, after all the joiners (gevent orders each link against
    /// each join exactly; here a link only knows whether some join was under way when it was
    /// added). A panic in `f` is logged.
    pub fn link(&self, f: impl FnOnce(&Greenlet<T>) + 'static) {
        if self.ready() {
            start_link(self, Box::new(f));
        } else {
            let after_a_joiner = !self.inner.joiners.is_empty();
            let link: Link<T> = Box::new(f);
            self.inner.with_rare(|r| r.links.push((after_a_joiner, link)));
        }
    }

    /// The fiber's coroutine.
    pub fn coroutine(&self) -> &Coroutine {
        &self.co
    }
}

/// Waits until every fiber in `gs` has finished, or `timeout` has passed; returns how many
/// have finished.
pub fn joinall<T: 'static>(gs: &[Greenlet<T>], timeout: Option<Duration>) -> usize {
    let deadline = timeout.map(super::time::after);
    for g in gs {
        if !g.join_deadline(deadline) {
            // Timed out: the others may have finished meanwhile, or not.
            return gs.iter().filter(|g| g.ready()).count();
        }
    }
    // Each one finished (a fiber that has finished stays so): no second pass over their
    // records, which 100,000 fibers have pushed out of the cache.
    gs.len()
}

/// Kills every fiber in `gs` (see [`Greenlet::kill`]) and returns when they are dead. As in
/// gevent, every kill is sent before any wait: a fiber that survives its kill, or a
/// `with_timeout` around the call, does not spare the others. A caller that is one of `gs`
/// dies with the rest, once it waits.
pub fn killall<T: 'static>(gs: &[Greenlet<T>]) {
    if !scheduler::is_live() {
        return; // thread teardown, the hub gone: see `Greenlet::kill`
    }
    for g in gs {
        g.send_kill();
    }
    for g in gs {
        // The caller itself, in its own cleanup, is dying already: it cannot wait for that.
        if !unwind::is_dying_current(&g.co) {
            g.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn killing_a_spawn_later_fiber_through_its_coroutine_cancels_its_timer() {
        // Layer 1's kill drops the unstarted closure (`Unfinished`), not `Greenlet::kill`.
        let g = spawn_later(Duration::from_secs(3600), || 1);
        assert_eq!(scheduler::with(|hub| hub.timers.borrow().len()), 1);
        g.coroutine().kill();
        assert!(g.ready() && !g.successful());
        assert_eq!(scheduler::with(|hub| hub.timers.borrow().len()), 0, "start timer left");
    }

    #[test]
    fn killing_a_spawn_later_fiber_cancels_its_timer() {
        let gs: Vec<_> =
            (0..100).map(|i| spawn_later(Duration::from_secs(3600), move || i)).collect();
        assert_eq!(scheduler::with(|hub| hub.timers.borrow().len()), 100);
        killall(&gs);
        assert_eq!(scheduler::with(|hub| hub.timers.borrow().len()), 0);
        assert!(gs.iter().all(|g| g.ready() && !g.successful()));
        // One that did start is unaffected by the stale key.
        let g = spawn_later(Duration::ZERO, || 7);
        assert_eq!(g.get().unwrap(), 7);
        g.kill();
        assert_eq!(g.get().unwrap(), 7);
    }
}
