//! A `threadpool::spawn_blocking` call beside a ticking fiber: the blocking closure sleeps its
//! OS thread for 100 ms while the hub keeps running the ticker every 20 ms.
//!
//! Run: `cargo run --example blocking_call`
use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use greenfiber::threadpool::spawn_blocking;
use greenfiber::{sleep, spawn};

fn main() {
    let done = Rc::new(Cell::new(false));
    let d2 = done.clone();
    let ticker = spawn(move || {
        let mut ticks = 0;
        while !d2.get() {
            sleep(Duration::from_millis(20));
            ticks += 1;
        }
        ticks
    });
    let answer = spawn_blocking(|| {
        std::thread::sleep(Duration::from_millis(100)); // blocks a pool thread, not the hub
        42
    })
    .expect("the closure does not panic");
    done.set(true);
    let ticks = ticker.get().unwrap();
    println!("blocking call returned {answer}");
    println!("ticker kept running: {}", if ticks >= 2 { "yes" } else { "no" });
}
