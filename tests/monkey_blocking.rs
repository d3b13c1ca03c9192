//! Hooked calls keep the promises of the *blocking* calls they replace, although the hooks run
//! them on fds made non-blocking, where the kernel stops short:
//! - `recv(.., MSG_WAITALL)` on a stream socket returns only when the whole buffer is filled
//!   (or at end of file, an error or a signal); on a datagram socket, one datagram;
//! - `send` (and `write`) of a large buffer to a blocking TCP socket returns only when all of
//!   it is queued.
#![cfg(feature = "monkey")]
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::time::Duration;

use greenfiber::with_timeout;

fn pair() -> (std::net::TcpStream, std::net::TcpStream) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (s, _) = l.accept().unwrap();
    (c, s)
}

fn recv_waitall() -> isize {
    greenfiber::monkey::patch_all();
    let (mut c, s) = pair();
    let reader = greenfiber::spawn(move || {
        let mut buf = [0u8; 8];
        // SAFETY: a valid buffer of 8 bytes.
        unsafe { libc::recv(s.as_raw_fd(), buf.as_mut_ptr().cast(), 8, libc::MSG_WAITALL) }
    });
    let writer = greenfiber::spawn(move || {
        c.write_all(b"abcd").unwrap();
        greenfiber::sleep(Duration::from_millis(100));
        c.write_all(b"efgh").unwrap();
        greenfiber::sleep(Duration::from_millis(100));
    });
    let n = reader.get().unwrap();
    writer.join();
    n
}

#[test]
fn recv_waitall_in_a_fiber_fills_the_whole_buffer() {
    let n = recv_waitall();
    assert_eq!(n, 8, "hooked recv(MSG_WAITALL) on a blocking socket returned a partial read");
}

#[test]
fn recvmsg_waitall_in_a_fiber_fills_every_buffer() {
    greenfiber::monkey::patch_all();
    let (mut c, s) = pair();
    let reader = greenfiber::spawn(move || {
        let (mut a, mut b) = ([0u8; 3], [0u8; 5]);
        let iov = [
            libc::iovec { iov_base: a.as_mut_ptr().cast(), iov_len: 3 },
            libc::iovec { iov_base: b.as_mut_ptr().cast(), iov_len: 5 },
        ];
        // SAFETY: all-zero is a valid msghdr; then two valid iovecs.
        let mut m: libc::msghdr = unsafe { std::mem::zeroed() };
        m.msg_iov = iov.as_ptr().cast_mut();
        m.msg_iovlen = 2;
        // SAFETY: a valid msghdr.
        let n = unsafe { libc::recvmsg(s.as_raw_fd(), &mut m, libc::MSG_WAITALL) };
        (n, [&a[..], &b[..]].concat())
    });
    let writer = greenfiber::spawn(move || {
        // Parts that end inside the first buffer, then inside the second.
        for part in [&b"ab"[..], b"cde", b"fgh"] {
            c.write_all(part).unwrap();
            greenfiber::sleep(Duration::from_millis(30));
        }
    });
    let (n, got) = reader.get().unwrap();
    writer.join();
    assert_eq!((n, &got[..]), (8, &b"abcdefgh"[..]));
}

#[test]
fn recv_waitall_on_a_datagram_socket_returns_one_datagram() {
    greenfiber::monkey::patch_all();
    let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    b.send_to(b"abcd", a.local_addr().unwrap()).unwrap();
    b.send_to(b"efgh", a.local_addr().unwrap()).unwrap();
    let reader = greenfiber::spawn(move || {
        let mut buf = [0u8; 8];
        // SAFETY: a valid buffer of 8 bytes.
        let n = unsafe { libc::recv(a.as_raw_fd(), buf.as_mut_ptr().cast(), 8, libc::MSG_WAITALL) };
        (n, buf)
    });
    let (n, buf) = reader.get().unwrap();
    assert_eq!((n, &buf[..4]), (4, &b"abcd"[..]));
}

/// How a test hands 16 MiB to the kernel in one call.
#[derive(Clone, Copy)]
enum Via {
    Send,
    Writev,
    Sendmsg,
}

/// One blocking call of `via` with 16 MiB in a fiber, against a plain blocking reader on a
/// thread without a hub that starts 200 ms late (so the send buffer fills first) and then
/// drains everything. Returns what the call returned and what the reader got.
fn big_send(via: Via) -> (isize, usize) {
    greenfiber::monkey::patch_all();
    let (c, mut s) = pair();
    let drain = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        let mut total = 0;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return total,
                Ok(n) => {
                    // In order: 5 MiB of 1, three 2s, then 3s.
                    let expected = |i: usize| match i {
                        i if i < 5 << 20 => 1,
                        i if i < (5 << 20) + 3 => 2,
                        _ => 3,
                    };
                    if buf[..n].iter().enumerate().any(|(i, &b)| b != expected(total + i)) {
                        return usize::MAX; // out of order or doubled
                    }
                    total += n;
                }
            }
        }
    });
    let sender = greenfiber::spawn(move || {
        // Three buffers of different sizes, so that parts end inside one as well as between.
        let bufs = [vec![1u8; 5 << 20], vec![2u8; 3], vec![3u8; (11 << 20) - 3]];
        let iov: Vec<libc::iovec> = bufs
            .iter()
            .map(|b| libc::iovec { iov_base: b.as_ptr() as *mut _, iov_len: b.len() })
            .collect();
        let n = match via {
            Via::Send => {
                let data: Vec<u8> = bufs.concat();
                // SAFETY: a valid buffer of its length.
                unsafe { libc::send(c.as_raw_fd(), data.as_ptr().cast(), data.len(), 0) }
            }
            // SAFETY: three valid iovecs.
            Via::Writev => unsafe { libc::writev(c.as_raw_fd(), iov.as_ptr(), 3) },
            Via::Sendmsg => {
                // SAFETY: all-zero is a valid msghdr; then three valid iovecs.
                let mut m: libc::msghdr = unsafe { std::mem::zeroed() };
                m.msg_iov = iov.as_ptr().cast_mut();
                m.msg_iovlen = 3;
                // SAFETY: a valid msghdr.
                unsafe { libc::sendmsg(c.as_raw_fd(), &m, 0) }
            }
        };
        drop(c);
        n
    });
    let n = sender.get().unwrap();
    (n, drain.join().unwrap())
}

const BIG: usize = 16 << 20;

#[test]
fn blocking_send_in_a_fiber_sends_everything() {
    assert_eq!(big_send(Via::Send), (BIG as isize, BIG), "a short count, or bytes lost");
}

#[test]
fn blocking_writev_in_a_fiber_sends_everything() {
    assert_eq!(big_send(Via::Writev), (BIG as isize, BIG), "a short count, or bytes lost");
}

#[test]
fn blocking_sendmsg_in_a_fiber_sends_everything() {
    assert_eq!(big_send(Via::Sendmsg), (BIG as isize, BIG), "a short count, or bytes lost");
}

#[test]
fn recv_peek_waitall_peeks_the_stream_from_its_start() {
    greenfiber::monkey::patch_all();
    let (mut c, s) = pair();
    let reader = greenfiber::spawn(move || {
        let mut buf = [0u8; 8];
        let flags = libc::MSG_PEEK | libc::MSG_WAITALL;
        // SAFETY: a valid buffer of 8 bytes.
        let n = unsafe { libc::recv(s.as_raw_fd(), buf.as_mut_ptr().cast(), 8, flags) };
        (n, buf)
    });
    let writer = greenfiber::spawn(move || {
        c.write_all(b"abc").unwrap();
        greenfiber::sleep(Duration::from_millis(50));
        c.write_all(b"defgh").unwrap();
    });
    let (n, buf) = reader.get().unwrap();
    writer.join();
    // Each part of a looped peek would peek "abc" again: "abcabcab".
    assert!(n > 0 && buf[..n as usize] == b"abcdefgh"[..n as usize], "{n} {buf:?}");
}

/// A sender on a socket with a 300 ms SO_SNDTIMEO, a reader taking 64 KiB every 200 ms, and
/// more to send than it can take in that time: the send returns a partial count once the
/// timeout is spent, as the kernel's blocking send does, instead of going on part by part.
fn send_with_timeout_to_a_slow_reader() -> isize {
    let (c, s) = pair();
    c.set_write_timeout(Some(Duration::from_millis(300))).unwrap();
    for (fd, opt) in [(c.as_raw_fd(), libc::SO_SNDBUF), (s.as_raw_fd(), libc::SO_RCVBUF)] {
        let v: libc::c_int = 32 << 10;
        // SAFETY: an int-sized option of the size given.
        unsafe { libc::setsockopt(fd, libc::SOL_SOCKET, opt, (&raw const v).cast(), 4) };
    }
    std::thread::spawn(move || {
        let mut s = s;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            std::thread::sleep(Duration::from_millis(200));
            if matches!(s.read(&mut buf), Ok(0) | Err(_)) {
                return;
            }
        }
    });
    let data = vec![7u8; LEN_SLOW];
    // SAFETY: a valid buffer of LEN_SLOW bytes.
    unsafe { libc::send(c.as_raw_fd(), data.as_ptr().cast(), LEN_SLOW, 0) }
}

/// 4 MiB: about 13 s for the slow reader, far past the 300 ms timeout.
const LEN_SLOW: usize = 4 << 20;

#[test]
fn so_sndtimeo_bounds_a_whole_send_in_a_fiber() {
    greenfiber::monkey::patch_all();
    let sender = greenfiber::spawn(send_with_timeout_to_a_slow_reader);
    // The bound only keeps a broken build from hanging the suite.
    let n = with_timeout(Duration::from_secs(60), || {
        sender.join();
        sender.take().unwrap().unwrap()
    })
    .expect("the send never returned");
    assert!(n > 0 && (n as usize) < LEN_SLOW, "sent {n} of {LEN_SLOW}");
}

#[test]
fn so_sndtimeo_bounds_a_whole_send_on_a_thread_without_a_hub() {
    greenfiber::monkey::patch_all();
    let n = std::thread::spawn(send_with_timeout_to_a_slow_reader).join().unwrap();
    assert!(n > 0 && (n as usize) < LEN_SLOW, "sent {n} of {LEN_SLOW}");
}

/// Receives into buffers of 3 and 5 bytes with room for ancillary data; returns the count, the
/// ancillary data's length and the bytes.
fn recvmsg_with_room_for_fds(s: &std::os::unix::net::UnixStream) -> (isize, usize, Vec<u8>) {
    let (mut a, mut b) = ([0u8; 3], [0u8; 5]);
    let iov = [
        libc::iovec { iov_base: a.as_mut_ptr().cast(), iov_len: 3 },
        libc::iovec { iov_base: b.as_mut_ptr().cast(), iov_len: 5 },
    ];
    let mut cbuf = [0u64; 16];
    // SAFETY: all-zero is a valid msghdr; then two valid iovecs and a control buffer.
    let mut m: libc::msghdr = unsafe { std::mem::zeroed() };
    m.msg_iov = iov.as_ptr().cast_mut();
    m.msg_iovlen = 2;
    m.msg_control = cbuf.as_mut_ptr().cast();
    m.msg_controllen = std::mem::size_of_val(&cbuf);
    // SAFETY: a valid msghdr.
    let n = unsafe { libc::recvmsg(s.as_raw_fd(), &mut m, libc::MSG_WAITALL) };
    (n, m.msg_controllen, [&a[..], &b[..]].concat())
}

/// Sends `data` with one descriptor (stdin's number) attached.
fn sendmsg_with_an_fd(c: &std::os::unix::net::UnixStream, data: &[u8]) {
    let iov = [libc::iovec { iov_base: data.as_ptr() as *mut _, iov_len: data.len() }];
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(4) } as usize;
    let mut cbuf = vec![0u64; space / 8 + 1];
    // SAFETY: all-zero is a valid msghdr; then one valid iovec and a control buffer of `space`.
    let mut m: libc::msghdr = unsafe { std::mem::zeroed() };
    m.msg_iov = iov.as_ptr().cast_mut();
    m.msg_iovlen = 1;
    m.msg_control = cbuf.as_mut_ptr().cast();
    m.msg_controllen = space;
    // SAFETY: the control buffer has room for one header with one int (CMSG_SPACE(4)).
    unsafe {
        let cm = libc::CMSG_FIRSTHDR(&m);
        (*cm).cmsg_level = libc::SOL_SOCKET;
        (*cm).cmsg_type = libc::SCM_RIGHTS;
        (*cm).cmsg_len = libc::CMSG_LEN(4) as usize;
        *(libc::CMSG_DATA(cm) as *mut i32) = 0;
    }
    // SAFETY: a valid msghdr.
    assert_eq!(unsafe { libc::sendmsg(c.as_raw_fd(), &m, 0) }, data.len() as isize);
}

#[test]
fn recvmsg_waitall_on_a_unix_socket_keeps_the_descriptors_of_a_later_message() {
    greenfiber::monkey::patch_all();
    let (c, s) = std::os::unix::net::UnixStream::pair().unwrap();
    let reader = greenfiber::spawn(move || recvmsg_with_room_for_fds(&s));
    let writer = greenfiber::spawn(move || {
        let mut c = c;
        c.write_all(b"abcd").unwrap();
        greenfiber::sleep(Duration::from_millis(50));
        sendmsg_with_an_fd(&c, b"efgh");
    });
    let (n, controllen, data) = reader.get().unwrap();
    writer.join();
    // Whatever the call returned, a descriptor that arrived with its bytes is delivered.
    assert!(n > 0 && data[..n as usize] == b"abcdefgh"[..n as usize], "{n} {data:?}");
    if n as usize > 4 {
        assert!(controllen > 0, "the descriptor sent with \"efgh\" was lost");
    }
}

#[test]
fn a_successful_writev_in_parts_leaves_errno_as_it_was() {
    greenfiber::monkey::patch_all();
    let mut fds = [0i32; 2];
    // SAFETY: `fds` has room for the two descriptors.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), 0) }, 0);
    let (r, w) = (fds[0], fds[1]);
    let reader = greenfiber::spawn(move || {
        // SAFETY: `r` is a pipe end of ours, owned from here on.
        let mut f = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(r) };
        let mut v = Vec::new();
        f.read_to_end(&mut v).unwrap();
        v.len()
    });
    let writer = greenfiber::spawn(move || {
        // More than a pipe holds (64 KiB), so the write goes in parts.
        let bufs = vec![vec![1u8; 300_000]; 3];
        let iov: Vec<libc::iovec> = bufs
            .iter()
            .map(|b| libc::iovec { iov_base: b.as_ptr() as *mut _, iov_len: b.len() })
            .collect();
        // SAFETY: this thread's errno.
        unsafe { *libc::__errno_location() = 1234 };
        // SAFETY: three valid iovecs.
        let n = unsafe { libc::writev(w, iov.as_ptr(), 3) };
        // SAFETY: this thread's errno.
        let e = unsafe { *libc::__errno_location() };
        // SAFETY: `w` is ours and used no more.
        unsafe { libc::close(w) };
        (n, e)
    });
    let (n, e) = writer.get().unwrap();
    assert_eq!((n, e, reader.get().unwrap()), (900_000, 1234, 900_000));
}
