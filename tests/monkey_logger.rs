//! A logger that makes hooked calls (a socket per record, as a syslog client that reconnects
//! does), called from inside the hub's reactor: mio and the reactor log while a registration
//! changes. Its own binary, because the logger is process-wide.
#![cfg(feature = "monkey")]

use std::io::{Read, Write};
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

static RECORDS: AtomicUsize = AtomicUsize::new(0);

struct SocketPerRecord;

impl log::Log for SocketPerRecord {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, r: &log::Record) {
        RECORDS.fetch_add(1, Ordering::Relaxed);
        // Created, used and closed through the hooks, at any point a log line is written.
        if let Ok(s) = UnixDatagram::unbound() {
            let _ = s.send_to(format!("{}\n", r.args()).as_bytes(), "/nonexistent/log.sock");
        }
    }
    fn flush(&self) {}
}

#[test]
fn a_logger_that_opens_and_closes_sockets_inside_reactor_changes_does_not_abort() {
    log::set_logger(&SocketPerRecord).unwrap();
    log::set_max_level(log::LevelFilter::Trace);
    greenfiber::monkey::patch_all();
    // Sockets registered, polled and deregistered by the net layer, with the logger called
    // by mio and the reactor in the middle of each change.
    for _ in 0..3 {
        let (a, mut b) = greenfiber::net::UnixStream::pair().unwrap();
        let reader = greenfiber::spawn(move || {
            let mut a = a;
            let mut buf = [0u8; 5];
            a.read_exact(&mut buf).unwrap(); // parks: the hub polls the reactor
            buf
        });
        std::thread::sleep(Duration::from_millis(5)); // patched: main sleeps on the hub
        b.write_all(b"hello").unwrap();
        assert_eq!(&reader.get().unwrap(), b"hello");
    }
    // And a std socket patched code waited on, then handed to the net layer.
    let (c, d) = std::os::unix::net::UnixStream::pair().unwrap();
    let g = greenfiber::spawn(move || {
        let mut buf = [0u8; 1];
        (&c).read_exact(&mut buf).unwrap(); // a hooked wait: c is a borrowed fd
        let mut c = greenfiber::net::UnixStream::from_std(c).unwrap();
        c.read_exact(&mut buf).unwrap();
        buf[0]
    });
    greenfiber::spawn(move || {
        for b in [1u8, 2] {
            std::thread::sleep(Duration::from_millis(5));
            (&d).write_all(&[b]).unwrap();
        }
    });
    assert_eq!(g.get().unwrap(), 2);
    assert!(RECORDS.load(Ordering::Relaxed) > 0, "nothing was logged: the test proves nothing");
}
