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
    assert_eq!(out.matches("round ").count(), 3, "{out}");
    assert!(out.contains("batches of 100"), "{out}");
    assert!(out.contains("yield_now"), "{out}");
}

#[test]
fn park_many_parks_and_kills_every_fiber() {
    let out = example_stdout("park_many", &["3000"]);
    assert!(out.contains("parked: 3000 of 3000 fibers"), "{out}");
    assert!(out.contains("KiB per parked fiber"), "{out}");
}

#[test]
fn peers_hub_prints_a_row_per_measurement() {
    let out = example_stdout("peers_hub", &["--quick"]);
    assert!(out.contains("| spawn + yield once + join"), "{out}");
    assert!(out.contains("| yield_now"), "{out}");
    assert!(out.contains("| RSS per task parked"), "{out}");
}

#[test]
fn coroutine_bench_quick_prints_both_tables() {
    let out = example_stdout("coroutine_bench", &["--quick"]);
    let rows: Vec<&str> = out.lines().filter(|l| l.starts_with("| ")).collect();
    for label in [
        "| measurement | greenfiber ns | corosensei ns | ratio |",
        "| switch round trip A→B→A (u64) |",
        "| create + switch + finish + drop (corosensei: reused stack) |",
        "| create + switch + finish + drop (corosensei: fresh DefaultStack) |",
        "| kill a suspended coroutine (create, start, kill) |",
        "| throw, uncaught, into a suspended coroutine (create, start, throw) |",
        "| live suspended coroutines |",
    ] {
        assert!(rows.iter().any(|r| r.starts_with(label)), "no row {label:?} in:\n{out}");
    }
    // The quick memory row either measured 1000 coroutines (5 filled cells) or said why not.
    let mem = rows.iter().find(|r| r.starts_with("| 1000 |")).expect("no memory row for 1000");
    let cells: Vec<&str> = mem.trim_matches('|').split('|').map(str::trim).collect();
    assert!(
        cells[1..].iter().all(|c| !c.is_empty()) || cells[1].starts_with("skipped:"),
        "memory row neither measured nor skipped: {mem}"
    );
}

#[test]
fn producer_consumer_moves_every_job_through_the_bounded_queue() {
    let out = example_stdout("producer_consumer", &[]);
    assert_eq!(out.matches("produced").count(), 6, "{out}");
    assert_eq!(out.matches(" got ").count(), 6, "{out}");
    let jobs: Vec<u32> =
        out.lines().filter_map(|l| l.split(" got ").nth(1)).map(|n| n.parse().unwrap()).collect();
    assert_eq!(jobs, [1, 2, 3, 4, 5, 6], "{out}"); // FIFO across both consumers
    assert!(out.ends_with("consumed 6 jobs\n"), "{out}");
}

#[test]
fn event_workers_are_released_together() {
    let out = example_stdout("event_workers", &[]);
    assert_eq!(
        out,
        "worker 1 waiting\nworker 2 waiting\nworker 3 waiting\nsetting the event\n\
         worker 1 released\nworker 2 released\nworker 3 released\nall workers done\n"
    );
}

#[test]
fn semaphore_section_admits_at_most_two() {
    let out = example_stdout("semaphore_section", &[]);
    assert_eq!(out.matches("enters").count(), 5, "{out}");
    assert!(!out.contains("(3 inside)"), "{out}");
    assert!(out.ends_with("at most 2 inside at once\n"), "{out}");
}

#[test]
fn priority_queue_drains_smallest_first() {
    let out = example_stdout("priority_queue", &[]);
    assert_eq!(out, "1: fix outage\n2: review PR\n3: write report\n4: lunch\nleft: 0\n");
}

#[test]
fn blocking_call_runs_beside_a_ticking_fiber() {
    let out = example_stdout("blocking_call", &[]);
    assert_eq!(out, "blocking call returned 42\nticker kept running: yes\n");
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
    assert!(out.contains("binary line echoed: true\n"), "{out}");
    assert_eq!(out.matches("New connection from").count(), 4, "{out}");
    assert!(out.ends_with("selftest ok\n"), "{out}");
}

#[test]
fn chat_server_broadcasts_whole_lines_and_survives_an_abrupt_half_line_and_a_reader_that_never_reads()
 {
    let out = example_stdout("chat_server", &["--selftest"]);
    let want = "B saw: * B joined\nB saw: * C joined\nB saw: * C left\nB saw: A: hello from A\n\
                B saw: B: hi A, B here\nB saw: * A left\nB saw: (A heard: B: hi A, B here)\n\
                B got 5000 of 5000 long lines from A, 0 garbled; D, never reading, was \
                disconnected: true\nclients left on the server: 0\n";
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

#[test]
fn op_loops_runs_every_operation() {
    for op in ["rt", "corosensei", "create", "yield", "queue", "spawn"] {
        let out = example_stdout("op_loops", &["1000", op]);
        assert!(out.starts_with(&format!("{op}: ")) && out.ends_with(" ns/op\n"), "{out}");
    }
}
