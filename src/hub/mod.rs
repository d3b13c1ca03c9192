//! Layer 2: one hub per thread; for now only its drivers, which never switch.

#[cfg_attr(not(test), expect(dead_code, reason = "used by hub/scheduler.rs, not written yet"))]
pub(crate) mod reactor;
#[cfg_attr(not(test), expect(dead_code, reason = "used by hub/scheduler.rs, not written yet"))]
pub(crate) mod remote;
#[cfg_attr(not(test), expect(dead_code, reason = "used by hub/scheduler.rs, not written yet"))]
pub(crate) mod timers;
