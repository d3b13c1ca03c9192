//! A build without the `monkey` feature defines none of the hooked libc symbols (checked with
//! `nm` on this very test binary, which is built without the feature in a plain `cargo test`).
#![cfg(not(feature = "monkey"))]

const HOOKED: &[&str] = &[
    "clock_nanosleep",
    "nanosleep",
    "sleep",
    "usleep",
    "connect",
    "accept",
    "accept4",
    "read",
    "write",
    "recv",
    "send",
    "recvfrom",
    "sendto",
    "recvmsg",
    "sendmsg",
    "readv",
    "writev",
    "poll",
    "ioctl",
    "fcntl",
    "dup",
    "dup2",
    "dup3",
    "close",
    "socket",
    "socketpair",
    "pipe2",
];

#[test]
fn no_hooked_symbol_is_defined_without_the_feature() {
    // Make sure greenfiber is linked in at all.
    let _ = greenfiber::current();
    let exe = std::env::current_exe().unwrap();
    let out = match std::process::Command::new("nm").arg("--defined-only").arg(&exe).output() {
        Ok(o) if o.status.success() => o,
        _ => {
            eprintln!("skipped: `nm` is not available");
            return;
        }
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let defined: Vec<&str> = text
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let (_, kind, name) = (it.next()?, it.next()?, it.next()?);
            (kind == "T" || kind == "t" || kind == "W").then_some(name)
        })
        .filter(|n| HOOKED.contains(n))
        .collect();
    assert!(defined.is_empty(), "defined without the feature: {defined:?}");
}
