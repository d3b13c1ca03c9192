//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

/// The path of a built example binary. A full `cargo test` builds every example before the
/// tests run; when only one test target was built, the example is built here.
pub fn example_path(name: &str) -> PathBuf {
    let mut dir = std::env::current_exe().unwrap();
    dir.pop(); // the test binary
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join("examples").join(name);
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--example", name]);
        if dir.ends_with("release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("cannot run cargo to build an example");
        assert!(status.success(), "building example {name} failed");
    }
    path
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
