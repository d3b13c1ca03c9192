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

/// A peer that accepts one connection and never writes: a read from it waits.
fn silent_peer() -> (std::net::SocketAddr, greenfiber::Greenlet<std::io::Result<TcpStream>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    (addr, spawn(move || l.accept().map(|(s, _)| s)))
}

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
    let (addr, _keep) = silent_peer();
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

/// Sleeps in its `Drop`: a cleanup that takes a while.
struct SlowCleanup(u64);
impl Drop for SlowCleanup {
    fn drop(&mut self) {
        greenfiber::sleep(Duration::from_millis(self.0));
    }
}

/// A fiber killed whose cleanup sleeps `ms`: a panic is under way on the thread meanwhile.
fn unwinding_bystander(ms: u64) -> greenfiber::Greenlet<()> {
    let a = spawn(move || {
        let _c = SlowCleanup(ms);
        greenfiber::sleep(Duration::from_secs(60));
    });
    yield_now();
    let a2 = a.clone();
    let _killer = spawn(move || a2.kill());
    yield_now();
    yield_now();
    assert!(!a.ready());
    a
}

#[test]
fn held_raises_wait_while_another_fiber_is_halfway_through_an_unwind_then_arrive() {
    monkey::patch_all();
    let t = Instant::now();
    let a = unwinding_bystander(300);
    let b = spawn(|| {
        with_timeout(Duration::from_millis(50), || {
            std::thread::sleep(Duration::from_millis(100)); // fires here: held
            greenfiber::sleep(Duration::from_millis(3000)); // raised here, once A's unwind ends
        })
    });
    assert_eq!(b.get(), Ok(Err(Timeout)));
    assert!(a.ready(), "the held timeout came before the other unwind was over");
    assert!(t.elapsed() < Duration::from_millis(2500), "{:?}", t.elapsed());
}

#[test]
fn a_held_kill_is_not_raised_into_the_cleanup_of_the_panic_its_error_causes() {
    // B is killed in a std read; it answers the ECANCELED with a panic of its own while A is
    // halfway through an unwind, and a destructor of B parks during that panic. Raising the
    // held kill there aborted the process.
    monkey::patch_all();
    let (addr, _keep) = silent_peer();
    let a = unwinding_bystander(300);
    let b = spawn(move || {
        let _g = SlowCleanup(5);
        let mut c = TcpStream::connect(addr).unwrap();
        let mut buf = [0u8; 1];
        let _ = c.read(&mut buf).unwrap(); // killed in here: the error panics
    });
    greenfiber::sleep(Duration::from_millis(30));
    b.kill();
    assert_eq!(b.get(), Err(Error::Killed)); // its panic answered the kill's error
    a.join();
}

#[test]
fn a_timeout_set_in_a_cleanup_and_swallowed_by_a_std_call_still_bounds_the_cleanup() {
    monkey::patch_all();
    type Outcome = Option<(Result<(), Timeout>, Duration)>;
    struct Cleanup(Rc<Cell<Outcome>>);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let t = Instant::now();
            let r = with_timeout(Duration::from_millis(50), || {
                std::thread::sleep(Duration::from_millis(200)); // fires here: held
                greenfiber::sleep(Duration::from_millis(2000)); // raised here, in the cleanup
            });
            self.0.set(Some((r, t.elapsed())));
        }
    }
    let out = Rc::new(Cell::new(None));
    let o2 = out.clone();
    let g = spawn(move || {
        let _c = Cleanup(o2);
        greenfiber::sleep(Duration::from_secs(60));
    });
    yield_now();
    g.kill();
    let (r, took) = out.take().unwrap();
    assert_eq!(r, Err(Timeout));
    assert!(took < Duration::from_millis(1000), "{took:?}");
}

#[test]
fn a_raw_coroutine_killed_in_a_std_call_dies_and_frees_its_closure() {
    monkey::patch_all();
    let freed = Rc::new(Cell::new(false));
    struct Freed(Rc<Cell<bool>>);
    impl Drop for Freed {
        fn drop(&mut self) {
            self.0.set(true);
        }
    }
    let f = freed.clone();
    let x = greenfiber::Coroutine::new(move |()| {
        let _f = Freed(f);
        std::thread::sleep(Duration::from_secs(5)); // killed in here: held, ends early
    });
    // T starts X, whose std sleep parks it in the hub; T waits in that switch for good (X's
    // end goes to its killer).
    let x2 = x.clone();
    let _t = spawn(move || {
        let () = x2.switch(());
    });
    yield_now();
    assert!(x.is_started() && !x.is_dead());
    let t = Instant::now();
    let k = spawn(move || x.kill());
    k.join();
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert!(freed.get(), "X did not end, or kept its closure");
}

#[test]
fn the_hub_raises_no_held_raise_into_a_cleanup_that_an_earlier_one_of_its_pass_started() {
    // X unwinds; A and C keep held raises while it does (C holds a timeout and a kill). When
    // X's unwind ends the hub raises A's timeout, whose cleanup parks: a panic is under way
    // again. C's own raise must then wait: C answers its timeout with a panic of its own (not
    // attributed to it while A unwinds), and its held kill raised into that panic's cleanup
    // aborted the process.
    monkey::patch_all();
    let x = unwinding_bystander(300);
    let a = spawn(move || {
        with_timeout(Duration::from_millis(20), || {
            let _g = SlowCleanup(100);
            std::thread::sleep(Duration::from_millis(50)); // fires here: held
            greenfiber::sleep(Duration::from_secs(10)); // X unwinds: kept
        })
    });
    let go_on = Rc::new(Cell::new(false));
    let g2 = go_on.clone();
    let c = spawn(move || {
        let _g = SlowCleanup(50);
        with_timeout(Duration::from_millis(40), || {
            std::thread::sleep(Duration::from_millis(100)); // fires here: held
            while !g2.get() {
                std::thread::sleep(Duration::from_millis(1)); // refused at once
            }
            greenfiber::sleep(Duration::from_secs(10)); // X unwinds: kept
        })
        .expect("C timed out"); // C's own panic
    });
    greenfiber::sleep(Duration::from_millis(80));
    let c2 = c.clone();
    let _killer = spawn(move || {
        go_on.set(true);
        c2.kill();
    });
    x.join();
    assert_eq!(a.get(), Ok(Err(Timeout)));
    assert!(c.get().is_err());
}

#[test]
fn a_held_timeout_that_an_unwind_waits_for_is_raised_before_any_loop_exit() {
    // A's timeout is held in a std sleep; X is killed and its cleanup joins A. While X unwinds
    // the held timeout waits (held.rs), and X's unwind waits for A: when nothing else can run,
    // the hub raises the held timeout, as a plain timeout would have fired, rather than
    // LoopExit (which a main waiting in its own cleanup could not take without aborting).
    monkey::patch_all();
    struct JoinOnDrop(Option<greenfiber::Greenlet<Result<(), Timeout>>>);
    impl Drop for JoinOnDrop {
        fn drop(&mut self) {
            if let Some(g) = self.0.take() {
                g.join();
            }
        }
    }
    let ev = Rc::new(greenfiber::sync::Event::new());
    let ev2 = ev.clone();
    let a = spawn(move || {
        with_timeout(Duration::from_millis(50), || {
            std::thread::sleep(Duration::from_millis(100)); // fires here: held
            ev2.wait(); // never set
        })
    });
    let a2 = a.clone();
    let x = spawn(move || {
        let _j = JoinOnDrop(Some(a2)); // X's cleanup waits for A
        greenfiber::sleep(Duration::from_secs(60));
    });
    yield_now();
    yield_now();
    let x2 = x.clone();
    let _killer = spawn(move || x2.kill());
    assert_eq!(a.get(), Ok(Err(Timeout)));
    x.join();
}

#[test]
fn a_fiber_that_panics_on_the_error_of_its_swallowed_kill_ends_killed() {
    monkey::patch_all();
    let (addr, _keep) = silent_peer();
    let g = spawn(move || {
        let mut c = TcpStream::connect(addr).unwrap();
        let mut buf = [0u8; 1];
        let _ = c.read(&mut buf).unwrap(); // killed in here: the error panics
    });
    greenfiber::sleep(Duration::from_millis(20));
    g.kill();
    assert_eq!(g.get(), Err(Error::Killed));
    // A with_timeout's closure that panics on the error of its swallowed timeout: the panic
    // goes on (it may as well be a bug of its own), and the held timeout goes with the scope.
    let r = std::panic::catch_unwind(|| {
        with_timeout(Duration::from_millis(20), || {
            std::thread::sleep(Duration::from_millis(200)); // fires here: held
            let mut c = TcpStream::connect(addr).unwrap();
            let mut buf = [0u8; 1];
            let _ = c.read(&mut buf).unwrap(); // refused: ETIMEDOUT, which panics
        })
    });
    assert!(r.is_err());
    let t = Instant::now();
    std::thread::sleep(Duration::from_millis(30));
    assert!(t.elapsed() >= Duration::from_millis(30));
}

#[test]
fn the_hubs_pass_leaves_a_fibers_other_held_raises_where_its_ending_sees_them() {
    // X holds a timeout and then a kill while Y unwinds. When Y's unwind ends the hub raises
    // X's kill; the timeout must not stay behind in the pass to be raised after its
    // with_timeout ended, nor a kill be missed by the fiber's end.
    monkey::patch_all();
    let y = unwinding_bystander(250);
    let x = spawn(move || {
        with_timeout(Duration::from_millis(20), || {
            let t = Instant::now();
            while t.elapsed() < Duration::from_millis(120) {
                std::thread::sleep(Duration::from_millis(10)); // timeout, then kill: held
            }
            greenfiber::sleep(Duration::from_secs(1)); // Y unwinds: both kept
        })
        .is_err()
    });
    greenfiber::sleep(Duration::from_millis(60));
    let x2 = x.clone();
    let _k = spawn(move || x2.kill());
    assert_eq!(x.get(), Err(Error::Killed));
    y.join();
}
