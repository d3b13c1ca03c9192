//! Layer 3, TCP: std::net's behaviour through greenfiber::net, with fibers on both ends.
mod common;

use std::cell::Cell;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use common::{in_child_process, open_fds, wait_until};
use greenfiber::net::{TcpListener, TcpStream};
use greenfiber::{Greenlet, sleep, spawn, with_timeout};

fn listener() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap();
    (l, a)
}

/// A server fiber that echoes every connection until EOF.
fn echo_server() -> (SocketAddr, Greenlet<()>) {
    let (l, a) = listener();
    let g = spawn(move || {
        for s in l.incoming() {
            let s = s.unwrap();
            spawn(move || {
                let _ = io::copy(&mut &s, &mut &s);
            });
        }
    });
    (a, g)
}

#[test]
fn read_exact_write_all_and_bufreader() {
    let (addr, server) = echo_server();
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_nodelay(true).unwrap();
    assert!(c.nodelay().unwrap());
    assert_eq!(c.peer_addr().unwrap(), addr);
    c.write_all(b"ping").unwrap();
    let mut buf = [0; 4];
    c.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");

    c.write_all(b"line one\nline two\n").unwrap();
    let mut r = BufReader::new(&c);
    let mut lines = Vec::new();
    for _ in 0..2 {
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        lines.push(l);
    }
    assert_eq!(lines, ["line one\n", "line two\n"]);
    server.kill();
}

#[test]
fn eof_reads_zero() {
    let (l, addr) = listener();
    let g = spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.write_all(b"bye").unwrap();
        // dropping `s` closes it
    });
    let mut c = TcpStream::connect(addr).unwrap();
    let mut v = Vec::new();
    c.read_to_end(&mut v).unwrap();
    assert_eq!(v, b"bye");
    assert_eq!(c.read(&mut [0; 8]).unwrap(), 0);
    g.join();
}

/// After a read that empties the socket, the next read parks without trying (the reactor's read
/// readiness): later data, an empty read, a peek, data sent together with EOF, and a local
/// shutdown must all still come through. The client's sends order the server's writes, so
/// every step is deterministic on the one thread; `with_timeout` only turns a hang into a
/// failure.
#[test]
fn reads_after_a_read_that_emptied_the_socket() {
    let (l, addr) = listener();
    let g = spawn(move || {
        let (s, _) = l.accept().unwrap();
        let mut s = &s;
        let mut go = [0; 1];
        for msg in [&b"one"[..], b"two", b"three"] {
            s.read_exact(&mut go).unwrap();
            s.write_all(msg).unwrap();
        }
        s.read_exact(&mut go).unwrap();
        s.write_all(b"four").unwrap();
        // dropping `s` closes it: "four" and the FIN arrive before the client runs again
    });
    with_timeout(Duration::from_secs(10), || {
        let c = TcpStream::connect(addr).unwrap();
        let mut c = &c;
        let mut buf = [0; 64];
        c.write_all(b"1").unwrap();
        assert_eq!(c.read(&mut buf).unwrap(), 3); // "one", short: the socket is drained
        c.write_all(b"2").unwrap();
        assert_eq!(c.read(&mut buf).unwrap(), 3); // parks at once, woken by "two"
        c.write_all(b"3").unwrap();
        // An empty read waits for data as std's blocking one does, then returns 0.
        assert_eq!(c.read(&mut []).unwrap(), 0);
        assert_eq!(c.peek(&mut buf).unwrap(), 5); // "three" stays queued
        assert_eq!(c.read(&mut buf).unwrap(), 5);
        c.write_all(b"4").unwrap();
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b"four");
        assert_eq!(c.read(&mut buf).unwrap(), 0);
    })
    .unwrap();
    g.join();

    // A local shutdown after a draining read: the next read returns EOF at once.
    let (l, addr) = listener();
    let g = spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.write_all(b"x").unwrap();
        let _ = s.read(&mut [0; 1]); // holds the connection open until the client closes
    });
    with_timeout(Duration::from_secs(10), || {
        let c = TcpStream::connect(addr).unwrap();
        assert_eq!((&c).read(&mut [0; 8]).unwrap(), 1);
        c.shutdown(Shutdown::Read).unwrap();
        assert_eq!((&c).read(&mut [0; 8]).unwrap(), 0);
    })
    .unwrap();
    g.join();
}

#[test]
fn partial_writes_against_a_slow_reader_deliver_every_byte() {
    const N: usize = 8 << 20;
    let (l, addr) = listener();
    let reader = spawn(move || {
        let (s, _) = l.accept().unwrap();
        let mut sum = 0u64;
        let mut n = 0;
        let mut buf = vec![0; 64 << 10];
        loop {
            let k = (&s).read(&mut buf).unwrap();
            if k == 0 {
                break;
            }
            sum = buf[..k].iter().fold(sum, |a, &b| a.wrapping_mul(31).wrapping_add(b as u64));
            n += k;
            if n < N / 4 {
                sleep(Duration::from_millis(1)); // slow at first: the writer fills the buffer
            }
        }
        (n, sum)
    });
    let data: Vec<u8> = (0..N).map(|i| (i * 7 % 251) as u8).collect();
    let expect = data.iter().fold(0u64, |a, &b| a.wrapping_mul(31).wrapping_add(b as u64));
    let c = TcpStream::connect(addr).unwrap();
    // One plain write of the whole buffer: the kernel takes only part of it.
    let first = (&c).write(&data).unwrap();
    assert!(first > 0 && first < N, "first write took {first} of {N}");
    (&c).write_all(&data[first..]).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    assert_eq!(reader.get().unwrap(), (N, expect));
}

#[test]
fn connection_refused() {
    let (l, addr) = listener();
    drop(l);
    let e = TcpStream::connect(addr).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{e}");
}

#[test]
fn connect_by_host_name_resolves_off_the_hub() {
    // The lookup runs on the blocking thread pool (tests/threadpool.rs shows other fibers run
    // meanwhile); here: a host name connects like a literal address.
    let (l, addr) = listener();
    let g = spawn(move || l.accept().map(|_| ()).is_ok());
    let c = TcpStream::connect(("localhost", addr.port()))
        .or_else(|_| TcpStream::connect(format!("localhost:{}", addr.port())));
    match c {
        Ok(c) => assert_eq!(c.peer_addr().unwrap().port(), addr.port()),
        // `localhost` may resolve to ::1 first in some sandboxes; the lookup itself worked.
        Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{e}"),
    }
    g.kill();
}

/// A connection whose peer has reset it: unread data at close makes the kernel send RST.
fn reset_pair() -> TcpStream {
    let (l, addr) = listener();
    let c = TcpStream::connect(addr).unwrap();
    let (s, _) = l.accept().unwrap();
    (&c).write_all(b"unread").unwrap();
    wait_until("data to arrive", || {
        let mut b = [0; 1];
        s.peek(&mut b).is_ok()
    });
    drop(s);
    c
}

#[test]
fn connection_reset_is_an_error() {
    let c = reset_pair();
    let e = (&c).read(&mut [0; 16]).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}");
}

#[test]
fn write_to_a_closed_peer_is_epipe_not_sigpipe() {
    // In a child whose SIGPIPE disposition is the default (kill), as in a C host program.
    in_child_process("write_to_a_closed_peer_is_epipe_not_sigpipe", || {
        // SAFETY: restoring a default signal disposition; no handler is installed.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
        let c = reset_pair();
        let mut kinds = Vec::new();
        for _ in 0..3 {
            match (&c).write(b"more") {
                Ok(n) => assert!(n > 0),
                Err(e) => kinds.push(e.kind()),
            }
        }
        assert!(!kinds.is_empty());
        for k in kinds {
            assert!(
                matches!(k, io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset),
                "{k:?}"
            );
        }
    });
}

#[test]
fn read_timeout_gives_wouldblock_as_std() {
    let (l, addr) = listener();
    let c = TcpStream::connect(addr).unwrap();
    let (_s, _) = l.accept().unwrap();
    assert_eq!(c.read_timeout().unwrap(), None);
    c.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    assert_eq!(c.read_timeout().unwrap(), Some(Duration::from_millis(20)));
    let e = (&c).read(&mut [0; 8]).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "{e}");
    assert_eq!(e.raw_os_error(), Some(libc::EAGAIN));
    let z = c.set_read_timeout(Some(Duration::ZERO)).unwrap_err();
    assert_eq!(z.kind(), io::ErrorKind::InvalidInput);

    // The same as std's own socket with SO_RCVTIMEO.
    let sl = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let sc = std::net::TcpStream::connect(sl.local_addr().unwrap()).unwrap();
    sc.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let se = (&sc).read(&mut [0; 8]).unwrap_err();
    assert_eq!(se.kind(), e.kind());
}

#[test]
fn write_timeout_gives_wouldblock() {
    let (l, addr) = listener();
    let c = TcpStream::connect(addr).unwrap();
    let (_s, _) = l.accept().unwrap(); // never reads
    c.set_write_timeout(Some(Duration::from_millis(50))).unwrap();
    let big = vec![0u8; 1 << 20];
    let e = loop {
        match (&c).write(&big) {
            Ok(n) => assert!(n > 0),
            Err(e) => break e,
        }
    };
    assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "{e}");
}

#[test]
fn connect_timeout_gives_timedout() {
    // A listener with a backlog of 0 whose queue is full: further SYNs are dropped, so a
    // connect hangs until its timeout.
    // SAFETY: plain socket calls on a descriptor owned by this test, with a valid sockaddr.
    let (fd, addr) = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0);
        let mut sa: libc::sockaddr_in = std::mem::zeroed();
        sa.sin_family = libc::AF_INET as u16;
        sa.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
        let len = std::mem::size_of::<libc::sockaddr_in>() as u32;
        assert_eq!(libc::bind(fd, (&raw const sa).cast(), len), 0);
        assert_eq!(libc::listen(fd, 0), 0);
        let mut len = len;
        assert_eq!(libc::getsockname(fd, (&raw mut sa).cast(), &mut len), 0);
        (fd, SocketAddr::from(([127, 0, 0, 1], u16::from_be(sa.sin_port))))
    };
    let mut held = Vec::new();
    let mut timed_out = false;
    for _ in 0..8 {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(100)) {
            Ok(s) => held.push(s),
            Err(e) => {
                assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
                timed_out = true;
                break;
            }
        }
    }
    assert!(timed_out, "the backlog never filled");
    let z = TcpStream::connect_timeout(&addr, Duration::ZERO).unwrap_err();
    assert_eq!(z.kind(), io::ErrorKind::InvalidInput);
    // SAFETY: closing the descriptor this test opened, once.
    unsafe { libc::close(fd) };
}

#[test]
fn try_clone_one_fiber_reads_while_another_writes() {
    let (addr, server) = echo_server();
    let c = TcpStream::connect(addr).unwrap();
    let w = c.try_clone().unwrap();
    assert_ne!(std::os::fd::AsRawFd::as_raw_fd(&c), std::os::fd::AsRawFd::as_raw_fd(&w), "own fd");
    const LINES: usize = 2000;
    let writer = spawn(move || {
        for i in 0..LINES {
            writeln!(&w, "line {i}").unwrap();
        }
        w.shutdown(Shutdown::Write).unwrap();
    });
    let reader = spawn(move || {
        let r = BufReader::new(&c);
        let lines: Vec<String> = r.lines().map(|l| l.unwrap()).collect();
        lines
    });
    let lines = reader.take_after_join();
    writer.join();
    assert_eq!(lines.len(), LINES);
    assert!(lines.iter().enumerate().all(|(i, l)| *l == format!("line {i}")));
    server.kill();
}

trait TakeAfterJoin<T> {
    fn take_after_join(&self) -> T;
}
impl<T: 'static> TakeAfterJoin<T> for Greenlet<T> {
    fn take_after_join(&self) -> T {
        self.join();
        self.take().unwrap().unwrap()
    }
}

#[test]
fn kill_and_timeout_of_a_blocked_reader_leave_the_socket_usable() {
    let (l, addr) = listener();
    let c = Rc::new(TcpStream::connect(addr).unwrap());
    let (mut s, _) = l.accept().unwrap();

    // with_timeout around a blocked read.
    let r = with_timeout(Duration::from_millis(20), || (&*c).read(&mut [0; 8]));
    assert!(r.is_err());

    // kill of a fiber blocked in read.
    let c2 = c.clone();
    let g = spawn(move || (&*c2).read(&mut [0; 8]).map(|_| ()).is_ok());
    sleep(Duration::from_millis(5));
    g.kill();
    assert!(g.ready() && !g.successful());

    // The socket still works: a new reader gets the data, nobody else takes it.
    let c3 = c.clone();
    let reader = spawn(move || {
        let mut b = [0; 5];
        (&*c3).read_exact(&mut b).unwrap();
        b
    });
    s.write_all(b"hello").unwrap();
    assert_eq!(&reader.get().unwrap(), b"hello");
    drop(reader);
    // And it closes: the peer sees EOF.
    drop(c);
    assert_eq!(s.read(&mut [0; 8]).unwrap(), 0);
}

#[test]
fn peer_disconnecting_mid_message() {
    let (l, addr) = listener();
    let g = spawn(move || {
        let (s, _) = l.accept().unwrap();
        let mut buf = [0; 10];
        let exact = (&s).read_exact(&mut buf);
        exact.map_err(|e| e.kind())
    });
    let mut c = TcpStream::connect(addr).unwrap();
    c.write_all(b"half").unwrap();
    drop(c);
    assert_eq!(g.get().unwrap(), Err(io::ErrorKind::UnexpectedEof));
}

#[test]
fn ten_thousand_connections_leave_no_fd_behind() {
    in_child_process("ten_thousand_connections_leave_no_fd_behind", || {
        let (l, addr) = listener();
        let l = Rc::new(l);
        // Warm up what is created lazily (the hub's epoll and eventfd, a stack arena).
        drop(TcpStream::connect(addr).unwrap());
        drop(l.accept().unwrap());
        let before = open_fds();
        let accepted = Rc::new(Cell::new(0));
        let (a, l2) = (accepted.clone(), l.clone());
        let server = spawn(move || {
            loop {
                let (s, _) = l2.accept().unwrap();
                a.set(a.get() + 1);
                drop(s);
            }
        });
        for i in 0..10_000 {
            let c = TcpStream::connect(addr).unwrap();
            if i % 2 == 0 {
                (&c).write_all(b"x").unwrap();
            }
            drop(c);
            greenfiber::yield_now(); // let the server fiber accept
        }
        wait_until("every connection accepted", || accepted.get() == 10_000);
        server.kill();
        assert_eq!(before, open_fds(), "open fds before and after 10,000 connections");
    });
}

/// A connected pair over 127.0.0.1.
fn pair() -> (TcpStream, TcpStream) {
    let (l, addr) = listener();
    let c = TcpStream::connect(addr).unwrap();
    let (s, _) = l.accept().unwrap();
    (c, s)
}

#[test]
fn write_vectored_with_more_slices_than_iov_max_writes_a_part_as_std_does() {
    let (c, s) = pair();
    let bytes = [7u8; 2000];
    let slices: Vec<_> = bytes.chunks(1).map(io::IoSlice::new).collect();
    let n = (&c).write_vectored(&slices).unwrap();
    assert!(0 < n && n <= 1024, "{n}");
    let mut got = vec![0u8; n];
    (&s).read_exact(&mut got).unwrap();
    assert!(got.iter().all(|&b| b == 7));
}

#[test]
fn from_std_keeps_the_std_sockets_timeouts() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let std_stream = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let _peer = l.accept().unwrap();
    std_stream.set_read_timeout(Some(Duration::from_millis(30))).unwrap();
    let kernel_value = std_stream.read_timeout().unwrap(); // rounded to the kernel's tick
    let s = TcpStream::from_std(std_stream).unwrap();
    assert_eq!(s.read_timeout().unwrap(), kernel_value);
    assert!(kernel_value.is_some());
    let r = with_timeout(Duration::from_secs(10), || (&s).read(&mut [0u8; 4]));
    assert_eq!(r.expect("the read timeout fired").unwrap_err().kind(), io::ErrorKind::WouldBlock);
    let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    u.set_write_timeout(Some(Duration::from_millis(40))).unwrap();
    let kernel_value = u.write_timeout().unwrap();
    let u = greenfiber::net::UdpSocket::from_std(u).unwrap();
    assert_eq!(u.write_timeout().unwrap(), kernel_value);
    assert!(kernel_value.is_some());
}

#[test]
fn set_nonblocking_fails_at_once_with_would_block_instead_of_parking() {
    let (l, addr) = listener();
    l.set_nonblocking(true).unwrap();
    assert_eq!(l.accept().unwrap_err().kind(), io::ErrorKind::WouldBlock);
    let c = TcpStream::connect(addr).unwrap();
    l.set_nonblocking(false).unwrap();
    let (s, _) = l.accept().unwrap();
    s.set_nonblocking(true).unwrap();
    let clone = s.try_clone().unwrap();
    assert_eq!((&clone).read(&mut [0u8; 4]).unwrap_err().kind(), io::ErrorKind::WouldBlock);
    assert_eq!(s.read_timeout().unwrap(), None, "the timeout setting is kept apart");
    (&c).write_all(b"hi").unwrap();
    s.set_nonblocking(false).unwrap();
    let mut buf = [0u8; 2];
    (&clone).read_exact(&mut buf).unwrap(); // parks again until the bytes arrive
    assert_eq!(&buf, b"hi");
}

#[test]
fn non_blocking_reads_see_data_that_came_after_a_short_read() {
    let (c, s) = pair();
    s.set_nonblocking(true).unwrap();
    (&c).write_all(b"a").unwrap();
    std::thread::sleep(Duration::from_millis(20)); // arrives without the hub polling
    let mut buf = [0u8; 4];
    assert_eq!((&s).read(&mut buf).unwrap(), 1); // short: the queue is empty now
    (&c).write_all(b"b").unwrap();
    std::thread::sleep(Duration::from_millis(20)); // still no poll in between
    assert_eq!((&s).read(&mut buf).unwrap(), 1, "the second byte was queued");
    assert_eq!(buf[0], b'b');
    assert_eq!((&s).read(&mut buf).unwrap_err().kind(), io::ErrorKind::WouldBlock);
}

#[test]
fn from_std_keeps_a_non_blocking_mode() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let std_stream = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let _peer = l.accept().unwrap();
    std_stream.set_nonblocking(true).unwrap();
    let s = TcpStream::from_std(std_stream).unwrap();
    let r = with_timeout(Duration::from_secs(10), || (&s).read(&mut [0u8; 4]));
    assert_eq!(r.expect("it did not park").unwrap_err().kind(), io::ErrorKind::WouldBlock);
    l.set_nonblocking(true).unwrap();
    let l = TcpListener::from_std(l).unwrap();
    assert_eq!(l.accept().unwrap_err().kind(), io::ErrorKind::WouldBlock);
}
