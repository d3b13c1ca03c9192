//! A logger that waits (a socket write that has to wait, under `monkey::patch_all`) while the
//! hub logs a fiber's panic. Its own binary, because the logger is process-wide.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use greenfiber::{Error, hub, sleep, spawn};

/// Armed: the next "panicked" line sleeps (it waits, so it switches to the hub).
static WAIT_ON_PANIC: AtomicBool = AtomicBool::new(false);

struct Waiting;

impl log::Log for Waiting {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, r: &log::Record) {
        if r.args().to_string().contains("panicked") && WAIT_ON_PANIC.swap(false, Ordering::Relaxed)
        {
            sleep(Duration::from_millis(50));
        }
    }
    fn flush(&self) {}
}

#[test]
fn a_fiber_killed_while_its_panic_is_logged_still_ends() {
    log::set_logger(&Waiting).unwrap();
    log::set_max_level(log::LevelFilter::Info);
    WAIT_ON_PANIC.store(true, Ordering::Relaxed);
    let g = spawn(|| -> u32 { panic!("boom") });
    let linked = Rc::new(Cell::new(false));
    let l2 = linked.clone();
    g.link(move |_| l2.set(true));
    sleep(Duration::from_millis(10)); // g panics; its panic's log line waits
    assert!(!g.ready(), "still in its logger");
    let listed = hub::fibers().iter().any(|f| f.id == g.coroutine().id());
    assert!(listed, "a fiber in its logger is still listed");
    g.kill(); // lands in the logger's wait
    assert!(g.ready(), "a killed fiber ends: its joiners and links go on");
    assert_eq!(g.get(), Err(Error::Killed));
    sleep(Duration::ZERO);
    assert!(linked.get(), "its link ran");
    assert_eq!(hub::fibers().len(), 1, "only main is left");
}
