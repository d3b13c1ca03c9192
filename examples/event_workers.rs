//! Workers released by an `Event`: three workers wait on one event; `set` wakes them all at
//! once, in the order they started waiting.
//!
//! Run: `cargo run --example event_workers`
use std::rc::Rc;

use greenfiber::sync::Event;
use greenfiber::{joinall, spawn, yield_now};

fn main() {
    let go = Rc::new(Event::new());
    let workers: Vec<_> = (1..=3)
        .map(|i| {
            let go = go.clone();
            spawn(move || {
                println!("worker {i} waiting");
                go.wait();
                println!("worker {i} released");
            })
        })
        .collect();
    yield_now(); // let every worker reach its wait
    println!("setting the event");
    go.set();
    joinall(&workers, None);
    println!("all workers done");
}
