//! The real libc functions behind the hooks, found with `dlsym(RTLD_NEXT, name)`: the next
//! definition after the executable's own, i.e. glibc's. This is the only file that calls
//! `dlsym`.
//!
//! Each function is declared once in the `real!` table below, which generates
//! - a `static` holding the resolved address (0 = not resolved yet), and
//! - an `unsafe fn` with the libc signature that loads it (one relaxed load) and calls it.
//!
//! [`resolve_all`] fills every slot; `patch_all()` calls it, so no hook resolves anything while
//! fibers run. A hook can run before that (before `main`, or in a program that never patches):
//! then the first call resolves its own slot. Resolution is idempotent (every thread finds the
//! same address), so racing threads need no lock: the last store wins with the same value.
//!
//! # Contract
//! Each generated function has the safety contract of the libc function of the same name.

use std::ffi::{CStr, c_int, c_uint, c_ulong, c_void};
use std::sync::atomic::{AtomicUsize, Ordering};

use libc::{iovec, msghdr, nfds_t, pollfd, size_t, sockaddr, socklen_t, ssize_t, timespec};

/// Looks `name` up with `dlsym(RTLD_NEXT, ..)` and stores it in `slot`. Aborts if it is
/// missing: a hooked symbol without a real one behind it cannot do anything sensible (a static
/// binary, or a libc without the function).
#[cold]
#[inline(never)]
fn resolve(name: &CStr, slot: &AtomicUsize) -> usize {
    // SAFETY: `name` is NUL-terminated; RTLD_NEXT is a valid pseudo-handle for dlsym.
    let p = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) } as usize;
    if p == 0 {
        super::hooks::die(
            name.to_bytes(),
            b": greenfiber monkey: dlsym(RTLD_NEXT) found no real function\n",
        );
    }
    slot.store(p, Ordering::Relaxed);
    p
}

macro_rules! real {
    ($( fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty; )*) => {
        /// The address slots, one per function, named like it.
        #[allow(non_upper_case_globals)]
        mod slot {
            use super::AtomicUsize;
            $( pub(super) static $name: AtomicUsize = AtomicUsize::new(0); )*
        }

        $(
            /// The real libc function of this name.
            ///
            /// # Safety
            /// The contract of the libc function of the same name.
            #[inline(always)]
            pub(crate) unsafe fn $name($($arg: $ty),*) -> $ret {
                let mut p = slot::$name.load(Ordering::Relaxed);
                if p == 0 {
                    p = resolve(
                        // SAFETY: the literal ends with exactly one NUL.
                        unsafe {
                            CStr::from_bytes_with_nul_unchecked(concat!(stringify!($name), "\0").as_bytes())
                        },
                        &slot::$name,
                    );
                }
                // SAFETY: `p` is what dlsym returned for this very name, so it is glibc's
                // function with the signature declared in this table (taken from libc's
                // headers).
                let f: unsafe extern "C" fn($($ty),*) -> $ret = unsafe { std::mem::transmute(p) };
                // SAFETY: the caller upholds the libc function's contract.
                unsafe { f($($arg),*) }
            }
        )*

        /// Resolves every function now (called by `patch_all`).
        pub(crate) fn resolve_all() {
            $(
                if slot::$name.load(Ordering::Relaxed) == 0 {
                    resolve(
                        // SAFETY: the literal ends with exactly one NUL.
                        unsafe {
                            CStr::from_bytes_with_nul_unchecked(concat!(stringify!($name), "\0").as_bytes())
                        },
                        &slot::$name,
                    );
                }
            )*
        }

        /// Every hooked symbol's name, in table order.
        #[allow(dead_code)]
        pub(crate) const NAMES: &[&str] = &[$( stringify!($name) ),*];
    };
}

real! {
    fn clock_nanosleep(clock: libc::clockid_t, flags: c_int, req: *const timespec, rem: *mut timespec) -> c_int;
    fn nanosleep(req: *const timespec, rem: *mut timespec) -> c_int;
    fn sleep(secs: c_uint) -> c_uint;
    fn usleep(usecs: libc::useconds_t) -> c_int;
    fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int;
    fn accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int;
    fn accept4(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t, flags: c_int) -> c_int;
    fn read(fd: c_int, buf: *mut c_void, n: size_t) -> ssize_t;
    fn write(fd: c_int, buf: *const c_void, n: size_t) -> ssize_t;
    fn recv(fd: c_int, buf: *mut c_void, n: size_t, flags: c_int) -> ssize_t;
    fn send(fd: c_int, buf: *const c_void, n: size_t, flags: c_int) -> ssize_t;
    fn recvfrom(fd: c_int, buf: *mut c_void, n: size_t, flags: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> ssize_t;
    fn sendto(fd: c_int, buf: *const c_void, n: size_t, flags: c_int, addr: *const sockaddr, len: socklen_t) -> ssize_t;
    fn recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t;
    fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t;
    fn readv(fd: c_int, iov: *const iovec, n: c_int) -> ssize_t;
    fn writev(fd: c_int, iov: *const iovec, n: c_int) -> ssize_t;
    fn poll(fds: *mut pollfd, n: nfds_t, timeout: c_int) -> c_int;
    fn ioctl(fd: c_int, req: c_ulong, arg: *mut c_void) -> c_int;
    fn fcntl(fd: c_int, cmd: c_int, arg: libc::c_long) -> c_int;
    fn dup(fd: c_int) -> c_int;
    fn dup2(old: c_int, new: c_int) -> c_int;
    fn dup3(old: c_int, new: c_int, flags: c_int) -> c_int;
    fn close(fd: c_int) -> c_int;
    fn fclose(f: *mut libc::FILE) -> c_int;
    fn socket(domain: c_int, ty: c_int, proto: c_int) -> c_int;
    fn socketpair(domain: c_int, ty: c_int, proto: c_int, sv: *mut c_int) -> c_int;
    fn pipe2(fds: *mut c_int, flags: c_int) -> c_int;
}
