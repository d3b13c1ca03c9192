//! Layer 3, Unix-domain streams: listener/connect, pair, EOF, timeouts, kill while reading.
mod common;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::Shutdown;
use std::time::Duration;

use greenfiber::net::{UnixListener, UnixStream};
use greenfiber::{sleep, spawn};

fn sock_path(name: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("greenfiber-{}-{name}.sock", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

#[test]
fn listener_accept_connect_echo() {
    let path = sock_path("echo");
    let l = UnixListener::bind(&path).unwrap();
    let server = spawn(move || {
        for s in l.incoming().take(2) {
            let s = s.unwrap();
            spawn(move || {
                let _ = io::copy(&mut &s, &mut &s);
            });
        }
    });
    for _ in 0..2 {
        let c = UnixStream::connect(&path).unwrap();
        (&c).write_all(b"hello unix\n").unwrap();
        let mut line = String::new();
        BufReader::new(&c).read_line(&mut line).unwrap();
        assert_eq!(line, "hello unix\n");
    }
    server.join();
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn pair_eof_and_try_clone() {
    let (a, b) = UnixStream::pair().unwrap();
    let w = a.try_clone().unwrap();
    let reader = spawn(move || {
        let mut v = Vec::new();
        (&b).read_to_end(&mut v).unwrap();
        v
    });
    (&w).write_all(b"abc").unwrap();
    w.shutdown(Shutdown::Write).unwrap();
    assert_eq!(reader.get().unwrap(), b"abc");
    drop(a);
}

/// Reads after a read that emptied the socket park without trying, and still see later data
/// and EOF (see the TCP test of the same name).
#[test]
fn reads_after_a_read_that_emptied_the_socket() {
    let (a, b) = UnixStream::pair().unwrap();
    let writer = spawn(move || {
        let mut a = &a;
        let mut go = [0; 1];
        a.write_all(b"one").unwrap();
        a.read_exact(&mut go).unwrap();
        a.write_all(b"two").unwrap();
        a.read_exact(&mut go).unwrap();
        a.write_all(b"three").unwrap();
        // dropping `a`: "three" and EOF arrive together
    });
    let r = greenfiber::with_timeout(Duration::from_secs(10), || {
        let mut b = &b;
        let mut buf = [0; 64];
        assert_eq!(b.read(&mut buf).unwrap(), 3);
        b.write_all(b"1").unwrap();
        assert_eq!(b.read(&mut buf).unwrap(), 3);
        b.write_all(b"2").unwrap();
        let mut rest = Vec::new();
        b.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b"three");
    });
    r.unwrap();
    writer.join();
}

#[test]
fn read_timeout_and_kill_while_reading() {
    let (a, b) = UnixStream::pair().unwrap();
    a.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
    let e = (&a).read(&mut [0; 4]).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    a.set_read_timeout(None).unwrap();
    let a = std::rc::Rc::new(a);
    let a2 = a.clone();
    let g = spawn(move || (&*a2).read(&mut [0; 4]).map(|_| ()).is_ok());
    sleep(Duration::from_millis(5));
    g.kill();
    (&b).write_all(b"ok").unwrap();
    let mut buf = [0; 2];
    (&*a).read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ok");
}

#[test]
fn write_after_peer_closed_is_an_error() {
    let (a, b) = UnixStream::pair().unwrap();
    drop(b);
    let e = (&a).write(b"x").unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
}

/// Sends `data` with `fd` attached (SCM_RIGHTS) on the Unix socket `sock`.
fn send_with_fd(sock: &UnixStream, data: &[u8], fd: std::os::fd::RawFd) {
    use std::os::fd::AsRawFd;
    let space = {
        // SAFETY: CMSG_SPACE only computes a size from its argument.
        unsafe { libc::CMSG_SPACE(std::mem::size_of::<libc::c_int>() as u32) }
    } as usize;
    let mut cbuf = vec![0u8; space];
    let mut iov = libc::iovec { iov_base: data.as_ptr() as *mut libc::c_void, iov_len: data.len() };
    // SAFETY: msghdr is a plain C struct for which all-zero is a valid (empty) value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: `msg` describes `cbuf`, which has room for one header and one fd (CMSG_SPACE
    // above), so the first header exists and its data fits; `iov` and `cbuf` outlive the call.
    let sent = unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::c_int>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>(), fd);
        libc::sendmsg(sock.as_raw_fd(), &msg, 0)
    };
    assert_eq!(sent, data.len() as isize);
}

#[test]
fn a_read_cut_short_by_a_passed_fd_does_not_strand_the_data_behind_it() {
    // The kernel ends a Unix read after a message that carried file descriptors, with more
    // data queued: that short read must not be taken for an empty socket.
    use std::os::fd::AsRawFd;
    let (r, w) = UnixStream::pair().unwrap();
    let reader = spawn(move || {
        let mut got = Vec::new();
        let mut b = [0u8; 100];
        while got.len() < 8 {
            let n = (&r).read(&mut b).unwrap();
            got.extend_from_slice(&b[..n]);
        }
        got
    });
    greenfiber::yield_now(); // the reader parks: nothing is queued yet
    let devnull = std::fs::File::open("/dev/null").unwrap();
    send_with_fd(&w, b"AAAA", devnull.as_raw_fd());
    (&w).write_all(b"BBBB").unwrap();
    let got = greenfiber::with_timeout(Duration::from_secs(5), || reader.get().unwrap());
    assert_eq!(got.expect("the reader stayed parked with data queued"), b"AAAABBBB");
}

#[test]
fn from_std_takes_over_std_unix_sockets_with_their_timeouts_and_mode() {
    let path = sock_path("from-std");
    let l = UnixListener::from_std(std::os::unix::net::UnixListener::bind(&path).unwrap()).unwrap();
    let server = spawn(move || {
        let (mut s, _) = l.accept().unwrap(); // parks until the client connects
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).unwrap();
        s.write_all(&buf).unwrap();
    });
    let c = std::os::unix::net::UnixStream::connect(&path).unwrap();
    c.set_read_timeout(Some(Duration::from_millis(30))).unwrap();
    let mut c = UnixStream::from_std(c).unwrap();
    // (The kernel keeps SO_RCVTIMEO in ticks, so std reads back 30 ms rounded up.)
    assert!(c.read_timeout().unwrap() >= Some(Duration::from_millis(30)));
    // The timeout carries over: a read with nothing to come gives WouldBlock after it.
    assert_eq!(c.read(&mut [0u8; 4]).unwrap_err().kind(), io::ErrorKind::WouldBlock);
    c.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    c.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");
    server.join();
    // A non-blocking mode carries over too.
    let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    let a = UnixStream::from_std(a).unwrap();
    assert_eq!((&a).read(&mut [0u8; 4]).unwrap_err().kind(), io::ErrorKind::WouldBlock);
    let l = std::os::unix::net::UnixListener::bind(sock_path("from-std-nb")).unwrap();
    l.set_nonblocking(true).unwrap();
    let l = UnixListener::from_std(l).unwrap();
    assert_eq!(l.accept().unwrap_err().kind(), io::ErrorKind::WouldBlock);
}
