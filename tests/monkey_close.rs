//! Closes that glibc makes past the `close` hook (`close_range`, and `fclose` of a stream over
//! a socket) still forget the fd: a new file that gets the same number is waited on afresh.
//! One test in its own binary: it needs fd numbers nobody else takes meanwhile.
#![cfg(feature = "monkey")]
use std::time::Duration;

use greenfiber::{monkey, spawn, with_timeout};

#[derive(Clone, Copy, Debug)]
enum How {
    CloseRange,
    Fclose,
}

fn is_open(fd: i32) -> bool {
    // SAFETY: F_GETFD only inspects the fd.
    let r = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    r >= 0
}

/// Opens /dev/null until a number above `n` comes, keeping those below: the next new fd after
/// `n` is closed gets `n`.
fn fill_below(n: i32) -> Vec<i32> {
    let mut held = Vec::new();
    loop {
        // SAFETY: a NUL-terminated path.
        let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        assert!(fd >= 0);
        if fd > n {
            // SAFETY: our own fd.
            unsafe { libc::close(fd) };
            return held;
        }
        held.push(fd);
    }
}

/// A socket a fiber waited on is closed by `how`; a pipe then gets its number, and a fiber's
/// read of the pipe must be woken by the write to it.
fn reuse_after(how: How) -> Result<isize, greenfiber::Timeout> {
    let mut sv = [0i32; 2];
    let kind = libc::SOCK_STREAM | libc::SOCK_CLOEXEC;
    // SAFETY: a valid array of two fds.
    assert_eq!(unsafe { libc::socketpair(libc::AF_UNIX, kind, 0, sv.as_mut_ptr()) }, 0);
    let (a, b) = (sv[0], sv[1]);
    // SAFETY: a valid 4-byte buffer on an open fd.
    let r = spawn(move || unsafe { libc::read(a, [0u8; 4].as_mut_ptr().cast(), 4) });
    let w = spawn(move || {
        greenfiber::sleep(Duration::from_millis(20));
        // SAFETY: a valid 4-byte buffer on an open fd.
        unsafe { libc::write(b, b"ping".as_ptr().cast(), 4) }
    });
    assert_eq!((r.get().unwrap(), w.get().unwrap()), (4, 4)); // `a` is in the reactor now
    let held = fill_below(a);
    // SAFETY: our own fds; `fdopen` takes `a` over, and `fclose` closes it.
    unsafe {
        libc::close(b);
        match how {
            How::CloseRange => assert_eq!(libc::close_range(a as u32, a as u32, 0), 0),
            How::Fclose => {
                let f = libc::fdopen(a, c"r+".as_ptr());
                assert!(!f.is_null());
                assert_eq!(libc::fclose(f), 0);
            }
        }
    }
    assert!(!is_open(a), "{how:?} left it open");
    let (pr, mut pw) = std::io::pipe().unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&pr);
    assert_eq!(fd, a, "the pipe did not get the closed socket's number");
    let reader = spawn(move || {
        with_timeout(Duration::from_secs(5), || {
            // SAFETY: a valid 8-byte buffer on the open pipe.
            unsafe { libc::read(fd, [0u8; 8].as_mut_ptr().cast(), 8) }
        })
    });
    let writer = spawn(move || {
        greenfiber::sleep(Duration::from_millis(50));
        std::io::Write::write_all(&mut pw, b"hi").unwrap();
    });
    let got = reader.get().unwrap();
    writer.join();
    drop(pr);
    for f in held {
        // SAFETY: our own fds.
        unsafe { libc::close(f) };
    }
    got
}

#[test]
fn a_number_closed_past_the_close_hook_is_waited_on_afresh() {
    monkey::patch_all();
    for how in [How::CloseRange, How::Fclose] {
        assert_eq!(reuse_after(how), Ok(2), "{how:?}: the pipe's reader was not woken");
    }
    // `close_range` that only sets close-on-exec closes nothing and forgets nothing.
    let (pr, _pw) = std::io::pipe().unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&pr) as u32;
    // SAFETY: marks our own pipe's fd close-on-exec.
    assert_eq!(unsafe { libc::close_range(fd, fd, libc::CLOSE_RANGE_CLOEXEC as i32) }, 0);
    assert!(is_open(fd as i32));
}
