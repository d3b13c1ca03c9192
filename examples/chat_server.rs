//! A chat server: every line a client sends is broadcast to every connected client, with join
//! and leave notices; clients are kept by address. The threaded chat server of the source
//! notes, with a fiber per client instead of a thread and no locks.
//!
//! ```sh
//! cargo run --release --example chat_server             # listens on 127.0.0.1:16001
//! nc 127.0.0.1 16001                                     # in two or more terminals
//! cargo run --example chat_server -- --selftest          # port 0, three real clients, exit
//! ```
use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use greenfiber::net::TcpStream;
use greenfiber::server::StreamServer;

/// Connected clients by address. A line is only broadcast once it is complete.
type Clients = Rc<RefCell<HashMap<SocketAddr, Rc<TcpStream>>>>;

fn broadcast(clients: &Clients, msg: &str) {
    // Copy the list first: a write may park, and others may join or leave meanwhile.
    let targets: Vec<_> = clients.borrow().iter().map(|(a, s)| (*a, s.clone())).collect();
    for (addr, s) in targets {
        if (&*s).write_all(msg.as_bytes()).is_err() {
            // Too slow (write timeout) or gone: drop it; its own fiber sees the close.
            clients.borrow_mut().remove(&addr);
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

fn chat(clients: &Clients, stream: TcpStream, addr: SocketAddr) {
    let stream = Rc::new(stream);
    // A client that cannot keep up for a second is disconnected rather than stall everyone.
    stream.set_write_timeout(Some(Duration::from_secs(1))).unwrap();
    clients.borrow_mut().insert(addr, stream.clone());
    broadcast(clients, &format!("* {addr} joined\n"));
    let mut reader = BufReader::new(&*stream);
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            // EOF in the middle of a line: the half line is dropped, not broadcast.
            Ok(_) if !line.ends_with('\n') => break,
            Ok(_) => broadcast(clients, &format!("{addr}: {line}")),
        }
    }
    clients.borrow_mut().remove(&addr);
    broadcast(clients, &format!("* {addr} left\n"));
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
    let transcript =
        greenfiber::threadpool::spawn_blocking(move || selftest_clients(addr)).unwrap();
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
