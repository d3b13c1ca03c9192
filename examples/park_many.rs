//! Parks many fibers in `sleep(60 s)` at once and reports the resident memory each costs, then
//! kills them all.
//!
//! Run: `cargo run --release --example park_many [-- COUNT]` (default 1,000,000)
use std::time::{Duration, Instant};

#[path = "util/proc_status.rs"]
mod proc_status;

use greenfiber::{killall, sleep, spawn, yield_now};

fn main() {
    let count: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let before = proc_status::kib("VmRSS");
    let t = Instant::now();
    let fibers: Vec<_> = (0..count).map(|_| spawn(|| sleep(Duration::from_secs(60)))).collect();
    yield_now(); // every fiber runs once and parks in its sleep
    let parked = t.elapsed();
    let after = proc_status::kib("VmRSS");
    let waiting = fibers.iter().filter(|g| !g.ready()).count();
    println!("parked: {waiting} of {count} fibers in sleep(60 s)");
    println!("time to spawn and park: {:.0} ms", parked.as_secs_f64() * 1e3);
    println!(
        "RSS: {:.0} MiB, {:.2} KiB per parked fiber",
        (after - before) as f64 / 1024.0,
        (after - before) as f64 / count as f64
    );
    let t = Instant::now();
    killall(&fibers);
    println!("killed all in {:.0} ms", t.elapsed().as_secs_f64() * 1e3);
    assert!(fibers.iter().all(|g| g.ready() && !g.successful()));
}
