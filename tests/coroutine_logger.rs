//! Loggers that switch: what a logger writing to a socket does under `monkey::patch_all` when
//! the write has to wait (it parks, so it switches to the hub). Trace logging of switches and
//! of a coroutine's end must survive one. Its own binary, because the logger is process-wide.

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;
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
/// On the line that reports a new stack arena: switch to `SIDE` (the stack pool is busy).
const SWITCH_ON_ARENA: u8 = 3;
/// On every such line while `SIDES` has one: switch to the next (stays armed).
const SWITCH_ON_EVERY_ARENA: u8 = 4;

thread_local! {
    static SIDE: Cell<Option<Coroutine>> = const { Cell::new(None) };
    static SIDES: std::cell::RefCell<Vec<Coroutine>> = const { std::cell::RefCell::new(Vec::new()) };
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
        } else if mode == SWITCH_ON_ARENA && line.contains("mapped a stack arena") {
            MODE.store(IDLE, Ordering::Relaxed);
            let side = SIDE.with(Cell::take).expect("a side coroutine");
            let () = side.switch(());
        } else if mode == SWITCH_ON_EVERY_ARENA
            && line.contains("mapped a stack arena")
            && let Some(side) = SIDES.with(|s| s.borrow_mut().pop())
        {
            let () = side.switch(());
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

    // 4. A panicking coroutine whose "finished" line switches away, then is given another
    //    parent and killed: its panic goes to the parent it has when it dies (the killer),
    //    raised from `kill`, not to the one it had when it panicked.
    let got = Rc::new(Cell::new(false));
    let g = got.clone();
    let p = Coroutine::new(move |()| {
        let r = catch_unwind(AssertUnwindSafe(|| {
            let () = main_coroutine().switch(());
        }));
        g.set(r.is_err());
    });
    let () = p.switch(());
    let c = Coroutine::builder().parent(&p).build(|()| -> () { panic!("boom") });
    MODE.store(SWITCH_ON_FINISH, Ordering::Relaxed);
    let () = c.switch(());
    assert!(!c.is_dead());
    c.set_parent(&main_coroutine()).unwrap();
    let raised =
        catch_unwind(AssertUnwindSafe(|| c.kill())).expect_err("the panic comes to the killer");
    assert_eq!(raised.downcast_ref::<&str>(), Some(&"boom"));
    assert!(c.is_dead());
    assert!(!got.get(), "the old parent got nothing");
    drop(p);

    // 5. While the stack pool maps an arena it logs: a logger that switches there lets other
    //    coroutines take and give stacks (a non-default size, as the pool's own) meanwhile.
    let side = Coroutine::new(move |()| {
        for i in 0..3u8 {
            let d = Coroutine::builder().stack_size(64 * 1024).build(|x: u8| x + 1);
            let next: u8 = d.switch(i);
            assert_eq!(next, i + 1);
            assert!(d.is_dead());
        }
    });
    SIDE.with(|s| s.set(Some(side.clone())));
    MODE.store(SWITCH_ON_ARENA, Ordering::Relaxed);
    // A size no other part uses, so its first stack maps an arena.
    let e = Coroutine::builder().stack_size(1 << 20).build(|x: u8| x * 2);
    assert_eq!(MODE.load(Ordering::Relaxed), IDLE, "the arena line was logged");
    assert!(side.is_dead());
    let six: u8 = e.switch(3u8);
    assert_eq!(six, 6);
    MODE.store(IDLE, Ordering::Relaxed);

    // 6. Nested: each arena line switches to the next side, which needs a stack of a size not
    //    seen yet (so it maps an arena and logs too) while the one before still waits in its
    //    logger. The shared pool once served a take while this thread's was busy, its mutex
    //    held across the log line: the second side then locked it again, a deadlock. Run on a
    //    thread of its own, so that a hang aborts the test process with a message instead of
    //    stalling the suite (a plain failure would hang too: exiting threads give their stacks
    //    to that same shared pool).
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let main = main_coroutine();
        let side = |size: usize| {
            let main = main.clone();
            Coroutine::builder().stack_size(64 * 1024).build(move |()| {
                let c = Coroutine::builder().stack_size(size).build(|x: u8| x + 1);
                let two: u8 = c.switch(1u8);
                assert_eq!(two, 2);
                let () = main.switch(());
            })
        };
        let (s1, s2) = (side(3 << 20), side(5 << 20));
        SIDES.with(|s| s.borrow_mut().extend([s2, s1]));
        MODE.store(SWITCH_ON_EVERY_ARENA, Ordering::Relaxed);
        let e = Coroutine::builder().stack_size(7 << 20).build(|x: u8| x * 2);
        MODE.store(IDLE, Ordering::Relaxed);
        let eight: u8 = e.switch(4u8);
        done.send(eight).unwrap();
    });
    match finished.recv_timeout(std::time::Duration::from_secs(60)) {
        Ok(eight) => assert_eq!(eight, 8),
        Err(e) => {
            eprintln!("a coroutine that needed a stack while another's arena line was logged: {e}");
            // Not `exit`: it runs this thread's destructors, which lock that pool too.
            std::process::abort();
        }
    }
}
