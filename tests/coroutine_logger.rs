//! Loggers that switch: what a logger writing to a socket does under `monkey::patch_all` when
//! the write has to wait (it parks, so it switches to the hub). Trace logging of switches and
//! of a coroutine's end must survive one. Its own binary, because the logger is process-wide.

use std::cell::Cell;
use std::sync::atomic::{AtomicU8, Ordering};

use greenfiber::Coroutine;
use greenfiber::coroutine::main_coroutine;

/// What the logger does on its next matching record (then it disarms itself).
static MODE: AtomicU8 = AtomicU8::new(IDLE);
const IDLE: u8 = 0;
/// On a "switch" line: switch to `SIDE` and back (as a parked socket write comes back).
const SWITCH_ON_SWITCH: u8 = 1;
/// On a "finished" line: switch to main, waiting for `()`.
const SWITCH_ON_FINISH: u8 = 2;

thread_local! {
    static SIDE: Cell<Option<Coroutine>> = const { Cell::new(None) };
}

struct Switching;

impl log::Log for Switching {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, r: &log::Record) {
        let line = r.args().to_string();
        let mode = MODE.load(Ordering::Relaxed);
        if mode == SWITCH_ON_SWITCH && line.starts_with("switch ") {
            MODE.store(IDLE, Ordering::Relaxed);
            let side = SIDE.with(Cell::take).expect("a side coroutine");
            let () = side.switch(());
        } else if mode == SWITCH_ON_FINISH && line.ends_with(" finished") {
            MODE.store(IDLE, Ordering::Relaxed);
            let () = main_coroutine().switch(());
        }
    }
    fn flush(&self) {}
}

#[test]
fn switches_survive_a_logger_that_switches() {
    log::set_logger(&Switching).unwrap();
    log::set_max_level(log::LevelFilter::Trace);

    // 1. The trace line of main's switch to `c` switches to `side`, which switches back to main
    //    (its logger call returns), and only then does main's switch go on: `c` gets its u32 and
    //    answers with one, which main still waits for.
    let c = Coroutine::new(|x: u32| {
        let main = main_coroutine();
        let y: u32 = main.switch(x + 1);
        y * 10
    });
    let main = main_coroutine();
    let side = Coroutine::new(move |()| {
        let () = main.switch(());
    });
    SIDE.with(|s| s.set(Some(side.clone())));
    MODE.store(SWITCH_ON_SWITCH, Ordering::Relaxed);
    let one: u32 = c.switch(0u32);
    assert_eq!(one, 1);
    let twenty: u32 = c.switch(2u32);
    assert_eq!(twenty, 20);
    assert!(c.is_dead());

    // 2. A coroutine whose "finished" line switches away is not dead yet: it is suspended in its
    //    logger, and switching back lets it finish and return its value.
    let d = Coroutine::new(|()| 7u32);
    MODE.store(SWITCH_ON_FINISH, Ordering::Relaxed);
    let () = d.switch(());
    assert!(!d.is_dead(), "suspended in its logger, it has not finished");
    let seven: u32 = d.switch(());
    assert_eq!(seven, 7);
    assert!(d.is_dead());

    // 3. Killed while suspended in that logger: the kill is dropped there (the coroutine was
    //    ending anyway) and it finishes; its value goes to the killer, which returns.
    let e = Coroutine::new(|()| 8u32);
    MODE.store(SWITCH_ON_FINISH, Ordering::Relaxed);
    let () = e.switch(());
    assert!(!e.is_dead());
    e.kill();
    assert!(e.is_dead());
    MODE.store(IDLE, Ordering::Relaxed);
}
