//! `Builder`: stack size, parent and name for a new coroutine (std::thread::Builder's shape).

use std::cell::{Cell, UnsafeCell};

use super::counted::CoreRef;
use super::switch::{self, Expect};
use super::{Core, Coroutine, RawCoroutine, overflow, stack_pool, thread};

/// Configures a coroutine before it is created.
///
/// ```
/// let c = greenfiber::Coroutine::builder()
///     .name("worker-7")
///     .stack_size(64 * 1024)
///     .build(|x: u32| x + 1);
/// assert_eq!(c.name(), Some("worker-7"));
/// assert_eq!(c.switch::<u32, u32>(41), 42);
/// ```
#[derive(Debug, Default)]
#[must_use]
pub struct Builder {
    stack_size: Option<usize>,
    parent: Option<Coroutine>,
    name: Option<String>,
}

impl Builder {
    /// A builder with the defaults: the default stack size, the current coroutine as parent,
    /// no name.
    pub fn new() -> Builder {
        Builder::default()
    }

    /// Usable stack size in bytes, rounded up to a power of two of pages, at least 16 KiB (the
    /// pool's size classes); a guard page is added below it.
    /// The default is `DEFAULT_STACK_SIZE` (256 KiB of address space; only touched pages use
    /// memory).
    pub fn stack_size(mut self, bytes: usize) -> Builder {
        self.stack_size = Some(bytes);
        self
    }

    /// The coroutine that receives this one's result; the current coroutine by default.
    pub fn parent(mut self, p: &Coroutine) -> Builder {
        self.parent = Some(p.clone());
        self
    }

    /// A name for logs, `Debug` and the stack-overflow message.
    pub fn name(mut self, n: &str) -> Builder {
        self.name = Some(n.to_owned());
        self
    }

    /// Creates the coroutine. It runs `f` at the first switch to it.
    pub fn build<A: 'static, R: 'static>(self, f: impl FnOnce(A) -> R + 'static) -> Coroutine {
        let Builder { stack_size, parent, name } = self;
        let name = name.map(String::into_boxed_str);
        thread::with(|ts| {
            if !ts.overflow_ready.get() {
                overflow::install();
                ts.overflow_ready.set(true);
            }
            let stack = match stack_size {
                None => ts.stacks.take(),
                Some(size) => stack_pool::take(size),
            };
            if let Some(name) = &name {
                // SAFETY: the name's bytes live in the `Box<str>` the core takes below (moving a
                // box leaves them in place), and the stack goes back to the pool, clearing the
                // name, before the core drops it (rule 2; `Core`'s `Drop` drops `raw` first).
                unsafe { stack.set_owner_name(Some(name)) };
            }
            let parent = parent.unwrap_or_else(|| ts.current());
            let id = ts.next_id.get();
            ts.next_id.set(id + 1);
            let stack_top = stack.top();
            let block = CoreRef::alloc_with(&ts.blocks);
            let ptr = block.core_ptr();
            let raw = RawCoroutine::with_stack(stack, move |yielder, ()| {
                // SAFETY: `ptr` is this coroutine's own core, alive while it runs (rule 2).
                unsafe { switch::body(ptr, yielder, f) }
            });
            let core = block.init(Core {
                id,
                name,
                started: Cell::new(false),
                dead: Cell::new(false),
                in_chain: Cell::new(false),
                parent: Cell::new(Some(parent)),
                expect: Cell::new(Expect::of::<A>()),
                yielder: Cell::new(std::ptr::null()),
                raw: UnsafeCell::new(Some(raw)),
                park_slot: Cell::new(std::ptr::null()),
                hub_flags: Cell::new(0),
                adopted: Cell::new(false),
                cut_short: Cell::new(false),
                stack_top,
                depth: Cell::new(0),
            });
            if switch::trace_on() {
                log_created(&core);
            }
            Coroutine(core)
        })
    }
}

/// The trace line for a new coroutine, out of line, after the logger's own filter (`label`
/// formats a string; see `trace_switch` in `switch.rs`).
#[cold]
#[inline(never)]
fn log_created(core: &Core) {
    if log::log_enabled!(log::Level::Trace) {
        log::trace!("coroutine {} created", core.label());
    }
}
