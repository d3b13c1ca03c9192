//! Hub benchmarks, with tokio (`current_thread`) and may (one worker) measured in the same
//! group: spawn + run + join of 100,000 tasks at once that each yield once, `yield_now`
//! between two tasks, and `yield_now` in turn among 100,000 tasks (whose stacks and records no
//! cache holds: what a program with that many busy tasks asks of the scheduler; may is left
//! out there, as it cannot hold 100k coroutines at once on this machine).
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

/// Tasks that yield in turn, and how many times each (may cannot hold 100k coroutines at
/// once: each is a mapping with a guard page, and `vm.max_map_count` is 65530 here).
const MANY: usize = 100_000;
const TURNS: usize = 10;

/// The locals of each of the few frames a task yields below, as a handler does below its own
/// code (a socket read parks ~400 bytes below the handler's frame).
const FRAME: usize = 100;

#[inline(never)]
fn greenfiber_turns(depth: u32) {
    let frame = [depth as u8; FRAME];
    if depth == 0 {
        (0..TURNS).for_each(|_| greenfiber::yield_now());
    } else {
        greenfiber_turns(std::hint::black_box(depth - 1));
    }
    std::hint::black_box(&frame);
}

fn greenfiber_many(iters: u64) -> Duration {
    let t = Instant::now();
    for _ in 0..iters {
        let gs: Vec<_> = (0..MANY).map(|_| greenfiber::spawn(|| greenfiber_turns(4))).collect();
        assert_eq!(greenfiber::joinall(&gs, None), MANY);
    }
    t.elapsed()
}

fn tokio_many(rt: &tokio::runtime::Runtime, iters: u64) -> Duration {
    rt.block_on(async {
        let t = Instant::now();
        for _ in 0..iters {
            let hs: Vec<_> = (0..MANY)
                .map(|_| {
                    tokio::spawn(async {
                        // The same locals kept across the yields, in the task's future.
                        let frames = [4u8; 5 * FRAME];
                        for _ in 0..TURNS {
                            tokio::task::yield_now().await;
                        }
                        std::hint::black_box(&frames);
                    })
                })
                .collect();
            for h in hs {
                h.await.unwrap();
            }
        }
        t.elapsed()
    })
}

fn yield_many(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let mut g = c.benchmark_group("yield_now in turn, 100k tasks x 10 (spawn and join included)");
    g.sample_size(20);
    g.throughput(Throughput::Elements((MANY * TURNS) as u64));
    g.bench_function("greenfiber", |b| b.iter_custom(greenfiber_many));
    g.bench_function("tokio current_thread", |b| b.iter_custom(|n| tokio_many(&rt, n)));
    g.finish();
}

criterion_group!(benches, spawn_join, yield_now, yield_many);
criterion_main!(benches);
