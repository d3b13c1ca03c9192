//! Layer 4: Semaphore, BoundedSemaphore, Lock, RLock, Condition — FIFO order, timeouts, and no
//! permit or wake-up lost when waiters are killed mid-wait.
use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;
use std::time::{Duration, Instant};

use greenfiber::sync::{BoundedSemaphore, Condition, Lock, RLock, Semaphore, SyncError};
use greenfiber::{Greenlet, joinall, spawn, with_timeout, yield_now};

fn order() -> Rc<RefCell<Vec<usize>>> {
    Rc::new(RefCell::new(Vec::new()))
}

#[test]
fn semaphore_counts_and_try_acquire() {
    let s = Semaphore::new(2);
    assert!(s.try_acquire() && s.try_acquire());
    assert!(!s.try_acquire());
    assert!(s.locked());
    s.release();
    s.release();
    s.release(); // an unbounded semaphore may grow
    assert_eq!(s.available(), 3);
}

#[test]
fn semaphore_waiters_are_served_in_fifo_order() {
    let s = Rc::new(Semaphore::new(0));
    let got = order();
    let gs: Vec<_> = (0..5)
        .map(|i| {
            let (s, got) = (s.clone(), got.clone());
            spawn(move || {
                s.acquire();
                got.borrow_mut().push(i);
            })
        })
        .collect();
    yield_now();
    assert_eq!(s.waiting(), 5);
    for _ in 0..5 {
        s.release();
    }
    // A late acquirer cannot barge ahead of the granted waiters.
    assert!(!s.try_acquire());
    joinall(&gs, None);
    assert_eq!(*got.borrow(), [0, 1, 2, 3, 4]);
    assert_eq!(s.available(), 0);
}

#[test]
fn semaphore_acquire_timeout_gives_up_and_leaves_the_list() {
    let s = Semaphore::new(0);
    let t = Instant::now();
    assert!(!s.acquire_timeout(Duration::from_millis(20)));
    assert!(t.elapsed() >= Duration::from_millis(20));
    assert_eq!(s.waiting(), 0);
    s.release();
    assert_eq!(s.available(), 1);
    assert!(s.acquire_timeout(Duration::from_millis(20)));
}

#[test]
fn semaphore_kill_mid_wait_loses_no_permit() {
    let s = Rc::new(Semaphore::new(0));
    let acquired = Rc::new(Cell::new(0));
    let spawn_waiter = || {
        let (s, n) = (s.clone(), acquired.clone());
        spawn(move || {
            s.acquire();
            n.set(n.get() + 1);
        })
    };
    let (a, b, c) = (spawn_waiter(), spawn_waiter(), spawn_waiter());
    yield_now();
    assert_eq!(s.waiting(), 3);
    b.kill(); // killed while waiting: leaves the list
    assert_eq!(s.waiting(), 2);
    s.release(); // granted to `a` ...
    a.kill(); // ... which dies before it runs: the permit passes to `c`
    assert_eq!(s.waiting(), 0);
    c.join();
    assert!(c.successful());
    assert_eq!(acquired.get(), 1);
    assert_eq!(s.available(), 0);
    // A with_timeout interruption after a grant hands on the same way.
    let s2 = s.clone();
    let d = spawn(move || with_timeout(Duration::from_millis(1), || s2.acquire()).is_ok());
    yield_now();
    s.release();
    // `d` is queued with the permit; its timeout may fire first: either way one permit exists.
    d.join();
    let held = if d.get().unwrap() { 1 } else { 0 };
    assert_eq!(s.available() + held, 1);
}

#[test]
fn bounded_semaphore_refuses_release_past_the_bound() {
    let s = BoundedSemaphore::new(1);
    assert_eq!(s.release(), Err(SyncError::PastBound));
    s.acquire();
    assert!(s.locked());
    assert_eq!(s.release(), Ok(()));
    assert_eq!(s.release(), Err(SyncError::PastBound));
    assert_eq!(s.available(), 1);
}

#[test]
fn bounded_semaphore_kill_mid_wait_loses_no_permit() {
    let s = Rc::new(BoundedSemaphore::new(1));
    s.acquire();
    let ws: Vec<Greenlet<()>> = (0..3)
        .map(|_| {
            let s = s.clone();
            spawn(move || s.acquire())
        })
        .collect();
    yield_now();
    s.release().unwrap(); // to ws[0]
    ws[0].kill(); // -> ws[1]
    ws[2].kill();
    ws[1].join();
    assert!(ws[1].successful());
    assert_eq!(s.available(), 0);
    assert_eq!(s.release(), Ok(()));
    assert_eq!(s.release(), Err(SyncError::PastBound));
}

#[test]
fn lock_is_exclusive_and_fifo() {
    let lock = Rc::new(Lock::new());
    let inside = Rc::new(Cell::new(0));
    let got = order();
    let gs: Vec<_> = (0..4)
        .map(|i| {
            let (lock, inside, got) = (lock.clone(), inside.clone(), got.clone());
            spawn(move || {
                lock.acquire();
                inside.set(inside.get() + 1);
                assert_eq!(inside.get(), 1, "two fibers inside the lock");
                got.borrow_mut().push(i);
                yield_now();
                inside.set(inside.get() - 1);
                lock.release().unwrap();
            })
        })
        .collect();
    joinall(&gs, None);
    assert!(gs.iter().all(|g| g.successful()));
    assert_eq!(*got.borrow(), [0, 1, 2, 3]);
    assert!(!lock.locked());
    assert_eq!(lock.release(), Err(SyncError::PastBound));
    {
        let _g = lock.lock();
        assert!(lock.locked() && !lock.try_acquire());
    }
    assert!(!lock.locked());
}

#[test]
fn lock_kill_mid_wait_leaves_it_usable() {
    let lock = Rc::new(Lock::new());
    lock.acquire();
    let ws: Vec<_> = (0..3)
        .map(|_| {
            let l = lock.clone();
            spawn(move || {
                l.acquire();
                l.release().unwrap();
            })
        })
        .collect();
    yield_now();
    ws[1].kill();
    lock.release().unwrap(); // to ws[0]
    ws[0].kill(); // granted, dies before running: ws[2] gets it
    ws[2].join();
    assert!(ws[2].successful());
    assert!(!lock.locked());
    assert!(lock.acquire_timeout(Duration::from_millis(1)));
    assert!(!lock.acquire_timeout(Duration::from_millis(5)));
}

#[test]
fn rlock_is_reentrant_for_its_owner_only() {
    let l = Rc::new(RLock::new());
    l.acquire();
    assert!(l.try_acquire());
    assert!(l.acquire_timeout(Duration::from_millis(1)));
    assert!(l.is_owned());
    let l2 = l.clone();
    let other = spawn(move || {
        (l2.release(), l2.try_acquire(), l2.acquire_timeout(Duration::from_millis(5)))
    });
    assert_eq!(other.get().unwrap(), (Err(SyncError::NotOwner), false, false));
    l.release().unwrap();
    l.release().unwrap();
    assert!(l.locked());
    l.release().unwrap();
    assert!(!l.locked());
    assert_eq!(l.release(), Err(SyncError::NotOwner));
}

#[test]
fn rlock_kill_mid_wait_hands_the_lock_on() {
    let l = Rc::new(RLock::new());
    l.acquire();
    l.acquire();
    let got = order();
    let ws: Vec<_> = (0..3)
        .map(|i| {
            let (l, got) = (l.clone(), got.clone());
            spawn(move || {
                l.acquire();
                got.borrow_mut().push(i);
                l.release().unwrap();
            })
        })
        .collect();
    yield_now();
    l.release().unwrap();
    assert!(l.locked()); // still one level held
    l.release().unwrap(); // granted to ws[0]
    ws[0].kill();
    joinall(&ws, None);
    assert_eq!(*got.borrow(), [1, 2]);
    assert!(!l.locked());
}

#[test]
fn condition_wait_notify_in_fifo_order() {
    let c = Rc::new(Condition::new());
    let got = order();
    let gs: Vec<_> = (0..3)
        .map(|i| {
            let (c, got) = (c.clone(), got.clone());
            spawn(move || {
                c.acquire();
                c.wait();
                assert!(c.lock().locked());
                got.borrow_mut().push(i);
                c.release();
            })
        })
        .collect();
    yield_now();
    assert_eq!(c.waiting(), 3);
    c.acquire();
    assert!(c.notify());
    assert_eq!(c.notify_n(5), 2);
    assert!(!c.notify());
    c.release();
    joinall(&gs, None);
    assert_eq!(*got.borrow(), [0, 1, 2]);
}

#[test]
fn condition_wait_timeout_and_notify_all() {
    let c = Rc::new(Condition::new());
    c.acquire();
    assert!(!c.wait_timeout(Duration::from_millis(10)));
    assert!(c.lock().locked()); // re-acquired
    c.release();
    let woke = Rc::new(Cell::new(0));
    let gs: Vec<_> = (0..4)
        .map(|_| {
            let (c, w) = (c.clone(), woke.clone());
            spawn(move || {
                c.acquire();
                if c.wait_timeout(Duration::from_secs(60)) {
                    w.set(w.get() + 1);
                }
                c.release();
            })
        })
        .collect();
    yield_now();
    c.acquire();
    assert_eq!(c.notify_all(), 4);
    c.release();
    joinall(&gs, None);
    assert_eq!(woke.get(), 4);
}

#[test]
fn condition_refuses_wait_notify_and_release_without_its_lock() {
    // threading's lock_tests: test_unacquired_wait, test_unacquired_notify.
    let c = Rc::new(Condition::new());
    let refused = |f: &dyn Fn()| {
        let p = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_err();
        greenfiber::Error::from_panic(None, &*p).to_string()
    };
    assert!(refused(&|| c.wait()).contains("cannot wait on un-acquired lock"));
    assert!(
        refused(&|| {
            c.notify();
        })
        .contains("cannot notify on un-acquired lock")
    );
    assert!(
        refused(&|| {
            c.notify_all();
        })
        .contains("cannot notify")
    );
    assert!(refused(&|| c.release()).contains("un-acquired"));
    // Held by another fiber: refused too, and that fiber's lock is left alone.
    let c2 = c.clone();
    let holder = spawn(move || {
        c2.acquire();
        greenfiber::sleep(Duration::from_millis(20));
        let still = c2.lock().is_owned();
        c2.release();
        still
    });
    yield_now();
    assert!(
        refused(&|| {
            c.wait_timeout(Duration::from_millis(1));
        })
        .contains("un-acquired")
    );
    assert!(refused(&|| c.release()).contains("un-acquired"));
    assert!(c.lock().locked());
    assert!(holder.get().unwrap());
    assert!(!c.lock().locked());
}

#[test]
fn condition_wait_releases_every_level_and_restores_them() {
    let c = Rc::new(Condition::new());
    c.acquire();
    c.acquire(); // re-entrant, as threading.Condition's default RLock
    let c2 = c.clone();
    let notifier = spawn(move || {
        c2.acquire(); // free while the main coroutine waits, though it acquired twice
        c2.notify();
        c2.release();
    });
    assert!(c.wait_timeout(Duration::from_secs(5)));
    assert!(notifier.successful());
    c.release();
    assert!(c.lock().is_owned(), "the second level came back");
    c.release();
    assert!(!c.lock().locked());
}

#[test]
fn condition_kill_mid_wait_passes_the_notification_on() {
    let c = Rc::new(Condition::new());
    let woke = order();
    let ws: Vec<_> = (0..3)
        .map(|i| {
            let (c, w) = (c.clone(), woke.clone());
            spawn(move || {
                c.acquire();
                c.wait();
                w.borrow_mut().push(i);
                c.release();
            })
        })
        .collect();
    yield_now();
    ws[1].kill(); // waiting: leaves, without the lock
    assert_eq!(c.waiting(), 2);
    c.acquire();
    c.notify(); // to ws[0]
    c.release();
    ws[0].kill(); // dies before running: ws[2] gets the notification
    ws[2].join();
    assert_eq!(*woke.borrow(), [2]);
    assert_eq!(c.waiting(), 0);
    assert!(!c.lock().locked());
}

#[test]
fn a_double_release_right_after_a_hand_off_is_refused() {
    // gevent's BoundedSemaphore counts a permit handed to a waiter that has not run yet as
    // free, so releasing again raises instead of letting a second fiber in.
    let lock = Rc::new(Lock::new());
    lock.acquire();
    let l = lock.clone();
    let g = spawn(move || {
        l.acquire();
        l.release().unwrap();
    });
    yield_now();
    assert_eq!(lock.release(), Ok(())); // handed to g, which has not run
    assert_eq!(lock.release(), Err(SyncError::PastBound));
    assert!(lock.locked());
    g.join();
    assert!(!lock.locked());
    assert_eq!(lock.release(), Err(SyncError::PastBound));

    // A waiter killed after its grant hands the permit back: the bound still holds.
    let sem = Rc::new(BoundedSemaphore::new(1));
    sem.acquire();
    let s = sem.clone();
    let g = spawn(move || s.acquire());
    yield_now();
    assert_eq!(sem.release(), Ok(()));
    g.kill();
    assert_eq!(sem.available(), 1);
    assert_eq!(sem.release(), Err(SyncError::PastBound));
    assert!(sem.try_acquire());
    assert_eq!(sem.release(), Ok(()));
}

#[test]
fn a_condition_wait_cut_short_by_with_timeout_takes_the_lock_back() {
    // The pattern `acquire; with_timeout(wait); release`: the release must be of our own lock.
    let c = Rc::new(Condition::new());
    let holder_done = Rc::new(Cell::new(false));
    let (c2, d) = (c.clone(), holder_done.clone());
    c.acquire();
    // Takes the lock as soon as the waiter gives it up, and keeps it for 20 ms.
    let holder = spawn(move || {
        c2.acquire();
        greenfiber::sleep(Duration::from_millis(20));
        d.set(true);
        c2.release();
    });
    assert!(with_timeout(Duration::from_millis(5), || c.wait()).is_err());
    // The wait came back only once it held the lock again, after the holder let go.
    assert!(holder_done.get());
    assert!(c.lock().locked());
    c.release();
    assert!(!c.lock().locked());
    holder.join();
}

#[test]
fn a_timeout_while_a_notified_condition_waiter_takes_the_lock_back_waits_for_the_lock() {
    // W is notified, then waits to take the lock back from N; its timeout fires there. The
    // wait must still end with W holding the lock, so W's release cannot free N's lock.
    let cond = Rc::new(Condition::new());
    let inside = Rc::new(Cell::new(0u32));
    let (c, ins) = (cond.clone(), inside.clone());
    let w = spawn(move || {
        c.acquire();
        assert!(with_timeout(Duration::from_millis(5), || c.wait()).is_err());
        assert_eq!(ins.get(), 0, "W came back while N was still inside");
        c.release();
    });
    yield_now();
    let (c, ins) = (cond.clone(), inside.clone());
    let n = spawn(move || {
        c.acquire();
        ins.set(1);
        c.notify();
        greenfiber::sleep(Duration::from_millis(15)); // W's timeout fires meanwhile
        ins.set(0);
        c.release();
    });
    joinall(&[w.clone(), n.clone()], None);
    assert!(w.successful() && n.successful(), "{:?} {:?}", w.take(), n.take());
    assert!(!cond.lock().locked());
}

#[test]
fn a_waiter_killed_in_a_guarded_condition_wait_leaves_the_lock_free_without_aborting() {
    // gevent's `with cond: cond.wait()` killed. The kill leaves `wait` without the lock, so
    // the guard of `hold` releases nothing; a hand-written guard that releases anyway is
    // logged, not a second panic in a destructor during the unwind (which aborted).
    let c = Rc::new(Condition::new());
    struct Hand<'a>(&'a Condition);
    impl Drop for Hand<'_> {
        fn drop(&mut self) {
            self.0.release();
        }
    }
    let (c1, c2) = (c.clone(), c.clone());
    let guarded = spawn(move || {
        let _held = c1.hold();
        loop {
            c1.wait();
        }
    });
    let by_hand = spawn(move || {
        c2.acquire();
        let _h = Hand(&c2);
        loop {
            c2.wait();
        }
    });
    yield_now();
    assert_eq!(c.waiting(), 2);
    greenfiber::killall(&[guarded, by_hand]);
    assert_eq!(c.waiting(), 0);
    assert!(!c.lock().locked());
    // The guard still releases what it holds on a normal exit, once per level.
    {
        let _a = c.hold();
        let _b = c.hold();
        assert!(c.lock().is_owned());
    }
    assert!(!c.lock().locked());
}

#[test]
fn a_timed_out_condition_wait_whose_lock_never_comes_back_gets_loop_exit() {
    // The wait times out and must take the lock back, but its holder waits for ever on an
    // event nothing sets: LoopExit goes on at once instead of being retried as a timeout was.
    let c = Rc::new(Condition::new());
    let ev = Rc::new(greenfiber::sync::Event::new());
    c.acquire();
    let (c2, ev2) = (c.clone(), ev.clone());
    let holder = spawn(move || {
        c2.acquire();
        ev2.wait();
    });
    let r = catch_unwind(AssertUnwindSafe(|| with_timeout(Duration::from_millis(20), || c.wait())));
    let msg = greenfiber::Error::from_panic(None, &*r.expect_err("no LoopExit"));
    assert!(format!("{msg:?}").contains("LoopExit"), "{msg:?}");
    holder.kill();
}
