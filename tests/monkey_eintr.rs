//! A signal with an SA_RESTART handler does not make an emulated blocking call fail with EINTR
//! (the kernel restarts the real one). Its own test binary: it installs a signal handler.
#![cfg(feature = "monkey")]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

extern "C" fn on_alarm(_: libc::c_int) {}

#[test]
fn a_blocking_read_outside_fibers_is_restarted_after_a_signal() {
    greenfiber::monkey::patch_all();
    // SAFETY: an all-zero sigaction is valid; the handler is async-signal-safe (it does
    // nothing), and SIGALRM is ours in this test binary.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_alarm as extern "C" fn(libc::c_int) as usize;
        sa.sa_flags = libc::SA_RESTART;
        assert_eq!(libc::sigaction(libc::SIGALRM, &sa, std::ptr::null_mut()), 0);
    }
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (mut s, _) = l.accept().unwrap();
    // A fiber reads once, so the hooks make `s` non-blocking underneath.
    let g = greenfiber::spawn(move || {
        let mut b = [0u8; 1];
        let n = s.read(&mut b).unwrap();
        (s, n)
    });
    c.write_all(b"x").unwrap();
    g.join();
    let (mut s, n) = g.take().unwrap().unwrap();
    assert_eq!(n, 1);
    // Another thread signals this one every 2 ms for 100 ms while it blocks in `read` with no
    // fiber work (emulated blocking), then sends the data.
    // SAFETY: pthread_self has no preconditions.
    let me = unsafe { libc::pthread_self() } as usize;
    let t = std::thread::spawn(move || {
        for _ in 0..50 {
            std::thread::sleep(Duration::from_millis(2));
            // SAFETY: `me` is the reading thread, alive until it joins this one.
            unsafe { libc::pthread_kill(me as libc::pthread_t, libc::SIGALRM) };
        }
        c.write_all(b"yz").unwrap();
        c
    });
    let mut b = [0u8; 2];
    let r = s.read(&mut b);
    assert_eq!(r.unwrap(), 2, "EINTR reached the caller");
    assert_eq!(&b, b"yz");
    t.join().unwrap();
}
