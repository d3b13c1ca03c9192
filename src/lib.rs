//! greenfiber: greenlet and gevent for Rust — stackful coroutines with an explicit
//! `switch(value)`, and a hub per thread that turns blocking calls into switches.
//!
//! ```
//! use std::time::Duration;
//! use greenfiber::{Coroutine, joinall, sleep, spawn};
//!
//! // Layer 1, greenlet: switch control and a value to a coroutine, and back.
//! let doubler = Coroutine::new(|mut x: u32| loop {
//!     let parent = greenfiber::current().parent().unwrap();
//!     x = parent.switch(x * 2);
//! });
//! assert_eq!(doubler.switch::<u32, u32>(21), 42);
//!
//! // Layer 2, gevent: spawned fibers run while main blocks; no runtime to start.
//! let slow = spawn(|| { sleep(Duration::from_millis(20)); "slow" });
//! let fast = spawn(|| { sleep(Duration::from_millis(10)); "fast" });
//! assert_eq!(joinall(&[slow.clone(), fast.clone()], None), 2);
//! assert_eq!((slow.get().unwrap(), fast.get().unwrap()), ("slow", "fast"));
//! ```
//!
//! | layer | module | what it gives |
//! |---|---|---|
//! | 1 | [`coroutine`] | [`Coroutine`]: `switch`, `throw`, `kill`, a parent tree, guarded pooled stacks |
//! | 2 | [`hub`] | [`spawn`], [`Greenlet`], [`sleep`], [`with_timeout`], `fibers()`, LoopExit |
//! | 2b | [`threadpool`] | `spawn_blocking`: a blocking call on an OS thread while the fiber waits (below `net`, which resolves host names on it; api.md lists it with Layer 4) |
//! | 3 | [`net`], [`server`] | `std::net`-shaped sockets that yield; `StreamServer` |
//! | 4 | [`sync`], [`pool`] | `Event`, `Lock`, `Semaphore`, `Queue`s, `Channel`; `Pool`, `Group` |
//! | 5 | `monkey` (feature) | `patch_all()`: unmodified `std::thread::sleep` and `std::net` yield |
//!
//! Handles are `!Send`: every coroutine, fiber and socket belongs to the thread that made it.
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks)]

// One `mod` per layer, lowest first; blank lines keep rustfmt from sorting them.
mod error;

pub mod coroutine;
pub mod hub;

pub mod threadpool;

pub mod net;

pub mod sync;

pub mod pool;

pub mod server;

pub use coroutine::{Builder, Coroutine, GreenletExit, current};
pub use error::{Error, SwitchError};
pub use hub::{
    Greenlet, Timeout, joinall, killall, sleep, spawn, spawn_later, with_timeout, yield_now,
};

#[cfg(feature = "monkey")]
pub mod monkey;
