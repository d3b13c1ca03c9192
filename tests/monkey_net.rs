//! Unmodified `std::net` inside fibers after `patch_all()`: one thread serves many clients while
//! other fibers sleep; std's semantics (timeouts, try_clone, set_nonblocking, close) are kept.
#![cfg(feature = "monkey")]

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use greenfiber::{joinall, monkey, spawn};

/// Aborts the process if the returned guard is not dropped within `secs` (a hung hub would
/// otherwise hang the test run). Its thread has no hub, so its sleep really blocks.
struct Watchdog(Arc<AtomicBool>);

fn watchdog(name: &'static str, secs: u64) -> Watchdog {
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    std::thread::spawn(move || {
        let end = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < end {
            if d.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("watchdog: {name} still running after {secs} s: aborting");
        std::process::abort();
    });
    Watchdog(done)
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[test]
fn one_thread_serves_clients_while_fibers_sleep() {
    monkey::patch_all();
    let _w = watchdog("server+clients+sleepers", 20);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    const CLIENTS: usize = 20;
    let server = spawn(move || {
        let mut conns = Vec::new();
        for _ in 0..CLIENTS {
            let (mut s, _) = listener.accept().unwrap();
            conns.push(spawn(move || {
                let mut buf = [0u8; 64];
                let mut total = 0;
                loop {
                    let n = s.read(&mut buf).unwrap();
                    if n == 0 {
                        return total;
                    }
                    total += n;
                    s.write_all(&buf[..n]).unwrap();
                }
            }));
        }
        joinall(&conns, None);
        conns.iter().map(|c| c.get().unwrap()).sum::<usize>()
    });
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            spawn(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                for round in 0..5 {
                    let msg = format!("client {i} round {round}");
                    s.write_all(msg.as_bytes()).unwrap();
                    // A std sleep between request and reply: other fibers run meanwhile.
                    std::thread::sleep(Duration::from_millis(10));
                    let mut back = vec![0u8; msg.len()];
                    s.read_exact(&mut back).unwrap();
                    assert_eq!(back, msg.as_bytes());
                }
                s.shutdown(Shutdown::Write).unwrap();
                let mut rest = Vec::new();
                s.read_to_end(&mut rest).unwrap();
                assert!(rest.is_empty());
            })
        })
        .collect();
    let sleepers: Vec<_> = (0..10)
        .map(|_| {
            spawn(|| {
                let t = Instant::now();
                std::thread::sleep(Duration::from_millis(100));
                t.elapsed()
            })
        })
        .collect();
    let t = Instant::now();
    assert_eq!(joinall(&clients, None), CLIENTS);
    assert_eq!(joinall(&sleepers, None), 10);
    let total = server.get().unwrap();
    let expected: usize = (0..CLIENTS)
        .map(|i| (0..5).map(|r| format!("client {i} round {r}").len()).sum::<usize>())
        .sum();
    assert_eq!(total, expected);
    // 20 clients × 5 rounds × 10 ms sequentially would be 1 s, plus 10 × 100 ms sleeps.
    assert!(t.elapsed() < Duration::from_millis(1500), "{:?}", t.elapsed());
}

#[test]
fn udp_round_trip_in_fibers() {
    monkey::patch_all();
    let _w = watchdog("udp", 20);
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b_addr = b.local_addr().unwrap();
    let receiver = spawn(move || {
        let mut buf = [0u8; 16];
        let (n, from) = b.recv_from(&mut buf).unwrap(); // parks until the datagram arrives
        b.send_to(&buf[..n], from).unwrap();
        n
    });
    let sender = spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        a.send_to(b"ping", b_addr).unwrap();
        let mut buf = [0u8; 16];
        let n = a.recv(&mut buf).unwrap();
        buf[..n].to_vec()
    });
    assert_eq!(joinall(std::slice::from_ref(&receiver), None), 1);
    assert_eq!(receiver.get().unwrap(), 4);
    assert_eq!(sender.get().unwrap(), b"ping");
}

#[test]
fn read_timeout_gives_would_block_like_std_and_others_run() {
    monkey::patch_all();
    let _w = watchdog("read timeout", 20);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let g = spawn(move || {
        let mut c = TcpStream::connect(addr).unwrap();
        let _s = listener.accept().unwrap();
        c.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let t = Instant::now();
        let mut buf = [0u8; 4];
        let e = c.read(&mut buf).unwrap_err();
        (e.kind(), t.elapsed())
    });
    let other = spawn(|| {
        std::thread::sleep(Duration::from_millis(10));
        true
    });
    let (kind, took) = g.get().unwrap();
    // std on Linux reports an SO_RCVTIMEO expiry as WouldBlock (EAGAIN).
    assert!(matches!(kind, ErrorKind::WouldBlock | ErrorKind::TimedOut), "{kind:?}");
    assert!(took >= Duration::from_millis(90), "{took:?}");
    assert!(other.get().unwrap());
}

#[test]
fn try_clone_reads_and_writes_through_both_handles() {
    monkey::patch_all();
    let _w = watchdog("try_clone", 20);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let echo = spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).unwrap();
        s.write_all(&buf).unwrap();
    });
    let g = spawn(move || {
        let c = TcpStream::connect(addr).unwrap();
        let mut reader = c.try_clone().unwrap();
        let reading = spawn(move || {
            let mut buf = [0u8; 5];
            reader.read_exact(&mut buf).unwrap(); // parks on the clone
            buf
        });
        std::thread::sleep(Duration::from_millis(20));
        (&c).write_all(b"clone").unwrap();
        reading.get().unwrap()
    });
    assert_eq!(&g.get().unwrap(), b"clone");
    assert!(echo.get().is_ok());
}

#[test]
fn try_clone_before_any_fiber_use_blocks_through_both_copies() {
    monkey::patch_all();
    let _w = watchdog("try_clone first", 20);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (s, _) = listener.accept().unwrap();
    // Both copies exist, in blocking mode, before any fiber touched the socket.
    let clone = s.try_clone().unwrap();
    let read_one = |mut s: TcpStream| {
        spawn(move || {
            let mut b = [0u8; 1];
            s.read_exact(&mut b).map(|()| b[0]).map_err(|e| e.kind())
        })
    };
    // The first reader parks on the clone (the hooks make the shared file non-blocking); the
    // second must not take that for the user's own non-blocking mode.
    let first = read_one(clone);
    greenfiber::sleep(Duration::from_millis(20));
    let second = read_one(s);
    greenfiber::sleep(Duration::from_millis(20));
    peer.write_all(b"ab").unwrap();
    let mut got = [first.get().unwrap(), second.get().unwrap()];
    got.sort();
    assert_eq!(got, [Ok(b'a'), Ok(b'b')]);
}

#[test]
fn close_while_another_fiber_waits_gives_it_ebadf() {
    monkey::patch_all();
    let _w = watchdog("close while waiting", 20);
    let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    let fd = std::os::fd::IntoRawFd::into_raw_fd(a);
    let waiter = spawn(move || {
        let mut buf = [0u8; 4];
        // SAFETY: a valid buffer; `fd` is open until the closer closes it under us.
        let r = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), 4) };
        (r, std::io::Error::last_os_error().raw_os_error())
    });
    let closer = spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        // SAFETY: `fd` is owned by this test; the waiter expects it to be closed.
        unsafe { libc::close(fd) }
    });
    assert_eq!(closer.get().unwrap(), 0);
    assert_eq!(waiter.get().unwrap(), (-1, Some(libc::EBADF)));
}

#[test]
fn set_nonblocking_by_the_user_passes_through() {
    monkey::patch_all();
    let _w = watchdog("set_nonblocking", 20);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let g = spawn(move || {
        let mut c = TcpStream::connect(addr).unwrap();
        let (mut s, _) = listener.accept().unwrap();
        s.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 4];
        let first = s.read(&mut buf).unwrap_err().kind();
        listener.set_nonblocking(true).unwrap();
        let accept = listener.accept().unwrap_err().kind();
        s.set_nonblocking(false).unwrap();
        c.write_all(b"hi").unwrap();
        let n = s.read(&mut buf).unwrap();
        (first, accept, n)
    });
    assert_eq!(g.get().unwrap(), (ErrorKind::WouldBlock, ErrorKind::WouldBlock, 2));
}

#[test]
fn connect_timeout_waits_on_the_hub() {
    monkey::patch_all();
    let _w = watchdog("connect_timeout", 20);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let g = spawn(move || TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok());
    assert!(g.get().unwrap());
    drop(listener);
    let g = spawn(move || {
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap_err().kind()
    });
    assert_eq!(g.get().unwrap(), ErrorKind::ConnectionRefused);
}

#[test]
fn fd_made_non_blocking_by_a_fiber_still_blocks_outside_fibers() {
    monkey::patch_all();
    let _w = watchdog("outside fibers", 20);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // A fiber uses the stream (the hooks make it non-blocking underneath)...
    let g = spawn(move || {
        let mut c = TcpStream::connect(addr).unwrap();
        let (s, _) = listener.accept().unwrap();
        c.write_all(b"x").unwrap();
        let mut b = [0u8; 1];
        (&s).read_exact(&mut b).unwrap();
        (c, s)
    });
    joinall(std::slice::from_ref(&g), None);
    let (mut c, s) = g.take().unwrap().unwrap();
    // ...then a plain thread reads from it: it must block until data comes, as std promises.
    let t = std::thread::spawn(move || {
        let mut s = s;
        let mut b = [0u8; 3];
        s.read_exact(&mut b).unwrap();
        // F_GETFL does not show the O_NONBLOCK the hooks set.
        // SAFETY: F_GETFL only inspects the fd.
        let fl = unsafe { libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&s), libc::F_GETFL) };
        (b, fl & libc::O_NONBLOCK)
    });
    std::thread::sleep(Duration::from_millis(50)); // main, nothing to do: a real sleep
    c.write_all(b"abc").unwrap();
    assert_eq!(t.join().unwrap(), (*b"abc", 0));
}

/// A Unix listener whose backlog holds at most one or two pending connections.
fn unix_listener_with_tiny_backlog(name: &str) -> (std::os::unix::net::UnixListener, String) {
    use std::os::fd::AsRawFd;
    let path = format!("{}/gf-{name}-{}.sock", std::env::temp_dir().display(), std::process::id());
    let _ = std::fs::remove_file(&path);
    let l = std::os::unix::net::UnixListener::bind(&path).unwrap();
    // SAFETY: a valid listening socket; listen again only shrinks its backlog.
    assert_eq!(unsafe { libc::listen(l.as_raw_fd(), 1) }, 0);
    (l, path)
}

#[test]
fn unix_connect_to_a_full_backlog_waits_for_accept_in_fibers() {
    use std::os::unix::net::UnixStream;
    monkey::patch_all();
    let _w = watchdog("unix backlog", 20);
    let (l, path) = unix_listener_with_tiny_backlog("backlog");
    let n = 8;
    let clients: Vec<_> = (0..n)
        .map(|_| {
            let p = path.clone();
            spawn(move || UnixStream::connect(&p).map(|_| ()).map_err(|e| e.kind()))
        })
        .collect();
    let acceptor = spawn(move || {
        greenfiber::sleep(Duration::from_millis(50)); // every client has tried by now
        let accepted: Result<Vec<_>, _> = (0..n).map(|_| l.accept().map(|(s, _)| s)).collect();
        accepted.map(|v| v.len()).map_err(|e| e.kind())
    });
    let results: Vec<_> = clients.iter().map(|c| c.get().unwrap()).collect();
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    assert_eq!(acceptor.get().unwrap().unwrap(), n);
    // With SO_SNDTIMEO and nobody accepting, the connect gives up as Linux's does: EAGAIN.
    let (_l, path2) = unix_listener_with_tiny_backlog("backlog-timeout");
    let filled = (0..4).filter(|_| raw_unix_connect(&path2, libc::SOCK_NONBLOCK, 0).0 == 0).count();
    let g = spawn(move || {
        let t = Instant::now();
        let r = raw_unix_connect(&path2, 0, 50_000);
        (r, t.elapsed())
    });
    let ((r, e), took) = g.get().unwrap();
    assert_eq!((r, e), (-1, Some(libc::EAGAIN)), "backlog filled by {filled} connects");
    assert!(took >= Duration::from_millis(45), "{took:?}");
    let _ = std::fs::remove_file(&path);
}

/// `connect(2)` of a new Unix socket of type flags `flags` (SO_SNDTIMEO `timeout_us` if not
/// 0) to `path`: the result and errno. The socket stays open (leaked) to hold its place.
fn raw_unix_connect(path: &str, flags: libc::c_int, timeout_us: i64) -> (i32, Option<i32>) {
    // SAFETY: plain socket calls on a new fd with valid pointers and sizes.
    unsafe {
        let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC | flags, 0);
        if timeout_us > 0 {
            let tv = libc::timeval { tv_sec: 0, tv_usec: timeout_us };
            let tvl = size_of::<libc::timeval>() as libc::socklen_t;
            libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_SNDTIMEO, (&raw const tv).cast(), tvl);
        }
        let mut sa: libc::sockaddr_un = std::mem::zeroed();
        sa.sun_family = libc::AF_UNIX as libc::sa_family_t;
        for (d, s) in sa.sun_path.iter_mut().zip(path.as_bytes()) {
            *d = *s as libc::c_char;
        }
        let salen = size_of::<libc::sockaddr_un>() as libc::socklen_t;
        let r = libc::connect(fd, (&raw const sa).cast(), salen);
        (r, std::io::Error::last_os_error().raw_os_error().filter(|_| r != 0))
    }
}

#[test]
fn unix_connect_to_a_full_backlog_outside_fibers_waits_on_a_taken_over_socket() {
    monkey::patch_all();
    let _w = watchdog("unix backlog outside", 20);
    let (l, path) = unix_listener_with_tiny_backlog("backlog-outside");
    let filled = (0..4).filter(|_| raw_unix_connect(&path, libc::SOCK_NONBLOCK, 0).0 == 0).count();
    let acceptor = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        (0..filled + 1).map(|_| l.accept().unwrap().0).collect::<Vec<_>>()
    });
    // SAFETY: a new socket this test owns.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    // A fiber's first use makes the hooks take the socket over (non-blocking underneath)...
    let used = spawn(move || {
        // SAFETY: a valid buffer; an unconnected socket fails at once (ENOTCONN).
        unsafe { libc::recv(fd, [0u8; 1].as_mut_ptr().cast(), 1, 0) }
    });
    assert_eq!(used.get().unwrap(), -1);
    // ...so a thread without a hub must find a blocking connect emulated.
    let path2 = path.clone();
    let (r, peer) = std::thread::spawn(move || unsafe {
        // SAFETY: plain socket calls on fds this test owns, with valid pointers and sizes.
        let copy = libc::dup(fd);
        let mut sa: libc::sockaddr_un = std::mem::zeroed();
        sa.sun_family = libc::AF_UNIX as libc::sa_family_t;
        for (d, s) in sa.sun_path.iter_mut().zip(path2.as_bytes()) {
            *d = *s as libc::c_char;
        }
        let salen = size_of::<libc::sockaddr_un>() as libc::socklen_t;
        let r = libc::connect(fd, (&raw const sa).cast(), salen);
        let mut peer: libc::sockaddr_un = std::mem::zeroed();
        let mut plen = salen;
        let connected = libc::getpeername(copy, (&raw mut peer).cast(), &mut plen) == 0;
        libc::close(copy);
        libc::close(fd);
        (r, connected)
    })
    .join()
    .unwrap();
    assert_eq!((r, peer), (0, true), "backlog filled by {filled} connects");
    assert_eq!(acceptor.join().unwrap().len(), filled + 1);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn a_pipe_duplicated_for_a_child_process_stays_blocking_for_it() {
    // std's own `io::pipe` example: `cmd.stdout(w.try_clone()?)`. The child writes more than
    // a pipe holds while nobody reads yet; a non-blocking stdout would make it fail (EAGAIN).
    use std::process::Command;
    monkey::patch_all();
    let _w = watchdog("child pipe", 30);
    let (mut reader, writer) = std::io::pipe().unwrap();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("head -c 1048576 /dev/zero")
        .stdout(writer.try_clone().unwrap())
        .stderr(writer)
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(100)); // the child fills the pipe meanwhile
    let mut out = Vec::new();
    reader.read_to_end(&mut out).unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(out.len(), 1 << 20);
}

#[test]
fn a_hooked_wait_in_a_thread_local_destructor_after_the_hooks_state_is_gone_fails_cleanly() {
    // A thread-local created after the hub but before the hooks' first wait is destroyed after
    // the hooks' registry: a hooked read there must fail, not abort the process.
    use std::os::unix::net::UnixStream;
    struct Flush(Option<UnixStream>);
    impl Drop for Flush {
        fn drop(&mut self) {
            let s = self.0.take().unwrap();
            let g = spawn(move || (&s).read(&mut [0u8; 4]).map_err(|e| e.kind()));
            let _ = g.get(); // either outcome but an abort
        }
    }
    thread_local! {
        static FLUSH: std::cell::RefCell<Option<Flush>> = const { std::cell::RefCell::new(None) };
    }
    monkey::patch_all();
    let _w = watchdog("hooked wait at teardown", 20);
    std::thread::spawn(|| {
        greenfiber::yield_now(); // the thread's state, stack pool and hub
        let (a, b) = UnixStream::pair().unwrap();
        FLUSH.with(|f| *f.borrow_mut() = Some(Flush(Some(a))));
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            (&b).write_all(b"bye!").unwrap();
        });
        // A hooked wait now creates the hooks' registry, destroyed before FLUSH.
        let (c, d) = UnixStream::pair().unwrap();
        let g = spawn(move || (&c).read(&mut [0u8; 1]).ok());
        greenfiber::sleep(Duration::from_millis(1));
        drop(d);
        g.join();
    })
    .join()
    .unwrap();
}

#[test]
fn two_threads_taking_a_socket_over_at_once_both_keep_it_blocking_for_the_user() {
    // Each round two threads' fibers first use one blocking socket at the same moment: the
    // loser of the race found O_NONBLOCK set by the winner and took it for the user's choice.
    use std::os::fd::AsRawFd;
    use std::sync::{Barrier, Mutex};
    monkey::patch_all();
    let _w = watchdog("take-over race", 60);
    const ROUNDS: usize = 5000;
    let slot: Arc<Mutex<Option<Arc<UdpSocket>>>> = Arc::default();
    let (start, end) = (Arc::new(Barrier::new(3)), Arc::new(Barrier::new(3)));
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let (slot, start, end) = (slot.clone(), start.clone(), end.clone());
            std::thread::spawn(move || {
                for _ in 0..ROUNDS {
                    start.wait();
                    let s = slot.lock().unwrap().clone().unwrap();
                    spawn(move || s.send_to(b"x", s.local_addr().unwrap()).unwrap()).join();
                    end.wait();
                }
            })
        })
        .collect();
    for round in 0..ROUNDS {
        let s = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
        *slot.lock().unwrap() = Some(s.clone());
        start.wait();
        end.wait();
        // SAFETY: F_GETFL on a socket this test owns (hooked: it hides the hooks' own flag).
        let fl = unsafe { libc::fcntl(s.as_raw_fd(), libc::F_GETFL) };
        assert_eq!(fl & libc::O_NONBLOCK, 0, "round {round}: recorded as the user's non-blocking");
    }
    threads.into_iter().for_each(|t| t.join().unwrap());
}

#[test]
fn a_std_stream_patched_code_waited_on_can_be_handed_to_greenfiber_net() {
    monkey::patch_all();
    let _w = watchdog("from_std after a hooked wait", 20);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let peer = spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        for msg in [b"one", b"two"] {
            std::thread::sleep(Duration::from_millis(20)); // the reader waits on the hub
            s.write_all(msg).unwrap();
        }
        let mut back = [0u8; 4];
        s.read_exact(&mut back).unwrap();
        back
    });
    let reader = spawn(move || {
        let mut c = TcpStream::connect(addr).unwrap();
        let mut buf = [0u8; 3];
        c.read_exact(&mut buf).unwrap(); // a hooked wait: the fd is registered with the hub
        assert_eq!(&buf, b"one");
        let mut c = greenfiber::net::TcpStream::from_std(c).unwrap();
        c.read_exact(&mut buf).unwrap(); // parks on the net layer's own registration
        assert_eq!(&buf, b"two");
        c.write_all(b"done").unwrap();
    });
    reader.get().unwrap();
    assert_eq!(&peer.get().unwrap(), b"done");
}

fn errno() -> i32 {
    // SAFETY: this thread's errno slot.
    unsafe { *libc::__errno_location() }
}

fn set_errno(e: i32) {
    // SAFETY: this thread's errno slot.
    unsafe { *libc::__errno_location() = e };
}

/// A blocking TCP socket that a fiber used first, so the hooks made it non-blocking underneath
/// (a `recv` on the unconnected socket fails at once with ENOTCONN).
fn taken_over_socket() -> i32 {
    // SAFETY: plain socket creation.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd > 2);
    let g = spawn(move || {
        // SAFETY: a valid 1-byte buffer.
        let r = unsafe { libc::recv(fd, [0u8; 1].as_mut_ptr().cast(), 1, 0) };
        (r, errno())
    });
    assert_eq!(g.get().unwrap(), (-1, libc::ENOTCONN));
    fd
}

#[test]
fn a_call_that_waited_outside_fibers_and_succeeded_leaves_errno_as_it_was() {
    monkey::patch_all();
    let _w = watchdog("errno outside fibers", 20);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let std::net::SocketAddr::V4(a) = listener.local_addr().unwrap() else { unreachable!() };
    // SAFETY: all-zero is a valid sockaddr_in, filled in below.
    let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sin.sin_family = libc::AF_INET as libc::sa_family_t;
    sin.sin_port = a.port().to_be();
    sin.sin_addr.s_addr = u32::from(*a.ip()).to_be();
    // A blocking connect on a taken-over socket, from a plain thread: the hooks wait for it.
    let fd = taken_over_socket();
    let connected = std::thread::spawn(move || {
        set_errno(1234);
        let len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: a valid sockaddr_in of `len` bytes.
        let r = unsafe { libc::connect(fd, (&raw const sin).cast(), len) };
        (r, errno())
    });
    assert_eq!(connected.join().unwrap(), (0, 1234), "(result, errno)");
    let (mut s, _) = listener.accept().unwrap();
    // A read from a plain thread that has to wait for the data.
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4];
        set_errno(1234);
        // SAFETY: a valid 4-byte buffer.
        let r = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), 4) };
        (r, errno())
    });
    std::thread::sleep(Duration::from_millis(50));
    s.write_all(b"ping").unwrap();
    assert_eq!(reader.join().unwrap(), (4, 1234), "(result, errno)");
    // SAFETY: our own fd.
    unsafe { libc::close(fd) };
}

#[test]
fn the_other_copy_of_a_socket_a_fiber_took_over_blocks_outside_fibers() {
    monkey::patch_all();
    let _w = watchdog("dup outside fibers", 20);
    let mut sv = [0i32; 2];
    let kind = libc::SOCK_STREAM | libc::SOCK_CLOEXEC;
    // SAFETY: a valid array of two fds.
    assert_eq!(unsafe { libc::socketpair(libc::AF_UNIX, kind, 0, sv.as_mut_ptr()) }, 0);
    let (a, b) = (sv[0], sv[1]);
    // SAFETY: `a` is open.
    let c = unsafe { libc::dup(a) };
    // A fiber reads through the copy: the shared open file becomes non-blocking underneath.
    let g = spawn(move || {
        // SAFETY: valid one-byte buffers on open fds.
        unsafe {
            libc::write(b, b"x".as_ptr().cast(), 1);
            libc::read(c, [0u8; 1].as_mut_ptr().cast(), 1)
        }
    });
    assert_eq!(g.get().unwrap(), 1);
    // A plain thread reads through the original: it must block until data comes.
    let t = std::thread::spawn(move || {
        let mut buf = [0u8; 4];
        // SAFETY: a valid 4-byte buffer.
        let n = unsafe { libc::read(a, buf.as_mut_ptr().cast(), 4) };
        (n, if n < 0 { errno() } else { 0 })
    });
    std::thread::sleep(Duration::from_millis(50));
    // SAFETY: a valid 4-byte buffer.
    assert_eq!(unsafe { libc::write(b, b"ping".as_ptr().cast(), 4) }, 4);
    assert_eq!(t.join().unwrap(), (4, 0), "(result, errno)");
    // SAFETY: our own fds.
    unsafe {
        libc::close(a);
        libc::close(b);
        libc::close(c);
    }
}
