//! Layer 4: Group and Pool — size limit, spawn waiting while full, apply/map/imap_unordered,
//! join, kill, and no permit lost when pool fibers are killed.
use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;
use std::time::Duration;

use greenfiber::pool::{Group, Pool};
use greenfiber::{Error, sleep, spawn, yield_now};

#[test]
fn group_spawn_len_join_kill() {
    let g = Group::new();
    assert!(g.is_empty());
    let done = Rc::new(Cell::new(0));
    for ms in [5u64, 10, 15] {
        let d = done.clone();
        g.spawn(move || {
            sleep(Duration::from_millis(ms));
            d.set(d.get() + 1);
        });
    }
    assert_eq!(g.len(), 3);
    assert!(!g.join_timeout(Duration::from_millis(1)));
    g.join();
    assert_eq!((g.len(), done.get()), (0, 3));

    let sleepers: Vec<_> = (0..3).map(|_| g.spawn(|| sleep(Duration::from_secs(3600)))).collect();
    yield_now();
    g.kill();
    assert!(g.is_empty());
    assert!(sleepers.iter().all(|s| s.get() == Err(Error::Killed)));
    assert!(g.join_timeout(Duration::ZERO));
}

#[test]
fn pool_runs_at_most_size_at_once_and_spawn_waits_while_full() {
    let pool = Pool::new(2);
    let (inside, peak) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
    for _ in 0..6 {
        let (i, p) = (inside.clone(), peak.clone());
        pool.spawn(move || {
            i.set(i.get() + 1);
            p.set(p.get().max(i.get()));
            sleep(Duration::from_millis(2));
            i.set(i.get() - 1);
        });
        assert!(pool.len() <= 2);
    }
    pool.join();
    assert_eq!(peak.get(), 2);
    assert_eq!((pool.len(), pool.free_count(), pool.size()), (0, 2, 2));
}

#[test]
fn pool_apply_returns_the_value_and_re_raises_a_panic() {
    let pool = Pool::new(1);
    assert_eq!(pool.apply(|| 6 * 7), 42);
    let p = catch_unwind(AssertUnwindSafe(|| pool.apply(|| -> u8 { panic!("apply boom") })))
        .unwrap_err();
    assert_eq!(p.downcast_ref::<&str>(), Some(&"apply boom"));
    assert_eq!(pool.free_count(), 1);
}

#[test]
fn pool_map_keeps_order_and_imap_unordered_yields_as_they_finish() {
    let pool = Pool::new(3);
    let out = pool.map(0..10u64, |i| {
        sleep(Duration::from_millis(10 - i));
        i * 10
    });
    assert_eq!(out, (0..10).map(|i| i * 10).collect::<Vec<_>>());

    let order: Vec<u64> = pool
        .imap_unordered([30u64, 10, 20], |ms| {
            sleep(Duration::from_millis(ms));
            ms
        })
        .collect();
    assert_eq!(order, [10, 20, 30]);
    let mut all: Vec<u32> = pool.imap_unordered(0..20u32, |i| i).collect();
    all.sort();
    assert_eq!(all, (0..20).collect::<Vec<_>>());
    pool.join();
    assert_eq!(pool.free_count(), 3);
}

#[test]
fn pool_kill_mid_wait_loses_no_permit() {
    let pool = Pool::new(2);
    let started = Rc::new(Cell::new(0));
    for _ in 0..2 {
        let s = started.clone();
        pool.spawn(move || {
            s.set(s.get() + 1);
            sleep(Duration::from_secs(3600));
        });
    }
    assert_eq!(pool.free_count(), 0);
    // Spawners waiting for a slot: one is killed while it waits.
    let spawners: Vec<_> = (0..2)
        .map(|_| {
            let (pool, s) = (pool.clone(), started.clone());
            spawn(move || {
                pool.spawn(move || s.set(s.get() + 1));
            })
        })
        .collect();
    yield_now();
    spawners[0].kill();
    // Both sleepers die; a permit goes to spawners[1], whose new member the kill kills too
    // before it starts (gevent's Group.kill goes on until the group is empty).
    pool.kill();
    spawners[1].join();
    assert!(spawners[1].successful());
    pool.join();
    assert_eq!(started.get(), 2);
    assert_eq!((pool.len(), pool.free_count()), (0, 2));

    // Killed before it ever started: the permit comes back too.
    let never = pool.spawn(|| unreachable!());
    assert_eq!(pool.free_count(), 1);
    never.kill();
    assert_eq!(pool.free_count(), 2);
}

#[test]
fn imap_unordered_after_a_kill_reports_instead_of_hanging() {
    let pool = Pool::new(1);
    let mut it = pool.imap_unordered(0..5u32, |i| {
        sleep(Duration::from_secs(3600));
        i
    });
    yield_now(); // the feeder spawns the first task and waits for a slot
    pool.kill();
    assert_eq!(pool.free_count(), 1);
    // Two tasks report their kill: the one running and the one waiting for its slot; the
    // items never read are not tasks.
    for _ in 0..2 {
        let p = catch_unwind(AssertUnwindSafe(|| it.next())).unwrap_err();
        assert!(p.downcast_ref::<&str>().unwrap().contains("killed"));
    }
    assert_eq!(it.next(), None);
}

#[test]
fn imap_unordered_reads_its_source_lazily_so_an_endless_one_works() {
    // gevent's imap greenlet pulls items one at a time as slots free up.
    let read = Rc::new(Cell::new(0usize));
    let r = read.clone();
    let source = (0u64..).inspect(move |_| r.set(r.get() + 1));
    let pool = Pool::new(2);
    let mut it = pool.imap_unordered(source, |i| {
        sleep(Duration::from_millis(1));
        i * 2
    });
    let first = it.next().unwrap();
    assert!(first <= 2, "{first}");
    assert!(read.get() <= 4, "read {} items before the first result", read.get());
    let more: Vec<u64> = it.by_ref().take(20).collect();
    assert_eq!(more.len(), 20);
    assert!(read.get() < 40, "read {}", read.get());
    pool.kill();
}

#[test]
fn imap_unordered_re_raises_a_panic_of_its_source_after_spawning_what_came_before() {
    let pool = Pool::new(3);
    let source = (0..5u32).map(|i| if i == 3 { panic!("source failed at 3") } else { i });
    let mut it = pool.imap_unordered(source, |i| i);
    let mut got = Vec::new();
    let err = loop {
        match catch_unwind(AssertUnwindSafe(|| it.next())) {
            Ok(Some(v)) => got.push(v),
            Ok(None) => panic!("the source's panic was lost"),
            Err(p) => break p,
        }
    };
    assert_eq!(*err.downcast_ref::<&str>().unwrap(), "source failed at 3");
    got.extend(it.by_ref());
    got.sort();
    assert_eq!(got, [0, 1, 2]);
    assert_eq!(pool.free_count(), 3);
}

#[test]
fn finished_members_do_not_pile_up_in_a_pool_that_runs_on() {
    // Each task's result holds a clone of `token`; the caller drops every handle, so a clone
    // stays alive only while the pool keeps a finished member.
    let token = Rc::new(());
    let pool = Pool::new(4);
    for _ in 0..10_000 {
        let t = token.clone();
        drop(pool.spawn(move || {
            yield_now();
            t
        }));
    }
    // At most the 4 running, plus the finished ones since the last sweep (about twice the
    // unfinished members, and never fewer than 64).
    let kept = Rc::strong_count(&token) - 1;
    assert!(kept <= 4 + 64, "{kept} finished results kept alive");
    pool.join();
    assert_eq!(pool.len(), 0);
    assert_eq!(Rc::strong_count(&token), 1);
}

#[test]
fn group_join_waits_for_members_added_while_it_waits() {
    let g = Group::new();
    let done = Rc::new(Cell::new(0));
    let (g2, d) = (g.clone(), done.clone());
    g.spawn(move || {
        sleep(Duration::from_millis(2));
        // Added after join took its snapshot: join must still wait for it.
        let d2 = d.clone();
        g2.spawn(move || {
            sleep(Duration::from_millis(5));
            d2.set(d2.get() + 1);
        });
        d.set(d.get() + 1);
    });
    g.join();
    assert_eq!((g.len(), done.get()), (0, 2));
}

#[test]
fn apply_from_inside_the_pool_runs_inline_instead_of_deadlocking() {
    // gevent's test_reentrant: a full pool's own fiber applies into the same pool.
    let pool = Pool::new(1);
    let p2 = pool.clone();
    assert_eq!(pool.apply(move || p2.apply(|| 2) * 3), 6);
    let p3 = pool.clone();
    let g = pool.spawn(move || p3.apply(|| 7));
    assert_eq!(g.get().unwrap(), 7);
    assert_eq!(pool.free_count(), 1);
}

/// A fiber that survives kills (catches `GreenletExit` and sleeps on) until `quit`, counting
/// the kills it received: gevent's `Undead` in test__greenletset.py.
fn undead(shots: Rc<Cell<u32>>, quit: Rc<Cell<bool>>) -> impl FnOnce() {
    move || {
        while !quit.get() {
            if let Err(p) = catch_unwind(AssertUnwindSafe(|| sleep(Duration::from_millis(20)))) {
                assert!(p.is::<greenfiber::GreenletExit>());
                shots.set(shots.get() + 1);
            }
        }
    }
}

#[test]
fn group_kill_shoots_every_member_once_and_keeps_the_survivors() {
    // gevent's test__greenletset.py::test_kill_fires_once.
    let quit = Rc::new(Cell::new(false));
    let shots = [Rc::new(Cell::new(0)), Rc::new(Cell::new(0))];
    let g = Group::new();
    let members: Vec<_> = shots.iter().map(|s| g.spawn(undead(s.clone(), quit.clone()))).collect();
    sleep(Duration::from_millis(5));
    let timed_out = greenfiber::with_timeout(Duration::from_millis(100), || g.kill()).is_err();
    let counts = || shots.iter().map(|s| s.get()).collect::<Vec<_>>();
    assert!(timed_out, "undead members cannot be killed");
    assert_eq!(counts(), [1, 1], "each member shot once, the second too");
    assert_eq!(g.len(), 2, "the survivors are still members");
    assert!(!g.join_timeout(Duration::from_millis(30)));
    // Killing again does not shoot them again.
    assert!(!g.kill_timeout(Duration::from_millis(30)));
    assert_eq!(counts(), [1, 1]);
    quit.set(true);
    g.join();
    assert!(members.iter().all(|m| m.successful()));

    // The same through a pool: its members stay counted and their slots held.
    quit.set(false);
    let pool = Pool::new(2);
    let shots = Rc::new(Cell::new(0));
    for _ in 0..2 {
        pool.spawn(undead(shots.clone(), quit.clone()));
    }
    sleep(Duration::from_millis(5));
    assert!(greenfiber::with_timeout(Duration::from_millis(100), || pool.kill()).is_err());
    assert_eq!((shots.get(), pool.len(), pool.free_count()), (2, 2, 0));
    assert!(!pool.join_timeout(Duration::from_millis(30)));
    quit.set(true);
    pool.join();
    assert_eq!((pool.len(), pool.free_count()), (0, 2));
}

#[test]
fn a_member_that_kills_its_group_dies_after_the_others() {
    let g = Group::new();
    let killer_group = g.clone();
    let order = Rc::new(std::cell::RefCell::new(Vec::new()));
    let (o1, o2) = (order.clone(), order.clone());
    let killer = g.spawn(move || {
        struct Note(Rc<std::cell::RefCell<Vec<&'static str>>>, &'static str);
        impl Drop for Note {
            fn drop(&mut self) {
                self.0.borrow_mut().push(self.1);
            }
        }
        let _n = Note(o1, "killer");
        sleep(Duration::from_millis(5));
        killer_group.kill();
        unreachable!("the killer is a member: it dies in its own kill");
    });
    let other = g.spawn(move || {
        sleep(Duration::from_secs(3600));
        o2.borrow_mut().push("other returned");
    });
    killer.join();
    other.join();
    assert!(matches!(killer.get(), Err(Error::Killed)), "{:?}", killer.get());
    assert!(matches!(other.get(), Err(Error::Killed)));
    assert_eq!(*order.borrow(), ["killer"]);
    assert!(g.is_empty());
}

#[test]
fn imap_unordered_killed_before_its_feeder_ran_ends_instead_of_hanging() {
    let pool = Pool::new(2);
    let mut it = pool.imap_unordered(0..10u32, |i| i);
    pool.kill(); // the feeder never started
    assert_eq!(it.next(), None);
}

#[test]
fn pool_kill_timeout_kills_the_tasks_while_a_feeder_is_slow_to_die() {
    let pool = Pool::new(4);
    let task = pool.spawn(|| sleep(Duration::from_secs(3600)));
    // A source that blocks for its next item and, killed, cleans up for a while first.
    let source = std::iter::from_fn(|| {
        match catch_unwind(AssertUnwindSafe(|| sleep(Duration::from_secs(3600)))) {
            Ok(()) => Some(1u32),
            Err(p) => {
                sleep(Duration::from_millis(300));
                std::panic::resume_unwind(p)
            }
        }
    });
    let _it = pool.imap_unordered(source, |x| x);
    sleep(Duration::from_millis(5)); // the feeder waits in the source
    assert!(!pool.kill_timeout(Duration::from_millis(50)), "the feeder is still cleaning up");
    assert!(task.ready(), "every kill goes out before any wait");
    pool.join();
}

#[test]
fn dropping_an_imap_unordered_iterator_stops_its_feeder() {
    let pool = Pool::new(2);
    let five: Vec<u64> = pool.imap_unordered(0u64.., |i| i).take(5).collect();
    assert_eq!(five.len(), 5);
    // The endless source is no longer read: the pool runs dry.
    assert!(pool.join_timeout(Duration::from_secs(10)));
    assert!(pool.is_empty());
}
