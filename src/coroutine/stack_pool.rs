//! Per-thread pools of coroutine stacks, by size class, and arena growth.
//!
//! ```text
//!  take(size) --> SizeClass --> default size: this thread's StackCache (ThreadState::stacks)
//!                                 0. pop its last stack given back
//!                             --> this thread's Pool
//!                                 classes[i]: free: [slot, slot, ...]  LIFO: last given, first taken
//!                                             arenas: [cursor]         next uncarved slot of an arena
//!                                 1. pop a free slot
//!                                 2. else carve the next slot of the current arena
//!                                 3. else adopt a share of what exited threads left (ORPHANS)
//!                                 4. else map a new arena (~256 MiB of address space) and carve
//!  give(stack) / drop(stack) --> clear owner name --> push on this thread's StackCache (default
//!                                size, while the thread's coroutine state lives), else on its
//!                                Pool's free list
//!  take / give while this thread's Pool is busy (a logger that switched while the pool maps
//!  an arena and logs it) --> ORPHANS
//!  thread exit --> the StackCache's stacks --> the Pool (or ORPHANS if it is gone first)
//!              --> the thread's whole Pool (free slots + partly carved arenas) --> ORPHANS
//! ```
//!
//! # Size classes
//!
//! A request is rounded up to whole pages, then to a power of two of pages, at least
//! `MIN_CLASS_PAGES` (16 KiB with 4 KiB pages). Class `i` has `4 << i` usable pages, and its
//! slots are one guard page larger. Rounding to powers of two costs only address space,
//! because a page costs memory only once touched. In exchange, a thread has a handful of
//! classes, each with one partly carved arena, however many distinct sizes it asks for.
//!
//! # Why arenas are never unmapped
//!
//! A slot moves between owners: a coroutine, a free list, a later coroutine, and possibly
//! another thread's pool after its first thread exits. The overflow handler also reads each
//! arena's registry entry and name table without locks, at any moment. Unmapping an arena would
//! need to prove that none of its slots is owned by a live coroutine (some may sit in
//! thread-locals that are torn down after this pool) and that no handler is mid-lookup.
//! Keeping arenas for the life of the process makes both questions disappear. Memory still
//! returns to use: free slots are reused (LIFO, so the warmest first), and an exiting thread
//! hands its free slots and partly used arenas to [`ORPHANS`] for the next thread that runs
//! out. The cost is that the touched pages of a free stack stay resident. A pool that has shrunk
//! keeps the high-water mark of its touched stack pages.

use std::cell::{Cell, RefCell};
use std::io;
use std::ptr;
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::stack::{self, Arena, FiberStack, Slot, page_size};
use super::thread;

/// Default usable size of a coroutine stack: 256 KiB.
///
/// It is address space, not memory. `MAP_NORESERVE` means no commit charge, and a stack costs
/// only the pages its deepest call touched (often one or two pages). So a generous default is
/// nearly free. 256 KiB is deep enough for ordinary recursion, formatting and panic unwinding
/// in debug builds. A million such stacks take about 254 GiB of the 128 TiB user address space,
/// in about a thousand arenas, well under `vm.max_map_count`. Ask for more per coroutine if it
/// recurses deeply; overflowing is reported and aborts, it is never silent corruption.
pub(crate) const DEFAULT_STACK_SIZE: usize = 256 * 1024;

/// Smallest class, in usable pages (16 KiB with 4 KiB pages; corosensei needs 4 KiB).
const MIN_CLASS_PAGES: usize = 4;

/// Address space mapped per arena (rounded down to whole slots; at least one slot).
const ARENA_BYTES: usize = 256 << 20;

/// A size class: which free list, and how big its slots are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SizeClass {
    /// Index into `Pool::classes`: usable pages are `MIN_CLASS_PAGES << index`.
    index: usize,
    /// Bytes per slot, guard page included.
    slot_size: usize,
}

impl SizeClass {
    /// The class that serves a request for `size` usable bytes, or `None` if the size is too
    /// large to represent.
    fn for_request(size: usize, page: usize) -> Option<SizeClass> {
        debug_assert!(page.is_power_of_two());
        // `size.div_ceil(page)` without a division: `page` is a power of two (`page_size`).
        let whole = (size >> page.trailing_zeros()) + usize::from(size & (page - 1) != 0);
        let pages = whole.max(MIN_CLASS_PAGES).checked_next_power_of_two()?;
        let index = (pages.trailing_zeros() - MIN_CLASS_PAGES.trailing_zeros()) as usize;
        let slot_size = pages.checked_add(1)?.checked_mul(page)?;
        Some(SizeClass { index, slot_size })
    }

    /// Slots per arena of this class.
    fn slots_per_arena(self) -> usize {
        (ARENA_BYTES / self.slot_size).max(1)
    }
}

/// An arena being carved: slots `next..` are still untouched.
struct Cursor {
    arena: Arena,
    next: usize,
}

/// One size class's stacks.
#[derive(Default)]
struct ClassPool {
    /// Slots given back, ready for reuse (guard pages installed). Used as a LIFO stack.
    free: Vec<Slot>,
    /// Arenas with uncarved slots; the last one is carved first.
    arenas: Vec<Cursor>,
}

impl ClassPool {
    /// Moves everything from `other` into `self`. `other`'s free slots go under ours, so this
    /// thread's own (warmer) stacks are still reused first.
    fn adopt(&mut self, other: &mut ClassPool) {
        other.free.append(&mut self.free);
        std::mem::swap(&mut self.free, &mut other.free);
        other.arenas.append(&mut self.arenas);
        std::mem::swap(&mut self.arenas, &mut other.arenas);
    }

    /// Takes a share of `other` for a thread that ran out: up to [`ADOPT_SLOTS`] free slots
    /// (the warmest, from the top of its list), or if it has none, one partly carved arena.
    /// Threads that run out at the same time then each get some, instead of the first taking
    /// everything and the others mapping new arenas (which are never unmapped).
    fn adopt_some(&mut self, other: &mut ClassPool) {
        let n = other.free.len().min(ADOPT_SLOTS);
        if n > 0 {
            let at = other.free.len() - n;
            self.free.extend(other.free.drain(at..));
        } else if let Some(cursor) = other.arenas.pop() {
            self.arenas.push(cursor);
        }
    }
}

/// At most this many free slots move from [`ORPHANS`] to a thread at a time.
const ADOPT_SLOTS: usize = 256;

/// Stacks of every class: one per thread, plus [`ORPHANS`].
struct Pool {
    classes: Vec<ClassPool>,
}

impl Pool {
    const fn new() -> Pool {
        Pool { classes: Vec::new() }
    }

    fn class(&mut self, index: usize) -> &mut ClassPool {
        if self.classes.len() <= index {
            self.classes.resize_with(index + 1, ClassPool::default);
        }
        &mut self.classes[index]
    }

    /// A slot from the free list, else the next uncarved slot of an arena; `None` if both
    /// are empty.
    fn take_local(&mut self, class: SizeClass) -> io::Result<Option<Slot>> {
        let pool = self.class(class.index);
        if let Some(slot) = pool.free.pop() {
            return Ok(Some(slot));
        }
        while let Some(cursor) = pool.arenas.last_mut() {
            if cursor.next < cursor.arena.slots() {
                let slot = cursor.arena.carve(cursor.next, class.index)?;
                cursor.next += 1;
                return Ok(Some(slot));
            }
            // Fully carved. Forget the cursor; the arena stays mapped (rule 1 in stack.rs) and
            // its slots live on in free lists and coroutines.
            pool.arenas.pop();
        }
        Ok(None)
    }

    /// Takes a slot of `class`: local stock, else whatever `adopt` brings in, else a new arena.
    fn take(&mut self, class: SizeClass, adopt: impl FnOnce(&mut ClassPool)) -> io::Result<Slot> {
        if let Some(slot) = self.take_local(class)? {
            return Ok(slot);
        }
        adopt(self.class(class.index));
        if let Some(slot) = self.take_local(class)? {
            return Ok(slot);
        }
        let arena = Arena::map(class.slot_size, class.slots_per_arena())?;
        self.class(class.index).arenas.push(Cursor { arena, next: 0 });
        Ok(self.take_local(class)?.expect("a fresh arena has a slot"))
    }

    /// Puts a slot on its class's free list.
    fn put(&mut self, slot: Slot) {
        self.class(slot.class).free.push(slot);
    }

    /// Moves everything from `other` into `self`.
    fn adopt_all(&mut self, other: &mut Pool) {
        for (index, class) in other.classes.iter_mut().enumerate() {
            self.class(index).adopt(class);
        }
    }
}

/// What exited threads left behind, for any thread to adopt. Also the pool of last resort for
/// stacks taken or given while this thread's pool is being torn down.
static ORPHANS: Mutex<Pool> = Mutex::new(Pool::new());

fn orphans() -> MutexGuard<'static, Pool> {
    // The pool's data stays consistent even if a panic (e.g. mmap failure) unwound through a
    // holder: every update is a single push or pop.
    ORPHANS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// This thread's pool. Dropped at thread exit, handing everything to [`ORPHANS`].
struct ThreadPool(RefCell<Pool>);

impl Drop for ThreadPool {
    fn drop(&mut self) {
        orphans().adopt_all(self.0.get_mut());
    }
}

thread_local! {
    static POOL: ThreadPool = const { ThreadPool(RefCell::new(Pool::new())) };
}

/// Takes a stack with at least `size` usable bytes from this thread's pool, or carves it from
/// an arena (mapping a new one when needed). Sizes are rounded up to a size class (see the
/// module docs), so [`FiberStack::usable_size`] may be larger than `size`.
///
/// # Panics
///
/// If the arena cannot be mapped (the message carries the OS error, e.g. "Cannot allocate
/// memory"), or if `size` is absurdly large.
pub(crate) fn take(size: usize) -> FiberStack {
    let class = SizeClass::for_request(size, page_size())
        .unwrap_or_else(|| panic!("greenfiber: a coroutine stack of {size} bytes is too large"));
    // Stacks of the default size come back to the thread's cache: take from there first.
    if let Some(Some(stack)) = thread::if_live(|ts| ts.stacks.pop(class.index)) {
        return stack;
    }
    // The common case first: a free slot of this class in this thread's pool.
    let reused = POOL.try_with(|pool| {
        let mut pool = pool.0.try_borrow_mut().ok()?;
        pool.classes.get_mut(class.index).and_then(|c| c.free.pop())
    });
    let slot = match reused {
        Ok(Some(slot)) => slot,
        _ => take_slow(class),
    };
    // SAFETY: `slot` was just popped from a free list or carved (each index once), so nothing
    // else owns it; carving installed its guard page and free slots keep theirs (rules 2 and 3
    // in stack.rs).
    unsafe { FiberStack::from_slot(slot) }
}

/// [`take`] when this thread's pool has no free slot of the class: carve one, adopt what exited
/// threads left, or map a new arena.
#[cold]
#[inline(never)]
fn take_slow(class: SizeClass) -> Slot {
    let mine = POOL.try_with(|pool| {
        // Busy only if something run under the borrow switched away; its logs do not (rule 5
        // in stack.rs: they wait for `flush_logs` below).
        let mut pool = pool.0.try_borrow_mut().ok()?;
        Some(pool.take(class, |mine| mine.adopt_some(orphans().class(class.index))))
    });
    let taken = match mine {
        Ok(Some(taken)) => taken,
        // This thread's pool is gone (thread-local teardown) or busy: the shared one serves.
        _ => orphans().take(class, |_| {}),
    };
    // The pool is let go: what mapping and carving had to say may be logged now.
    stack::flush_logs();
    taken.unwrap_or_else(|e| {
        panic!(
            "greenfiber: cannot map memory for coroutine stacks ({} stacks of {} bytes): {e}",
            class.slots_per_arena(),
            class.slot_size
        )
    })
}

/// Gives a stack back to this thread's pool for reuse, clearing its owner name. The same as
/// dropping it.
pub(crate) fn give(stack: FiberStack) {
    drop(stack);
}

/// Called by `FiberStack::drop`: clears the slot's owner name and puts it on this thread's
/// [`StackCache`] if it has the default size, else on this thread's free list (or the shared
/// one while this thread's pool is being torn down).
pub(super) fn recycle(slot: Slot) {
    let mut slot = Some(slot);
    let _ = thread::if_live(|ts| ts.stacks.put(&mut slot));
    if let Some(slot) = slot {
        recycle_in_pool(slot);
    }
}

/// [`recycle`] past the thread's cache.
#[cold]
#[inline(never)]
fn recycle_in_pool(slot: Slot) {
    slot.name.clear();
    let mut slot = Some(slot);
    let _ = POOL.try_with(|pool| {
        // Busy, as in `take_slow`: the slot goes to the shared pool below.
        if let Ok(mut pool) = pool.0.try_borrow_mut() {
            pool.put(slot.take().expect("taken once"));
        }
    });
    if let Some(slot) = slot {
        // This thread's pool is gone (thread-local teardown) or busy.
        orphans().put(slot);
    }
}

/// A thread's free stacks of the default size: what `Builder::build` takes and a finished
/// coroutine gives back, in a few loads and stores and without the pool's thread-local, borrow
/// and size-class arithmetic. Kept in the thread's coroutine state (`ThreadState::stacks`),
/// which `build` has at hand anyway.
///
/// A LIFO list threaded through the free stacks themselves: each one's link, a [`FreeNode`],
/// sits in the highest bytes of its own stack, the first page its last coroutine touched (and
/// the first its next one will). The list owns those slots (rule 2 in `stack.rs`), so nobody
/// else reads or writes that memory meanwhile. Dropped with the thread's state, it hands its
/// stacks to the pool (or, if the pool is gone already, to [`ORPHANS`]).
pub(crate) struct StackCache {
    /// The size-class index of [`DEFAULT_STACK_SIZE`]: the only class kept here.
    class: usize,
    /// The last stack given back, or null.
    head: Cell<*mut FreeNode>,
}

/// The link of a free stack in a [`StackCache`], at the top of its own stack.
struct FreeNode {
    slot: Slot,
    next: *mut FreeNode,
}

impl StackCache {
    pub(crate) fn new() -> StackCache {
        let class = SizeClass::for_request(DEFAULT_STACK_SIZE, page_size())
            .expect("the default stack size has a class");
        StackCache { class: class.index, head: Cell::new(ptr::null_mut()) }
    }

    /// A stack of [`DEFAULT_STACK_SIZE`]: the last one given back to this cache, else one from
    /// the pool ([`take`]).
    #[inline]
    pub(crate) fn take(&self) -> FiberStack {
        self.pop(self.class).unwrap_or_else(|| take(DEFAULT_STACK_SIZE))
    }

    /// The last stack given back to this cache, if it keeps `class` and has one.
    #[inline]
    fn pop(&self, class: usize) -> Option<FiberStack> {
        let node = self.head.get();
        if node.is_null() || class != self.class {
            return None;
        }
        // SAFETY: a node on the list was written by `put` at the top of a free slot that the
        // list owns (rule 2 in `stack.rs`), and nothing wrote there since; reading it moves the
        // slot out of the list, which forgets the node by setting the head past it.
        let FreeNode { slot, next } = unsafe { node.read() };
        self.head.set(next);
        // SAFETY: `slot` was on this free list, so nothing else owns it, and free slots keep
        // their guard pages (rules 2 and 3 in `stack.rs`).
        Some(unsafe { FiberStack::from_slot(slot) })
    }

    /// Gives a stack back: to this cache if it has the default size, else to the pool. The
    /// same as dropping it, with the thread's state at hand.
    #[inline]
    pub(crate) fn give(&self, stack: FiberStack) {
        let mut slot = Some(stack.into_slot());
        self.put(&mut slot);
        if let Some(slot) = slot {
            recycle_in_pool(slot);
        }
    }

    /// Takes the slot in `slot`, clearing its owner name, if it has the default size (leaving
    /// `None`).
    #[inline]
    fn put(&self, slot: &mut Option<Slot>) {
        let Some(s) = slot.take_if(|s| s.class == self.class) else { return };
        s.name.clear();
        let top = s.start + s.size;
        let node = (top - size_of::<FreeNode>()) as *mut FreeNode;
        // SAFETY: the slot's usable bytes, read-write for the life of the process (rule 1 in
        // `stack.rs`), end at `top`, page-aligned, so `node` is aligned and in bounds; the slot
        // is given back, so its stack holds nothing live and the list now owns it (rule 2).
        unsafe { node.write(FreeNode { slot: s, next: self.head.get() }) };
        self.head.set(node);
    }
}

impl Drop for StackCache {
    fn drop(&mut self) {
        let mut node = self.head.replace(ptr::null_mut());
        while !node.is_null() {
            // SAFETY: as in `take`: a node on the list, read once.
            let FreeNode { slot, next } = unsafe { node.read() };
            recycle_in_pool(slot);
            node = next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coroutine::overflow::OwnerName;
    use corosensei::stack::{MIN_STACK_SIZE, Stack};

    const PAGE: usize = 4096;

    fn class(size: usize) -> SizeClass {
        SizeClass::for_request(size, PAGE).unwrap()
    }

    #[test]
    fn size_classes() {
        // (request, class index, usable bytes)
        let table = [
            (0, 0, 16 << 10),
            (1, 0, 16 << 10),
            (16 << 10, 0, 16 << 10),
            ((16 << 10) + 1, 1, 32 << 10),
            (100 << 10, 3, 128 << 10),
            (DEFAULT_STACK_SIZE, 4, DEFAULT_STACK_SIZE),
            (DEFAULT_STACK_SIZE + 1, 5, 512 << 10),
            (8 << 20, 9, 8 << 20),
        ];
        for (request, index, usable) in table {
            let c = class(request);
            assert_eq!((c.index, c.slot_size - PAGE), (index, usable), "request {request}");
        }
        assert!(class(0).slot_size - PAGE >= MIN_STACK_SIZE);
        assert_eq!(SizeClass::for_request(usize::MAX, PAGE), None);
    }

    #[test]
    fn mmap_failure_panics_with_the_os_error() {
        // 2^62 bytes: representable, but far beyond the 47-bit address space.
        let err = std::thread::spawn(|| drop(take(usize::MAX / 2))).join().unwrap_err();
        let msg = err.downcast_ref::<String>().unwrap();
        assert!(msg.starts_with("greenfiber: cannot map memory for coroutine stacks"), "{msg}");
        assert!(msg.contains("Cannot allocate memory"), "{msg}");
        let err = std::thread::spawn(|| drop(take(usize::MAX))).join().unwrap_err();
        assert!(err.downcast_ref::<String>().unwrap().contains("too large"));
    }

    #[test]
    fn slots_per_arena() {
        assert_eq!(class(DEFAULT_STACK_SIZE).slots_per_arena(), 1008); // 256 MiB / 260 KiB
        assert_eq!(class(0).slots_per_arena(), 13107); // 256 MiB / 20 KiB
        assert_eq!(class(1 << 30).slots_per_arena(), 1); // bigger than an arena: one slot
        // A million default stacks need about a thousand arenas.
        assert_eq!(1_000_000usize.div_ceil(class(DEFAULT_STACK_SIZE).slots_per_arena()), 993);
    }

    fn fake_slot(start: usize, class: usize) -> Slot {
        let name: &'static OwnerName = Box::leak(Box::new(OwnerName::new()));
        Slot { start, size: 5 * PAGE, class, name }
    }

    #[test]
    fn free_list_is_lifo_per_class() {
        let mut pool = Pool::new();
        pool.put(fake_slot(0x10000, 0));
        pool.put(fake_slot(0x20000, 2));
        pool.put(fake_slot(0x30000, 0));
        let c0 = SizeClass { index: 0, slot_size: 5 * PAGE };
        let c2 = SizeClass { index: 2, slot_size: 17 * PAGE };
        assert_eq!(pool.take_local(c0).unwrap().unwrap().start, 0x30000);
        assert_eq!(pool.take_local(c2).unwrap().unwrap().start, 0x20000);
        assert_eq!(pool.take_local(c0).unwrap().unwrap().start, 0x10000);
        assert!(pool.take_local(c0).unwrap().is_none());
        assert!(pool.take_local(class(1 << 20)).unwrap().is_none());
    }

    #[test]
    fn adopted_slots_go_under_our_own() {
        let mut mine = Pool::new();
        let mut theirs = Pool::new();
        mine.put(fake_slot(0x1000, 0));
        theirs.put(fake_slot(0x2000, 0));
        theirs.put(fake_slot(0x3000, 1));
        mine.adopt_all(&mut theirs);
        let c0 = SizeClass { index: 0, slot_size: 5 * PAGE };
        let c1 = SizeClass { index: 1, slot_size: 9 * PAGE };
        assert_eq!(mine.take_local(c0).unwrap().unwrap().start, 0x1000);
        assert_eq!(mine.take_local(c0).unwrap().unwrap().start, 0x2000);
        assert_eq!(mine.take_local(c1).unwrap().unwrap().start, 0x3000);
        assert!(theirs.classes.iter().all(|c| c.free.is_empty() && c.arenas.is_empty()));
    }

    #[test]
    fn a_thread_that_runs_out_adopts_a_share_of_the_orphans() {
        let mut orphans = ClassPool::default();
        for i in 0..ADOPT_SLOTS + 10 {
            orphans.free.push(fake_slot(0x1000 * (i + 1), 0));
        }
        let (mut a, mut b) = (ClassPool::default(), ClassPool::default());
        a.adopt_some(&mut orphans);
        b.adopt_some(&mut orphans);
        assert_eq!((a.free.len(), b.free.len(), orphans.free.len()), (ADOPT_SLOTS, 10, 0));
        // The warmest (last given) went first.
        assert_eq!(a.free.last().unwrap().start, 0x1000 * (ADOPT_SLOTS + 10));
    }

    #[test]
    fn stacks_are_reused_lifo_on_a_thread() {
        std::thread::spawn(|| {
            let a = take(40 << 10);
            let b = take(40 << 10);
            assert_eq!(a.usable_size(), 64 << 10);
            let (a_base, b_base) = (a.base(), b.base());
            give(a);
            give(b);
            assert_eq!(take(40 << 10).base(), b_base); // dropped at once: back on top
            let b = take(40 << 10);
            let a = take(40 << 10);
            assert_eq!((a.base(), b.base()), (a_base, b_base));
        })
        .join()
        .unwrap();
    }

    #[test]
    fn default_size_stacks_come_back_through_the_threads_cache() {
        std::thread::spawn(|| {
            crate::coroutine::current(); // the thread's coroutine state, which holds the cache
            let a = take(DEFAULT_STACK_SIZE);
            let b = take(DEFAULT_STACK_SIZE);
            let (a_base, b_base) = (a.base(), b.base());
            give(a);
            give(b);
            // LIFO, whether asked for by default (`Builder::build`) or by size.
            let b = thread::with(|ts| ts.stacks.take());
            let a = take(DEFAULT_STACK_SIZE);
            assert_eq!((a.base(), b.base()), (a_base, b_base));
            assert_ne!(take(DEFAULT_STACK_SIZE).base(), a_base, "a taken stack is not handed out");
            give(a);
            give(b);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn exited_threads_stacks_are_adopted() {
        // A size class no other test uses, so the orphans seen here are our own.
        let size = 3 << 20;
        let base = std::thread::spawn(move || take(size).base()).join().unwrap();
        let again = std::thread::spawn(move || take(size).base()).join().unwrap();
        assert_eq!(base, again);
    }

    fn mappings() -> usize {
        std::fs::read_to_string("/proc/self/maps").unwrap().lines().count()
    }

    #[test]
    fn hundred_thousand_stacks_are_few_mappings() {
        let before = mappings();
        let stacks: Vec<FiberStack> = (0..100_000).map(|_| take(16 << 10)).collect();
        let after = mappings();
        if crate::coroutine::stack::guards_split_mappings() {
            return; // kernel < 6.13: mprotect guards cost a mapping per stack, by design
        }
        let mut bases: Vec<usize> = stacks.iter().map(|s| s.base().get()).collect();
        bases.sort_unstable();
        bases.dedup();
        assert_eq!(bases.len(), 100_000);
        // 100,000 x 20 KiB = ~2 GiB: about 8 arenas, plus whatever concurrent tests map.
        let grew = after.saturating_sub(before);
        assert!(grew < 200, "{before} -> {after} mappings for 100,000 stacks");
        drop(stacks);
    }
}
