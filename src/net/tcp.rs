//! [`TcpListener`] and [`TcpStream`]: `std::net`'s TCP types whose blocking calls park the
//! fiber. Each method is a delegation to mio/std or one call into `io.rs`.

use std::io;
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::rc::Rc;
use std::time::Duration;

use super::addr::{ToSocketAddrs, each_addr};
use super::io::{Registered, Timeouts, check_timeout};
use super::sys;
use crate::hub::reactor::Direction::{Read as R, Write as W};

/// The listen backlog of [`TcpListener::bind`]: a fiber server accepts only when the hub runs
/// its accept fiber, so bursts of connections queue here (std and mio use 128).
pub const LISTEN_BACKLOG: i32 = 1024;

/// A TCP socket server, listening for connections (`std::net::TcpListener`, cooperative).
///
/// `!Send`: it is registered with the hub of the thread that created it.
pub struct TcpListener {
    io: Registered<mio::net::TcpListener>,
    /// Only its blocking mode is used (a listener has no timeouts).
    timeouts: Rc<Timeouts>,
}

/// A TCP stream between a local and a remote socket (`std::net::TcpStream`, cooperative).
///
/// Reads and writes park the calling fiber instead of blocking the thread. `Read` and `Write`
/// are implemented for `&TcpStream` too, so one fiber can read while another writes through a
/// shared reference or a [`try_clone`](TcpStream::try_clone). Two fibers reading at once split
/// the data between them, each byte to one of them, as two threads reading a std stream do
/// (gevent raises `ConcurrentObjectUseError` instead).
pub struct TcpStream {
    io: Registered<mio::net::TcpStream>,
    timeouts: Rc<Timeouts>,
}

/// The iterator of [`TcpListener::incoming`]; it never returns `None`.
#[derive(Debug)]
pub struct Incoming<'a> {
    listener: &'a TcpListener,
}

impl TcpListener {
    /// Binds to `addr` (each resolved address in turn until one works) and listens.
    /// The socket has `SO_REUSEADDR` set and a backlog of [`LISTEN_BACKLOG`].
    pub fn bind<A: ToSocketAddrs>(addr: A) -> io::Result<TcpListener> {
        let l = each_addr(&addr, |a| mio::net::TcpListener::bind(*a))?;
        sys::set_backlog(l.as_raw_fd(), LISTEN_BACKLOG)?;
        Ok(TcpListener { io: Registered::new(l)?, timeouts: Rc::default() })
    }

    /// Takes over a listening std socket, making it non-blocking underneath; a listener the
    /// program had made non-blocking stays so (its `accept` gives `WouldBlock`).
    pub fn from_std(l: std::net::TcpListener) -> io::Result<TcpListener> {
        let timeouts = Rc::new(Timeouts::new(None, None, sys::is_nonblocking(l.as_raw_fd())?));
        l.set_nonblocking(true)?;
        Ok(TcpListener { io: Registered::new(mio::net::TcpListener::from_std(l))?, timeouts })
    }

    /// Waits for a connection; the fiber parks while none is pending.
    pub fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let (s, a) = self.io.do_io(R, self.timeouts.read_wait(), |l| l.accept())?;
        Ok((TcpStream::from_mio(s)?, a))
    }

    /// An iterator over accepted connections (`accept` in a loop).
    pub fn incoming(&self) -> Incoming<'_> {
        Incoming { listener: self }
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.get().local_addr()
    }

    /// A second handle on the same socket, with its own fd and its own registration.
    pub fn try_clone(&self) -> io::Result<TcpListener> {
        let fd = self.io.get().as_fd().try_clone_to_owned()?;
        let l = mio::net::TcpListener::from_std(std::net::TcpListener::from(fd));
        Ok(TcpListener { io: Registered::new(l)?, timeouts: self.timeouts.clone() })
    }

    /// Sets `IP_TTL`.
    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        self.io.get().set_ttl(ttl)
    }

    /// Gets `IP_TTL`.
    pub fn ttl(&self) -> io::Result<u32> {
        self.io.get().ttl()
    }

    /// Takes the pending `SO_ERROR`.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.io.get().take_error()
    }
}

impl<'a> Iterator for Incoming<'a> {
    type Item = io::Result<TcpStream>;
    fn next(&mut self) -> Option<io::Result<TcpStream>> {
        Some(self.listener.accept().map(|(s, _)| s))
    }
}

impl TcpStream {
    fn from_mio(s: mio::net::TcpStream) -> io::Result<TcpStream> {
        Ok(TcpStream { io: Registered::new(s)?, timeouts: Rc::default() })
    }

    /// Takes over a connected std stream, making it non-blocking underneath; its read and
    /// write timeouts carry over, and so does a non-blocking mode the program had set.
    pub fn from_std(s: std::net::TcpStream) -> io::Result<TcpStream> {
        let nb = sys::is_nonblocking(s.as_raw_fd())?;
        let timeouts = Rc::new(Timeouts::new(s.read_timeout()?, s.write_timeout()?, nb));
        s.set_nonblocking(true)?;
        Ok(TcpStream { io: Registered::new(mio::net::TcpStream::from_std(s))?, timeouts })
    }

    /// Connects to `addr`, trying each resolved address in turn; the fiber parks during the
    /// handshake. Returns the last error if none accepts (e.g. `ConnectionRefused`).
    pub fn connect<A: ToSocketAddrs>(addr: A) -> io::Result<TcpStream> {
        each_addr(&addr, |a| TcpStream::connect_inner(a, None))
    }

    /// Connects to one address, giving up with `TimedOut` after `timeout` (as std does; a zero
    /// timeout is `InvalidInput`).
    pub fn connect_timeout(addr: &SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
        check_timeout(Some(timeout))?;
        TcpStream::connect_inner(addr, Some(timeout))
    }

    fn connect_inner(addr: &SocketAddr, timeout: Option<Duration>) -> io::Result<TcpStream> {
        let s = TcpStream::from_mio(mio::net::TcpStream::connect(*addr)?)?;
        // The handshake is done when the socket turns writable: then SO_ERROR says how it went.
        let r = s.io.do_io(W, timeout, |s| {
            if let Some(e) = s.take_error()? {
                return Err(e);
            }
            match s.peer_addr() {
                Ok(_) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                    Err(io::ErrorKind::WouldBlock.into())
                }
                Err(e) => Err(e),
            }
        });
        match r {
            Ok(()) => Ok(s),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                Err(io::Error::new(io::ErrorKind::TimedOut, "connection timed out"))
            }
            Err(e) => Err(e),
        }
    }

    /// The remote address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.io.get().peer_addr()
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.get().local_addr()
    }

    /// Shuts down the read half, the write half or both; a fiber parked in `read` on this
    /// socket then sees EOF.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        // A read after this may return at once: do not let a recorded drain park it.
        self.io.forget_drain();
        self.io.get().shutdown(how)
    }

    /// A second handle on the same connection, with its own fd and its own registration; the
    /// timeouts are shared, as they are for std's clones.
    pub fn try_clone(&self) -> io::Result<TcpStream> {
        let fd = self.io.get().as_fd().try_clone_to_owned()?;
        let s = mio::net::TcpStream::from_std(std::net::TcpStream::from(fd));
        Ok(TcpStream { io: Registered::new(s)?, timeouts: self.timeouts.clone() })
    }

    /// Reads without consuming; parks like `read`.
    pub fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.io.do_io(R, self.timeouts.read_wait(), |s| s.peek(buf))
    }

    /// Sets `TCP_NODELAY`.
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.io.get().set_nodelay(nodelay)
    }

    /// Gets `TCP_NODELAY`.
    pub fn nodelay(&self) -> io::Result<bool> {
        self.io.get().nodelay()
    }

    /// Sets `IP_TTL`.
    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        self.io.get().set_ttl(ttl)
    }

    /// Gets `IP_TTL`.
    pub fn ttl(&self) -> io::Result<u32> {
        self.io.get().ttl()
    }

    /// Takes the pending `SO_ERROR`.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.io.get().take_error()
    }
}

super::io::stream_read_write!(TcpStream, short_read_drains: true);

macro_rules! fd_traits {
    ($($t:ty),*) => {$(
        impl AsRawFd for $t {
            fn as_raw_fd(&self) -> RawFd {
                self.io.get().as_raw_fd()
            }
        }
        impl AsFd for $t {
            fn as_fd(&self) -> BorrowedFd<'_> {
                self.io.get().as_fd()
            }
        }
        impl std::fmt::Debug for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                std::fmt::Debug::fmt(self.io.get(), f)
            }
        }
    )*};
}
pub(crate) use fd_traits;
fd_traits!(TcpListener, TcpStream);

super::io::timeout_methods!(TcpStream);
super::io::nonblocking_method!(TcpListener);
