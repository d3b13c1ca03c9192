//! Spawns many fibers that each sleep a random few milliseconds, joins them all, and prints the
//! elapsed time, fibers per second and peak RSS.
//!
//! Run: `cargo run --release --example spawn_many [-- COUNT]` (default 100,000)
use std::time::{Duration, Instant};

#[path = "util/proc_status.rs"]
mod proc_status;

use greenfiber::{joinall, sleep, spawn};

fn main() {
    let count: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    // A small xorshift generator: random enough for sleep lengths, no dependency.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let start = Instant::now();
    let fibers: Vec<_> = (0..count)
        .map(|i| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let ms = 1 + seed % 10;
            spawn(move || {
                sleep(Duration::from_millis(ms));
                i
            })
        })
        .collect();
    let done = joinall(&fibers, None);
    let elapsed = start.elapsed();
    let sum: usize = fibers.iter().map(|g| g.get().unwrap()).sum();
    assert_eq!(sum, count * (count.saturating_sub(1)) / 2);
    println!("fibers: {done} of {count} finished");
    println!("elapsed: {:.1} ms", elapsed.as_secs_f64() * 1e3);
    println!("fibers per second: {:.0}", done as f64 / elapsed.as_secs_f64());
    println!("peak RSS: {} KiB", proc_status::kib("VmHWM"));
}
