//! Quick figures for the hub: spawn+join of fibers that yield once, and yield_now.
//!
//! Run: `cargo run --release --example hub_bench [-- --quick]`
use std::time::Instant;

use greenfiber::{joinall, spawn, yield_now};

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let n = if quick { 1_000 } else { 100_000 };
    for round in 0..3 {
        let t = Instant::now();
        let gs: Vec<_> = (0..n).map(|_| spawn(yield_now)).collect();
        let spawned = t.elapsed();
        joinall(&gs, None);
        let total = t.elapsed();
        println!(
            "round {round}: spawn {:.0} ns/fiber, spawn+run+join {:.0} ns/fiber",
            spawned.as_nanos() as f64 / n as f64,
            total.as_nanos() as f64 / n as f64
        );
    }
    // The same in batches of 100: stacks stay warm in the cache and come back from the pool.
    let t = Instant::now();
    for _ in 0..n / 100 {
        let gs: Vec<_> = (0..100).map(|_| spawn(yield_now)).collect();
        joinall(&gs, None);
    }
    println!(
        "batches of 100: spawn+run+join {:.0} ns/fiber",
        t.elapsed().as_nanos() as f64 / n as f64
    );
    let gs: Vec<_> = (0..2)
        .map(|_| {
            spawn(move || {
                for _ in 0..n {
                    yield_now()
                }
            })
        })
        .collect();
    let t = Instant::now();
    joinall(&gs, None);
    println!(
        "yield_now with one other fiber ready: {:.1} ns",
        t.elapsed().as_nanos() as f64 / (2 * n) as f64
    );
}
