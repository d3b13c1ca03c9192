//! Layer 1 costs with plain `Instant` loops, printed as Markdown tables: greenfiber next to raw
//! corosensei, then the memory held by live suspended coroutines.
//!
//! Run: `taskset -c 1 cargo run --release --example coroutine_bench`
//! (`-- --quick` for a fast smoke run, `-- --count N` to measure memory at N coroutines only).
//!
//! Each time is the median of 5 runs of N iterations, in nanoseconds per iteration. The memory
//! rows are measured each in a fresh child process (this program re-run with `--rss-child N`):
//! it reads `VmRSS` from `/proc/self/status`, creates N coroutines that each switch back to
//! main once and stay suspended, held in a `Vec`, reads `VmRSS` again and reports the growth per
//! coroutine. Kernel memory (page tables, one VMA per mapping) is not part of `VmRSS`.
//!
//! Before creating the coroutines it checks that their stacks will fit under
//! `vm.max_map_count`: it creates a probe batch, counts the lines of `/proc/self/maps` to see
//! how many mappings one coroutine adds, and prints "skipped: would exceed vm.max_map_count"
//! instead of running into the limit. The estimate is measured, not assumed, so a stack source
//! that carves many stacks out of one mapping passes the check without any change here.

use std::hint::black_box;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::Command;
use std::time::{Duration, Instant};

use corosensei::stack::DefaultStack;
use corosensei::{CoroutineResult, Yielder};
use greenfiber::{Coroutine, current};

#[path = "util/suspended.rs"]
mod suspended;
use suspended::suspended;

/// greenfiber's default usable stack size, used for the corosensei stacks too.
const STACK_SIZE: usize = 256 * 1024;
/// Timed runs per measurement; the median is reported.
const RUNS: usize = 5;
/// Coroutines in the probe batch that measures mappings per coroutine.
const PROBE: usize = 1000;
/// Mappings kept free for everything else the process maps (heap growth, libraries).
const MAP_SLACK: usize = 512;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, n] = args.as_slice()
        && flag == "--rss-child"
    {
        rss_child(n.parse().expect("--rss-child N"));
        return;
    }
    let mut quick = false;
    let mut counts = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--count" => {
                let n = it.next().and_then(|n| n.replace('_', "").parse().ok());
                counts = Some(vec![n.expect("--count N: a number of coroutines")]);
            }
            _ => {
                eprintln!("usage: coroutine_bench [--quick] [--count N]");
                std::process::exit(2);
            }
        }
    }
    let counts = counts.unwrap_or(if quick { vec![1_000] } else { vec![100_000, 1_000_000] });
    let scale = if quick { 1 } else { 100 };

    let n_switch = 10_000 * scale;
    let n_create = 2_000 * scale;
    let n_kill = 1_000 * scale;
    println!(
        "Median of {RUNS} runs; N = {n_switch} round trips, {n_create} creations, {n_kill} kills."
    );
    println!();
    println!("| measurement | greenfiber ns | corosensei ns | ratio |");
    println!("|---|---:|---:|---:|");
    let (gf, raw) = (gf_round_trip(n_switch), raw_round_trip(n_switch));
    row("switch round trip A→B→A (u64)", gf, Some(raw));
    let gf = gf_create_run_drop(n_create);
    let reused = raw_create_run_drop(n_create, true);
    let fresh = raw_create_run_drop(n_create, false);
    row("create + switch + finish + drop (corosensei: reused stack)", gf, Some(reused));
    row("create + switch + finish + drop (corosensei: fresh DefaultStack)", gf, Some(fresh));
    row("kill a suspended coroutine (create, start, kill)", gf_kill(n_kill, false), None);
    row(
        "throw, uncaught, into a suspended coroutine (create, start, throw)",
        gf_kill(n_kill, true),
        None,
    );

    println!();
    println!(
        "| live suspended coroutines | create + start, total | per coroutine | VmRSS growth | KiB per coroutine | drop (kill) per coroutine |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for n in counts {
        rss_row(n);
    }
}

fn row(what: &str, gf: f64, raw: Option<f64>) {
    match raw {
        Some(raw) => println!("| {what} | {gf:.1} | {raw:.1} | {:.2} |", gf / raw),
        None => println!("| {what} | {gf:.1} | — | — |"),
    }
}

/// Nanoseconds per iteration: the median of `RUNS` timed calls of `run(iters)`.
fn median_ns(iters: u64, mut run: impl FnMut(u64)) -> f64 {
    run(iters / 10 + 1); // warm up
    let mut t: Vec<f64> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            run(iters);
            start.elapsed().as_nanos() as f64 / iters as f64
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[RUNS / 2]
}

fn gf_round_trip(iters: u64) -> f64 {
    // Bind the parent first: a `current()` temporary held across the switch would keep this
    // coroutine alive through a handle on its own stack.
    let echo = Coroutine::new(|mut x: u64| {
        let main = current().parent().unwrap();
        loop {
            x = main.switch(x + 1);
        }
    });
    let mut x = 0u64;
    median_ns(iters, |n| {
        for _ in 0..n {
            x = echo.switch(black_box(x));
        }
    })
}

fn raw_round_trip(iters: u64) -> f64 {
    let mut echo = corosensei::Coroutine::<u64, u64, (), DefaultStack>::with_stack(
        DefaultStack::new(STACK_SIZE).unwrap(),
        |y: &Yielder<u64, u64>, mut x: u64| loop {
            x = y.suspend(x + 1);
        },
    );
    let mut x = 0u64;
    median_ns(iters, |n| {
        for _ in 0..n {
            match echo.resume(black_box(x)) {
                CoroutineResult::Yield(v) => x = v,
                CoroutineResult::Return(()) => unreachable!(),
            }
        }
    })
}

fn gf_create_run_drop(iters: u64) -> f64 {
    median_ns(iters, |n| {
        for i in 0..n {
            let co = Coroutine::new(|x: u64| x + 1);
            let r: u64 = co.switch(black_box(i));
            drop(black_box(co));
            black_box(r);
        }
    })
}

fn raw_create_run_drop(iters: u64, reuse: bool) -> f64 {
    let mut stack = Some(DefaultStack::new(STACK_SIZE).unwrap());
    median_ns(iters, |n| {
        for i in 0..n {
            let s =
                if reuse { stack.take().unwrap() } else { DefaultStack::new(STACK_SIZE).unwrap() };
            let mut co = corosensei::Coroutine::with_stack(s, |_: &Yielder<u64, ()>, x: u64| x + 1);
            black_box(co.resume(black_box(i)).as_return().unwrap());
            if reuse {
                stack = Some(co.into_stack());
            }
        }
    })
}

/// The payload of an uncaught `throw`.
struct Boom;

fn gf_kill(iters: u64, throw: bool) -> f64 {
    median_ns(iters, |n| {
        for _ in 0..n {
            let co = suspended();
            if throw {
                let r = catch_unwind(AssertUnwindSafe(|| co.throw(Boom)));
                assert!(r.unwrap_err().is::<Boom>());
            } else {
                co.kill();
            }
            debug_assert!(co.is_dead());
        }
    })
}

/// One row of the memory table, measured in a child process so that no earlier row's freed
/// memory is reused and hides growth.
fn rss_row(n: usize) {
    let exe = std::env::current_exe().expect("own path");
    let out = Command::new(exe).args(["--rss-child", &n.to_string()]).output();
    let text = match &out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        Ok(o) => format!(
            "failed: {} ({})",
            o.status,
            String::from_utf8_lossy(&o.stderr).lines().last().unwrap_or("")
        ),
        Err(e) => format!("failed: {e}"),
    };
    let f: Vec<&str> = text.split_whitespace().collect();
    match f.as_slice() {
        ["ok", create_ns, before, after, drop_ns] => {
            let p = |s: &str| s.parse::<f64>().unwrap();
            let (create_ns, before, after, drop_ns) =
                (p(create_ns), p(before), p(after), p(drop_ns));
            let n_f = n as f64;
            println!(
                "| {n} | {:.1} ms | {:.0} ns | {:.1} MiB | {:.2} | {:.0} ns |",
                create_ns / 1e6,
                create_ns / n_f,
                (after - before) / 1024.0,
                (after - before) / n_f,
                drop_ns / n_f
            );
        }
        _ => println!("| {n} | {text} | | | | |"),
    }
}

/// The child side of [`rss_row`]: prints `ok <create ns> <VmRSS before KiB> <VmRSS after KiB>
/// <drop ns>`, or the reason it did not measure.
fn rss_child(n: usize) {
    let before = vm_rss_kib().expect("VmRSS in /proc/self/status");
    let limit = read_usize("/proc/sys/vm/max_map_count");

    // The probe: how many mappings does one live suspended coroutine add?
    let probe_n = PROBE.min(n);
    let maps0 = map_count();
    let probe: Vec<Coroutine> = (0..probe_n).map(|_| suspended()).collect();
    let maps1 = map_count();
    if let (Some(limit), Some(m0), Some(m1)) = (limit, maps0, maps1) {
        let per = m1.saturating_sub(m0) as f64 / probe_n as f64;
        let need = m0 + (per * n as f64).ceil() as usize + MAP_SLACK;
        if need > limit {
            println!(
                "skipped: would exceed vm.max_map_count ({limit} maps; about {need} needed at {per:.2} per coroutine)"
            );
            return;
        }
    }
    drop(probe);

    let mut live = Vec::with_capacity(n);
    let start = Instant::now();
    let r = catch_unwind(AssertUnwindSafe(|| {
        for _ in 0..n {
            live.push(suspended());
        }
    }));
    let create = start.elapsed();
    if r.is_err() {
        println!("failed after {} coroutines (see stderr)", live.len());
        return;
    }
    let after = vm_rss_kib().expect("VmRSS in /proc/self/status");
    let start = Instant::now();
    drop(live);
    let kill = start.elapsed();
    println!("ok {} {before} {after} {}", ns(create), ns(kill));
}

fn ns(d: Duration) -> u128 {
    d.as_nanos()
}

/// `VmRSS` of this process in KiB.
fn vm_rss_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Number of mappings of this process (lines of `/proc/self/maps`).
fn map_count() -> Option<usize> {
    Some(std::fs::read_to_string("/proc/self/maps").ok()?.lines().count())
}

fn read_usize(path: &str) -> Option<usize> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}
