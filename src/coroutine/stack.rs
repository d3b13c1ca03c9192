//! One guarded coroutine stack, carved out of a large arena.
//!
//! ```text
//!  low addresses                                                      high addresses
//!  arena start                                                     arena start + len
//!  |<------- slot 0 ------->|<------- slot 1 ------->|     |<------ slot n-1 ------>|
//!  +-------+----------------+-------+----------------+ ... +-------+----------------+
//!  | guard | stack 0   <--- | guard | stack 1   <--- |     | guard | stack n-1 <--- |
//!  +-------+----------------+-------+----------------+ ... +-------+----------------+
//!  ^       ^                ^
//!  |       |                base() of stack 0 (one past its highest byte; also where
//!  |       |                slot 1 and its guard page begin)
//!  |       lowest usable byte of stack 0
//!  limit() of stack 0 (the limit includes the guard page, as corosensei asks)
//!
//!  <--- : a stack grows down, from base() towards its own guard page.
//! ```
//!
//! An arena is one `mmap` of `slots * slot_size` bytes (`MAP_NORESERVE`: address space only, no
//! commit charge; a page costs memory once touched). The guard page at the low end of each slot
//! is installed with `madvise(MADV_GUARD_INSTALL)`, which marks page-table entries instead of
//! changing protections, so the arena stays **one** kernel mapping however many stacks it holds.
//! That is what lets a million stacks fit under `vm.max_map_count` (65530 by default). Kernels
//! older than 6.13 answer `EINVAL`; then we fall back to `mprotect(PROT_NONE)`, which works
//! everywhere but splits the arena into two mappings per stack (about 32,000 stacks in all).
//!
//! # Rules
//!
//! 1. **An arena is never unmapped.** A slot's memory (and its side-table entry, see
//!    `overflow.rs`) stays valid for the rest of the process, so the signal handler may read
//!    them without locks, and a slot can be handed to any later coroutine of any thread.
//! 2. **A slot has exactly one owner at a time**: one [`FiberStack`], or one free list in
//!    `stack_pool.rs` (a pool's, or a thread's `StackCache`, which keeps its link in the top
//!    bytes of the free stack itself). [`FiberStack::from_slot`] is the only way in, and
//!    dropping the `FiberStack` (or giving it back) is the only way out.
//! 3. **A slot's guard page is installed before the slot is first handed out** (in
//!    [`Arena::carve`], in batches) and is never removed, so reused slots need no syscall.
//! 4. **Every frame on a stack touches its pages from the top down.** Rust emits stack probes
//!    for frames larger than a page, so an overflow always hits the guard page before it can
//!    reach the slot below. Foreign code compiled without probes could jump the guard.
//! 5. **Nothing here logs on the spot.** Mapping and carving run while a stack pool is
//!    borrowed or locked (`stack_pool.rs`), and a logger may switch away (a socket write that
//!    waits, under `monkey`): a coroutine of this thread that then needed a stack would find
//!    the pool held, the shared pool's mutex even held by its own thread (a deadlock). Lines go
//!    through [`log_later`]; whoever called in writes them with [`flush_logs`] once it has let
//!    go.
//!
//! Raw OS calls go through [`syscall!`]; they live only in this file and in `overflow.rs`.

use std::ffi::c_void;
use std::io;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::ptr;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use corosensei::stack::{MIN_STACK_SIZE, STACK_ALIGNMENT, Stack, StackPointer};

use super::overflow::{self, OwnerName};
use super::stack_pool;

thread_local! {
    /// Lines [`log_later`] keeps for [`flush_logs`].
    static LATER: std::cell::RefCell<Vec<(log::Level, String)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Keeps a log line of this module for [`flush_logs`] (rule 5); `msg` is formatted only if the
/// level is enabled. During thread teardown, when nothing can switch any more, logs it at once.
fn log_later(level: log::Level, msg: impl FnOnce() -> String) {
    if !log::log_enabled!(level) {
        return;
    }
    let mut line = Some(msg());
    let _ = LATER.try_with(|l| l.borrow_mut().extend(line.take().map(|m| (level, m))));
    if let Some(m) = line {
        log::log!(level, "{m}");
    }
}

/// Writes the lines [`log_later`] kept, oldest first. Call with no pool borrowed or locked:
/// the logger may switch away, and a line is taken out of the list before it is written, so
/// another coroutine flushing meanwhile writes each line once.
pub(super) fn flush_logs() {
    loop {
        let next = LATER.try_with(|l| {
            let mut l = l.borrow_mut();
            (!l.is_empty()).then(|| l.remove(0))
        });
        let Ok(Some((level, m))) = next else { return };
        log::log!(level, "{m}");
    }
}

/// Calls a libc function and turns C's error convention into [`io::Result`].
///
/// `syscall!(name(args...))` expands to the bare call `libc::name(args...)`, so it must be
/// written inside an `unsafe` block whose `// SAFETY:` comment answers that function's contract.
/// It yields `Err(io::Error::last_os_error())` when the call returned its failure value (`-1`,
/// or `MAP_FAILED` for `mmap`; see [`SysRet`]) and `Ok(value)` otherwise. Calls whose failure
/// is reported differently (`pthread_sigmask` returns the error number) do not use it.
macro_rules! syscall {
    ($fn:ident ( $($arg:expr),* $(,)? )) => {{
        let ret = libc::$fn($($arg),*);
        if $crate::coroutine::stack::SysRet::failed(&ret) {
            Err(::std::io::Error::last_os_error())
        } else {
            Ok(ret)
        }
    }};
}
pub(super) use syscall;

/// The failure value of a libc call's return type, for [`syscall!`].
pub(crate) trait SysRet {
    /// Whether this return value means "failed, see errno".
    fn failed(&self) -> bool;
}

impl SysRet for libc::c_int {
    fn failed(&self) -> bool {
        *self == -1
    }
}

impl SysRet for libc::c_long {
    fn failed(&self) -> bool {
        *self == -1
    }
}

impl SysRet for *mut c_void {
    fn failed(&self) -> bool {
        *self == libc::MAP_FAILED
    }
}

/// `MADV_GUARD_INSTALL` from `<linux/mman.h>` (Linux 6.13+). The libc crate does not export it
/// yet. It turns the range into guard pages (any access raises `SIGSEGV`) by marking page-table
/// entries, without splitting the mapping.
const MADV_GUARD_INSTALL: libc::c_int = 102;

/// The system page size, read once.
pub(super) fn page_size() -> usize {
    static PAGE: AtomicUsize = AtomicUsize::new(0);
    match PAGE.load(Ordering::Relaxed) {
        0 => {
            // SAFETY: sysconf has no preconditions; _SC_PAGESIZE is a valid name.
            let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
            assert!(page.is_power_of_two(), "greenfiber: odd page size {page}");
            PAGE.store(page, Ordering::Relaxed);
            page
        }
        page => page,
    }
}

/// Maps `len` bytes (a page multiple) of fresh read-write anonymous memory, address space only.
///
/// `MAP_STACK` is a hint on most kernels, but since Linux 6.7 it also keeps transparent huge
/// pages out of the mapping, so touching one stack page costs 4 KiB, not 2 MiB.
pub(super) fn map_anonymous(len: usize) -> io::Result<usize> {
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_STACK;
    // SAFETY: a null hint and no MAP_FIXED let the kernel pick fresh addresses, so no existing
    // memory is replaced; fd -1 with offset 0 is what MAP_ANONYMOUS requires.
    let addr = unsafe {
        syscall!(mmap(ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, flags, -1, 0))
    }?;
    Ok(addr as usize)
}

/// Unmaps a region that [`map_anonymous`] returned. Only `overflow.rs` uses this, for its
/// per-thread signal stacks; arenas are never unmapped (rule 1).
///
/// # Safety
///
/// `addr..addr + len` must be exactly a region returned by [`map_anonymous`], and nothing may
/// use it any more (no live references, not registered as a signal stack).
pub(super) unsafe fn unmap(addr: usize, len: usize) -> io::Result<()> {
    // SAFETY: the caller owns the whole region and has stopped using it.
    unsafe { syscall!(munmap(addr as *mut c_void, len)) }.map(drop)
}

/// How guard pages are installed. Starts unknown and settles on the first answer from the
/// kernel.
static GUARD_MODE: AtomicU8 = AtomicU8::new(GUARD_UNKNOWN);
const GUARD_UNKNOWN: u8 = 0;
const GUARD_MADVISE: u8 = 1;
const GUARD_MPROTECT: u8 = 2;

#[cfg(test)]
thread_local! {
    /// Test switch: make this thread's guard installs take the `mprotect` fallback, as on a
    /// kernel older than 6.13. Thread-local so that concurrent tests keep their madvise guards.
    pub(super) static FORCE_MPROTECT_GUARD: std::cell::Cell<bool> =
        const { std::cell::Cell::new(false) };
}

fn force_mprotect() -> bool {
    #[cfg(test)]
    return FORCE_MPROTECT_GUARD.with(std::cell::Cell::get);
    #[cfg(not(test))]
    false
}

/// Turns `addr..addr + len` (page-aligned, inside a region from [`map_anonymous`]) into guard
/// pages: `MADV_GUARD_INSTALL`, or `mprotect(PROT_NONE)` where the kernel lacks it.
pub(super) fn install_guard(addr: usize, len: usize) -> io::Result<()> {
    debug_assert!(addr.is_multiple_of(page_size()) && len.is_multiple_of(page_size()));
    if GUARD_MODE.load(Ordering::Relaxed) != GUARD_MPROTECT && !force_mprotect() {
        loop {
            // SAFETY: the range is page-aligned and lies in one of our own private anonymous
            // mappings whose pages hold no live data yet (a slot not handed out, or a fresh
            // signal stack); discarding them and fencing them off affects nobody.
            match unsafe { syscall!(madvise(addr as *mut c_void, len, MADV_GUARD_INSTALL)) } {
                Ok(_) => {
                    GUARD_MODE.store(GUARD_MADVISE, Ordering::Relaxed);
                    return Ok(());
                }
                // The kernel may ask us to retry while it is busy with the page tables.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EAGAIN)) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    if GUARD_MODE.swap(GUARD_MPROTECT, Ordering::Relaxed) != GUARD_MPROTECT {
                        log_later(log::Level::Info, || {
                            "greenfiber: MADV_GUARD_INSTALL unsupported (kernel < 6.13); guard \
                             pages use mprotect, so each stack costs two memory mappings"
                                .to_string()
                        });
                    }
                    break;
                }
                Err(e) => return Err(e),
            }
        }
    }
    // SAFETY: as above, the range is page-aligned, ours, and holds no live data.
    unsafe { syscall!(mprotect(addr as *mut c_void, len, libc::PROT_NONE)) }.map(drop)
}

/// `PIDFD_SELF` from `<linux/pidfd.h>` (Linux 6.14+): "the calling thread's process" for
/// pidfd-taking calls, without opening a descriptor.
const PIDFD_SELF: libc::c_int = -10000;

/// Most ranges one `process_madvise` call takes (`UIO_MAXIOV`).
const IOV_MAX: usize = 1024;

/// Whether `process_madvise` installs guard pages for this process. Starts unknown; settles on
/// "no" at the first refusal (kernels before 6.14 have no `PIDFD_SELF`; some refuse this advice
/// through `process_madvise`), after which guards go one `madvise` each.
static BATCH_GUARDS: AtomicU8 = AtomicU8::new(GUARD_UNKNOWN);

/// Turns the page at each address of `pages` (page-aligned, inside a region from
/// [`map_anonymous`], holding no live data) into a guard page. One `process_madvise` call
/// installs up to [`IOV_MAX`] of them where the kernel allows it, which costs about half as
/// much per page as one `madvise` each (`benches/RESULTS-layer1.md`); otherwise, and for
/// whatever a batch left undone, one [`install_guard`] per page.
pub(super) fn install_guards(pages: &[usize]) -> io::Result<()> {
    let page = page_size();
    let mut done = 0;
    if pages.len() > 1
        && BATCH_GUARDS.load(Ordering::Relaxed) != GUARD_MPROTECT
        && GUARD_MODE.load(Ordering::Relaxed) == GUARD_MADVISE
        && !force_mprotect()
    {
        let ranges: Vec<libc::iovec> = pages
            .iter()
            .map(|&addr| libc::iovec { iov_base: addr as *mut c_void, iov_len: page })
            .collect();
        while done < ranges.len() {
            let batch = &ranges[done..ranges.len().min(done + IOV_MAX)];
            // SAFETY: `batch` points at `batch.len()` valid iovecs, each one page of our own
            // private anonymous memory holding no live data (this function's contract, as for
            // `install_guard`); PIDFD_SELF names this process, so nobody else is affected.
            let advised = unsafe {
                syscall!(syscall(
                    libc::SYS_process_madvise,
                    PIDFD_SELF,
                    batch.as_ptr(),
                    batch.len(),
                    MADV_GUARD_INSTALL,
                    0u32,
                ))
            };
            match advised {
                // The kernel may stop early (it reports how far it got); go on from there.
                Ok(bytes) if bytes > 0 => {
                    BATCH_GUARDS.store(GUARD_MADVISE, Ordering::Relaxed);
                    done += bytes as usize / page;
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EAGAIN)) => {}
                refused => {
                    log_later(log::Level::Debug, || {
                        format!(
                            "greenfiber: process_madvise refused guard pages ({refused:?}); \
                             installing them one madvise at a time"
                        )
                    });
                    BATCH_GUARDS.store(GUARD_MPROTECT, Ordering::Relaxed);
                    break;
                }
            }
        }
    }
    pages[done..].iter().try_for_each(|&addr| install_guard(addr, page))
}

/// Most slots whose guard pages one [`Arena::carve`] installs ahead of use.
const MAX_GUARD_BATCH: usize = IOV_MAX;

/// One mapped arena, cut into `slots` equal slots of `slot_size` bytes (guard page included).
pub(super) struct Arena {
    start: usize,
    slot_size: usize,
    slots: usize,
    /// Slots `..guarded` have their guard pages installed.
    guarded: usize,
    names: &'static [OwnerName],
}

impl Arena {
    /// Maps a fresh arena and registers it with the overflow handler.
    pub(super) fn map(slot_size: usize, slots: usize) -> io::Result<Arena> {
        let page = page_size();
        assert!(slot_size.is_multiple_of(page) && slot_size >= 2 * page && slots > 0);
        let len = slot_size.checked_mul(slots).ok_or(io::ErrorKind::OutOfMemory)?;
        let start = map_anonymous(len)?;
        // Rule 1: arenas live for the process, and so does their name side table.
        let names: &'static [OwnerName] = Box::leak((0..slots).map(|_| OwnerName::new()).collect());
        if !overflow::register_arena(start, len, slot_size, names) {
            log_later(log::Level::Warn, || {
                format!(
                    "greenfiber: overflow registry full; an overflow of the stacks at {start:#x} \
                     will be reported as a plain SIGSEGV"
                )
            });
        }
        log_later(log::Level::Debug, || {
            format!("greenfiber: mapped a stack arena of {slots} x {slot_size} bytes at {start:#x}")
        });
        Ok(Arena { start, slot_size, slots, guarded: 0, names })
    }

    /// Number of slots in this arena.
    pub(super) fn slots(&self) -> usize {
        self.slots
    }

    /// Returns slot `index` with its guard page installed. Each index must be carved once.
    ///
    /// Guard pages go in batches ahead of use: when `index` has none yet, this installs the
    /// guards of the next `index` slots too (at least one, at most [`MAX_GUARD_BATCH`]), so
    /// carving an arena in order costs a logarithmic number of calls at first, then one per
    /// `MAX_GUARD_BATCH` slots, and never guards more than twice the slots carved so far.
    pub(super) fn carve(&mut self, index: usize, class: usize) -> io::Result<Slot> {
        assert!(index < self.slots);
        if index >= self.guarded {
            let end = self.slots.min(index + index.clamp(1, MAX_GUARD_BATCH));
            let pages: Vec<usize> = (index..end).map(|i| self.start + i * self.slot_size).collect();
            install_guards(&pages)?;
            self.guarded = end;
        }
        let start = self.start + index * self.slot_size;
        Ok(Slot { start, size: self.slot_size, class, name: &self.names[index] })
    }
}

/// A slot's address and bookkeeping; plain data that the pool moves around.
#[derive(Debug)]
pub(super) struct Slot {
    /// Lowest address: the guard page starts here.
    pub(super) start: usize,
    /// Bytes from `start` to the stack base, guard page included.
    pub(super) size: usize,
    /// Size-class index in `stack_pool.rs`.
    pub(super) class: usize,
    /// This slot's entry in the overflow handler's name side table.
    pub(super) name: &'static OwnerName,
}

/// One guarded stack for a coroutine. Dropping it returns it to this thread's pool.
///
/// `!Send`: it belongs to a thread's pool and its owner name is a promise about that thread's
/// memory (see [`FiberStack::set_owner_name`]).
pub(crate) struct FiberStack {
    slot: ManuallyDrop<Slot>,
    _not_send: PhantomData<*const ()>,
}

impl FiberStack {
    /// Wraps a slot taken from a free list or freshly carved.
    ///
    /// # Safety
    ///
    /// - Nothing else owns `slot` (rule 2): it was just carved or just removed from a free list.
    /// - Its guard page is installed (rule 3).
    pub(super) unsafe fn from_slot(slot: Slot) -> FiberStack {
        FiberStack { slot: ManuallyDrop::new(slot), _not_send: PhantomData }
    }

    /// [`Stack::base`] as an address: one past the stack's highest byte.
    #[inline]
    pub(crate) fn top(&self) -> usize {
        self.slot.start + self.slot.size
    }

    /// Usable bytes between the guard page and [`Stack::base`].
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn usable_size(&self) -> usize {
        self.slot.size - page_size()
    }

    /// Records the name of the coroutine that owns this stack so the overflow handler can
    /// print it; `None` clears it.
    ///
    /// # Safety
    ///
    /// The bytes of `name` must stay valid (not freed, not moved) until `set_owner_name(None)`
    /// is called or this stack is given back to the pool (or dropped). The signal handler reads
    /// them if this stack overflows.
    pub(crate) unsafe fn set_owner_name(&self, name: Option<&str>) {
        // SAFETY: the caller keeps `name` alive until it is cleared, which `stack_pool` also
        // does when the stack comes back; that is `OwnerName::set`'s contract.
        unsafe { self.slot.name.set(name) }
    }
}

impl FiberStack {
    /// The slot, which the caller now owns (rule 2): it does not go back to the pool.
    pub(super) fn into_slot(self) -> Slot {
        let mut stack = ManuallyDrop::new(self);
        // SAFETY: `stack.slot` is taken once, here, and `stack` is never dropped, so its `Drop`
        // does not take it again.
        unsafe { ManuallyDrop::take(&mut stack.slot) }
    }
}

impl Drop for FiberStack {
    fn drop(&mut self) {
        // SAFETY: `self.slot` is taken once, here, and never touched again.
        let slot = unsafe { ManuallyDrop::take(&mut self.slot) };
        stack_pool::recycle(slot);
    }
}

impl std::fmt::Debug for FiberStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FiberStack")
            .field("limit", &format_args!("{:#x}", self.slot.start))
            .field("base", &format_args!("{:#x}", self.slot.start + self.slot.size))
            .finish()
    }
}

// SAFETY: corosensei's contract for `Stack`, answered point by point:
// - "must have a guard page which catches stack overflows": the lowest page of the slot,
//   `limit()..limit() + page`, is a guard page installed before the slot was handed out
//   (rule 3) and never removed; frames probe it before going further down (rule 4).
// - "at least MIN_STACK_SIZE bytes of usable memory": the smallest size class in
//   `stack_pool.rs` has 4 usable pages (16 KiB >= MIN_STACK_SIZE, checked by a test), all
//   read-write and mapped for the life of the process (rule 1).
// - "base and limit aligned to STACK_ALIGNMENT": both are page-aligned, and a page (4 KiB or
//   more) is a multiple of STACK_ALIGNMENT (16).
// - The memory is ours alone while this `FiberStack` lives (rule 2).
unsafe impl Stack for FiberStack {
    #[inline]
    fn base(&self) -> StackPointer {
        StackPointer::new(self.top()).expect("stack base is not null")
    }

    #[inline]
    fn limit(&self) -> StackPointer {
        StackPointer::new(self.slot.start).expect("stack limit is not null")
    }
}

/// Whether guard pages fall back to `mprotect` here, which splits arenas into two mappings per
/// stack (tests that count mappings need to know).
#[cfg(test)]
pub(super) fn guards_split_mappings() -> bool {
    GUARD_MODE.load(Ordering::Relaxed) == GUARD_MPROTECT
}

const _: () = assert!(4096 % STACK_ALIGNMENT == 0 && MIN_STACK_SIZE <= 4 * 4096);

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use corosensei::{Coroutine, CoroutineResult};

    /// Runs `child` in a forked child process with stderr sent to a pipe and no core dumps.
    /// Returns the child's wait status and what it wrote to stderr. `child` should end the
    /// process itself; if it returns, the child exits with status 0.
    pub(in crate::coroutine) fn in_child(child: impl FnOnce()) -> (libc::c_int, String) {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe writes.
        unsafe { syscall!(pipe(fds.as_mut_ptr())) }.expect("pipe");
        // SAFETY: the child only runs `child` (set up by the test) and then `_exit`s; it
        // never returns into the test harness.
        let pid = unsafe { syscall!(fork()) }.expect("fork");
        if pid == 0 {
            let no_core = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            // SAFETY: plain calls on valid arguments in the single-threaded child.
            unsafe {
                libc::setrlimit(libc::RLIMIT_CORE, &no_core);
                libc::dup2(fds[1], 2);
                libc::close(fds[0]);
            }
            child();
            // SAFETY: _exit ends the child without running the parent's atexit handlers.
            unsafe { libc::_exit(0) };
        }
        // SAFETY: closing our copy of the write end, which we own.
        unsafe { libc::close(fds[1]) };
        let mut out = Vec::new();
        let mut buf = [0u8; 256];
        loop {
            // SAFETY: `buf` is a valid writable buffer of the given length.
            let n = unsafe { libc::read(fds[0], buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            out.extend_from_slice(&buf[..n as usize]);
        }
        // SAFETY: closing the read end, which we own.
        unsafe { libc::close(fds[0]) };
        let mut status = 0;
        // SAFETY: `pid` is our child; `status` is a valid out-pointer.
        unsafe { syscall!(waitpid(pid, &mut status, 0)) }.expect("waitpid");
        (status, String::from_utf8_lossy(&out).into_owned())
    }

    /// In a child: restore the default SIGSEGV action (so no handler of ours or std's
    /// interferes), write to `addr`, and exit 0 if that survived.
    fn child_touches(addr: usize) -> libc::c_int {
        let (status, _) = in_child(|| {
            // SAFETY: resetting a signal disposition in the child only.
            unsafe { libc::signal(libc::SIGSEGV, libc::SIG_DFL) };
            // SAFETY: deliberately touching a guard page; the child is meant to die here.
            unsafe { ptr::write_volatile(addr as *mut u8, 1) };
        });
        status
    }

    fn died_of(status: libc::c_int, sig: libc::c_int) -> bool {
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == sig
    }

    /// The `/proc/self/maps` line of the mapping containing `addr`.
    fn mapping_of(addr: usize) -> String {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        maps.lines()
            .find(|l| {
                let range = l.split(' ').next().unwrap();
                let (lo, hi) = range.split_once('-').unwrap();
                let lo = usize::from_str_radix(lo, 16).unwrap();
                let hi = usize::from_str_radix(hi, 16).unwrap();
                (lo..hi).contains(&addr)
            })
            .unwrap_or_else(|| panic!("{addr:#x} is not mapped"))
            .to_owned()
    }

    #[test]
    fn base_limit_alignment_and_size() {
        let page = page_size();
        let stack = stack_pool::take(stack_pool::DEFAULT_STACK_SIZE);
        let (base, limit) = (stack.base().get(), stack.limit().get());
        assert_eq!(stack.usable_size(), stack_pool::DEFAULT_STACK_SIZE);
        assert_eq!(base - limit, stack.usable_size() + page);
        assert_eq!(base % STACK_ALIGNMENT, 0);
        assert_eq!(limit % page, 0);
        let small = stack_pool::take(0);
        assert!(small.usable_size() >= MIN_STACK_SIZE);
        assert_eq!(small.base().get() % STACK_ALIGNMENT, 0);
        stack_pool::give(stack);
        stack_pool::give(small);
    }

    #[test]
    fn guard_page_faults_madvise() {
        let stack = stack_pool::take(stack_pool::DEFAULT_STACK_SIZE);
        let guard = stack.limit().get();
        let usable = guard + page_size();
        // SAFETY: the lowest usable byte is read-write memory owned by `stack`.
        unsafe { ptr::write_volatile(usable as *mut u8, 7) };
        if GUARD_MODE.load(Ordering::Relaxed) == GUARD_MADVISE {
            // A guard region, not a protection change: the arena is still one rw mapping.
            assert!(mapping_of(guard).contains(" rw-p "), "{}", mapping_of(guard));
        }
        assert!(died_of(child_touches(guard), libc::SIGSEGV));
        assert!(died_of(child_touches(guard + page_size() - 1), libc::SIGSEGV));
        assert_eq!(child_touches(usable), 0);
    }

    #[test]
    fn guards_go_in_batches_ahead_of_carving() {
        let page = page_size();
        let slot_size = 4 * page;
        let mut arena = Arena::map(slot_size, 40).unwrap();
        let slots: Vec<Slot> = (0..9).map(|i| arena.carve(i, 0).unwrap()).collect();
        // Carving 0..9 guarded 0..16 (batches 0, 1, 2..4, 4..8, 8..16), in as few calls as the
        // kernel allows, and nothing past that.
        assert_eq!(arena.guarded, 16);
        for slot in &slots {
            assert!(died_of(child_touches(slot.start), libc::SIGSEGV), "{:#x}", slot.start);
            assert_eq!(child_touches(slot.start + page), 0);
        }
        assert!(died_of(child_touches(arena.start + 15 * slot_size), libc::SIGSEGV));
        assert_eq!(child_touches(arena.start + 16 * slot_size), 0);
        if GUARD_MODE.load(Ordering::Relaxed) == GUARD_MADVISE {
            assert!(mapping_of(arena.start + 15 * slot_size).contains(" rw-p "));
        }
    }

    #[test]
    fn guard_page_faults_mprotect_fallback() {
        let page = page_size();
        FORCE_MPROTECT_GUARD.with(|f| f.set(true));
        let mut arena = Arena::map(4 * page, 2).unwrap();
        let slot = arena.carve(1, 0).unwrap();
        FORCE_MPROTECT_GUARD.with(|f| f.set(false));
        assert_ne!(GUARD_MODE.load(Ordering::Relaxed), GUARD_MPROTECT, "the switch leaked");
        // The fallback splits the arena: the guard page is a mapping of its own.
        let line = mapping_of(slot.start);
        assert!(line.contains(" ---p "), "{line}");
        assert!(died_of(child_touches(slot.start), libc::SIGSEGV));
        assert_eq!(child_touches(slot.start + page), 0);
    }

    #[test]
    fn corosensei_runs_on_a_fiber_stack() {
        let stack = stack_pool::take(64 * 1024);
        let base = stack.base();
        let mut co = Coroutine::with_stack(stack, |y, x: i32| {
            let local = 0u8;
            let sp = &local as *const u8 as usize;
            let again: i32 = y.suspend((x + 1, sp));
            again * 2
        });
        match co.resume(1) {
            CoroutineResult::Yield((v, sp)) => {
                assert_eq!(v, 2);
                // The body ran on our stack, below its base and above its guard page.
                assert!(sp < base.get() && sp > base.get() - 64 * 1024);
            }
            CoroutineResult::Return(_) => panic!("returned early"),
        }
        assert!(matches!(co.resume(5), CoroutineResult::Return(10)));
        let stack = co.into_stack();
        assert_eq!(stack.base(), base);
        stack_pool::give(stack);
        // LIFO reuse: the next stack of that size on this thread is the same one.
        let again = stack_pool::take(64 * 1024);
        assert_eq!(again.base(), base);
        stack_pool::give(again);
    }

    #[test]
    fn owner_name_side_table() {
        let stack = stack_pool::take(0);
        let guard = stack.limit().get();
        // SAFETY: the cell is not written while the bytes are copied out.
        let read =
            || overflow::guard_owner(guard).map(|c| unsafe { c.read_bytes() }.map(<[u8]>::to_vec));
        assert_eq!(read(), Some(None));
        let name = String::from("worker-7");
        // SAFETY: `name` outlives the stack's use of it: it is cleared below before drop.
        unsafe { stack.set_owner_name(Some(&name)) };
        assert_eq!(read(), Some(Some(b"worker-7".to_vec())));
        // SAFETY: clearing needs nothing.
        unsafe { stack.set_owner_name(None) };
        assert_eq!(read(), Some(None));
        // SAFETY: `name` is alive until the end of the test, after the stack is given back.
        unsafe { stack.set_owner_name(Some(&name)) };
        stack_pool::give(stack);
        // Giving the stack back clears the name (it might be reused by anyone).
        assert_eq!(read(), Some(None));
        drop(name);
    }
}
