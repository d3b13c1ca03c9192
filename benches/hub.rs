//! Hub benchmarks, with tokio (`current_thread`) and may (one worker) measured in the same
//! group: spawn + run + join of 100,000 tasks at once that each yield once, and `yield_now`
//! between two tasks.
//!
//! Criterion repeats each batch, so this is the steady state of a program that keeps
//! spawning: stacks, task records and allocator pages are warm. A process's first batch pays
//! one page fault per fiber stack on top (`cargo run --release --example peers_hub` shows
//! both). may cannot hold more than ~32k coroutines here (`vm.max_map_count`), but 100k that
//! finish as they go fit: its spawns run while main still spawns.
//!
//! Run: `taskset -c 1 cargo bench --bench hub -- --warm-up-time 1 --measurement-time 5`
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// Tasks per batch: spawned at once, then joined.
const BATCH: usize = 100_000;

fn greenfiber_spawn(iters: u64) -> Duration {
    let t = Instant::now();
    for _ in 0..iters {
        let gs: Vec<_> = (0..BATCH).map(|_| greenfiber::spawn(greenfiber::yield_now)).collect();
        assert_eq!(greenfiber::joinall(&gs, None), BATCH);
    }
    t.elapsed()
}

fn tokio_spawn(rt: &tokio::runtime::Runtime, iters: u64) -> Duration {
    rt.block_on(async {
        let t = Instant::now();
        for _ in 0..iters {
            let hs: Vec<_> = (0..BATCH).map(|_| tokio::spawn(tokio::task::yield_now())).collect();
            for h in hs {
                h.await.unwrap();
            }
        }
        t.elapsed()
    })
}

fn may_spawn(iters: u64) -> Duration {
    let t = Instant::now();
    for _ in 0..iters {
        let hs: Vec<_> = (0..BATCH).map(|_| may::go!(may::coroutine::yield_now)).collect();
        for h in hs {
            h.join().unwrap();
        }
    }
    t.elapsed()
}

fn spawn_join(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    may::config().set_workers(1);
    let mut g = c.benchmark_group("spawn + yield once + join, 100k at once");
    g.sample_size(10);
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("greenfiber", |b| b.iter_custom(greenfiber_spawn));
    g.bench_function("tokio current_thread", |b| b.iter_custom(|n| tokio_spawn(&rt, n)));
    g.bench_function("may (1 worker)", |b| b.iter_custom(may_spawn));
    g.finish();
}

fn greenfiber_yield(iters: u64) -> Duration {
    let half = iters.div_ceil(2);
    let gs: Vec<_> = (0..2)
        .map(|_| greenfiber::spawn(move || (0..half).for_each(|_| greenfiber::yield_now())))
        .collect();
    let t = Instant::now();
    greenfiber::joinall(&gs, None);
    t.elapsed()
}

fn tokio_yield(rt: &tokio::runtime::Runtime, iters: u64) -> Duration {
    let half = iters.div_ceil(2);
    rt.block_on(async {
        let t = Instant::now();
        let hs: Vec<_> = (0..2)
            .map(|_| {
                tokio::spawn(async move {
                    for _ in 0..half {
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        for h in hs {
            h.await.unwrap();
        }
        t.elapsed()
    })
}

fn may_yield(iters: u64) -> Duration {
    let half = iters.div_ceil(2);
    let t = Instant::now();
    let hs: Vec<_> = (0..2)
        .map(|_| may::go!(move || (0..half).for_each(|_| may::coroutine::yield_now())))
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    t.elapsed()
}

fn yield_now(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    may::config().set_workers(1);
    let mut g = c.benchmark_group("yield_now, two tasks alternating");
    g.bench_function("greenfiber", |b| b.iter_custom(greenfiber_yield));
    g.bench_function("tokio current_thread", |b| b.iter_custom(|n| tokio_yield(&rt, n)));
    g.bench_function("may (1 worker)", |b| b.iter_custom(may_yield));
    g.finish();
}

criterion_group!(benches, spawn_join, yield_now);
criterion_main!(benches);
