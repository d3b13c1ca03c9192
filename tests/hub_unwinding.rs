//! Layer 2: kills and timeouts that reach a fiber while it waits inside a destructor that runs
//! during an unwind (a cleanup that sleeps, or writes a goodbye). Raising there would unwind
//! out of the destructor, which Rust turns into an abort of the whole process; instead the
//! raise waits until no coroutine is unwinding, and a cleanup's own timeouts still work.
use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;
use std::time::Duration;

use greenfiber::{Greenlet, Timeout, sleep, spawn, with_timeout, yield_now};

/// Sleeps `ms` in its destructor, then records that the cleanup ran to its end.
struct SlowCleanup(u64, Rc<Cell<bool>>);
impl Drop for SlowCleanup {
    fn drop(&mut self) {
        sleep(Duration::from_millis(self.0));
        self.1.set(true);
    }
}

/// A fiber parked in a long sleep that owns a `SlowCleanup` of `ms`.
fn victim(ms: u64) -> (Greenlet<()>, Rc<Cell<bool>>) {
    let done = Rc::new(Cell::new(false));
    let d = done.clone();
    let g = spawn(move || {
        let _c = SlowCleanup(ms, d);
        sleep(Duration::from_secs(3600));
    });
    yield_now();
    (g, done)
}

#[test]
fn a_second_kill_during_a_sleeping_cleanup_waits_for_it_instead_of_aborting() {
    let (g, done) = victim(30);
    let g1 = g.clone();
    let first = spawn(move || g1.kill());
    sleep(Duration::from_millis(5)); // the cleanup is sleeping now
    g.kill();
    first.join();
    assert!(done.get(), "the cleanup was cut short");
    assert!(g.ready() && !g.successful());
}

#[test]
fn a_timeout_set_before_the_kill_that_fires_during_the_cleanup_is_moot() {
    let done = Rc::new(Cell::new(false));
    let d = done.clone();
    let g = spawn(move || {
        with_timeout(Duration::from_millis(10), || {
            let _c = SlowCleanup(40, d);
            sleep(Duration::from_secs(3600));
        })
    });
    yield_now();
    g.kill(); // the cleanup sleeps 40 ms; the 10 ms timeout fires meanwhile
    assert!(done.get(), "the cleanup was cut short");
    assert!(g.ready() && !g.successful());
}

#[test]
fn a_timeout_set_inside_the_cleanup_still_bounds_it() {
    struct BoundedCleanup(Rc<RefCell<Option<Result<(), Timeout>>>>);
    impl Drop for BoundedCleanup {
        fn drop(&mut self) {
            let r = with_timeout(Duration::from_millis(10), || sleep(Duration::from_secs(3600)));
            *self.0.borrow_mut() = Some(r);
        }
    }
    let seen = Rc::new(RefCell::new(None));
    let s = seen.clone();
    let g = spawn(move || {
        let _c = BoundedCleanup(s);
        sleep(Duration::from_secs(3600));
    });
    yield_now();
    let g1 = g.clone();
    let _second = spawn(move || {
        sleep(Duration::from_millis(2));
        g1.kill(); // arrives while the bounded cleanup waits: kept, not raised there
    });
    g.kill();
    assert_eq!(*seen.borrow(), Some(Err(Timeout)));
}

#[test]
fn a_kill_during_the_unwind_of_a_panic_waits_for_the_cleanup() {
    let done = Rc::new(Cell::new(false));
    let d = done.clone();
    let g = spawn(move || {
        let _c = SlowCleanup(20, d);
        sleep(Duration::from_millis(1));
        panic!("a bug in the handler");
    });
    sleep(Duration::from_millis(5)); // it panicked, and its cleanup sleeps
    g.kill();
    assert!(done.get(), "the cleanup was cut short");
    assert!(g.get().is_err());
}

#[test]
fn fibers_that_park_during_someone_elses_cleanup_are_killed_and_timed_out_at_once() {
    // The thread has a panic under way (the victim's) while `other` and main park: a kill of
    // `other` and main's own timeout must not wait for that cleanup to end.
    let (g, done) = victim(200);
    let g1 = g.clone();
    let killer = spawn(move || g1.kill());
    sleep(Duration::from_millis(5)); // the victim's cleanup is sleeping
    let other_ran_on = Rc::new(Cell::new(false));
    let r = other_ran_on.clone();
    let other = spawn(move || {
        sleep(Duration::from_secs(3600));
        r.set(true);
    });
    yield_now(); // `other` starts and parks, with the victim unwinding
    other.kill();
    assert!(other.ready() && !other.successful() && !other_ran_on.get());
    let r = with_timeout(Duration::from_millis(10), || sleep(Duration::from_secs(3600)));
    assert_eq!(r, Err(Timeout));
    assert!(!done.get(), "they waited for the other fiber's cleanup");
    killer.join();
    assert!(done.get());
}

#[test]
fn a_cleanup_may_kill_a_helper_fiber_and_its_own_group() {
    let group = greenfiber::pool::Group::new();
    let helper = group.spawn(|| {
        loop {
            sleep(Duration::from_millis(1)); // parks and resumes during the cleanup below
        }
    });
    struct KillOnDrop(greenfiber::pool::Group, Rc<Cell<bool>>);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            sleep(Duration::from_millis(5)); // a goodbye first
            self.0.kill(); // includes this fiber, which is dying already
            self.1.set(true);
        }
    }
    let done = Rc::new(Cell::new(false));
    let (grp, d) = (group.clone(), done.clone());
    let me = group.spawn(move || {
        let _k = KillOnDrop(grp, d);
        sleep(Duration::from_secs(3600));
    });
    yield_now();
    me.kill();
    assert!(done.get());
    assert!(helper.ready() && !helper.successful());
}

#[test]
fn nested_timeouts_that_fire_during_a_cleanup_do_not_outlive_their_frames() {
    let done = Rc::new(Cell::new(false));
    let d = done.clone();
    let g = spawn(move || {
        let r = with_timeout(Duration::from_millis(30), || {
            with_timeout(Duration::from_millis(20), || {
                let _c = SlowCleanup(50, d);
                sleep(Duration::from_secs(3600));
            })
        });
        // Only reached if the kill was lost.
        sleep(Duration::from_millis(100));
        r
    });
    yield_now();
    g.kill(); // both timeouts come due while the cleanup sleeps
    assert!(done.get());
    assert!(matches!(g.get(), Err(greenfiber::Error::Killed)), "{:?}", g.get());
    sleep(Duration::from_millis(50)); // nothing kept for it is raised anywhere later
}

#[test]
fn a_fiber_that_kills_itself_in_its_cleanup_goes_on_unwinding() {
    struct SelfKill(Rc<RefCell<Option<Greenlet<()>>>>, Rc<Cell<bool>>);
    impl Drop for SelfKill {
        fn drop(&mut self) {
            let me = self.0.borrow_mut().take().unwrap();
            me.kill(); // dying already: nothing to raise, nothing to wait for
            greenfiber::killall(&[me]);
            sleep(Duration::from_millis(2));
            self.1.set(true);
        }
    }
    let slot = Rc::new(RefCell::new(None));
    let done = Rc::new(Cell::new(false));
    let (s, d) = (slot.clone(), done.clone());
    let g = spawn(move || {
        let _k = SelfKill(s, d);
        sleep(Duration::from_secs(3600));
    });
    *slot.borrow_mut() = Some(g.clone());
    yield_now();
    g.kill();
    assert!(done.get());
}

#[test]
fn a_fiber_that_caught_a_kill_and_lives_on_can_still_be_killed() {
    let caught = Rc::new(Cell::new(0));
    let c = caught.clone();
    let g = spawn(move || {
        let r = catch_unwind(AssertUnwindSafe(|| sleep(Duration::from_secs(3600))));
        assert!(r.is_err());
        c.set(1);
        sleep(Duration::from_secs(3600)); // lives on after the first kill
        c.set(2);
    });
    yield_now();
    let g1 = g.clone();
    let first = spawn(move || g1.kill());
    sleep(Duration::from_millis(5));
    assert_eq!(caught.get(), 1);
    assert!(!g.ready());
    g.kill();
    assert!(g.ready() && !g.successful());
    assert_eq!(caught.get(), 1);
    drop(first);
}

#[test]
fn a_fiber_that_parked_during_an_earlier_cleanup_is_protected_in_its_own_later_one() {
    // F parks while V's cleanup runs and resumes after it: its own panic later is its own, and
    // a kill reaching that panic's cleanup must wait for it.
    let (v, v_done) = victim(20);
    let v1 = v.clone();
    let killer = spawn(move || v1.kill());
    sleep(Duration::from_millis(5)); // V's cleanup sleeps
    let done = Rc::new(Cell::new(false));
    let d = done.clone();
    let f = spawn(move || {
        sleep(Duration::from_millis(30)); // parks during V's cleanup, resumes after it
        let _c = SlowCleanup(40, d);
        panic!("a bug in F");
    });
    killer.join();
    assert!(v_done.get());
    sleep(Duration::from_millis(45)); // F has panicked; its cleanup sleeps
    f.kill();
    assert!(done.get(), "the cleanup was cut short");
    assert!(f.get().is_err());
}

#[test]
fn nested_timeouts_set_inside_a_cleanup_each_fire_but_never_into_a_newer_unwinds_cleanup() {
    // Inside a cleanup, the inner timeout fires first; its own unwind runs a destructor that
    // sleeps, and the outer timeout comes due meanwhile: it waits until the inner one is
    // caught, then fires where the outer closure waits.
    struct Guard(Rc<RefCell<Vec<String>>>);
    impl Drop for Guard {
        fn drop(&mut self) {
            let log = self.0.clone();
            let outer = with_timeout(Duration::from_millis(30), || {
                let inner = with_timeout(Duration::from_millis(5), || {
                    let _s = SlowCleanup(60, Rc::new(Cell::new(false)));
                    sleep(Duration::from_secs(3600));
                });
                log.borrow_mut().push(format!("inner {inner:?}"));
                sleep(Duration::from_secs(3600));
            });
            self.0.borrow_mut().push(format!("outer {outer:?}"));
        }
    }
    let log = Rc::new(RefCell::new(Vec::new()));
    let l = log.clone();
    let g = spawn(move || {
        let _g = Guard(l);
        panic!("the cleanup runs during this unwind");
    });
    g.join();
    assert_eq!(*log.borrow(), ["inner Err(Timeout)", "outer Err(Timeout)"]);
}

#[test]
fn a_fiber_that_kills_itself_while_another_unwinds_is_protected_in_its_cleanup() {
    let (_b, b_done) = victim(100);
    let b_killer = spawn({
        let b = _b.clone();
        move || b.kill()
    });
    let me: Rc<RefCell<Option<Greenlet<()>>>> = Rc::default();
    let done = Rc::new(Cell::new(false));
    let (m, d) = (me.clone(), done.clone());
    let a = spawn(move || {
        sleep(Duration::from_millis(10)); // B is mid-unwind now
        let _c = SlowCleanup(40, d);
        let own = m.borrow().clone().unwrap();
        own.kill();
    });
    *me.borrow_mut() = Some(a.clone());
    sleep(Duration::from_millis(25)); // A is in the cleanup of its own kill
    a.kill();
    assert!(done.get(), "the cleanup was cut short");
    b_killer.join();
    assert!(b_done.get());
}

/// A fiber that catches a first kill while another fiber unwinds: it is left marked as maybe
/// unwinding (the panic under way is not its own, but that cannot be told apart then).
fn caught_a_kill_while_another_unwinds(
    body: impl FnOnce() + 'static,
) -> (Greenlet<()>, Greenlet<()>) {
    let a = spawn(move || {
        let _ = catch_unwind(|| sleep(Duration::from_secs(3600)));
        body();
    });
    let b = spawn(|| {
        let _c = SlowCleanup(40, Rc::new(Cell::new(false)));
        panic!("B's bug");
    });
    yield_now(); // both park; B panicked and its cleanup sleeps
    let _ = with_timeout(Duration::from_millis(5), || a.kill()); // A catches it and lives on
    assert!(!a.ready());
    (a, b)
}

#[test]
fn a_kill_kept_for_a_fiber_that_caught_the_last_one_arrives_once_the_other_unwind_ends() {
    let (a, b) = caught_a_kill_while_another_unwinds(|| sleep(Duration::from_secs(3600)));
    let r = with_timeout(Duration::from_secs(5), || a.kill());
    assert!(r.is_ok(), "the kill never arrived");
    assert!(a.ready() && b.ready());
}

#[test]
fn a_timeout_set_after_catching_a_kill_is_not_taken_for_one_set_in_a_later_cleanup() {
    let done = Rc::new(Cell::new(false));
    let d = done.clone();
    let (a, b) = caught_a_kill_while_another_unwinds(move || {
        let _ = with_timeout(Duration::from_millis(80), || {
            let _s = SlowCleanup(100, d); // the cleanup of the second kill, below
            sleep(Duration::from_secs(3600));
        });
    });
    b.join(); // B's unwind is over
    a.kill(); // A's cleanup sleeps past its own timeout, which must not land in it
    assert!(done.get(), "the cleanup was cut short");
}

#[test]
fn a_timeout_swallowed_inside_a_cleanup_leaves_the_outer_cleanup_timeout_working() {
    struct Guard(Rc<RefCell<Option<Result<(), Timeout>>>>);
    impl Drop for Guard {
        fn drop(&mut self) {
            let r = with_timeout(Duration::from_millis(30), || {
                let _ = with_timeout(Duration::from_millis(5), || {
                    let _ = catch_unwind(|| sleep(Duration::from_secs(3600))); // swallowed
                });
                sleep(Duration::from_secs(3600));
            });
            *self.0.borrow_mut() = Some(r);
        }
    }
    let seen = Rc::new(RefCell::new(None));
    let s = seen.clone();
    let g = spawn(move || {
        let _g = Guard(s);
        panic!("the cleanup runs during this unwind");
    });
    let r = with_timeout(Duration::from_secs(5), || g.join());
    assert!(r.is_ok(), "the outer cleanup timeout never fired");
    assert_eq!(*seen.borrow(), Some(Err(Timeout)));
}

#[test]
fn a_self_kill_by_a_fiber_left_marked_by_another_unwind_is_kept_not_lost() {
    // A catches a kill while B unwinds, so it may look unwinding; its own kill then cannot be
    // raised at once, but must arrive once B's unwind is over.
    let me: Rc<RefCell<Option<Greenlet<()>>>> = Rc::default();
    let finished = Rc::new(Cell::new(false));
    let (m, f) = (me.clone(), finished.clone());
    let (a, b) = caught_a_kill_while_another_unwinds(move || {
        sleep(Duration::from_millis(10)); // B still unwinds; `me` is filled in meanwhile
        let own = m.borrow().clone().unwrap();
        own.kill();
        sleep(Duration::from_secs(3600));
        f.set(true);
    });
    *me.borrow_mut() = Some(a.clone());
    b.join();
    let r = with_timeout(Duration::from_secs(5), || a.join());
    assert!(r.is_ok(), "the self-kill was lost");
    assert!(!a.successful() && !finished.get());
}
