//! A kill or a `with_timeout` expiry that reaches a fiber inside a patched libc call cannot
//! unwind through the C caller: the call fails, and the raise is held for the fiber
//! (`hub/held.rs`) until it can be raised or reported.
#![cfg(feature = "monkey")]

use std::cell::Cell;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::rc::Rc;
use std::time::{Duration, Instant};

use greenfiber::{Error, Timeout, monkey, spawn, with_timeout, yield_now};

#[test]
fn a_killed_loop_of_std_sleeps_ends_soon_and_is_reported_killed() {
    monkey::patch_all();
    let g = spawn(move || {
        for _ in 0..1000 {
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    std::thread::sleep(Duration::from_millis(35));
    let t = Instant::now();
    g.kill();
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert_eq!(g.get(), Err(Error::Killed), "a fiber killed in a hooked call reported success");
}

#[test]
fn a_killed_endless_std_sleep_loop_does_not_starve_the_thread() {
    monkey::patch_all();
    let g = spawn(|| {
        loop {
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    let ticks = Rc::new(Cell::new(0u32));
    let t2 = ticks.clone();
    let ticker = spawn(move || {
        for _ in 0..20 {
            greenfiber::sleep(Duration::from_millis(1));
            t2.set(t2.get() + 1);
        }
    });
    yield_now();
    // The loop ignores every error std's sleep gets, so it never ends: the kill waits, and the
    // other fibers and timers keep running meanwhile.
    assert_eq!(with_timeout(Duration::from_millis(100), || g.kill()), Err(Timeout));
    ticker.join();
    assert_eq!(ticks.get(), 20);
    assert!(!g.ready());
}

#[test]
fn with_timeout_bounds_a_loop_of_std_sleeps() {
    monkey::patch_all();
    let t = Instant::now();
    let r = with_timeout(Duration::from_millis(60), || {
        for _ in 0..20 {
            std::thread::sleep(Duration::from_millis(30));
        }
    });
    assert_eq!(r, Err(Timeout));
    assert!(t.elapsed() < Duration::from_millis(400), "{:?}", t.elapsed());
    // The held timeout went with its with_timeout: a later sleep sleeps.
    let t = Instant::now();
    std::thread::sleep(Duration::from_millis(30));
    assert!(t.elapsed() >= Duration::from_millis(30));
}

#[test]
fn with_timeout_around_a_std_read_reports_the_timeout_and_bounds_later_reads() {
    monkey::patch_all();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let server = spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let _ = s.write_all(b"late");
    });
    let mut c = TcpStream::connect(addr).unwrap();
    let t = Instant::now();
    let r = with_timeout(Duration::from_millis(50), || {
        let mut buf = [0u8; 4];
        let first = c.read(&mut buf).map_err(|e| e.kind());
        // The second read is inside the same timed-out block: it fails at once too.
        let second = c.read(&mut buf).map_err(|e| e.kind());
        (first, second)
    });
    assert_eq!(r, Err(Timeout));
    assert!(t.elapsed() < Duration::from_millis(250), "{:?}", t.elapsed());
    // Outside the block the socket works as before.
    let mut buf = [0u8; 4];
    c.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"late");
    server.join();
}

#[test]
fn a_kill_swallowed_by_a_std_call_is_raised_at_the_next_greenfiber_wait() {
    monkey::patch_all();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let _keep = spawn(move || l.accept().map(|(s, _)| s));
    let seen = Rc::new(Cell::new(None));
    let after = Rc::new(Cell::new(false));
    let (s2, a2) = (seen.clone(), after.clone());
    let g = spawn(move || {
        let mut c = TcpStream::connect(addr).unwrap();
        let mut buf = [0u8; 1];
        // Killed in here: the read fails, and this fiber ignores the error...
        s2.set(c.read(&mut buf).err().map(|e| e.kind()));
        // ... but its next wait outside a hooked call raises the kill.
        greenfiber::sleep(Duration::from_millis(1));
        a2.set(true);
    });
    std::thread::sleep(Duration::from_millis(20));
    g.kill();
    assert_eq!(g.get(), Err(Error::Killed));
    assert!(seen.get().is_some_and(|k| k != ErrorKind::WouldBlock), "{:?}", seen.get());
    assert!(!after.get(), "the fiber ran past its next wait after its kill");
}
