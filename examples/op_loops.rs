//! One operation in a tight loop, for instruction counts that do not depend on the host: the
//! loops behind the callgrind figures in README's Performance section and `benches/RESULTS-*`
//! (where they appear as `sw N OP`, the scratch driver this example replaces).
//!
//! ```sh
//! cargo build --release --example op_loops
//! valgrind --tool=callgrind target/release/examples/op_loops 1000000 rt   # Ir / N per op
//! target/release/examples/op_loops 2000000 yield                          # wall time per op
//! ```
//!
//! `OP` is one of:
//! - `rt`: a Layer 1 switch round trip A→B→A carrying a `u64`;
//! - `corosensei`: the same round trip on raw corosensei (resume + suspend), for the ratio;
//! - `create`: create a coroutine, switch into it, it returns, drop it (pooled stack);
//! - `yield`: two fibers alternating `yield_now` (N yields in all);
//! - `queue`: a `Queue` ping-pong between main and a fiber (N round trips);
//! - `spawn`: spawn N fibers that each yield once, then join them all;
//! - `spawn100`: the same in batches of 100 (stacks, cores and allocations come back warm).
//!
//! Prints `OP: T ns/op`.
use std::hint::black_box;
use std::rc::Rc;

use greenfiber::sync::Queue;
use greenfiber::{Coroutine, current, joinall, spawn, yield_now};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (n, op) = match args.as_slice() {
        [n, op] => (n.parse::<u64>().expect("N is a number"), op.as_str()),
        _ => {
            eprintln!("usage: op_loops N rt|corosensei|create|yield|queue|spawn|spawn100");
            std::process::exit(2);
        }
    };
    let t = std::time::Instant::now();
    match op {
        "rt" => {
            let main = current();
            let c = Coroutine::new(move |mut x: u64| {
                loop {
                    x = main.switch(x + 1);
                }
            });
            let mut x = 0u64;
            for _ in 0..n {
                x = c.switch(black_box(x));
            }
            black_box(x);
        }
        "corosensei" => {
            let mut c = corosensei::Coroutine::new(|y: &corosensei::Yielder<u64, u64>, mut x| {
                loop {
                    x = y.suspend(x + 1);
                }
            });
            let mut x = 0u64;
            for _ in 0..n {
                x = match c.resume(black_box(x)) {
                    corosensei::CoroutineResult::Yield(v) => v,
                    corosensei::CoroutineResult::Return(()) => unreachable!(),
                };
            }
            black_box(x);
        }
        "create" => {
            for i in 0..n {
                let c = Coroutine::new(|x: u64| x + 1);
                let r: u64 = c.switch(black_box(i));
                black_box(r);
            }
        }
        "yield" => {
            let gs: Vec<_> =
                (0..2).map(|_| spawn(move || (0..n / 2).for_each(|_| yield_now()))).collect();
            joinall(&gs, None);
        }
        "queue" => {
            let (a, b) = (Rc::new(Queue::<u64>::new()), Rc::new(Queue::<u64>::new()));
            let (a2, b2) = (a.clone(), b.clone());
            let g = spawn(move || {
                for _ in 0..n {
                    let v = a2.get();
                    b2.put(v + 1);
                }
            });
            let mut x = 0;
            for _ in 0..n {
                a.put(black_box(x));
                x = b.get();
            }
            g.join();
        }
        "spawn" => {
            let gs: Vec<_> = (0..n)
                .map(|i| {
                    spawn(move || {
                        yield_now();
                        i
                    })
                })
                .collect();
            joinall(&gs, None);
        }
        "spawn100" => {
            for b in 0..n / 100 {
                let gs: Vec<_> = (0..100)
                    .map(|i| {
                        spawn(move || {
                            yield_now();
                            b + i
                        })
                    })
                    .collect();
                joinall(&gs, None);
            }
        }
        other => {
            eprintln!("unknown OP {other:?}: rt|corosensei|create|yield|queue|spawn|spawn100");
            std::process::exit(2);
        }
    }
    println!("{op}: {:.1} ns/op", t.elapsed().as_nanos() as f64 / n as f64);
}
