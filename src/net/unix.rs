//! [`UnixListener`] and [`UnixStream`]: `std::os::unix::net`'s stream types, cooperative.

use std::io;
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::SocketAddr;
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use super::io::{Registered, Timeouts};
use super::sys;
use crate::hub::reactor::Direction::Read as R;

/// A Unix-domain socket server (`std::os::unix::net::UnixListener`, cooperative). `!Send`.
pub struct UnixListener {
    io: Registered<mio::net::UnixListener>,
    /// Only its blocking mode is used (a listener has no timeouts).
    timeouts: Rc<Timeouts>,
}

/// A Unix-domain stream (`std::os::unix::net::UnixStream`, cooperative). `!Send`.
/// `Read`/`Write` are implemented for `&UnixStream` too.
pub struct UnixStream {
    io: Registered<mio::net::UnixStream>,
    timeouts: Rc<Timeouts>,
}

/// The iterator of [`UnixListener::incoming`]; it never returns `None`.
#[derive(Debug)]
pub struct UnixIncoming<'a> {
    listener: &'a UnixListener,
}

impl UnixListener {
    /// Binds to the socket file `path` (which must not exist) and listens.
    pub fn bind<P: AsRef<Path>>(path: P) -> io::Result<UnixListener> {
        let l = mio::net::UnixListener::bind(path)?;
        Ok(UnixListener { io: Registered::new(l)?, timeouts: Rc::default() })
    }

    /// Takes over a listening std socket, making it non-blocking underneath; a listener the
    /// program had made non-blocking stays so (its `accept` gives `WouldBlock`).
    pub fn from_std(l: std::os::unix::net::UnixListener) -> io::Result<UnixListener> {
        let timeouts = Rc::new(Timeouts::new(None, None, sys::is_nonblocking(l.as_raw_fd())?));
        l.set_nonblocking(true)?;
        Ok(UnixListener { io: Registered::new(mio::net::UnixListener::from_std(l))?, timeouts })
    }

    /// Waits for a connection; the fiber parks while none is pending.
    pub fn accept(&self) -> io::Result<(UnixStream, SocketAddr)> {
        let (s, a) = self.io.do_io(R, self.timeouts.read_wait(), |l| l.accept())?;
        Ok((UnixStream::from_mio(s)?, a))
    }

    /// An iterator over accepted connections.
    pub fn incoming(&self) -> UnixIncoming<'_> {
        UnixIncoming { listener: self }
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.get().local_addr()
    }

    /// A second handle with its own fd and registration.
    pub fn try_clone(&self) -> io::Result<UnixListener> {
        let fd = self.io.get().as_fd().try_clone_to_owned()?;
        let l = mio::net::UnixListener::from_std(std::os::unix::net::UnixListener::from(fd));
        Ok(UnixListener { io: Registered::new(l)?, timeouts: self.timeouts.clone() })
    }

    /// Takes the pending `SO_ERROR`.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.io.get().take_error()
    }
}

impl<'a> Iterator for UnixIncoming<'a> {
    type Item = io::Result<UnixStream>;
    fn next(&mut self) -> Option<io::Result<UnixStream>> {
        Some(self.listener.accept().map(|(s, _)| s))
    }
}

impl UnixStream {
    fn from_mio(s: mio::net::UnixStream) -> io::Result<UnixStream> {
        Ok(UnixStream { io: Registered::new(s)?, timeouts: Rc::default() })
    }

    /// Takes over a connected std stream, making it non-blocking underneath; its read and
    /// write timeouts carry over, and so does a non-blocking mode the program had set.
    pub fn from_std(s: std::os::unix::net::UnixStream) -> io::Result<UnixStream> {
        let nb = sys::is_nonblocking(s.as_raw_fd())?;
        let timeouts = Rc::new(Timeouts::new(s.read_timeout()?, s.write_timeout()?, nb));
        s.set_nonblocking(true)?;
        Ok(UnixStream { io: Registered::new(mio::net::UnixStream::from_std(s))?, timeouts })
    }

    /// Connects to the socket file `path`. A Unix-domain connect completes at once or fails;
    /// when the listener's backlog is full (`EAGAIN`) it is retried every millisecond, with
    /// other fibers running meanwhile, as a blocking connect would wait.
    pub fn connect<P: AsRef<Path>>(path: P) -> io::Result<UnixStream> {
        loop {
            match mio::net::UnixStream::connect(path.as_ref()) {
                Ok(s) => return UnixStream::from_mio(s),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    crate::hub::sleep(Duration::from_millis(1))
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// A connected pair.
    pub fn pair() -> io::Result<(UnixStream, UnixStream)> {
        let (a, b) = mio::net::UnixStream::pair()?;
        Ok((UnixStream::from_mio(a)?, UnixStream::from_mio(b)?))
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.get().local_addr()
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.io.get().peer_addr()
    }

    /// Shuts down one or both halves.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        // A read after this may return at once: do not let a recorded drain park it.
        self.io.forget_drain();
        self.io.get().shutdown(how)
    }

    /// A second handle with its own fd and registration; timeouts are shared.
    pub fn try_clone(&self) -> io::Result<UnixStream> {
        let fd = self.io.get().as_fd().try_clone_to_owned()?;
        let s = mio::net::UnixStream::from_std(std::os::unix::net::UnixStream::from(fd));
        Ok(UnixStream { io: Registered::new(s)?, timeouts: self.timeouts.clone() })
    }

    /// Takes the pending `SO_ERROR`.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.io.get().take_error()
    }
}

super::io::stream_read_write!(UnixStream, short_read_drains: false);

super::tcp::fd_traits!(UnixListener, UnixStream);

super::io::timeout_methods!(UnixStream);
super::io::nonblocking_method!(UnixListener);
