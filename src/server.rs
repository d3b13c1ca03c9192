//! [`StreamServer`]: gevent's `StreamServer` — an accept loop in its own fiber and one fiber
//! per connection.
//!
//! ```no_run
//! use std::io::{BufRead, BufReader, Write};
//! use greenfiber::server::StreamServer;
//!
//! let server = StreamServer::new("127.0.0.1:16000", |stream, addr| {
//!     let mut w = &stream;
//!     for line in BufReader::new(&stream).lines() {
//!         let Ok(line) = line else { break };
//!         if w.write_all(format!("{addr} said {line}\n").as_bytes()).is_err() { break }
//!     }
//! })
//! .unwrap()
//! .max_connections(10_000);
//! server.serve_forever().unwrap(); // until another fiber calls server.stop()
//! ```
//!
//! # Behaviour (after gevent's `baseserver.py`)
//! - [`start`](StreamServer::start) returns at once; the accept loop runs in a fiber named
//!   `"StreamServer"`. [`serve_forever`](StreamServer::serve_forever) starts and then waits until
//!   [`stop`](StreamServer::stop) is called (from a handler or any other fiber) and has
//!   finished, grace period and kills included, so a program whose `main` ends with
//!   `serve_forever()` does not exit in the middle of a response. If the fiber in
//!   `serve_forever` is killed, the server is stopped from a new fiber.
//! - Each accepted connection runs `handler(stream, peer)` in its own fiber. When the handler
//!   returns, the stream is dropped, which closes the connection. A handler that panics is
//!   logged with `log::error!` naming the peer; only its connection closes.
//! - [`max_connections`](StreamServer::max_connections)`(n)`: at `n` running handlers the accept
//!   loop stops accepting (new connections wait in the listen backlog) until one finishes.
//! - `stop()`: stops accepting and closes the listening socket, then waits up to the grace
//!   period ([`stop_timeout`](StreamServer::stop_timeout), 1 s by default as in gevent) for the
//!   running handlers, then kills the rest and waits at most 1 s more for them to die (as
//!   gevent's `pool.kill(timeout=1)`: a handler that swallows its kill is logged and left).
//!   A handler that calls `stop()` is neither waited for nor killed. A stopped server cannot
//!   be started again.
//! - When `accept` fails because the process or system is out of descriptors or memory
//!   (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`), the loop logs a warning and sleeps, from 10 ms
//!   doubling up to 1 s, then retries: it never spins and never stops serving. Other accept
//!   errors are logged and retried the same way; an aborted handshake is skipped silently.
//! - Dropping the last `StreamServer` handle does not stop a started server: like any spawned
//!   fiber, its accept loop runs until [`stop`](StreamServer::stop).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::coroutine::{Coroutine, GreenletExit, current};
use crate::hub::park::WaitList;
use crate::hub::{Greenlet, sleep, spawn_named};
use crate::net::{TcpListener, TcpStream, ToSocketAddrs};
use crate::sync::Semaphore;

/// gevent's default grace period for `stop`.
const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(1);
/// How long `stop` waits for killed handlers to die (gevent's `pool.kill(timeout=1)`).
const KILL_TIMEOUT: Duration = Duration::from_secs(1);
/// First and longest sleep after an accept error (gevent's `min_delay`/`max_delay`).
const MIN_ACCEPT_DELAY: Duration = Duration::from_millis(10);
const MAX_ACCEPT_DELAY: Duration = Duration::from_secs(1);

/// A TCP server running a handler fiber per connection; see the module docs.
///
/// Every method but the two builders (`max_connections`, `stop_timeout`) takes `&self`, so a
/// server can sit in an `Rc` while one fiber serves and another stops it.
pub struct StreamServer {
    inner: Rc<Inner>,
}

type Handler = dyn Fn(TcpStream, SocketAddr);

struct Inner {
    addr: SocketAddr,
    /// `None` once stopped (the socket is closed).
    listener: RefCell<Option<Rc<TcpListener>>>,
    handler: Rc<Handler>,
    /// The connection limit (gevent's StreamServer uses a pool for it): one permit per
    /// running handler, so accepting pauses at the limit. The sync layer's semaphore hands a
    /// freed permit straight to the waiting accept loop, so a kill loses none.
    limit: RefCell<Rc<Semaphore>>,
    stop_timeout: Cell<Duration>,
    acceptor: RefCell<Option<Greenlet<()>>>,
    /// Running handler fibers by connection number.
    handlers: RefCell<HashMap<u64, Greenlet<()>>>,
    next_conn: Cell<u64>,
    /// Woken whenever a handler ends (stop's grace period waits on it).
    handler_ended: WaitList,
    /// True once `stop` has begun.
    stopped: Cell<bool>,
    /// The fibers inside `stop` now (a handler among them is neither waited for nor killed by
    /// any stop).
    stoppers: RefCell<Vec<Coroutine>>,
    /// Woken when the last fiber inside `stop` leaves it (serve_forever waits on it).
    stop_waiters: WaitList,
}

impl StreamServer {
    /// Binds `addr` and returns a server that is not yet accepting. The bind happens here, so a
    /// busy port is an `Err` now and [`local_addr`](StreamServer::local_addr) is known at once
    /// (useful with port 0).
    pub fn new(
        addr: impl ToSocketAddrs,
        handler: impl Fn(TcpStream, SocketAddr) + 'static,
    ) -> io::Result<StreamServer> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        Ok(StreamServer {
            inner: Rc::new(Inner {
                addr,
                listener: RefCell::new(Some(Rc::new(listener))),
                handler: Rc::new(handler),
                limit: RefCell::new(Rc::new(Semaphore::new(usize::MAX / 2))),
                stop_timeout: Cell::new(DEFAULT_STOP_TIMEOUT),
                acceptor: RefCell::new(None),
                handlers: RefCell::new(HashMap::new()),
                next_conn: Cell::new(0),
                handler_ended: WaitList::new(),
                stopped: Cell::new(false),
                stoppers: RefCell::new(Vec::new()),
                stop_waiters: WaitList::new(),
            }),
        })
    }

    /// Limits how many handlers run at once; at the limit, accepting pauses until one ends.
    ///
    /// # Panics
    /// If `n` is 0, or if the server was already started (its handlers hold permits of the
    /// limit it started with).
    pub fn max_connections(self, n: usize) -> StreamServer {
        assert!(n > 0, "greenfiber: max_connections must be at least 1");
        assert!(
            self.inner.acceptor.borrow().is_none() && !self.inner.stopped.get(),
            "greenfiber: max_connections must be set before the server starts"
        );
        *self.inner.limit.borrow_mut() = Rc::new(Semaphore::new(n));
        self
    }

    /// Sets the grace period of [`stop`](StreamServer::stop) (default 1 s).
    pub fn stop_timeout(self, d: Duration) -> StreamServer {
        self.inner.stop_timeout.set(d);
        self
    }

    /// Starts accepting in a new fiber and returns at once. A no-op if already started;
    /// `Err` if the server was stopped.
    pub fn start(&self) -> io::Result<()> {
        if self.inner.acceptor.borrow().is_some() {
            return Ok(());
        }
        let Some(listener) = self.inner.listener.borrow().clone() else {
            return Err(io::Error::other("greenfiber: the server was stopped"));
        };
        let inner = self.inner.clone();
        let g = spawn_named("StreamServer", move || accept_loop(&inner, &listener));
        *self.inner.acceptor.borrow_mut() = Some(g);
        log::debug!("server: listening on {}", self.inner.addr);
        Ok(())
    }

    /// Starts (if needed) and waits until [`stop`](StreamServer::stop) is called and has
    /// finished (gevent joins the stop, too). If the waiting fiber is killed, the server is
    /// stopped from a new fiber.
    pub fn serve_forever(&self) -> io::Result<()> {
        self.start()?;
        struct StopOnKill(Rc<Inner>);
        impl Drop for StopOnKill {
            fn drop(&mut self) {
                if std::thread::panicking() && !self.0.stopped.get() {
                    let s = StreamServer { inner: self.0.clone() };
                    crate::hub::spawn(move || s.stop());
                }
            }
        }
        let _guard = StopOnKill(self.inner.clone());
        while !self.inner.stopped.get() || !self.inner.stoppers.borrow().is_empty() {
            self.inner.stop_waiters.wait("StreamServer::stop", None);
        }
        Ok(())
    }

    /// Stops accepting, closes the listening socket, waits up to the grace period for running
    /// handlers, then kills the rest. Returns when every handler (but the caller) has ended,
    /// or 1 s after the kills if some handler survives its kill.
    pub fn stop(&self) {
        self.stop_with_timeout(self.inner.stop_timeout.get());
    }

    /// [`stop`](StreamServer::stop) with this grace period instead of the configured one.
    pub fn stop_with_timeout(&self, grace: Duration) {
        let inner = &self.inner;
        if !inner.stopped.replace(true) {
            log::debug!("server {}: stopping", inner.addr);
        }
        /// Leaves the set of stoppers however this stop ends (a kill or a timeout of the
        /// stopping fiber included), so `serve_forever` never waits for a stop that will not
        /// finish, and returns only once every concurrent stop has.
        struct Stopping<'a>(&'a Inner, Coroutine);
        impl Drop for Stopping<'_> {
            fn drop(&mut self) {
                let mut stoppers = self.0.stoppers.borrow_mut();
                if let Some(i) = stoppers.iter().position(|c| *c == self.1) {
                    stoppers.swap_remove(i);
                }
                if stoppers.is_empty() {
                    drop(stoppers);
                    self.0.stop_waiters.notify_all();
                }
            }
        }
        let me = current();
        inner.stoppers.borrow_mut().push(me.clone());
        let _stopping = Stopping(inner, me);
        let acceptor = inner.acceptor.borrow_mut().take();
        if let Some(g) = acceptor {
            g.kill();
        }
        // Closes the socket (the accept fiber's reference died with it).
        inner.listener.borrow_mut().take();

        // A handler inside `stop` (this one's caller or a concurrent one's) is neither waited
        // for nor killed.
        let others = || -> Vec<Greenlet<()>> {
            let stoppers = inner.stoppers.borrow();
            let handlers = inner.handlers.borrow();
            handlers.values().filter(|g| !stoppers.contains(g.coroutine())).cloned().collect()
        };
        // Stoppers are few: counting the handlers among them is cheap at each wake.
        let running_others = || {
            let stoppers = inner.stoppers.borrow();
            let handlers = inner.handlers.borrow();
            let stopping = handlers.values().filter(|g| stoppers.contains(g.coroutine())).count();
            handlers.len() - stopping
        };
        let deadline = crate::hub::after(grace);
        while running_others() > 0 && Instant::now() < deadline {
            inner.handler_ended.wait("StreamServer handlers to end", Some(deadline));
        }
        let rest = others();
        if rest.is_empty() {
            return;
        }
        log::info!(
            "server {}: killing {} handler(s) still running after {grace:?}",
            inner.addr,
            rest.len()
        );
        // Every kill goes out before any wait, and the wait is bounded: a handler that
        // swallows its kill cannot hold `stop` (nor `serve_forever`) forever.
        for g in &rest {
            g.send_kill();
        }
        let deadline = crate::hub::after(KILL_TIMEOUT);
        let survivors = rest.iter().filter(|g| !g.join_deadline(Some(deadline))).count();
        if survivors > 0 {
            log::warn!(
                "server {}: {survivors} handler(s) still running {KILL_TIMEOUT:?} after their \
                 kill; leaving them",
                inner.addr
            );
        }
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// How many handlers are running now.
    pub fn connections(&self) -> usize {
        self.inner.handlers.borrow().len()
    }

    /// True once [`stop`](StreamServer::stop) has been called.
    pub fn is_stopped(&self) -> bool {
        self.inner.stopped.get()
    }
}

impl std::fmt::Debug for StreamServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamServer")
            .field("addr", &self.inner.addr)
            .field("connections", &self.connections())
            .field("stopped", &self.inner.stopped.get())
            .finish()
    }
}

/// The accept fiber's body: see the module docs for the error policy.
fn accept_loop(inner: &Rc<Inner>, listener: &TcpListener) {
    let mut delay = MIN_ACCEPT_DELAY;
    loop {
        // Cloned out of the cell first: the acquire may park.
        let limit = inner.limit.borrow().clone();
        let permit = Permit::acquire(&limit);
        match listener.accept() {
            Ok((stream, peer)) => {
                delay = MIN_ACCEPT_DELAY;
                spawn_handler(inner, stream, peer, permit);
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {}
            Err(e) => {
                drop(permit);
                let out_of = matches!(
                    e.raw_os_error(),
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                );
                if out_of {
                    log::warn!(
                        "server {}: accept: {e}; out of resources, retrying in {delay:?}",
                        inner.addr
                    );
                } else {
                    log::error!("server {}: accept: {e}; retrying in {delay:?}", inner.addr);
                }
                sleep(delay);
                delay = (delay * 2).min(MAX_ACCEPT_DELAY);
            }
        }
    }
}

fn spawn_handler(inner: &Rc<Inner>, stream: TcpStream, peer: SocketAddr, permit: Permit) {
    let id = inner.next_conn.get();
    inner.next_conn.set(id + 1);
    let handler = inner.handler.clone();
    let ended = Ended { inner: inner.clone(), id, _permit: permit };
    let g = spawn_named("StreamServer handler", move || {
        let _ended = ended;
        if let Err(p) = catch_unwind(AssertUnwindSafe(|| handler(stream, peer))) {
            if p.is::<GreenletExit>() {
                resume_unwind(p); // killed (e.g. by stop): let the fiber end as killed
            }
            log::error!(
                "server: handler for {peer} panicked: {}; closing that connection",
                crate::error::panic_message(&*p)
            );
        }
    });
    inner.handlers.borrow_mut().insert(id, g);
}

/// Lives in a handler fiber: however the fiber ends (return, panic, kill), it leaves the
/// running set, frees its slot and tells a waiting `stop`.
struct Ended {
    inner: Rc<Inner>,
    id: u64,
    _permit: Permit,
}

impl Drop for Ended {
    fn drop(&mut self) {
        self.inner.handlers.borrow_mut().remove(&self.id);
        self.inner.handler_ended.notify_all();
    }
}

/// One running handler's share of the connection limit; dropping it gives the permit back.
struct Permit(Rc<Semaphore>);

impl Permit {
    /// Waits for a free permit and takes it.
    fn acquire(limit: &Rc<Semaphore>) -> Permit {
        limit.acquire();
        Permit(limit.clone())
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.release();
    }
}
