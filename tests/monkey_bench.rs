//! examples/monkey_bench runs in all three situations it measures (no timing is asserted).
#![cfg(feature = "monkey")]

mod common;

#[test]
fn monkey_bench_quick_measures_each_situation() {
    let out = common::example_stdout("monkey_bench", &["--quick"]);
    for label in [
        "before patch_all",
        "patched, thread without a hub",
        "patched, main of a thread with an idle hub",
    ] {
        assert_eq!(out.lines().filter(|l| l.starts_with(label)).count(), 2, "{out}");
    }
}
