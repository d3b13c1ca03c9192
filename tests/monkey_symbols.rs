//! Which libc symbol each std API enters, so a std change that bypasses a hook is caught.
//! One test in its own binary: the counters are process-wide.
#![cfg(feature = "monkey")]

use std::collections::HashMap;
use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use greenfiber::{monkey, spawn};

fn counts() -> HashMap<&'static str, u64> {
    monkey::hook_calls().into_iter().collect()
}

/// Runs `f` and returns the hooks whose slow-path count changed.
fn entered(f: impl FnOnce()) -> Vec<&'static str> {
    let before = counts();
    f();
    let after = counts();
    let mut v: Vec<_> =
        after.into_iter().filter(|(k, n)| before[k] != *n).map(|(k, _)| k).collect();
    v.sort();
    v
}

#[test]
fn std_apis_enter_the_expected_symbols() {
    monkey::patch_all();
    let g = spawn(|| {
        let mut table: Vec<(&str, Vec<&str>)> = Vec::new();
        table.push(("thread::sleep", entered(|| std::thread::sleep(Duration::from_millis(1)))));
        let mut listener = None;
        table.push((
            "TcpListener::bind",
            entered(|| {
                listener = Some(TcpListener::bind("127.0.0.1:0").unwrap());
            }),
        ));
        let l = listener.unwrap();
        let addr = l.local_addr().unwrap();
        let mut client = None;
        table.push((
            "TcpStream::connect",
            entered(|| client = Some(TcpStream::connect(addr).unwrap())),
        ));
        let mut c = client.unwrap();
        let mut server = None;
        table.push(("TcpListener::accept", entered(|| server = Some(l.accept().unwrap().0))));
        let mut s = server.unwrap();
        table.push(("TcpStream::write", entered(|| assert_eq!(c.write(b"hello").unwrap(), 5))));
        let mut buf = [0u8; 16];
        table.push(("TcpStream::read", entered(|| assert_eq!(s.read(&mut buf).unwrap(), 5))));
        table.push((
            "TcpStream::write_vectored",
            entered(|| {
                assert_eq!(
                    c.write_vectored(&[IoSlice::new(b"ab"), IoSlice::new(b"cd")]).unwrap(),
                    4
                );
            }),
        ));
        table.push((
            "TcpStream::read_vectored",
            entered(|| {
                let (mut a, mut b) = ([0u8; 2], [0u8; 8]);
                let n = s.read_vectored(&mut [IoSliceMut::new(&mut a), IoSliceMut::new(&mut b)]);
                assert_eq!(n.unwrap(), 4);
            }),
        ));
        table.push((
            "TcpStream::peek",
            entered(|| {
                c.write_all(b"x").unwrap();
                s.peek(&mut buf).unwrap();
            }),
        ));
        table.push(("TcpStream::set_nonblocking", entered(|| s.set_nonblocking(false).unwrap())));
        table.push(("TcpStream::try_clone", entered(|| drop(s.try_clone().unwrap()))));
        table.push((
            "TcpStream::connect_timeout",
            entered(|| {
                drop(TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap());
            }),
        ));
        let u1 = UdpSocket::bind("127.0.0.1:0").unwrap();
        let u2 = UdpSocket::bind("127.0.0.1:0").unwrap();
        table.push((
            "UdpSocket::send_to",
            entered(|| {
                u1.send_to(b"d", u2.local_addr().unwrap()).unwrap();
            }),
        ));
        table.push((
            "UdpSocket::recv_from",
            entered(|| {
                u2.recv_from(&mut buf).unwrap();
            }),
        ));
        u1.connect(u2.local_addr().unwrap()).unwrap();
        table.push((
            "UdpSocket::send",
            entered(|| {
                u1.send(b"d").unwrap();
            }),
        ));
        table.push((
            "UdpSocket::recv",
            entered(|| {
                u2.recv(&mut buf).unwrap();
            }),
        ));
        let (mut pr, mut pw) = std::io::pipe().unwrap();
        table.push(("io::pipe write", entered(|| pw.write_all(b"p").unwrap())));
        table.push(("io::pipe read", entered(|| assert_eq!(pr.read(&mut buf).unwrap(), 1))));
        table.push(("drop(TcpStream)", entered(|| drop(c))));
        table
    });
    let table = g.get().unwrap();
    let got: Vec<(&str, Vec<&str>)> = table;
    let want: Vec<(&str, Vec<&str>)> = vec![
        ("thread::sleep", vec!["clock_nanosleep"]),
        ("TcpListener::bind", vec!["socket"]),
        ("TcpStream::connect", vec!["connect", "socket"]),
        ("TcpListener::accept", vec!["accept4"]),
        ("TcpStream::write", vec!["send"]),
        ("TcpStream::read", vec!["recv"]),
        ("TcpStream::write_vectored", vec!["writev"]),
        ("TcpStream::read_vectored", vec!["readv"]),
        ("TcpStream::peek", vec!["recv", "send"]),
        ("TcpStream::set_nonblocking", vec!["ioctl"]),
        ("TcpStream::try_clone", vec!["close", "fcntl"]),
        ("TcpStream::connect_timeout", vec!["close", "connect", "ioctl", "poll", "socket"]),
        ("UdpSocket::send_to", vec!["sendto"]),
        ("UdpSocket::recv_from", vec!["recvfrom"]),
        ("UdpSocket::send", vec!["send"]),
        ("UdpSocket::recv", vec!["recv"]),
        ("io::pipe write", vec!["write"]),
        ("io::pipe read", vec!["read"]),
        ("drop(TcpStream)", vec!["close"]),
    ];
    for (g, w) in got.iter().zip(&want) {
        // std checks an fd with fcntl(F_GETFD) before closing it when its debug assertions
        // (ub_checks) are on: tolerate that extra fcntl next to a close.
        let mut g = g.clone();
        if g.1.contains(&"close") && !w.1.contains(&"fcntl") {
            g.1.retain(|s| *s != "fcntl");
        }
        assert_eq!(&g, w, "std API {} entered {:?}, expected {:?}", g.0, g.1, w.1);
    }
    assert_eq!(got.len(), want.len());
}
