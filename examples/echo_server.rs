//! gevent's echo server as fibers: each connection is greeted, every line is echoed back, and
//! `quit` closes the connection. One `StreamServer`, one fiber per client.
//!
//! ```sh
//! cargo run --release --example echo_server            # listens on 127.0.0.1:16000
//! nc 127.0.0.1 16000                                     # type lines; `quit` to leave
//! cargo run --example echo_server -- --selftest          # port 0, three real clients, exit
//! ```
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;

use greenfiber::net::TcpStream;
use greenfiber::server::StreamServer;

fn echo(socket: TcpStream, address: SocketAddr) {
    println!("New connection from {address}");
    let mut out = &socket;
    if out.write_all(b"Welcome to the echo server! Type quit to exit.\r\n").is_err() {
        return;
    }
    for line in BufReader::new(&socket).lines() {
        let Ok(line) = line else { break };
        if line.trim() == "quit" {
            break;
        }
        if out.write_all(format!("{line}\n").as_bytes()).is_err() {
            break;
        }
    }
    println!("client {address} disconnected");
}

fn main() {
    let selftest = std::env::args().any(|a| a == "--selftest");
    let addr = if selftest { "127.0.0.1:0" } else { "127.0.0.1:16000" };
    let server = StreamServer::new(addr, echo).expect("bind");
    if !selftest {
        println!("Starting echo server on {}", server.local_addr());
        server.serve_forever().unwrap();
        return;
    }
    server.start().unwrap();
    let addr = server.local_addr();
    // Real blocking clients on another OS thread; main parks so the server fibers run.
    let transcripts = greenfiber::threadpool::spawn_blocking(move || {
        let clients: Vec<_> = (0..3).map(|_| std::net::TcpStream::connect(addr).unwrap()).collect();
        let mut out = Vec::new();
        for (i, c) in clients.iter().enumerate() {
            let mut r = std::io::BufReader::new(c);
            let mut w = c;
            let mut got = String::new();
            r.read_line(&mut got).unwrap();
            writeln!(w, "hello from client {i}").unwrap();
            r.read_line(&mut got).unwrap();
            writeln!(w, "quit").unwrap();
            let mut rest = String::new();
            std::io::Read::read_to_string(&mut r, &mut rest).unwrap();
            out.push(format!("client {i}: {:?} then EOF", got));
        }
        out
    })
    .unwrap();
    server.stop();
    for t in transcripts {
        println!("{t}");
    }
    println!("selftest ok");
}
