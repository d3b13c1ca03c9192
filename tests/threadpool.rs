//! Layer 2b: spawn_blocking runs closures on OS threads while fibers keep running.
use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use greenfiber::threadpool::spawn_blocking;
use greenfiber::{Error, joinall, sleep, spawn, yield_now};

#[test]
fn eight_blocking_calls_run_in_parallel_while_a_fiber_ticks() {
    let ticks = Rc::new(Cell::new(0u32));
    let stop = Rc::new(Cell::new(false));
    let (t2, s2) = (ticks.clone(), stop.clone());
    let ticker = spawn(move || {
        while !s2.get() {
            sleep(Duration::from_millis(10));
            t2.set(t2.get() + 1);
        }
    });
    let start = Instant::now();
    let calls: Vec<_> = (0..8u64)
        .map(|i| {
            spawn(move || {
                spawn_blocking(move || {
                    std::thread::sleep(Duration::from_millis(100));
                    i
                })
            })
        })
        .collect();
    assert_eq!(joinall(&calls, None), 8);
    let elapsed = start.elapsed();
    stop.set(true);
    ticker.join();
    let got: Vec<u64> = calls.iter().map(|g| g.get().unwrap().unwrap()).collect();
    assert_eq!(got, (0..8).collect::<Vec<_>>());
    assert!(elapsed >= Duration::from_millis(100));
    // Serially this takes 800 ms; in parallel ~100 ms. Generous for a noisy 2-core machine.
    assert!(elapsed < Duration::from_millis(600), "took {elapsed:?}");
    assert!(ticks.get() >= 3, "the ticker ran only {} times", ticks.get());
}

#[test]
fn a_panic_comes_back_as_an_error() {
    let r = spawn_blocking(|| -> u8 { panic!("blocking boom") });
    match r {
        Err(Error::Panicked { message, .. }) => assert_eq!(message, "blocking boom"),
        other => panic!("expected a panic error, got {other:?}"),
    }
    assert_eq!(spawn_blocking(|| "after").unwrap(), "after");
}

#[test]
fn more_calls_than_threads_all_finish() {
    let calls: Vec<_> = (0..40u32)
        .map(|i| {
            spawn(move || {
                spawn_blocking(move || {
                    std::thread::sleep(Duration::from_millis(5));
                    i * 2
                })
            })
        })
        .collect();
    joinall(&calls, None);
    let sum: u32 = calls.iter().map(|g| g.get().unwrap().unwrap()).sum();
    assert_eq!(sum, (0..40).map(|i| i * 2).sum());
}

#[test]
fn killing_the_waiting_fiber_leaves_the_hub_usable() {
    let g = spawn(|| {
        spawn_blocking(|| std::thread::sleep(Duration::from_millis(50))).unwrap();
        unreachable!("killed before the call came back");
    });
    yield_now();
    g.kill();
    assert_eq!(g.get(), Err(Error::Killed));
    // The late wake-up for the dead fiber is ignored; the next call works.
    sleep(Duration::from_millis(80));
    assert_eq!(spawn_blocking(|| 5).unwrap(), 5);
}

#[test]
fn nested_calls_from_every_pool_thread_do_not_deadlock_the_pool() {
    // More outer calls than pool threads, each making an inner call: the inner ones run on the
    // caller's own pool thread.
    let gs: Vec<_> = (0..2 * greenfiber::threadpool::MAX_THREADS as u64)
        .map(|i| {
            greenfiber::spawn(move || {
                spawn_blocking(move || {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    spawn_blocking(move || i * 2).unwrap()
                })
            })
        })
        .collect();
    let r = greenfiber::with_timeout(std::time::Duration::from_secs(20), || {
        greenfiber::joinall(&gs, None)
    });
    assert_eq!(r, Ok(gs.len()), "the pool deadlocked");
    for (i, g) in gs.iter().enumerate() {
        assert_eq!(g.get().unwrap().unwrap(), 2 * i as u64);
    }
}

#[test]
fn a_result_that_panics_when_dropped_on_a_pool_thread_costs_no_thread() {
    struct Boom;
    impl Drop for Boom {
        fn drop(&mut self) {
            panic!("boom in drop");
        }
    }
    // The waiter is killed, so each result is dropped on its pool thread.
    for _ in 0..greenfiber::threadpool::MAX_THREADS + 4 {
        let g = greenfiber::spawn(|| {
            let _ = spawn_blocking(|| {
                std::thread::sleep(std::time::Duration::from_millis(2));
                Boom
            });
        });
        greenfiber::yield_now();
        g.kill();
    }
    let r = greenfiber::with_timeout(std::time::Duration::from_secs(20), || {
        spawn_blocking(|| 42).unwrap()
    });
    assert_eq!(r, Ok(42), "the pool lost its threads");
}

#[test]
fn tens_of_thousands_of_calls_lose_no_wake_up() {
    // A wake-up and the drop of the last waker both landing between the waiting side's two
    // reads was missed: the caller then waited forever (LoopExit here, nothing else runs).
    for _ in 0..20_000 {
        greenfiber::threadpool::spawn_blocking(|| ()).unwrap();
    }
    let callers: Vec<_> = (0..4)
        .map(|_| {
            greenfiber::spawn(|| {
                for _ in 0..5_000 {
                    greenfiber::threadpool::spawn_blocking(|| ()).unwrap();
                }
            })
        })
        .collect();
    assert_eq!(greenfiber::joinall(&callers, None), 4);
    assert!(callers.iter().all(|g| g.successful()));
}

#[test]
fn a_result_ready_when_its_caller_is_killed_is_dropped_on_a_pool_thread() {
    use std::sync::mpsc;
    // Reports the thread its drop runs on, then panics there (a panic during the fiber's
    // unwinding would abort the process).
    struct Tell(mpsc::Sender<bool>);
    impl Drop for Tell {
        fn drop(&mut self) {
            let on_pool = std::thread::current().name().is_some_and(|n| n.contains("blocking"));
            let _ = self.0.send(on_pool);
            panic!("boom in the result's drop");
        }
    }
    let (tx, rx) = mpsc::channel();
    // The job waits for `go`: finished at once, its result could be stored before the fiber
    // looked for it, and the fiber would then take it without parking (on a loaded machine
    // the pool thread can run between the job's submission and that look).
    let (go, wait_go) = mpsc::channel::<()>();
    let g = spawn(move || {
        let _r = spawn_blocking(move || {
            wait_go.recv().unwrap();
            Tell(tx)
        });
        unreachable!("killed before it resumed");
    });
    yield_now(); // the fiber submits the job and parks: the job cannot have ended yet
    go.send(()).unwrap();
    // The job ends while the hub is blocked: its result waits in the slot, the fiber unrun.
    std::thread::sleep(Duration::from_millis(100));
    g.kill();
    assert!(matches!(g.get(), Err(Error::Killed)));
    let on_pool = rx.recv_timeout(Duration::from_secs(10)).expect("the result was dropped");
    assert!(on_pool, "the result was dropped on the hub's thread");
    // The pool is still whole.
    assert_eq!(spawn_blocking(|| 7).unwrap(), 7);
}
