//! with_timeout: firing, nesting, destructors, no stray raises afterwards.
use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use greenfiber::{Timeout, sleep, spawn, with_timeout, yield_now};

#[test]
fn times_out_a_blocked_closure_and_unwinds_it() {
    let dropped = Rc::new(RefCell::new(false));
    let d2 = dropped.clone();
    let t = Instant::now();
    let r = with_timeout(Duration::from_millis(20), move || {
        struct G(Rc<RefCell<bool>>);
        impl Drop for G {
            fn drop(&mut self) {
                *self.0.borrow_mut() = true;
            }
        }
        let _g = G(d2);
        sleep(Duration::from_secs(10));
        "finished"
    });
    assert_eq!(r, Err(Timeout));
    assert!(*dropped.borrow());
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(Timeout.to_string(), "timed out");
}

#[test]
fn returns_ok_when_fast_enough_and_leaves_no_timer() {
    let r = with_timeout(Duration::from_millis(50), || {
        sleep(Duration::from_millis(1));
        7
    });
    assert_eq!(r, Ok(7));
    // Sleep past the old deadline: the cancelled timeout must not fire into this sleep.
    sleep(Duration::from_millis(80));
}

#[test]
fn nested_timeouts_each_fire_on_their_own() {
    // Inner shorter: inner fires, outer goes on.
    let r = with_timeout(Duration::from_millis(200), || {
        let inner = with_timeout(Duration::from_millis(10), || sleep(Duration::from_secs(5)));
        assert_eq!(inner, Err(Timeout));
        "outer finished"
    });
    assert_eq!(r, Ok("outer finished"));
    // Outer shorter: the outer fires through the inner one.
    let r = with_timeout(Duration::from_millis(10), || {
        let inner = with_timeout(Duration::from_millis(500), || sleep(Duration::from_secs(5)));
        unreachable!("inner returned {inner:?}");
    });
    assert_eq!(r, Err(Timeout));
}

#[test]
fn timeouts_work_inside_fibers_too() {
    let gs: Vec<_> = (0..10u64)
        .map(|i| {
            spawn(move || {
                with_timeout(Duration::from_millis(5 + i), || sleep(Duration::from_secs(1)))
            })
        })
        .collect();
    for g in gs {
        assert_eq!(g.get().unwrap(), Err(Timeout));
    }
}

#[test]
fn with_timeout_interrupts_a_loop_that_only_yields() {
    // In main, alone: the yielder is always queued when the timer fires.
    let r = with_timeout(Duration::from_millis(20), || {
        loop {
            yield_now();
        }
    });
    assert_eq!(r, Err(Timeout));
    // In a fiber, beside another yielder, with sleep(0).
    let other = spawn(|| {
        for _ in 0..10_000_000 {
            yield_now()
        }
    });
    let g = spawn(|| {
        with_timeout(Duration::from_millis(20), || {
            loop {
                sleep(Duration::ZERO);
            }
        })
    });
    assert_eq!(g.get().unwrap(), Err(Timeout));
    other.kill();
}

#[test]
fn with_timeout_interrupts_a_kill_whose_victim_will_not_die() {
    // gevent's test__greenletset test_kill_fires_once: the kill is an interruptible wait.
    use std::cell::Cell;
    use std::panic::catch_unwind;
    let shots = Rc::new(Cell::new(0));
    let stop = Rc::new(Cell::new(false));
    let (s, st) = (shots.clone(), stop.clone());
    let g = spawn(move || {
        while !st.get() {
            if catch_unwind(|| sleep(Duration::from_millis(5))).is_err() {
                s.set(s.get() + 1);
            }
        }
    });
    sleep(Duration::from_millis(1));
    assert_eq!(with_timeout(Duration::from_millis(20), || g.kill()), Err(Timeout));
    assert_eq!(shots.get(), 1, "the exit is raised once");
    assert!(!g.ready());
    stop.set(true);
    g.join();
    assert!(g.successful());
}

#[test]
fn timers_due_together_are_fired_one_at_a_time() {
    // A timeout and the sleep it interrupts fall due in the same pass of the hub. Raising the
    // timeout unwinds the sleep, which cancels its own timer: that timer must not fire later
    // into the dead frame (it used to wake the next sleep at the same stack address early).
    for _ in 0..20 {
        let _ = with_timeout(Duration::from_millis(2), || sleep(Duration::from_millis(2)));
        let t = Instant::now();
        sleep(Duration::from_millis(2));
        assert!(t.elapsed() >= Duration::from_millis(2), "a sleep ended early");
    }
    // Nested timeouts due together: the outer one unwinds the inner frame, whose timer must not
    // then raise a stray timeout.
    let g = spawn(|| {
        for _ in 0..20 {
            let r = with_timeout(Duration::from_millis(2), || {
                with_timeout(Duration::from_millis(2), || sleep(Duration::from_secs(1)))
            });
            assert!(r.is_err());
            sleep(Duration::from_millis(3));
        }
    });
    g.join();
    assert!(g.successful(), "{:?}", g.take());
}

#[test]
fn duration_max_means_no_end_not_an_overflow() {
    assert_eq!(with_timeout(Duration::MAX, || 5), Ok(5));
    let g = spawn(|| sleep(Duration::MAX));
    yield_now();
    assert!(!g.join_timeout(Duration::from_millis(1)));
    g.kill();
    assert!(g.join_timeout(Duration::MAX));
    assert!(g.ready() && !g.successful());
}

#[test]
fn a_timeout_fires_in_a_raw_switch_to_a_coroutine_that_blocks() {
    // gevent's test__timeout.py::test_expires: the Timeout is raised at the pending switch,
    // whatever the switch went to. It was put off until the switch came back.
    let child = greenfiber::Coroutine::new(|()| {
        sleep(Duration::from_secs(3600)); // blocks on the hub; main waits in its switch
        5
    });
    let t = Instant::now();
    let r = with_timeout(Duration::from_millis(10), || child.switch::<(), i32>(()));
    assert_eq!(r, Err(Timeout));
    assert!(t.elapsed() < Duration::from_secs(60), "{:?}", t.elapsed());
    child.kill();
    // And nothing is left pending: waiting on what can never happen is LoopExit at once.
    let never = spawn(|| greenfiber::sync::Event::new().wait());
    let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| never.join()));
    let msg = err.unwrap_err().downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("LoopExit"), "{msg}");
    never.kill();
}
