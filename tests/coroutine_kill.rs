//! kill(), GreenletExit, and kill on drop of the last handle.
use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::rc::Rc;

/// Switches to the current coroutine's parent. The parent is bound first, so no handle to the
/// current coroutine stays on its own stack while it is suspended (that would keep it alive).
fn up<T: 'static, R: 'static>(v: T) -> R {
    let p = current().parent().unwrap();
    p.switch(v)
}

use greenfiber::{Coroutine, GreenletExit, current};

/// Counts drops, to prove a stack was unwound.
struct Canary(Rc<RefCell<Vec<&'static str>>>, &'static str);
impl Drop for Canary {
    fn drop(&mut self) {
        self.0.borrow_mut().push(self.1);
    }
}

fn suspended(log: &Rc<RefCell<Vec<&'static str>>>) -> Coroutine {
    let l = log.clone();
    let c = Coroutine::new(move |()| {
        let _c = Canary(l.clone(), "unwound");
        let r = catch_unwind(AssertUnwindSafe(|| {
            up::<(), ()>(());
        }));
        let p = r.unwrap_err();
        l.borrow_mut().push(if p.is::<GreenletExit>() { "saw GreenletExit" } else { "saw other" });
        resume_unwind(p);
    });
    c.switch::<(), ()>(());
    c
}

#[test]
fn kill_unwinds_the_stack_and_returns_greenlet_exit_as_a_value() {
    let log = Rc::new(RefCell::new(vec![]));
    let c = suspended(&log);
    c.kill();
    assert!(c.is_dead());
    assert_eq!(*log.borrow(), ["saw GreenletExit", "unwound"]);
    c.kill(); // no-op on a dead one
}

#[test]
fn kill_from_a_non_parent_comes_back_to_the_killer() {
    let log = Rc::new(RefCell::new(vec![]));
    let victim = suspended(&log);
    let killer = Coroutine::new(move |()| {
        victim.kill();
        assert!(victim.is_dead());
        "killer resumed"
    });
    assert_eq!(killer.switch::<(), &str>(()), "killer resumed");
    assert_eq!(*log.borrow(), ["saw GreenletExit", "unwound"]);
}

#[test]
fn killing_a_not_started_coroutine_never_runs_it() {
    let ran = Rc::new(RefCell::new(false));
    let r = ran.clone();
    let c = Coroutine::new(move |()| *r.borrow_mut() = true);
    c.kill();
    assert!(c.is_dead() && !c.is_started());
    assert!(!*ran.borrow());
    assert_eq!(Rc::strong_count(&ran), 1, "its closure was dropped");
}

#[test]
fn dropping_last_handle_kills_and_returns_to_dropper() {
    let log = Rc::new(RefCell::new(vec![]));
    let c = suspended(&log);
    drop(c);
    assert_eq!(*log.borrow(), ["saw GreenletExit", "unwound"]);
}

#[test]
fn dropping_last_handle_inside_another_coroutine_returns_there() {
    let log = Rc::new(RefCell::new(vec![]));
    let victim = suspended(&log);
    let l = log.clone();
    let dropper = Coroutine::new(move |()| {
        drop(victim);
        l.borrow_mut().push("dropper continues");
        1u8
    });
    assert_eq!(dropper.switch::<(), u8>(()), 1);
    assert_eq!(*log.borrow(), ["saw GreenletExit", "unwound", "dropper continues"]);
}

#[test]
fn values_on_a_suspended_stack_are_dropped_with_it() {
    let token = Rc::new(());
    let t = token.clone();
    let c = Coroutine::new(move |()| {
        let held = t; // lives on the coroutine's stack
        up::<(), ()>(());
        drop(held);
    });
    c.switch::<(), ()>(());
    assert_eq!(Rc::strong_count(&token), 2);
    drop(c);
    assert_eq!(Rc::strong_count(&token), 1);
}

#[test]
fn a_panic_while_unwinding_from_a_drop_kill_is_logged_not_raised() {
    let c = Coroutine::new(|()| {
        let r = catch_unwind(AssertUnwindSafe(|| {
            up::<(), ()>(());
        }));
        // Swallow GreenletExit and raise something else instead.
        drop(r);
        panic!("another panic during the kill");
    });
    c.switch::<(), ()>(());
    drop(c); // must not panic here
}

#[test]
fn a_suspended_coroutine_reachable_only_from_a_dropped_child_is_killed() {
    let log = Rc::new(RefCell::new(vec![]));
    let parent = suspended(&log);
    let child = Coroutine::builder().parent(&parent).build(|()| ());
    drop(parent); // still alive through child's parent link
    assert!(log.borrow().is_empty());
    drop(child); // never started: dropping it drops the last link to parent
    assert_eq!(*log.borrow(), ["saw GreenletExit", "unwound"]);
}

#[test]
fn killing_the_current_coroutine_raises_greenlet_exit_inside_it() {
    let c = Coroutine::new(|()| {
        let r = catch_unwind(|| current().kill());
        r.unwrap_err().is::<GreenletExit>()
    });
    assert!(c.switch::<(), bool>(()));
}

#[test]
fn a_coroutine_whose_last_handle_goes_while_it_runs_lives_until_it_switches_away() {
    // A's last handle is its child's parent link, dropped by A itself while A runs (it gives
    // the child another parent). A must keep running — its stack cannot go away under it — and
    // be killed, its destructors run, once it is suspended with no handle left.
    let log = Rc::new(RefCell::new(Vec::new()));
    let slot: Rc<RefCell<Option<Coroutine>>> = Rc::new(RefCell::new(None));
    let (l, s) = (log.clone(), slot.clone());
    let main = current();
    let a = Coroutine::new(move |()| {
        let _c = Canary(l.clone(), "unwound");
        let child = Coroutine::new(|()| {});
        *s.borrow_mut() = Some(child.clone());
        let () = main.switch(());
        // Back here because the child finished; its parent link is this coroutine's last handle.
        child.set_parent(&main).unwrap();
        l.borrow_mut().push("still running");
        let r = catch_unwind(AssertUnwindSafe(|| main.switch::<(), ()>(())));
        let p = r.unwrap_err();
        assert!(p.is::<GreenletExit>());
        l.borrow_mut().push("killed");
        resume_unwind(p);
    });
    let () = a.switch(());
    drop(a);
    let child = slot.borrow_mut().take().unwrap();
    let () = child.switch(());
    assert_eq!(*log.borrow(), ["still running", "killed", "unwound"]);
}

/// Sets its flag when dropped.
struct Flag(Rc<std::cell::Cell<bool>>);
impl Drop for Flag {
    fn drop(&mut self) {
        self.0.set(true);
    }
}

#[test]
fn a_coroutine_that_survives_kill_gets_its_parent_back() {
    let main = current();
    let p = Coroutine::new(|()| ());
    let m = main.clone();
    let g = Coroutine::builder().parent(&p).build(move |()| {
        loop {
            // Waits in main's hands; catches every kill and goes back: it survives.
            let r = catch_unwind(AssertUnwindSafe(|| {
                let () = m.switch(());
            }));
            assert!(r.unwrap_err().is::<GreenletExit>());
        }
    });
    let () = g.switch(());
    g.kill();
    assert!(!g.is_dead());
    assert_eq!(g.parent(), Some(p.clone()), "the killer stood in only for the kill");
    g.kill();
    assert_eq!(g.parent(), Some(p.clone()));
    // A victim that dies keeps its parent too: the killer stood in only for the kill.
    let v = Coroutine::builder().parent(&p).build(|()| up::<(), ()>(()));
    let () = v.switch(());
    v.kill();
    assert!(v.is_dead());
    assert_eq!(v.parent(), Some(p));
}

#[test]
fn a_coroutine_resurrected_on_drop_gets_its_parent_back_and_dies_with_its_new_handle() {
    // greenlet's test_parent_restored_on_kill, then the resurrected one's last handle goes.
    let main = current();
    let hub = Coroutine::new(|()| ());
    let seen: Rc<RefCell<Vec<Coroutine>>> = Rc::new(RefCell::new(Vec::new()));
    let unwound = Rc::new(std::cell::Cell::new(false));
    let (m, h, s, u) = (main.clone(), hub.clone(), seen.clone(), unwound.clone());
    let g = Coroutine::builder().parent(&hub).build(move |()| {
        let _flag = Flag(u);
        let r = catch_unwind(AssertUnwindSafe(|| {
            let () = m.switch(());
        }));
        assert!(r.unwrap_err().is::<GreenletExit>());
        let me = current();
        s.borrow_mut().push(me.parent().unwrap());
        s.borrow_mut().push(me);
        let () = h.switch(());
    });
    let () = g.switch(());
    drop(g);
    {
        let seen = seen.borrow();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0], main, "the dropper is the parent while it unwinds");
        assert_eq!(seen[1].parent(), Some(hub), "and the old parent comes back");
        assert!(!seen[1].is_dead());
    }
    assert!(!unwound.get());
    // Its new handle is now the last: dropping it kills it again.
    seen.borrow_mut().clear();
    assert!(unwound.get(), "the resurrected coroutine was leaked instead of killed");
}

#[test]
fn a_panicking_destructor_in_a_never_started_closure_drops_everything_exactly_once() {
    struct Boom;
    impl Drop for Boom {
        fn drop(&mut self) {
            panic!("boom in drop");
        }
    }
    let count = Rc::new(std::cell::Cell::new(0));
    struct Counted(Rc<std::cell::Cell<u32>>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.set(self.0.get() + 1);
        }
    }
    // Killed before it ran, then dropped without ever running: each capture is dropped once,
    // and the destructor's panic is logged, not raised.
    for kill_first in [true, false] {
        let (b, k) = (Boom, Counted(count.clone()));
        let c = Coroutine::new(move |()| {
            let _keep = (&b, &k);
        });
        if kill_first {
            c.kill();
            assert!(c.is_dead());
        }
        drop(c);
    }
    assert_eq!(count.get(), 2);
}

#[test]
fn dropping_the_leaf_of_a_long_parent_chain_kills_it_all_without_deep_recursion() {
    // Each suspended coroutine is kept alive only by its child's parent link. Dropping the
    // leaf kills it, which releases its parent, and so on up 10,000 levels: that must not nest
    // one kill per level on the dropper's stack (here a coroutine's, with the default size).
    const N: usize = 10_000;
    let unwound = Rc::new(std::cell::Cell::new(0));
    struct Count(Rc<std::cell::Cell<usize>>);
    impl Drop for Count {
        fn drop(&mut self) {
            self.0.set(self.0.get() + 1);
        }
    }
    let main = current();
    let mut prev = main.clone();
    for _ in 0..N {
        let (m, u) = (main.clone(), unwound.clone());
        let c = Coroutine::builder().parent(&prev).stack_size(16 << 10).build(move |()| {
            let _c = Count(u);
            let () = m.switch(());
        });
        let () = c.switch(());
        prev = c;
    }
    drop(main);
    let leaf = prev;
    assert_eq!(unwound.get(), 0);
    let dropper = Coroutine::new(move |()| drop(leaf));
    let () = dropper.switch(());
    assert_eq!(unwound.get(), N);
}

#[test]
fn a_kill_cut_short_by_a_timeout_still_gives_the_victim_its_parent_back() {
    use std::time::Duration;
    // The victim survives its kill for a while, so a with_timeout around the kill fires first.
    let victim = greenfiber::spawn(|| {
        let _ = catch_unwind(|| greenfiber::sleep(Duration::from_secs(3600)));
        greenfiber::sleep(Duration::from_millis(20));
    });
    greenfiber::yield_now();
    let hub = victim.coroutine().parent().unwrap();
    let r = greenfiber::with_timeout(Duration::from_millis(5), || victim.coroutine().kill());
    assert!(r.is_err());
    assert!(victim.coroutine().parent() == Some(hub), "the killer stayed the victim's parent");
    // Its end then goes to the hub, not into main's next switch.
    victim.join();
    assert!(victim.successful());
}

#[test]
fn a_release_completes_while_another_release_waits_in_a_killed_coroutines_destructor() {
    // K drops the last link to P1; P1's unwinding switches out to main (as a destructor that
    // sleeps switches to the hub) and K waits inside its release. Meanwhile main drops the last
    // link to P2: P2 must be killed then, not queued behind K's release.
    let log = Rc::new(RefCell::new(vec![]));
    let back: Rc<RefCell<Option<Coroutine>>> = Rc::default();
    struct Detour(Rc<RefCell<Option<Coroutine>>>, Coroutine);
    impl Drop for Detour {
        fn drop(&mut self) {
            *self.0.borrow_mut() = Some(current());
            let () = self.1.switch(());
        }
    }
    let (b, m) = (back.clone(), current());
    let p1 = Coroutine::new(move |()| {
        let _d = Detour(b, m);
        let () = up(());
    });
    let () = p1.switch(());
    let c1 = Coroutine::builder().parent(&p1).build(|()| ());
    drop(p1);
    let killer = Coroutine::new(move |()| drop(c1));
    let () = killer.switch(()); // comes back from P1's destructor, K still inside its release

    let p2 = suspended(&log);
    let c2 = Coroutine::builder().parent(&p2).build(|()| ());
    drop(p2);
    drop(c2);
    assert_eq!(*log.borrow(), ["saw GreenletExit", "unwound"], "P2 was not killed at once");

    // Let P1 finish unwinding: its end goes to K, whose own end comes back here.
    let p1 = back.borrow_mut().take().unwrap();
    let () = p1.switch(());
    assert!(p1.is_dead() && killer.is_dead());
}

/// Where a coroutine leaves a handle to itself.
type Slot = Rc<RefCell<Option<Coroutine>>>;

/// D drops the last handle to V, whose cleanup (run by that kill) stores a handle to V in the
/// slot returned and switches to main: D waits inside the drop. Also returns whether D ran
/// past the drop.
fn dropper_waiting_in_a_detour() -> (Coroutine, Rc<RefCell<bool>>, Slot) {
    struct Detour(Slot, Coroutine);
    impl Drop for Detour {
        fn drop(&mut self) {
            *self.0.borrow_mut() = Some(current());
            let () = self.1.switch(());
        }
    }
    let back: Slot = Rc::default();
    let (b, m) = (back.clone(), current());
    let v = Coroutine::new(move |()| {
        let _d = Detour(b, m);
        let () = up(());
    });
    let () = v.switch(());
    let after_drop = Rc::new(RefCell::new(false));
    let a = after_drop.clone();
    let dropper = Coroutine::new(move |()| {
        drop(v);
        *a.borrow_mut() = true;
    });
    let () = dropper.switch(()); // back from V's destructor, D still inside the drop
    assert!(!dropper.is_dead());
    (dropper, after_drop, back)
}

#[test]
fn a_kill_aimed_at_the_dropper_while_its_victim_unwinds_kills_the_dropper() {
    // A kill of D sent now is D's own, not V's: D must die of it, not log it as V's panic and
    // run on.
    let (dropper, after_drop, _back) = dropper_waiting_in_a_detour();
    let r = dropper.throw(GreenletExit);
    assert!(r.is::<GreenletExit>(), "the killer gets GreenletExit back as a value");
    assert!(dropper.is_dead(), "the dropper lived on after its kill");
    assert!(!*after_drop.borrow(), "the dropper ran past the drop after it was killed");
}

#[test]
fn a_victim_that_ends_after_a_detour_returns_control_to_its_dropper() {
    // V is resumed and finishes its unwind: its end goes to D, which runs on past the drop.
    let (dropper, after_drop, back) = dropper_waiting_in_a_detour();
    let v = back.borrow_mut().take().unwrap();
    let () = v.switch(()); // V ends into D, D ends into main
    assert!(v.is_dead() && dropper.is_dead());
    assert!(*after_drop.borrow(), "the dropper did not run on after its victim ended");
}

#[test]
fn a_killer_left_suspended_inside_kill_dies_when_its_last_handle_goes() {
    // V starts its child C and waits in C's switch; C kills V (its ancestor: the exit goes to
    // V's parent, main, and C stays suspended inside kill). C's only handle left is V's local:
    // when V's stack unwinds, C must be killed too (greenlet's test_dealloc), which needs kill
    // not to keep a handle to C on C's own stack.
    let c_unwound = Rc::new(RefCell::new(vec![]));
    let cu = c_unwound.clone();
    let v = Coroutine::new(move |()| {
        let cu = cu.clone();
        let c = Coroutine::new(move |()| {
            let _c = Canary(cu, "C unwound");
            let v = current().parent().unwrap();
            v.kill();
        });
        let () = c.switch(());
    });
    let r: Box<dyn std::any::Any> = v.switch(());
    assert!(r.is::<GreenletExit>() && v.is_dead());
    assert_eq!(*c_unwound.borrow(), ["C unwound"], "the killer was leaked");
}

#[test]
fn killing_the_main_coroutine_from_itself_raises_and_from_a_child_does_nothing() {
    let main = current();
    let r = catch_unwind(AssertUnwindSafe(|| main.kill()));
    assert!(r.unwrap_err().is::<GreenletExit>());
    let m = main.clone();
    let c = Coroutine::new(move |()| m.kill());
    let () = c.switch(());
    assert!(c.is_dead() && !main.is_dead());
}

#[test]
fn a_panic_routed_through_an_unstarted_parent_whose_closure_owns_a_suspended_coroutine_arrives() {
    // C panics; its parent P never started, so the panic kills P unrun and goes on to main.
    // Dropping P's closure drops the last handle to a suspended S, whose kill ends into the
    // current coroutine: C must still be alive then, or S's exit is routed past it to main and
    // the panic is lost (greenlet's test_throw_goes_to_original_parent).
    #[derive(Debug)]
    struct KeyError;
    let log = Rc::new(RefCell::new(vec![]));
    let s = suspended(&log);
    let p = Coroutine::new(move |()| {
        let _keep = s;
    });
    let c = Coroutine::builder().parent(&p).build(|()| -> () { std::panic::panic_any(KeyError) });
    drop(p);
    let r = catch_unwind(AssertUnwindSafe(|| c.switch::<(), Box<dyn std::any::Any>>(())));
    assert!(r.expect_err("the panic was lost").is::<KeyError>());
    assert_eq!(*log.borrow(), ["saw GreenletExit", "unwound"]);
    assert!(c.is_dead());
}

/// A coroutine whose cleanup, run by the unwind of a kill, switches back to main halfway.
fn cleanup_switches_to_main(log: &Rc<RefCell<Vec<&'static str>>>) -> Coroutine {
    struct Detour(Coroutine, Rc<RefCell<Vec<&'static str>>>);
    impl Drop for Detour {
        fn drop(&mut self) {
            let () = self.0.switch(());
            self.1.borrow_mut().push("cleanup finished");
        }
    }
    let (m, l) = (current(), log.clone());
    let v = Coroutine::new(move |()| {
        let _d = Detour(m, l);
        let () = up(());
    });
    let () = v.switch(());
    v
}

#[test]
fn a_second_kill_of_a_coroutine_halfway_through_a_kills_unwind_is_refused_not_an_abort() {
    let log = Rc::new(RefCell::new(vec![]));
    let v = cleanup_switches_to_main(&log);
    v.kill(); // comes back from the cleanup's switch, V halfway through its unwind
    assert!(!v.is_dead());
    v.kill(); // raising GreenletExit into that destructor would abort: refused, logged
    assert!(!v.is_dead());
    // Switching back lets the cleanup finish and V die; its end comes back here.
    let r: Box<dyn std::any::Any> = v.switch(());
    assert!(r.is::<GreenletExit>() && v.is_dead());
    assert_eq!(*log.borrow(), ["cleanup finished"]);
    // With nothing halfway through an unwind any more, kills work again.
    let w = cleanup_switches_to_main(&log);
    let () = w.switch(()); // W's detour goes nowhere yet: W is not unwinding
    let log2 = Rc::new(RefCell::new(vec![]));
    let x = suspended(&log2);
    x.kill();
    assert_eq!(*log2.borrow(), ["saw GreenletExit", "unwound"]);
    drop(w);
}

#[test]
fn dropping_a_coroutine_halfway_through_a_kills_unwind_leaks_it_instead_of_aborting() {
    let log = Rc::new(RefCell::new(vec![]));
    let v = cleanup_switches_to_main(&log);
    v.kill();
    assert!(!v.is_dead());
    drop(v); // its last handle: leaked with a warning, not killed into its destructor
    assert!(log.borrow().is_empty());
    let log2 = Rc::new(RefCell::new(vec![]));
    let x = suspended(&log2);
    drop(x);
    assert_eq!(*log2.borrow(), ["saw GreenletExit", "unwound"]);
}
