//! A `PriorityQueue` draining in order: tasks put in any order come out smallest first, taken
//! by a consumer fiber until the queue is empty.
//!
//! Run: `cargo run --example priority_queue`
use std::rc::Rc;

use greenfiber::spawn;
use greenfiber::sync::PriorityQueue;

fn main() {
    let q = Rc::new(PriorityQueue::new());
    for (prio, task) in [(3, "write report"), (1, "fix outage"), (4, "lunch"), (2, "review PR")] {
        q.put((prio, task));
    }
    let q2 = q.clone();
    let consumer = spawn(move || {
        while let Ok((prio, task)) = q2.try_get() {
            println!("{prio}: {task}");
        }
    });
    consumer.join();
    println!("left: {}", q.len());
}
