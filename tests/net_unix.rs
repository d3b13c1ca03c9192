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
