//! Every example runs and prints what its header promises.
mod common;
use common::example_stdout;

#[test]
fn greenlet_switch_prints_the_classic_output() {
    let out = example_stdout("greenlet_switch", &[]);
    assert_eq!(
        out,
        "test2 helloworld\ntest1 ({\"kkk\": 5, \"mmm\": 7, \"ppp\": 6}, [1, 2, 3])\nmain got ()\n"
    );
}

#[test]
fn generator_yields_fibonacci_and_ping_pongs() {
    let out = example_stdout("generator", &[]);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("fibonacci: [0, 1, 1, 2, 3, 5, 8, 13, 21, 34]"));
    let rest: Vec<_> = lines.collect();
    assert_eq!(rest, ["ping 0", "pong 1", "ping 2", "pong 3", "ping 4", "pong 5", "done at 6"]);
}

#[test]
fn gevent_basics_prints_the_four_lines_in_order() {
    let out = example_stdout("gevent_basics", &[]);
    assert_eq!(
        out,
        "Running in foo\nExplicit context to bar\nExplicit context switch to foo again\n\
         Implicit context switch back to bar\n"
    );
}

#[test]
fn spawn_many_joins_every_fiber() {
    let out = example_stdout("spawn_many", &["2000"]);
    assert!(out.contains("fibers: 2000 of 2000 finished"), "{out}");
    assert!(out.contains("peak RSS:"), "{out}");
}

#[test]
fn hub_bench_prints_its_figures() {
    let out = example_stdout("hub_bench", &["--quick"]);
    assert_eq!(out.matches("spawn+run+join").count(), 3, "{out}");
    assert!(out.contains("yield_now"), "{out}");
}

#[test]
fn echo_server_selftest_echoes_for_three_clients() {
    let out = example_stdout("echo_server", &["--selftest"]);
    for i in 0..3 {
        let want = format!(
            "client {i}: \"Welcome to the echo server! Type quit to exit.\\r\\nhello from client {i}\\n\" then EOF"
        );
        assert!(out.contains(&want), "{out}");
    }
    assert_eq!(out.matches("New connection from").count(), 3, "{out}");
    assert!(out.ends_with("selftest ok\n"), "{out}");
}

#[test]
fn chat_server_broadcasts_and_survives_an_abrupt_half_line() {
    let out = example_stdout("chat_server", &["--selftest"]);
    let want = "B saw: * B joined\nB saw: * C joined\nB saw: * C left\nB saw: A: hello from A\n\
                B saw: B: hi A, B here\nB saw: * A left\nB saw: (A heard: B: hi A, B here)\n\
                clients left on the server: 0\n";
    assert_eq!(out, want);
    assert!(!out.contains("this line never ends"));
}

#[test]
fn http_server_selftest_keep_alive_close_and_400() {
    let out = example_stdout("http_server", &["--selftest"]);
    let want = "keep-alive 1: (\"HTTP/1.1 200 OK\", 68, false)\n\
                keep-alive 2: (\"HTTP/1.1 200 OK\", 1048576, false)\n\
                close: (\"HTTP/1.1 404 Not Found\", 10, true)\nthen EOF: true\n\
                malformed: (\"HTTP/1.1 400 Bad Request\", 30, true)\nthen EOF: true\n";
    assert_eq!(out, want);
}

/// The HTTP example against curl: two requests on one kept-alive connection, then a download.
#[test]
fn http_server_against_curl() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    if Command::new("curl").arg("--version").output().is_err() {
        eprintln!("curl not installed; skipping (the selftest covers the protocol)");
        return;
    }
    let mut child = Command::new(common::example_path("http_server"))
        .args(["--port", "0"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    let _guard = Kill(child);
    let addr = first.trim().strip_prefix("listening on ").expect(&first).to_string();
    let url = format!("http://{addr}/");
    let out = Command::new("curl").args(["-sS", "-v", &url, &url]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let body = String::from_utf8(out.stdout).unwrap();
    assert_eq!(body.matches("Hello from a fiber").count(), 2, "{body}");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("Re-using existing connection") || log.contains("Reusing existing"),
        "{log}"
    );

    let dir = std::env::temp_dir().join(format!("gf-curl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("download.bin");
    let dl = format!("http://{addr}/download");
    let out = Command::new("curl")
        .args(["-sS", "-f", "-o", file.to_str().unwrap(), &dl])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let data = std::fs::read(&file).unwrap();
    assert_eq!(data.len(), 1 << 20);
    assert!(data.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
    std::fs::remove_dir_all(&dir).unwrap();

    let bad = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", &url])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&bad.stdout), "405");
}

#[test]
fn fetch_many_runs_the_fetches_concurrently() {
    let out = example_stdout("fetch_many", &["20"]);
    assert!(out.contains("fetched 20 of 20 pages"), "{out}");
    // 20 sequential requests would take 2 s; concurrency means about one request's 100 ms
    // (the bound is loose: 1 s, for a loaded machine).
    assert!(out.contains("concurrent: yes"), "{out}");
}

#[test]
fn echo_bench_runs_a_short_comparison_and_the_idle_check() {
    let out = example_stdout(
        "echo_bench",
        &["run", "--secs", "0.3", "--reps", "1", "--conns", "8", "--servers", "greenfiber,mio"],
    );
    assert!(out.contains("| greenfiber | 8 |") && out.contains("| mio | 8 |"), "{out}");
    let out = example_stdout("echo_bench", &["idle", "200"]);
    assert!(out.contains("served afterwards: 200 of 200"), "{out}");
}
