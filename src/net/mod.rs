//! Layer 3: `std::net`-shaped sockets whose blocking calls park the fiber instead of the thread.
//!
//! Switching is a `use` change:
//!
//! ```
//! use std::io::{BufRead, BufReader, Write};
//! use greenfiber::net::{TcpListener, TcpStream};   // was: use std::net::{...};
//!
//! let listener = TcpListener::bind("127.0.0.1:0").unwrap();
//! let addr = listener.local_addr().unwrap();
//! let server = greenfiber::spawn(move || {
//!     let (mut s, _) = listener.accept().unwrap();
//!     let mut line = String::new();
//!     BufReader::new(&s).read_line(&mut line).unwrap();
//!     s.write_all(line.to_uppercase().as_bytes()).unwrap();
//! });
//! let mut c = TcpStream::connect(addr).unwrap(); // main parks; the server fiber runs
//! c.write_all(b"hello\n").unwrap();
//! let mut reply = String::new();
//! BufReader::new(&c).read_line(&mut reply).unwrap();
//! assert_eq!(reply, "HELLO\n");
//! server.join();
//! ```
//!
//! Every socket is non-blocking underneath and registered with the hub of the thread that
//! created it, so the types are `!Send`. An operation is tried first; only when the kernel says
//! `EAGAIN` does the fiber park until the socket is ready (the one loop in `io.rs`). `EINTR` is
//! retried. A fiber killed or timed out (`with_timeout`) while parked leaves no waiter behind,
//! and the socket stays usable.
//!
//! ```compile_fail
//! // A socket belongs to the hub of its thread: it cannot be sent to another thread.
//! fn send<T: Send>(_: T) {}
//! send(greenfiber::net::TcpListener::bind("127.0.0.1:0").unwrap());
//! ```
//!
//! # Results: what each outcome looks like (the same as `std::net` on Linux)
//!
//! | situation                                      | result                                          |
//! |------------------------------------------------|-------------------------------------------------|
//! | peer closed its write half (EOF)               | `read` → `Ok(0)`                                |
//! | short write (socket buffer nearly full)        | `write` → `Ok(n)`, `n < buf.len()`; `write_all` loops |
//! | `set_read_timeout(Some(d))` expired            | `Err`, kind `WouldBlock` (`EAGAIN`, os error 11) |
//! | `set_write_timeout(Some(d))` expired           | `Err`, kind `WouldBlock` (`EAGAIN`)             |
//! | `set_*_timeout(Some(Duration::ZERO))`          | `Err`, kind `InvalidInput`                      |
//! | `connect_timeout` expired                      | `Err`, kind `TimedOut`                          |
//! | nobody listens (`connect`)                     | `Err`, kind `ConnectionRefused`                 |
//! | peer reset the connection                      | `Err`, kind `ConnectionReset`                   |
//! | write after the peer closed                    | `Err`, kind `BrokenPipe` (or `ConnectionReset`); never `SIGPIPE` |
//! | `with_timeout` fired while parked in a call    | the call unwinds; `with_timeout` → `Err(Timeout)` |
//! | fiber killed while parked in a call            | the call unwinds with `GreenletExit`            |
//! | `EINTR`                                        | retried, never returned                         |
//!
//! Writes use `send`/`sendmsg` with `MSG_NOSIGNAL`, so a closed peer never raises `SIGPIPE`,
//! even in a host program that has not ignored it.
//!
//! # Name resolution
//! Addresses are given as [`ToSocketAddrs`] — the same types std accepts. Literal IPs are used
//! as they are; a host name is looked up on another OS thread while the fiber parks.
//!
//! # Files
//! - `io.rs`: the registration and the one I/O loop (`do_io`).
//! - `tcp.rs`, `udp.rs`, `unix.rs`: the socket types, each method a delegation or one `do_io`.
//! - `addr.rs`: [`ToSocketAddrs`] and off-hub lookups.
//! - `sys.rs`: the few raw system calls (`send` with `MSG_NOSIGNAL`, ...).

mod addr;
pub(crate) mod io;
mod sys;
mod tcp;
mod udp;
mod unix;

pub use addr::ToSocketAddrs;
pub use tcp::{Incoming, LISTEN_BACKLOG, TcpListener, TcpStream};
pub use udp::UdpSocket;
pub use unix::{UnixIncoming, UnixListener, UnixStream};
