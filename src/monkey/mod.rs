//! Layer 5: gevent's `monkey.patch_all()` for Rust — unmodified `std::thread::sleep`,
//! `std::net` and blocking C libraries yield to the hub inside fibers (cargo feature `monkey`).
//!
//! ```no_run
//! use std::io::{Read, Write};
//! use std::net::TcpStream;
//!
//! greenfiber::monkey::patch_all();
//! let fetches: Vec<_> = (0..10)
//!     .map(|_| {
//!         greenfiber::spawn(|| {
//!             let mut s = TcpStream::connect("127.0.0.1:8080").unwrap(); // yields
//!             s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
//!             let mut body = String::new();
//!             s.read_to_string(&mut body).unwrap(); // yields while waiting
//!             body.len()
//!         })
//!     })
//!     .collect();
//! greenfiber::joinall(&fetches, None); // the ten fetches overlap
//! ```
//!
//! Rust cannot replace a module's functions at run time, but a `#[no_mangle] extern "C" fn
//! recv` linked into the program takes precedence over glibc's `recv` for every caller in the
//! process — std, C libraries, blocking crates. The real function is found with
//! `dlsym(RTLD_NEXT, "recv")`. With the feature on, the hooks are always linked; they do
//! nothing but forward until [`patch_all`] is called.
//!
//! # What is hooked
//!
//! | symbol | inside a fiber |
//! |---|---|
//! | `clock_nanosleep` (std's `thread::sleep`), `nanosleep`, `sleep`, `usleep` | the hub's `sleep` |
//! | `read`, `write`, `readv`, `writev`, `recv`, `send`, `recvfrom`, `sendto`, `recvmsg`, `sendmsg` | try; on EAGAIN wait for readiness on the hub; honour SO_RCVTIMEO/SO_SNDTIMEO (expiry: EAGAIN, which std reports as `WouldBlock`). `write`, `writev`, `send`, `sendto` and `sendmsg` go on until every byte is queued, and `recv`/`recvfrom`/`recvmsg` with `MSG_WAITALL` on a stream socket until the buffer is full, as the blocking calls do (a Unix socket's `recvmsg` excepted: a read there stops at a message with descriptors, which only the caller's header can take, so it returns what one call gets) |
//! | `accept`, `accept4` | as reads, on the listener |
//! | `connect` | non-blocking connect, wait for writability, then `SO_ERROR` |
//! | `poll` | one fd waiting for POLLIN or POLLOUT (std's `connect_timeout`) waits on the hub; anything else passes through |
//! | `ioctl(FIONBIO)`, `fcntl(F_SETFL)` | record the user's own blocking mode |
//! | `fcntl(F_GETFL)` | hides the O_NONBLOCK the hooks set |
//! | `fcntl(F_DUPFD*)`, `dup`, `dup2`, `dup3` | the copy shares the state; once a fiber makes one copy non-blocking underneath, the other emulates blocking too |
//! | `close`, `close_range`, `closefrom`, `fclose` | forget the fd(s); a fiber waiting on one wakes with EBADF |
//! | `socket`, `socketpair`, `pipe2` | record the new fds |
//!
//! Sockets and pipes are managed (made non-blocking underneath, lazily, the first time a fiber
//! uses them); other fds (files, ttys, eventfds) always pass through. Every hook passes
//! straight through to libc, with libc's exact behaviour and `errno`:
//! - before `patch_all()`, on a thread without a hub, in the hub itself, and in the main
//!   coroutine while the hub has nothing else to do (no ready fiber, timer or I/O waiter);
//! - on fds 0–2, and on fds the caller made non-blocking itself (`set_nonblocking(true)`,
//!   `SOCK_NONBLOCK`, `MSG_DONTWAIT`): those get EAGAIN as they asked;
//! - on an fd made non-blocking by the hooks but used outside a fiber, the hook blocks with a
//!   real `poll` so the caller still sees a blocking fd.
//!
//! The fast path of a hook when it passes through is one relaxed atomic load and one
//! `const` thread-local read (no lazy thread-local: hooks run before `main` and during thread
//! teardown). `hook_calls` counts the calls that took the slow path.
//!
//! # Limits
//!
//! - A `std::sync::Mutex` (or any futex-based lock) held across a hooked call that yields can
//!   deadlock the hub: another fiber on the same thread blocks the whole thread on it. Use the
//!   hub's own primitives, or release the lock before I/O.
//! - DNS (`getaddrinfo`, used by `ToSocketAddrs` for names) is not hooked and blocks the
//!   thread; resolve in the blocking thread pool, or use IP addresses.
//! - Crates that make raw syscalls (`libc::syscall`, rustix's linux_raw backend) and static
//!   binaries are not patched: they never enter the hooks. An fd such code closes keeps the
//!   hooks' state for its number, and a new file that gets the number inherits it (a fiber
//!   could wait on a registration the kernel dropped, or skip making a new blocking pipe
//!   non-blocking). Close such fds with `close`, or never let a fiber use them.
//! - Hooks do not yield inside signal handlers: a signal handler must not make a blocking
//!   hooked call on a managed fd inside a fiber (writing to fds 0–2 or to a self-pipe the
//!   program made non-blocking passes through, as does any hook called while another hook's
//!   bookkeeping runs on the thread).
//! - A kill (`Greenlet::kill`) or `with_timeout` expiry that hits a fiber inside a hooked
//!   wait cannot unwind through the C caller: the call returns an error instead (ECANCELED
//!   for a kill, ETIMEDOUT for a timeout; a sleep just ends early), and the raise is held for
//!   the fiber (`hub/held.rs`). Until it is raised, every later hooked wait of that fiber
//!   fails at once with the same error (a sleep returns at once), after one yield. The held
//!   raise is raised at the fiber's next wait outside a hooked call (a `greenfiber` sleep,
//!   join, socket or lock); a fiber that returns instead still ends as killed, and a
//!   `with_timeout` whose closure returns still gives `Err(Timeout)`. A loop that ignores
//!   the errors and never waits outside a hooked call (`loop { std::thread::sleep(..) }`)
//!   cannot be ended: its kill waits for ever, while the rest of the thread runs.
//! - fds at or above 65536 and multi-fd `poll`/`select`/`epoll_wait` pass through and block
//!   the thread.
//! - The blocking mode is recorded per fd, but `O_NONBLOCK` belongs to the open file; a mode
//!   change through one `dup`/`try_clone` copy is not seen on the other copy.
//! - A child process that inherits a socket or pipe the hooks made non-blocking (one a fiber
//!   used, or a copy of one) inherits `O_NONBLOCK` with it: the open file is shared, so the
//!   hooks cannot clear it for the child without changing it for the parent. Hand children
//!   pipes no fiber has used (duplicating one, as `Command` with a `try_clone` does, is fine).
//! - `ioctl` and `fcntl` are defined with three fixed arguments (stable Rust cannot define a
//!   variadic function); that is ABI-compatible on x86_64 Linux, the supported target.
//! - `links = "greenfiber_monkey"` in Cargo.toml refuses two copies of greenfiber in one
//!   binary (both would define the symbols).

use std::sync::atomic::{AtomicBool, Ordering};

mod fd_table;
mod hooks;
mod real;

/// Set once by [`patch_all`]; read (relaxed) by every hook's fast path.
static PATCHED: AtomicBool = AtomicBool::new(false);

/// Turns the hooks on for the whole process: from now on, blocking calls inside fibers yield
/// to their thread's hub (see the module docs for what is hooked). Idempotent.
///
/// Resolves every real libc function first, so no hook resolves anything while fibers run.
pub fn patch_all() {
    real::resolve_all();
    PATCHED.store(true, Ordering::SeqCst);
}

/// True once [`patch_all`] was called.
pub fn is_patched() -> bool {
    PATCHED.load(Ordering::Relaxed)
}

/// Diagnostics: for each hooked symbol, how many calls took the slow path (made after
/// `patch_all()` on a thread with a hub, or, for `close`/`fcntl`/`socket`-like bookkeeping
/// hooks, anywhere after `patch_all()`). Tests use it to see which libc function a std API
/// enters.
pub fn hook_calls() -> Vec<(&'static str, u64)> {
    hooks::calls()
}
