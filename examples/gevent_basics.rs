//! gevent's first example: two fibers hand control to each other with `sleep(0)`.
//!
//! Run: `cargo run --release --example gevent_basics`
//!
//! ```text
//! Running in foo
//! Explicit context to bar
//! Explicit context switch to foo again
//! Implicit context switch back to bar
//! ```
use std::time::Duration;

use greenfiber::{joinall, sleep, spawn};

fn foo() {
    println!("Running in foo");
    sleep(Duration::ZERO);
    println!("Explicit context switch to foo again");
}

fn bar() {
    println!("Explicit context to bar");
    sleep(Duration::ZERO);
    println!("Implicit context switch back to bar");
}

fn main() {
    joinall(&[spawn(foo), spawn(bar)], None);
}
