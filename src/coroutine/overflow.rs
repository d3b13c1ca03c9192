//! Reporting a coroutine stack overflow: a `SIGSEGV`/`SIGBUS` handler that recognises our guard
//! pages, names the coroutine and aborts.
//!
//! ```text
//!  arena registry (fixed array, written once per arena, read lock-free by the handler)
//!  +----------------------------+----------------------------+-----+
//!  | start, len, slot_size, -+  | start, len, slot_size, -+  | ... |   ARENA_COUNT entries used
//!  +------------------------|---+------------------------|---+-----+
//!                           v                            v
//!          name side table: [ptr,len][ptr,len]...   one entry per slot, indexed like the slots
//!
//!  fault address a, arena at start:  slot = (a - start) / slot_size
//!                                    in the guard page  <=>  (a - start) % slot_size < page
//! ```
//!
//! A stack that overflows hits its guard page (see `stack.rs`), and the kernel raises `SIGSEGV`
//! on the alternate signal stack, because the faulting stack has no room left. The handler
//! looks the fault address up in the registry. If the address is one of our guard pages, it
//! writes `greenfiber: stack overflow in coroutine "NAME"` (or `... in an unnamed coroutine`) to
//! stderr and aborts. Otherwise the fault is not ours, and it is handed to whatever handler was
//! installed before ours. That is normally std's reporter for thread stacks, which resets the
//! action and lets the fault repeat.
//!
//! # Rules
//!
//! 1. **The handler is async-signal-safe.** It only does atomic loads, arithmetic, `write(2)`,
//!    `sigaction`, `pthread_sigmask` and `abort`. It does no allocation, takes no locks and uses
//!    no std formatting.
//! 2. **Registry entries are published once and never change.** An entry's fields are stored,
//!    then its `start` is stored with `Release`. A reader that sees a non-zero `start` with
//!    `Acquire` sees the rest. Arenas and name tables are never freed (rule 1 in `stack.rs`).
//! 3. **A name cell is written only by the thread that owns its slot.** Slots are owned by one
//!    `!Send` `FiberStack` or by one pool, so no two threads write a cell at once. Only the
//!    owning thread can overflow that stack. So the handler, running on that same thread, sees
//!    either the old name, no name, or the new one, never a mix. `OwnerName::set` orders its
//!    stores for that.
//! 4. **Every thread that runs coroutines has an alternate signal stack.** std gives one to
//!    the main thread and to the threads it spawns. [`install`] adds one of ours to any other
//!    thread, and a thread-local frees it when the thread exits.

use std::cell::{Cell, RefCell};
use std::ffi::c_void;
use std::io;
use std::mem;
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Once, OnceLock};

use super::stack::{self, syscall};

/// How many arenas the registry can hold. At the default stack size an arena holds about a
/// thousand stacks, so this covers about four million. Arenas beyond it still work; only their
/// overflows are reported as a plain `SIGSEGV`.
const MAX_ARENAS: usize = 4096;

/// One registry entry; see rule 2 for the publication order.
struct ArenaEntry {
    start: AtomicUsize,
    len: AtomicUsize,
    slot_size: AtomicUsize,
    names: AtomicPtr<OwnerName>,
}

static ARENAS: [ArenaEntry; MAX_ARENAS] = [const {
    ArenaEntry {
        start: AtomicUsize::new(0),
        len: AtomicUsize::new(0),
        slot_size: AtomicUsize::new(0),
        names: AtomicPtr::new(ptr::null_mut()),
    }
}; MAX_ARENAS];

/// Entries handed out so far (may exceed `MAX_ARENAS` once the registry is full).
static ARENA_COUNT: AtomicUsize = AtomicUsize::new(0);

/// Registers an arena of `len / slot_size` slots, each with a guard page at its low end, and
/// its name side table (one cell per slot). Returns `false` if the registry is full.
pub(super) fn register_arena(
    start: usize,
    len: usize,
    slot_size: usize,
    names: &'static [OwnerName],
) -> bool {
    assert!(start != 0 && slot_size != 0 && names.len() == len / slot_size);
    let index = ARENA_COUNT.fetch_add(1, Ordering::Relaxed);
    let Some(entry) = ARENAS.get(index) else { return false };
    entry.len.store(len, Ordering::Relaxed);
    entry.slot_size.store(slot_size, Ordering::Relaxed);
    entry.names.store(names.as_ptr().cast_mut(), Ordering::Relaxed);
    // Rule 2: publish last.
    entry.start.store(start, Ordering::Release);
    true
}

/// If `addr` lies in the guard page of one of our stack slots, returns that slot's name cell.
/// Async-signal-safe (rule 1).
pub(super) fn guard_owner(addr: usize) -> Option<&'static OwnerName> {
    // The page size is cached before the first arena is mapped, so this is an atomic load.
    let page = stack::page_size();
    let used = ARENA_COUNT.load(Ordering::Relaxed).min(MAX_ARENAS);
    for entry in &ARENAS[..used] {
        let start = entry.start.load(Ordering::Acquire);
        if start == 0 || addr < start {
            continue; // not yet published, or below this arena
        }
        let offset = addr - start;
        if offset >= entry.len.load(Ordering::Relaxed) {
            continue;
        }
        let slot_size = entry.slot_size.load(Ordering::Relaxed);
        if offset % slot_size >= page {
            return None; // inside a stack's usable part: a fault, but not an overflow
        }
        let names = entry.names.load(Ordering::Relaxed);
        // SAFETY: `names` points to a leaked table of `len / slot_size` cells (rule 2), and
        // `offset / slot_size < len / slot_size` because `offset < len`.
        return Some(unsafe { &*names.add(offset / slot_size) });
    }
    None
}

/// The name of the coroutine that owns a stack slot, readable from a signal handler.
///
/// A null `ptr` means "no name". Both fields are atomics so that the handler's reads are plain
/// loads. The write order in [`OwnerName::set`] makes an interrupted write read as "no name"
/// (rule 3).
#[derive(Debug)]
pub(super) struct OwnerName {
    ptr: AtomicPtr<u8>,
    len: AtomicUsize,
}

impl OwnerName {
    /// An empty cell.
    pub(super) const fn new() -> OwnerName {
        OwnerName { ptr: AtomicPtr::new(ptr::null_mut()), len: AtomicUsize::new(0) }
    }

    /// Stores `name` (or clears the cell on `None`).
    ///
    /// # Safety
    ///
    /// The bytes of `name` must stay valid until the cell is set again or cleared. The caller
    /// must be the thread that owns the cell's slot (rule 3).
    pub(super) unsafe fn set(&self, name: Option<&str>) {
        // Clear first, then the length, then publish the pointer: a signal arriving between
        // any two of these stores reads "no name", never a new pointer with an old length.
        self.ptr.store(ptr::null_mut(), Ordering::Release);
        if let Some(name) = name {
            self.len.store(name.len(), Ordering::Release);
            self.ptr.store(name.as_ptr().cast_mut(), Ordering::Release);
        }
    }

    /// Clears the cell.
    pub(super) fn clear(&self) {
        self.ptr.store(ptr::null_mut(), Ordering::Release);
    }

    /// The stored name, if any.
    ///
    /// # Safety
    ///
    /// The returned bytes are those promised valid by [`OwnerName::set`]. The cell must not be
    /// set or cleared while the slice is in use, and the slice must not outlive the stored
    /// name.
    pub(super) unsafe fn read_bytes(&self) -> Option<&[u8]> {
        let ptr = self.ptr.load(Ordering::Acquire);
        if ptr.is_null() {
            return None;
        }
        let len = self.len.load(Ordering::Acquire);
        // SAFETY: `ptr` and `len` came from one `&str` given to `set` (the store order
        // guarantees a non-null `ptr` is seen with its own `len`), which the caller keeps alive.
        Some(unsafe { std::slice::from_raw_parts(ptr, len) })
    }
}

/// Installs the overflow reporter for this process (once) and makes sure the calling thread has
/// an alternate signal stack (once per thread). Cheap after the first call on a thread: one
/// thread-local load.
pub(crate) fn install() {
    if !THREAD_READY.with(Cell::get) {
        install_slow();
    }
}

thread_local! {
    /// Whether [`install`] already ran on this thread.
    static THREAD_READY: Cell<bool> = const { Cell::new(false) };
    /// The alternate signal stack we installed on this thread, freed when the thread exits.
    /// Stays `None` on threads that already had one (std's threads).
    static OWN_ALTSTACK: RefCell<Option<AltStack>> = const { RefCell::new(None) };
}

#[cold]
fn install_slow() {
    static PROCESS: Once = Once::new();
    PROCESS.call_once(install_handlers);
    if let Err(e) = ensure_altstack() {
        log::warn!(
            "greenfiber: no alternate signal stack on this thread ({e}); a coroutine stack \
             overflow here will be a plain SIGSEGV"
        );
    }
    THREAD_READY.with(|ready| ready.set(true));
}

/// The signals we handle, and the actions that were installed before ours (same order).
const SIGNALS: [libc::c_int; 2] = [libc::SIGSEGV, libc::SIGBUS];
static PREVIOUS: [OnceLock<libc::sigaction>; 2] = [OnceLock::new(), OnceLock::new()];

fn install_handlers() {
    for (sig, previous) in SIGNALS.into_iter().zip(&PREVIOUS) {
        // SAFETY: an all-zero `sigaction` is a valid value of this plain C struct.
        let mut old: libc::sigaction = unsafe { mem::zeroed() };
        // SAFETY: a null new action only queries; `old` is a valid out-pointer.
        if let Err(e) = unsafe { syscall!(sigaction(sig, ptr::null(), &mut old)) } {
            log::error!("greenfiber: cannot read the action of signal {sig}: {e}");
            continue;
        }
        // Saved before ours goes in, so the handler never sees it missing. (Another library
        // changing the action between these two calls would be missed; nothing in-process
        // races us here in practice.)
        let _ = previous.set(old);
        // SAFETY: as above, all-zero is valid; the fields we need are set below.
        let mut action: libc::sigaction = unsafe { mem::zeroed() };
        action.sa_sigaction = on_fault as *const () as libc::sighandler_t;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        // SAFETY: `sa_mask` is a valid sigset_t to initialise.
        unsafe { libc::sigemptyset(&mut action.sa_mask) };
        // SAFETY: `action` is fully initialised and `on_fault` has the SA_SIGINFO signature;
        // a null old-action pointer is allowed.
        if let Err(e) = unsafe { syscall!(sigaction(sig, &action, ptr::null_mut())) } {
            log::error!("greenfiber: cannot install the stack overflow handler for {sig}: {e}");
        }
    }
}

/// The signal handler. Rule 1: async-signal-safe only.
extern "C" fn on_fault(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut c_void) {
    // SAFETY: with SA_SIGINFO the kernel passes a valid `siginfo_t`, whose `si_addr` is
    // defined for SIGSEGV and SIGBUS, the only signals this handler is installed for.
    let addr = unsafe { (*info).si_addr() } as usize;
    if let Some(owner) = guard_owner(addr) {
        // SAFETY: we are on the thread that owns the overflowed stack (only it can run on that
        // stack), so nobody sets the cell while we read it (rule 3). The name is valid by
        // `set_owner_name`'s contract, and we abort before the slice could outlive it.
        report_overflow(unsafe { owner.read_bytes() });
    }
    // SAFETY: called from our handler with the arguments the kernel gave it.
    unsafe { chain(sig, info, ctx) }
}

/// Writes the overflow message with `write(2)` and aborts.
fn report_overflow(name: Option<&[u8]>) -> ! {
    match name {
        Some(name) => {
            write_stderr(b"greenfiber: stack overflow in coroutine \"");
            write_stderr(name);
            write_stderr(b"\"\n");
        }
        None => write_stderr(b"greenfiber: stack overflow in an unnamed coroutine\n"),
    }
    // SAFETY: abort has no preconditions and is async-signal-safe.
    unsafe { libc::abort() }
}

/// `write(2)` all of `bytes` to stderr, retrying on EINTR and short writes; other errors give
/// up quietly (there is nowhere to report them).
fn write_stderr(mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is a valid readable buffer of the given length.
        let n = unsafe { libc::write(libc::STDERR_FILENO, bytes.as_ptr().cast(), bytes.len()) };
        if n > 0 {
            bytes = &bytes[n as usize..];
        } else if n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue; // reading errno allocates nothing
        } else {
            return;
        }
    }
}

/// Hands a fault that is not ours to the action installed before ours, as it asked.
///
/// # Safety
///
/// Must be called from our signal handler with the `sig`, `info` and `ctx` the kernel passed.
unsafe fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut c_void) {
    let index = if sig == libc::SIGSEGV { 0 } else { 1 };
    let Some(previous) = PREVIOUS[index].get() else {
        // Unreachable in practice (saved before ours was installed): behave like SIG_DFL.
        // SAFETY: resetting a disposition is async-signal-safe.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
        return;
    };
    let handler = previous.sa_sigaction;
    if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
        // Put the previous action back and return. The faulting instruction runs again,
        // faults again, and the kernel applies that action (for a fault, SIG_IGN is treated as
        // SIG_DFL too): the process dies of the signal, as it would have without us.
        // SAFETY: `previous` is a valid action read from the kernel; sigaction is
        // async-signal-safe.
        unsafe { libc::sigaction(sig, previous, ptr::null_mut()) };
        return;
    }
    if previous.sa_flags & libc::SA_RESETHAND != 0 {
        // SAFETY: as above; the previous action asked to be reset when it runs.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
    // Run it with the mask it asked for, as the kernel would have.
    // SAFETY: an all-zero sigset_t is a valid value to be overwritten.
    let mut saved: libc::sigset_t = unsafe { mem::zeroed() };
    // SAFETY: both sets are valid; pthread_sigmask is async-signal-safe.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &previous.sa_mask, &mut saved) };
    if previous.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: with SA_SIGINFO the stored handler has the three-argument signature, and we
        // pass it exactly what the kernel passed us.
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut c_void) =
            unsafe { mem::transmute(handler) };
        f(sig, info, ctx);
    } else {
        // SAFETY: without SA_SIGINFO the stored handler has the one-argument signature.
        let f: extern "C" fn(libc::c_int) = unsafe { mem::transmute(handler) };
        f(sig);
    }
    // SAFETY: restoring the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &saved, ptr::null_mut()) };
}

/// An alternate signal stack we mapped for a thread that had none: `len` bytes at `addr`, the
/// lowest page being a guard page.
struct AltStack {
    addr: usize,
    len: usize,
}

/// Size of the alternate signal stacks we install. It covers our handler, which needs very
/// little, and the previous handler we may chain to (std's reporter formats a message).
fn altstack_size() -> usize {
    // SAFETY: getauxval has no preconditions; it returns 0 for an unknown entry.
    let min = unsafe { libc::getauxval(libc::AT_MINSIGSTKSZ) } as usize;
    let size = (64 * 1024).max(libc::SIGSTKSZ).max(4 * min);
    size.next_multiple_of(stack::page_size())
}

/// Gives the calling thread an alternate signal stack unless it has one (rule 4).
fn ensure_altstack() -> io::Result<()> {
    // SAFETY: an all-zero stack_t is a valid value to be overwritten.
    let mut current: libc::stack_t = unsafe { mem::zeroed() };
    // SAFETY: a null new stack only queries; `current` is a valid out-pointer.
    unsafe { syscall!(sigaltstack(ptr::null(), &mut current)) }?;
    if current.ss_flags & libc::SS_DISABLE == 0 {
        return Ok(()); // std's, or someone else's
    }
    OWN_ALTSTACK
        .try_with(|own| {
            let page = stack::page_size();
            let size = altstack_size();
            let addr = stack::map_anonymous(size + page)?;
            let altstack = AltStack { addr, len: size + page };
            let guarded = stack::install_guard(addr, page);
            stack::flush_logs();
            guarded?;
            let new =
                libc::stack_t { ss_sp: (addr + page) as *mut c_void, ss_flags: 0, ss_size: size };
            // SAFETY: `new` describes `size` bytes of fresh read-write memory that stays
            // mapped until `AltStack::drop` has disabled it.
            unsafe { syscall!(sigaltstack(&new, ptr::null_mut())) }?;
            log::debug!("greenfiber: installed an alternate signal stack at {addr:#x}");
            *own.borrow_mut() = Some(altstack);
            Ok(())
        })
        .unwrap_or_else(|_| Err(io::Error::other("thread is exiting")))
}

impl Drop for AltStack {
    fn drop(&mut self) {
        let ours = (self.addr + stack::page_size()) as *mut c_void;
        // SAFETY: an all-zero stack_t is a valid value to be overwritten.
        let mut current: libc::stack_t = unsafe { mem::zeroed() };
        // SAFETY: querying into a valid out-pointer.
        let queried = unsafe { syscall!(sigaltstack(ptr::null(), &mut current)) };
        if queried.is_err() {
            return; // cannot tell whether it is still in use: leak it
        }
        if current.ss_sp == ours && current.ss_flags & libc::SS_DISABLE == 0 {
            let off =
                libc::stack_t { ss_sp: ptr::null_mut(), ss_flags: libc::SS_DISABLE, ss_size: 0 };
            // SAFETY: disabling the alternate stack; fails (EPERM) only while running on it,
            // which a thread-local destructor is not.
            if unsafe { syscall!(sigaltstack(&off, ptr::null_mut())) }.is_err() {
                return; // still in use: leak it
            }
        }
        // SAFETY: the region came from `map_anonymous`, and it is no longer the alternate
        // signal stack (checked or disabled above), so nothing uses it.
        if let Err(e) = unsafe { stack::unmap(self.addr, self.len) } {
            log::warn!("greenfiber: cannot unmap an alternate signal stack: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coroutine::stack::tests::in_child;
    use crate::coroutine::stack_pool;
    use corosensei::stack::Stack;
    use corosensei::{Coroutine, Yielder};
    use std::hint::black_box;

    /// Recurses until the stack runs out. `black_box` keeps the compiler from turning it into
    /// a loop or seeing that it never returns.
    #[inline(never)]
    fn recurse(depth: u64) -> u64 {
        let mut frame = [0u8; 512];
        frame[0] = depth as u8;
        black_box(&mut frame);
        if black_box(true) { recurse(depth + 1) + u64::from(frame[1]) } else { depth }
    }

    fn died_of(status: libc::c_int, sig: libc::c_int) -> bool {
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == sig
    }

    /// Turns off this thread's alternate signal stack (in a forked child), so [`install`] has
    /// to provide one.
    fn disable_altstack() {
        let off = libc::stack_t { ss_sp: ptr::null_mut(), ss_flags: libc::SS_DISABLE, ss_size: 0 };
        // SAFETY: disabling is always allowed when not running on the alternate stack.
        unsafe { syscall!(sigaltstack(&off, ptr::null_mut())) }.unwrap();
    }

    #[test]
    fn overflow_names_the_coroutine_and_aborts() {
        let stack = stack_pool::take(64 * 1024);
        let name = String::from("worker-7");
        // SAFETY: `name` outlives the stack: the coroutine (and so the stack) is dropped inside
        // `in_child`, before `name` is dropped at the end of this test.
        unsafe { stack.set_owner_name(Some(&name)) };
        let mut co = Coroutine::with_stack(stack, |_: &Yielder<(), ()>, ()| {
            recurse(0);
        });
        let (status, stderr) = in_child(move || {
            install();
            co.resume(());
        });
        assert!(died_of(status, libc::SIGABRT), "status {status:#x}, stderr {stderr:?}");
        assert_eq!(stderr, "greenfiber: stack overflow in coroutine \"worker-7\"\n");
        drop(name);
    }

    #[test]
    fn overflow_unnamed_on_our_own_altstack() {
        let mut co = Coroutine::with_stack(stack_pool::take(0), |_: &Yielder<(), ()>, ()| {
            recurse(0);
        });
        let (status, stderr) = in_child(move || {
            disable_altstack();
            install();
            co.resume(());
        });
        assert!(died_of(status, libc::SIGABRT), "status {status:#x}, stderr {stderr:?}");
        assert_eq!(stderr, "greenfiber: stack overflow in an unnamed coroutine\n");
    }

    #[test]
    fn foreign_fault_chains_to_previous_handler() {
        let (status, stderr) = in_child(|| {
            install();
            // SAFETY: mapping one inaccessible page of our own, to fault on.
            let page = unsafe {
                libc::mmap(
                    ptr::null_mut(),
                    4096,
                    libc::PROT_NONE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            // SAFETY: deliberately faulting in the child.
            unsafe { ptr::write_volatile(page.cast::<u8>(), 1) };
        });
        // std's reporter (the previous handler) sees a fault outside its guard pages, resets
        // SIGSEGV to default and returns: the process dies of SIGSEGV, with no message of ours.
        assert!(died_of(status, libc::SIGSEGV), "status {status:#x}, stderr {stderr:?}");
        assert!(!stderr.contains("greenfiber"), "{stderr:?}");
    }

    #[test]
    fn install_is_idempotent_and_adds_an_altstack_only_if_missing() {
        std::thread::spawn(|| {
            install();
            install();
            assert!(OWN_ALTSTACK.with(|own| own.borrow().is_none()), "std's was there");
        })
        .join()
        .unwrap();
        std::thread::spawn(|| {
            disable_altstack();
            install();
            let own = OWN_ALTSTACK.with(|own| own.borrow().as_ref().map(|a| a.addr)).unwrap();
            // SAFETY: all-zero is a valid stack_t; querying into a valid out-pointer.
            let mut current: libc::stack_t = unsafe { mem::zeroed() };
            // SAFETY: as above.
            unsafe { syscall!(sigaltstack(ptr::null(), &mut current)) }.unwrap();
            assert_eq!(current.ss_flags & libc::SS_DISABLE, 0);
            assert_eq!(current.ss_sp as usize, own + stack::page_size());
            assert_eq!(current.ss_size, altstack_size());
        })
        .join()
        .unwrap();
    }

    #[test]
    fn registry_finds_guard_pages_only() {
        let page = stack::page_size();
        let a = stack_pool::take(0);
        let b = stack_pool::take(0);
        for s in [&a, &b] {
            let guard = s.limit().get();
            assert!(guard_owner(guard).is_some());
            assert!(guard_owner(guard + page - 1).is_some());
            assert!(guard_owner(guard + page).is_none());
            assert!(guard_owner(s.base().get() - 1).is_none());
        }
        assert!(!ptr::eq(
            guard_owner(a.limit().get()).unwrap(),
            guard_owner(b.limit().get()).unwrap()
        ));
        assert!(guard_owner(0).is_none());
        assert!(guard_owner(&page as *const usize as usize).is_none());
        stack_pool::give(a);
        stack_pool::give(b);
    }
}
