//! Layer 4: Queue, LifoQueue, PriorityQueue, JoinableQueue, Channel — blocking, FIFO order,
//! Full/Empty, timeouts, and no item lost when getters or putters are killed mid-wait.
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use greenfiber::sync::{
    Channel, Empty, Full, JoinableQueue, LifoQueue, PriorityQueue, Queue, SyncError,
};
use greenfiber::{Error, Greenlet, joinall, sleep, spawn, yield_now};

#[test]
fn unbounded_queue_is_fifo_with_distinct_full_and_empty() {
    let q = Queue::new();
    assert!(q.is_empty() && q.capacity().is_none());
    for i in 0..100 {
        assert_eq!(q.try_put(i), Ok(()));
    }
    assert_eq!(q.len(), 100);
    assert_eq!((0..100).map(|_| q.get()).collect::<Vec<_>>(), (0..100).collect::<Vec<_>>());
    assert_eq!(q.try_get(), Err(Empty));
    let b = Queue::bounded(1);
    b.put('x');
    assert!(b.is_full());
    assert_eq!(b.try_put('y'), Err(Full('y')));
}

#[test]
fn bounded_put_blocks_when_full_and_get_when_empty() {
    let q = Rc::new(Queue::bounded(2));
    let log = Rc::new(RefCell::new(Vec::new()));
    let (q2, l2) = (q.clone(), log.clone());
    let producer = spawn(move || {
        for i in 0..5 {
            q2.put(i);
            l2.borrow_mut().push(format!("put {i}"));
        }
    });
    yield_now();
    // Two fit, the third waits.
    assert_eq!(*log.borrow(), ["put 0", "put 1"]);
    assert_eq!(q.putters_waiting(), 1);
    assert_eq!(q.get(), 0); // moves the waiting putter's item in
    assert_eq!(q.len(), 2);
    let rest: Vec<_> = (0..4).map(|_| q.get()).collect();
    assert_eq!(rest, [1, 2, 3, 4]);
    producer.join();
    assert!(q.is_empty());
}

#[test]
fn getters_and_putters_are_served_in_fifo_order() {
    let q = Rc::new(Queue::new());
    let got = Rc::new(RefCell::new(Vec::new()));
    let gs: Vec<_> = (0..4)
        .map(|i| {
            let (q, got) = (q.clone(), got.clone());
            spawn(move || {
                let v = q.get(); // not inside push(): no borrow across the wait
                got.borrow_mut().push((i, v))
            })
        })
        .collect();
    yield_now();
    assert_eq!(q.getters_waiting(), 4);
    for v in ["a", "b", "c", "d"] {
        q.put(v);
    }
    assert_eq!(q.len(), 4); // reserved for the getters, which take them when they run
    assert_eq!(q.try_get(), Err(Empty)); // no barging past them
    joinall(&gs, None);
    assert_eq!(*got.borrow(), [(0, "a"), (1, "b"), (2, "c"), (3, "d")]);

    let q = Rc::new(Queue::bounded(1));
    q.put(0);
    let ps: Vec<_> = (1..=3)
        .map(|i| {
            let q = q.clone();
            spawn(move || q.put(i))
        })
        .collect();
    yield_now();
    assert_eq!((0..4).map(|_| q.get()).collect::<Vec<_>>(), [0, 1, 2, 3]);
    joinall(&ps, None);
}

#[test]
fn timeouts_give_the_item_back_and_leave_no_waiter() {
    let q = Queue::bounded(1);
    let t = Instant::now();
    assert_eq!(q.get_timeout(Duration::from_millis(10)), Err(Empty));
    assert!(t.elapsed() >= Duration::from_millis(10));
    q.put(1);
    assert_eq!(q.put_timeout(2, Duration::from_millis(10)), Err(Full(2)));
    assert_eq!((q.getters_waiting(), q.putters_waiting(), q.len()), (0, 0, 1));
    assert_eq!(q.get_timeout(Duration::from_millis(10)), Ok(1));
}

#[test]
fn queue_kill_mid_wait_loses_no_item() {
    // Getters: one killed while waiting, one killed after it was handed an item.
    let q = Rc::new(Queue::new());
    let got = Rc::new(RefCell::new(Vec::new()));
    let gs: Vec<_> = (0..3)
        .map(|_| {
            let (q, got) = (q.clone(), got.clone());
            spawn(move || {
                let v = q.get();
                got.borrow_mut().push(v)
            })
        })
        .collect();
    yield_now();
    gs[1].kill();
    assert_eq!(q.getters_waiting(), 2);
    q.put(10); // to gs[0]
    gs[0].kill(); // handed on to gs[2]
    q.put(20); // nobody waits: stored
    joinall(&gs, None);
    assert_eq!(*got.borrow(), [10]);
    assert_eq!(q.len(), 1);
    assert_eq!(q.get(), 20);

    // The last getter dies holding an item: it goes back to the front.
    let q2 = q.clone();
    let g = spawn(move || q2.get());
    yield_now();
    q.put(30);
    g.kill();
    q.put(31);
    assert_eq!((q.get(), q.get()), (30, 31));

    // Putters: a waiting putter's item dies with it; an accepted one stays in the queue.
    let b = Rc::new(Queue::bounded(1));
    b.put(0);
    let ps: Vec<_> = (1..=3)
        .map(|i| {
            let b = b.clone();
            spawn(move || b.put(i))
        })
        .collect();
    yield_now();
    ps[1].kill(); // item 2 never entered
    assert_eq!(b.get(), 0); // admits item 1
    ps[0].kill(); // accepted already: item 1 stays
    assert_eq!(b.putters_waiting(), 1);
    assert_eq!((b.get(), b.get()), (1, 3));
    joinall(&ps, None);
    assert!(b.is_empty());
    assert_eq!(ps[1].get(), Err(Error::Killed));
}

/// What each getter got: (its index, the item).
type Got = Rc<RefCell<Vec<(usize, i32)>>>;

/// Getters `0..n` of `q` waiting in order; each records what it got.
fn getters<Q: 'static>(n: usize, q: &Rc<Q>, get: fn(&Q) -> i32) -> (Vec<Greenlet<()>>, Got) {
    let got = Rc::new(RefCell::new(Vec::new()));
    let gs = (0..n)
        .map(|i| {
            let (q, got) = (q.clone(), got.clone());
            spawn(move || {
                let v = get(&q);
                got.borrow_mut().push((i, v))
            })
        })
        .collect();
    yield_now();
    (gs, got)
}

#[test]
fn items_handed_on_by_a_killed_getter_keep_the_getters_order() {
    // Four getters; three items put before any getter runs; the first and the third getters
    // are killed before they run (`killall` kills both before either is joined). The getters
    // that run take the items in order, as in gevent, where a getter takes its item only once
    // it runs.
    let q = Rc::new(Queue::new());
    let (gs, got) = getters(4, &q, |q| q.get());
    q.put(1);
    q.put(2);
    q.put(3);
    greenfiber::killall(&[gs[0].clone(), gs[2].clone()]);
    joinall(&gs, None);
    assert_eq!(*got.borrow(), [(1, 1), (3, 2)]);
    assert_eq!(q.get(), 3, "the item left over stays in the queue");
}

#[test]
fn a_getter_takes_what_its_storage_gives_when_it_runs_whichever_getter_died() {
    // A priority queue's getter gets the smallest item there when it runs.
    let q = Rc::new(PriorityQueue::new());
    let (gs, got) = getters(2, &q, |q| q.get());
    q.put(5); // reserved for getter 0
    q.put(1); // reserved for getter 1
    gs[0].kill();
    joinall(&gs, None);
    assert_eq!((got.borrow().clone(), q.get()), (vec![(1, 1)], 5));

    // A LIFO queue's getter gets the newest item there when it runs.
    let q = Rc::new(LifoQueue::new());
    let (gs, got) = getters(3, &q, |q| q.get());
    q.put(1); // reserved for getter 0
    q.put(2); // reserved for getter 1
    q.put(3); // reserved for getter 2
    gs[0].kill(); // (the others run meanwhile)
    joinall(&gs, None);
    assert_eq!(*got.borrow(), [(1, 3), (2, 2)]);
    assert_eq!(q.get(), 1);
}

#[test]
fn channel_items_reach_the_getters_that_run_in_the_order_they_were_put() {
    // Two putters each hand an item to a getter before either getter runs; the first getter
    // is killed before it runs. The getters that run take 1 then 2.
    let c = Rc::new(Channel::new());
    let (gs, got) = getters(3, &c, |c| c.get());
    let ps: Vec<_> = [1, 2]
        .into_iter()
        .map(|v| {
            let c = c.clone();
            spawn(move || c.put(v))
        })
        .collect();
    yield_now(); // both putters grant a getter, and yield
    assert_eq!(c.getters_waiting(), 1);
    gs[0].kill(); // before it ran: its reservation passes to getter 2
    joinall(&gs, None);
    joinall(&ps, None);
    assert_eq!(*got.borrow(), [(1, 1), (2, 2)]);
    assert_eq!(c.try_get(), Err(Empty));
}

#[test]
fn an_item_admitted_from_a_putter_goes_to_a_waiting_getter() {
    // bounded(1): getter 0's item fills the queue, so the second put waits; when getter 0
    // takes its item the put's item is admitted, and it is getter 1's.
    let q = Rc::new(Queue::bounded(1));
    let (gs, got) = getters(2, &q, |q| q.get());
    q.put(1);
    q.put(2);
    let done = joinall(&gs, Some(Duration::from_secs(5)));
    let state = (done, got.borrow().clone(), q.len(), q.getters_waiting());
    assert_eq!(state, (2, vec![(0, 1), (1, 2)], 0, 0), "(joined, got, len, getters waiting)");
}

#[test]
fn a_reserved_item_is_not_taken_by_a_later_get() {
    // An item put while a getter waits is that getter's, though it is still in the queue
    // (it counts in `len`) until the getter runs.
    let q = Rc::new(Queue::new());
    let (gs, got) = getters(1, &q, |q| q.get());
    q.put(7);
    assert_eq!((q.len(), q.try_get()), (1, Err(Empty)));
    joinall(&gs, None);
    assert_eq!((got.borrow().clone(), q.len()), (vec![(0, 7)], 0));
}

#[test]
fn lifo_and_priority_queues() {
    let l = LifoQueue::new();
    for i in 0..4 {
        l.put(i);
    }
    assert_eq!(l.len(), 4);
    assert_eq!((0..4).map(|_| l.get()).collect::<Vec<_>>(), [3, 2, 1, 0]);
    assert_eq!(l.try_get(), Err(Empty));

    let p = PriorityQueue::new();
    for v in [5, 1, 4, 2, 3] {
        p.put(v);
    }
    assert_eq!((0..5).map(|_| p.get()).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    let p = PriorityQueue::bounded(2);
    p.put(std::cmp::Reverse(1));
    p.put(std::cmp::Reverse(9));
    assert!(p.try_put(std::cmp::Reverse(5)).is_err());
    assert_eq!(p.get().0, 9);
}

#[test]
fn priority_queue_kill_mid_wait_loses_no_item() {
    let p = Rc::new(PriorityQueue::new());
    let p2 = p.clone();
    let g = spawn(move || p2.get());
    yield_now();
    p.put(7); // handed to g
    g.kill();
    p.put(3);
    assert_eq!((p.len(), p.get(), p.get()), (2, 3, 7));
}

#[test]
fn joinable_queue_join_waits_for_task_done() {
    let q = Rc::new(JoinableQueue::new());
    let done = Rc::new(Cell::new(0));
    for i in 0..4 {
        q.put(i);
    }
    assert_eq!(q.unfinished_tasks(), 4);
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let (q, done) = (q.clone(), done.clone());
            spawn(move || {
                while let Ok(_item) = q.try_get() {
                    // Work that blocks: a zero timeout fires before any of it is done. (Work
                    // that only yields may all finish first, as in gevent: the hub runs ready
                    // fibers before it looks at due timers.)
                    sleep(Duration::from_millis(1));
                    done.set(done.get() + 1);
                    q.task_done().unwrap();
                }
            })
        })
        .collect();
    assert!(!q.join_timeout(Duration::ZERO));
    q.join();
    assert_eq!(done.get(), 4);
    assert_eq!(q.unfinished_tasks(), 0);
    assert_eq!(q.task_done(), Err(SyncError::TooManyTaskDone));
    joinall(&workers, None);
    assert!(q.join_timeout(Duration::from_millis(1)));
}

#[test]
fn joinable_queue_kill_mid_join_and_put_counts_only_accepted_items() {
    let q = Rc::new(JoinableQueue::bounded(1));
    q.put(1);
    let q2 = q.clone();
    let joiner = spawn(move || q2.join());
    let q3 = q.clone();
    let putter = spawn(move || q3.put(2));
    yield_now();
    joiner.kill();
    putter.kill(); // its item was never accepted
    assert_eq!(q.put_timeout(3, Duration::from_millis(1)), Err(Full(3)));
    assert_eq!(q.unfinished_tasks(), 1);
    assert_eq!(q.get(), 1);
    q.task_done().unwrap();
    assert!(q.join_timeout(Duration::ZERO));
}

#[test]
fn channel_put_returns_only_after_the_getter_ran() {
    let ch = Rc::new(Channel::new());
    let log = Rc::new(RefCell::new(Vec::new()));
    let (c2, l2) = (ch.clone(), log.clone());
    let getter = spawn(move || {
        let v = c2.get();
        l2.borrow_mut().push(format!("got {v}"));
    });
    yield_now();
    ch.put(1);
    log.borrow_mut().push("put returned".into());
    assert_eq!(*log.borrow(), ["got 1", "put returned"]);
    getter.join();

    // A putter waits for a getter.
    let (c3, l3) = (ch.clone(), log.clone());
    let putter = spawn(move || {
        c3.put(2);
        l3.borrow_mut().push("put 2 returned".into());
    });
    yield_now();
    assert_eq!(ch.putters_waiting(), 1);
    assert_eq!(ch.get(), 2);
    log.borrow_mut().push("get returned".into());
    putter.join();
    assert_eq!(log.borrow()[2..], ["get returned", "put 2 returned"]);
    assert_eq!(ch.try_get(), Err(Empty));
    assert_eq!(ch.get_timeout(Duration::from_millis(5)), Err(Empty));
}

#[test]
fn channel_kill_mid_wait_loses_no_item() {
    let ch = Rc::new(Channel::new());
    let got = Rc::new(RefCell::new(Vec::new()));
    let gs: Vec<_> = (0..2)
        .map(|_| {
            let (ch, got) = (ch.clone(), got.clone());
            spawn(move || {
                let v = ch.get();
                got.borrow_mut().push(v)
            })
        })
        .collect();
    yield_now();
    let c2 = ch.clone();
    let putter = spawn(move || c2.put("x"));
    gs[0].kill(); // leaves before the put
    yield_now(); // putter hands "x" to gs[1] and yields to it
    putter.join();
    assert_eq!(*got.borrow(), ["x"]);

    // Granted, then killed with no other getter: the next get takes it.
    let c3 = ch.clone();
    let g = spawn(move || c3.get());
    yield_now();
    let c4 = ch.clone();
    let p = spawn(move || c4.put("y"));
    yield_now(); // p grants "y" to g and yields; kill g before the hub runs it
    g.kill();
    assert_eq!(ch.get(), "y");
    p.join();
    // A putter killed while waiting takes its item along.
    let c5 = ch.clone();
    let p2 = spawn(move || c5.put("z"));
    yield_now();
    p2.kill();
    assert_eq!(ch.try_get(), Err(Empty));
}

#[test]
fn channel_try_put_and_put_timeout_need_a_getter_and_give_the_item_back_without_one() {
    // gevent's test__queue.py: Channel put_nowait raises Full with nobody waiting, and a put
    // interrupted by its timeout leaves nothing behind.
    let ch = Rc::new(Channel::new());
    assert_eq!(ch.try_put(1u32).map_err(|f| f.0), Err(1));
    let t = Instant::now();
    assert_eq!(ch.put_timeout(2u32, Duration::from_millis(20)).map_err(|f| f.0), Err(2));
    assert!(t.elapsed() >= Duration::from_millis(20));
    assert_eq!(ch.putters_waiting(), 0);
    assert!(ch.try_get().is_err(), "the timed-out put left its item behind");
    // With a getter waiting, try_put hands the item over and returns after it ran.
    let got = Rc::new(Cell::new(0));
    let (c2, g2) = (ch.clone(), got.clone());
    let getter = spawn(move || g2.set(c2.get()));
    yield_now();
    assert!(ch.try_put(3).is_ok());
    assert_eq!(got.get(), 3);
    getter.join();
    // A getter that comes within the timeout takes the item.
    let c3 = ch.clone();
    let late = spawn(move || {
        greenfiber::sleep(Duration::from_millis(5));
        c3.get()
    });
    assert!(ch.put_timeout(4, Duration::from_secs(5)).is_ok());
    assert_eq!(late.get(), Ok(4));
}
