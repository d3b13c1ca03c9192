//! The one wait list under every primitive of `sync`: the hub's FIFO [`WaitList`] with direct
//! hand-off (its entry-state table is in `hub/park.rs`), re-exported here with what each
//! primitive grants and where an unclaimed grant goes.
//!
//! A releaser never just "wakes" a waiter and hopes it finds the permit or item when it runs:
//! it *grants* the value to the first entry and unlinks it in one step. If that waiter is then
//! killed or interrupted before it runs, the entry's guard passes the grant on (`hand_on`).
//!
//! | primitive          | list      | grant `V`        | offer      | unclaimed grant goes to                    |
//! |--------------------|-----------|------------------|------------|--------------------------------------------|
//! | Semaphore, Lock    | waiters   | a permit `()`    | —          | `release` again: next waiter or the count  |
//! | RLock              | (its Lock)| a permit `()`    | —          | as Lock                                    |
//! | Event, AsyncResult | waiters   | "it is set" `()` | —          | nowhere (every waiter was granted)         |
//! | Condition          | waiters   | a notify `()`    | —          | the next waiter, else dropped (as notify)  |
//! | Queue getters      | getters   | a reservation `()` | —        | the next getter, else nowhere: the item stays stored (`queue.rs`) |
//! | Queue putters      | putters   | — (offer taken)  | the item   | nothing: the item is already in the queue  |
//! | Channel getters    | getters   | a reservation `()` | —        | the next getter, else nowhere: the item stays held (`channel.rs`) |
//! | Channel putters    | putters   | — (offer taken)  | the item   | nothing: a getter has it                   |
//! | JoinableQueue join | joiners   | "all done" `()`  | —          | nowhere                                    |

pub(crate) use crate::hub::park::{Outcome, WaitList};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::{spawn, yield_now};
    use std::cell::Cell;
    use std::rc::Rc;
    use std::time::{Duration, Instant};

    #[test]
    fn grants_go_to_waiters_in_fifo_order() {
        let list: Rc<WaitList<u32>> = Rc::new(WaitList::new());
        let got = Rc::new(std::cell::RefCell::new(Vec::new()));
        let gs: Vec<_> = (0..3)
            .map(|i| {
                let (list, got) = (list.clone(), got.clone());
                spawn(move || {
                    let o = list.wait_for("test", None, None, |_| panic!("no unwind here"));
                    got.borrow_mut().push((i, o));
                })
            })
            .collect();
        yield_now();
        assert_eq!(list.len(), 3);
        for v in [10, 20, 30] {
            assert_eq!(list.grant_one(v), Ok(()));
        }
        assert_eq!(list.grant_one(40), Err(40));
        crate::hub::joinall(&gs, None);
        let got = got.borrow();
        assert_eq!(
            *got,
            [
                (0, Outcome::Granted(Some(10))),
                (1, Outcome::Granted(Some(20))),
                (2, Outcome::Granted(Some(30)))
            ]
        );
    }

    #[test]
    fn a_grant_to_a_killed_waiter_is_handed_on_exactly_once() {
        let list: Rc<WaitList<u32>> = Rc::new(WaitList::new());
        let handed = Rc::new(Cell::new(0u32));
        let (l, h) = (list.clone(), handed.clone());
        let g = spawn(move || l.wait_for("test", None, None, move |v| h.set(h.get() + v)));
        yield_now();
        assert_eq!(list.grant_one(7), Ok(())); // granted, queued, not yet run
        g.kill();
        assert_eq!(handed.get(), 7);
        assert!(list.is_empty());
        assert!(g.take().unwrap().is_err());
    }

    #[test]
    fn a_killed_waiting_entry_leaves_the_list_and_gets_nothing() {
        let list: Rc<WaitList<u32>> = Rc::new(WaitList::new());
        let handed = Rc::new(Cell::new(0u32));
        let (l, h) = (list.clone(), handed.clone());
        let g = spawn(move || l.wait_for("test", None, None, move |v| h.set(v)));
        yield_now();
        assert_eq!(list.len(), 1);
        g.kill();
        assert!(list.is_empty());
        assert_eq!(list.grant_one(5), Err(5));
        assert_eq!(handed.get(), 0);
    }

    #[test]
    fn timeout_returns_the_offer_and_a_grant_beats_a_fired_timer() {
        let list: WaitList<&str> = WaitList::new();
        let t = Instant::now();
        let o = list.wait_for(
            "test",
            Some("mine"),
            Some(Instant::now() + Duration::from_millis(5)),
            |_| {},
        );
        assert_eq!(o, Outcome::TimedOut(Some("mine")));
        assert!(t.elapsed() >= Duration::from_millis(5));
        assert!(list.is_empty());

        // The timer fires (waiter Woken(TimedOut)), then a releaser grants before it runs.
        let list: Rc<WaitList<u32>> = Rc::new(WaitList::new());
        let l = list.clone();
        let g = spawn(move || l.wait_for("test", None, Some(Instant::now()), |_| {}));
        yield_now(); // g parks with a deadline already due
        yield_now(); // the hub fires the timer and queues g behind us ...
        let _ = list.grant_one(9); // ... and it is still in the list or already gone
        g.join();
        let o = g.take().unwrap().unwrap();
        assert!(o == Outcome::Granted(Some(9)) || o == Outcome::TimedOut(None), "{o:?}");
    }

    #[test]
    fn take_one_takes_the_offer_and_grant_all_reaches_everyone() {
        let list: Rc<WaitList<u32>> = Rc::new(WaitList::new());
        let l = list.clone();
        let putter = spawn(move || l.wait_for("put", Some(3), None, |_| {}));
        yield_now();
        assert_eq!(list.take_one(), Some(Some(3)));
        assert_eq!(list.take_one(), None);
        putter.join();
        assert_eq!(putter.take().unwrap().unwrap(), Outcome::Granted(None));

        let gs: Vec<_> = (0..4)
            .map(|_| {
                let l = list.clone();
                spawn(move || l.wait_for("all", None, None, |_| {}))
            })
            .collect();
        yield_now();
        assert_eq!(list.grant_all(|| 1), 4);
        crate::hub::joinall(&gs, None);
        assert!(gs.iter().all(|g| g.take().unwrap().unwrap() == Outcome::Granted(Some(1))));
    }

    #[test]
    fn entries_that_leave_from_head_middle_and_tail_keep_the_rest_in_fifo_order() {
        let list: Rc<WaitList<u32>> = Rc::new(WaitList::new());
        let got = Rc::new(std::cell::RefCell::new(Vec::new()));
        let soon = Instant::now() + Duration::from_millis(5);
        let gs: Vec<_> = (0..7u32)
            .map(|i| {
                let (list, got) = (list.clone(), got.clone());
                // Entry 3 times out; 0 (the head) and 6 (the tail) are killed below.
                let deadline = (i == 3).then_some(soon);
                spawn(move || {
                    let o = list.wait_for("test", None, deadline, |_| panic!("nothing granted"));
                    got.borrow_mut().push((i, o));
                })
            })
            .collect();
        yield_now();
        assert_eq!(list.len(), 7);
        gs[0].kill();
        gs[6].kill();
        gs[3].join();
        assert_eq!(list.len(), 4);
        for v in [10, 20, 30, 40] {
            assert_eq!(list.grant_one(v), Ok(()));
        }
        assert!(list.is_empty());
        assert_eq!(list.grant_one(50), Err(50));
        crate::hub::joinall(&gs, None);
        let mut got = got.borrow_mut();
        got.sort_by_key(|(i, _)| *i);
        assert_eq!(
            *got,
            [
                (1, Outcome::Granted(Some(10))),
                (2, Outcome::Granted(Some(20))),
                (3, Outcome::TimedOut(None)),
                (4, Outcome::Granted(Some(30))),
                (5, Outcome::Granted(Some(40))),
            ]
        );
    }

    #[test]
    fn a_thousand_entries_leaving_in_shuffled_order_lose_and_duplicate_nothing() {
        const N: u32 = 1000;
        let list: Rc<WaitList<u32>> = Rc::new(WaitList::new());
        let granted = Rc::new(Cell::new(0u32));
        let timed_out = Rc::new(Cell::new(0u32));
        let start = Instant::now();
        let mut x = 12345u32;
        let gs: Vec<_> = (0..N)
            .map(|i| {
                // Every odd entry times out, at a pseudo-random point within 20 ms.
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                let deadline =
                    (i % 2 == 1).then(|| start + Duration::from_micros(u64::from(x >> 8) % 20_000));
                let (list, granted, timed_out) = (list.clone(), granted.clone(), timed_out.clone());
                spawn(move || match list.wait_for("test", None, deadline, |_| {}) {
                    Outcome::Granted(Some(v)) => {
                        assert_eq!(v, i);
                        granted.set(granted.get() + 1);
                    }
                    Outcome::TimedOut(None) => timed_out.set(timed_out.get() + 1),
                    o => panic!("unexpected {o:?}"),
                })
            })
            .collect();
        yield_now();
        crate::hub::sleep(Duration::from_millis(30));
        assert_eq!(timed_out.get(), N / 2);
        assert_eq!(list.len(), (N / 2) as usize);
        // The even entries are left, in their original order: grant each its own index.
        let mut next = 0;
        assert_eq!(
            list.grant_all(|| {
                let v = next;
                next += 2;
                v
            }),
            (N / 2) as usize
        );
        assert!(list.is_empty());
        crate::hub::joinall(&gs, None);
        assert!(gs.iter().all(|g| g.take().unwrap().is_ok()));
        assert_eq!(granted.get(), N / 2);
    }
}
