//! The hub's I/O driver: a mio [`Poll`] and a slab of registrations, each holding the waiters
//! parked on one file descriptor.
//!
//! This is a *driver* (see `design.md`, "drivers don't switch"): [`Reactor::poll`] only reports
//! *which* waiters became runnable, by moving them into a `Vec` the hub passes in. It never
//! switches, never performs the I/O operation itself, and knows nothing about fibers: the waiter
//! type `W` is opaque (the hub uses a fiber handle, the tests use integers).
//!
//! # Model
//!
//! Every source is registered once, for `READABLE | WRITABLE | PRIORITY`, and mio registers
//! edge-triggered: the kernel reports a *change* to ready, not a level. A registration keeps,
//! per [`Direction`], a FIFO list of waiters (usually one). An event moves *all* waiters of each
//! ready direction into `woken`: with edges, a waiter that is not woken might never see another
//! event, so a thundering herd (e.g. several fibers accepting on one listener) is the price of
//! never losing one. Error and hang-up readiness wake both directions, so the retried operation
//! surfaces the error; priority (TCP urgent data) counts as read readiness.
//!
//! # Read readiness
//!
//! A registration also remembers one thing about the read side, [`ReadState`], so that a stream
//! read that has just emptied the socket does not cost a second `recv` that can only say `EAGAIN`
//! (as tokio's `ScheduledIo` does). It sits in a [`ReadReadiness`] shared with the source's owner
//! ([`Reactor::readiness`]), so the read path checks and records a drain without looking the
//! registration up:
//!
//! | state     | meaning                                               | moved on by                  |
//! |-----------|-------------------------------------------------------|------------------------------|
//! | `Unknown` | an event may have come since the last drain: try      | [`ReadReadiness::mark_drained`] → `Drained` |
//! | `Drained` | a read emptied the receive queue and no read event has been polled since: park without trying | a polled read event → `Unknown` |
//! | `Sticky`  | read-closed, error or urgent data was reported, or the registration ended: always try | — (final) |
//!
//! Why `Drained` is safe: a TCP read that returns fewer bytes than asked found the receive
//! queue empty (not so for Unix streams, whose reads stop early at a message that carried file
//! descriptors or other credentials, so they never mark a drain), and *any* later arrival (data, FIN, RST) queues a new edge that a later
//! [`Reactor::poll`] reports, which moves the state back to `Unknown` (and wakes the waiter).
//! The caller marks the drain with no poll between the read and the mark (rule 1). What a short
//! read does *not* prove is covered by `Sticky`: a FIN or RST that arrived before the poll which
//! reported it (the read consumed the FIN with the data, and no further edge will come), and the
//! TCP urgent mark (a read stops short before it with data still queued), which the kernel
//! reports as priority readiness.
//!
//! # Rules for callers (the scheduler and `net/io.rs`)
//!
//! 1. **Try first, then wait.** An edge delivered while nobody waits in that direction wakes
//!    nobody (only the read side's [`ReadState`] remembers it). So a fiber must attempt the
//!    operation (or otherwise check the fd, e.g. with a zero-timeout `poll(2)`), and only on
//!    `WouldBlock` call [`Reactor::add_waiter`], *without switching in between*: any readiness
//!    after the failed attempt then produces an edge that a later [`Reactor::poll`] delivers to
//!    the waiter. The one exception: when [`ReadReadiness::is_ready`] says `false`, a reader may
//!    skip the attempt and wait at once; it must have called [`ReadReadiness::mark_drained`]
//!    right after the short read, again without switching in between.
//! 2. **A wake-up is a hint.** A waiter can be woken by an edge that happened before its attempt
//!    (the event was still queued), or for the other half of a shared registration's readiness
//!    (error/hang-up). The woken fiber retries and, on `WouldBlock`, waits again.
//! 3. **Leaving early.** A fiber killed or timed out while parked calls
//!    [`Reactor::remove_waiter`]; one woken by `poll` is no longer in the list.
//! 4. **Closing.** [`Reactor::deregister`] hands back the waiters still parked on the fd; the
//!    caller wakes them with an error. After that the [`Token`] is dead: its slot may be reused,
//!    but with a new generation, so a stale token is refused rather than aliased.
//!
//! # Owned sources and borrowed fds
//!
//! A source is registered either by its owner, once, for its whole life (the net layer's
//! sockets: [`Reactor::register`]), or as a *borrowed* fd, one the caller waits on but does not
//! own (the monkey layer's waits inside patched libc calls: [`Reactor::borrowed_fd`]), which
//! stays registered until [`Reactor::forget_fd`] — the fd may be closed and its number reused
//! behind the caller's back, so the caller tags each borrowed registration (monkey: the fd's
//! close generation) and a new tag replaces the old registration. The reactor keeps the
//! borrowed ones by fd, so that an owner taking over a borrowed fd (a std socket that patched
//! code used, handed to `TcpStream::from_std`) replaces its registration instead of failing
//! with `EEXIST`.
//!
//! # Fork
//!
//! A child made by `fork` inherits the parent's epoll instance: the same kernel object, whose
//! entries are keyed by open file, which the child's copies of the fds share with the parent's.
//! Left alone, a child that drops an inherited socket would remove the *parent's* entry
//! (`EPOLL_CTL_DEL`), and a child that polls would take the parent's edges. So every operation
//! that touches epoll first checks the process's fork count ([`FORKS`], bumped in each child by
//! a `pthread_atfork` handler): a reactor made before the fork *renews* itself in the child —
//! a new epoll instance, every live registration added to it under its old token, a fresh
//! eventfd under the waker's fd number (signalled once, for wake-ups the parent's eventfd
//! took), the inherited epoll fd closed — and the parent's set is never touched. (gevent's `reinit` after `fork` does the same for its loop.) Read states go
//! back to `Unknown`: adding an fd to an epoll set reports the readiness it has then.
//!
//! # Tokens
//!
//! A token packs a slab index (low half of a `usize`) and that slot's generation (high half).
//! [`WAKER_TOKEN`] (`usize::MAX`) is reserved for the [`Waker`] that `remote.rs` uses and never
//! names a registration.
//!
//! | slot state          | token generation | `add_waiter` / `remove_waiter` / `deregister` |
//! |---------------------|------------------|-----------------------------------------------|
//! | registered          | equal            | act on the slot                               |
//! | registered (reused) | older            | refused: `Err(w)` / `false` / `NotFound`      |
//! | free                | any              | refused: `Err(w)` / `false` / `NotFound`      |

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

/// The token of the cross-thread [`Waker`]; never a registration's token.
pub(crate) const WAKER_TOKEN: Token = Token(usize::MAX);

/// How many times this process is a forked child: bumped in the child, right after each
/// `fork`, by the handler [`watch_forks`] installs. See "Fork" in the module docs.
static FORKS: AtomicU64 = AtomicU64::new(0);

/// The `pthread_atfork` child handler. It runs in the child right after `fork`, where only
/// async-signal-safe work is allowed: one atomic add, which cannot panic.
extern "C" fn forked_child() {
    FORKS.fetch_add(1, Ordering::Relaxed);
}

/// Installs [`forked_child`] once per process.
fn watch_forks() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // SAFETY: `forked_child` is an `extern "C" fn()` that stays valid for the life of the
        // process and does only async-signal-safe work; no prepare or parent handler is given.
        let r = unsafe { libc::pthread_atfork(None, None, Some(forked_child)) };
        if r != 0 {
            log::warn!("reactor: pthread_atfork failed ({r}): a forked child must not use the hub");
        }
    });
}

/// Wakes the reactor's [`poll`](Reactor::poll) from any thread: an eventfd registered under
/// [`WAKER_TOKEN`], edge-triggered, so every write that finds the counter below its maximum is
/// a new edge. Ours rather than mio's so that a forked child can give it a fresh eventfd under
/// the same fd number (see "Fork"), which the [`Arc`]s already handed out then use.
#[derive(Debug)]
pub(crate) struct Waker {
    fd: OwnedFd,
}

impl Waker {
    fn new() -> io::Result<Waker> {
        Ok(Waker { fd: new_eventfd()? })
    }

    /// Makes the reactor's next (or current) `poll` return `Ok(true)`.
    pub(crate) fn wake(&self) -> io::Result<()> {
        let one = 1u64.to_ne_bytes();
        loop {
            // SAFETY: writes 8 bytes from `one`, which lives across the call, to our eventfd.
            let n = unsafe { libc::write(self.fd.as_raw_fd(), one.as_ptr().cast(), 8) };
            if n == 8 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                // The counter is at its maximum: the hub has a wake-up queued but not yet
                // polled. Empty the counter and write again, for a new edge.
                io::ErrorKind::WouldBlock => {
                    let mut buf = [0u8; 8];
                    // SAFETY: reads at most 8 bytes into `buf`, which lives across the call.
                    unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), 8) };
                }
                _ => return Err(e),
            }
        }
    }

    /// In a forked child: puts a fresh eventfd under this waker's fd number, so that the
    /// child's wakes no longer signal the parent's (inherited) eventfd.
    fn renew(&self) -> io::Result<()> {
        let fresh = new_eventfd()?;
        // SAFETY: `dup3` replaces our own fd (owned by `self.fd`, which stays the owner of the
        // number) with a duplicate of `fresh`; both fds are open and ours.
        let r = unsafe { libc::dup3(fresh.as_raw_fd(), self.fd.as_raw_fd(), libc::O_CLOEXEC) };
        if r < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
    }
}

/// A non-blocking, close-on-exec eventfd.
fn new_eventfd() -> io::Result<OwnedFd> {
    // SAFETY: `eventfd` takes no pointers.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// What every registration asks for (edge-triggered: mio registers so).
const INTEREST: Interest = Interest::READABLE.add(Interest::WRITABLE).add(Interest::PRIORITY);

/// How many events one `epoll_wait` may return; more wait for the next poll.
const EVENTS_CAPACITY: usize = 1024;

const INDEX_BITS: u32 = usize::BITS / 2;
const INDEX_MASK: usize = (1 << INDEX_BITS) - 1;
/// Slab indices stay below this, so no registration token can equal [`WAKER_TOKEN`].
const MAX_SLOTS: usize = INDEX_MASK;

/// Which readiness a waiter waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    /// Readable, read-closed, error or hang-up.
    Read,
    /// Writable, write-closed, error or hang-up.
    Write,
}

/// What the reactor knows about a source's read side; see "Read readiness" in the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReadState {
    /// A read event may have come since the last drain: a reader tries.
    Unknown,
    /// A read emptied the receive queue and no read event was polled since: a reader parks.
    Drained,
    /// Read-closed, error or urgent data was reported: a reader always tries (final).
    Sticky,
}

/// A registration's [`ReadState`], shared by the reactor (which undoes a drain when it polls a
/// read event) and the source's owner (which checks for a drain before reading and records one
/// after a short read). Once the registration ends it says "ready" for good (`Sticky`), as a
/// stale token does: the owner's attempt then reports whatever the fd says.
#[derive(Clone, Debug)]
pub(crate) struct ReadReadiness(Rc<Cell<ReadState>>);

impl ReadReadiness {
    fn new(state: ReadState) -> ReadReadiness {
        ReadReadiness(Rc::new(Cell::new(state)))
    }

    /// False if a read is known to find nothing: the last read emptied the socket
    /// ([`mark_drained`](Self::mark_drained)) and no read event was polled since.
    #[inline]
    pub(crate) fn is_ready(&self) -> bool {
        self.0.get() != ReadState::Drained
    }

    /// Records that a stream read just returned fewer bytes than asked, so the receive queue
    /// was empty. Call it with no poll (no switch) since that read returned (rule 1). Has no
    /// effect once read-closed, an error or urgent data was reported, or the registration ended.
    #[inline]
    pub(crate) fn mark_drained(&self) {
        self.advance(ReadState::Unknown, ReadState::Drained);
    }

    /// Forgets a drain: the next read tries (after an operation such as `shutdown` that may
    /// make a read return at once without an event being polled first).
    #[inline]
    pub(crate) fn mark_unknown(&self) {
        self.advance(ReadState::Drained, ReadState::Unknown);
    }

    /// Moves the state from `from` to `to`; any other state (`Sticky`) is left as it is.
    #[inline]
    fn advance(&self, from: ReadState, to: ReadState) {
        if self.0.get() == from {
            self.0.set(to);
        }
    }
}

/// The FIFO of waiters parked on one direction of a source: almost always one (a socket's one
/// reader or writer), which is kept inline, so parking and waking it cost no ring-buffer
/// bookkeeping. Invariant: `first` is `None` only if `rest` is empty.
#[derive(Debug)]
struct Waiters<W> {
    first: Option<W>,
    rest: VecDeque<W>,
}

impl<W> Waiters<W> {
    fn new() -> Waiters<W> {
        Waiters { first: None, rest: VecDeque::new() }
    }

    fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.len()
    }

    #[inline]
    fn push_back(&mut self, w: W) {
        if self.first.is_none() {
            self.first = Some(w);
        } else {
            self.rest.push_back(w);
        }
    }

    #[inline]
    fn pop_front(&mut self) -> Option<W> {
        let w = self.first.take()?;
        if !self.rest.is_empty() {
            self.first = self.rest.pop_front();
        }
        Some(w)
    }

    /// Takes out the first waiter equal to `w`; false if there is none.
    fn remove(&mut self, w: &W) -> bool
    where
        W: PartialEq,
    {
        if self.first.as_ref() == Some(w) {
            self.pop_front();
            return true;
        }
        match self.rest.iter().position(|x| x == w) {
            Some(i) => {
                self.rest.remove(i);
                true
            }
            None => false,
        }
    }

    /// Moves every waiter into `out`, in order.
    fn drain_into(&mut self, out: &mut Vec<W>) {
        while let Some(w) = self.pop_front() {
            out.push(w);
        }
    }
}

/// The waiters parked on one registered source.
#[derive(Debug)]
struct Registration<W> {
    /// The registered descriptor (borrowed: the source's owner closes it).
    fd: RawFd,
    readers: Waiters<W>,
    writers: Waiters<W>,
    read: ReadReadiness,
}

impl<W> Registration<W> {
    fn list(&mut self, dir: Direction) -> &mut Waiters<W> {
        match dir {
            Direction::Read => &mut self.readers,
            Direction::Write => &mut self.writers,
        }
    }
}

#[derive(Debug)]
struct Slot<W> {
    /// Bumped each time the slot is freed, so old tokens stop matching.
    generation: usize,
    reg: Option<Registration<W>>,
}

/// mio `Poll` plus the waiters parked on each registered source; see the module docs.
pub(crate) struct Reactor<W> {
    poll: Poll,
    events: Events,
    slots: Vec<Slot<W>>,
    /// Indices of free slots, reused last-freed first.
    free: Vec<usize>,
    /// The borrowed fds registered, with their tokens and their callers' tags.
    borrowed: HashMap<RawFd, (Token, u32)>,
    waker: Arc<Waker>,
    /// [`FORKS`] when `poll` was made: another value means this is a forked child's copy.
    forks: u64,
}

impl<W> std::fmt::Debug for Reactor<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reactor")
            .field("registrations", &(self.slots.len() - self.free.len()))
            .finish_non_exhaustive()
    }
}

impl<W> Reactor<W> {
    /// A new epoll instance with its cross-thread [`Waker`] registered under [`WAKER_TOKEN`].
    pub(crate) fn new() -> io::Result<Self> {
        watch_forks();
        let forks = FORKS.load(Ordering::Relaxed);
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new()?);
        poll.registry().register(
            &mut SourceFd(&waker.fd.as_raw_fd()),
            WAKER_TOKEN,
            Interest::READABLE,
        )?;
        Ok(Reactor {
            poll,
            events: Events::with_capacity(EVENTS_CAPACITY),
            slots: Vec::new(),
            free: Vec::new(),
            borrowed: HashMap::new(),
            waker,
            forks,
        })
    }

    /// The epoll instance, renewed first if this is a forked child's copy (see "Fork").
    #[inline]
    fn epoll(&mut self) -> io::Result<&Poll> {
        if FORKS.load(Ordering::Relaxed) != self.forks {
            self.renew()?;
        }
        Ok(&self.poll)
    }

    /// See "Fork" in the module docs. The inherited epoll fd is closed only once the new set is
    /// complete; an fd that cannot be added (closed behind the reactor's back) is logged, and
    /// its readers always try from then on.
    #[cold]
    #[inline(never)]
    fn renew(&mut self) -> io::Result<()> {
        let poll = Poll::new()?;
        self.waker.renew()?;
        let registry = poll.registry();
        registry.register(
            &mut SourceFd(&self.waker.fd.as_raw_fd()),
            WAKER_TOKEN,
            Interest::READABLE,
        )?;
        for (index, slot) in self.slots.iter().enumerate() {
            let Some(reg) = &slot.reg else { continue };
            let token = Token(index | (slot.generation << INDEX_BITS));
            if let Err(e) = registry.register(&mut SourceFd(&reg.fd), token, INTEREST) {
                log::warn!("reactor: fd {} not carried into the forked child: {e}", reg.fd);
                reg.read.0.set(ReadState::Sticky);
            } else {
                reg.read.mark_unknown();
            }
        }
        log::debug!("reactor: renewed in a forked child ({} registrations)", self.len());
        self.poll = poll;
        self.forks = FORKS.load(Ordering::Relaxed);
        // The inbox the child inherited may hold ids whose wake-up went to the parent's
        // eventfd; `Remote::wake` signals only an empty inbox, so without this first wake-up
        // the child would never drain it, nor hear any later wake.
        self.waker.wake()
    }

    /// The waker that makes [`poll`](Self::poll) return `Ok(true)`; `remote.rs` wraps it.
    pub(crate) fn waker(&self) -> Arc<Waker> {
        self.waker.clone()
    }

    /// Number of live registrations.
    pub(crate) fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Registers `source`, owned by the caller, for both directions (and priority),
    /// edge-triggered, with no waiters yet. If its fd is registered as borrowed, that
    /// registration ends first and its waiters go into `parked` for the caller to wake.
    pub(crate) fn register(
        &mut self,
        source: &impl AsRawFd,
        parked: &mut Vec<W>,
    ) -> io::Result<Token> {
        let fd = source.as_raw_fd();
        if !self.borrowed.is_empty() {
            self.forget_fd(fd, parked);
        }
        self.add(fd)
    }

    /// Adds `fd` to the epoll set under a new slot. By its number, not through mio's `Source`
    /// of the owner: a forked child adds it again by number (see "Fork"), and mio's debug
    /// build would then refuse the owner's deregistration from a set it did not register with.
    fn add(&mut self, fd: RawFd) -> io::Result<Token> {
        self.epoll()?;
        let index = match self.free.pop() {
            Some(i) => i,
            None if self.slots.len() < MAX_SLOTS => {
                self.slots.push(Slot { generation: 0, reg: None });
                self.slots.len() - 1
            }
            None => return Err(io::Error::other("greenfiber: too many registered sources")),
        };
        let slot = &mut self.slots[index];
        slot.reg = Some(Registration {
            fd,
            readers: Waiters::new(),
            writers: Waiters::new(),
            read: ReadReadiness::new(ReadState::Unknown),
        });
        let token = Token(index | (slot.generation << INDEX_BITS));
        if let Err(e) = self.poll.registry().register(&mut SourceFd(&fd), token, INTEREST) {
            self.free_slot(index);
            return Err(e);
        }
        Ok(token)
    }

    /// The token of the borrowed fd `fd` registered with `tag`, registering it if it is not,
    /// or was with another tag (that registration ends: its waiters go into `parked`).
    pub(crate) fn borrowed_fd(
        &mut self,
        fd: RawFd,
        tag: u32,
        parked: &mut Vec<W>,
    ) -> io::Result<Token> {
        if let Some(&(token, t)) = self.borrowed.get(&fd) {
            if t == tag {
                return Ok(token);
            }
            self.forget_fd(fd, parked);
        }
        let token = self.add(fd)?;
        self.borrowed.insert(fd, (token, tag));
        Ok(token)
    }

    /// Ends the registration of the borrowed fd `fd`, if it has one (true), moving its waiters
    /// into `parked`. Call it before `fd` is closed; if it was closed already (by another
    /// thread), the kernel has dropped it from the epoll set and only the slot is freed.
    pub(crate) fn forget_fd(&mut self, fd: RawFd, parked: &mut Vec<W>) -> bool {
        let Some((token, _)) = self.borrowed.remove(&fd) else { return false };
        if let Err(e) = self.deregister(token, parked) {
            log::debug!("reactor: forgetting borrowed fd {fd}: {e}");
        }
        true
    }

    /// Removes `source`, moving the waiters still parked on it into `parked` (readers first, then
    /// writers) so the caller can wake them with an error. The slot is freed even if the OS
    /// refuses (e.g. the fd was already closed); that error is returned afterwards. A stale or
    /// unknown `token` gives `NotFound` and touches nothing.
    pub(crate) fn deregister(&mut self, token: Token, parked: &mut Vec<W>) -> io::Result<()> {
        if self.get(token).is_none() {
            return Err(io::Error::new(io::ErrorKind::NotFound, "greenfiber: stale reactor token"));
        }
        // A forked child renews first: the DEL must go to its own set, not the parent's.
        let renewed = self.epoll().map(drop);
        let Some(mut reg) = self.get_mut(token).and_then(|s| s.reg.take()) else {
            unreachable!("checked above");
        };
        let n = reg.readers.len() + reg.writers.len();
        if n > 0 {
            log::debug!("reactor: deregistering {token:?} with {n} parked waiter(s)");
        }
        reg.readers.drain_into(parked);
        reg.writers.drain_into(parked);
        // The owner's handle outlives the registration: from now on its reads always try.
        reg.read.0.set(ReadState::Sticky);
        self.free_slot(token.0 & INDEX_MASK);
        renewed?;
        self.poll.registry().deregister(&mut SourceFd(&reg.fd))
    }

    /// Parks `w` on `token` for `dir`, behind any earlier waiters. Hands `w` back if `token` is
    /// stale (the source was deregistered). See rule 1: call it right after a `WouldBlock`.
    pub(crate) fn add_waiter(&mut self, token: Token, dir: Direction, w: W) -> Result<(), W> {
        match self.reg_mut(token) {
            Some(reg) => {
                reg.list(dir).push_back(w);
                Ok(())
            }
            None => Err(w),
        }
    }

    /// Takes back the first waiter equal to `w` (a fiber that was killed or timed out while
    /// parked). `false` if it is not there: already woken, or the token is stale.
    pub(crate) fn remove_waiter(&mut self, token: Token, dir: Direction, w: &W) -> bool
    where
        W: PartialEq,
    {
        self.reg_mut(token).is_some_and(|r| r.list(dir).remove(w))
    }

    /// The read readiness of `token`'s registration, for its owner to keep (see "Read
    /// readiness"); for a stale token, one that is always ready.
    pub(crate) fn readiness(&self, token: Token) -> ReadReadiness {
        match self.get(token) {
            Some(reg) => reg.read.clone(),
            None => ReadReadiness::new(ReadState::Sticky),
        }
    }

    /// How many waiters are parked on `token` for `dir`; `None` for a stale token.
    pub(crate) fn waiters(&self, token: Token, dir: Direction) -> Option<usize> {
        let reg = self.get(token)?;
        Some(match dir {
            Direction::Read => reg.readers.len(),
            Direction::Write => reg.writers.len(),
        })
    }

    /// Waits up to `timeout` (`None`: forever) for events, then moves the waiters of every ready
    /// direction into `woken`, in event order and FIFO within one list. `EINTR` is retried with
    /// the remaining time. Returns `true` if the [`waker`](Self::waker) fired, in which case the
    /// hub must drain its `Remote` (that is what lets `Remote::wake` skip redundant syscalls).
    pub(crate) fn poll(
        &mut self,
        timeout: Option<Duration>,
        woken: &mut Vec<W>,
    ) -> io::Result<bool> {
        // A timeout too large to add to now is as good as none.
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut timeout = deadline.and(timeout);
        self.epoll()?;
        loop {
            match self.poll.poll(&mut self.events, timeout) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
                }
                Err(e) => return Err(e),
            }
        }

        let mut remote = false;
        for event in self.events.iter() {
            let token = event.token();
            if token == WAKER_TOKEN {
                remote = true;
                continue;
            }
            let failed = event.is_error();
            let sticky = failed || event.is_read_closed() || event.is_priority();
            let read = sticky || event.is_readable();
            let write = failed || event.is_writable() || event.is_write_closed();
            let index = token.0 & INDEX_MASK;
            let Some(reg) = self
                .slots
                .get_mut(index)
                .filter(|s| s.generation == token.0 >> INDEX_BITS)
                .and_then(|s| s.reg.as_mut())
            else {
                // Cannot happen: deregistration runs between polls, and epoll stops reporting a
                // descriptor once it is removed.
                log::warn!("reactor: event for unknown {token:?}");
                continue;
            };
            if sticky {
                reg.read.0.set(ReadState::Sticky);
            } else if read {
                reg.read.mark_unknown();
            }
            if read {
                reg.readers.drain_into(woken);
            }
            if write {
                reg.writers.drain_into(woken);
            }
            log::trace!("reactor: {token:?} read={read} write={write} error={failed}");
        }
        Ok(remote)
    }

    fn get(&self, token: Token) -> Option<&Registration<W>> {
        let slot = self.slots.get(token.0 & INDEX_MASK)?;
        slot.reg.as_ref().filter(|_| slot.generation == token.0 >> INDEX_BITS)
    }

    fn get_mut(&mut self, token: Token) -> Option<&mut Slot<W>> {
        self.slots
            .get_mut(token.0 & INDEX_MASK)
            .filter(|s| s.reg.is_some() && s.generation == token.0 >> INDEX_BITS)
    }

    fn reg_mut(&mut self, token: Token) -> Option<&mut Registration<W>> {
        self.get_mut(token).and_then(|s| s.reg.as_mut())
    }

    fn free_slot(&mut self, index: usize) {
        let slot = &mut self.slots[index];
        slot.reg = None;
        slot.generation = (slot.generation + 1) & (usize::MAX >> INDEX_BITS);
        self.free.push(index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;

    /// Polls until `woken` is non-empty or ten seconds pass (a hang guard, not a timing assert).
    fn poll_until_woken(r: &mut Reactor<u32>) -> Vec<u32> {
        let mut woken = Vec::new();
        let give_up = Instant::now() + Duration::from_secs(10);
        while woken.is_empty() && Instant::now() < give_up {
            r.poll(Some(Duration::from_millis(100)), &mut woken).unwrap();
        }
        woken
    }

    fn poll_now(r: &mut Reactor<u32>) -> Vec<u32> {
        let mut woken = Vec::new();
        r.poll(Some(Duration::ZERO), &mut woken).unwrap();
        woken
    }

    #[test]
    fn poll_zero_returns_with_nothing() {
        let mut r = Reactor::<u32>::new().unwrap();
        let mut woken = Vec::new();
        assert!(!r.poll(Some(Duration::ZERO), &mut woken).unwrap());
        assert!(woken.is_empty());
    }

    #[test]
    fn read_waiter_woken_exactly_once() {
        let mut r = Reactor::new().unwrap();
        let (mut a, mut b) = mio::net::UnixStream::pair().unwrap();
        let ta = r.register(&a, &mut Vec::new()).unwrap();
        r.add_waiter(ta, Direction::Read, 1).unwrap();
        // Registration reports the socket writable; nobody waits for that, so nothing wakes.
        assert_eq!(poll_now(&mut r), []);
        assert_eq!(r.waiters(ta, Direction::Read), Some(1));

        b.write_all(b"x").unwrap();
        assert_eq!(poll_until_woken(&mut r), [1]);
        assert_eq!(r.waiters(ta, Direction::Read), Some(0));
        b.write_all(b"y").unwrap(); // a new edge, but nobody waits any more
        assert_eq!(poll_now(&mut r), []);

        let mut buf = [0; 8];
        assert_eq!(a.read(&mut buf).unwrap(), 2);
        let mut parked = Vec::new();
        r.deregister(ta, &mut parked).unwrap();
        assert!(parked.is_empty());
    }

    #[test]
    fn removed_waiter_is_not_woken_and_all_others_are_fifo() {
        let mut r = Reactor::new().unwrap();
        let (a, mut b) = mio::net::UnixStream::pair().unwrap();
        let ta = r.register(&a, &mut Vec::new()).unwrap();
        assert_eq!(poll_now(&mut r), []);
        for w in [1, 2, 3] {
            r.add_waiter(ta, Direction::Read, w).unwrap();
        }
        assert!(r.remove_waiter(ta, Direction::Read, &2));
        assert!(!r.remove_waiter(ta, Direction::Read, &2));
        assert!(!r.remove_waiter(ta, Direction::Write, &1));

        b.write_all(b"x").unwrap();
        assert_eq!(poll_until_woken(&mut r), [1, 3]);
    }

    #[test]
    fn deregister_returns_parked_waiters_and_kills_the_token() {
        let mut r = Reactor::new().unwrap();
        let (a, _b) = mio::net::UnixStream::pair().unwrap();
        let ta = r.register(&a, &mut Vec::new()).unwrap();
        r.add_waiter(ta, Direction::Write, 2).unwrap();
        r.add_waiter(ta, Direction::Read, 1).unwrap();
        let mut parked = Vec::new();
        r.deregister(ta, &mut parked).unwrap();
        assert_eq!(parked, [1, 2]);
        assert_eq!(r.len(), 0);

        assert_eq!(r.add_waiter(ta, Direction::Read, 3), Err(3));
        assert!(!r.remove_waiter(ta, Direction::Read, &1));
        assert_eq!(r.waiters(ta, Direction::Read), None);
        let err = r.deregister(ta, &mut parked).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);

        // The slot is reused under a new generation; the old token still does not alias it.
        let ta2 = r.register(&a, &mut Vec::new()).unwrap();
        assert_eq!(ta2.0 & INDEX_MASK, ta.0 & INDEX_MASK);
        assert_ne!(ta2, ta);
        assert_eq!(r.add_waiter(ta, Direction::Read, 4), Err(4));
        assert_eq!(r.add_waiter(ta2, Direction::Read, 5), Ok(()));
        // Nothing was pending on the old registration; the event was not misrouted.
        assert_eq!(poll_now(&mut r), []);
    }

    #[test]
    fn hang_up_wakes_both_directions() {
        let mut r = Reactor::new().unwrap();
        let (a, b) = mio::net::UnixStream::pair().unwrap();
        let ta = r.register(&a, &mut Vec::new()).unwrap();
        assert_eq!(poll_now(&mut r), []); // the initial writable edge
        r.add_waiter(ta, Direction::Read, 1).unwrap();
        r.add_waiter(ta, Direction::Write, 2).unwrap();
        drop(b);
        let mut woken = poll_until_woken(&mut r);
        woken.sort();
        assert_eq!(woken, [1, 2]);
    }

    #[test]
    fn listener_accept_readiness() {
        let mut r = Reactor::new().unwrap();
        let l = mio::net::TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let tl = r.register(&l, &mut Vec::new()).unwrap();
        r.add_waiter(tl, Direction::Read, 7).unwrap();
        assert_eq!(poll_now(&mut r), []);
        let _c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        assert_eq!(poll_until_woken(&mut r), [7]);
        assert!(l.accept().is_ok());
    }

    #[test]
    fn a_borrowed_fd_keeps_its_token_until_its_tag_changes_or_it_is_forgotten() {
        let mut r = Reactor::new().unwrap();
        let (reader, mut writer) = std::io::pipe().unwrap();
        let fd = reader.as_raw_fd();
        let mut parked = Vec::new();
        let t = r.borrowed_fd(fd, 1, &mut parked).unwrap();
        assert_eq!(r.borrowed_fd(fd, 1, &mut parked).unwrap(), t);
        r.add_waiter(t, Direction::Read, 9).unwrap();
        assert_eq!(poll_now(&mut r), []);
        writer.write_all(b"z").unwrap();
        assert_eq!(poll_until_woken(&mut r), [9]);
        // A new tag (the fd number was closed and reused): a new registration, and whoever
        // waited on the old one is handed back.
        r.add_waiter(t, Direction::Read, 10).unwrap();
        let t2 = r.borrowed_fd(fd, 2, &mut parked).unwrap();
        assert_ne!(t2, t);
        assert_eq!(parked, [10]);
        assert_eq!(r.len(), 1);
        assert!(r.forget_fd(fd, &mut parked));
        assert!(!r.forget_fd(fd, &mut parked));
        assert_eq!(r.len(), 0);
    }

    #[test]
    fn an_owner_takes_over_a_borrowed_fd_and_its_waiters_are_handed_back() {
        let mut r = Reactor::new().unwrap();
        let (a, mut b) = mio::net::UnixStream::pair().unwrap();
        let mut parked = Vec::new();
        let t = r.borrowed_fd(a.as_raw_fd(), 1, &mut parked).unwrap();
        r.add_waiter(t, Direction::Read, 3).unwrap();
        let ta = r.register(&a, &mut parked).unwrap();
        assert_eq!(parked, [3]);
        assert_eq!(r.len(), 1);
        assert!(!r.forget_fd(a.as_raw_fd(), &mut parked), "no longer borrowed");
        r.add_waiter(ta, Direction::Read, 4).unwrap();
        b.write_all(b"z").unwrap();
        assert_eq!(poll_until_woken(&mut r), [4]);
        // An fd its owner registered twice is still an error.
        assert!(r.register(&a, &mut parked).is_err());
    }

    /// Polls until `h` is read-ready or ten seconds pass (a hang guard, not a timing assert).
    fn poll_until_read_ready(r: &mut Reactor<u32>, h: &ReadReadiness) -> bool {
        let give_up = Instant::now() + Duration::from_secs(10);
        while !h.is_ready() && Instant::now() < give_up {
            r.poll(Some(Duration::from_millis(100)), &mut Vec::new()).unwrap();
        }
        h.is_ready()
    }

    #[test]
    fn drained_until_a_read_event_is_polled_even_with_nobody_waiting() {
        let mut r = Reactor::<u32>::new().unwrap();
        let (a, mut b) = mio::net::UnixStream::pair().unwrap();
        let ta = r.register(&a, &mut Vec::new()).unwrap();
        let h = r.readiness(ta);
        assert!(h.is_ready(), "a new registration is not known to be drained");
        h.mark_drained();
        assert!(!h.is_ready());
        assert!(!r.readiness(ta).is_ready(), "one state, shared");
        // The registration's first event says writable only: it does not undo the drain.
        assert_eq!(poll_now(&mut r), []);
        assert!(!h.is_ready());

        b.write_all(b"x").unwrap();
        assert!(poll_until_read_ready(&mut r, &h), "a read event undoes the drain");
        // Drained again, then the data comes while a reader waits: it is woken as before.
        h.mark_drained();
        r.add_waiter(ta, Direction::Read, 1).unwrap();
        b.write_all(b"y").unwrap();
        assert_eq!(poll_until_woken(&mut r), [1]);
        assert!(h.is_ready());
    }

    #[test]
    fn mark_unknown_undoes_a_drain_and_stale_tokens_are_ready() {
        let mut r = Reactor::<u32>::new().unwrap();
        let (a, _b) = mio::net::UnixStream::pair().unwrap();
        let ta = r.register(&a, &mut Vec::new()).unwrap();
        let h = r.readiness(ta);
        h.mark_drained();
        h.mark_unknown();
        assert!(h.is_ready());

        h.mark_drained();
        r.deregister(ta, &mut Vec::new()).unwrap();
        // The registration ended: the attempt runs and reports whatever the fd says.
        assert!(h.is_ready());
        h.mark_drained();
        assert!(h.is_ready());
        assert!(r.readiness(ta).is_ready(), "a stale token is ready");
        let ta2 = r.register(&a, &mut Vec::new()).unwrap();
        assert!(r.readiness(ta2).is_ready(), "a reused slot starts unknown");
        assert!(h.is_ready(), "the old handle is not the new registration's");
    }

    #[test]
    fn read_closed_is_sticky() {
        let mut r = Reactor::<u32>::new().unwrap();
        let (mut a, mut b) = mio::net::UnixStream::pair().unwrap();
        let ta = r.register(&a, &mut Vec::new()).unwrap();
        let h = r.readiness(ta);
        assert_eq!(poll_now(&mut r), []);
        // Data and EOF before the poll: a read may take both, and no event will follow.
        b.write_all(b"bye").unwrap();
        drop(b);
        r.add_waiter(ta, Direction::Read, 1).unwrap();
        assert_eq!(poll_until_woken(&mut r), [1]);
        let mut buf = [0; 8];
        assert_eq!(a.read(&mut buf).unwrap(), 3);
        h.mark_drained();
        assert!(h.is_ready(), "after read-closed a reader always tries");
        assert_eq!(a.read(&mut buf).unwrap(), 0);
    }

    #[test]
    fn tcp_urgent_data_is_read_readiness_and_sticky() {
        let mut r = Reactor::<u32>::new().unwrap();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        s.set_nonblocking(true).unwrap();
        let s = mio::net::TcpStream::from_std(s);
        let ts = r.register(&s, &mut Vec::new()).unwrap();
        let h = r.readiness(ts);
        assert_eq!(poll_now(&mut r), []);
        h.mark_drained();
        // SAFETY: `c` is a live socket and the buffer is one valid byte.
        let sent = unsafe { libc::send(c.as_raw_fd(), b"!".as_ptr().cast(), 1, libc::MSG_OOB) };
        assert_eq!(sent, 1);
        assert!(poll_until_read_ready(&mut r, &h));
        // A read stops short before the urgent mark with data still queued: never park on it.
        h.mark_drained();
        assert!(h.is_ready());
    }

    #[test]
    fn waker_is_reported_and_wakes_no_waiter() {
        let mut r = Reactor::new().unwrap();
        let (a, _b) = mio::net::UnixStream::pair().unwrap();
        let ta = r.register(&a, &mut Vec::new()).unwrap();
        assert_eq!(poll_now(&mut r), []);
        r.add_waiter(ta, Direction::Read, 1).unwrap();
        r.waker().wake().unwrap();
        let mut woken = Vec::new();
        assert!(r.poll(Some(Duration::from_secs(10)), &mut woken).unwrap());
        assert!(woken.is_empty());
        assert!(!r.poll(Some(Duration::ZERO), &mut woken).unwrap());
    }
}
