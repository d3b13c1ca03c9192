//! Layer 1 switch costs, with raw corosensei measured in the same group for the ratio.
//!
//! Run: `taskset -c 1 cargo bench --bench switch -j 1 -- --warm-up-time 1 --measurement-time 3`
//!
//! What it measures, on one thread, with nothing else scheduled:
//! - `switch_round_trip`: main switches a `u64` to a coroutine that switches it back (A→B→A),
//!   against corosensei's `resume` + `Yielder::suspend` round trip on a `DefaultStack`.
//! - `create_run_drop`: create a coroutine, switch into it once, let it return a `u64`, drop it.
//!   greenfiber takes its stack from its per-thread stack source (`coroutine/stack_pool.rs`);
//!   corosensei runs once on one stack reused through `into_stack()` + `with_stack`, and once on
//!   a fresh 256 KiB `DefaultStack` (greenfiber's default size) mmapped and unmapped each time.
//! - `throw_kill`: greenfiber only: create, start (it suspends back to main), then `kill()`, or
//!   `throw()` a payload it does not catch, which comes back to main as a panic.
//!
//! What it is not: a measure of scheduling (no hub here; see the Layer 2 benches), of switches
//! between two non-main coroutines, of deep resume chains, or of cache-cold switches among many
//! coroutines. Each figure is the cost of the whole iteration, loop overhead included.

use std::hint::black_box;
use std::panic::{AssertUnwindSafe, catch_unwind};

use corosensei::stack::DefaultStack;
use corosensei::{CoroutineResult, Yielder};
use criterion::{Criterion, criterion_group, criterion_main};
use greenfiber::{Coroutine, current};

#[path = "../examples/util/suspended.rs"]
mod suspended;
use suspended::suspended;

/// greenfiber's default usable stack size, used for the corosensei stacks too.
const STACK_SIZE: usize = 256 * 1024;

fn switch_round_trip(c: &mut Criterion) {
    let mut g = c.benchmark_group("switch_round_trip");

    // Bind the parent before looping: a `current()` temporary held across the switch would
    // keep this coroutine alive through a handle on its own stack.
    let echo = Coroutine::new(|mut x: u64| {
        let main = current().parent().unwrap();
        loop {
            x = main.switch(x + 1);
        }
    });
    let mut x = 0u64;
    g.bench_function("greenfiber", |b| {
        b.iter(|| {
            x = echo.switch::<u64, u64>(black_box(x));
        })
    });
    drop(echo);

    let mut echo = corosensei::Coroutine::<u64, u64, (), DefaultStack>::with_stack(
        DefaultStack::new(STACK_SIZE).unwrap(),
        |y: &Yielder<u64, u64>, mut x: u64| loop {
            x = y.suspend(x + 1);
        },
    );
    let mut x = 0u64;
    g.bench_function("corosensei", |b| {
        b.iter(|| match echo.resume(black_box(x)) {
            CoroutineResult::Yield(v) => x = v,
            CoroutineResult::Return(()) => unreachable!(),
        })
    });
    g.finish();
}

fn create_run_drop(c: &mut Criterion) {
    let mut g = c.benchmark_group("create_run_drop");

    g.bench_function("greenfiber", |b| {
        b.iter(|| {
            let co = Coroutine::new(|x: u64| x + 1);
            let r: u64 = co.switch(black_box(1u64));
            drop(co);
            r
        })
    });

    let mut stack = Some(DefaultStack::new(STACK_SIZE).unwrap());
    g.bench_function("corosensei_reused_stack", |b| {
        b.iter(|| {
            let mut co = corosensei::Coroutine::with_stack(
                stack.take().unwrap(),
                |_: &Yielder<u64, ()>, x: u64| x + 1,
            );
            let r = co.resume(black_box(1)).as_return().unwrap();
            stack = Some(co.into_stack());
            r
        })
    });

    g.bench_function("corosensei_fresh_stack", |b| {
        b.iter(|| {
            let mut co = corosensei::Coroutine::with_stack(
                DefaultStack::new(STACK_SIZE).unwrap(),
                |_: &Yielder<u64, ()>, x: u64| x + 1,
            );
            co.resume(black_box(1)).as_return().unwrap()
        })
    });
    g.finish();
}

/// The payload of an uncaught `throw`.
struct Boom;

fn throw_kill(c: &mut Criterion) {
    let mut g = c.benchmark_group("throw_kill");
    g.bench_function("greenfiber_kill", |b| {
        b.iter(|| {
            let co = suspended();
            co.kill();
            co
        })
    });
    g.bench_function("greenfiber_throw_uncaught", |b| {
        b.iter(|| {
            let co = suspended();
            let r = catch_unwind(AssertUnwindSafe(|| co.throw(Boom)));
            assert!(r.unwrap_err().is::<Boom>());
            co
        })
    });
    g.finish();
}

criterion_group!(benches, switch_round_trip, create_run_drop, throw_kill);
criterion_main!(benches);
