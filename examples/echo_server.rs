//! gevent's echo server as fibers: each connection is greeted, every line is echoed back, and
//! `quit` closes the connection. One `StreamServer`, one fiber per client.
//!
//! ```sh
//! cargo run --release --example echo_server            # listens on 127.0.0.1:16000
//! nc 127.0.0.1 16000                                     # type lines; `quit` to leave
//! cargo run --example echo_server -- --selftest          # port 0, three real clients, exit
//! ```
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;

use greenfiber::net::TcpStream;
use greenfiber::server::StreamServer;

fn echo(socket: TcpStream, address: SocketAddr) {
    println!("New connection from {address}");
    let mut out = &socket;
    if out.write_all(b"Welcome to the echo server! Type quit to exit.\r\n").is_err() {
        return;
    }
    // Lines are bytes (any encoding is echoed as it came), at most MAX_LINE of them at a time:
    // a longer line is echoed in pieces, so no client can make the server buffer without end.
    const MAX_LINE: u64 = 64 * 1024;
    let mut reader = BufReader::new(&socket);
    let mut line = Vec::new();
    loop {
        line.clear();
        match (&mut reader).take(MAX_LINE).read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if line.trim_ascii() == b"quit" {
            break;
        }
        if !line.ends_with(b"\n") && line.len() < MAX_LINE as usize {
            line.push(b'\n'); // the last line, cut by EOF
        }
        if out.write_all(&line).is_err() {
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
        // Bytes that are not UTF-8 come back as they were sent.
        let c = std::net::TcpStream::connect(addr).unwrap();
        let mut r = std::io::BufReader::new(&c);
        let mut welcome = Vec::new();
        r.read_until(b'\n', &mut welcome).unwrap();
        (&c).write_all(b"\xff\xfe not utf-8\n").unwrap();
        let mut back = Vec::new();
        r.read_until(b'\n', &mut back).unwrap();
        out.push(format!("binary line echoed: {}", back == b"\xff\xfe not utf-8\n"));
        out
    })
    .unwrap();
    server.stop();
    for t in transcripts {
        println!("{t}");
    }
    println!("selftest ok");
}
