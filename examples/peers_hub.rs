//! The hub against its peers, in one run: spawn+join, `yield_now`, and resident memory per
//! parked task, for greenfiber, tokio (current_thread) and may (one worker).
//!
//! Run: `cargo run --release --example peers_hub` (add `-- --quick` for a small, fast run).
//! The spawn test runs twice: in a fresh process, where each stackful fiber's first page fault
//! dominates, and again in the same process once memory is warm.
//! Each figure comes from its own child process (`peers_hub RUNTIME TEST N`), so memory is
//! measured in isolation; a child that fails (may cannot hold more than ~32k coroutines under
//! `vm.max_map_count` = 65530, and hangs past it) is reported as `failed`.
use std::process::Command;
use std::time::{Duration, Instant};

#[path = "util/proc_status.rs"]
mod proc_status;

const RUNTIMES: [&str; 3] = ["greenfiber", "tokio", "may"];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() == 3 {
        let n: usize = args[2].parse().expect("N");
        let figure = run(&args[0], &args[1], n);
        println!("{figure:.2}");
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let (spawn_n, yield_n, park_counts): (usize, usize, Vec<usize>) = if quick {
        (2_000, 20_000, vec![2_000])
    } else {
        (100_000, 2_000_000, vec![100_000, 1_000_000])
    };
    let mut rows = vec![
        (format!("spawn + yield once + join, {spawn_n} tasks (ns/task)"), "spawn", spawn_n),
        ("the same, second round in the same process (ns/task)".to_owned(), "spawn-warm", spawn_n),
        (format!("yield_now, 2 tasks x {yield_n} (ns/yield)"), "yield", yield_n),
    ];
    for n in park_counts {
        rows.push((format!("RSS per task parked in a 60 s sleep, {n} tasks (KiB)"), "park", n));
    }
    println!(
        "| measurement | greenfiber | tokio current_thread | may (1 worker) | greenfiber / tokio | greenfiber / may |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for (label, test, n) in rows {
        let figs: Vec<Option<f64>> = RUNTIMES.iter().map(|rt| child(rt, test, n)).collect();
        let show = |f: &Option<f64>| f.map_or("failed".to_owned(), |v| format!("{v:.2}"));
        let ratio = |a: &Option<f64>, b: &Option<f64>| match (a, b) {
            (Some(a), Some(b)) if *b > 0.0 => format!("{:.2}", a / b),
            _ => "-".to_owned(),
        };
        println!(
            "| {label} | {} | {} | {} | {} | {} |",
            show(&figs[0]),
            show(&figs[1]),
            show(&figs[2]),
            ratio(&figs[0], &figs[1]),
            ratio(&figs[0], &figs[2])
        );
    }
}

/// Runs one measurement in a child process; `None` if it failed or took over two minutes
/// (may, at counts past its map-count limit, hangs instead of failing).
fn child(runtime: &str, test: &str, n: usize) -> Option<f64> {
    let mut c = Command::new(std::env::current_exe().ok()?)
        .args([runtime, test, &n.to_string()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let start = Instant::now();
    loop {
        match c.try_wait().ok()? {
            Some(status) if status.success() => break,
            Some(_) => return None,
            None if start.elapsed() > Duration::from_secs(120) => {
                let _ = c.kill();
                let _ = c.wait();
                return None;
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    let mut out = String::new();
    std::io::Read::read_to_string(&mut c.stdout.take()?, &mut out).ok()?;
    out.trim().parse().ok()
}

fn per(d: Duration, n: usize) -> f64 {
    d.as_nanos() as f64 / n as f64
}

fn rss_per(before: u64, n: usize) -> f64 {
    (proc_status::kib("VmRSS").saturating_sub(before)) as f64 / n as f64
}

fn run(runtime: &str, test: &str, n: usize) -> f64 {
    if test == "spawn-warm" {
        // The first round leaves memory mapped and touched (stacks, allocator pages, task
        // pools); the second shows the cost once a long-running program has warmed up.
        run(runtime, "spawn", n);
        return run(runtime, "spawn", n);
    }
    match runtime {
        "greenfiber" => greenfiber_run(test, n),
        "tokio" => tokio_run(test, n),
        "may" => may_run(test, n),
        other => panic!("unknown runtime {other}"),
    }
}

fn greenfiber_run(test: &str, n: usize) -> f64 {
    use greenfiber::{joinall, sleep, spawn, yield_now};
    match test {
        "spawn" => {
            let t = Instant::now();
            let gs: Vec<_> = (0..n).map(|_| spawn(yield_now)).collect();
            joinall(&gs, None);
            per(t.elapsed(), n)
        }
        "yield" => {
            let gs: Vec<_> =
                (0..2).map(|_| spawn(move || (0..n).for_each(|_| yield_now()))).collect();
            let t = Instant::now();
            joinall(&gs, None);
            per(t.elapsed(), 2 * n)
        }
        "park" => {
            let before = proc_status::kib("VmRSS");
            let _gs: Vec<_> = (0..n).map(|_| spawn(|| sleep(Duration::from_secs(60)))).collect();
            yield_now();
            let r = rss_per(before, n);
            std::process::exit(print_and_exit(r));
        }
        _ => unreachable!(),
    }
}

fn tokio_run(test: &str, n: usize) -> f64 {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    match test {
        "spawn" => rt.block_on(async {
            let t = Instant::now();
            let hs: Vec<_> = (0..n).map(|_| tokio::spawn(tokio::task::yield_now())).collect();
            for h in hs {
                h.await.unwrap();
            }
            per(t.elapsed(), n)
        }),
        "yield" => rt.block_on(async {
            let t = Instant::now();
            let hs: Vec<_> = (0..2)
                .map(|_| {
                    tokio::spawn(async move {
                        for _ in 0..n {
                            tokio::task::yield_now().await
                        }
                    })
                })
                .collect();
            for h in hs {
                h.await.unwrap();
            }
            per(t.elapsed(), 2 * n)
        }),
        "park" => rt.block_on(async {
            let before = proc_status::kib("VmRSS");
            for _ in 0..n {
                tokio::spawn(tokio::time::sleep(Duration::from_secs(60)));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            let r = rss_per(before, n);
            std::process::exit(print_and_exit(r));
        }),
        _ => unreachable!(),
    }
}

fn may_run(test: &str, n: usize) -> f64 {
    may::config().set_workers(1);
    match test {
        "spawn" => {
            let t = Instant::now();
            let hs: Vec<_> = (0..n).map(|_| may::go!(may::coroutine::yield_now)).collect();
            for h in hs {
                h.join().unwrap();
            }
            per(t.elapsed(), n)
        }
        "yield" => {
            let t = Instant::now();
            let hs: Vec<_> = (0..2)
                .map(|_| may::go!(move || (0..n).for_each(|_| may::coroutine::yield_now())))
                .collect();
            for h in hs {
                h.join().unwrap();
            }
            per(t.elapsed(), 2 * n)
        }
        "park" => {
            let before = proc_status::kib("VmRSS");
            for _ in 0..n {
                may::go!(|| may::coroutine::sleep(Duration::from_secs(60)));
            }
            std::thread::sleep(Duration::from_millis(500));
            let r = rss_per(before, n);
            std::process::exit(print_and_exit(r));
        }
        _ => unreachable!(),
    }
}

/// Prints a figure for the parent and gives the exit code (tasks are left parked: exiting the
/// process is the quickest way to drop them all).
fn print_and_exit(figure: f64) -> i32 {
    println!("{figure:.2}");
    0
}
