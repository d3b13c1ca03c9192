//! Stacks: a stack overflow is reported by name and aborts (checked in a child process); stacks
//! are pooled and reused; many coroutines stay within the kernel's map-count limit.
use std::os::unix::process::ExitStatusExt;
use std::process::Command;

use greenfiber::{Coroutine, current};

const CHILD: &str = "GREENFIBER_TEST_OVERFLOW_CHILD";

#[inline(never)]
fn recurse(depth: u64) -> u64 {
    if depth == u64::MAX {
        return 0;
    }
    let buf = std::hint::black_box([depth; 64]);
    recurse(depth + 1) + buf[3]
}

#[test]
fn stack_overflow_names_the_coroutine_and_aborts() {
    if std::env::var_os(CHILD).is_some() {
        let c = Coroutine::builder().name("worker-7").stack_size(64 * 1024).build(|()| recurse(0));
        let _: u64 = c.switch(());
        unreachable!("the overflow aborts the process");
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "stack_overflow_names_the_coroutine_and_aborts", "--nocapture"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("greenfiber: stack overflow in coroutine \"worker-7\""),
        "stderr: {stderr}"
    );
    assert_eq!(out.status.signal(), Some(libc_sigabrt()), "status: {:?}", out.status);
}

fn libc_sigabrt() -> i32 {
    6
}

#[test]
fn finished_coroutines_give_their_stacks_back_for_reuse() {
    // 100,000 create+run+finish cycles would need 100,000 stacks without reuse; with the pool
    // the process maps a handful of arenas.
    let maps_before = std::fs::read_to_string("/proc/self/maps").unwrap().lines().count();
    for i in 0..100_000u32 {
        let c = Coroutine::new(move |x: u32| x + i);
        let _: u32 = c.switch(1u32);
    }
    let maps_after = std::fs::read_to_string("/proc/self/maps").unwrap().lines().count();
    assert!(maps_after < maps_before + 20, "{maps_before} -> {maps_after}");
}

#[test]
fn forty_thousand_live_suspended_coroutines_fit_under_the_map_count_limit() {
    // One mmap + one mprotect per stack would stop near 32,000 here (vm.max_map_count 65530).
    let cs: Vec<Coroutine> = (0..40_000)
        .map(|_| {
            let c = Coroutine::new(|()| {
                let p = current().parent().unwrap();
                let () = p.switch(());
            });
            let () = c.switch(());
            c
        })
        .collect();
    assert!(cs.iter().all(Coroutine::is_active));
    drop(cs); // kills each one
}
