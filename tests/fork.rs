//! `fork` and the hub: a child inherits the parent's epoll instance, and must neither change
//! the parent's registrations nor take its events; a child that goes on using the hub gets
//! its own (the reactor's "Fork" section).
use std::io::{Read, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;
use std::time::Duration;

use greenfiber::net::{TcpListener, TcpStream};

/// The tests of this file fork one at a time, so no other thread of this process is inside
/// greenfiber (holding the shared stack pool's lock, say) when a child is made.
static FORKING: Mutex<()> = Mutex::new(());

/// Forks; the child runs `child` and exits with 0 if it returns true, 1 if false, 2 if it
/// panics (nothing of the test harness runs in the child). Returns the child's pid.
fn fork(child: impl FnOnce() -> bool) -> libc::pid_t {
    // SAFETY: the child only runs `child` and then `_exit`s; the tests of this file hold
    // `FORKING`, so no other thread of theirs is inside greenfiber at the fork.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = match catch_unwind(AssertUnwindSafe(child)) {
            Ok(true) => 0,
            Ok(false) => 1,
            Err(_) => 2,
        };
        // SAFETY: ends the child at once, without running the parent's destructors twice.
        unsafe { libc::_exit(code) };
    }
    pid
}

/// Waits for `pid` (parking the caller's thread, as the child is quick) and returns its exit
/// code.
fn exit_code(pid: libc::pid_t) -> i32 {
    let mut status = 0;
    // SAFETY: `status` is a valid place for the wait status of our own child.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(r, pid);
    assert!(libc::WIFEXITED(status), "child status {status:#x}");
    libc::WEXITSTATUS(status)
}

#[test]
fn a_child_that_drops_an_inherited_listener_leaves_the_parents_accept_working() {
    let _one = FORKING.lock().unwrap_or_else(|p| p.into_inner());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // A forking server's child closes the listener it does not need.
    let mut listener = Some(listener);
    let pid = fork(|| {
        drop(listener.take());
        true
    });
    assert_eq!(exit_code(pid), 0);
    let listener = listener.expect("only the child took it");

    let client = greenfiber::spawn(move || {
        greenfiber::sleep(Duration::from_millis(20));
        TcpStream::connect(addr).map(drop)
    });
    let accepted = greenfiber::with_timeout(Duration::from_secs(10), || listener.accept());
    client.join();
    assert!(matches!(client.take(), Some(Ok(Ok(())))));
    assert!(
        matches!(accepted, Ok(Ok(_))),
        "the parent's accept never woke after the child dropped its copy: {accepted:?}"
    );
}

#[test]
fn a_child_uses_the_hub_on_inherited_and_new_sockets_without_taking_the_parents_events() {
    let _one = FORKING.lock().unwrap_or_else(|p| p.into_inner());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // The parent waits on the listener before the fork, so its registration is live in the
    // epoll set the child inherits.
    let parent_accept = greenfiber::spawn(move || listener.accept().map(|(s, _)| s));
    greenfiber::sleep(Duration::from_millis(10));

    let pid = fork(move || {
        // In the child: sleeps, a new listener, and a connection to the parent's listener.
        greenfiber::sleep(Duration::from_millis(5));
        let own = TcpListener::bind("127.0.0.1:0").unwrap();
        let own_addr = own.local_addr().unwrap();
        let dialer = greenfiber::spawn(move || TcpStream::connect(own_addr).map(drop));
        let ok_own = greenfiber::with_timeout(Duration::from_secs(10), || own.accept()).is_ok();
        dialer.join();
        let ok_dial = matches!(dialer.take(), Some(Ok(Ok(()))));
        let to_parent = TcpStream::connect(addr).and_then(|mut s| s.write_all(b"child"));
        ok_own && ok_dial && to_parent.is_ok()
    });

    // The parent's fiber accepts the child's connection: the child's hub did not take the
    // listener's edge, and the parent's registration is intact.
    let got = greenfiber::with_timeout(Duration::from_secs(10), || {
        parent_accept.join();
        let mut s = parent_accept.take().unwrap().unwrap().unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).map(|_| buf)
    });
    assert_eq!(exit_code(pid), 0, "the child's own use of the hub failed");
    assert_eq!(got.expect("timed out").unwrap(), b"child");
}

#[test]
fn a_child_forked_with_a_remote_wake_pending_still_hears_remote_wakes() {
    let _one = FORKING.lock().unwrap_or_else(|p| p.into_inner());
    let (mut wait1, waker1) = greenfiber::hub::remote_signal();
    let f = greenfiber::spawn(move || wait1.wait());
    greenfiber::sleep(Duration::from_millis(10)); // `f` parks
    // Another thread wakes `f`; its eventfd write is pending when the process forks.
    std::thread::spawn(move || waker1.wake()).join().unwrap();

    let pid = fork(|| {
        // The child: `f`'s inherited wake and a new one from a thread of the child both arrive.
        let (mut wait2, waker2) = greenfiber::hub::remote_signal();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            waker2.wake()
        });
        let woke = wait2.wait_timeout(Duration::from_secs(30));
        t.join().unwrap();
        woke && f.join_timeout(Duration::from_secs(30))
    });
    assert_eq!(exit_code(pid), 0, "the child missed a remote wake");
    f.join();
}
