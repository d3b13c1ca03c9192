//! `fibers()`: what each live fiber is doing (gevent's `print_run_info`), and the listing in
//! the LoopExit message.

use std::fmt;

use super::park;
use super::scheduler::{self, Hub};
use crate::coroutine::{Coroutine, main_coroutine};

/// One line of [`fibers`]: a live coroutine known to the hub.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FiberInfo {
    /// The coroutine's id (main is 0).
    pub id: u64,
    /// Its name, if it has one.
    pub name: Option<String>,
    /// `new`, `running`, `ready`, `waiting on <what>` (sleep, join, fd read, lock ...) or
    /// `suspended` (in a plain coroutine switch).
    pub state: String,
}

impl fmt::Display for FiberInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(n) => write!(f, "#{} {n:?}: {}", self.id, self.state),
            None => write!(f, "#{}: {}", self.id, self.state),
        }
    }
}

fn info(co: &Coroutine) -> FiberInfo {
    let state = if co.is_dead() {
        "dead".to_owned()
    } else if !co.is_started() {
        "new".to_owned()
    } else if co.is_current() {
        "running".to_owned()
    } else {
        match park::waiter_of(co) {
            Some(w) if w.is_woken() => "ready".to_owned(),
            Some(w) => format!("waiting on {}", w.what()),
            None => "suspended".to_owned(),
        }
    };
    FiberInfo { id: co.id(), name: co.name().map(str::to_owned), state }
}

/// The main coroutine and every live spawned fiber of this thread, with what each is doing.
pub fn fibers() -> Vec<FiberInfo> {
    scheduler::with(list)
}

fn list(hub: &Hub) -> Vec<FiberInfo> {
    let mut v: Vec<FiberInfo> = hub.fibers.borrow().iter().map(info).collect();
    v.sort_by_key(|i| i.id);
    v.insert(0, info(&main_coroutine()));
    v
}

/// The listing for the LoopExit message.
pub(crate) fn describe(hub: &Hub) -> String {
    let mut s = String::from("fibers:");
    for i in list(hub) {
        s.push_str("\n  ");
        s.push_str(&i.to_string());
    }
    s
}
