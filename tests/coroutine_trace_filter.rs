//! A logger that enables trace for other crates but filters greenfiber out in `enabled()` (what
//! env_logger does for RUST_LOG=myapp=trace: max_level becomes Trace). Its own binary: the
//! logger is process-wide.

use std::sync::atomic::{AtomicUsize, Ordering};

use greenfiber::Coroutine;
use greenfiber::coroutine::main_coroutine;

static RECORDS: AtomicUsize = AtomicUsize::new(0);

struct AppOnly;

impl log::Log for AppOnly {
    fn enabled(&self, m: &log::Metadata) -> bool {
        !m.target().starts_with("greenfiber")
    }
    fn log(&self, r: &log::Record) {
        // A record was built for it (labels formatted) and the logger called.
        if r.target().starts_with("greenfiber") {
            RECORDS.fetch_add(1, Ordering::Relaxed);
        }
    }
    fn flush(&self) {}
}

#[test]
fn a_coroutine_builds_no_trace_record_for_a_logger_that_filters_greenfiber_out() {
    log::set_logger(&AppOnly).unwrap();
    log::set_max_level(log::LevelFilter::Trace);
    let c = Coroutine::new(|x: u32| {
        let main = main_coroutine();
        let y: u32 = main.switch(x + 1);
        y * 10
    });
    let one: u32 = c.switch(0u32);
    let twenty: u32 = c.switch(one + 1);
    assert_eq!(twenty, 20);
    // Created, four switches, finished: none built.
    assert_eq!(RECORDS.load(Ordering::Relaxed), 0, "trace records built for a filtered target");
}
