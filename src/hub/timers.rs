//! The hub's deadline queue: which waiters are due, and when the next one will be.
//!
//! This is a *driver* (see `design.md`, "drivers don't switch"): it stores opaque waiters `W`
//! (the hub uses a fiber handle, the tests use integers) and hands them back when their deadline
//! passes. It never switches, never reads the clock (the caller passes `now`), never sleeps and
//! knows nothing about fibers. Nothing here is `unsafe`, so Miri can check it.
//!
//! # Shape
//!
//! ```text
//!   slots (slab, indexed by TimerKey.slot)        heap (4-ary min-heap of HeapEntry)
//!   ┌────────────────────────────┐               ordered by (deadline, seq)
//!   │ 0: seq 7,  Some(w)   ◄──────────────────── { deadline, seq 7, slot 0 }   live
//!   │ 1: free, next = NONE       │               { deadline, seq 3, slot 1 }   stale: slot is free
//!   │ 2: seq 9,  Some(w)   ◄──────────────────── { deadline, seq 9, slot 2 }   live
//!   └────────────────────────────┘               { deadline, seq 4, slot 2 }   stale: seq differs
//! ```
//!
//! Most timers are timeouts that get cancelled, so `cancel` is *lazy*: it frees the slot (O(1))
//! and leaves the heap entry behind as a stale entry, recognised later because its slot is free or
//! holds a different `seq`. `insert` is a heap push (O(log n) worst case, O(1) on average for
//! deadlines later than most pending ones, which is what timeouts are).
//!
//! # Rules
//!
//! 1. A heap entry is *live* iff `slots[entry.slot]` is occupied with the same `seq`. Every
//!    occupied slot has exactly one live heap entry.
//! 2. The heap is empty or its top is live. `cancel` and `pop_one_due` restore this before
//!    returning, so `next_deadline` is exact and takes `&self`.
//! 3. Stale entries are bounded: when, after a `cancel` or `pop_one_due`, they outnumber live ones
//!    (and there are more than [`COMPACT_MIN`]), the heap is filtered and rebuilt in O(n). Every
//!    stale entry was made by one `cancel`, so this amortizes to O(1) per cancel. When nothing is
//!    live, the heap is cleared. So the heap holds at most
//!    `2 * len() + COMPACT_MIN` entries, and capacities are reused, never shrunk.
//! 4. `seq` grows by one per insert and is never reused; it orders ties and makes a [`TimerKey`]
//!    single-use: cancel after fire (or after a second cancel) returns `None`, even when the slot
//!    has since been reused.
//!
//! | slot      | its heap entry | meaning                                   |
//! |-----------|----------------|-------------------------------------------|
//! | occupied  | live           | pending timer                             |
//! | free      | stale entries  | cancelled, entry not yet skipped/compacted |
//! | free      | none           | fired, or cancelled and cleaned up        |
//! | occupied  | none           | impossible (rule 1)                       |
//!
//! # Memory
//!
//! A heap entry is 32 bytes (`Instant` 16 + `seq` 8 + `slot` 4, padded) and a slot is 16 bytes
//! for an 8-byte niche-carrying `W` such as `Rc<_>` (24 for `u64`): about 48 bytes per pending
//! timer, up to 80 with the maximum of stale entries. The test `million_timers_reuse_capacity`
//! measures it.

use std::time::Instant;

/// Heap fan-out. Four children per node halves the depth of a binary heap and keeps siblings in
/// one or two cache lines.
const ARITY: usize = 4;

/// Compaction is not worth it below this many stale entries (rule 3).
const COMPACT_MIN: usize = 64;

/// End of the free list.
const NONE: u32 = u32::MAX;

/// Names one inserted timer so it can be cancelled. Single-use (rule 4); `Copy` so the hub can keep
/// it in the parked fiber's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct TimerKey {
    slot: u32,
    seq: u64,
}

/// One heap element; `Ord` is by `(deadline, seq)`, so ties fire in insertion order.
#[derive(Clone, Copy, Debug)]
struct HeapEntry {
    deadline: Instant,
    seq: u64,
    slot: u32,
}

impl HeapEntry {
    #[inline]
    fn before(&self, other: &HeapEntry) -> bool {
        (self.deadline, self.seq) < (other.deadline, other.seq)
    }
}

/// One slab slot. Occupied: `waiter` is `Some` and `seq_or_next` is the timer's `seq`.
/// Free: `waiter` is `None` and `seq_or_next` is the next free slot (or [`NONE`]).
#[derive(Debug)]
struct Slot<W> {
    seq_or_next: u64,
    waiter: Option<W>,
}

/// A queue of waiters keyed by deadline; see the module docs for the rules.
#[derive(Debug)]
pub(crate) struct Timers<W> {
    heap: Vec<HeapEntry>,
    slots: Vec<Slot<W>>,
    /// Head of the free-slot list, or [`NONE`].
    free: u32,
    /// Number of pending (live) timers.
    len: usize,
    next_seq: u64,
}

impl<W> Default for Timers<W> {
    fn default() -> Self {
        Self::new()
    }
}

impl<W> Timers<W> {
    /// An empty queue; allocates nothing until the first insert.
    pub(crate) fn new() -> Self {
        Timers { heap: Vec::new(), slots: Vec::new(), free: NONE, len: 0, next_seq: 0 }
    }

    /// Number of pending timers (inserted, neither fired nor cancelled).
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// `true` when no timer is pending.
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Schedules `w` for `deadline`. Among equal deadlines, earlier inserts fire first.
    pub(crate) fn insert(&mut self, deadline: Instant, w: W) -> TimerKey {
        let seq = self.next_seq;
        self.next_seq += 1;
        let slot = if self.free != NONE {
            let slot = self.free;
            let s = &mut self.slots[slot as usize];
            self.free = s.seq_or_next as u32;
            *s = Slot { seq_or_next: seq, waiter: Some(w) };
            slot
        } else {
            let slot = u32::try_from(self.slots.len())
                .ok()
                .filter(|&s| s != NONE)
                .expect("greenfiber: more than 2^32 - 1 pending timers");
            self.slots.push(Slot { seq_or_next: seq, waiter: Some(w) });
            slot
        };
        self.len += 1;
        self.heap.push(HeapEntry { deadline, seq, slot });
        self.sift_up(self.heap.len() - 1);
        TimerKey { slot, seq }
    }

    /// Removes a pending timer and returns its waiter; `None` if it already fired or was
    /// cancelled. O(1) amortized (rule 3), O(log n) when it was the earliest.
    pub(crate) fn cancel(&mut self, key: TimerKey) -> Option<W> {
        let s = self.slots.get_mut(key.slot as usize)?;
        if s.waiter.is_none() || s.seq_or_next != key.seq {
            return None;
        }
        let w = self.free_slot(key.slot);
        self.restore_rules();
        Some(w)
    }

    /// The earliest pending deadline, if any.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        // Rule 2: the top is live.
        self.heap.first().map(|e| e.deadline)
    }

    /// Takes the earliest waiter whose deadline is `<= now` (ties in insertion order), or
    /// `None`. Its key becomes dead (rule 4). One at a time: acting on a timer may cancel
    /// others that are due too (a raised timeout unwinds frames that own timers), and those
    /// must leave the queue rather than be acted on afterwards.
    pub(crate) fn pop_one_due(&mut self, now: Instant) -> Option<W> {
        let mut due = None;
        while let Some(top) = self.heap.first().copied() {
            if top.deadline > now {
                break;
            }
            self.pop_top();
            if self.is_live(&top) {
                due = Some(self.free_slot(top.slot));
                break;
            }
        }
        self.restore_rules();
        due
    }

    /// Moves every waiter whose deadline is `<= now` into `out`, in `(deadline, insertion)`
    /// order.
    #[cfg(test)]
    fn pop_due(&mut self, now: Instant, out: &mut Vec<W>) {
        while let Some(w) = self.pop_one_due(now) {
            out.push(w);
        }
    }

    #[inline]
    fn is_live(&self, e: &HeapEntry) -> bool {
        let s = &self.slots[e.slot as usize];
        s.waiter.is_some() && s.seq_or_next == e.seq
    }

    /// Empties an occupied slot, pushes it on the free list and returns its waiter.
    fn free_slot(&mut self, slot: u32) -> W {
        let s = &mut self.slots[slot as usize];
        let w = s.waiter.take().expect("free_slot on a free slot");
        s.seq_or_next = u64::from(self.free);
        self.free = slot;
        self.len -= 1;
        w
    }

    /// Re-establishes rules 2 and 3 after a timer left the queue.
    fn restore_rules(&mut self) {
        if self.len == 0 {
            // Everything left is stale.
            self.heap.clear();
        } else if self.heap.len() - self.len > self.len.max(COMPACT_MIN) {
            self.compact();
        } else {
            self.drop_stale_top();
        }
    }

    fn drop_stale_top(&mut self) {
        while let Some(top) = self.heap.first() {
            if self.is_live(top) {
                break;
            }
            self.pop_top();
        }
    }

    fn pop_top(&mut self) {
        let last = self.heap.pop().expect("pop_top on an empty heap");
        if !self.heap.is_empty() {
            self.heap[0] = last;
            self.sift_down(0);
        }
    }

    /// Drops every stale entry and rebuilds the heap (rule 3).
    fn compact(&mut self) {
        let before = self.heap.len();
        let mut heap = std::mem::take(&mut self.heap);
        heap.retain(|e| self.is_live(e));
        self.heap = heap;
        debug_assert_eq!(self.heap.len(), self.len);
        if self.heap.len() > 1 {
            for i in (0..=(self.heap.len() - 2) / ARITY).rev() {
                self.sift_down(i);
            }
        }
        log::trace!("timers: compacted heap from {before} to {} entries", self.heap.len());
    }

    fn sift_up(&mut self, mut i: usize) {
        let e = self.heap[i];
        while i > 0 {
            let parent = (i - 1) / ARITY;
            if !e.before(&self.heap[parent]) {
                break;
            }
            self.heap[i] = self.heap[parent];
            i = parent;
        }
        self.heap[i] = e;
    }

    fn sift_down(&mut self, mut i: usize) {
        let n = self.heap.len();
        let e = self.heap[i];
        loop {
            let first = i * ARITY + 1;
            if first >= n {
                break;
            }
            let mut best = first;
            for c in first + 1..(first + ARITY).min(n) {
                if self.heap[c].before(&self.heap[best]) {
                    best = c;
                }
            }
            if !self.heap[best].before(&e) {
                break;
            }
            self.heap[i] = self.heap[best];
            i = best;
        }
        self.heap[i] = e;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ms(base: Instant, n: u64) -> Instant {
        base + Duration::from_millis(n)
    }

    fn drain_all<W>(t: &mut Timers<W>) -> Vec<W> {
        let mut out = Vec::new();
        t.pop_due(ms(Instant::now(), 1 << 40), &mut out);
        out
    }

    #[test]
    fn empty() {
        let mut t: Timers<u32> = Timers::new();
        assert!(t.is_empty());
        assert_eq!(t.len(), 0);
        assert_eq!(t.next_deadline(), None);
        let mut out = Vec::new();
        t.pop_due(Instant::now(), &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn fires_in_deadline_order() {
        let base = Instant::now();
        let mut t = Timers::new();
        for (i, d) in [50, 10, 40, 20, 30, 0, 60].into_iter().enumerate() {
            t.insert(ms(base, d), i);
        }
        assert_eq!(t.len(), 7);
        assert_eq!(t.next_deadline(), Some(base));

        let mut out = Vec::new();
        t.pop_due(ms(base, 25), &mut out);
        assert_eq!(out, [5, 1, 3]); // deadlines 0, 10, 20
        assert_eq!(t.next_deadline(), Some(ms(base, 30)));
        assert_eq!(t.len(), 4);

        out.clear();
        t.pop_due(ms(base, 30), &mut out); // deadline == now is due
        assert_eq!(out, [4]);
        assert_eq!(drain_all(&mut t), [2, 0, 6]);
        assert!(t.is_empty());
        assert_eq!(t.next_deadline(), None);
    }

    #[test]
    fn ties_fire_in_insertion_order() {
        let base = Instant::now();
        let mut t = Timers::new();
        for i in 0..100 {
            t.insert(ms(base, 5), i);
        }
        t.insert(ms(base, 1), 1000);
        let mut out = Vec::new();
        t.pop_due(ms(base, 5), &mut out);
        let mut want = vec![1000];
        want.extend(0..100);
        assert_eq!(out, want);
    }

    #[test]
    fn cancel_first_middle_last() {
        let base = Instant::now();
        let mut t = Timers::new();
        let keys: Vec<_> = (0..5).map(|i| t.insert(ms(base, 10 * i), i)).collect();

        assert_eq!(t.cancel(keys[0]), Some(0)); // first: next deadline moves on
        assert_eq!(t.next_deadline(), Some(ms(base, 10)));
        assert_eq!(t.cancel(keys[2]), Some(2)); // middle
        assert_eq!(t.cancel(keys[4]), Some(4)); // last
        assert_eq!(t.cancel(keys[4]), None); // twice
        assert_eq!(t.len(), 2);
        assert_eq!(t.next_deadline(), Some(ms(base, 10)));
        assert_eq!(drain_all(&mut t), [1, 3]);
    }

    #[test]
    fn cancel_after_fire_is_none_even_if_slot_reused() {
        let base = Instant::now();
        let mut t = Timers::new();
        let k = t.insert(base, 1);
        let mut out = Vec::new();
        t.pop_due(base, &mut out);
        assert_eq!(out, [1]);
        assert_eq!(t.cancel(k), None);

        let k2 = t.insert(base, 2); // reuses the slot
        assert_eq!(k2.slot, k.slot);
        assert_eq!(t.cancel(k), None);
        assert_eq!(t.len(), 1);
        assert_eq!(t.cancel(k2), Some(2));
        assert!(t.is_empty());
    }

    #[test]
    fn stale_entries_never_fire_and_are_compacted() {
        let base = Instant::now();
        let mut t = Timers::new();
        let keys: Vec<_> = (0..1000u64).map(|i| t.insert(ms(base, 1000 - i), i)).collect();
        // Cancel every odd one: compaction keeps stale entries at most live + COMPACT_MIN.
        for k in keys.iter().skip(1).step_by(2) {
            assert!(t.cancel(*k).is_some());
            assert!(t.heap.len() <= 2 * t.len() + COMPACT_MIN + 1);
        }
        assert_eq!(t.len(), 500);
        let out = drain_all(&mut t);
        let want: Vec<u64> = (0..1000).rev().filter(|i| i % 2 == 0).collect();
        assert_eq!(out, want);
    }

    /// Checks every ordering and cancellation decision against a sorted list.
    #[test]
    fn matches_a_model() {
        let base = Instant::now();
        let mut t = Timers::new();
        let mut model: Vec<(u64, u64, TimerKey)> = Vec::new(); // (deadline ms, id, key)
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut now = 0;
        let rounds = if cfg!(miri) { 300 } else { 20_000 };
        for id in 0..rounds {
            match next() % 4 {
                0 | 1 => {
                    let d = now + next() % 50;
                    model.push((d, id, t.insert(ms(base, d), id)));
                }
                2 if !model.is_empty() => {
                    let i = (next() % model.len() as u64) as usize;
                    let (_, want, key) = model.remove(i);
                    assert_eq!(t.cancel(key), Some(want));
                    assert_eq!(t.cancel(key), None);
                }
                _ => {
                    now += next() % 10;
                    let mut out = Vec::new();
                    t.pop_due(ms(base, now), &mut out);
                    // stable sort keeps insertion order among equal deadlines
                    model.sort_by_key(|&(d, _, _)| d);
                    let n = model.iter().take_while(|&&(d, _, _)| d <= now).count();
                    let want: Vec<u64> = model.drain(..n).map(|(_, id, _)| id).collect();
                    assert_eq!(out, want);
                }
            }
            assert_eq!(t.len(), model.len());
            let want_next = model.iter().map(|&(d, _, _)| d).min().map(|d| ms(base, d));
            assert_eq!(t.next_deadline(), want_next);
        }
    }

    #[test]
    fn entry_sizes() {
        // The numbers in the module docs' "Memory" section.
        assert_eq!(size_of::<HeapEntry>(), 32);
        assert_eq!(size_of::<Slot<std::rc::Rc<()>>>(), 16);
        assert_eq!(size_of::<Slot<u64>>(), 24);
    }

    #[test]
    fn million_timers_reuse_capacity() {
        let n: u64 = if cfg!(miri) { 2_000 } else { 1_000_000 };
        let base = Instant::now();
        let mut t = Timers::new();
        let mut keys = Vec::with_capacity(n as usize);
        let mut capacities = None;
        for round in 0..2 {
            for i in 0..n {
                // Timeouts: mostly increasing deadlines with some jitter.
                keys.push(t.insert(ms(base, 1_000 + i / 3 + (i * 7919) % 50), i));
            }
            assert_eq!(t.len(), n as usize);
            let bytes = t.heap.capacity() * size_of::<HeapEntry>()
                + t.slots.capacity() * size_of::<Slot<u64>>();
            // 32 (heap entry) + 24 (slot for u64), plus Vec doubling slack: 58 for n = 10^6.
            assert!(bytes as u64 / n <= 64, "{} bytes per timer", bytes as u64 / n);

            // Cancel in an interleaved order: every third from the front, then the rest.
            for k in keys.iter().step_by(3).chain(keys.iter().skip(1).step_by(3)) {
                assert!(t.cancel(*k).is_some());
            }
            for k in keys.iter().skip(2).step_by(3) {
                assert!(t.cancel(*k).is_some());
            }
            keys.clear();
            assert!(t.is_empty());
            assert_eq!(t.next_deadline(), None);
            assert!(t.heap.is_empty());
            let caps = (t.heap.capacity(), t.slots.capacity());
            match capacities {
                None => capacities = Some(caps),
                Some(first) => assert_eq!(caps, first, "round {round} grew the queue"),
            }
        }
        assert!(drain_all(&mut t).is_empty());
    }

    #[test]
    fn drops_pending_waiters() {
        use std::rc::Rc;
        let w = Rc::new(());
        let mut t = Timers::new();
        let k = t.insert(Instant::now(), w.clone());
        t.insert(Instant::now(), w.clone());
        assert_eq!(Rc::strong_count(&w), 3);
        drop(t.cancel(k));
        assert_eq!(Rc::strong_count(&w), 2);
        drop(t);
        assert_eq!(Rc::strong_count(&w), 1);
    }
}
