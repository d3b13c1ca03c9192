//! N fibers fetch from a server at once. The local server takes 100 ms per request (it sleeps,
//! as a slow backend would); because each fetch parks its fiber while waiting, all N finish in
//! about one request's time, not N of them.
//!
//! ```sh
//! cargo run --release --example fetch_many          # N = 20
//! cargo run --release --example fetch_many -- 200
//! ```
//! The server is in the same process, on a port chosen by the OS; nothing to connect to.
use std::io::{BufRead, BufReader, Read, Write};
use std::time::{Duration, Instant};

use greenfiber::net::TcpStream;
use greenfiber::server::StreamServer;
use greenfiber::{joinall, sleep, spawn};

const DELAY: Duration = Duration::from_millis(100);

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(20);
    // The slow backend: reads "GET <name>\n", waits 100 ms, answers and closes.
    let server = StreamServer::new("127.0.0.1:0", |stream, _| {
        let mut line = String::new();
        if BufReader::new(&stream).read_line(&mut line).is_err() {
            return;
        }
        sleep(DELAY);
        let page = line.trim().strip_prefix("GET ").unwrap_or("?");
        let _ = (&stream).write_all(format!("content of {page}\n").as_bytes());
    })
    .unwrap();
    server.start().unwrap();
    let addr = server.local_addr();

    let t = Instant::now();
    let fetches: Vec<_> = (0..n)
        .map(|i| {
            spawn(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                writeln!(s, "GET page{i}").unwrap();
                let mut body = String::new();
                s.read_to_string(&mut body).unwrap();
                body
            })
        })
        .collect();
    let done = joinall(&fetches, None);
    let elapsed = t.elapsed();
    let ok = fetches
        .iter()
        .enumerate()
        .filter(|(i, g)| g.take().and_then(Result::ok) == Some(format!("content of page{i}\n")))
        .count();
    server.stop();
    println!("fetched {ok} of {n} pages ({done} fibers finished)");
    println!(
        "elapsed: {} ms (one request takes {} ms; one after another would take {} ms)",
        elapsed.as_millis(),
        DELAY.as_millis(),
        DELAY.as_millis() * n as u128
    );
    let concurrent = elapsed < DELAY * 10;
    println!("concurrent: {}", if concurrent { "yes" } else { "no" });
}
