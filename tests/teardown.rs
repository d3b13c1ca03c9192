//! Layers 1 and 2 at thread exit: thread-local destructors that run after the thread's hub is
//! gone and kill or drop coroutines that were parked on it. Each must leave the process
//! running: no use of the destroyed hub (it crashed with SIGSEGV), no panic in a destructor
//! (Rust aborts the process for those).
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use greenfiber::sync::Lock;
use greenfiber::{Coroutine, Greenlet};

/// Runs `f` on a new thread and waits for it, thread-local destructors included.
fn on_a_thread(f: impl FnOnce() + Send + 'static) {
    std::thread::spawn(f).join().expect("the thread panicked");
}

#[test]
fn a_coroutine_parked_in_sleep_killed_after_the_hub_is_gone() {
    struct KillOnExit(RefCell<Option<Coroutine>>);
    impl Drop for KillOnExit {
        fn drop(&mut self) {
            if let Some(co) = self.0.borrow_mut().take() {
                co.kill(); // unwinds out of a sleep whose timer was in the destroyed hub
            }
        }
    }
    thread_local! {
        static GUARD: KillOnExit = const { KillOnExit(RefCell::new(None)) };
    }
    on_a_thread(|| {
        // Destructors run in reverse order of first use: the hub (created below, inside the
        // coroutine), then GUARD, then the coroutine state.
        let _ = greenfiber::current();
        GUARD.with(|_| {});
        let co = Coroutine::new(|()| {
            let _f = greenfiber::spawn(|| {
                greenfiber::coroutine::main_coroutine().switch::<(), ()>(());
            });
            greenfiber::sleep(Duration::from_secs(100)); // parks with a timer
        });
        co.switch::<(), ()>(()); // back when the fiber switches to main
        GUARD.with(|g| *g.0.borrow_mut() = Some(co));
    });
}

#[test]
fn a_coroutine_parked_while_unwinding_killed_after_the_hub_is_gone() {
    // Parked inside a destructor during an unwind (a raise there would abort, so the hub keeps
    // raises for later: park.rs rule 5), and killed by a thread-local destructor once the hub
    // is gone: the kill comes back to the killer, and nothing touches the destroyed hub.
    struct KillOnExit(RefCell<Option<Coroutine>>);
    impl Drop for KillOnExit {
        fn drop(&mut self) {
            if let Some(co) = self.0.borrow_mut().take() {
                co.kill();
                assert!(!co.is_dead(), "without its hub, its cleanup can never end");
            }
        }
    }
    thread_local! {
        static GUARD: KillOnExit = const { KillOnExit(RefCell::new(None)) };
    }
    struct SleepOnDrop;
    impl Drop for SleepOnDrop {
        fn drop(&mut self) {
            greenfiber::sleep(Duration::from_secs(100)); // parks while unwinding
        }
    }
    on_a_thread(|| {
        let _ = greenfiber::current();
        GUARD.with(|_| {}); // destroyed after the hub, which is created below
        let co = Coroutine::new(|()| {
            let _f = greenfiber::spawn(|| {
                greenfiber::coroutine::main_coroutine().switch::<(), ()>(());
            });
            let _cleanup = SleepOnDrop;
            std::panic::resume_unwind(Box::new("unwinding into a cleanup that sleeps"));
        });
        co.switch::<(), ()>(()); // back when the fiber switches to main
        GUARD.with(|g| *g.0.borrow_mut() = Some(co));
    });
}

#[test]
fn a_coroutine_dropped_after_the_hub_is_gone_releases_a_lock_a_fiber_waits_for() {
    thread_local! {
        static HOLD: RefCell<Option<Coroutine>> = const { RefCell::new(None) };
    }
    on_a_thread(|| {
        let _ = greenfiber::current();
        HOLD.with(|_| {}); // destroyed after the hub
        let lock = Rc::new(Lock::new());
        let l2 = lock.clone();
        let co = Coroutine::new(move |()| {
            let _g = l2.lock();
            let p = greenfiber::current().parent().unwrap();
            p.switch::<(), ()>(()); // suspended holding the lock
        });
        co.switch::<(), ()>(());
        let l3 = lock.clone();
        greenfiber::spawn(move || drop(l3.lock())); // waits for the lock
        greenfiber::yield_now();
        // Dropping the last handle kills `co`: its guard releases the lock to the waiter, whose
        // hub no longer exists.
        HOLD.with(|h| *h.borrow_mut() = Some(co));
    });
}

#[test]
fn a_greenlet_killed_after_the_hub_is_gone_is_left_alone() {
    struct Background(RefCell<Option<Greenlet<()>>>);
    impl Drop for Background {
        fn drop(&mut self) {
            if let Some(g) = self.0.borrow_mut().take() {
                g.kill();
                assert!(!g.ready(), "abandoned with its hub, it never ran again");
            }
        }
    }
    thread_local! {
        static BG: Background = const { Background(RefCell::new(None)) };
    }
    on_a_thread(|| {
        BG.with(|b| {
            let g = greenfiber::spawn(|| {
                loop {
                    greenfiber::sleep(Duration::from_millis(1));
                }
            });
            *b.0.borrow_mut() = Some(g);
        });
        greenfiber::sleep(Duration::from_millis(5)); // the background fiber runs meanwhile
    });
}

#[test]
fn killall_and_group_kill_after_the_hub_is_gone_return() {
    use greenfiber::pool::Group;
    struct KillAll(RefCell<Option<(Vec<Greenlet<()>>, Group)>>);
    impl Drop for KillAll {
        fn drop(&mut self) {
            if let Some((gs, group)) = self.0.borrow_mut().take() {
                greenfiber::killall(&gs); // nothing can die without the hub: no wait, no abort
                group.kill();
                assert!(!group.kill_timeout(Duration::from_millis(1)));
            }
        }
    }
    thread_local! {
        static GUARD: KillAll = const { KillAll(RefCell::new(None)) };
    }
    on_a_thread(|| {
        GUARD.with(|g| {
            let forever = || greenfiber::sleep(Duration::from_secs(3600));
            let group = Group::new();
            group.spawn(forever);
            *g.0.borrow_mut() = Some((vec![greenfiber::spawn(forever)], group));
        });
        greenfiber::yield_now(); // both park; the hub is created after GUARD, so dies first
    });
}

#[test]
fn a_long_parent_chain_dropped_after_the_coroutine_state_is_gone_does_not_recurse() {
    // Each coroutine is the parent of the next, and a thread-local destroyed after the thread's
    // coroutine state holds the leaf: the chain is released with no state to queue links in,
    // which must not take one stack frame per level (20,000 of them overflow this thread).
    struct Late(RefCell<Option<Coroutine>>);
    impl Drop for Late {
        fn drop(&mut self) {
            drop(self.0.borrow_mut().take());
        }
    }
    thread_local! {
        static LATE: Late = const { Late(RefCell::new(None)) };
    }
    let t = std::thread::Builder::new().stack_size(256 << 10).spawn(|| {
        LATE.with(|_| {}); // first used, so destroyed last
        let mut prev: Option<Coroutine> = None;
        for _ in 0..20_000 {
            let mut b = Coroutine::builder();
            if let Some(p) = &prev {
                b = b.parent(p);
            }
            prev = Some(b.build(|()| ()));
        }
        LATE.with(|l| *l.0.borrow_mut() = prev);
    });
    t.unwrap().join().expect("the thread panicked");
}
