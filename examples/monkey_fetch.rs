//! gevent's classic, with unmodified `std::net`: `monkey::patch_all()`, then N fibers each fetch
//! a page from a local HTTP server that answers after 100 ms. With the hooks the fetches
//! overlap and all finish in about 100 ms; with `--no-patch` each blocks the thread, N × 100 ms.
//!
//! ```sh
//! cargo run --release --features monkey --example monkey_fetch -- 10
//! cargo run --release --features monkey --example monkey_fetch -- 10 --no-patch
//! cargo run --release --features monkey --example monkey_fetch -- 10 --ureq   # a blocking HTTP client crate
//! ```
//!
//! Prints `fetched N pages of M bytes in T ms (patched|not patched)`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// A thread-per-connection HTTP server (its threads have no hub, so its sleeps really block
/// them, independently of the fibers).
fn start_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let mut conn = conn.unwrap();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap() > 2 {
                    line.clear();
                }
                std::thread::sleep(Duration::from_millis(100));
                let body = "hello from the slow server\n";
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                conn.write_all(reply.as_bytes()).unwrap();
            });
        }
    });
    addr
}

/// A plain blocking HTTP/1.0 GET with std.
fn fetch(addr: SocketAddr) -> usize {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply}");
    reply.split("\r\n\r\n").nth(1).unwrap().len()
}

/// The same GET with `ureq`, a blocking HTTP client crate that knows nothing of greenfiber.
fn fetch_ureq(addr: SocketAddr) -> usize {
    let mut reply = ureq::get(&format!("http://{addr}/")).call().unwrap();
    reply.body_mut().read_to_string().unwrap().len()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: usize = args.iter().find_map(|a| a.parse().ok()).unwrap_or(10);
    let patch = !args.iter().any(|a| a == "--no-patch");
    let with_ureq = args.iter().any(|a| a == "--ureq");
    let get: fn(SocketAddr) -> usize = if with_ureq { fetch_ureq } else { fetch };
    let addr = start_server();
    if patch {
        greenfiber::monkey::patch_all();
    }
    let t = Instant::now();
    let fibers: Vec<_> = (0..n).map(|_| greenfiber::spawn(move || get(addr))).collect();
    assert_eq!(greenfiber::joinall(&fibers, None), n);
    let took = t.elapsed();
    let bytes = fibers[0].get().unwrap();
    println!(
        "fetched {n} pages of {bytes} bytes in {} ms ({}{})",
        took.as_millis(),
        if patch { "patched" } else { "not patched" },
        if with_ureq { ", ureq" } else { "" }
    );
}
