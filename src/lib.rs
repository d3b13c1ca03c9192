//! greenfiber: greenlet and gevent for Rust.
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
