//! Raises held for a coroutine that could not take them where they reached it.
//!
//! A kill or a `with_timeout` expiry is raised at the coroutine's blocking point. When that
//! point is inside a C caller (a patched libc call, Layer 5), the raise cannot unwind through
//! the C frames: the hook catches it and returns an error to its caller instead. The raise is
//! not lost, though: the hook hands it here, and from then on
//!
//! | held         | a hooked wait of the coroutine | its next park outside a hook | when it ends                        |
//! |--------------|--------------------------------|------------------------------|-------------------------------------|
//! | a kill       | fails at once (ECANCELED)      | raises `GreenletExit`        | a fiber that returned is `Killed`   |
//! | a timeout    | fails at once (ETIMEDOUT)      | raises the timeout           | its `with_timeout` returns `Err`    |
//!
//! A held timeout is forgotten when its `with_timeout` ends, however it ends, so it is never
//! raised outside it; a held kill is forgotten when its coroutine ends. A park that starts
//! while a panic is under way on the thread raises nothing but a timeout set in the cleanup it
//! is in (park.rs rule 5; see [`raise_at_park`]): the rest stays held, and the hub raises it
//! into the park once no panic is under way ([`raise_parked`]). So a held raise waits for as
//! long as some coroutine of the thread is halfway through an unwind: behind a cleanup that
//! sleeps; behind one that waits for the fiber holding the raise, only until nothing else can
//! run, when the hub raises it before any LoopExit ([`raise_parked`]). That is the price of never aborting: raising sooner could land in
//! the cleanup of a panic the fiber started itself (its natural answer to the error its held
//! raise gave it), which `unwind.rs` cannot see while another unwind is under way.
//!
//! Each entry holds a handle to its coroutine: a coroutine that holds a raise lives until it
//! parks again (and takes it), ends as a fiber, or dies; a raw coroutine left suspended with a
//! held kill and no other handle is leaked, not killed.

use std::any::Any;

use super::scheduler::{self, Hub};
use super::time::TimeoutFired;
use super::unwind;
use crate::coroutine::{Coroutine, GreenletExit};
use crate::error::Payload;

/// What a coroutine holds, as a hooked call reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Held {
    Kill,
    Timeout,
}

fn kind(p: &(dyn Any + Send)) -> Option<Held> {
    if p.is::<GreenletExit>() {
        Some(Held::Kill)
    } else if p.is::<TimeoutFired>() {
        Some(Held::Timeout)
    } else {
        None
    }
}

/// Runs `f`, a park inside a C caller (a hook). A kill or a timeout raised in it cannot
/// unwind through that caller: it is caught here and held for the running coroutine, which
/// stands again where it stood in its unwinds before `f` (that unwind ended here), and what it
/// was is returned. Any other payload goes on.
#[cfg_attr(not(feature = "monkey"), allow(dead_code))]
pub(crate) fn catch<T>(f: impl FnOnce() -> T) -> Result<T, Held> {
    let Some(co) = crate::coroutine::try_current() else { return Ok(f()) };
    unwind::look(&co);
    let mark = unwind::mark(&co);
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(v) => Ok(v),
        Err(p) => match hold(&co, p) {
            Ok(h) => {
                unwind::back_to(&co, mark);
                log::debug!("greenfiber: {co:?} got {h:?} inside a C caller: held for it");
                Err(h)
            }
            Err(p) => std::panic::resume_unwind(p),
        },
    }
}

/// Holds `payload`, a kill or timeout caught inside a C caller, for the running coroutine
/// `co`. Returns what it is; any other payload is given back.
fn hold(co: &Coroutine, payload: Payload) -> Result<Held, Payload> {
    let Some(k) = kind(&*payload) else { return Err(payload) };
    scheduler::try_with(|hub| {
        let mut held = hub.held.borrow_mut();
        held.retain(|(c, _)| !c.is_dead());
        // One kill per coroutine, one entry per timeout: a fiber that keeps failing (and is
        // raised into again) does not grow the list.
        let same = |p: &Payload| match k {
            Held::Kill => p.is::<GreenletExit>(),
            Held::Timeout => {
                let id = payload.downcast_ref::<TimeoutFired>().map(|t| t.id);
                p.downcast_ref::<TimeoutFired>().map(|t| t.id) == id
            }
        };
        if !held.iter().any(|(c, p)| c == co && same(p)) {
            held.push((co.clone(), payload));
        }
        hub.held_any.set(true);
    });
    Ok(k)
}

/// What `co` holds, a kill before a timeout.
#[cfg_attr(not(feature = "monkey"), allow(dead_code))]
pub(crate) fn holds(co: &Coroutine) -> Option<Held> {
    scheduler::try_with(|hub| {
        if !hub.held_any.get() {
            return None;
        }
        let held = hub.held.borrow();
        let mine = held.iter().filter(|(c, _)| c == co).filter_map(|(_, p)| kind(&**p));
        mine.min_by_key(|k| *k != Held::Kill)
    })
    .flatten()
}

/// Lets the other ready coroutines run once, as `yield_now`, without raising what `co`, the
/// running coroutine, holds at this park: a hooked call refused for it (it holds a kill) must
/// not starve the thread when its caller loops on the error. A raise that reaches it meanwhile
/// goes on to the caller.
#[cfg_attr(not(feature = "monkey"), allow(dead_code))]
pub(crate) fn yield_keeping(co: &Coroutine) {
    let mine = scheduler::with(|hub| {
        let mut held = hub.held.borrow_mut();
        let (mine, rest): (Vec<_>, Vec<_>) = held.drain(..).partition(|(c, _)| c == co);
        *held = rest;
        hub.held_any.set(!held.is_empty());
        mine
    });
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(super::time::yield_now));
    scheduler::with(|hub| {
        let mut held = hub.held.borrow_mut();
        held.extend(mine);
        hub.held_any.set(!held.is_empty());
    });
    if let Err(p) = r {
        std::panic::resume_unwind(p);
    }
}

/// Takes out (and reports) the timeout of the `with_timeout` `id`, if a C caller swallowed it.
#[inline]
pub(crate) fn take_timeout(id: u64) -> bool {
    scheduler::try_with(|hub| hub.held_any.get() && take(hub, |_, p| is_timeout(p, id)))
        .unwrap_or(false)
}

/// Takes out everything `co`, a fiber that is ending, holds; true if that was a kill.
#[inline]
pub(crate) fn take_kill(co: &Coroutine) -> bool {
    scheduler::try_with(|hub| {
        hub.held_any.get() && {
            let mut killed = false;
            take(hub, |c, p| {
                let it = c == co;
                killed |= it && p.is::<GreenletExit>();
                it
            });
            killed
        }
    })
    .unwrap_or(false)
}

fn is_timeout(p: &Payload, id: u64) -> bool {
    p.downcast_ref::<TimeoutFired>().is_some_and(|t| t.id == id)
}

/// Removes the entries `which` picks; true if there were any.
#[cold]
fn take(hub: &Hub, mut which: impl FnMut(&Coroutine, &Payload) -> bool) -> bool {
    let mut held = hub.held.borrow_mut();
    let before = held.len();
    held.retain(|(c, p)| !which(c, p));
    hub.held_any.set(!held.is_empty());
    held.len() != before
}

/// At the start of a park of `co`, the running coroutine, which may be `unwinding`
/// (`unwind.rs`): raises what it holds, a kill first, when no panic is under way on the
/// thread. While one is, only a timeout whose `with_timeout` began in the cleanup this park
/// is in goes through (park.rs rule 5); the rest stays held, for this coroutine too when it
/// looks not unwinding: a fiber's natural answer to the ECANCELED its held kill gave is a
/// panic of its own (`unwrap`), which `unwind.rs` does not attribute to it while another
/// coroutine is halfway through an unwind, and raising there would abort. Called only while
/// anything is held; entries of coroutines that died go.
#[cold]
#[inline(never)]
pub(crate) fn raise_at_park(hub: &Hub, co: &Coroutine, unwinding: bool) {
    let panicking = unwinding || std::thread::panicking();
    let may = |p: &Payload| !panicking || unwind::is_cleanup_timeout(co, &**p);
    let Some(payload) = take_next(hub, co, may) else { return };
    if unwinding {
        unwind::unwinds_again(co);
    } else {
        unwind::raising(co);
    }
    std::panic::resume_unwind(payload);
}

/// Takes out the raise `co` holds that goes next, its kill before a timeout, among those `may`
/// lets through; entries of coroutines that died go too.
fn take_next(hub: &Hub, co: &Coroutine, may: impl Fn(&Payload) -> bool) -> Option<Payload> {
    let mut held = hub.held.borrow_mut();
    held.retain(|(c, _)| !c.is_dead());
    let at = |k: Held| held.iter().position(|(c, p)| c == co && kind(&**p) == Some(k) && may(p));
    let next = at(Held::Kill).or_else(|| at(Held::Timeout)).map(|i| held.remove(i).1);
    hub.held_any.set(!held.is_empty());
    next
}

fn parked(co: &Coroutine) -> bool {
    super::park::waiter_of(co).is_some_and(|w| w.is_parked())
}

/// The hub: raises what each parked coroutine holds into its park (one that parked while a
/// panic was under way kept it, [`raise_at_park`]). Each coroutine found holding something now
/// gets one raise (its kill first), one at a time, each entry taken out of the list just before
/// it is raised, so that what the raise runs (a `with_timeout` ending, a fiber ending) still
/// finds the others there; what is held again meanwhile waits for the next pass.
///
/// Only while no panic is under way on the thread, checked before each raise (a raise may
/// start one), unless `stuck`: nothing else can ever run, and the hub would raise LoopExit.
/// A held raise may then be what the unwind under way waits for (a cleanup that joins the
/// holder), as the raise would have been without the hook, so it goes first, into a holder not
/// seen unwinding, with the same risk LoopExit itself takes there (`unwind.rs`'s blind spot).
/// True if it raised anything.
#[cold]
#[inline(never)]
pub(crate) fn raise_parked(hub: &Hub, stuck: bool) -> bool {
    let holders: Vec<Coroutine> = {
        let mut held = hub.held.borrow_mut();
        held.retain(|(c, _)| !c.is_dead());
        hub.held_any.set(!held.is_empty());
        let mut cs: Vec<Coroutine> = Vec::new();
        for (c, _) in held.iter() {
            if !cs.contains(c) {
                cs.push(c.clone());
            }
        }
        cs
    };
    let mut raised = false;
    for co in holders {
        let may = if stuck { !unwind::is_marked(&co) } else { !std::thread::panicking() };
        if !may || co.is_dead() || !parked(&co) {
            continue;
        }
        let Some(payload) = take_next(hub, &co, |_| true) else { continue };
        raised = true;
        super::scheduler::raise_from_hub(&co, payload);
        if stuck {
            // One is enough to get things moving; the hub looks again.
            break;
        }
    }
    raised
}
