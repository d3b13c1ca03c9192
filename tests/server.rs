//! StreamServer: a fiber per connection, panics contained, stop with grace, max_connections,
//! EMFILE backoff.
mod common;

use std::cell::{Cell, RefCell};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{in_child_process, open_fds, wait_until};
use greenfiber::net::TcpStream;
use greenfiber::server::StreamServer;
use greenfiber::{joinall, sleep, spawn};

/// Echoes lines back, prefixed with "echo: ".
fn line_echo(stream: TcpStream, _peer: SocketAddr) {
    let mut w = &stream;
    for line in BufReader::new(&stream).lines() {
        let Ok(line) = line else { return };
        if w.write_all(format!("echo: {line}\n").as_bytes()).is_err() {
            return;
        }
    }
}

fn ask(c: &TcpStream, line: &str) -> io::Result<String> {
    (&*c).write_all(format!("{line}\n").as_bytes())?;
    let mut r = String::new();
    // One byte at a time so nothing beyond the line is consumed.
    let mut b = [0u8; 1];
    loop {
        if (&*c).read(&mut b)? == 0 {
            return Ok(r);
        }
        r.push(b[0] as char);
        if b[0] == b'\n' {
            return Ok(r);
        }
    }
}

fn server(handler: impl Fn(TcpStream, SocketAddr) + 'static) -> StreamServer {
    let s = StreamServer::new("127.0.0.1:0", handler).unwrap();
    s.start().unwrap();
    s
}

#[test]
fn serves_many_clients_at_once_each_in_its_own_fiber() {
    let s = server(line_echo);
    let addr = s.local_addr();
    let clients: Vec<_> = (0..20)
        .map(|i| {
            spawn(move || {
                let c = TcpStream::connect(addr).unwrap();
                (0..5).map(|k| ask(&c, &format!("{i}.{k}")).unwrap()).collect::<Vec<_>>()
            })
        })
        .collect();
    assert_eq!(joinall(&clients, Some(Duration::from_secs(10))), 20);
    for (i, c) in clients.iter().enumerate() {
        let got = c.take().unwrap().unwrap();
        assert_eq!(got, (0..5).map(|k| format!("echo: {i}.{k}\n")).collect::<Vec<_>>());
    }
    s.stop();
}

#[test]
fn a_slow_client_does_not_block_the_others() {
    let s = server(line_echo);
    let slow = TcpStream::connect(s.local_addr()).unwrap();
    (&slow).write_all(b"half a li").unwrap(); // and then nothing
    let fast = TcpStream::connect(s.local_addr()).unwrap();
    assert_eq!(ask(&fast, "quick").unwrap(), "echo: quick\n");
    (&slow).write_all(b"ne\n").unwrap();
    let mut r = String::new();
    BufReader::new(&slow).read_line(&mut r).unwrap();
    assert_eq!(r, "echo: half a line\n");
    s.stop();
}

#[test]
fn a_panicking_handler_closes_only_its_connection() {
    let s = server(|stream, peer| {
        let mut line = String::new();
        BufReader::new(&stream).read_line(&mut line).unwrap();
        if line.starts_with("boom") {
            panic!("handler for {peer} asked to panic");
        }
        (&stream).write_all(b"fine\n").unwrap();
    });
    let a = TcpStream::connect(s.local_addr()).unwrap();
    let b = TcpStream::connect(s.local_addr()).unwrap();
    assert_eq!(ask(&a, "boom").unwrap(), ""); // EOF: its connection was closed
    assert_eq!(ask(&b, "hello").unwrap(), "fine\n");
    let c = TcpStream::connect(s.local_addr()).unwrap();
    assert_eq!(ask(&c, "again").unwrap(), "fine\n");
    s.stop();
}

#[test]
fn stop_waits_for_the_grace_period_then_kills_the_rest() {
    let finished = Rc::new(Cell::new(0));
    let killed = Rc::new(Cell::new(0));
    struct OnUnwind(Rc<Cell<u32>>);
    impl Drop for OnUnwind {
        fn drop(&mut self) {
            if std::thread::panicking() {
                self.0.set(self.0.get() + 1);
            }
        }
    }
    let (f, k) = (finished.clone(), killed.clone());
    let s = StreamServer::new("127.0.0.1:0", move |stream, _| {
        let _g = OnUnwind(k.clone());
        let mut line = String::new();
        BufReader::new(&stream).read_line(&mut line).unwrap();
        if line.trim() == "quick" {
            sleep(Duration::from_millis(30)); // finishes inside the grace period
        } else {
            sleep(Duration::from_secs(3600)); // must be killed
        }
        f.set(f.get() + 1);
    })
    .unwrap()
    .stop_timeout(Duration::from_millis(200));
    s.start().unwrap();
    let addr = s.local_addr();
    let q = TcpStream::connect(addr).unwrap();
    let z = TcpStream::connect(addr).unwrap();
    (&q).write_all(b"quick\n").unwrap();
    (&z).write_all(b"sleepy\n").unwrap();
    wait_until("both handlers running", || s.connections() == 2);
    let t = Instant::now();
    s.stop();
    let took = t.elapsed();
    assert_eq!((finished.get(), killed.get()), (1, 1));
    assert_eq!(s.connections(), 0);
    assert!(took >= Duration::from_millis(150), "stop returned after {took:?}");
    assert!(s.is_stopped());
    assert_eq!(
        TcpStream::connect(addr).unwrap_err().kind(),
        io::ErrorKind::ConnectionRefused,
        "the listening socket is closed"
    );
    assert!(s.start().is_err());
    // The killed handler's connection was closed.
    assert_eq!((&z).read(&mut [0; 4]).unwrap(), 0);
}

#[test]
fn serve_forever_returns_when_a_handler_calls_stop() {
    let me: Rc<RefCell<Option<Rc<StreamServer>>>> = Rc::default();
    let m = me.clone();
    let s = Rc::new(
        StreamServer::new("127.0.0.1:0", move |stream, _| {
            let mut line = String::new();
            BufReader::new(&stream).read_line(&mut line).unwrap();
            (&stream).write_all(b"bye\n").unwrap();
            let server = m.borrow().clone().unwrap();
            server.stop(); // neither waits for nor kills this handler
        })
        .unwrap(),
    );
    *me.borrow_mut() = Some(s.clone());
    let addr = s.local_addr();
    let client = spawn(move || {
        let c = TcpStream::connect(addr).unwrap();
        ask(&c, "stop please").unwrap()
    });
    s.serve_forever().unwrap();
    assert_eq!(client.take_or_get(), "bye\n");
    me.borrow_mut().take();
}

trait TakeOrGet<T> {
    fn take_or_get(&self) -> T;
}
impl<T: 'static> TakeOrGet<T> for greenfiber::Greenlet<T> {
    fn take_or_get(&self) -> T {
        self.join();
        self.take().unwrap().unwrap()
    }
}

#[test]
fn max_connections_pauses_accept() {
    let started = Rc::new(Cell::new(0));
    let st = started.clone();
    let s = StreamServer::new("127.0.0.1:0", move |stream, peer| {
        st.set(st.get() + 1);
        line_echo(stream, peer)
    })
    .unwrap()
    .max_connections(2);
    s.start().unwrap();
    let cs: Vec<_> = (0..3).map(|_| TcpStream::connect(s.local_addr()).unwrap()).collect();
    wait_until("two handlers", || started.get() == 2);
    sleep(Duration::from_millis(30));
    assert_eq!((started.get(), s.connections()), (2, 2), "the third waits in the backlog");
    let mut cs = cs.into_iter();
    let first = cs.next().unwrap();
    assert_eq!(ask(&first, "one").unwrap(), "echo: one\n");
    drop(first);
    wait_until("the third handler", || started.get() == 3);
    let rest: Vec<_> = cs.collect();
    for c in &rest {
        assert_eq!(ask(c, "x").unwrap(), "echo: x\n");
    }
    s.stop();
}

/// Counts `log` records whose text contains "out of resources".
struct Counter;
static OUT_OF_RESOURCES: AtomicUsize = AtomicUsize::new(0);
impl log::Log for Counter {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::Level::Warn
    }
    fn log(&self, r: &log::Record) {
        if r.args().to_string().contains("out of resources") {
            OUT_OF_RESOURCES.fetch_add(1, Ordering::SeqCst);
        }
    }
    fn flush(&self) {}
}

#[test]
fn emfile_makes_accept_back_off_without_spinning() {
    in_child_process("emfile_makes_accept_back_off_without_spinning", || {
        log::set_logger(&Counter).unwrap();
        log::set_max_level(log::LevelFilter::Warn);
        let s = StreamServer::new("127.0.0.1:0", line_echo).unwrap();
        // Three clients queue in the backlog before the server accepts anything.
        let clients: Vec<TcpStream> = (0..3)
            .map(|_| {
                let c = std::net::TcpStream::connect(s.local_addr()).unwrap();
                TcpStream::from_std(c).unwrap()
            })
            .collect();
        // Room for exactly one more descriptor: the first accepted connection.
        let mut old = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit/setrlimit on valid rlimit structs; restored below.
        unsafe { assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut old), 0) };
        let low = libc::rlimit { rlim_cur: open_fds() as u64 + 1, rlim_max: old.rlim_max };
        // SAFETY: as above.
        unsafe { assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &low), 0) };

        s.start().unwrap();
        let t = Instant::now();
        for (i, c) in clients.iter().enumerate() {
            // Each client is served once the one before it has closed and freed its fd.
            assert_eq!(ask(c, &format!("c{i}")).unwrap(), format!("echo: c{i}\n"));
            c.shutdown(std::net::Shutdown::Both).unwrap();
            sleep(Duration::from_millis(100));
        }
        let elapsed = t.elapsed();
        // SAFETY: restoring the limit read above.
        unsafe { assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &old), 0) };
        let warnings = OUT_OF_RESOURCES.load(Ordering::SeqCst);
        // Backing off from 10 ms, at most one warning per sleep: a spinning loop would log
        // thousands in this time.
        let bound = 2 + (elapsed.as_millis() / 10) as usize;
        assert!((1..=bound).contains(&warnings), "{warnings} warnings in {elapsed:?}");
        drop(clients);
        s.stop();
    });
}

#[test]
fn killing_the_serve_forever_fiber_stops_the_server() {
    let s = Rc::new(StreamServer::new("127.0.0.1:0", line_echo).unwrap());
    let s2 = s.clone();
    let g = spawn(move || s2.serve_forever().unwrap());
    let c = TcpStream::connect(s.local_addr()).unwrap();
    assert_eq!(ask(&c, "up").unwrap(), "echo: up\n");
    g.kill();
    wait_until("the server to stop", || s.is_stopped() && s.connections() == 0);
    assert_eq!(ask(&c, "down").unwrap(), "", "the handler was ended by stop");
}

#[test]
fn serve_forever_returns_only_once_the_stop_has_finished() {
    // gevent's serve_forever joins the stop: a `main` that ends with it must not exit while
    // the grace period still runs (losing the responses in flight).
    let done = Rc::new(Cell::new(false));
    let d = done.clone();
    let s = Rc::new(
        StreamServer::new("127.0.0.1:0", move |stream, _| {
            let mut line = String::new();
            BufReader::new(&stream).read_line(&mut line).unwrap();
            sleep(Duration::from_millis(60)); // inside the grace period
            (&stream).write_all(b"late reply\n").unwrap();
            d.set(true);
        })
        .unwrap()
        .stop_timeout(Duration::from_secs(5)),
    );
    let addr = s.local_addr();
    let s2 = s.clone();
    let client = spawn(move || {
        let c = TcpStream::connect(addr).unwrap();
        (&c).write_all(b"hello\n").unwrap();
        sleep(Duration::from_millis(10));
        s2.stop();
        let mut reply = String::new();
        BufReader::new(&c).read_line(&mut reply).unwrap();
        reply
    });
    s.serve_forever().unwrap();
    assert!(done.get(), "serve_forever returned before the handler it waited for ended");
    assert_eq!(s.connections(), 0);
    assert_eq!(client.take_or_get(), "late reply\n");
}

#[test]
fn stop_gives_up_on_a_handler_that_survives_its_kill() {
    // gevent bounds the kill phase (pool.kill(timeout=1)); a handler that swallows its
    // GreenletExit must not hold stop forever.
    let quit = Rc::new(Cell::new(false));
    let q = quit.clone();
    let s = StreamServer::new("127.0.0.1:0", move |_stream, _| {
        while !q.get() {
            let _ = catch_unwind(AssertUnwindSafe(|| sleep(Duration::from_millis(10))));
        }
    })
    .unwrap()
    .stop_timeout(Duration::from_millis(20));
    s.start().unwrap();
    let _c = TcpStream::connect(s.local_addr()).unwrap();
    wait_until("the handler", || s.connections() == 1);
    let t = Instant::now();
    s.stop();
    let took = t.elapsed();
    assert!(took < Duration::from_secs(10), "stop took {took:?}");
    assert_eq!(s.connections(), 1, "the survivor is left running");
    quit.set(true);
    wait_until("the survivor to end", || s.connections() == 0);
}

#[test]
fn max_connections_after_start_is_refused_clearly() {
    let s = StreamServer::new("127.0.0.1:0", line_echo).unwrap();
    s.start().unwrap();
    let p = catch_unwind(AssertUnwindSafe(|| s.max_connections(1))).unwrap_err();
    let msg = greenfiber::Error::from_panic(None, &*p).to_string();
    assert!(msg.contains("before the server starts"), "{msg:?}");
}

#[test]
fn concurrent_stops_spare_each_other_and_serve_forever_waits_for_both() {
    let cell: Rc<RefCell<Option<Rc<StreamServer>>>> = Rc::default();
    let first_stopper_finished = Rc::new(Cell::new(false));
    let (c2, f2) = (cell.clone(), first_stopper_finished.clone());
    let s = StreamServer::new("127.0.0.1:0", move |stream, _| {
        let mut line = String::new();
        BufReader::new(&stream).read_line(&mut line).unwrap();
        if line.trim() == "stop" {
            let server = c2.borrow().clone().unwrap();
            server.stop(); // another stop starts meanwhile: it must not kill this handler
            f2.set(true);
        } else {
            sleep(Duration::from_secs(3600)); // killed after the grace period
        }
    })
    .unwrap()
    .stop_timeout(Duration::from_millis(100));
    let s = Rc::new(s);
    *cell.borrow_mut() = Some(s.clone());
    let s2 = s.clone();
    let serving = spawn(move || s2.serve_forever().unwrap());
    let addr = s.local_addr();
    let sleeper = TcpStream::connect(addr).unwrap();
    (&sleeper).write_all(b"sleep\n").unwrap();
    wait_until("the sleeper's handler", || s.connections() == 1);
    let stopper = TcpStream::connect(addr).unwrap();
    (&stopper).write_all(b"stop\n").unwrap();
    wait_until("the first stop", || s.is_stopped());
    let s3 = s.clone();
    let second = spawn(move || s3.stop());
    serving.join();
    assert!(second.ready(), "serve_forever returned while the second stop still ran");
    assert!(first_stopper_finished.get(), "the second stop killed the first stopper");
    wait_until("every handler to end", || s.connections() == 0);
    cell.borrow_mut().take();
}
