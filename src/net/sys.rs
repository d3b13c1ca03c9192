//! The raw OS calls of the net layer, each behind `syscall!`: the only file in `net/` that
//! calls libc directly.
//!
//! Contract: every function here takes a descriptor its caller keeps open for the duration of
//! the call, performs exactly one system call, and returns its result as an `io::Result`
//! (`-1` becomes `io::Error::last_os_error()`). None of them blocks: the sockets are
//! non-blocking. `EINTR` is returned as
//! `ErrorKind::Interrupted` and retried by `io.rs`.

use std::io::{self, IoSlice};
use std::os::fd::RawFd;

/// Calls a libc function and turns `-1` into the thread's `errno` as an `io::Error`.
macro_rules! syscall {
    ($fn:ident ( $($arg:expr),* $(,)? )) => {{
        // SAFETY: the callers below pass a descriptor they keep open and pointers/lengths that
        // describe live buffers for the duration of the call (this module's contract).
        let res = unsafe { libc::$fn($($arg),*) };
        if res == -1 { Err(io::Error::last_os_error()) } else { Ok(res) }
    }};
}

/// `send(2)` with `MSG_NOSIGNAL`: a write to a socket whose peer has gone gives `EPIPE` as an
/// error instead of raising `SIGPIPE`.
#[inline]
pub(crate) fn send(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    syscall!(send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL)).map(|n| n as usize)
}

/// `recv(2)` with no flags: on a socket, what `read(2)` does.
#[inline]
pub(crate) fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    syscall!(recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0)).map(|n| n as usize)
}

/// The most buffers one `sendmsg` takes (`UIO_MAXIOV` on Linux).
const IOV_MAX: usize = 1024;

/// `sendmsg(2)` of several buffers with `MSG_NOSIGNAL` (vectored [`send`]).
pub(crate) fn send_vectored(fd: RawFd, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    // SAFETY: `msghdr` is plain old data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // `IoSlice` is guaranteed ABI-compatible with `iovec` on Unix; sendmsg only reads them.
    msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
    // At most IOV_MAX (1024 on Linux) buffers, as std passes: more fail with EMSGSIZE instead
    // of making the short write a vectored write may make.
    msg.msg_iovlen = bufs.len().min(IOV_MAX) as _;
    syscall!(sendmsg(fd, &msg, libc::MSG_NOSIGNAL)).map(|n| n as usize)
}

/// Is `O_NONBLOCK` set on `fd` (a std socket's mode, read before it is taken over)?
pub(crate) fn is_nonblocking(fd: RawFd) -> io::Result<bool> {
    syscall!(fcntl(fd, libc::F_GETFL)).map(|fl| fl & libc::O_NONBLOCK != 0)
}

/// `listen(2)` again on a listening socket: on Linux this only changes its backlog.
pub(crate) fn set_backlog(fd: RawFd, backlog: i32) -> io::Result<()> {
    syscall!(listen(fd, backlog)).map(drop)
}
