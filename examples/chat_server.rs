//! A chat server: every line a client sends is broadcast to every connected client, with join
//! and leave notices; clients are kept by address. The threaded chat server of the source
//! notes, with fibers instead of threads and no locks: per client, a reader fiber (the
//! server's handler) and a writer fiber that alone writes to its socket, fed by a bounded
//! outbox. A broadcast never waits: a client that falls `OUTBOX` messages behind (it stopped
//! reading) is disconnected, and the others go on at full speed.
//!
//! ```sh
//! cargo run --release --example chat_server             # listens on 127.0.0.1:16001
//! nc 127.0.0.1 16001                                     # in two or more terminals
//! cargo run --example chat_server -- --selftest          # port 0, three real clients, exit
//! ```
use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use greenfiber::net::TcpStream;
use greenfiber::server::StreamServer;
use greenfiber::sync::Queue;

/// How many messages a client may fall behind before it is disconnected: a client that does
/// not read cannot stall the others, nor make the server hold its backlog without end.
const OUTBOX: usize = 256;
/// The longest line a client may send; a longer one ends its connection.
const MAX_LINE: u64 = 4096;

/// One connected client. Only its writer fiber writes to its socket, one whole message at a
/// time, so broadcasts from several senders never interleave inside a line.
struct Client {
    stream: Rc<TcpStream>,
    /// Messages on their way to the client; `None` tells the writer to stop.
    outbox: Rc<Queue<Option<Rc<str>>>>,
}

impl Client {
    /// Ends the writer: after what is queued if there is room for the stop, else at once.
    fn close(&self) {
        if self.outbox.try_put(None).is_err() {
            let _ = self.stream.shutdown(Shutdown::Both);
        }
    }
}

/// Connected clients by address. A line is only broadcast once it is complete.
type Clients = Rc<RefCell<HashMap<SocketAddr, Client>>>;

/// Queues `msg` for every client without waiting: a client whose outbox is full is
/// disconnected (its reader then sees the close and leaves).
fn broadcast(clients: &Clients, msg: &str) {
    let msg: Rc<str> = msg.into();
    let behind: Vec<SocketAddr> = clients
        .borrow()
        .iter()
        .filter(|(_, c)| c.outbox.try_put(Some(msg.clone())).is_err())
        .map(|(a, _)| *a)
        .collect();
    for addr in behind {
        let gone = clients.borrow_mut().remove(&addr);
        if let Some(c) = gone {
            let _ = c.stream.shutdown(Shutdown::Both);
        }
    }
}

/// A client's writer fiber: sends its messages in order until told to stop or the socket
/// fails.
fn write_out(stream: Rc<TcpStream>, outbox: Rc<Queue<Option<Rc<str>>>>) {
    while let Some(msg) = outbox.get() {
        if (&*stream).write_all(msg.as_bytes()).is_err() {
            let _ = stream.shutdown(Shutdown::Both);
            break;
        }
    }
}

fn chat(clients: &Clients, stream: TcpStream, addr: SocketAddr) {
    let stream = Rc::new(stream);
    let outbox = Rc::new(Queue::bounded(OUTBOX));
    let (s, o) = (stream.clone(), outbox.clone());
    greenfiber::spawn(move || write_out(s, o));
    clients.borrow_mut().insert(addr, Client { stream: stream.clone(), outbox });
    /// Leaves however the handler ends (EOF, error, or a kill by `stop`).
    struct Leave<'a>(&'a Clients, SocketAddr);
    impl Drop for Leave<'_> {
        fn drop(&mut self) {
            let gone = self.0.borrow_mut().remove(&self.1);
            if let Some(c) = gone {
                c.close();
            }
            broadcast(self.0, &format!("* {} left\n", self.1));
        }
    }
    let _leave = Leave(clients, addr);
    broadcast(clients, &format!("* {addr} joined\n"));
    let mut reader = BufReader::new(&*stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        match (&mut reader).take(MAX_LINE).read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            // EOF in the middle of a line, or a line too long: the rest is dropped, and the
            // client with it.
            Ok(_) if line.last() != Some(&b'\n') => break,
            Ok(_) => {
                broadcast(clients, &format!("{addr}: {}", String::from_utf8_lossy(&line)));
                // Let the writers run before the next line: a sender whose lines are already
                // buffered would otherwise never block, and fill the outboxes of readers that
                // keep up before their writers had a turn.
                greenfiber::yield_now();
            }
        }
    }
}

fn main() {
    let selftest = std::env::args().any(|a| a == "--selftest");
    let clients: Clients = Rc::default();
    let c = clients.clone();
    let addr = if selftest { "127.0.0.1:0" } else { "127.0.0.1:16001" };
    let server = StreamServer::new(addr, move |s, a| chat(&c, s, a)).expect("bind");
    if !selftest {
        println!("chat server on {}; connect with nc", server.local_addr());
        server.serve_forever().unwrap();
        return;
    }
    server.start().unwrap();
    let addr = server.local_addr();
    let transcript = greenfiber::threadpool::spawn_blocking(move || {
        let mut t = selftest_clients(addr);
        t.push(selftest_slow_reader(addr));
        t
    })
    .unwrap();
    server.stop();
    for l in transcript {
        println!("{l}");
    }
    println!("clients left on the server: {}", clients.borrow().len());
}

/// Three real clients, A, B and C. C joins, sends half a line and vanishes; A and B talk.
/// Returns what B saw, with addresses replaced by the clients' names.
fn selftest_clients(addr: SocketAddr) -> Vec<String> {
    use std::net::TcpStream;
    let connect = || {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    };
    let read_line = |r: &mut std::io::BufReader<&TcpStream>| {
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        l
    };
    let a = connect();
    let mut ar = std::io::BufReader::new(&a);
    read_line(&mut ar); // its own join notice
    let b = connect();
    let mut br = std::io::BufReader::new(&b);
    read_line(&mut ar);
    let mut names = vec![
        (a.local_addr().unwrap().to_string(), "A"),
        (b.local_addr().unwrap().to_string(), "B"),
    ];
    let mut seen = vec![read_line(&mut br)];
    {
        let mut c = connect();
        names.push((c.local_addr().unwrap().to_string(), "C"));
        read_line(&mut ar);
        seen.push(read_line(&mut br));
        // Half a line, then an abrupt close (C never read its notices: the kernel resets).
        c.write_all(b"this line never ends").unwrap();
    }
    read_line(&mut ar);
    seen.push(read_line(&mut br)); // C left
    (&a).write_all(b"hello from A\n").unwrap();
    seen.push(read_line(&mut br));
    (&b).write_all(b"hi A, B here\n").unwrap();
    seen.push(read_line(&mut br));
    read_line(&mut ar);
    let a_heard = read_line(&mut ar);
    drop(ar);
    drop(a);
    seen.push(read_line(&mut br)); // A left
    seen.push(format!("(A heard: {})", a_heard.trim_end()));
    seen.iter()
        .map(|l| {
            let mut l = l.trim_end().to_string();
            for (addr, name) in &names {
                l = l.replace(addr.as_str(), name);
            }
            format!("B saw: {l}")
        })
        .collect()
}

/// B and D join; D never reads. A sends `LINES` long lines from a thread of its own while B
/// reads them all: B must get every line whole, and D must be disconnected once it is
/// `OUTBOX` messages behind, without slowing B down.
fn selftest_slow_reader(addr: SocketAddr) -> String {
    use std::net::TcpStream;
    const LINES: usize = 5000;
    let connect = || {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s
    };
    let b = connect();
    let mut br = std::io::BufReader::new(&b);
    let mut l = String::new();
    br.read_line(&mut l).unwrap(); // B joined
    let d = connect();
    let d_name = d.local_addr().unwrap().to_string();
    l.clear();
    br.read_line(&mut l).unwrap(); // D joined
    let a = connect();
    let a_name = a.local_addr().unwrap().to_string();
    l.clear();
    br.read_line(&mut l).unwrap(); // A joined
    // A hears its own lines too: it reads them on a thread of its own, as a chat client does.
    let a_in = a.try_clone().unwrap();
    let listener = std::thread::spawn(move || std::io::copy(&mut &a_in, &mut std::io::sink()));
    let payload = "x".repeat(2000);
    let p = payload.clone();
    let sender = std::thread::spawn(move || {
        let mut w = std::io::BufWriter::new(&a);
        for i in 0..LINES {
            writeln!(w, "{i:05} {p}").unwrap();
        }
        w.flush().unwrap();
        drop(w);
        a
    });
    let (mut got, mut garbled, mut d_left) = (0, 0, false);
    while got + garbled < LINES {
        l.clear();
        if br.read_line(&mut l).unwrap() == 0 {
            break;
        }
        if l == format!("* {d_name} left\n") {
            d_left = true;
        } else if l == format!("{a_name}: {:05} {payload}\n", got + garbled) {
            got += 1;
        } else {
            garbled += 1;
        }
    }
    let a = sender.join().unwrap();
    a.shutdown(std::net::Shutdown::Both).unwrap();
    let _ = listener.join().unwrap();
    drop((a, d));
    format!(
        "B got {got} of {LINES} long lines from A, {garbled} garbled; D, never reading, was \
         disconnected: {d_left}"
    )
}
