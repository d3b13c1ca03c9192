//! Layer 4: Event and AsyncResult — every waiter woken, timeouts, kill mid-wait, and an
//! AsyncResult completed from another OS thread.
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use greenfiber::sync::{AsyncResult, Event};
use greenfiber::{Error, joinall, sleep, spawn, yield_now};

#[test]
fn event_set_wakes_every_waiter_and_wait_returns_at_once_while_set() {
    let ev = Rc::new(Event::new());
    let woke = Rc::new(Cell::new(0));
    let gs: Vec<_> = (0..5)
        .map(|_| {
            let (ev, w) = (ev.clone(), woke.clone());
            spawn(move || {
                assert!(ev.wait());
                w.set(w.get() + 1);
            })
        })
        .collect();
    yield_now();
    assert_eq!(ev.waiting(), 5);
    assert!(!ev.is_set());
    ev.set();
    ev.clear(); // waiters were granted their wake-up: a clear before they run strands none
    joinall(&gs, None);
    assert_eq!(woke.get(), 5);
    ev.set();
    assert!(ev.is_set() && ev.wait() && ev.wait_timeout(Duration::ZERO));
}

#[test]
fn event_wait_timeout() {
    let ev = Event::new();
    let t = Instant::now();
    assert!(!ev.wait_timeout(Duration::from_millis(20)));
    assert!(t.elapsed() >= Duration::from_millis(20));
    assert_eq!(ev.waiting(), 0);
}

#[test]
fn event_kill_mid_wait_leaves_no_entry_and_others_still_wake() {
    let ev = Rc::new(Event::new());
    let woke = Rc::new(Cell::new(0));
    let gs: Vec<_> = (0..3)
        .map(|_| {
            let (ev, w) = (ev.clone(), woke.clone());
            spawn(move || {
                ev.wait();
                w.set(w.get() + 1);
            })
        })
        .collect();
    yield_now();
    gs[0].kill();
    assert_eq!(ev.waiting(), 2);
    ev.set();
    gs[1].kill(); // granted, killed before running: nothing to hand on, nothing delivered
    joinall(&gs, None);
    assert_eq!(woke.get(), 1);
    assert_eq!(gs[1].get(), Err(Error::Killed));
}

#[test]
fn async_result_get_waits_and_every_getter_sees_the_value() {
    let r: AsyncResult<String> = AsyncResult::new();
    assert!(!r.ready());
    assert_eq!(r.try_get(), Err(Error::NotReady));
    let gs: Vec<_> = (0..3)
        .map(|_| {
            let r = r.clone();
            spawn(move || r.get())
        })
        .collect();
    yield_now();
    r.set("done".to_owned());
    for g in &gs {
        assert_eq!(g.get().unwrap(), Ok("done".to_owned()));
    }
    assert!(r.ready() && r.successful());
}

#[test]
fn async_result_set_error_comes_back_as_err_and_timeout_as_timed_out() {
    let r: AsyncResult<i32> = AsyncResult::new();
    assert_eq!(r.get_timeout(Duration::from_millis(10)), Err(Error::TimedOut));
    r.set_error(Error::Other("boom".into()));
    assert_eq!(r.get(), Err(Error::Other("boom".into())));
    assert!(r.ready() && !r.successful());
}

#[test]
fn async_result_kill_mid_wait_then_set() {
    let r: AsyncResult<i32> = AsyncResult::new();
    let gs: Vec<_> = (0..3)
        .map(|_| {
            let r = r.clone();
            spawn(move || r.get())
        })
        .collect();
    yield_now();
    gs[0].kill();
    r.set(7);
    gs[1].kill();
    assert_eq!(gs[2].get(), Ok(Ok(7)));
    assert_eq!(gs[0].get(), Err(Error::Killed));
    assert_eq!(gs[1].get(), Err(Error::Killed));
}

#[test]
fn async_result_completed_from_another_thread_while_a_fiber_ticks() {
    let r: AsyncResult<u64> = AsyncResult::new();
    let tx = r.sender();
    let ticks = Rc::new(Cell::new(0));
    let t2 = ticks.clone();
    let ticker = spawn(move || {
        for _ in 0..5 {
            sleep(Duration::from_millis(5));
            t2.set(t2.get() + 1);
        }
    });
    let th = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(40));
        tx.send(99);
    });
    assert_eq!(r.get(), Ok(99));
    th.join().unwrap();
    ticker.join();
    assert_eq!(ticks.get(), 5);

    // A sender dropped unused leaves the result unset and does not keep the hub busy.
    let r2: AsyncResult<u64> = AsyncResult::new();
    let tx2 = r2.sender();
    std::thread::spawn(move || drop(tx2)).join().unwrap();
    assert_eq!(r2.get_timeout(Duration::from_millis(20)), Err(Error::TimedOut));

    let r3: AsyncResult<u64> = AsyncResult::new();
    let tx3 = r3.sender();
    std::thread::spawn(move || tx3.send_error(Error::Other("far".into())));
    assert_eq!(r3.get(), Err(Error::Other("far".into())));
}

#[test]
fn a_wait_on_a_just_set_event_lets_the_woken_waiters_return_first() {
    // gevent's test__event test_wait_while_notifying (its issue 1520).
    let ev = Rc::new(Event::new());
    let results = Rc::new(RefCell::new(Vec::new()));
    let gs: Vec<_> = (1..=2)
        .map(|i| {
            let (ev, r) = (ev.clone(), results.clone());
            spawn(move || {
                ev.wait();
                r.borrow_mut().push(i);
            })
        })
        .collect();
    yield_now();
    assert_eq!(ev.waiting(), 2);
    ev.set();
    ev.wait();
    results.borrow_mut().push(3);
    assert_eq!(*results.borrow(), [1, 2, 3]);
    joinall(&gs, None);
}
