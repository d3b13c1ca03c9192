//! A small HTTP/1.1 server on `StreamServer`: keep-alive with Content-Length framing,
//! `Connection: close` honoured, a malformed request answered with 400 and a close. It serves a
//! hello page at `/` and a file download at `/download` (a 1 MiB generated file, or `--file P`).
//!
//! ```sh
//! cargo run --release --example http_server                 # http://127.0.0.1:8088/
//! curl -v http://127.0.0.1:8088/ http://127.0.0.1:8088/     # two requests, one connection
//! curl -O http://127.0.0.1:8088/download
//! cargo run --example http_server -- --port 0               # prints "listening on ADDR"
//! cargo run --example http_server -- --selftest             # port 0, raw clients, exit
//! ```
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;

use greenfiber::net::TcpStream;
use greenfiber::server::StreamServer;

const HELLO: &str = "<!doctype html><title>greenfiber</title><h1>Hello from a fiber</h1>\n";
const MAX_HEADER_LINE: usize = 8192;
const MAX_HEADERS: usize = 100;

struct Request {
    method: String,
    path: String,
    close: bool,
    body_len: usize,
}

enum Parsed {
    Request(Request),
    /// The client closed between requests.
    Eof,
    Malformed(&'static str),
}

fn read_line(r: &mut impl BufRead) -> io::Result<Option<String>> {
    let mut line = Vec::new();
    let n = r.take(MAX_HEADER_LINE as u64).read_until(b'\n', &mut line)?;
    if n == 0 {
        return Ok(None);
    }
    if !line.ends_with(b"\n") {
        return Ok(Some(String::from("\u{0}"))); // too long or cut off: malformed
    }
    Ok(Some(String::from_utf8_lossy(&line).trim_end_matches(['\r', '\n']).to_string()))
}

fn parse(r: &mut impl BufRead) -> io::Result<Parsed> {
    let Some(first) = read_line(r)? else { return Ok(Parsed::Eof) };
    let parts: Vec<&str> = first.split(' ').collect();
    let [method, path, version] = parts[..] else { return Ok(Parsed::Malformed("request line")) };
    let http11 = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        _ => return Ok(Parsed::Malformed("version")),
    };
    if method.is_empty() || !path.starts_with('/') {
        return Ok(Parsed::Malformed("request line"));
    }
    let mut req = Request { method: method.into(), path: path.into(), close: !http11, body_len: 0 };
    for _ in 0..MAX_HEADERS {
        let Some(line) = read_line(r)? else { return Ok(Parsed::Malformed("headers cut off")) };
        if line.is_empty() {
            return Ok(Parsed::Request(req));
        }
        let Some((name, value)) = line.split_once(':') else {
            return Ok(Parsed::Malformed("header"));
        };
        let value = value.trim();
        match name.to_ascii_lowercase().as_str() {
            "content-length" => match value.parse() {
                Ok(n) => req.body_len = n,
                Err(_) => return Ok(Parsed::Malformed("content-length")),
            },
            "connection" if value.eq_ignore_ascii_case("close") => req.close = true,
            "connection" if value.eq_ignore_ascii_case("keep-alive") => req.close = false,
            "transfer-encoding" => return Ok(Parsed::Malformed("chunked bodies not supported")),
            _ => {}
        }
    }
    Ok(Parsed::Malformed("too many headers"))
}

fn respond(
    w: &mut &TcpStream,
    status: &str,
    ctype: &str,
    body: &[u8],
    close: bool,
) -> io::Result<()> {
    let conn = if close { "close" } else { "keep-alive" };
    // One write for head and body: written piece by piece, a kept-alive client's next
    // response waited for a delayed ACK (Nagle's algorithm, about 40 ms each).
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: {conn}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    w.write_all(&out)
}

fn serve_file(w: &mut &TcpStream, path: &PathBuf, close: bool) -> io::Result<()> {
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let conn = if close { "close" } else { "keep-alive" };
    write!(
        w,
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {len}\r\n\
         Content-Disposition: attachment; filename=\"download.bin\"\r\nConnection: {conn}\r\n\r\n"
    )?;
    // Local-disk reads are short; the socket writes are where the fiber parks.
    io::copy(&mut f, w).map(drop)
}

fn handle(stream: TcpStream, _peer: SocketAddr, file: &PathBuf) {
    // Responses go out as soon as they are written (a file download is head, then body).
    let _ = stream.set_nodelay(true);
    let mut reader = BufReader::new(&stream);
    let mut w = &stream;
    loop {
        let req = match parse(&mut reader) {
            Ok(Parsed::Request(r)) => r,
            Ok(Parsed::Eof) | Err(_) => return,
            Ok(Parsed::Malformed(why)) => {
                let body = format!("400 Bad Request: {why}\n");
                let _ = respond(&mut w, "400 Bad Request", "text/plain", body.as_bytes(), true);
                return;
            }
        };
        // Skip the body (Content-Length framing) so the next request starts in the right place.
        if io::copy(&mut (&mut reader).take(req.body_len as u64), &mut io::sink()).ok()
            != Some(req.body_len as u64)
        {
            return;
        }
        let r = match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/") => respond(&mut w, "200 OK", "text/html", HELLO.as_bytes(), req.close),
            ("GET", "/download") => serve_file(&mut w, file, req.close),
            ("GET", _) => respond(&mut w, "404 Not Found", "text/plain", b"not found\n", req.close),
            _ => respond(&mut w, "405 Method Not Allowed", "text/plain", b"GET only\n", req.close),
        };
        if r.is_err() || req.close {
            return;
        }
    }
}

/// A 1 MiB file with a known pattern, for `/download`.
fn default_file() -> PathBuf {
    let p = std::env::temp_dir().join(format!("greenfiber-http-{}.bin", std::process::id()));
    let data: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
    std::fs::write(&p, data).unwrap();
    p
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| args.iter().position(|a| a == name).map(|i| args[i + 1].clone());
    let selftest = args.iter().any(|a| a == "--selftest");
    let port = if selftest { "0".into() } else { arg("--port").unwrap_or("8088".into()) };
    let generated = arg("--file").is_none();
    let file = Rc::new(arg("--file").map(PathBuf::from).unwrap_or_else(default_file));
    let f = file.clone();
    let server = StreamServer::new(format!("127.0.0.1:{port}"), move |s, a| handle(s, a, &f))
        .expect("bind")
        .max_connections(10_000);
    if !selftest {
        println!("listening on {}", server.local_addr());
        io::stdout().flush().unwrap();
        server.serve_forever().unwrap();
        return;
    }
    server.start().unwrap();
    let addr = server.local_addr();
    for line in greenfiber::threadpool::spawn_blocking(move || raw_clients(addr)).unwrap() {
        println!("{line}");
    }
    server.stop();
    if generated {
        let _ = std::fs::remove_file(&*file);
    }
}

/// Raw-socket clients for `--selftest`: keep-alive, Connection: close, a malformed request.
fn raw_clients(addr: SocketAddr) -> Vec<String> {
    use std::net::TcpStream;
    let mut out = Vec::new();
    let status_and_rest = |s: &TcpStream| -> (String, usize, bool) {
        let mut r = std::io::BufReader::new(s);
        let mut status = String::new();
        r.read_line(&mut status).unwrap();
        let (mut len, mut close) = (0, false);
        loop {
            let mut h = String::new();
            r.read_line(&mut h).unwrap();
            let h = h.trim_end().to_ascii_lowercase();
            if h.is_empty() {
                break;
            }
            if let Some(v) = h.strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
            close |= h == "connection: close";
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body).unwrap();
        assert!(r.buffer().is_empty(), "nothing beyond Content-Length");
        (status.trim_end().to_string(), len, close)
    };
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    out.push(format!("keep-alive 1: {:?}", status_and_rest(&s)));
    s.write_all(b"GET /download HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    out.push(format!("keep-alive 2: {:?}", status_and_rest(&s)));
    s.write_all(b"GET /nope HTTP/1.1\r\nConnection: close\r\n\r\n").unwrap();
    out.push(format!("close: {:?}", status_and_rest(&s)));
    out.push(format!("then EOF: {}", s.read(&mut [0; 8]).unwrap() == 0));
    let mut m = TcpStream::connect(addr).unwrap();
    m.write_all(b"BLAH\r\n\r\n").unwrap();
    out.push(format!("malformed: {:?}", status_and_rest(&m)));
    out.push(format!("then EOF: {}", m.read(&mut [0; 8]).unwrap() == 0));
    out
}
