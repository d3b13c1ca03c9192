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
