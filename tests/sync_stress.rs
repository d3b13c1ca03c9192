//! Randomized kills and timeouts against the sync primitives (40 seeds each), checking that
//! nothing is lost, duplicated or invented and that no waiter is left behind.
use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::rc::Rc;
use std::time::Duration;

use greenfiber::sync::{Channel, Lock, Queue, Semaphore};
use greenfiber::{Greenlet, sleep, spawn, with_timeout, yield_now};

struct Rng(Cell<u64>);
impl Rng {
    fn next(&self) -> u64 {
        let mut x = self.0.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0.set(x);
        x
    }
    fn below(&self, n: u64) -> u64 {
        self.next() % n
    }
}

fn pause(r: &Rng) {
    match r.below(4) {
        0 => {}
        1 => yield_now(),
        2 => sleep(Duration::from_micros(r.below(300))),
        _ => {
            yield_now();
            yield_now()
        }
    }
}

struct SemGuard(Rc<Semaphore>, Rc<Cell<i64>>);
impl Drop for SemGuard {
    fn drop(&mut self) {
        self.1.set(self.1.get() - 1);
        self.0.release();
    }
}

#[test]
fn semaphore_under_random_kills_and_timeouts_keeps_its_permits() {
    for seed in 1..40u64 {
        let rng = Rc::new(Rng(Cell::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)));
        let sem = Rc::new(Semaphore::new(3));
        let inside = Rc::new(Cell::new(0i64));
        let gs: Vec<Greenlet<()>> = (0..20)
            .map(|_| {
                let (sem, inside, rng) = (sem.clone(), inside.clone(), rng.clone());
                spawn(move || {
                    for _ in 0..20 {
                        let got = match rng.below(3) {
                            0 => {
                                sem.acquire();
                                true
                            }
                            1 => sem.acquire_timeout(Duration::from_micros(rng.below(500))),
                            _ => with_timeout(Duration::from_micros(rng.below(500)), || {
                                sem.acquire()
                            })
                            .is_ok(),
                        };
                        if got {
                            inside.set(inside.get() + 1);
                            assert!(inside.get() <= 3, "more than 3 inside");
                            let _g = SemGuard(sem.clone(), inside.clone());
                            pause(&rng);
                        } else {
                            pause(&rng);
                        }
                    }
                })
            })
            .collect();
        let killer = {
            let (gs, rng) = (gs.clone(), rng.clone());
            spawn(move || {
                for _ in 0..10 {
                    sleep(Duration::from_micros(rng.below(1000)));
                    let g = &gs[rng.below(gs.len() as u64) as usize];
                    g.kill();
                }
            })
        };
        killer.join();
        greenfiber::joinall(&gs, None);
        assert_eq!(inside.get(), 0);
        assert_eq!(sem.waiting(), 0, "seed {seed}");
        assert_eq!(sem.available(), 3, "seed {seed}: permits lost or duplicated");
    }
}

#[test]
fn lock_under_random_kills_and_timeouts_stays_usable() {
    for seed in 1..40u64 {
        let rng = Rc::new(Rng(Cell::new(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1)));
        let lock = Rc::new(Lock::new());
        let inside = Rc::new(Cell::new(0i64));
        let gs: Vec<Greenlet<()>> = (0..12)
            .map(|_| {
                let (lock, inside, rng) = (lock.clone(), inside.clone(), rng.clone());
                spawn(move || {
                    for _ in 0..20 {
                        let r = with_timeout(Duration::from_micros(rng.below(800)), || {
                            let _g = lock.lock();
                            inside.set(inside.get() + 1);
                            assert_eq!(inside.get(), 1);
                            struct Out(Rc<Cell<i64>>);
                            impl Drop for Out {
                                fn drop(&mut self) {
                                    self.0.set(self.0.get() - 1);
                                }
                            }
                            let _o = Out(inside.clone());
                            pause(&rng);
                        });
                        let _ = r;
                        pause(&rng);
                    }
                })
            })
            .collect();
        let killer = {
            let (gs, rng) = (gs.clone(), rng.clone());
            spawn(move || {
                for _ in 0..6 {
                    sleep(Duration::from_micros(rng.below(1000)));
                    gs[rng.below(gs.len() as u64) as usize].kill();
                }
            })
        };
        killer.join();
        greenfiber::joinall(&gs, None);
        assert!(!lock.locked(), "seed {seed}: lock left held");
        assert!(lock.try_acquire());
        lock.release().unwrap();
    }
}

/// What the conservation check needs of a `Queue` and of a `Channel` (the same API).
trait Pipe {
    fn put(&self, item: u64);
    fn put_timeout(&self, item: u64, d: Duration) -> bool;
    fn get(&self) -> u64;
    fn get_timeout(&self, d: Duration) -> Option<u64>;
    fn try_get(&self) -> Option<u64>;
    fn waiting(&self) -> usize;
}

macro_rules! pipe {
    ($t:ty) => {
        impl Pipe for $t {
            fn put(&self, item: u64) {
                <$t>::put(self, item)
            }
            fn put_timeout(&self, item: u64, d: Duration) -> bool {
                <$t>::put_timeout(self, item, d).is_ok()
            }
            fn get(&self) -> u64 {
                <$t>::get(self)
            }
            fn get_timeout(&self, d: Duration) -> Option<u64> {
                <$t>::get_timeout(self, d).ok()
            }
            fn try_get(&self) -> Option<u64> {
                <$t>::try_get(self).ok()
            }
            fn waiting(&self) -> usize {
                self.getters_waiting() + self.putters_waiting()
            }
        }
    };
}
pipe!(Queue<u64>);
pipe!(Channel<u64>);

/// `n` putters and `n` getters, each 30 times with a plain, a `*_timeout` or a `with_timeout`
/// wait, while a killer kills 8 of them at random: no item accepted is lost, none is delivered
/// twice or made up, and no waiter is left behind.
fn conserves<P: Pipe + 'static>(make: impl Fn() -> P, n: u64, mix: u64) {
    for seed in 1..40u64 {
        let rng = Rc::new(Rng(Cell::new(seed.wrapping_mul(mix) | 1)));
        let q = Rc::new(make());
        let ok_put = Rc::new(RefCell::new(HashSet::new()));
        let tried = Rc::new(RefCell::new(HashSet::new()));
        let got = Rc::new(RefCell::new(Vec::new()));
        let mut gs: Vec<Greenlet<()>> = Vec::new();
        for p in 0..n {
            let (q, rng, ok_put, tried) = (q.clone(), rng.clone(), ok_put.clone(), tried.clone());
            gs.push(spawn(move || {
                for i in 0..30 {
                    let item = p * 1000 + i;
                    tried.borrow_mut().insert(item);
                    let ok = match rng.below(3) {
                        0 => {
                            q.put(item);
                            true
                        }
                        1 => q.put_timeout(item, Duration::from_micros(rng.below(400))),
                        _ => with_timeout(Duration::from_micros(rng.below(400)), || q.put(item))
                            .is_ok(),
                    };
                    if ok {
                        ok_put.borrow_mut().insert(item);
                    }
                    pause(&rng);
                }
            }));
        }
        for _ in 0..n {
            let (q, rng, got) = (q.clone(), rng.clone(), got.clone());
            gs.push(spawn(move || {
                for _ in 0..30 {
                    let v = match rng.below(3) {
                        0 => Some(q.get()),
                        1 => q.get_timeout(Duration::from_micros(rng.below(400))),
                        _ => with_timeout(Duration::from_micros(rng.below(400)), || q.get()).ok(),
                    };
                    if let Some(v) = v {
                        got.borrow_mut().push(v);
                    }
                    pause(&rng);
                }
            }));
        }
        let killer = {
            let (gs, rng) = (gs.clone(), rng.clone());
            spawn(move || {
                for _ in 0..8 {
                    sleep(Duration::from_micros(rng.below(1500)));
                    gs[rng.below(gs.len() as u64) as usize].kill();
                }
            })
        };
        killer.join();
        // Getters may wait forever now: kill everything that is left.
        sleep(Duration::from_millis(20));
        greenfiber::killall(&gs);
        let mut all = got.borrow().clone();
        while let Some(v) = q.try_get() {
            all.push(v);
        }
        let set: HashSet<u64> = all.iter().copied().collect();
        assert_eq!(set.len(), all.len(), "seed {seed}: an item delivered twice");
        assert!(set.is_subset(&tried.borrow()), "seed {seed}: an item from nowhere");
        let missing: Vec<_> = ok_put.borrow().difference(&set).copied().collect();
        assert!(missing.is_empty(), "seed {seed}: accepted items lost: {missing:?}");
        assert_eq!(q.waiting(), 0);
    }
}

#[test]
fn queue_under_random_kills_and_timeouts_loses_and_duplicates_nothing() {
    conserves(|| Queue::bounded(2), 6, 0xD1B5_4A32_D192_ED03);
}

#[test]
fn channel_under_random_kills_and_timeouts_loses_and_duplicates_nothing() {
    conserves(Channel::new, 5, 0x9FB2_1C65_1E98_DF25);
}
