//! Cost of a hooked libc call that passes through, against glibc's own function: `read(fd, buf,
//! 0)` on /dev/null (a cheap real syscall) and `clock_nanosleep` with
//! `CLOCK_THREAD_CPUTIME_ID` (refused with EINVAL before any syscall: the hook's cost alone).
//!
//! ```sh
//! cargo run --release --features monkey --example monkey_bench
//! cargo run --features monkey --example monkey_bench -- --quick   # a few calls: checks it runs
//! ```
//!
//! Prints ns per call for: glibc direct (found with dlopen/dlsym, bypassing the hook), the hook
//! before `patch_all()`, the hook after it on a thread without a hub (the fast path), and the
//! hook after it in main on a thread whose hub exists but has nothing to do (the slow path's
//! "not in a fiber" exit).

use std::ffi::c_void;
use std::os::fd::AsRawFd;
use std::time::Instant;

type ReadFn = unsafe extern "C" fn(i32, *mut c_void, usize) -> isize;
type SleepFn =
    unsafe extern "C" fn(libc::clockid_t, i32, *const libc::timespec, *mut libc::timespec) -> i32;

/// glibc's own function, bypassing the hook.
fn glibc<F>(name: &std::ffi::CStr) -> F {
    // SAFETY: plain dlopen/dlsym with NUL-terminated names; the caller names the signature.
    unsafe {
        let h = libc::dlopen(c"libc.so.6".as_ptr(), libc::RTLD_NOW);
        assert!(!h.is_null());
        let p = libc::dlsym(h, name.as_ptr());
        assert!(!p.is_null());
        std::mem::transmute_copy::<*mut c_void, F>(&p)
    }
}

fn ns_per_call(n: u32, mut f: impl FnMut()) -> f64 {
    for _ in 0..n / 10 {
        f();
    }
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    t.elapsed().as_nanos() as f64 / n as f64
}

/// Glibc and hook in alternating rounds; the minimum per-call time of each (syscall noise on a
/// shared machine is much larger than the difference we look for).
fn measure(label: &str, fd: i32) {
    let real: ReadFn = glibc(c"read");
    let real_sleep: SleepFn = glibc(c"clock_nanosleep");
    let quick = std::env::args().any(|a| a == "--quick");
    let (n, rounds) = if quick { (1_000, 1) } else { (200_000, 15) };
    let mut buf = [0u8; 1];
    let p = buf.as_mut_ptr().cast();
    let (mut direct, mut hooked) = (f64::MAX, f64::MAX);
    for _ in 0..rounds {
        // SAFETY: a valid fd and buffer; 0 bytes.
        direct = direct.min(ns_per_call(n, || assert_eq!(unsafe { real(fd, p, 0) }, 0)));
        // SAFETY: as above, through the hooked symbol.
        hooked = hooked.min(ns_per_call(n, || assert_eq!(unsafe { libc::read(fd, p, 0) }, 0)));
    }
    // glibc answers EINVAL for this clock without a syscall: the hook's own cost is visible.
    let ts = libc::timespec { tv_sec: 0, tv_nsec: 1 };
    let cpu = libc::CLOCK_THREAD_CPUTIME_ID;
    let (mut sd, mut sh) = (f64::MAX, f64::MAX);
    for _ in 0..rounds {
        // SAFETY: a valid timespec; glibc rejects the clock with EINVAL.
        sd = sd.min(ns_per_call(n * 10, || {
            assert_eq!(unsafe { real_sleep(cpu, 0, &ts, std::ptr::null_mut()) }, libc::EINVAL)
        }));
        // SAFETY: as above, through the hooked symbol.
        sh = sh.min(ns_per_call(n * 10, || {
            let r = unsafe { libc::clock_nanosleep(cpu, 0, &ts, std::ptr::null_mut()) };
            assert_eq!(r, libc::EINVAL)
        }));
    }
    println!(
        "{label:<44} clock_nanosleep(EINVAL, no syscall): glibc {sd:5.1} ns, hook {sh:5.1} ns, \
         diff {:+4.1} ns",
        sh - sd
    );
    println!(
        "{label:<44} read(0 bytes): glibc {direct:6.1} ns, hook {hooked:6.1} ns, diff {:+5.1} ns",
        hooked - direct
    );
}

fn main() {
    let null = std::fs::File::open("/dev/null").unwrap();
    let fd = null.as_raw_fd();
    measure("before patch_all", fd);
    greenfiber::monkey::patch_all();
    std::thread::scope(|s| {
        s.spawn(|| measure("patched, thread without a hub", fd));
    });
    let _ = greenfiber::current();
    let g = greenfiber::spawn(|| ()); // creates the hub
    greenfiber::joinall(&[g], None);
    measure("patched, main of a thread with an idle hub", fd);
}
