//! Echo load comparison: 64-byte request/response ping-pong over 127.0.0.1 against four
//! single-threaded servers — greenfiber's `StreamServer`, a raw mio event loop (the limit),
//! tokio `current_thread` and may with one worker — driven by one load client (a single-threaded
//! mio program, the same for every server). Also: hold many idle connections in `StreamServer`
//! and report RSS per connection.
//!
//! ```sh
//! cargo run --release --example echo_bench -- run                  # 5 s per run, median of 3
//! cargo run --release --example echo_bench -- run --secs 1 --reps 1 --conns 50
//! cargo run --release --example echo_bench -- idle 10000           # RSS per idle connection
//! cargo run --release --example echo_bench -- server mio           # prints "port N"; any server
//! cargo run --release --example echo_bench -- client 127.0.0.1:N 50 5  # also prints p10..p99.9
//! cargo run --release --features monkey --example echo_bench -- run --servers greenfiber,std-patched
//! ```
//! `run` pins each server to CPU 0 and the client to CPU 1 with `taskset` (if present).
//! What it measures: round trips per second over all connections, and the p99 latency of one
//! round trip as the client sees it. What it is not: a multi-core comparison, or a bandwidth test.
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MSG: usize = 64;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    match a.as_slice() {
        ["server", kind] => server(kind),
        ["client", addr, c, secs] => {
            let (rt, p99) =
                client(addr.parse().unwrap(), c.parse().unwrap(), secs.parse().unwrap());
            println!("rt_per_s {rt:.0} p99_us {p99}");
        }
        ["idle", n] => idle(n.parse().unwrap()),
        ["run", rest @ ..] => run(rest),
        _ => {
            eprintln!(
                "usage: echo_bench run [--secs S] [--reps R] [--conns 50,1000] | idle N | server KIND | client ADDR C SECS"
            );
            std::process::exit(2);
        }
    }
}

// ---------------------------------------------------------------- servers

/// The echo loop of every server with blocking-style `Read`/`Write` (greenfiber, std under
/// `patch_all`, may): read up to 1 KiB, write it all back, until EOF or an error.
fn echo(mut s: impl Read + Write) {
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if s.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

fn announce(port: u16) {
    println!("port {port}");
    io::stdout().flush().unwrap();
}

fn server(kind: &str) {
    match kind {
        "greenfiber" => {
            let s = greenfiber::server::StreamServer::new("127.0.0.1:0", |s, _| {
                let _ = s.set_nodelay(true);
                echo(&s);
            })
            .unwrap();
            announce(s.local_addr().port());
            s.serve_forever().unwrap();
        }
        "mio" => mio_server(),
        // Unmodified std::net under monkey::patch_all(): a fiber per connection, as a
        // thread-per-connection server would be written (build with `--features monkey`).
        #[cfg(feature = "monkey")]
        "std-patched" => {
            greenfiber::monkey::patch_all();
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            announce(l.local_addr().unwrap().port());
            let acceptor = greenfiber::spawn(move || {
                for s in l.incoming() {
                    let Ok(s) = s else { continue };
                    let _ = s.set_nodelay(true);
                    greenfiber::spawn(move || echo(s));
                }
            });
            acceptor.join();
        }
        "tokio" => {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let rt = tokio::runtime::Builder::new_current_thread().enable_io().build().unwrap();
            rt.block_on(async {
                let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                announce(l.local_addr().unwrap().port());
                loop {
                    let (mut s, _) = l.accept().await.unwrap();
                    let _ = s.set_nodelay(true);
                    tokio::spawn(async move {
                        let mut buf = [0u8; 1024];
                        loop {
                            match s.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => {
                                    if s.write_all(&buf[..n]).await.is_err() {
                                        return;
                                    }
                                }
                            }
                        }
                    });
                }
            });
        }
        "may" => {
            may::config().set_workers(1);
            let h = may::go!(|| {
                let l = may::net::TcpListener::bind("127.0.0.1:0").unwrap();
                announce(l.local_addr().unwrap().port());
                for s in l.incoming() {
                    let Ok(s) = s else { continue };
                    let _ = s.set_nodelay(true);
                    may::go!(move || echo(s));
                }
            });
            h.join().unwrap();
        }
        other => panic!("unknown server {other}"),
    }
}

/// The limit: one mio event loop, edge-triggered, echoing what it reads.
fn mio_server() {
    use mio::{Events, Interest, Poll, Token};
    let mut poll = Poll::new().unwrap();
    let mut l = mio::net::TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    poll.registry().register(&mut l, Token(usize::MAX), Interest::READABLE).unwrap();
    announce(l.local_addr().unwrap().port());
    let mut conns: Vec<Option<mio::net::TcpStream>> = Vec::new();
    let mut events = Events::with_capacity(1024);
    let mut buf = [0u8; 1024];
    loop {
        poll.poll(&mut events, None).unwrap();
        for ev in events.iter() {
            if ev.token() == Token(usize::MAX) {
                while let Ok((mut s, _)) = l.accept() {
                    let _ = s.set_nodelay(true);
                    let i = conns.len();
                    poll.registry().register(&mut s, Token(i), Interest::READABLE).unwrap();
                    conns.push(Some(s));
                }
                continue;
            }
            let i = ev.token().0;
            let Some(s) = conns[i].as_mut() else { continue };
            let close = loop {
                match s.read(&mut buf) {
                    Ok(0) => break true,
                    Ok(n) => {
                        // 64-byte messages fit any socket buffer: a short write does not happen
                        // in this benchmark; treat it as fatal for the connection.
                        if s.write(&buf[..n]).ok() != Some(n) {
                            break true;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
                    Err(_) => break true,
                }
            };
            if close {
                conns[i] = None;
            }
        }
    }
}

// ---------------------------------------------------------------- the load client

/// `c` connections, each sending 64 bytes and waiting for them back, for `secs` seconds after
/// a 0.5 s warm-up. Returns (round trips per second, p99 latency in µs). A round trip's latency
/// runs from the write of the request to the `poll` that returned the response.
fn client(addr: SocketAddr, c: usize, secs: f64) -> (f64, u64) {
    use mio::{Events, Interest, Poll, Token};
    let mut poll = Poll::new().unwrap();
    let mut conns = Vec::with_capacity(c);
    for i in 0..c {
        let s = std::net::TcpStream::connect(addr).unwrap();
        s.set_nodelay(true).unwrap();
        s.set_nonblocking(true).unwrap();
        let mut s = mio::net::TcpStream::from_std(s);
        poll.registry().register(&mut s, Token(i), Interest::READABLE).unwrap();
        conns.push((s, Instant::now(), 0usize));
    }
    let msg = [b'x'; MSG];
    for (s, sent, _) in conns.iter_mut() {
        s.write_all(&msg).unwrap();
        *sent = Instant::now();
    }
    let mut hist = vec![0u64; 200_001]; // µs buckets; the last one is "more"
    let mut count = 0u64;
    let start = Instant::now();
    let measure_from = start + Duration::from_millis(500);
    let end = measure_from + Duration::from_secs_f64(secs);
    let mut events = Events::with_capacity(1024);
    let mut buf = [0u8; 4096];
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        poll.poll(&mut events, Some(end - now)).unwrap();
        let now = Instant::now();
        for ev in events.iter() {
            let (s, sent, got) = &mut conns[ev.token().0];
            // A read shorter than the buffer took everything the socket held: whatever comes
            // later raises a new edge. So the client does not pay for a read that fails with
            // `WouldBlock` (a server answers one request at a time per connection).
            loop {
                match s.read(&mut buf) {
                    Ok(0) => panic!("server closed a connection"),
                    Ok(n) => {
                        *got += n;
                        if n < buf.len() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("client read: {e}"),
                }
            }
            while *got >= MSG {
                *got -= MSG;
                // The response counts as seen when `poll` returned it; the request was sent
                // when it was written, not when this batch of events began (a batch of 1000
                // takes milliseconds to go through, and that wait is the client's own).
                if now >= measure_from && now < end {
                    let us = now.duration_since(*sent).as_micros().min(200_000) as usize;
                    hist[us] += 1;
                    count += 1;
                }
                s.write_all(&msg).unwrap();
                *sent = Instant::now();
            }
        }
    }
    // The latency under which a fraction `q` of the round trips fell, in µs.
    let pct = |q: f64| {
        let want = (count as f64 * q).ceil() as u64;
        let mut acc = 0;
        hist.iter().position(|&n| {
            acc += n;
            acc >= want
        })
    };
    let show = |q| pct(q).map_or("-".to_owned(), |us| us.to_string());
    // The shape of the distribution, for a look by hand (`client` mode prints it).
    eprintln!(
        "latency µs: p10 {} p50 {} p90 {} p95 {} p98 {} p99 {} p99.9 {}",
        show(0.1),
        show(0.5),
        show(0.9),
        show(0.95),
        show(0.98),
        show(0.99),
        show(0.999)
    );
    (count as f64 / secs, pct(0.99).unwrap_or(0) as u64)
}

// ---------------------------------------------------------------- orchestration

fn pinned(cpu: u32, args: &[&str]) -> Command {
    let exe = std::env::current_exe().unwrap();
    let taskset = Command::new("taskset").arg("--version").output().is_ok();
    let mut cmd = if taskset {
        let mut c = Command::new("taskset");
        c.arg("-c").arg(cpu.to_string()).arg(exe);
        c
    } else {
        Command::new(exe)
    };
    cmd.args(args);
    cmd
}

struct Server(std::process::Child, u16);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_server(kind: &str) -> Server {
    let mut child = pinned(0, &["server", kind]).stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let port = line.trim().strip_prefix("port ").expect(&line).parse().unwrap();
    Server(child, port)
}

fn run(rest: &[&str]) {
    let opt = |name: &str, default: &str| -> String {
        rest.iter()
            .position(|a| *a == name)
            .map(|i| rest[i + 1].to_string())
            .unwrap_or(default.to_string())
    };
    let secs = opt("--secs", "5");
    let reps: usize = opt("--reps", "3").parse().unwrap();
    let conns: Vec<String> = opt("--conns", "50,1000").split(',').map(String::from).collect();
    let servers = opt("--servers", "greenfiber,mio,tokio,may");
    let servers: Vec<&str> = servers.split(',').collect();
    // Every server runs at once (the idle ones wait in epoll), and the runs go round them in
    // turn: a slow minute of the host then falls on all of them, not on one.
    let started: Vec<Server> = servers.iter().map(|kind| start_server(kind)).collect();
    let mut runs = vec![vec![Vec::new(); conns.len()]; servers.len()];
    for _ in 0..reps {
        for (ci, c) in conns.iter().enumerate() {
            for (si, srv) in started.iter().enumerate() {
                let addr = format!("127.0.0.1:{}", srv.1);
                let out = pinned(1, &["client", &addr, c, &secs]).output().unwrap();
                assert!(out.status.success(), "{out:?}");
                let text = String::from_utf8(out.stdout).unwrap();
                let f: Vec<&str> = text.split_whitespace().collect();
                runs[si][ci].push((f[1].parse::<f64>().unwrap(), f[3].parse::<u64>().unwrap()));
            }
        }
    }
    println!("| server | C | round trips/s (median of {reps}) | p99 µs | runs: rt/s (p99 µs) |");
    println!("|---|---|---|---|---|");
    for (si, kind) in servers.iter().enumerate() {
        for (ci, c) in conns.iter().enumerate() {
            let runs = &runs[si][ci];
            let mut rts: Vec<f64> = runs.iter().map(|r| r.0).collect();
            let mut p99s: Vec<u64> = runs.iter().map(|r| r.1).collect();
            rts.sort_by(f64::total_cmp);
            p99s.sort();
            let all: Vec<String> = runs.iter().map(|r| format!("{:.0} ({})", r.0, r.1)).collect();
            println!(
                "| {kind} | {c} | {:.0} | {} | {} |",
                rts[rts.len() / 2],
                p99s[p99s.len() / 2],
                all.join(", ")
            );
        }
    }
}

// ---------------------------------------------------------------- idle connections

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = s.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Holds `n` idle connections to a greenfiber echo server (in a child process, pinned to CPU
/// 0), reports its RSS growth per connection, then checks each connection is still served.
fn idle(n: usize) {
    let srv = start_server("greenfiber");
    let pid = srv.0.id();
    let addr: SocketAddr = format!("127.0.0.1:{}", srv.1).parse().unwrap();
    // Warm up: one connection round trip so lazily built state exists before measuring.
    {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(b"x").unwrap();
        s.read_exact(&mut [0; 1]).unwrap();
    }
    std::thread::sleep(Duration::from_millis(200));
    let before = rss_kib(pid);
    let t = Instant::now();
    let conns: Vec<std::net::TcpStream> =
        (0..n).map(|_| std::net::TcpStream::connect(addr).unwrap()).collect();
    // Every connection has a handler fiber parked in read once one round trip succeeds; do the
    // round trips after measuring, so first wait for the accepts to settle.
    std::thread::sleep(Duration::from_millis(500));
    let connected = t.elapsed();
    let after = rss_kib(pid);
    let t = Instant::now();
    let mut served = 0;
    for s in &conns {
        let mut s = s;
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(&[7; MSG]).unwrap();
        let mut back = [0; MSG];
        if s.read_exact(&mut back).is_ok() && back == [7; MSG] {
            served += 1;
        }
    }
    let pinged = t.elapsed();
    let after_ping = rss_kib(pid);
    println!("idle connections: {n} (connected in {connected:?})");
    println!(
        "server RSS: {before} KiB before, {after} KiB with {n} idle, {after_ping} KiB after one round trip each"
    );
    println!(
        "RSS per idle connection: {:.1} KiB ({:.1} KiB after a round trip)",
        (after - before) as f64 / n as f64,
        (after_ping - before) as f64 / n as f64
    );
    println!("served afterwards: {served} of {n} (one 64-byte round trip each, {pinged:?})");
}
