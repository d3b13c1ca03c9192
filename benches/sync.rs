//! Sync benchmarks: a put/get ping-pong round trip between two fibers over two queues, with
//! may (one worker, `may::sync::mpsc`) and tokio (`current_thread`, `tokio::sync::mpsc`)
//! measured in the same group; and the uncontended `Lock` acquire/release pair.
//!
//! What it is not: a contended or cross-thread measure. Every round trip is two switches
//! through the hub (ping fiber → echo fiber → ping fiber), so it is bounded below by the switch
//! path, which is optimized separately.
//!
//! `wait list departure` is a scaling check: one waiter joins a wait list behind 0 or 10,000
//! others and leaves it from the tail (greenfiber: an `Event::wait_timeout(ZERO)` that times
//! out; tokio: a task aborted while it awaits `Notify::notified()`). Each runtime should cost
//! the same at both lengths; the two runtimes' departures are different operations.
//!
//! Run: `taskset -c 1 cargo bench --bench sync -j 1 -- --warm-up-time 1 --measurement-time 3`
use std::hint::black_box;
use std::rc::Rc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use greenfiber::sync::{Event, Lock, Queue, Semaphore};

const STOP: u64 = u64::MAX;

fn greenfiber_ping_pong(iters: u64) -> Duration {
    let (to_echo, from_echo) = (Rc::new(Queue::new()), Rc::new(Queue::new()));
    let (rx, tx) = (to_echo.clone(), from_echo.clone());
    let echo = greenfiber::spawn(move || {
        loop {
            let v: u64 = rx.get();
            if v == STOP {
                break;
            }
            tx.put(v + 1);
        }
    });
    // Let the echo fiber start and park in `get`.
    greenfiber::yield_now();
    let start = Instant::now();
    for i in 0..iters {
        to_echo.put(i);
        black_box(from_echo.get());
    }
    let elapsed = start.elapsed();
    to_echo.put(STOP);
    echo.join();
    elapsed
}

fn may_ping_pong(iters: u64) -> Duration {
    let h = may::go!(move || {
        let (to_echo, rx) = may::sync::mpsc::channel::<u64>();
        let (tx, from_echo) = may::sync::mpsc::channel::<u64>();
        let echo = may::go!(move || {
            while let Ok(v) = rx.recv() {
                if v == STOP {
                    break;
                }
                tx.send(v + 1).unwrap();
            }
        });
        may::coroutine::yield_now();
        let start = Instant::now();
        for i in 0..iters {
            to_echo.send(i).unwrap();
            black_box(from_echo.recv().unwrap());
        }
        let elapsed = start.elapsed();
        to_echo.send(STOP).unwrap();
        echo.join().unwrap();
        elapsed
    });
    h.join().unwrap()
}

fn tokio_ping_pong(rt: &tokio::runtime::Runtime, iters: u64) -> Duration {
    rt.block_on(async move {
        let (to_echo, mut rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
        let (tx, mut from_echo) = tokio::sync::mpsc::unbounded_channel::<u64>();
        let echo = tokio::spawn(async move {
            while let Some(v) = rx.recv().await {
                if v == STOP {
                    break;
                }
                tx.send(v + 1).unwrap();
            }
        });
        tokio::task::yield_now().await;
        let start = Instant::now();
        for i in 0..iters {
            to_echo.send(i).unwrap();
            black_box(from_echo.recv().await.unwrap());
        }
        let elapsed = start.elapsed();
        to_echo.send(STOP).unwrap();
        echo.await.unwrap();
        elapsed
    })
}

fn ping_pong(c: &mut Criterion) {
    may::config().set_workers(1);
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let mut g = c.benchmark_group("queue ping-pong round trip");
    g.bench_function("greenfiber Queue", |b| b.iter_custom(greenfiber_ping_pong));
    g.bench_function("may mpsc (1 worker)", |b| b.iter_custom(may_ping_pong));
    g.bench_function("tokio current_thread mpsc", |b| b.iter_custom(|n| tokio_ping_pong(&rt, n)));
    g.finish();
}

fn uncontended(c: &mut Criterion) {
    let mut g = c.benchmark_group("uncontended");
    let lock = Lock::new();
    g.bench_function("Lock acquire+release", |b| {
        b.iter(|| {
            black_box(&lock).acquire();
            black_box(&lock).release().unwrap();
        })
    });
    let sem = Semaphore::new(1);
    g.bench_function("Semaphore try_acquire+release", |b| {
        b.iter(|| {
            black_box(black_box(&sem).try_acquire());
            black_box(&sem).release();
        })
    });
    let q = Queue::new();
    g.bench_function("Queue put+get (no wait)", |b| {
        b.iter(|| {
            black_box(&q).put(black_box(1u64));
            black_box(black_box(&q).get());
        })
    });
    g.finish();
}

fn greenfiber_leave_from_tail(ahead: usize, iters: u64) -> Duration {
    let ev = Rc::new(Event::new());
    let parked: Vec<_> = (0..ahead)
        .map(|_| {
            let ev = ev.clone();
            greenfiber::spawn(move || ev.wait())
        })
        .collect();
    greenfiber::yield_now();
    assert_eq!(ev.waiting(), ahead);
    let start = Instant::now();
    for _ in 0..iters {
        // Joins the list behind `ahead` others; its timer fires on the hub's next pass and it
        // leaves from the tail.
        assert!(!ev.wait_timeout(Duration::ZERO));
    }
    let elapsed = start.elapsed();
    assert_eq!(ev.waiting(), ahead);
    ev.set();
    greenfiber::joinall(&parked, None);
    elapsed
}

fn tokio_leave_from_tail(rt: &tokio::runtime::Runtime, ahead: usize, iters: u64) -> Duration {
    rt.block_on(async {
        let notify = std::sync::Arc::new(tokio::sync::Notify::new());
        let parked: Vec<_> = (0..ahead)
            .map(|_| {
                let n = notify.clone();
                tokio::spawn(async move { n.notified().await })
            })
            .collect();
        tokio::task::yield_now().await;
        let start = Instant::now();
        for _ in 0..iters {
            // A task that registers behind `ahead` others, then is aborted: dropping its
            // `Notified` unlinks it.
            let n = notify.clone();
            let h = tokio::spawn(async move { n.notified().await });
            tokio::task::yield_now().await;
            h.abort();
            let _ = h.await;
        }
        let elapsed = start.elapsed();
        notify.notify_waiters();
        for p in parked {
            p.await.unwrap();
        }
        elapsed
    })
}

fn wait_list_departure(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let mut g = c.benchmark_group("wait list departure from the tail");
    for ahead in [0, 10_000] {
        g.bench_function(format!("greenfiber Event timeout, {ahead} ahead"), |b| {
            b.iter_custom(|n| greenfiber_leave_from_tail(ahead, n))
        });
        g.bench_function(format!("tokio Notify abort, {ahead} ahead"), |b| {
            b.iter_custom(|n| tokio_leave_from_tail(&rt, ahead, n))
        });
    }
    g.finish();
}

criterion_group!(benches, ping_pong, uncontended, wait_list_departure);
criterion_main!(benches);
