//! examples/monkey_fetch: with `patch_all()` N fetches of a 100 ms page overlap; without, they
//! run one after another — with plain `std::net` and with `ureq`, a blocking HTTP client crate.
#![cfg(feature = "monkey")]

mod common;

use std::process::Command;

/// Runs the example; returns the milliseconds it reports.
fn run(args: &[&str]) -> u64 {
    let out = Command::new(common::example_path("monkey_fetch")).args(args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("fetched 8 pages of 27 bytes"), "{text}");
    let ms = text.split(" in ").nth(1).unwrap().split(' ').next().unwrap();
    ms.parse().unwrap()
}

/// Ideal: ~100 ms against ~800 ms. Generous bounds for a shared 2-core machine.
fn check(patched: u64, unpatched: u64) {
    assert!(unpatched >= 800, "unpatched took {unpatched} ms");
    assert!(patched < 500, "patched took {patched} ms");
    assert!(unpatched >= 3 * patched, "patched {patched} ms vs unpatched {unpatched} ms");
}

#[test]
fn patched_fetches_overlap_and_unpatched_ones_do_not() {
    check(run(&["8"]), run(&["8", "--no-patch"]));
}

#[test]
fn a_blocking_http_client_crate_is_made_concurrent_too() {
    check(run(&["8", "--ureq"]), run(&["8", "--ureq", "--no-patch"]));
}
