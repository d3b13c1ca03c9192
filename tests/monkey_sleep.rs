//! `std::thread::sleep` (and libc's sleeps) yield inside fibers after `patch_all()`.
#![cfg(feature = "monkey")]

use std::time::{Duration, Instant};

use greenfiber::{joinall, monkey, spawn};

#[test]
fn ten_fibers_sleeping_take_about_one_sleep() {
    monkey::patch_all();
    let t = Instant::now();
    let gs: Vec<_> = (0..10)
        .map(|i| {
            spawn(move || {
                std::thread::sleep(Duration::from_millis(200));
                i
            })
        })
        .collect();
    assert_eq!(joinall(&gs, None), 10);
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(200), "{took:?}");
    // Ten sequential sleeps would take 2 s.
    assert!(took < Duration::from_millis(1500), "{took:?}");
}

#[test]
fn libc_sleeps_yield_too() {
    monkey::patch_all();
    let t = Instant::now();
    let gs = vec![
        // SAFETY: plain libc calls with valid arguments.
        spawn(|| unsafe { assert_eq!(libc::usleep(200_000), 0) }),
        spawn(|| {
            let ts = libc::timespec { tv_sec: 0, tv_nsec: 200_000_000 };
            // SAFETY: a valid timespec; rem may be null.
            assert_eq!(unsafe { libc::nanosleep(&ts, std::ptr::null_mut()) }, 0);
        }),
        // SAFETY: a plain libc call.
        spawn(|| unsafe { assert_eq!(libc::sleep(1), 0) }),
        spawn(|| std::thread::sleep(Duration::from_millis(200))),
    ];
    assert_eq!(joinall(&gs, None), 4);
    let took = t.elapsed();
    assert!(took < Duration::from_millis(1800), "{took:?}");
}

#[test]
fn outside_fibers_sleep_blocks_the_thread_as_before() {
    monkey::patch_all();
    // A thread with no hub: plain libc.
    let t = std::thread::spawn(|| {
        let t = Instant::now();
        std::thread::sleep(Duration::from_millis(50));
        t.elapsed()
    });
    assert!(t.join().unwrap() >= Duration::from_millis(50));
    // Main with a hub but nothing else to do: also plain (no switch needed).
    let _ = greenfiber::current();
    let t = Instant::now();
    std::thread::sleep(Duration::from_millis(50));
    assert!(t.elapsed() >= Duration::from_millis(50));
}

#[test]
fn main_sleeping_runs_the_fibers() {
    monkey::patch_all();
    let g = spawn(|| {
        std::thread::sleep(Duration::from_millis(50));
        7
    });
    // Main sleeps with the std call; the hub has a ready fiber, so main yields to it.
    std::thread::sleep(Duration::from_millis(150));
    assert!(g.ready());
    assert_eq!(g.get().unwrap(), 7);
}
