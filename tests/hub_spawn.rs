//! Layer 2: spawn, join, get, kill, link, joinall, sleep(0) fairness, remote wake, LoopExit.
use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;
use std::time::{Duration, Instant};

use greenfiber::hub::{fibers, remote_signal, spawn_named};
use greenfiber::{
    Coroutine, Error, joinall, killall, sleep, spawn, spawn_later, with_timeout, yield_now,
};

type Log = Rc<RefCell<Vec<String>>>;
fn log() -> Log {
    Rc::new(RefCell::new(Vec::new()))
}
fn push(l: &Log, s: impl Into<String>) {
    l.borrow_mut().push(s.into());
}

#[test]
fn spawn_returns_at_once_and_fibers_start_in_order_when_main_blocks() {
    let l = log();
    let gs: Vec<_> = (0..3)
        .map(|i| {
            let l = l.clone();
            spawn(move || push(&l, format!("run {i}")))
        })
        .collect();
    push(&l, "spawned");
    assert!(!gs[0].ready());
    yield_now();
    assert_eq!(*l.borrow(), ["spawned", "run 0", "run 1", "run 2"]);
    assert!(gs.iter().all(|g| g.ready() && g.successful()));
}

#[test]
fn get_returns_the_value_or_the_panic_message() {
    let ok = spawn(|| 6 * 7);
    let bad = spawn(|| -> i32 { panic!("fiber exploded: {}", std::hint::black_box(13)) });
    let other = spawn(|| "still fine");
    assert_eq!(ok.get(), Ok(42));
    let e = bad.get().unwrap_err();
    assert!(matches!(e, Error::Panicked { .. }));
    assert!(format!("{e:?}").contains("fiber exploded: 13"), "{e:?}");
    assert!(e.to_string().contains("fiber exploded: 13"));
    assert!(bad.ready() && !bad.successful());
    assert_eq!(other.get(), Ok("still fine"));
}

#[test]
fn sleep_zero_interleaves_strictly() {
    let l = log();
    let mk = |name: &'static str| {
        let l = l.clone();
        spawn(move || {
            for i in 0..3 {
                push(&l, format!("{name}{i}"));
                sleep(Duration::ZERO);
            }
        })
    };
    let gs = [mk("a"), mk("b")];
    assert_eq!(joinall(&gs, None), 2);
    assert_eq!(*l.borrow(), ["a0", "b0", "a1", "b1", "a2", "b2"]);
}

#[test]
fn sleeps_end_in_deadline_order() {
    let l = log();
    let gs: Vec<_> = [30u64, 10, 20]
        .into_iter()
        .map(|ms| {
            let l = l.clone();
            spawn(move || {
                sleep(Duration::from_millis(ms));
                push(&l, ms.to_string());
            })
        })
        .collect();
    let t = Instant::now();
    joinall(&gs, None);
    assert!(t.elapsed() >= Duration::from_millis(30));
    assert_eq!(*l.borrow(), ["10", "20", "30"]);
}

#[test]
fn kill_unwinds_a_sleeping_fiber_and_waits_until_it_is_dead() {
    let l = log();
    let l2 = l.clone();
    let g = spawn(move || {
        struct Guard(Log);
        impl Drop for Guard {
            fn drop(&mut self) {
                push(&self.0, "unwound");
            }
        }
        let _g = Guard(l2.clone());
        sleep(Duration::from_secs(3600));
        push(&l2, "woke up?!");
    });
    yield_now(); // let it start and park in sleep
    let t = Instant::now();
    g.kill();
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(g.ready() && !g.successful());
    assert_eq!(g.get(), Err(Error::Killed));
    assert_eq!(*l.borrow(), ["unwound"]);
    g.kill(); // no-op once dead
    // The killed sleep left no timer behind: nothing keeps the hub busy for an hour.
    let t = Instant::now();
    sleep(Duration::from_millis(1));
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[test]
fn kill_before_start_never_runs_it() {
    let l = log();
    let l2 = l.clone();
    let g = spawn(move || push(&l2, "ran"));
    g.kill();
    yield_now();
    assert!(l.borrow().is_empty());
    assert_eq!(g.get(), Err(Error::Killed));
}

#[test]
fn kill_a_fiber_waiting_in_join_removes_it_from_that_wait() {
    let target = spawn(|| sleep(Duration::from_millis(30)));
    let t2 = target.clone();
    let waiter = spawn(move || t2.join());
    yield_now();
    waiter.kill();
    assert_eq!(waiter.get(), Err(Error::Killed));
    target.join();
    assert!(target.successful());
}

#[test]
fn link_runs_after_the_end_exactly_once_never_inside_link() {
    let l = log();
    let g = spawn(|| 5);
    let l2 = l.clone();
    g.link(move |g| push(&l2, format!("link1 {:?}", g.get())));
    push(&l, "linked");
    g.join();
    yield_now(); // let the hub run the callbacks
    let l3 = l.clone();
    g.link(move |_| push(&l3, "link2"));
    push(&l, "linked after end");
    yield_now();
    yield_now();
    assert_eq!(*l.borrow(), ["linked", "link1 Ok(5)", "linked after end", "link2"]);
}

#[test]
fn joinall_with_timeout_counts_the_finished() {
    let fast = spawn(|| sleep(Duration::from_millis(5)));
    let slow = spawn(|| sleep(Duration::from_secs(60)));
    let n = joinall(&[fast.clone(), slow.clone()], Some(Duration::from_millis(50)));
    assert_eq!(n, 1);
    killall(&[fast, slow.clone()]);
    assert_eq!(slow.get(), Err(Error::Killed));
}

#[test]
fn join_timeout_reports_whether_it_finished() {
    let g = spawn(|| sleep(Duration::from_millis(200)));
    assert!(!g.join_timeout(Duration::from_millis(10)));
    g.kill();
    assert!(g.join_timeout(Duration::from_millis(10)));
}

#[test]
fn spawn_later_starts_after_the_delay() {
    let t = Instant::now();
    let g = spawn_later(Duration::from_millis(30), move || t.elapsed());
    let elapsed = g.get().unwrap();
    assert!(elapsed >= Duration::from_millis(30), "{elapsed:?}");
}

#[test]
fn a_std_thread_wakes_a_waiting_fiber_while_others_run() {
    let (mut wait, waker) = remote_signal();
    let slot = std::sync::Arc::new(std::sync::Mutex::new(None));
    let s2 = slot.clone();
    let ticks = Rc::new(RefCell::new(0));
    let t2 = ticks.clone();
    let ticker = spawn(move || {
        for _ in 0..5 {
            *t2.borrow_mut() += 1;
            sleep(Duration::from_millis(5));
        }
    });
    let receiver = spawn(move || {
        wait.wait();
        slot.lock().unwrap().take()
    });
    let th = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        *s2.lock().unwrap() = Some(99);
        waker.wake();
    });
    assert_eq!(receiver.get(), Ok(Some(99)));
    assert!(*ticks.borrow() >= 2, "the ticker ran while the receiver waited");
    ticker.join();
    th.join().unwrap();
}

#[test]
fn blocking_forever_raises_loop_exit_and_the_hub_stays_usable() {
    // A fiber that waits on a fiber that waits on it: nothing can ever run.
    let cell: Rc<RefCell<Option<greenfiber::Greenlet<()>>>> = Default::default();
    let c2 = cell.clone();
    let a = spawn(move || {
        let b = c2.borrow().clone().unwrap();
        b.join();
    });
    let a2 = a.clone();
    let b = spawn(move || a2.join());
    *cell.borrow_mut() = Some(b.clone());
    let err = catch_unwind(AssertUnwindSafe(|| a.join())).unwrap_err();
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("LoopExit"), "{msg}");
    assert!(msg.contains("waiting on join"), "{msg}");
    // The hub still works afterwards.
    assert_eq!(spawn(|| 1).get(), Ok(1));
    killall(&[a, b]);
}

#[test]
fn fibers_lists_names_and_states() {
    let g = spawn_named("sleeper", || sleep(Duration::from_secs(60)));
    let n = spawn_named("new-one", || ());
    let _ = n;
    yield_now();
    let list = fibers();
    assert!(list[0].id == 0 && list[0].state == "running", "{list:?}");
    let s = list.iter().find(|f| f.name.as_deref() == Some("sleeper")).unwrap();
    assert_eq!(s.state, "waiting on sleep");
    g.kill();
    assert!(fibers().iter().all(|f| f.name.as_deref() != Some("sleeper")));
}

#[test]
fn a_fiber_can_kill_itself() {
    let g = spawn(|| {
        let me: greenfiber::Greenlet<()> = unreachable_handle();
        me.kill();
    });
    fn unreachable_handle() -> greenfiber::Greenlet<()> {
        greenfiber::Greenlet::clone(&CURRENT.with(|c| c.borrow().clone().unwrap()))
    }
    thread_local! {
        static CURRENT: RefCell<Option<greenfiber::Greenlet<()>>> = const { RefCell::new(None) };
    }
    CURRENT.with(|c| *c.borrow_mut() = Some(g.clone()));
    assert_eq!(g.get(), Err(Error::Killed));
    CURRENT.with(|c| c.borrow_mut().take());
}

#[test]
fn main_returning_ends_the_program_while_fibers_sleep() {
    const CHILD: &str = "GREENFIBER_TEST_MAIN_RETURNS";
    if std::env::var_os(CHILD).is_some() {
        // The child: fibers asleep for an hour, and "main" (this test) returns at once.
        for _ in 0..10 {
            spawn(|| sleep(Duration::from_secs(3600)));
        }
        yield_now();
        return;
    }
    let t = Instant::now();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "main_returning_ends_the_program_while_fibers_sleep", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(t.elapsed() < Duration::from_secs(60), "the sleeping fibers kept it alive");
}

#[test]
fn fibers_that_only_yield_do_not_starve_timers_or_other_threads() {
    // Two spinners hand control to each other on every yield; the hub still looks at its
    // timers and at wake-ups from other threads between rounds.
    let stop = Rc::new(std::cell::Cell::new(false));
    let spins = Rc::new(std::cell::Cell::new(0u64));
    let spinners: Vec<_> = (0..2)
        .map(|_| {
            let (stop, spins) = (stop.clone(), spins.clone());
            spawn(move || {
                while !stop.get() {
                    spins.set(spins.get() + 1);
                    yield_now();
                }
            })
        })
        .collect();
    let t = Instant::now();
    sleep(Duration::from_millis(20)); // a timer, while the spinners run
    assert!(t.elapsed() >= Duration::from_millis(20));
    let (mut wait, waker) = remote_signal();
    let thread = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(10));
        waker.wake();
    });
    wait.wait(); // a wake-up from another thread, while the spinners run
    thread.join().unwrap();
    stop.set(true);
    assert_eq!(joinall(&spinners, Some(Duration::from_secs(5))), 2);
    assert!(spins.get() > 100, "the spinners ran meanwhile: {}", spins.get());
}

#[test]
fn a_fiber_killed_by_the_one_it_handed_off_to_unwinds_and_dies() {
    // `victim` yields, which hands control straight to `killer`; `killer` kills it while it
    // sits below in the resume chain. Its destructors run, and both end normally.
    let l = log();
    struct Noisy(Log);
    impl Drop for Noisy {
        fn drop(&mut self) {
            push(&self.0, "victim unwound");
        }
    }
    let lv = l.clone();
    let victim = spawn(move || {
        let _n = Noisy(lv.clone());
        loop {
            yield_now();
        }
    });
    let (lk, v) = (l.clone(), victim.clone());
    let killer = spawn(move || {
        push(&lk, "killer runs");
        v.kill();
        push(&lk, "killer killed it");
        7
    });
    assert_eq!(killer.get(), Ok(7));
    assert_eq!(victim.get(), Err(Error::Killed));
    assert_eq!(*l.borrow(), ["killer runs", "victim unwound", "killer killed it"]);
}

#[test]
fn a_link_may_block_as_gevent_links_do() {
    // gevent's test_link_to_channel: each finished fiber's link puts into a rendezvous
    // channel, which waits until main takes the value.
    let ch = Rc::new(greenfiber::sync::Channel::new());
    let gs: Vec<_> = (1..=3).map(|i| spawn(move || i * 100)).collect();
    for g in &gs {
        let ch = ch.clone();
        g.link(move |g| ch.put(g.get().unwrap()));
    }
    let mut got: Vec<i32> = (0..3).map(|_| ch.get()).collect();
    got.sort();
    assert_eq!(got, [100, 200, 300]);
}

#[test]
fn killall_sends_every_kill_before_waiting() {
    // A fiber that survives its kill must not spare the ones after it (gevent's killall
    // kills them all, then waits).
    let quit = Rc::new(std::cell::Cell::new(false));
    let q = quit.clone();
    let undead = spawn(move || {
        while !q.get() {
            let _ = catch_unwind(AssertUnwindSafe(|| sleep(Duration::from_millis(10))));
        }
    });
    let mortal = spawn(|| sleep(Duration::from_secs(3600)));
    yield_now();
    let gs = [undead.clone(), mortal.clone()];
    assert!(greenfiber::with_timeout(Duration::from_millis(50), || killall(&gs)).is_err());
    assert!(mortal.ready() && !mortal.successful(), "the second fiber was killed too");
    assert!(!undead.ready());
    quit.set(true);
    undead.join();
}

#[test]
fn a_remote_wait_whose_wakers_are_all_gone_raises_loop_exit_instead_of_hanging() {
    // The thread holding the only waker dies without waking.
    let (mut wait, waker) = remote_signal();
    let t = std::thread::spawn(move || {
        let _w = waker;
        panic!("the waking thread fails");
    });
    assert!(t.join().is_err());
    let err = catch_unwind(AssertUnwindSafe(|| wait.wait())).unwrap_err();
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("LoopExit") && msg.contains("another thread"), "{msg}");
    // The same while the fiber waits already: the last drop wakes the hub to look again.
    let (mut wait, waker) = remote_signal();
    let copy = waker.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        drop(copy);
        drop(waker);
    });
    let err = catch_unwind(AssertUnwindSafe(|| wait.wait())).unwrap_err();
    t.join().unwrap();
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("LoopExit"), "{msg}");
    // A wake before the last waker goes is still seen.
    let (mut wait, waker) = remote_signal();
    std::thread::spawn(move || waker.wake()).join().unwrap();
    wait.wait();
    assert!(!wait.wait_timeout(Duration::from_millis(1)));
}

#[test]
fn each_link_runs_in_its_own_fiber_so_a_blocking_one_holds_back_no_other() {
    // gevent's SpawnedLink: link 1 blocks in a rendezvous put until the consumer, released by
    // link 2, takes the value.
    use greenfiber::sync::{Channel, Event};
    let ch = Rc::new(Channel::<i32>::new());
    let done = Rc::new(Event::new());
    let p = spawn(|| 100);
    let c = ch.clone();
    p.link(move |g| c.put(g.get().unwrap()));
    let d = done.clone();
    p.link(move |_| d.set());
    let r = greenfiber::with_timeout(Duration::from_secs(10), || {
        done.wait();
        ch.get()
    });
    assert_eq!(r, Ok(100));
}

#[test]
fn after_take_a_fiber_is_still_ready_and_successful_and_new_links_run() {
    let g = spawn(|| "v".to_string());
    g.join();
    assert_eq!(g.take(), Some(Ok("v".to_string())));
    assert!(g.ready() && g.successful());
    let ran = Rc::new(std::cell::Cell::new(false));
    let r = ran.clone();
    g.link(move |_| r.set(true));
    yield_now();
    assert!(ran.get());
    let p = catch_unwind(AssertUnwindSafe(|| g.get())).unwrap_err();
    assert!(Error::from_panic(None, &*p).to_string().contains("taken"));
}

#[test]
fn a_fiber_killed_unstarted_through_its_coroutine_ends_as_killed() {
    // The Layer 1 kill drops the closure without running it: joiners, links and get() must
    // still see the end.
    let g = spawn_later(Duration::from_millis(30), || 1);
    let g2 = g.clone();
    let joiner = spawn(move || g2.join());
    yield_now(); // the joiner waits on g
    let ran = Rc::new(std::cell::Cell::new(false));
    let r = ran.clone();
    g.link(move |_| r.set(true));
    g.coroutine().kill();
    assert!(g.ready() && !g.successful());
    joiner.join();
    assert!(joiner.successful());
    yield_now();
    assert!(ran.get());
    assert_eq!(g.get(), Err(Error::Killed));
    assert!(fibers().iter().all(|f| !f.to_string().contains("dead")), "{:?}", fibers());
}

#[test]
fn links_added_before_join_have_run_when_join_returns() {
    // gevent's test__order.py::test_greenlet_link, with 2 and 1000 links.
    for count in [2, 1000] {
        let lst = Rc::new(RefCell::new(Vec::new()));
        let l0 = lst.clone();
        let g = spawn(move || l0.borrow_mut().push(0));
        for i in 1..count {
            let l = lst.clone();
            g.link(move |_| l.borrow_mut().push(i));
        }
        g.join();
        assert_eq!(*lst.borrow(), (0..count).collect::<Vec<_>>());
    }
}

#[test]
fn links_and_joiners_resume_in_the_order_they_came() {
    // gevent's join is a link added when it begins: a link added before it runs first, one
    // added while a fiber already waits in join, after that joiner.
    let l = log();
    let g = spawn(|| sleep(Duration::from_millis(20)));
    let l1 = l.clone();
    g.link(move |_| push(&l1, "link before"));
    let (g2, l2) = (g.clone(), l.clone());
    let j = spawn(move || {
        g2.join();
        push(&l2, "joiner");
    });
    yield_now(); // j waits in join
    let l3 = l.clone();
    g.link(move |_| push(&l3, "link after"));
    j.join();
    sleep(Duration::from_millis(5));
    assert_eq!(*l.borrow(), ["link before", "joiner", "link after"]);
}

#[test]
fn a_raw_coroutine_that_ends_into_the_hub_leaves_the_hub_running() {
    // D drops the last handle to V, whose cleanup sleeps; D is killed meanwhile and dies. V's
    // parent is D again, so V's end goes to D's first live ancestor, the hub, which waits for
    // `()` from its fibers: the stray end is logged, and the hub must keep running.
    struct SleepyCleanup(Rc<Cell<u32>>);
    impl Drop for SleepyCleanup {
        fn drop(&mut self) {
            self.0.set(1);
            sleep(Duration::from_millis(30));
            self.0.set(2);
        }
    }
    let stage = Rc::new(Cell::new(0));
    let st = stage.clone();
    let d = spawn(move || {
        let v = greenfiber::Coroutine::new(move |()| {
            let _c = SleepyCleanup(st);
            let back = greenfiber::current().parent().unwrap();
            back.switch::<(), ()>(());
        });
        v.switch::<(), ()>(());
        drop(v); // kills V: its cleanup sleeps, D waits in here
        "dropper went on"
    });
    yield_now();
    assert_eq!(stage.get(), 1);
    d.kill();
    assert_eq!(d.get(), Err(Error::Killed));
    sleep(Duration::from_millis(60)); // V's cleanup ends, and V with it, into the hub
    assert_eq!(stage.get(), 2);
    assert_eq!(spawn(|| 42).get(), Ok(42));
}

#[test]
fn a_stray_panic_that_reaches_the_hub_while_it_fires_a_timeout_leaves_the_hub_running() {
    // An orphan raw coroutine (its parent fiber ended) panics into the hub while the hub is
    // raising a timeout (in `fire`, not its run loop): logged, and the hub goes on.
    let slot: Rc<RefCell<Option<greenfiber::Coroutine>>> = Rc::default();
    let s2 = slot.clone();
    let f = spawn(move || {
        let r = greenfiber::Coroutine::new(move |()| {
            let back = greenfiber::current().parent().unwrap();
            back.switch::<(), ()>(());
            panic!("the orphan's panic");
        });
        r.switch::<(), ()>(());
        *s2.borrow_mut() = Some(r);
    });
    f.join();
    let r = slot.borrow_mut().take().unwrap();
    let g = spawn(move || {
        let t =
            greenfiber::with_timeout(Duration::from_millis(5), || sleep(Duration::from_secs(5)));
        assert!(t.is_err());
        r.switch::<(), ()>(()); // resumed from the hub's `fire`: the orphan ends into the hub
    });
    // g never comes back from that switch: its join ends in LoopExit, not in the orphan's panic.
    let e = catch_unwind(AssertUnwindSafe(|| g.join())).expect_err("g came back");
    let msg = Error::from_panic(None, &*e);
    assert!(format!("{msg:?}").contains("LoopExit"), "{msg:?}");
    assert_eq!(spawn(|| 42).get(), Ok(42));
}

#[test]
fn a_detached_fiber_whose_result_waits_in_its_drop_is_not_cut_short() {
    // The fiber's own end drops its result, whose `Drop` sleeps: nobody holds a handle to the
    // fiber then but the hub's passing ones. Its wait record keeps it alive until it is woken.
    struct Slow(Rc<Cell<u32>>);
    impl Drop for Slow {
        fn drop(&mut self) {
            self.0.set(1);
            sleep(Duration::from_millis(20));
            self.0.set(2);
        }
    }
    let stage = Rc::new(Cell::new(0));
    let s2 = stage.clone();
    drop(spawn(move || Slow(s2)));
    yield_now(); // the fiber ends, and parks in its result's drop
    assert_eq!(stage.get(), 1);
    sleep(Duration::from_millis(60));
    assert_eq!(stage.get(), 2, "the drop's sleep was cut short");
}

#[test]
fn a_raw_coroutine_parked_in_the_hub_outlives_its_last_handle() {
    // A raw coroutine waits on an Event when its creator drops the only handle: like a fiber,
    // it waits on (its wait record holds it) and the event wakes it.
    let l = log();
    let ev = Rc::new(greenfiber::sync::Event::new());
    let (l2, e2) = (l.clone(), ev.clone());
    let f = spawn(move || {
        let v = Coroutine::new(move |()| {
            e2.wait();
            push(&l2, "woken");
        });
        let r = with_timeout(Duration::from_millis(5), || v.switch::<(), ()>(()));
        assert!(r.is_err());
        drop(v);
    });
    f.join();
    ev.set();
    sleep(Duration::from_millis(10));
    assert_eq!(*l.borrow(), ["woken"]);
}

#[test]
fn a_long_ready_queue_runs_in_order_with_stale_entries_among_its_fibers() {
    // Over 256 ready at once (the length from which the queue prefetches the fibers a few
    // places ahead), some killed while queued, whose handles stay in the queue as stale
    // entries: each round still runs in spawn order, every live fiber runs all its rounds,
    // and a killed one runs none after its kill.
    const N: usize = 1000;
    let order = Rc::new(RefCell::new(Vec::new()));
    let gs: Vec<_> = (0..N)
        .map(|i| {
            let order = order.clone();
            spawn(move || {
                for round in 0..3 {
                    order.borrow_mut().push((round, i));
                    yield_now();
                }
                order.borrow_mut().push((3, i));
                i
            })
        })
        .collect();
    yield_now(); // every fiber has run its round 0 and is queued again
    let killed = |i: usize| i >= 3 && (i - 3).is_multiple_of(7);
    let mut after_kill = Vec::new();
    for (i, g) in gs.iter().enumerate().filter(|(i, _)| killed(*i)) {
        g.kill();
        after_kill.push((i, order.borrow().len()));
    }
    assert_eq!(joinall(&gs, None), N);
    let order = order.borrow();
    for round in 0..3 {
        let ran: Vec<usize> = order.iter().filter(|(r, _)| *r == round).map(|e| e.1).collect();
        assert!(ran.windows(2).all(|w| w[0] < w[1]), "round {round} out of spawn order");
        let live = (0..N).filter(|&i| !killed(i)).count();
        assert!(ran.len() >= live, "round {round}: {} of {live} live fibers ran", ran.len());
    }
    let mut cut_short = 0;
    for (i, seen) in after_kill {
        assert!(!order[seen..].iter().any(|e| e.1 == i), "fiber {i} ran after its kill");
        // A kill waits for its fiber's death, and others run meanwhile: a fiber killed late
        // may have finished first (the kill is then a no-op).
        let finished = order[..seen].contains(&(3, i));
        assert_eq!(gs[i].get().is_ok(), finished, "fiber {i}");
        cut_short += usize::from(!finished);
    }
    assert!(cut_short > 0, "no kill cut a fiber short");
    for (i, g) in gs.iter().enumerate().filter(|(i, _)| !killed(*i)) {
        assert_eq!(g.get().ok(), Some(i), "fiber {i}");
    }
}
