//! examples/monkey_fetch: with `patch_all()` N fetches of a 100 ms page overlap; without, they
//! run one after another.
#![cfg(feature = "monkey")]

use std::path::PathBuf;
use std::process::Command;

/// The example binary, built with the `monkey` feature if missing.
fn example() -> PathBuf {
    let mut dir = std::env::current_exe().unwrap();
    dir.pop();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join("examples").join("monkey_fetch");
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-j", "1", "--features", "monkey", "--example", "monkey_fetch"]);
        if dir.ends_with("release") {
            cmd.arg("--release");
        }
        assert!(cmd.status().unwrap().success(), "building monkey_fetch failed");
    }
    path
}

/// Runs the example; returns the milliseconds it reports.
fn run(args: &[&str]) -> u64 {
    let out = Command::new(example()).args(args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("fetched 8 pages of 27 bytes"), "{text}");
    let ms = text.split(" in ").nth(1).unwrap().split(' ').next().unwrap();
    ms.parse().unwrap()
}

#[test]
fn patched_fetches_overlap_and_unpatched_ones_do_not() {
    let patched = run(&["8"]);
    let unpatched = run(&["8", "--no-patch"]);
    // Ideal: ~100 ms vs ~800 ms. Generous bounds for a shared 2-core machine.
    assert!(unpatched >= 800, "unpatched took {unpatched} ms");
    assert!(patched < 500, "patched took {patched} ms");
    assert!(unpatched >= 3 * patched, "patched {patched} ms vs unpatched {unpatched} ms");
}
