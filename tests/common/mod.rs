//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

/// The path of an example binary, built first so that it is up to date.
///
/// A plain `cargo test` builds every example, but `cargo test --test examples` builds none, so
/// this runs `cargo build --example <name>` in the test binary's own profile (a no-op when the
/// example is fresh).
pub fn example_path(name: &str) -> PathBuf {
    let mut dir = std::env::current_exe().unwrap();
    dir.pop(); // the test binary
    if dir.ends_with("deps") {
        dir.pop();
    }
    let mut build = Command::new(env!("CARGO"));
    build.args(["build", "--quiet", "--example", name]);
    build.arg("--manifest-path").arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"));
    if dir.ends_with("release") {
        build.arg("--release");
    }
    if cfg!(feature = "monkey") {
        build.args(["--features", "monkey"]);
    }
    let status = build.status().unwrap_or_else(|e| panic!("cannot run cargo: {e}"));
    assert!(status.success(), "cargo build --example {name} failed");
    dir.join("examples").join(name)
}

/// Runs an example to completion with `args` and returns its output.
pub fn run_example(name: &str, args: &[&str]) -> Output {
    let path = example_path(name);
    let out = Command::new(&path)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", path.display()));
    assert!(
        out.status.success(),
        "example {name} failed: {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Stdout of a successful run of an example, as text.
pub fn example_stdout(name: &str, args: &[&str]) -> String {
    String::from_utf8(run_example(name, args).stdout).unwrap()
}

/// How many file descriptors this process has open (`/proc/self/fd`).
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Runs `body` in a fresh copy of this test binary that runs only the test `name`: for tests
/// that count fds, change process limits or signal dispositions, which other tests running in
/// parallel threads would disturb. The parent asserts the child passed.
pub fn in_child_process(name: &str, body: impl FnOnce()) {
    const VAR: &str = "GREENFIBER_CHILD_TEST";
    if std::env::var(VAR).as_deref() == Ok(name) {
        body();
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(&exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(VAR, name)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child test {name} failed: {:?}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Polls `cond` every millisecond (letting fibers run) until it holds; panics after 10 s.
/// A hang guard, not a timing assertion.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !cond() {
        assert!(std::time::Instant::now() < give_up, "gave up waiting for {what}");
        greenfiber::sleep(std::time::Duration::from_millis(1));
    }
}
