//! What the hooks know about each file descriptor: one `AtomicU32` per fd, lock-free, shared by
//! every thread.
//!
//! The table is a zero-initialised `static` array for fds below [`MAX_FDS`] (256 KiB of `.bss`:
//! the kernel backs a page only when an fd in it is first touched, so nothing is allocated —
//! which matters because a hook may run before `main`). Higher fds are never managed: every
//! hook passes them straight through.
//!
//! # The state word
//!
//! ```text
//!  31                         8 7   5   4        3             2              1          0
//! +----------------------------+-----+--------+-------------+--------------+----------+---------+
//! |        GENERATION          | (0) | SHARED | OURS_NB     | USER_NB      | FOREIGN  | MANAGED |
//! +----------------------------+-----+--------+-------------+--------------+----------+---------+
//! ```
//!
//! | bit        | meaning                                                                   |
//! |------------|---------------------------------------------------------------------------|
//! | MANAGED    | a socket or pipe: inside a fiber, hooks wait on it through the hub        |
//! | FOREIGN    | classified and not ours (regular file, tty, eventfd …): always pass through |
//! | USER_NB    | the user's own mode is non-blocking: hooks pass through (EAGAIN as asked) |
//! | OURS_NB    | the hooks set `O_NONBLOCK` on it; `F_GETFL` hides it, blocking is emulated |
//! | SHARED     | duplicated after `patch_all` while in blocking mode: another fd shares its open |
//! |            | file, so an `O_NONBLOCK` found on it later was set by the hooks through that copy |
//! | GENERATION | bumped by every `close` we see; a waiter whose fd changed generation while  |
//! |            | it was parked gets `EBADF` instead of touching whatever reuses the number |
//!
//! | MANAGED | FOREIGN | USER_NB | OURS_NB | state                                          |
//! |---------|---------|---------|---------|------------------------------------------------|
//! | 0       | 0       | 0       | 0       | unknown: classified (fstat) on first fiber use |
//! | 1       | 0       | 0       | 0       | ours, still in the user's blocking mode        |
//! | 1       | 0       | 0       | 1       | ours, non-blocking underneath, blocking for the user |
//! | 1       | 0       | 1       | x       | ours, user asked for non-blocking: pass through |
//! | 0       | 1       | x       | 0       | foreign (USER_NB recorded but unused)          |
//! | 1       | 1       | x       | x       | impossible                                     |
//! | 0       | x       | x       | 1       | impossible: OURS_NB is only set on MANAGED     |
//!
//! `O_NONBLOCK` belongs to the open file description, which `dup` shares; the table is per fd.
//! `dup`-like calls settle the fd's state, mark it `SHARED` and copy the bits to the new fd, so
//! that neither copy takes an `O_NONBLOCK` the hooks set through the other for the user's. A
//! later mode change through one copy is recorded for that fd only (the other copy keeps its
//! recorded user mode).

use std::sync::atomic::{AtomicU32, Ordering};

/// fds at or above this are passed through untouched.
pub(crate) const MAX_FDS: usize = 65536;

pub(crate) const MANAGED: u32 = 1 << 0;
pub(crate) const FOREIGN: u32 = 1 << 1;
pub(crate) const USER_NB: u32 = 1 << 2;
pub(crate) const OURS_NB: u32 = 1 << 3;
pub(crate) const SHARED: u32 = 1 << 4;
const FLAGS: u32 = 0xff;
const GEN_SHIFT: u32 = 8;

static TABLE: [AtomicU32; MAX_FDS] = [const { AtomicU32::new(0) }; MAX_FDS];

/// One fd's state word, as read at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct State(u32);

impl State {
    pub(crate) fn flags(self) -> u32 {
        self.0 & FLAGS
    }
    pub(crate) fn has(self, bit: u32) -> bool {
        self.0 & bit != 0
    }
    pub(crate) fn is_unknown(self) -> bool {
        self.0 & (MANAGED | FOREIGN) == 0
    }
    /// True if the hooks emulate blocking on it: ours and non-blocking only because of us.
    pub(crate) fn blocking_emulated(self) -> bool {
        self.0 & (MANAGED | USER_NB | OURS_NB) == MANAGED | OURS_NB
    }
    pub(crate) fn generation(self) -> u32 {
        self.0 >> GEN_SHIFT
    }
}

fn slot(fd: i32) -> Option<&'static AtomicU32> {
    usize::try_from(fd).ok().and_then(|i| TABLE.get(i))
}

/// The state of `fd`; `None` for a negative fd or one at or above [`MAX_FDS`].
#[inline]
pub(crate) fn get(fd: i32) -> Option<State> {
    slot(fd).map(|s| State(s.load(Ordering::Acquire)))
}

/// Replaces the flags of `fd` with `f(old flags)` in one atomic step, keeping its generation;
/// returns the new state (`None` for an fd out of range).
pub(crate) fn update(fd: i32, f: impl Fn(u32) -> u32) -> Option<State> {
    let s = slot(fd)?;
    let new = |w: u32| (w & !FLAGS) | (f(w & FLAGS) & FLAGS);
    let old = s.fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| Some(new(w)));
    Some(State(new(old.unwrap_or_else(|w| w))))
}

/// Sets the flags of `fd` to exactly `flags`, keeping its generation.
pub(crate) fn set(fd: i32, flags: u32) {
    update(fd, |_| flags);
}

/// Sets the flags of `fd` to `flags` if it is still unknown (neither `MANAGED` nor `FOREIGN`);
/// returns the state it has now, whoever classified it.
pub(crate) fn set_if_unknown(fd: i32, flags: u32) -> Option<State> {
    update(fd, |f| if f & (MANAGED | FOREIGN) == 0 { flags } else { f })
}

/// Records that `fd` was closed: no flags, next generation.
pub(crate) fn closed(fd: i32) {
    if let Some(s) = slot(fd) {
        let _ = s.fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
            Some(((w >> GEN_SHIFT).wrapping_add(1)) << GEN_SHIFT)
        });
    }
}

/// `to` became a copy of `from` (dup): it gets `from`'s flags and keeps its own generation.
pub(crate) fn copy(from: i32, to: i32) {
    let flags = get(from).map_or(0, State::flags);
    set(to, flags);
}

#[cfg(test)]
mod tests {
    use super::*;

    // High fds that no real descriptor in the test process reaches.
    const A: i32 = 60001;
    const B: i32 = 60002;

    #[test]
    fn out_of_range_fds_have_no_state_and_are_ignored() {
        assert_eq!(get(-1), None);
        assert_eq!(get(MAX_FDS as i32), None);
        set(-1, MANAGED);
        closed(MAX_FDS as i32);
        assert!(get(MAX_FDS as i32 - 1).is_some());
    }

    #[test]
    fn flags_keep_the_generation_and_close_bumps_it() {
        let g0 = get(A).unwrap().generation();
        assert!(get(A).unwrap().is_unknown());
        set(A, MANAGED);
        update(A, |f| f | OURS_NB);
        let s = get(A).unwrap();
        assert!(s.blocking_emulated());
        assert_eq!(s.generation(), g0);
        update(A, |f| f | USER_NB);
        assert!(!get(A).unwrap().blocking_emulated());
        closed(A);
        let s = get(A).unwrap();
        assert_eq!(s.flags(), 0);
        assert_eq!(s.generation(), g0 + 1);
    }

    #[test]
    fn copy_takes_flags_not_generation() {
        closed(B);
        closed(B);
        let gb = get(B).unwrap().generation();
        set(A + 10, MANAGED | USER_NB);
        copy(A + 10, B);
        let s = get(B).unwrap();
        assert_eq!(s.flags(), MANAGED | USER_NB);
        assert_eq!(s.generation(), gb);
    }

    #[test]
    fn generation_wraps_without_touching_flags() {
        let fd = A + 20;
        for _ in 0..(1 << 24) + 3 {
            closed(fd);
        }
        set(fd, FOREIGN);
        let s = get(fd).unwrap();
        assert_eq!(s.flags(), FOREIGN);
        assert_eq!(s.generation(), 3);
    }

    #[test]
    fn concurrent_updates_are_not_lost() {
        let fd = A + 30;
        std::thread::scope(|sc| {
            for bit in [MANAGED, USER_NB, OURS_NB] {
                sc.spawn(move || {
                    for _ in 0..1000 {
                        update(fd, |f| f | bit);
                        closed(fd + 1);
                    }
                });
            }
        });
        assert_eq!(get(fd).unwrap().flags(), MANAGED | USER_NB | OURS_NB);
        assert_eq!(get(fd + 1).unwrap().generation(), 3000);
    }
}
