//! Waking the hub from another OS thread: an inbox of wake ids plus the reactor's mio [`Waker`].
//!
//! This is a *driver* (see `design.md`, "drivers don't switch"). Another thread (the thread pool,
//! an `AsyncResult` set elsewhere) calls [`Remote::wake`] with an id; the hub's thread learns of
//! it when [`Reactor::poll`](super::reactor::Reactor::poll) returns `true`, calls
//! [`Remote::drain`], and maps each id to a parked fiber through its own thread-local table. Nothing
//! here switches, knows fibers, or decides what a stale id means (the hub ignores ids it no longer
//! maps).
//!
//! # Why `Remote` is `Send + Sync`
//!
//! Only two things cross threads: `u64` ids and an `Arc` of a `Mutex<Vec<u64>>` and the
//! reactor's `Waker` (an eventfd), all `Send + Sync`, so the compiler derives both traits and no `unsafe impl` is
//! needed. Fiber handles (`Rc`, `!Send`) never leave the hub's thread: the id→fiber table lives
//! there.
//!
//! # Protocol (the inbox is the state)
//!
//! | inbox     | waker signalled?      | meaning                                                |
//! |-----------|-----------------------|--------------------------------------------------------|
//! | empty     | no                    | idle                                                   |
//! | non-empty | yes (or about to be)  | the first `wake` into an empty inbox signals, later    |
//! |           |                       | ones only push: the hub will drain them all            |
//! | empty     | yes                   | the hub drained before the signal arrived: one spurious|
//! |           |                       | `poll` return, harmless                                |
//! | closed    | —                     | hub gone: `wake` returns `false`, nothing is stored    |
//!
//! 1. `wake` pushes under the lock and signals after unlocking, only if it found the inbox empty.
//! 2. The hub drains *every time* `poll` reports the waker. Then no id is stranded: an id pushed
//!    into a non-empty inbox rides on the signal of the push that made it non-empty, and that
//!    signal's drain (which happens after the signal is seen) takes everything pushed before it.
//!
//! 3. `pending` is true from the push into an empty inbox until the drain that empties it. The
//!    hub reads it without the lock, so even a hub too busy to wait anywhere (it polls only when
//!    something outside may wake it) polls and drains: the inbox never grows without bound.
//!
//! The inbox does not deduplicate: waking one id twice delivers it twice. `RemoteWaker` (the
//! only caller) queues its id only when its flag goes from unset to set, so each waiting fiber
//! has at most one id queued however often it is woken.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::reactor::Waker;

/// A cloneable, `Send + Sync` handle for waking fibers of one hub from any thread.
#[derive(Clone, Debug)]
pub(crate) struct Remote {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    inbox: Mutex<Inbox>,
    /// The inbox is not empty (rule 3).
    pending: AtomicBool,
    waker: Arc<Waker>,
}

#[derive(Debug)]
struct Inbox {
    ids: Vec<u64>,
    closed: bool,
}

impl Remote {
    /// A remote over the reactor's waker (from [`Reactor::waker`](super::reactor::Reactor::waker)).
    pub(crate) fn new(waker: Arc<Waker>) -> Remote {
        let inbox = Mutex::new(Inbox { ids: Vec::new(), closed: false });
        Remote { inner: Arc::new(Inner { inbox, pending: AtomicBool::new(false), waker }) }
    }

    /// Queues `id` for the hub and wakes its `poll` if the inbox was empty. Any thread may call
    /// it. Returns `false` (and drops `id`) if the hub has [`close`](Self::close)d.
    pub(crate) fn wake(&self, id: u64) -> bool {
        let was_empty = {
            let mut inbox = self.lock();
            if inbox.closed {
                return false;
            }
            inbox.ids.push(id);
            let was_empty = inbox.ids.len() == 1;
            if was_empty {
                self.inner.pending.store(true, Ordering::Release);
            }
            was_empty
        };
        if was_empty && let Err(e) = self.inner.waker.wake() {
            // The eventfd write failed; the id stays queued and is drained on the hub's next
            // waker event or `drain` call.
            log::error!("remote: waking the hub failed: {e}");
        }
        true
    }

    /// Hub side: moves every queued id into `out`, oldest first. The inbox keeps its capacity.
    pub(crate) fn drain(&self, out: &mut Vec<u64>) {
        let mut inbox = self.lock();
        self.inner.pending.store(false, Ordering::Release);
        out.append(&mut inbox.ids);
    }

    /// Hub side: are ids queued (rule 3)? The hub then polls even when nobody waits outside.
    pub(crate) fn has_pending(&self) -> bool {
        self.inner.pending.load(Ordering::Acquire)
    }

    /// Hub side, at shutdown: drops queued ids and makes later [`wake`](Self::wake)s return
    /// `false`, so a thread outliving the hub cannot grow the inbox forever.
    pub(crate) fn close(&self) {
        let mut inbox = self.lock();
        inbox.closed = true;
        inbox.ids = Vec::new();
    }

    /// How many ids are queued.
    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        self.lock().ids.len()
    }

    fn lock(&self) -> MutexGuard<'_, Inbox> {
        // A panic while holding the lock cannot leave a `Vec<u64>` and a `bool` inconsistent.
        self.inner.inbox.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::reactor::Reactor;
    use std::time::{Duration, Instant};

    #[test]
    fn is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync + Clone + 'static>() {}
        assert_send_sync::<Remote>();
    }

    #[test]
    fn wake_then_drain_in_order() {
        let mut reactor = Reactor::<u32>::new().unwrap();
        let remote = Remote::new(reactor.waker());
        assert!(remote.wake(5));
        assert!(remote.wake(3));
        assert!(remote.wake(5));
        let mut woken = Vec::new();
        assert!(reactor.poll(Some(Duration::from_secs(10)), &mut woken).unwrap());
        assert!(woken.is_empty());
        let mut ids = Vec::new();
        remote.drain(&mut ids);
        assert_eq!(ids, [5, 3, 5]);
        assert!(!reactor.poll(Some(Duration::ZERO), &mut woken).unwrap());

        remote.close();
        assert!(!remote.wake(1));
        ids.clear();
        remote.drain(&mut ids);
        assert!(ids.is_empty());
    }

    #[test]
    fn four_threads_each_wake_a_thousand_ids_exactly_once() {
        const THREADS: u64 = 4;
        const PER_THREAD: u64 = 1000;
        let mut reactor = Reactor::<u32>::new().unwrap();
        let remote = Remote::new(reactor.waker());
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let remote = remote.clone();
                std::thread::spawn(move || {
                    for i in 0..PER_THREAD {
                        assert!(remote.wake(t * PER_THREAD + i));
                    }
                })
            })
            .collect();

        let total = (THREADS * PER_THREAD) as usize;
        let mut seen = vec![0u32; total];
        let (mut count, mut ids, mut woken) = (0, Vec::new(), Vec::new());
        let give_up = Instant::now() + Duration::from_secs(30); // hang guard only
        while count < total {
            assert!(Instant::now() < give_up, "only {count} of {total} ids arrived");
            // Drain only when the waker fired: that is the protocol under test (rule 2).
            if reactor.poll(Some(Duration::from_secs(1)), &mut woken).unwrap() {
                remote.drain(&mut ids);
                for id in ids.drain(..) {
                    seen[id as usize] += 1;
                    count += 1;
                }
            }
        }
        for h in handles {
            h.join().unwrap();
        }
        remote.drain(&mut ids);
        assert!(ids.is_empty(), "ids arrived after all were seen");
        assert!(seen.iter().all(|&n| n == 1), "an id was delivered twice or never");
        assert!(woken.is_empty());
    }

    #[test]
    fn a_hub_too_busy_to_wait_still_drains_the_inbox() {
        use crate::hub::{remote_signal, scheduler, spawn, yield_now};
        // Nobody waits on the signal, and a spinner keeps the hub from ever idling.
        let (mut wait, waker) = remote_signal();
        let spinner = spawn(|| {
            loop {
                yield_now();
            }
        });
        std::thread::spawn(move || {
            for _ in 0..1000 {
                waker.wake();
            }
        })
        .join()
        .unwrap();
        assert!(scheduler::with(|hub| hub.remote.has_pending()));
        // A round runs at most 64 coroutines; after a few the hub has polled and drained.
        for _ in 0..1000 {
            yield_now();
        }
        assert!(!scheduler::with(|hub| hub.remote.has_pending()), "the inbox was never drained");
        assert!(wait.wait_timeout(Duration::ZERO), "the wake-up itself is kept");
        spinner.kill();
    }

    #[test]
    fn a_waker_called_in_a_loop_queues_one_id_per_wait() {
        use crate::hub::{remote_signal, scheduler};
        let (mut wait, waker) = remote_signal();
        std::thread::spawn(move || {
            for _ in 0..100_000 {
                waker.wake();
            }
        })
        .join()
        .unwrap();
        assert_eq!(scheduler::with(|hub| hub.remote.queued()), 1);
        assert!(wait.wait_timeout(Duration::ZERO));
        assert!(!wait.wait_timeout(Duration::ZERO), "many wakes before a wait count once");
    }
}
