//! With the monkey patch, a forked child that closes an inherited socket (the hooked `close`
//! ends the fd's registration) must not end the parent's: the parent's fiber parked in a
//! hooked `read` on it is still woken (the reactor's "Fork" section).
#![cfg(feature = "monkey")]
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::time::Duration;

#[test]
fn child_closing_an_inherited_socket_does_not_strand_the_parents_reader() {
    run(true)
}

/// The same without the child's close.
#[test]
fn control_child_exits_without_closing() {
    run(false)
}

/// The tests of this file fork one at a time (see `tests/fork.rs`).
static FORKING: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run(child_closes: bool) {
    let _one = FORKING.lock().unwrap_or_else(|p| p.into_inner());
    greenfiber::monkey::patch_all();
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    let (s, _) = l.accept().unwrap();
    let fd = s.as_raw_fd();
    let reader = greenfiber::spawn(move || {
        let mut s = s;
        let mut b = [0u8; 4];
        s.read(&mut b).map(|n| b[..n].to_vec()).unwrap_or_default()
    });
    // Let the reader park in the hooked read (the fd is now in the hub's epoll set).
    greenfiber::sleep(Duration::from_millis(50));

    // SAFETY: the child only closes an fd and calls `_exit`; the two tests hold `FORKING`, so
    // no other thread of theirs is inside greenfiber at the fork.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        if child_closes {
            // SAFETY: closes the child's copy of an fd it owns (inherited); nothing else uses it.
            unsafe { libc::close(fd) };
        }
        // SAFETY: ends the child at once, without running the parent's destructors twice.
        unsafe { libc::_exit(0) };
    }
    let mut status = 0;
    // SAFETY: `status` is a valid place for the wait status of our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };

    c.write_all(b"ping").unwrap();
    let r = greenfiber::with_timeout(Duration::from_secs(3), || reader.get());
    assert!(
        matches!(&r, Ok(Ok(v)) if v == b"ping"),
        "parent's reader never woke after the child closed its copy of the fd: {r:?}"
    );
}
