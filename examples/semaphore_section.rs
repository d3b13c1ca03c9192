//! A `Semaphore` letting at most 2 fibers into a section at once: 5 fibers each enter, stay a
//! moment and leave; the program prints who is inside and the highest count seen.
//!
//! Run: `cargo run --example semaphore_section`
use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use greenfiber::sync::Semaphore;
use greenfiber::{joinall, sleep, spawn};

fn main() {
    let sem = Rc::new(Semaphore::new(2));
    let inside = Rc::new(Cell::new(0));
    let peak = Rc::new(Cell::new(0));
    let fibers: Vec<_> = (1..=5)
        .map(|i| {
            let (sem, inside, peak) = (sem.clone(), inside.clone(), peak.clone());
            spawn(move || {
                sem.acquire();
                inside.set(inside.get() + 1);
                peak.set(peak.get().max(inside.get()));
                println!("fiber {i} enters ({} inside)", inside.get());
                sleep(Duration::from_millis(5));
                inside.set(inside.get() - 1);
                println!("fiber {i} leaves");
                sem.release();
            })
        })
        .collect();
    joinall(&fibers, None);
    println!("at most {} inside at once", peak.get());
}
