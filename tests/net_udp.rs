//! Layer 3, UDP: send_to/recv_from, connect/send/recv, timeouts, a fiber parked in recv.
mod common;

use std::io;
use std::time::Duration;

use greenfiber::net::UdpSocket;
use greenfiber::{spawn, with_timeout};

fn bound() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").unwrap()
}

#[test]
fn send_to_and_recv_from_between_fibers() {
    let a = bound();
    let b = bound();
    let (aa, ba) = (a.local_addr().unwrap(), b.local_addr().unwrap());
    // The receiver parks first; main sends after it is waiting.
    let rx = spawn(move || {
        let mut buf = [0; 64];
        let (n, from) = b.recv_from(&mut buf).unwrap();
        b.send_to(&buf[..n], from).unwrap(); // echo back
        (buf[..n].to_vec(), from)
    });
    greenfiber::yield_now();
    assert_eq!(a.send_to(b"datagram", ba).unwrap(), 8);
    let mut buf = [0; 64];
    let (n, from) = a.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from), (&b"datagram"[..], ba));
    assert_eq!(rx.get().unwrap(), (b"datagram".to_vec(), aa));
}

#[test]
fn connect_send_recv_and_peek() {
    let a = bound();
    let b = bound();
    a.connect(b.local_addr().unwrap()).unwrap();
    b.connect(a.local_addr().unwrap()).unwrap();
    assert_eq!(a.peer_addr().unwrap(), b.local_addr().unwrap());
    a.send(b"one").unwrap();
    let mut buf = [0; 8];
    assert_eq!(b.peek(&mut buf).unwrap(), 3);
    assert_eq!(b.recv(&mut buf).unwrap(), 3);
    assert_eq!(&buf[..3], b"one");
    let c = b.try_clone().unwrap();
    a.send(b"two").unwrap();
    assert_eq!(c.recv(&mut buf).unwrap(), 3);
}

#[test]
fn recv_timeout_gives_wouldblock_and_with_timeout_unwinds() {
    let a = bound();
    a.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
    assert_eq!(a.read_timeout().unwrap(), Some(Duration::from_millis(10)));
    let e = a.recv_from(&mut [0; 8]).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "{e}");
    a.set_read_timeout(None).unwrap();
    let r = with_timeout(Duration::from_millis(10), || a.recv_from(&mut [0; 8]));
    assert!(r.is_err());
    // Still usable.
    let b = bound();
    b.send_to(b"x", a.local_addr().unwrap()).unwrap();
    assert_eq!(a.recv_from(&mut [0; 8]).unwrap().0, 1);
}

#[test]
fn send_to_a_host_name() {
    let a = bound();
    let port = a.local_addr().unwrap().port();
    let b = bound();
    // "localhost" goes through the off-hub lookup; it may give ::1 first, which b (IPv4)
    // cannot reach, so fall back to the literal.
    if b.send_to(b"hi", ("localhost", port)).is_err() {
        b.send_to(b"hi", ("127.0.0.1", port)).unwrap();
    }
    a.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(a.recv_from(&mut [0; 8]).unwrap().0, 2);
}

#[test]
fn multicast_options_set_and_read_back() {
    let s = greenfiber::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    s.set_multicast_loop_v4(false).unwrap();
    assert!(!s.multicast_loop_v4().unwrap());
    s.set_multicast_ttl_v4(3).unwrap();
    assert_eq!(s.multicast_ttl_v4().unwrap(), 3);
    let group = std::net::Ipv4Addr::new(239, 255, 0, 77);
    if s.join_multicast_v4(&group, &std::net::Ipv4Addr::UNSPECIFIED).is_ok() {
        s.leave_multicast_v4(&group, &std::net::Ipv4Addr::UNSPECIFIED).unwrap();
    }
}
