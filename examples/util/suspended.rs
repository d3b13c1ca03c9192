//! Shared by `examples/coroutine_bench.rs` and `benches/switch.rs` (included with `#[path]`).

use greenfiber::{Coroutine, current};

/// A coroutine that has started and waits in its first switch back to main.
pub fn suspended() -> Coroutine {
    let co = Coroutine::new(|()| {
        let main = current().parent().unwrap();
        let () = main.switch(());
    });
    let () = co.switch(());
    co
}
