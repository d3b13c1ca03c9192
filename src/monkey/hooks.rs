//! The `#[no_mangle]` libc functions. Each is a tiny fast path next to a `#[cold]` slow path
//! (design.md, Habit 10):
//!
//! ```text
//!  hook(args)
//!   ├─ PATCHED (relaxed load) && this thread has a hub (const TLS)?  ── no ──► real(args)
//!   │                                                     (+ on -1/EAGAIN: io_failed, cold)
//!   └─ yes: hook_slow (cold, catch_unwind → abort on a bug)
//!        ├─ not in a fiber / fd 0–2 / foreign fd / user's non-blocking mode ─► real(args)
//!        └─ try real(args) on the fd made non-blocking; on EAGAIN: wait_fd, try again
//! ```
//!
//! # Rules (cited by the `SAFETY` comments)
//! 1. A hook has exactly its libc function's contract; it only forwards the caller's pointers
//!    to the real function (`real.rs`) and reads/writes them where libc would.
//! 2. `errno` is left as libc would leave it: a successful call restores the value it had on
//!    entry (bookkeeping syscalls may have changed it); a failed call leaves the error of the
//!    operation, or of the emulated blocking call (EAGAIN on an SO_RCVTIMEO/SO_SNDTIMEO expiry,
//!    EBADF when the fd was closed meanwhile, ECANCELED when the fiber was killed).
//! 3. No panic crosses `extern "C"`: every slow path runs in [`guarded`], which aborts with a
//!    message. A kill or `with_timeout` raised at a park inside a hook cannot unwind through
//!    the C caller: [`block`] catches it, holds it for the fiber (`hub/held.rs`) and turns it
//!    into an error return; while it is held, [`refused`] fails the fiber's hooked waits at
//!    once (see mod.rs, Limits).
//! 4. Nothing waits on an fd except [`wait_fd`], and it waits only right after the operation
//!    failed with EAGAIN, with no switch in between (reactor rule 1).
//! 5. While the slow path holds hub state ([`Busy`]), or the hub's reactor is borrowed (a log
//!    line that mio or the reactor writes in the middle of a registration change), a hooked call
//!    made on the same thread (a logger, a signal handler) passes straight through
//!    ([`reactor_busy`]).

use std::cell::Cell;
use std::ffi::{c_int, c_long, c_uint, c_ulong, c_void};
use std::io;
use std::os::fd::RawFd;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use libc::{
    iovec, msghdr, nfds_t, pollfd, size_t, sockaddr, socklen_t, ssize_t, timespec, useconds_t,
};

use super::fd_table::{self, FOREIGN, MANAGED, OURS_NB, SHARED, USER_NB};
use super::{PATCHED, real};
use crate::coroutine::try_current;
use crate::hub::held::{self, Held};
use crate::hub::park::{self, Waiter, Wake};
use crate::hub::reactor::Direction;
use crate::hub::scheduler::{self, Hub};

// ---------------------------------------------------------------------------------------------
// Thread state and helpers
// ---------------------------------------------------------------------------------------------

thread_local! {
    /// Rule 5. `const` and drop-free: readable before main and during teardown.
    static BUSY: Cell<bool> = const { Cell::new(false) };
}

/// Hook fast-path test: patched, and this thread has a hub. One relaxed load and one
/// `const` TLS read; never creates anything.
#[inline(always)]
fn active() -> bool {
    PATCHED.load(Relaxed) && scheduler::is_live()
}

/// Marks hub bookkeeping on this thread (rule 5).
struct Busy;

impl Busy {
    fn enter() -> Option<Busy> {
        if BUSY.with(|b| b.replace(true)) { None } else { Some(Busy) }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        BUSY.with(|b| b.set(false));
    }
}

fn errno() -> c_int {
    // SAFETY: __errno_location returns this thread's errno slot, valid for the thread's life.
    unsafe { *libc::__errno_location() }
}

fn set_errno(e: c_int) {
    // SAFETY: __errno_location returns this thread's errno slot, valid for the thread's life.
    unsafe { *libc::__errno_location() = e };
}

/// Writes `a` and `b` to stderr with a raw syscall (no hook, no allocation) and aborts.
#[cold]
pub(crate) fn die(a: &[u8], b: &[u8]) -> ! {
    for s in [a, b] {
        // SAFETY: `s` is a valid buffer of `s.len()` bytes; a raw write(2) to fd 2.
        unsafe { libc::syscall(libc::SYS_write, 2, s.as_ptr(), s.len()) };
    }
    std::process::abort()
}

/// Runs a slow path; a panic in it is a bug in greenfiber: report and abort (rule 3).
#[inline(always)]
fn guarded<T>(name: &'static str, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(p) => {
            let msg = crate::error::panic_message(&*p);
            die(name.as_bytes(), format!(": greenfiber monkey hook panicked: {msg}\n").as_bytes())
        }
    }
}

/// Slow-path call counts per hooked symbol (table order of `real.rs`).
static CALLS: [AtomicU64; real::NAMES.len()] = [const { AtomicU64::new(0) }; real::NAMES.len()];

const fn idx(name: &str) -> usize {
    let mut i = 0;
    while i < real::NAMES.len() {
        let (a, b) = (real::NAMES[i].as_bytes(), name.as_bytes());
        if a.len() == b.len() {
            let mut j = 0;
            while j < a.len() && a[j] == b[j] {
                j += 1;
            }
            if j == a.len() {
                return i;
            }
        }
        i += 1;
    }
    panic!("not a hooked symbol")
}

macro_rules! count {
    ($name:literal) => {
        CALLS[const { idx($name) }].fetch_add(1, Relaxed)
    };
}

/// See [`super::hook_calls`].
pub(crate) fn calls() -> Vec<(&'static str, u64)> {
    real::NAMES.iter().zip(&CALLS).map(|(n, c)| (*n, c.load(Relaxed))).collect()
}

/// True if a hook called now should behave cooperatively: the current coroutine is not the
/// hub, and it is a fiber — or main while the hub has other work (as gevent does), or while a
/// raise is held (rule 3: main's timed-out block must fail fast too).
fn in_fiber() -> bool {
    if BUSY.with(Cell::get) {
        return false;
    }
    let Some(cur) = try_current() else { return false };
    scheduler::try_with(|hub| {
        cur != hub.co && !reactor_busy(hub) && (!cur.is_main() || has_work(hub))
    })
    .unwrap_or(false)
}

/// Rule 5: true while this thread's reactor is borrowed, so this hooked call comes from inside
/// a reactor change (a logger called there) and must not touch the reactor.
fn reactor_busy(hub: &Hub) -> bool {
    hub.reactor.try_borrow_mut().is_err()
}

fn has_work(hub: &Hub) -> bool {
    let busy = |r: Result<bool, std::cell::BorrowError>| r.unwrap_or(false);
    !hub.ready.is_empty()
        || busy(hub.timers.try_borrow().map(|t| !t.is_empty()))
        || hub.io_waits.get() > 0
        || busy(hub.remote_waits.try_borrow().map(|m| !m.is_empty()))
        || hub.held_any.get()
}

fn errno_of(h: Held) -> c_int {
    match h {
        Held::Kill => libc::ECANCELED,
        Held::Timeout => libc::ETIMEDOUT,
    }
}

/// Rule 3: the error a hooked wait of the current fiber fails with at once, if it holds a kill
/// or a timeout that a hooked call swallowed before (`hub/held.rs`). The fiber yields once
/// first, so that a caller that loops on the error (`std::thread::sleep` ignores it) still
/// lets the rest of the thread run.
fn refused() -> Option<c_int> {
    let cur = try_current()?;
    let h = held::holds(&cur)?;
    let _ = block(|| {
        held::yield_keeping(&cur);
        Ok(())
    });
    Some(errno_of(h))
}

/// Runs a park inside a hook (rule 3): a kill (GreenletExit) or a `with_timeout` expiry cannot
/// unwind through the C caller; it is held for the fiber (`hub/held.rs`) and the call fails
/// with ECANCELED or ETIMEDOUT. Anything else is a bug.
fn block<T>(f: impl FnOnce() -> io::Result<T>) -> Result<T, c_int> {
    match held::catch(f) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(match e.raw_os_error() {
            Some(n) => n,
            None if e.kind() == io::ErrorKind::TimedOut => libc::EAGAIN,
            None => libc::EIO,
        }),
        Err(h) => Err(errno_of(h)),
    }
}

// ---------------------------------------------------------------------------------------------
// The fd wait
// ---------------------------------------------------------------------------------------------

/// Parks the current fiber until `fd` is ready for `dir`, `deadline` passes (`TimedOut`), or
/// `fd` is closed (`EBADF`). Registers `fd` with this thread's reactor on first use.
///
/// This is the only place monkey waits on an fd (rule 4). Call it only right after the
/// operation failed with EAGAIN, without switching in between. Unlike the net layer's sockets,
/// which register once and deregister on drop, a patched fd can be closed behind our back: it is
/// registered as a borrowed fd (reactor.rs) tagged with the fd table's close generation, which
/// also tells a waiter its fd went.
pub(crate) fn wait_fd(fd: RawFd, dir: Direction, deadline: Option<Instant>) -> io::Result<()> {
    let ebadf = || io::Error::from_raw_os_error(libc::EBADF);
    let generation = fd_table::get(fd).ok_or_else(ebadf)?.generation();
    let w = Waiter::new("a monkey-patched fd");
    {
        let _busy = Busy::enter().ok_or_else(|| io::Error::other("re-entrant wait"))?;
        scheduler::with(|hub| {
            let token = park::with_reactor(hub, |r, parked| r.borrowed_fd(fd, generation, parked))?;
            if w.set_io(hub, token, dir) { Ok(()) } else { Err(ebadf()) }
        })?;
    }
    // SWITCH: other fibers run; `fd` may be closed meanwhile (checked by generation below).
    let wake = w.park(deadline);
    scheduler::with(|hub| w.clear_io(hub));
    if fd_table::get(fd).map(|s| s.generation()) != Some(generation) {
        return Err(ebadf());
    }
    match wake {
        Wake::TimedOut => Err(io::ErrorKind::TimedOut.into()),
        Wake::Woken | Wake::LoopExit => Ok(()),
    }
}

/// `fd` is about to be closed (or replaced by dup2/dup3): drop this thread's registration.
/// Returns true if the fd was known, so its generation must be bumped.
fn before_close(fd: c_int) -> bool {
    let Some(st) = fd_table::get(fd) else { return false };
    if st.flags() == 0 {
        return false;
    }
    if scheduler::is_live()
        && let Some(_busy) = Busy::enter()
    {
        // Whoever waits on it wakes and finds a new generation. A close made inside a reactor
        // change (rule 5) leaves the registration: the kernel drops a closed fd from epoll by
        // itself, and the next registration of the number replaces the stale entry.
        scheduler::try_with(|hub| {
            if !reactor_busy(hub) {
                park::with_reactor(hub, |r, parked| r.forget_fd(fd, parked));
            }
        });
    }
    true
}

// ---------------------------------------------------------------------------------------------
// Per-fd preparation and timeouts
// ---------------------------------------------------------------------------------------------

/// Classifies an unknown fd: sockets and pipes are managed, the rest is foreign.
fn classify(fd: c_int) -> Option<fd_table::State> {
    // SAFETY: `st` is a plain C struct for which all-zero is valid.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid out-pointer; fstat does not keep it.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return None;
    }
    let kind = st.st_mode & libc::S_IFMT;
    let mut flags = if kind == libc::S_IFSOCK || kind == libc::S_IFIFO { MANAGED } else { FOREIGN };
    // SAFETY: F_GETFL takes no argument (rule 1).
    let fl = unsafe { real::fcntl(fd, libc::F_GETFL, 0) };
    if fl >= 0 && fl & libc::O_NONBLOCK != 0 {
        flags |= USER_NB;
    }
    // Another thread may have classified it (and taken it over) meanwhile: keep its state.
    fd_table::set_if_unknown(fd, flags)
}

/// Decides whether `fd` is waited on cooperatively, making it non-blocking if so. False means
/// pass through: fds 0–2, foreign fds, fds the user made non-blocking.
fn prepare(fd: c_int) -> bool {
    if fd <= 2 {
        return false;
    }
    let Some(mut st) = fd_table::get(fd) else { return false };
    if st.is_unknown() {
        match classify(fd) {
            Some(s) => st = s,
            None => return false,
        }
    }
    if !st.has(MANAGED) || st.has(USER_NB) {
        return false;
    }
    st.has(OURS_NB) || take_over(fd, st.has(SHARED))
}

/// Makes a managed fd in the user's blocking mode non-blocking underneath (`OURS_NB`); false
/// if the user had made it non-blocking (recorded as `USER_NB`) or `fcntl` failed.
///
/// An fd that shares its open file with a copy (`SHARED`, from a `dup` of a blocking fd) and
/// is found non-blocking was made so by the hooks through the copy: that is `OURS_NB` too.
/// `OURS_NB` is recorded before `O_NONBLOCK` is set, so another thread never sees the flag
/// set by us without the record (it would pass an `EAGAIN` to a caller that never asked).
fn take_over(fd: c_int, shared: bool) -> bool {
    // SAFETY: F_GETFL/F_SETFL with an int flag argument (rule 1).
    let fl = unsafe { real::fcntl(fd, libc::F_GETFL, 0) };
    if fl < 0 {
        return false;
    }
    if fl & libc::O_NONBLOCK != 0 {
        // One step, against another thread taking it over at once: its `OURS_NB`, recorded
        // before it set the flag, wins; else a shared fd's flag is ours, anyone else's the
        // user's.
        let st = fd_table::update(fd, |f| {
            if f & OURS_NB != 0 {
                f
            } else if shared {
                f | OURS_NB
            } else {
                f | USER_NB
            }
        });
        return st.is_some_and(|s| s.has(OURS_NB) && !s.has(USER_NB));
    }
    fd_table::update(fd, |f| f | OURS_NB);
    // SAFETY: as above.
    if unsafe { real::fcntl(fd, libc::F_SETFL, (fl | libc::O_NONBLOCK) as c_long) } < 0 {
        fd_table::update(fd, |f| f & !OURS_NB);
        return false;
    }
    true
}

/// Called before `fd` is duplicated (to an fd above 2). The copies share one open file, and
/// with it `O_NONBLOCK`, but the table is per fd: when the hooks later set `O_NONBLOCK`
/// through one copy, the other must not take it for the user's choice (a `try_clone` made
/// before the first fiber use then gave `WouldBlock`). So the fd's state is settled now
/// (classified, its user mode read) and marked `SHARED`, which the copy inherits. It is not
/// made non-blocking here: a copy handed to a child process (std's `Command` with a
/// `try_clone`d pipe) must stay blocking for the child.
fn before_dup(fd: c_int) {
    if fd <= 2 {
        return;
    }
    let Some(st) = fd_table::get(fd) else { return };
    let e = errno();
    let st = if st.is_unknown() { classify(fd) } else { Some(st) };
    set_errno(e);
    if st.is_some_and(|s| s.has(MANAGED)) {
        fd_table::update(fd, |f| f | SHARED);
    }
}

/// The deadline from SO_RCVTIMEO (reads) or SO_SNDTIMEO (writes), read when a wait starts;
/// `None` for no timeout or a non-socket.
fn sock_deadline(fd: c_int, dir: Direction) -> Option<Instant> {
    sock_timeout(fd, dir).and_then(|d| Instant::now().checked_add(d))
}

/// The fd's SO_RCVTIMEO or SO_SNDTIMEO, if set.
fn sock_timeout(fd: c_int, dir: Direction) -> Option<Duration> {
    let opt = match dir {
        Direction::Read => libc::SO_RCVTIMEO,
        Direction::Write => libc::SO_SNDTIMEO,
    };
    let mut tv = libc::timeval { tv_sec: 0, tv_usec: 0 };
    let mut len = size_of::<libc::timeval>() as socklen_t;
    // SAFETY: `tv`/`len` are valid out-pointers of the sizes given.
    let r = unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, opt, (&raw mut tv).cast(), &mut len) };
    if r != 0 || (tv.tv_sec == 0 && tv.tv_usec == 0) {
        return None;
    }
    Some(Duration::new(tv.tv_sec as u64, tv.tv_usec as u32 * 1000))
}

// ---------------------------------------------------------------------------------------------
// The one I/O path
// ---------------------------------------------------------------------------------------------

/// The fast path of every data hook: `op` is the real call on `fd`.
#[inline(always)]
fn io(name: &'static str, h: usize, fd: c_int, dir: Direction, op: impl FnMut() -> isize) -> isize {
    io_until(name, h, fd, dir, None, op)
}

/// [`io()`], waiting at most until `until` if it is given (`Some(None)`: no limit) instead of
/// the fd's own SO_RCVTIMEO/SO_SNDTIMEO from now: the later parts of one transfer
/// ([`io_whole`]) share the deadline of the whole call.
#[inline(always)]
fn io_until(
    name: &'static str,
    h: usize,
    fd: c_int,
    dir: Direction,
    until: Option<Option<Instant>>,
    mut op: impl FnMut() -> isize,
) -> isize {
    if active() {
        return io_slow(name, h, fd, dir, until, &mut op);
    }
    // Kept for a call that has to wait and then succeeds (rule 2).
    let saved = errno();
    let r = op();
    if r == -1 && PATCHED.load(Relaxed) {
        return io_failed(name, fd, dir, until, &mut op, saved);
    }
    r
}

/// A call outside any fiber failed: if it was EAGAIN on an fd that is non-blocking only
/// because of us, block as the user's blocking fd would (with a real `poll`). A call that
/// then succeeds puts back `saved`, errno as the caller left it (rule 2).
#[cold]
#[inline(never)]
fn io_failed(
    name: &'static str,
    fd: c_int,
    dir: Direction,
    until: Option<Option<Instant>>,
    op: &mut dyn FnMut() -> isize,
    saved: c_int,
) -> isize {
    let e = errno();
    if (e != libc::EAGAIN && e != libc::EINPROGRESS) || !emulated_here(fd) {
        return -1;
    }
    let r = guarded(name, || block_outside(fd, dir, until, op));
    if r >= 0 {
        set_errno(saved);
    }
    r
}

/// Whether the hooks emulate blocking on `fd` outside fibers: it is `OURS_NB`, or it is the
/// copy of one (`SHARED`, blocking in the user's view) whose open file a fiber made
/// non-blocking through the other copy, which only `prepare` in a fiber would have noticed so
/// far. (A copy still blocking underneath is left alone: its EAGAIN is an `SO_RCVTIMEO` or
/// `SO_SNDTIMEO` expiry.)
fn emulated_here(fd: c_int) -> bool {
    let Some(st) = fd_table::get(fd) else { return false };
    if st.blocking_emulated() {
        return true;
    }
    if !st.has(MANAGED) || !st.has(SHARED) || st.has(USER_NB) {
        return false;
    }
    // SAFETY: F_GETFL with an int flag argument (rule 1).
    let fl = unsafe { real::fcntl(fd, libc::F_GETFL, 0) };
    // Non-blocking already, so `take_over` only records it as ours (a shared fd's rule).
    fl >= 0 && fl & libc::O_NONBLOCK != 0 && take_over(fd, true)
}

fn block_outside(
    fd: c_int,
    dir: Direction,
    until: Option<Option<Instant>>,
    op: &mut dyn FnMut() -> isize,
) -> isize {
    let deadline = until.unwrap_or_else(|| sock_deadline(fd, dir));
    let events = match dir {
        Direction::Read => libc::POLLIN,
        Direction::Write => libc::POLLOUT,
    };
    loop {
        let ms = match deadline {
            None => -1,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    set_errno(libc::EAGAIN);
                    return -1;
                }
                left.as_millis().clamp(1, c_int::MAX as u128) as c_int
            }
        };
        let mut p = pollfd { fd, events, revents: 0 };
        // SAFETY: one valid pollfd (rule 1).
        if unsafe { real::poll(&mut p, 1, ms) } < 0 {
            if errno() == libc::EINTR {
                // The kernel never restarts `poll`, but it restarts the blocking call this
                // stands for when the handler has SA_RESTART (std's own loops expect that):
                // wait again rather than hand EINTR to a caller that never asked for it.
                continue;
            }
            return -1;
        }
        let r = op();
        if r != -1 || errno() != libc::EAGAIN {
            return r;
        }
    }
}

#[cold]
#[inline(never)]
fn io_slow(
    name: &'static str,
    h: usize,
    fd: c_int,
    dir: Direction,
    until: Option<Option<Instant>>,
    op: &mut dyn FnMut() -> isize,
) -> isize {
    guarded(name, || {
        CALLS[h].fetch_add(1, Relaxed);
        let saved = errno();
        if !in_fiber() || !prepare(fd) {
            let r = op();
            if r == -1 {
                return io_failed(name, fd, dir, until, op, saved);
            }
            return r;
        }
        if let Some(e) = refused() {
            set_errno(e);
            return -1;
        }
        let mut deadline = None;
        loop {
            let r = op();
            if r != -1 {
                set_errno(saved);
                return r;
            }
            if errno() != libc::EAGAIN {
                return -1;
            }
            let d =
                *deadline.get_or_insert_with(|| until.unwrap_or_else(|| sock_deadline(fd, dir)));
            if let Err(e) = block(|| wait_fd(fd, dir, d)) {
                set_errno(e);
                return -1;
            }
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Sleeps
// ---------------------------------------------------------------------------------------------

/// Sleeps `d` on the hub; a kill or timeout just ends the sleep early (rule 3).
fn hub_sleep(d: Duration) {
    if refused().is_some() {
        return;
    }
    let _ = block(|| {
        crate::hub::sleep(d);
        Ok(())
    });
}

fn valid(ts: &timespec) -> Option<Duration> {
    (ts.tv_sec >= 0 && (0..1_000_000_000).contains(&ts.tv_nsec))
        .then(|| Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

/// Hook for `clock_nanosleep(2)`; what `std::thread::sleep` calls.
///
/// # Safety
/// The libc function's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn clock_nanosleep(
    clock: libc::clockid_t,
    flags: c_int,
    req: *const timespec,
    rem: *mut timespec,
) -> c_int {
    if active() {
        return clock_nanosleep_slow(clock, flags, req, rem);
    }
    // SAFETY: rule 1.
    unsafe { real::clock_nanosleep(clock, flags, req, rem) }
}

#[cold]
#[inline(never)]
fn clock_nanosleep_slow(
    clock: libc::clockid_t,
    flags: c_int,
    req: *const timespec,
    rem: *mut timespec,
) -> c_int {
    guarded("clock_nanosleep", || {
        count!("clock_nanosleep");
        // SAFETY: rule 1: `req` is null or points at a timespec.
        let ts = unsafe { req.as_ref() }.and_then(valid);
        let known = [libc::CLOCK_MONOTONIC, libc::CLOCK_REALTIME, libc::CLOCK_BOOTTIME];
        let (Some(d), true, true) = (ts, known.contains(&clock), in_fiber()) else {
            // SAFETY: rule 1.
            return unsafe { real::clock_nanosleep(clock, flags, req, rem) };
        };
        let d = if flags & libc::TIMER_ABSTIME != 0 {
            let mut now = timespec { tv_sec: 0, tv_nsec: 0 };
            // SAFETY: a valid out-pointer; `clock` is one of the known clocks.
            unsafe { libc::clock_gettime(clock, &mut now) };
            d.saturating_sub(valid(&now).unwrap_or_default())
        } else {
            d
        };
        hub_sleep(d);
        0
    })
}

/// Hook for `nanosleep(2)`.
///
/// # Safety
/// The libc function's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nanosleep(req: *const timespec, rem: *mut timespec) -> c_int {
    if active() {
        return nanosleep_slow(req, rem);
    }
    // SAFETY: rule 1.
    unsafe { real::nanosleep(req, rem) }
}

#[cold]
#[inline(never)]
fn nanosleep_slow(req: *const timespec, rem: *mut timespec) -> c_int {
    guarded("nanosleep", || {
        count!("nanosleep");
        // SAFETY: rule 1: `req` is null or points at a timespec.
        match (unsafe { req.as_ref() }.and_then(valid), in_fiber()) {
            (Some(d), true) => {
                hub_sleep(d);
                0
            }
            // SAFETY: rule 1.
            _ => unsafe { real::nanosleep(req, rem) },
        }
    })
}

/// Hook for `sleep(3)`.
///
/// # Safety
/// The libc function's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sleep(secs: c_uint) -> c_uint {
    if active() {
        return sleep_slow(secs);
    }
    // SAFETY: rule 1.
    unsafe { real::sleep(secs) }
}

#[cold]
#[inline(never)]
fn sleep_slow(secs: c_uint) -> c_uint {
    guarded("sleep", || {
        count!("sleep");
        if !in_fiber() {
            // SAFETY: rule 1.
            return unsafe { real::sleep(secs) };
        }
        hub_sleep(Duration::from_secs(secs.into()));
        0
    })
}

/// Hook for `usleep(3)`.
///
/// # Safety
/// The libc function's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn usleep(usecs: useconds_t) -> c_int {
    if active() {
        return usleep_slow(usecs);
    }
    // SAFETY: rule 1.
    unsafe { real::usleep(usecs) }
}

#[cold]
#[inline(never)]
fn usleep_slow(usecs: useconds_t) -> c_int {
    guarded("usleep", || {
        count!("usleep");
        if !in_fiber() {
            // SAFETY: rule 1.
            return unsafe { real::usleep(usecs) };
        }
        hub_sleep(Duration::from_micros(usecs.into()));
        0
    })
}

// ---------------------------------------------------------------------------------------------
// Data transfer
// ---------------------------------------------------------------------------------------------

/// Declares a data hook that goes through [`io()`].
macro_rules! io_hook {
    ($(#[$doc:meta])* fn $name:ident($fd:ident: c_int $(, $arg:ident: $ty:ty)*) -> $ret:ty, $dir:ident;) => {
        $(#[$doc])*
        ///
        /// # Safety
        /// The libc function's contract.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name($fd: c_int $(, $arg: $ty)*) -> $ret {
            // SAFETY: rule 1: the caller's arguments, forwarded unchanged.
            let op = || unsafe { real::$name($fd $(, $arg)*) } as isize;
            io(stringify!($name), const { idx(stringify!($name)) }, $fd, Direction::$dir, op) as $ret
        }
    };
}

/// What a blocking transfer of `n` bytes promises and a non-blocking one does not: a write (or
/// a `send`) to a blocking fd returns only once all `n` bytes are queued, and a stream
/// `recv` with `MSG_WAITALL` only once the buffer is full (or either meets end of file, an
/// error, or the fd's timeout). On an fd the hooks made non-blocking (`OURS_NB`) the kernel
/// stops short, so `op_at(done)` is repeated on the rest, through [`io_until`], with one
/// deadline for the whole call (SO_RCVTIMEO/SO_SNDTIMEO from its start). On any other fd a
/// short count is the kernel's own answer (the fd's timeout, a signal, the user's
/// non-blocking mode) and is returned as it is. After a later part fails, the count so far is
/// returned and `errno` left as it was (rule 2): the kernel reports the error on the next call.
///
/// `n` gives the size of the whole transfer; it is asked only after a short first part, once
/// the kernel has read the caller's buffers (for a vectored call, the `iovec` array).
fn io_whole(
    name: &'static str,
    h: usize,
    fd: c_int,
    dir: Direction,
    n: impl FnOnce() -> usize,
    mut op_at: impl FnMut(usize) -> isize,
) -> isize {
    if !PATCHED.load(Relaxed) {
        return op_at(0); // not patched: exactly the real call
    }
    let start = Instant::now();
    let r = io(name, h, fd, dir, || op_at(0));
    if r <= 0 || !fd_table::get(fd).is_some_and(|s| s.blocking_emulated()) {
        return r;
    }
    let n = n();
    if r as usize >= n {
        return r;
    }
    whole_rest(name, h, fd, dir, n, r as usize, start, &mut op_at)
}

/// Where byte `done` of a vectored transfer over `iov` lies: the index of its `iovec` and the
/// offset in it (`done` < the total, so the index is in range).
fn iov_at(iov: &[iovec], mut done: usize) -> (usize, usize) {
    for (k, v) in iov.iter().enumerate() {
        if done < v.iov_len {
            return (k, done);
        }
        done -= v.iov_len;
    }
    (iov.len(), 0)
}

/// The bytes of a vectored transfer over `iov`.
fn iov_total(iov: &[iovec]) -> usize {
    iov.iter().fold(0usize, |t, v| t.saturating_add(v.iov_len))
}

/// The rest of a vectored transfer over `iov` from byte `done` on: the rest of a buffer cut in
/// the middle through `part(ptr, len)`, else the following iovecs through `whole(header)`, a
/// header of our own without address or ancillary data (those went with the first part).
fn iov_rest(
    iov: &[iovec],
    done: usize,
    part: impl FnOnce(*mut c_void, usize) -> isize,
    whole: impl FnOnce(&mut msghdr) -> isize,
) -> isize {
    let (k, off) = iov_at(iov, done);
    let v = iov[k];
    if off > 0 {
        return part(v.iov_base.wrapping_byte_add(off), v.iov_len - off);
    }
    // SAFETY: all-zero is a valid `msghdr` (null pointers, zero lengths).
    let mut rest: msghdr = unsafe { std::mem::zeroed() };
    rest.msg_iov = iov[k..].as_ptr().cast_mut();
    rest.msg_iovlen = iov.len() - k;
    whole(&mut rest)
}

/// The caller's `cnt` iovecs at `iov`, as a slice.
///
/// # Safety
/// `iov` points to `cnt` valid `iovec`s, as the kernel found when it read them for a call
/// that moved bytes (which is when the hooks look at them).
unsafe fn iovecs<'a>(iov: *const iovec, cnt: usize) -> &'a [iovec] {
    if cnt == 0 || iov.is_null() {
        return &[];
    }
    // SAFETY: the caller's contract.
    unsafe { std::slice::from_raw_parts(iov, cnt) }
}

/// The rest of [`io_whole`] after a short first part of `done` bytes.
#[cold]
#[inline(never)]
#[allow(clippy::too_many_arguments)]
fn whole_rest(
    name: &'static str,
    h: usize,
    fd: c_int,
    dir: Direction,
    n: usize,
    mut done: usize,
    start: Instant,
    op_at: &mut dyn FnMut(usize) -> isize,
) -> isize {
    let saved = errno();
    let until = Some(sock_timeout(fd, dir).and_then(|t| start.checked_add(t)));
    while done < n {
        let r = io_until(name, h, fd, dir, until, || op_at(done));
        if r <= 0 {
            break;
        }
        done += r as usize;
    }
    // A count is a success: `errno` as on entry, whatever `sock_timeout`, the parts'
    // bookkeeping or a failed later part left.
    set_errno(saved);
    done as isize
}

/// Does a read with `flags` on `fd` wait for the whole buffer? `MSG_WAITALL` on a stream
/// socket, not with `MSG_PEEK` (each part would peek the same bytes again), and only once
/// patched (before, the hook is exactly the real call).
#[inline]
fn waits_for_all(fd: c_int, flags: c_int) -> bool {
    flags & (libc::MSG_WAITALL | libc::MSG_PEEK) == libc::MSG_WAITALL
        && PATCHED.load(Relaxed)
        && is_stream_socket(fd)
}

/// The body of the `recv` and `send` families' hooks: a per-call non-blocking request
/// (`MSG_DONTWAIT`) is the caller's own choice and passes through; a send moves all `n` bytes,
/// and so does a read with `MSG_WAITALL` on a stream socket ([`io_whole`]); any other read is
/// one [`io()`].
#[inline(always)]
fn flagged_io(
    name: &'static str,
    h: usize,
    fd: c_int,
    dir: Direction,
    n: usize,
    flags: c_int,
    mut op_at: impl FnMut(usize) -> isize,
) -> isize {
    if flags & libc::MSG_DONTWAIT != 0 {
        return op_at(0);
    }
    if dir == Direction::Write || waits_for_all(fd, flags) {
        return io_whole(name, h, fd, dir, || n, op_at);
    }
    io(name, h, fd, dir, || op_at(0))
}

/// Is `fd` a stream socket? Leaves `errno`.
#[cold]
#[inline(never)]
fn is_stream_socket(fd: c_int) -> bool {
    let saved = errno();
    let ty = sock_int(fd, libc::SO_TYPE);
    set_errno(saved);
    ty == Some(libc::SOCK_STREAM)
}

/// The `SOL_SOCKET` option `opt` of `fd`, an int; `None` (with `getsockopt`'s errno) if it
/// has none.
fn sock_int(fd: c_int, opt: c_int) -> Option<c_int> {
    let mut v: c_int = 0;
    let mut len = size_of::<c_int>() as socklen_t;
    // SAFETY: `v` and `len` are valid places for an int-sized option and its length.
    let r = unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, opt, (&raw mut v).cast(), &mut len) };
    (r == 0).then_some(v)
}

io_hook!(
    /// Hook for `read(2)`.
    fn read(fd: c_int, buf: *mut c_void, n: size_t) -> ssize_t, Read;
);

/// Hook for `write(2)`: all `n` bytes, as a blocking `write` (see [`io_whole`]).
///
/// # Safety
/// The libc function's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn write(fd: c_int, buf: *const c_void, n: size_t) -> ssize_t {
    // SAFETY: rule 1: the caller's buffer, from `done` on (`done` < `n`), and its length.
    let op_at = |done: usize| unsafe { real::write(fd, buf.wrapping_byte_add(done), n - done) };
    io_whole("write", const { idx("write") }, fd, Direction::Write, || n, op_at)
}
io_hook!(
    /// Hook for `readv(2)`.
    fn readv(fd: c_int, iov: *const iovec, n: c_int) -> ssize_t, Read;
);
/// Hook for `writev(2)`: all the bytes, as a blocking `writev` (see [`io_whole`]).
///
/// # Safety
/// The libc function's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn writev(fd: c_int, iov: *const iovec, n: c_int) -> ssize_t {
    let cnt = n.max(0) as usize;
    // SAFETY: only after a part moved bytes, so the kernel read the `n` iovecs (`iovecs`).
    let all = || unsafe { iovecs(iov, cnt) };
    let op_at = |done: usize| {
        if done == 0 {
            // SAFETY: rule 1: the caller's arguments, forwarded unchanged.
            return unsafe { real::writev(fd, iov, n) };
        }
        iov_rest(
            all(),
            done,
            // SAFETY: rule 1: the rest of a buffer of the caller's.
            |p, len| unsafe { real::write(fd, p, len) },
            // SAFETY: rule 1: the caller's iovecs that follow it (at most `n`).
            |m| unsafe { real::writev(fd, m.msg_iov, m.msg_iovlen as c_int) },
        )
    };
    io_whole("writev", const { idx("writev") }, fd, Direction::Write, || iov_total(all()), op_at)
}
/// Hook for `recv(2)`; with `MSG_WAITALL` on a stream socket, the whole buffer (see
/// [`io_whole`]).
///
/// # Safety
/// The libc function's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn recv(fd: c_int, buf: *mut c_void, n: size_t, flags: c_int) -> ssize_t {
    // SAFETY: rule 1: the caller's buffer, from `done` on (`done` < `n`), and its length.
    let op_at =
        |done: usize| unsafe { real::recv(fd, buf.wrapping_byte_add(done), n - done, flags) };
    flagged_io("recv", const { idx("recv") }, fd, Direction::Read, n, flags, op_at)
}

/// Hook for `send(2)`: all `n` bytes, as a blocking `send` (see [`io_whole`]).
///
/// # Safety
/// The libc function's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn send(fd: c_int, buf: *const c_void, n: size_t, flags: c_int) -> ssize_t {
    // SAFETY: rule 1: the caller's buffer, from `done` on (`done` < `n`), and its length.
    let op_at =
        |done: usize| unsafe { real::send(fd, buf.wrapping_byte_add(done), n - done, flags) };
    flagged_io("send", const { idx("send") }, fd, Direction::Write, n, flags, op_at)
}

/// Hook for `recvfrom(2)`; with `MSG_WAITALL` on a stream socket, the whole buffer (see
/// [`io_whole`]; the address is filled by the first read).
///
/// # Safety
/// The libc function's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn recvfrom(
    fd: c_int,
    buf: *mut c_void,
    n: size_t,
    flags: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
) -> ssize_t {
    // SAFETY: rule 1: the caller's arguments; after the first read, its buffer from `done` on
    // (`done` < `n`) without the address (a stream socket has one peer).
    let op_at = |done: usize| unsafe {
        if done == 0 {
            real::recvfrom(fd, buf, n, flags, addr, len)
        } else {
            real::recv(fd, buf.wrapping_byte_add(done), n - done, flags)
        }
    };
    flagged_io("recvfrom", const { idx("recvfrom") }, fd, Direction::Read, n, flags, op_at)
}

/// Hook for `sendto(2)`: on a stream socket all `n` bytes, as a blocking `sendto` (a datagram
/// goes whole or not at all; see [`io_whole`]).
///
/// # Safety
/// The libc function's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sendto(
    fd: c_int,
    buf: *const c_void,
    n: size_t,
    flags: c_int,
    addr: *const sockaddr,
    len: socklen_t,
) -> ssize_t {
    // SAFETY: rule 1: the caller's arguments, the buffer from `done` on (`done` < `n`).
    let op_at = |done: usize| unsafe {
        real::sendto(fd, buf.wrapping_byte_add(done), n - done, flags, addr, len)
    };
    flagged_io("sendto", const { idx("sendto") }, fd, Direction::Write, n, flags, op_at)
}
/// Hook for `recvmsg(2)`; with `MSG_WAITALL` on a stream socket, every buffer full (see
/// [`msg_io`]).
///
/// # Safety
/// The libc function's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t {
    // SAFETY: `msg` is the caller's, under recvmsg's contract; the calls are rule 1's: the
    // caller's arguments, the rest of one of its buffers, or its iovecs that follow.
    unsafe {
        msg_io(
            ("recvmsg", const { idx("recvmsg") }, fd, Direction::Read),
            msg,
            flags,
            || real::recvmsg(fd, msg, flags),
            |p, len| real::recv(fd, p, len, flags),
            |m| real::recvmsg(fd, m, flags),
        )
    }
}

/// Hook for `sendmsg(2)`: on a stream socket all the bytes, as a blocking `sendmsg` (a
/// datagram goes whole or not at all; see [`msg_io`]).
///
/// # Safety
/// The libc function's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t {
    // SAFETY: as in `recvmsg`, under sendmsg's contract.
    unsafe {
        msg_io(
            ("sendmsg", const { idx("sendmsg") }, fd, Direction::Write),
            msg,
            flags,
            || real::sendmsg(fd, msg, flags),
            |p, len| real::send(fd, p, len, flags),
            |m| real::sendmsg(fd, m, flags),
        )
    }
}

/// The body of `recvmsg`'s and `sendmsg`'s hooks, as [`flagged_io`] for the plain calls: a
/// send moves every byte, and so does a read with `MSG_WAITALL` on a stream socket
/// ([`io_whole`]). The first part is the caller's call (`first`), with its address and
/// ancillary data, as the kernel moves them with the first bytes; the later parts are the
/// rest of a buffer cut in the middle (`part`) or the iovecs that follow (`whole`).
///
/// # Safety
/// `msg` is the caller's `msghdr`, valid as the libc function's contract says; `first`,
/// `part` and `whole` make the real calls (rule 1).
unsafe fn msg_io(
    (name, h, fd, dir): (&'static str, usize, c_int, Direction),
    msg: *const msghdr,
    flags: c_int,
    first: impl Fn() -> isize,
    part: impl Fn(*mut c_void, usize) -> isize,
    whole: impl Fn(&mut msghdr) -> isize,
) -> isize {
    if flags & libc::MSG_DONTWAIT != 0 {
        return first();
    }
    // A Unix stream read stops after a message that carried descriptors or credentials, which
    // only the caller's own header can receive; later parts, in headers of our own, would
    // lose them. So a Unix socket gets one call, which returns what it has.
    if dir == Direction::Read && (!waits_for_all(fd, flags) || is_unix(fd)) {
        return io(name, h, fd, dir, first);
    }
    // SAFETY: only after a part moved bytes, so the kernel read `msg` and its iovecs.
    let all = || unsafe { iovecs((*msg).msg_iov, (*msg).msg_iovlen) };
    let op_at = |done: usize| {
        if done == 0 { first() } else { iov_rest(all(), done, &part, &whole) }
    };
    io_whole(name, h, fd, dir, || iov_total(all()), op_at)
}

/// Records a new fd from socket/accept/pipe2: ours, in the mode it was created with.
#[cold]
#[inline(never)]
fn record_new(fd: c_int, nonblocking: bool) {
    fd_table::set(fd, MANAGED | if nonblocking { USER_NB } else { 0 });
}

/// Hook for `accept(2)`.
///
/// # Safety
/// The libc function's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    // SAFETY: rule 1.
    let op = || unsafe { real::accept(fd, addr, len) } as isize;
    let r = io("accept", const { idx("accept") }, fd, Direction::Read, op) as c_int;
    if r >= 0 && PATCHED.load(Relaxed) {
        record_new(r, false);
    }
    r
}

/// Hook for `accept4(2)`; what std's `TcpListener::accept` calls.
///
/// # Safety
/// The libc function's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn accept4(
    fd: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
    flags: c_int,
) -> c_int {
    // SAFETY: rule 1.
    let op = || unsafe { real::accept4(fd, addr, len, flags) } as isize;
    let r = io("accept4", const { idx("accept4") }, fd, Direction::Read, op) as c_int;
    if r >= 0 && PATCHED.load(Relaxed) {
        record_new(r, flags & libc::SOCK_NONBLOCK != 0);
    }
    r
}

/// Hook for `connect(2)`: inside a fiber a non-blocking connect, a wait for writability and
/// `SO_ERROR`, like a blocking connect (an SO_SNDTIMEO expiry gives EINPROGRESS, as Linux).
/// A Unix-domain connect to a full backlog waits until the listener accepts, as the blocking
/// call does (see [`connect_again`]).
///
/// # Safety
/// The libc function's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    if active() {
        return connect_slow(fd, addr, len);
    }
    let saved = errno();
    // SAFETY: rule 1.
    let r = unsafe { real::connect(fd, addr, len) };
    if r == -1 && PATCHED.load(Relaxed) {
        return connect_failed(fd, addr, len, saved);
    }
    r
}

/// A connect outside a fiber on an fd that is non-blocking only because of us.
#[cold]
#[inline(never)]
fn connect_failed(fd: c_int, addr: *const sockaddr, len: socklen_t, saved: c_int) -> c_int {
    if errno() == libc::EAGAIN
        && fd_table::get(fd).is_some_and(|s| s.blocking_emulated())
        && is_unix(fd)
    {
        return guarded("connect", || {
            connect_again(
                fd,
                addr,
                len,
                &|d| {
                    let ts = timespec { tv_sec: d.as_secs() as _, tv_nsec: d.subsec_nanos() as _ };
                    // SAFETY: a valid timespec; no remainder wanted (an EINTR just ends the pause
                    // early, and the loop tries again).
                    unsafe { real::nanosleep(&ts, std::ptr::null_mut()) };
                    Ok(())
                },
                saved,
            )
        });
    }
    let mut op = || {
        // SAFETY: the same fd; a zero-size poll has nothing to connect.
        finish_connect(fd) as isize
    };
    io_failed("connect", fd, Direction::Write, None, &mut op, saved) as c_int
}

/// True for a Unix-domain socket, whose non-blocking connect fails with EAGAIN (instead of
/// EINPROGRESS) while the listener's backlog is full.
fn is_unix(fd: c_int) -> bool {
    sock_int(fd, libc::SO_DOMAIN) == Some(libc::AF_UNIX)
}

/// A Unix-domain connect that found the listener's backlog full: the blocking call waits
/// until the listener accepts, up to SO_SNDTIMEO (then EAGAIN, as Linux). Nothing signals
/// room in a backlog to the connecting side, so try again after `pause`s that grow from 1 ms
/// to 16 ms. `pause` fails with the errno to return (a kill or a timeout of the fiber).
/// Success puts back `saved`, errno as the caller left it (rule 2).
fn connect_again(
    fd: c_int,
    addr: *const sockaddr,
    len: socklen_t,
    pause: &dyn Fn(Duration) -> Result<(), c_int>,
    saved: c_int,
) -> c_int {
    let deadline = sock_deadline(fd, Direction::Write);
    let mut wait = Duration::from_millis(1);
    loop {
        if let Some(d) = deadline {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                set_errno(libc::EAGAIN);
                return -1;
            }
            wait = wait.min(left);
        }
        if let Err(e) = pause(wait) {
            set_errno(e);
            return -1;
        }
        // SAFETY: rule 1: the caller's arguments, still valid during its call.
        if unsafe { real::connect(fd, addr, len) } == 0 {
            set_errno(saved);
            return 0;
        }
        if errno() != libc::EAGAIN {
            return -1;
        }
        wait = (wait * 2).min(Duration::from_millis(16));
    }
}

/// After writability: the connect's outcome from SO_ERROR (0, or -1 with errno).
fn finish_connect(fd: c_int) -> c_int {
    match sock_int(fd, libc::SO_ERROR) {
        None => -1,
        Some(0) => 0,
        Some(err) => {
            set_errno(err);
            -1
        }
    }
}

#[cold]
#[inline(never)]
fn connect_slow(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    guarded("connect", || {
        count!("connect");
        let saved = errno();
        if !in_fiber() || !prepare(fd) {
            // SAFETY: rule 1.
            let r = unsafe { real::connect(fd, addr, len) };
            return if r == -1 { connect_failed(fd, addr, len, saved) } else { r };
        }
        if let Some(e) = refused() {
            set_errno(e);
            return -1;
        }
        // SAFETY: rule 1.
        if unsafe { real::connect(fd, addr, len) } == 0 {
            set_errno(saved);
            return 0;
        }
        match errno() {
            libc::EINPROGRESS => {}
            libc::EAGAIN if is_unix(fd) => {
                return connect_again(
                    fd,
                    addr,
                    len,
                    &|d| {
                        block(|| {
                            crate::hub::sleep(d);
                            Ok(())
                        })
                    },
                    saved,
                );
            }
            _ => return -1,
        }
        let deadline = sock_deadline(fd, Direction::Write);
        loop {
            match block(|| wait_fd(fd, Direction::Write, deadline)) {
                Ok(()) => {}
                Err(libc::EAGAIN) => {
                    set_errno(libc::EINPROGRESS);
                    return -1;
                }
                Err(e) => {
                    set_errno(e);
                    return -1;
                }
            }
            // A wake-up is a hint (reactor rule 2): still connecting?
            let mut p = pollfd { fd, events: libc::POLLOUT, revents: 0 };
            // SAFETY: one valid pollfd.
            if unsafe { real::poll(&mut p, 1, 0) } == 0 {
                continue;
            }
            let r = finish_connect(fd);
            if r == 0 {
                set_errno(saved);
            }
            return r;
        }
    })
}

/// Hook for `poll(2)`. Inside a fiber a single fd waiting for POLLIN or POLLOUT (what std's
/// `connect_timeout` does) waits on the hub; other polls pass through and block the thread.
///
/// # Safety
/// The libc function's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn poll(fds: *mut pollfd, n: nfds_t, timeout: c_int) -> c_int {
    if n == 1 && timeout != 0 && active() {
        return poll_slow(fds, timeout);
    }
    // SAFETY: rule 1.
    unsafe { real::poll(fds, n, timeout) }
}

#[cold]
#[inline(never)]
fn poll_slow(fds: *mut pollfd, timeout: c_int) -> c_int {
    guarded("poll", || {
        count!("poll");
        let saved = errno();
        // SAFETY: rule 1: `n == 1`, so `fds` points at one pollfd.
        let (fd, events) = unsafe { ((*fds).fd, (*fds).events) };
        let dir = match events & (libc::POLLIN | libc::POLLOUT) {
            libc::POLLIN => Some(Direction::Read),
            libc::POLLOUT => Some(Direction::Write),
            _ => None,
        };
        let managed = || {
            fd > 2
                && fd_table::get(fd)
                    .and_then(|s| if s.is_unknown() { classify(fd) } else { Some(s) })
                    .is_some_and(|s| s.has(MANAGED))
        };
        let Some(dir) = dir.filter(|_| in_fiber() && managed()) else {
            // SAFETY: rule 1.
            return unsafe { real::poll(fds, 1, timeout) };
        };
        if let Some(e) = refused() {
            set_errno(e);
            return -1;
        }
        let deadline = u64::try_from(timeout)
            .ok()
            .and_then(|ms| Instant::now().checked_add(Duration::from_millis(ms)));
        loop {
            // SAFETY: rule 1.
            let r = unsafe { real::poll(fds, 1, 0) };
            if r != 0 {
                if r > 0 {
                    set_errno(saved);
                }
                return r;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                set_errno(saved);
                return 0;
            }
            match block(|| wait_fd(fd, dir, deadline)) {
                // Ready, timed out or closed: the next poll(0) tells which.
                Ok(()) | Err(libc::EAGAIN) | Err(libc::EBADF) => {}
                Err(e) => {
                    set_errno(e);
                    return -1;
                }
            }
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Bookkeeping: modes, duplicates, creation, close
// ---------------------------------------------------------------------------------------------

/// Hook for `ioctl(2)`, three-argument form (stable Rust has no variadic definitions; on
/// x86_64 Linux a variadic caller passes the third argument in the same register). Only
/// `FIONBIO` is looked at: it records the user's mode.
///
/// # Safety
/// The libc function's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ioctl(fd: c_int, req: c_ulong, arg: *mut c_void) -> c_int {
    if req == libc::FIONBIO as c_ulong && PATCHED.load(Relaxed) {
        return fionbio_slow(fd, arg);
    }
    // SAFETY: rule 1.
    unsafe { real::ioctl(fd, req, arg) }
}

#[cold]
#[inline(never)]
fn fionbio_slow(fd: c_int, arg: *mut c_void) -> c_int {
    guarded("ioctl", || {
        count!("ioctl");
        let st = fd_table::get(fd).filter(|s| s.has(MANAGED));
        // SAFETY: rule 1: FIONBIO's argument points at an int (null: let libc say EFAULT).
        let on = unsafe { arg.cast::<c_int>().as_ref() }.map(|v| *v != 0);
        if let (Some(st), Some(false)) = (st, on)
            && st.has(OURS_NB)
        {
            // Stays non-blocking underneath; the hooks block for the user.
            fd_table::update(fd, |f| f & !USER_NB);
            return 0;
        }
        // SAFETY: rule 1.
        let r = unsafe { real::ioctl(fd, libc::FIONBIO as c_ulong, arg) };
        if let (0, Some(_), Some(on)) = (r, st, on) {
            fd_table::update(fd, |f| if on { f | USER_NB } else { f & !USER_NB });
        }
        r
    })
}

/// Hook for `fcntl(2)`, three-argument form (see [`ioctl`]). `F_GETFL` hides the O_NONBLOCK
/// the hooks set; `F_SETFL` records the user's mode; `F_DUPFD*` copy the fd's state.
///
/// # Safety
/// The libc function's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fcntl(fd: c_int, cmd: c_int, arg: c_long) -> c_int {
    if PATCHED.load(Relaxed) {
        return fcntl_slow(fd, cmd, arg);
    }
    // SAFETY: rule 1.
    unsafe { real::fcntl(fd, cmd, arg) }
}

#[cold]
#[inline(never)]
fn fcntl_slow(fd: c_int, cmd: c_int, arg: c_long) -> c_int {
    guarded("fcntl", || {
        count!("fcntl");
        let st = fd_table::get(fd).filter(|s| s.has(MANAGED));
        let ours = st.is_some_and(|s| s.has(OURS_NB));
        match cmd {
            libc::F_GETFL => {
                // SAFETY: rule 1.
                let r = unsafe { real::fcntl(fd, cmd, arg) };
                if r >= 0 && ours && !st.is_some_and(|s| s.has(USER_NB)) {
                    r & !libc::O_NONBLOCK
                } else {
                    r
                }
            }
            libc::F_SETFL => {
                let on = arg & libc::O_NONBLOCK as c_long != 0;
                let pass = if ours { arg | libc::O_NONBLOCK as c_long } else { arg };
                // SAFETY: rule 1.
                let r = unsafe { real::fcntl(fd, cmd, pass) };
                if r == 0 && st.is_some() {
                    fd_table::update(fd, |f| if on { f | USER_NB } else { f & !USER_NB });
                }
                r
            }
            libc::F_DUPFD | libc::F_DUPFD_CLOEXEC => {
                before_dup(fd);
                // SAFETY: rule 1.
                let r = unsafe { real::fcntl(fd, cmd, arg) };
                if r >= 0 {
                    fd_table::copy(fd, r);
                }
                r
            }
            // SAFETY: rule 1.
            _ => unsafe { real::fcntl(fd, cmd, arg) },
        }
    })
}

/// Hook for `dup(2)`: the copy shares the original's state.
///
/// # Safety
/// The libc function's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dup(fd: c_int) -> c_int {
    if PATCHED.load(Relaxed) {
        return dup_slow(fd);
    }
    // SAFETY: rule 1.
    unsafe { real::dup(fd) }
}

#[cold]
#[inline(never)]
fn dup_slow(fd: c_int) -> c_int {
    guarded("dup", || {
        before_dup(fd);
        // SAFETY: rule 1.
        let r = unsafe { real::dup(fd) };
        if r >= 0 {
            fd_table::copy(fd, r);
        }
        r
    })
}

/// dup2/dup3: `new` is closed first if open (waking its waiters), then becomes a copy of `old`.
#[cold]
#[inline(never)]
fn dup_to_slow(name: &'static str, old: c_int, new: c_int, call: &dyn Fn() -> c_int) -> c_int {
    guarded(name, || {
        if new > 2 {
            before_dup(old);
        }
        let bump = old != new && before_close(new);
        let r = call();
        let e = errno();
        if r >= 0 && old != new {
            if bump {
                fd_table::closed(new);
            }
            fd_table::copy(old, new);
        }
        set_errno(e);
        r
    })
}

/// Hook for `dup2(2)`.
///
/// # Safety
/// The libc function's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dup2(old: c_int, new: c_int) -> c_int {
    if PATCHED.load(Relaxed) {
        // SAFETY: rule 1.
        return dup_to_slow("dup2", old, new, &|| unsafe { real::dup2(old, new) });
    }
    // SAFETY: rule 1.
    unsafe { real::dup2(old, new) }
}

/// Hook for `dup3(2)`.
///
/// # Safety
/// The libc function's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dup3(old: c_int, new: c_int, flags: c_int) -> c_int {
    if PATCHED.load(Relaxed) {
        // SAFETY: rule 1.
        return dup_to_slow("dup3", old, new, &|| unsafe { real::dup3(old, new, flags) });
    }
    // SAFETY: rule 1.
    unsafe { real::dup3(old, new, flags) }
}

/// Hook for `close(2)`: forgets the fd; a fiber parked on it wakes and gets EBADF.
///
/// # Safety
/// The libc function's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    if PATCHED.load(Relaxed) {
        return close_slow(fd);
    }
    // SAFETY: rule 1.
    unsafe { real::close(fd) }
}

/// Hook for `fclose(3)`: glibc closes the stream's fd internally, past the `close` hook, so
/// the fd is forgotten here first, as `close` does.
///
/// # Safety
/// The libc function's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fclose(f: *mut libc::FILE) -> c_int {
    if PATCHED.load(Relaxed) && !f.is_null() {
        guarded("fclose", || {
            count!("fclose");
            // SAFETY: the caller's open stream (the contract); `fileno` only reads it.
            let fd = unsafe { libc::fileno(f) };
            if fd >= 0 {
                forget(fd);
            }
        });
    }
    // SAFETY: rule 1.
    unsafe { real::fclose(f) }
}

/// Hook for `close_range(2)`: forgets every fd of the range, as `close` does, then closes them
/// with the system call (which is all glibc's function does). A call that only marks them
/// close-on-exec closes nothing.
///
/// # Safety
/// The libc function's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int {
    if PATCHED.load(Relaxed) && flags as c_uint & libc::CLOSE_RANGE_CLOEXEC == 0 {
        guarded("close_range", || forget_range(first, last));
    }
    // SAFETY: the system call's contract, with the caller's arguments.
    unsafe { libc::syscall(libc::SYS_close_range, first, last, flags) as c_int }
}

/// Hook for `closefrom(3)`: `close_range(low, ~0, 0)`, then, on a kernel without that system
/// call, each fd in turn up to the descriptor limit, as glibc does.
///
/// # Safety
/// The libc function's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn closefrom(low: c_int) {
    let low = low.max(0) as c_uint;
    // SAFETY: this function's own contract.
    if unsafe { close_range(low, c_uint::MAX, 0) } == 0 {
        return;
    }
    // SAFETY: sysconf has no preconditions.
    let max = unsafe { libc::sysconf(libc::_SC_OPEN_MAX) }.clamp(0, c_int::MAX as c_long) as c_uint;
    for fd in low..max {
        // SAFETY: closing an fd the caller asked to close (an unused number just fails).
        unsafe { real::close(fd as c_int) };
    }
}

/// Forgets the fds `first..=last` that the hooks know, as `close` does before it closes one.
fn forget_range(first: c_uint, last: c_uint) {
    let last = last.min(fd_table::MAX_FDS as c_uint - 1);
    for fd in first..=last {
        forget(fd as c_int);
    }
}

/// Forgets `fd` before it is closed: its registration on this thread, and its state (a new
/// generation). Before, not after: once closed, another thread may get the same number from
/// socket()/accept() and record it, and a later bump would wipe that.
fn forget(fd: c_int) {
    if before_close(fd) {
        fd_table::closed(fd);
    }
}

#[cold]
#[inline(never)]
fn close_slow(fd: c_int) -> c_int {
    guarded("close", || {
        count!("close");
        let saved = errno();
        forget(fd);
        // SAFETY: rule 1.
        let r = unsafe { real::close(fd) };
        if r == 0 {
            set_errno(saved);
        }
        r
    })
}

/// Hook for `socket(2)`: records the new socket and its mode.
///
/// # Safety
/// The libc function's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn socket(domain: c_int, ty: c_int, proto: c_int) -> c_int {
    // SAFETY: rule 1.
    let r = unsafe { real::socket(domain, ty, proto) };
    if r >= 0 && PATCHED.load(Relaxed) {
        count!("socket");
        record_new(r, ty & libc::SOCK_NONBLOCK != 0);
    }
    r
}

/// Hook for `socketpair(2)`: records both sockets.
///
/// # Safety
/// The libc function's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn socketpair(
    domain: c_int,
    ty: c_int,
    proto: c_int,
    sv: *mut c_int,
) -> c_int {
    // SAFETY: rule 1.
    let r = unsafe { real::socketpair(domain, ty, proto, sv) };
    if r == 0 && PATCHED.load(Relaxed) {
        count!("socketpair");
        for i in 0..2 {
            // SAFETY: rule 1: on success libc wrote two fds at `sv`.
            record_new(unsafe { *sv.add(i) }, ty & libc::SOCK_NONBLOCK != 0);
        }
    }
    r
}

/// Hook for `pipe2(2)` (what std's `io::pipe` and `Command` use): records both ends.
///
/// # Safety
/// The libc function's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pipe2(fds: *mut c_int, flags: c_int) -> c_int {
    // SAFETY: rule 1.
    let r = unsafe { real::pipe2(fds, flags) };
    if r == 0 && PATCHED.load(Relaxed) {
        count!("pipe2");
        for i in 0..2 {
            // SAFETY: rule 1: on success libc wrote two fds at `fds`.
            record_new(unsafe { *fds.add(i) }, flags & libc::O_NONBLOCK != 0);
        }
    }
    r
}
