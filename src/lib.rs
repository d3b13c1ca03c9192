//! greenfiber: greenlet and gevent for Rust.
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod coroutine;
mod error;
pub mod hub;

pub use error::{Error, SwitchError};
