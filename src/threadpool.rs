//! Layer 2b: [`spawn_blocking`] runs a closure on a bounded pool of OS threads while the calling
//! fiber waits cooperatively (other fibers keep running).
//!
//! ```
//! use std::time::Duration;
//! let n = greenfiber::threadpool::spawn_blocking(|| {
//!     std::thread::sleep(Duration::from_millis(10)); // blocks a pool thread, not the hub
//!     6 * 7
//! });
//! assert_eq!(n.unwrap(), 42);
//! ```
//!
//! # Design
//! One process-wide pool of at most [`MAX_THREADS`] threads, created lazily; a thread idle for
//! [`KEEP_ALIVE`] exits. Jobs wait in a FIFO queue under a `Mutex` + `Condvar`. The result
//! crosses back in an `Arc<Mutex<Option<_>>>` and the fiber is woken through
//! `hub::remote_signal` — the only part of the hub this module uses. Only `Send` values cross
//! threads: the closure and its result; no fiber handle leaves the hub's thread.
//!
//! Pool state (under the mutex):
//!
//! | field    | meaning                                                                       |
//! |----------|-------------------------------------------------------------------------------|
//! | jobs     | submitted, not yet taken                                                       |
//! | threads  | alive (busy + idle); ≤ MAX_THREADS                                             |
//! | idle     | waiting on the condvar and not yet claimed by a submitter                      |
//! | claims   | wake-ups a submitter sent to an idle thread that has not consumed it yet       |
//!
//! A submitter with a job: if an idle thread exists, it claims it (`idle -= 1; claims += 1`)
//! and signals; else, below the limit, it starts a thread; else the job waits for a busy thread,
//! which always checks `jobs` before going idle. So no job is stranded.
//!
//! A fiber killed while it waits leaves its remote wait; the job still runs to its end on its
//! thread and its result is dropped there (hence `T: Send`), or, if the job had already
//! stored it, on another pool thread: never on the hub's (a slow or panicking `Drop` there
//! would stall every fiber, or abort the process during the fiber's unwinding).

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use crate::error::Error;
use crate::hub::remote_signal;

thread_local! {
    /// True on the pool's own threads.
    static IN_POOL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The most threads the pool runs at once.
pub const MAX_THREADS: usize = 16;

/// How long an idle pool thread waits for work before it exits.
pub const KEEP_ALIVE: Duration = Duration::from_secs(10);

type Job = Box<dyn FnOnce() + Send>;

struct Pool {
    state: Mutex<State>,
    cv: Condvar,
}

struct State {
    jobs: VecDeque<Job>,
    threads: usize,
    idle: usize,
    claims: usize,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(Pool::new)
}

/// Starts a pool thread named `name` running `work`.
type Spawner = fn(String, Box<dyn FnOnce() + Send>) -> std::io::Result<()>;

fn spawn_thread(name: String, work: Box<dyn FnOnce() + Send>) -> std::io::Result<()> {
    std::thread::Builder::new().name(name).spawn(work).map(drop)
}

impl Pool {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Jobs run outside the lock and their panics are caught, so the state is never left
        // half-updated; a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn new() -> Pool {
        Pool {
            state: Mutex::new(State { jobs: VecDeque::new(), threads: 0, idle: 0, claims: 0 }),
            cv: Condvar::new(),
        }
    }

    fn submit(&'static self, job: Job) {
        self.submit_with(job, spawn_thread);
    }

    /// [`submit`](Pool::submit), starting threads with `spawner` (tests make it fail).
    fn submit_with(&'static self, job: Job, spawner: Spawner) {
        let mut st = self.lock();
        st.jobs.push_back(job);
        if st.idle > 0 {
            st.idle -= 1;
            st.claims += 1;
            drop(st);
            self.cv.notify_one();
        } else if st.threads < MAX_THREADS {
            st.threads += 1;
            let n = st.threads;
            drop(st);
            let spawned =
                spawner(format!("greenfiber-blocking-{n}"), Box::new(move || self.work()));
            if let Err(e) = spawned {
                log::error!("threadpool: cannot start a thread: {e}");
                let mut st = self.lock();
                st.threads -= 1;
                // If no thread is left to run the queue, run it here rather than strand it:
                // every job queued now, not only the front one (two submitters failing at
                // once each reserved a thread, and the first left its job queued).
                while st.threads == 0
                    && let Some(job) = st.jobs.pop_front()
                {
                    drop(st);
                    if catch_unwind(AssertUnwindSafe(job)).is_err() {
                        log::error!("threadpool: a job panicked outside its closure");
                    }
                    st = self.lock();
                }
            }
        }
    }

    fn work(&self) {
        IN_POOL.with(|p| p.set(true));
        let mut st = self.lock();
        loop {
            if let Some(job) = st.jobs.pop_front() {
                drop(st);
                // A job catches the panics of its closure; this also catches one from dropping
                // a result nobody waits for any more, so the thread is not lost.
                if catch_unwind(AssertUnwindSafe(job)).is_err() {
                    log::error!("threadpool: a job panicked outside its closure");
                }
                st = self.lock();
                continue;
            }
            st.idle += 1;
            let (g, timeout) =
                self.cv.wait_timeout(st, KEEP_ALIVE).unwrap_or_else(|p| p.into_inner());
            st = g;
            if st.claims > 0 {
                // A submitter claimed us (and already took us off `idle`).
                st.claims -= 1;
            } else if timeout.timed_out() {
                st.idle -= 1;
                st.threads -= 1;
                log::debug!("threadpool: an idle thread exits ({} left)", st.threads);
                return;
            } else {
                // Spurious wake-up: still idle.
                st.idle -= 1;
            }
        }
    }
}

/// Runs `f` on a pool thread and waits for it cooperatively: the calling fiber (or the main
/// coroutine) parks while other fibers run. Returns `f`'s value, or [`Error::Panicked`] with
/// the panic message if `f` panicked (the panic is not re-raised).
///
/// At most [`MAX_THREADS`] closures run at once; more wait in FIFO order. If the calling fiber
/// is killed, `f` still runs to its end on its thread and its result is dropped there. Called
/// from a pool thread (a blocking closure that calls `spawn_blocking` again), it runs `f`
/// right there, as gevent's thread pool does: waiting for a free thread could deadlock a pool
/// whose every thread waits so.
pub fn spawn_blocking<T, F>(f: F) -> Result<T, Error>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    if IN_POOL.with(std::cell::Cell::get) {
        return catch_unwind(AssertUnwindSafe(f)).map_err(|p| Error::from_panic(None, &*p));
    }
    let slot = Arc::new(Mutex::new(Slot::Waiting));
    let (mut wait, waker) = remote_signal();
    let theirs = slot.clone();
    pool().submit(Box::new(move || {
        let r = catch_unwind(AssertUnwindSafe(f));
        let mut s = lock_slot(&theirs);
        if matches!(*s, Slot::Abandoned) {
            drop(s);
            drop(r); // nobody waits: dropped here, on the pool thread
            return;
        }
        *s = Slot::Done(r);
        drop(s);
        waker.wake();
    }));
    // However this ends (a kill or a timeout of the caller included), the result is dropped
    // on a pool thread, never on the hub's: its `Drop` may be slow, or panic.
    let abandon = Abandon(slot);
    loop {
        // SWITCH (inside wait): other fibers run until the pool thread wakes us.
        wait.wait();
        let r = std::mem::replace(&mut *lock_slot(&abandon.0), Slot::Waiting);
        match r {
            Slot::Done(Ok(v)) => return Ok(v),
            Slot::Done(Err(p)) => return Err(Error::from_panic(None, &*p)),
            _ => continue, // cannot happen: the wake follows the store
        }
    }
}

/// Where a `spawn_blocking` job leaves its result.
enum Slot<T> {
    /// The caller waits (or has taken the result).
    Waiting,
    /// Stored by the job, not yet taken.
    Done(std::thread::Result<T>),
    /// The caller is gone: the job drops its result itself.
    Abandoned,
}

fn lock_slot<T>(slot: &Mutex<Slot<T>>) -> MutexGuard<'_, Slot<T>> {
    // A panic while holding the lock cannot leave a `Slot` half-written.
    slot.lock().unwrap_or_else(|p| p.into_inner())
}

/// Lives in the waiting caller's frame: when it ends, a result not taken goes to a pool thread
/// to be dropped, and a job still running is told to drop its own.
struct Abandon<T: Send + 'static>(Arc<Mutex<Slot<T>>>);

impl<T: Send + 'static> Drop for Abandon<T> {
    fn drop(&mut self) {
        let left = std::mem::replace(&mut *lock_slot(&self.0), Slot::Abandoned);
        if let Slot::Done(r) = left {
            pool().submit(Box::new(move || drop(r)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn when_no_thread_can_start_every_submitter_runs_the_queue_itself() {
        // Two submitters whose thread starts both fail, slowly enough to overlap: each
        // reserved a thread, and the first to fail left its job queued for a thread that
        // never came.
        fn failing(_: String, _: Box<dyn FnOnce() + Send>) -> std::io::Result<()> {
            std::thread::sleep(Duration::from_millis(20));
            Err(std::io::Error::from_raw_os_error(libc::EAGAIN))
        }
        let pool: &'static Pool = Box::leak(Box::new(Pool::new()));
        let ran: &'static AtomicUsize = Box::leak(Box::new(AtomicUsize::new(0)));
        let submitters: Vec<_> = (0..2)
            .map(|_| {
                std::thread::spawn(move || {
                    let job = Box::new(move || {
                        ran.fetch_add(1, Ordering::SeqCst);
                    });
                    pool.submit_with(job, failing);
                })
            })
            .collect();
        submitters.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(ran.load(Ordering::SeqCst), 2, "a job was stranded in the queue");
        assert!(pool.lock().jobs.is_empty());
    }
}
