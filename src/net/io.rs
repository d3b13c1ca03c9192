//! The one I/O loop every socket operation goes through, and the registration that owns a
//! socket's place in the hub's reactor.
//!
//! ```text
//!   op() ──Ok / error──────────────────────────────────────────────► return it
//!    │  Interrupted ──► op() again
//!    │  WouldBlock                  (do_read on a drained socket starts below: reactor rule 1)
//!    ▼
//!   Waiter::set_io(token, dir)      (no switch since op() failed: reactor rule 1)
//!   Waiter::park(deadline) ──Woken──► op() again (a wake-up is a hint: reactor rule 2)
//!    │ TimedOut
//!    ▼
//!   op() once more ──WouldBlock──► Err(EAGAIN)  (what std gives when SO_RCVTIMEO expires)
//! ```
//!
//! A kill or `with_timeout` that fires while parked unwinds out of `park`; the `Waiter`'s `Drop`
//! takes it off the reactor's list (park.rs rule 1), so nothing is left behind and the socket
//! stays usable.
//!
//! Rules:
//! 1. A socket is registered with the reactor of the thread that created it, once, when it is
//!    created ([`Registered::new`]), and deregistered in `Drop` *before* its fd is closed (the
//!    field order of [`Registered`]). That is why every socket type is `!Send`.
//! 2. Every blocking socket method is a single call to [`Registered::do_io`], or for a stream
//!    read to [`Registered::do_read`] (the same loop, which skips the first attempt when the
//!    reactor knows the socket is drained and records a short read: TCP only); no other file
//!    in `net/` parks on I/O.
//! 3. The deadline of a call is taken when it first has to wait, from the socket's timeout;
//!    its expiry is reported by the caller's choice of error (see the table in `net/mod.rs`).

use std::cell::Cell;
use std::io;
use std::marker::PhantomData;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use mio::Token;
use mio::event::Source;

use crate::hub::park::{self, Waiter, Wake};
use crate::hub::reactor::{Direction, ReadReadiness};
use crate::hub::scheduler;

/// A mio source registered with this thread's reactor for as long as it lives (rule 1).
pub(crate) struct Registered<S: Source> {
    source: S,
    token: Token,
    /// The registration's read readiness, shared with the reactor (reactor, "Read readiness").
    read: ReadReadiness,
    /// The token belongs to this thread's reactor.
    _not_send: PhantomData<*const ()>,
}

impl<S: Source + AsRawFd> Registered<S> {
    /// Registers `source` for both directions with this thread's hub. A socket that patched
    /// std code waited on (the `monkey` feature) is registered as a borrowed fd already: this
    /// registration replaces that one (reactor, "Owned sources and borrowed fds").
    pub(crate) fn new(source: S) -> io::Result<Registered<S>> {
        let (token, read) = scheduler::with(|hub| {
            park::with_reactor(hub, |reactor, parked| {
                let token = reactor.register(&source, parked)?;
                io::Result::Ok((token, reactor.readiness(token)))
            })
        })?;
        Ok(Registered { source, token, read, _not_send: PhantomData })
    }
}

impl<S: Source> Registered<S> {
    /// The source, for operations that never block (addresses, options).
    pub(crate) fn get(&self) -> &S {
        &self.source
    }

    /// Runs `op` until it does not report `WouldBlock`, parking the fiber on `dir` readiness in
    /// between; after `timeout` (counted from the first wait) gives `EAGAIN`/`WouldBlock`.
    #[inline]
    pub(crate) fn do_io<R>(
        &self,
        dir: Direction,
        timeout: Option<Duration>,
        mut op: impl FnMut(&S) -> io::Result<R>,
    ) -> io::Result<R> {
        // Fast path: no waiter, no clock.
        if let Some(r) = attempt(|| op(&self.source)) {
            return r;
        }
        wait_loop(self.token, dir, timeout, || op(&self.source))
    }

    /// [`do_io`](Self::do_io) for a TCP stream read into a buffer of `len` bytes. A read that
    /// returns fewer bytes than asked found the receive queue empty, so it records that with
    /// the reactor; the next read then parks at once instead of spending a `recv` that can only
    /// fail with `EAGAIN` (reactor rule 1 and "Read readiness"). Not for peeks (a short peek
    /// leaves the data queued), nor for vectored reads (the kernel may use only some of the
    /// buffers), nor for Unix streams: the kernel ends a Unix read early, with data still
    /// queued, after a message that carried file descriptors and between messages with
    /// different credentials (`SO_PASSCRED`).
    #[inline]
    pub(crate) fn do_read(
        &self,
        len: usize,
        timeout: Option<Duration>,
        mut op: impl FnMut(&S) -> io::Result<usize>,
    ) -> io::Result<usize> {
        let r = 'io: {
            // In non-blocking mode (a zero wait) the read is always tried: the drained mark
            // is cleared only by a poll, which a caller that never parks may never cause.
            if (timeout == Some(Duration::ZERO) || self.read.is_ready())
                && let Some(r) = attempt(|| op(&self.source))
            {
                break 'io r;
            }
            wait_loop(self.token, Direction::Read, timeout, || op(&self.source))
        };
        // No switch since `op` returned (it returns straight out of `wait_loop`).
        if let Ok(n) = r
            && is_short(n, len)
        {
            self.read.mark_drained();
        }
        r
    }

    /// Forgets a recorded drain, for calls (`shutdown`) after which a read may return at once.
    pub(crate) fn forget_drain(&self) {
        self.read.mark_unknown();
    }
}

/// Reads larger than this may be cut by the kernel (`read` and `recv` stop near 2 GiB), so a
/// short one proves nothing.
const SHORT_READ_MAX: usize = 1 << 30;

/// Did a stream read of `n` bytes into `len` find the receive queue empty?
fn is_short(n: usize, len: usize) -> bool {
    0 < n && n < len && len <= SHORT_READ_MAX
}

impl<S: Source> Drop for Registered<S> {
    fn drop(&mut self) {
        // Nobody can be parked on a socket being dropped (they would hold a borrow of it), but
        // if it happens, `with_reactor` wakes them: their retry sees the error, not a hang.
        scheduler::try_with(|hub| {
            park::with_reactor(hub, |reactor, parked| {
                if let Err(e) = reactor.deregister(self.token, parked) {
                    log::debug!("net: deregistering {:?}: {e}", self.token);
                }
            })
        });
    }
}

/// Runs `op` once, and again while it is interrupted (EINTR); `None` if it would block.
#[inline(always)]
fn attempt<R>(mut op: impl FnMut() -> io::Result<R>) -> Option<io::Result<R>> {
    loop {
        match op() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
            r => return Some(r),
        }
    }
}

/// The slow half of [`Registered::do_io`]: the loop in the module diagram.
fn wait_loop<R>(
    token: Token,
    dir: Direction,
    timeout: Option<Duration>,
    mut op: impl FnMut() -> io::Result<R>,
) -> io::Result<R> {
    if timeout == Some(Duration::ZERO) {
        return Err(io::Error::from(io::ErrorKind::WouldBlock)); // non-blocking mode
    }
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    let w = Waiter::new(match dir {
        Direction::Read => "a socket to become readable",
        Direction::Write => "a socket to become writable",
    });
    loop {
        // The caller's `op` has just failed with WouldBlock or EINTR; nothing switched since.
        if !scheduler::with(|hub| w.set_io(hub, token, dir)) {
            return Err(io::Error::other("greenfiber: socket used after its registration ended"));
        }
        // SWITCH: other fibers run; `op`'s captures are ours and unchanged.
        let wake = w.park(deadline);
        if let Some(r) = attempt(&mut op) {
            return r;
        }
        if wake == Wake::TimedOut {
            return Err(timed_out());
        }
    }
}

/// What std returns when `SO_RCVTIMEO`/`SO_SNDTIMEO` expires on Linux: `EAGAIN`.
pub(crate) fn timed_out() -> io::Error {
    io::Error::from_raw_os_error(libc::EAGAIN)
}

/// `Read` and `Write` for a stream socket type and for a shared reference to it, each call one
/// trip through [`Registered::do_io`] (or [`Registered::do_read`] when `short_read_drains`:
/// TCP only, see there). The type has the fields `io: Registered<_>` and
/// `timeouts: Rc<Timeouts>`; reads go straight to `recv` (as std's do, without its and mio's
/// wrappers), writes through `send` with `MSG_NOSIGNAL` (no SIGPIPE).
macro_rules! stream_read_write {
    ($t:ty, short_read_drains: $drains:literal) => {
        impl std::io::Read for &$t {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let len = buf.len();
                // `recv` with no flags, which on a socket is `read(2)` (as std's stream `read`).
                let read = |s: &_| crate::net::sys::recv(std::os::fd::AsRawFd::as_raw_fd(s), buf);
                if $drains {
                    self.io.do_read(len, self.timeouts.read_wait(), read)
                } else {
                    use crate::hub::reactor::Direction;
                    self.io.do_io(Direction::Read, self.timeouts.read_wait(), read)
                }
            }
            fn read_vectored(
                &mut self,
                bufs: &mut [std::io::IoSliceMut<'_>],
            ) -> std::io::Result<usize> {
                use crate::hub::reactor::Direction;
                self.io.do_io(Direction::Read, self.timeouts.read_wait(), |mut s| {
                    std::io::Read::read_vectored(&mut s, bufs)
                })
            }
        }

        impl std::io::Write for &$t {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                use crate::hub::reactor::Direction;
                use std::os::fd::AsRawFd;
                self.io.do_io(Direction::Write, self.timeouts.write_wait(), |s| {
                    crate::net::sys::send(s.as_raw_fd(), buf)
                })
            }
            fn write_vectored(&mut self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
                use crate::hub::reactor::Direction;
                use std::os::fd::AsRawFd;
                self.io.do_io(Direction::Write, self.timeouts.write_wait(), |s| {
                    crate::net::sys::send_vectored(s.as_raw_fd(), bufs)
                })
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }

        impl std::io::Read for $t {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                std::io::Read::read(&mut &*self, buf)
            }
            fn read_vectored(
                &mut self,
                bufs: &mut [std::io::IoSliceMut<'_>],
            ) -> std::io::Result<usize> {
                std::io::Read::read_vectored(&mut &*self, bufs)
            }
        }

        impl std::io::Write for $t {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                std::io::Write::write(&mut &*self, buf)
            }
            fn write_vectored(&mut self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
                std::io::Write::write_vectored(&mut &*self, bufs)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
    };
}
pub(crate) use stream_read_write;

/// The four timeout methods every socket type has, as std's: an impl block for a type with a
/// `timeouts: Rc<Timeouts>` field. On expiry a read or write fails with `WouldBlock`
/// (`EAGAIN`), as std's does on Linux.
macro_rules! timeout_methods {
    ($t:ty) => {
        impl $t {
            /// How long a read may wait; `None` (the default) waits forever. On expiry a read
            /// fails with `WouldBlock` (`EAGAIN`), as std's does on Linux. `Some(0)` is
            /// `InvalidInput`.
            pub fn set_read_timeout(&self, d: Option<std::time::Duration>) -> std::io::Result<()> {
                self.timeouts.set_read(d)
            }

            /// How long a write may wait; see `set_read_timeout`.
            pub fn set_write_timeout(&self, d: Option<std::time::Duration>) -> std::io::Result<()> {
                self.timeouts.set_write(d)
            }

            /// The read timeout.
            pub fn read_timeout(&self) -> std::io::Result<Option<std::time::Duration>> {
                Ok(self.timeouts.read_timeout())
            }

            /// The write timeout.
            pub fn write_timeout(&self) -> std::io::Result<Option<std::time::Duration>> {
                Ok(self.timeouts.write_timeout())
            }
        }
        $crate::net::io::nonblocking_method!($t);
    };
}
pub(crate) use timeout_methods;

/// `set_nonblocking` for a socket type with a `timeouts: Rc<Timeouts>` field.
macro_rules! nonblocking_method {
    ($t:ty) => {
        impl $t {
            /// In non-blocking mode an operation that would block fails at once with
            /// `WouldBlock` instead of parking the fiber, as std's does instead of blocking the
            /// thread. Shared with the socket's `try_clone`s, as `O_NONBLOCK` is.
            pub fn set_nonblocking(&self, nonblocking: bool) -> std::io::Result<()> {
                self.timeouts.set_nonblocking(nonblocking);
                Ok(())
            }
        }
    };
}
pub(crate) use nonblocking_method;

/// A socket's read and write timeouts and its blocking mode, shared by its `try_clone`s as
/// std's `SO_RCVTIMEO` and `O_NONBLOCK` are shared by duplicated descriptors.
#[derive(Debug, Default)]
pub(crate) struct Timeouts {
    read: Cell<Option<Duration>>,
    write: Cell<Option<Duration>>,
    /// `set_nonblocking(true)`: an operation that would block fails with `WouldBlock` at once.
    nonblocking: Cell<bool>,
}

impl Timeouts {
    /// The timeouts and mode of a std socket being taken over (which is about to become
    /// non-blocking underneath, when the kernel stops applying its timeouts).
    pub(crate) fn new(
        read: Option<Duration>,
        write: Option<Duration>,
        nonblocking: bool,
    ) -> Timeouts {
        Timeouts {
            read: Cell::new(read),
            write: Cell::new(write),
            nonblocking: Cell::new(nonblocking),
        }
    }
    /// How long a read may wait: the read timeout, or no wait at all in non-blocking mode
    /// (`Some(0)`, which [`wait_loop`] takes as "fail at once").
    pub(crate) fn read_wait(&self) -> Option<Duration> {
        if self.nonblocking.get() { Some(Duration::ZERO) } else { self.read.get() }
    }
    /// How long a write may wait; see [`read_wait`](Timeouts::read_wait).
    pub(crate) fn write_wait(&self) -> Option<Duration> {
        if self.nonblocking.get() { Some(Duration::ZERO) } else { self.write.get() }
    }
    pub(crate) fn read_timeout(&self) -> Option<Duration> {
        self.read.get()
    }
    pub(crate) fn write_timeout(&self) -> Option<Duration> {
        self.write.get()
    }
    pub(crate) fn set_nonblocking(&self, on: bool) {
        self.nonblocking.set(on);
    }
    pub(crate) fn set_read(&self, d: Option<Duration>) -> io::Result<()> {
        self.read.set(check_timeout(d)?);
        Ok(())
    }
    pub(crate) fn set_write(&self, d: Option<Duration>) -> io::Result<()> {
        self.write.set(check_timeout(d)?);
        Ok(())
    }
}

/// std refuses a zero timeout with `InvalidInput`; so do we.
pub(crate) fn check_timeout(d: Option<Duration>) -> io::Result<Option<Duration>> {
    if d == Some(Duration::ZERO) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "cannot set a 0 duration timeout"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kill_or_timeout_while_parked_leaves_no_waiter() {
        use std::io::Read;
        let (a, _b) = mio::net::UnixStream::pair().unwrap();
        let reg = std::rc::Rc::new(Registered::new(a).unwrap());
        let r2 = reg.clone();
        let g = crate::hub::spawn(move || {
            let _ = r2.do_io(Direction::Read, None, |mut s| s.read(&mut [0; 4]));
        });
        crate::hub::sleep(Duration::from_millis(5));
        let count = |reg: &Registered<mio::net::UnixStream>| {
            scheduler::with(|hub| {
                (hub.io_waits.get(), hub.reactor.borrow().waiters(reg.token, Direction::Read))
            })
        };
        assert_eq!(count(&reg), (1, Some(1)));
        g.kill();
        assert_eq!(count(&reg), (0, Some(0)));

        let t = crate::hub::with_timeout(Duration::from_millis(5), || {
            reg.do_io(Direction::Read, None, |mut s| s.read(&mut [0; 4]))
        });
        assert!(t.is_err());
        assert_eq!(count(&reg), (0, Some(0)));

        let e = reg
            .do_io(Direction::Read, Some(Duration::from_millis(5)), |mut s| s.read(&mut [0; 4]))
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(count(&reg), (0, Some(0)));
    }

    #[test]
    fn readers_woken_by_readiness_forget_their_registration() {
        use std::io::{Read, Write};
        let (a, mut b) = mio::net::UnixStream::pair().unwrap();
        let reg = std::rc::Rc::new(Registered::new(a).unwrap());
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let r = reg.clone();
                crate::hub::spawn(move || {
                    r.do_io(Direction::Read, None, |mut s| s.read(&mut [0; 1]))
                })
            })
            .collect();
        crate::hub::yield_now();
        let count = || {
            scheduler::with(|hub| {
                (hub.io_waits.get(), hub.reactor.borrow().waiters(reg.token, Direction::Read))
            })
        };
        assert_eq!(count(), (2, Some(2)));
        b.write_all(&[1]).unwrap();
        // Yield until the hub has polled: it hands both readers back and queues them behind
        // this coroutine, so the first look after the poll comes before either runs.
        let mut seen = None;
        for _ in 0..1000 {
            crate::hub::yield_now();
            let c = count();
            if c.1 == Some(0) {
                seen = Some(c);
                break;
            }
        }
        assert_eq!(seen, Some((0, Some(0))), "woken readers still counted as registered");
        // One reads the byte; the other finds nothing and parks again, exactly once.
        crate::hub::sleep(Duration::from_millis(5));
        assert_eq!(count(), (1, Some(1)));
        crate::hub::killall(&readers);
        assert_eq!(count(), (0, Some(0)));
        assert_eq!(readers.iter().filter(|g| g.successful()).count(), 1);
    }

    #[test]
    fn an_interrupted_operation_is_tried_again_in_every_mode() {
        let (a, _b) = mio::net::UnixStream::pair().unwrap();
        let reg = Registered::new(a).unwrap();
        for timeout in [None, Some(Duration::ZERO), Some(Duration::from_secs(5))] {
            let mut tries = 0;
            let r = reg.do_io(Direction::Write, timeout, |_| {
                tries += 1;
                if tries < 3 { Err(io::ErrorKind::Interrupted.into()) } else { Ok(tries) }
            });
            assert_eq!(r.unwrap(), 3, "{timeout:?}");
            let mut tries = 0;
            let r = reg.do_read(8, timeout, |_| {
                tries += 1;
                if tries < 2 { Err(io::ErrorKind::Interrupted.into()) } else { Ok(8) }
            });
            assert_eq!(r.unwrap(), 8, "{timeout:?}");
        }
    }
}
