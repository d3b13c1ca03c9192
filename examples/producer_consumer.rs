//! Producer/consumer over a bounded `Queue`: one producer puts 6 jobs into a queue of 2 slots
//! and blocks while it is full; two consumers take jobs in FIFO order. A `None` per consumer
//! tells it to stop.
//!
//! Run: `cargo run --example producer_consumer`
use std::rc::Rc;
use std::time::Duration;

use greenfiber::sync::Queue;
use greenfiber::{joinall, sleep, spawn};

fn main() {
    let q: Rc<Queue<Option<u32>>> = Rc::new(Queue::bounded(2));
    let q2 = q.clone();
    let producer = spawn(move || {
        for job in 1..=6 {
            q2.put(Some(job)); // waits while 2 jobs are queued
            println!("produced {job}");
        }
        q2.put(None);
        q2.put(None);
    });
    let consumers: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|name| {
            let q = q.clone();
            spawn(move || {
                let mut done = 0;
                while let Some(job) = q.get() {
                    println!("consumer {name} got {job}");
                    sleep(Duration::from_millis(1));
                    done += 1;
                }
                done
            })
        })
        .collect();
    producer.join();
    joinall(&consumers, None);
    let total: u32 = consumers.iter().map(|c| c.get().unwrap()).sum();
    println!("consumed {total} jobs");
}
