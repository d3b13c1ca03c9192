//! Layer 1 switching semantics, as greenlet's test_greenlet.py and test_throw.py pin them down.
use std::any::Any;
use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;

/// Switches to the current coroutine's parent. The parent is bound first, so no handle to the
/// current coroutine stays on its own stack while it is suspended (that would keep it alive).
fn up<T: 'static, R: 'static>(v: T) -> R {
    let p = current().parent().unwrap();
    p.switch(v)
}

use greenfiber::{Coroutine, Error, current};

#[test]
fn main_coroutine_is_current_outside_any_coroutine() {
    let m = current();
    assert!(m.is_main());
    assert!(m.parent().is_none());
    assert!(m.is_active());
    assert_eq!(m, greenfiber::coroutine::main_coroutine());
}

#[test]
fn first_switch_starts_and_later_switches_resume() {
    let log = Rc::new(RefCell::new(Vec::new()));
    let l = log.clone();
    let c = Coroutine::new(move |a: i32| {
        l.borrow_mut().push(a);
        let b: i32 = up(a + 1);
        l.borrow_mut().push(b);
        b * 10
    });
    assert!(!c.is_started());
    let r: i32 = c.switch(1);
    assert_eq!(r, 2);
    assert!(c.is_started() && c.is_active());
    let r: i32 = c.switch(5);
    assert_eq!(r, 50);
    assert!(c.is_dead());
    assert_eq!(*log.borrow(), vec![1, 5]);
}

#[test]
fn switch_to_current_returns_value_at_once() {
    let me = current();
    let v: &str = me.switch("same");
    assert_eq!(v, "same");
    let c = Coroutine::new(|()| {
        let v: u8 = current().switch(7u8);
        v
    });
    assert_eq!(c.switch::<(), u8>(()), 7);
}

#[test]
fn return_value_goes_to_parent_not_to_switcher() {
    // main -> a; a creates b with parent = main; a switches to b; b returns: main gets it.
    let a = Coroutine::new(|()| {
        let main = current().parent().unwrap();
        let b = Coroutine::builder().parent(&main).build(|x: i32| x * 2);
        let _: () = b.switch(21);
        unreachable!("b returned to main, and nobody switches back to a");
    });
    let r: i32 = a.switch(());
    assert_eq!(r, 42);
    assert!(a.is_active());
    drop(a); // kills it
}

#[test]
fn switch_to_dead_goes_to_first_live_ancestor() {
    let parent = Coroutine::new(|x: i32| {
        let main = current().parent().unwrap();
        let got: i32 = main.switch(x);
        got + 1000
    });
    let _: i32 = parent.switch(1);
    let child = Coroutine::builder().parent(&parent).build(|x: i32| x);
    let r: i32 = child.switch(5); // child returns 5 to parent, parent returns 1005 to main
    assert_eq!(r, 1005);
    assert!(child.is_dead() && parent.is_dead());
    // Both dead now: a switch to child goes to main itself.
    let r: i32 = child.switch(9);
    assert_eq!(r, 9);
}

#[test]
fn switch_to_dead_starts_a_never_started_ancestor() {
    let grand = Coroutine::new(|x: i32| x + 1);
    let child = Coroutine::builder().parent(&grand).build(|x: i32| x * 2);
    let r: i32 = child.switch(10); // child returns 20 -> grand starts with 20 -> returns 21
    assert_eq!(r, 21);
    assert!(grand.is_dead());
}

#[test]
fn panic_is_reraised_in_parent_with_original_payload() {
    #[derive(Debug, PartialEq)]
    struct MyErr(u32);
    let c = Coroutine::new(|()| -> () { std::panic::panic_any(MyErr(7)) });
    let err = catch_unwind(AssertUnwindSafe(|| c.switch::<(), ()>(()))).unwrap_err();
    assert_eq!(err.downcast_ref::<MyErr>(), Some(&MyErr(7)));
    assert!(c.is_dead());
    let n = std::hint::black_box(1);
    let c = Coroutine::new(move |()| -> () { panic!("boom {n}") });
    let err = catch_unwind(AssertUnwindSafe(|| c.switch::<(), ()>(()))).unwrap_err();
    assert_eq!(err.downcast_ref::<String>().map(String::as_str), Some("boom 1"));
}

#[test]
fn wrong_value_type_panics_naming_both_types() {
    let c = Coroutine::new(|x: i32| x);
    let err = catch_unwind(AssertUnwindSafe(|| c.switch::<&str, i32>("nope"))).unwrap_err();
    let msg = err.downcast_ref::<String>().unwrap();
    assert!(msg.contains("i32") && msg.contains("&str"), "{msg}");
    assert!(!c.is_started(), "the target is untouched");
    assert_eq!(c.switch::<i32, i32>(3), 3);
}

#[test]
fn try_switch_refuses_before_switching_and_target_stays_usable() {
    let c = Coroutine::new(|x: u64| {
        let y: u64 = up(x + 1);
        y + 1
    });
    let e = c.try_switch::<String, u64>("x".into()).unwrap_err();
    assert!(format!("{e:?}").contains("u64") && format!("{e:?}").contains("String"), "{e:?}");
    assert_eq!(c.try_switch::<u64, u64>(1), Ok(2));
    let e = c.try_switch::<i8, u64>(1).unwrap_err();
    assert_eq!(e.expected, "u64");
    assert_eq!(e.received, "i8");
    assert_eq!(c.try_switch::<u64, u64>(10), Ok(11));
    let e: Error = e.into();
    assert!(e.to_string().contains("i8"));
}

#[test]
fn return_values_of_every_size_and_alignment_arrive_whole_and_drop_once() {
    // Small values cross in the thread's value slot, large or over-aligned ones boxed: either
    // way the parent gets the value itself and it is dropped exactly once.
    thread_local!(static DROPS: Cell<u32> = const { Cell::new(0) });
    struct Counted(u64);
    impl Drop for Counted {
        fn drop(&mut self) {
            DROPS.with(|d| d.set(d.get() + 1));
        }
    }
    #[repr(align(64))]
    #[derive(Debug, PartialEq)]
    struct Aligned(u8);

    let c = Coroutine::new(|x: u64| x + 1);
    assert_eq!(c.switch::<u64, u64>(41), 42);
    let c = Coroutine::new(|s: String| s + " world");
    assert_eq!(c.switch::<String, String>("hello".into()), "hello world");
    let c = Coroutine::new(|n: u64| [n; 32]);
    assert_eq!(c.switch::<u64, [u64; 32]>(3), [3; 32]);
    let c = Coroutine::new(|n: u8| Aligned(n));
    let a: Aligned = c.switch(9u8);
    assert_eq!(a, Aligned(9));
    assert_eq!(&a as *const Aligned as usize % 64, 0);
    for n in 0..3 {
        let c = Coroutine::new(|n: u64| Counted(n));
        let got: Counted = c.switch(n);
        assert_eq!(got.0, n);
        assert_eq!(DROPS.with(Cell::get), n as u32, "not dropped on the way");
    }
    assert_eq!(DROPS.with(Cell::get), 3, "each value dropped once, by its receiver");
    // A parent that takes any type (it waits in `throw`) gets the value boxed.
    let c = Coroutine::new(|()| {
        let _ = catch_unwind(|| up::<(), ()>(()));
        7u16
    });
    let () = c.switch(());
    let back: Box<dyn Any> = c.throw("stop");
    assert_eq!(*back.downcast::<u16>().unwrap(), 7);
}

#[test]
fn a_return_value_of_the_wrong_type_panics_in_the_parent() {
    let c = Coroutine::new(|()| 5u8);
    let err = catch_unwind(AssertUnwindSafe(|| c.switch::<(), String>(()))).unwrap_err();
    let msg = err.downcast_ref::<String>().unwrap();
    assert!(msg.contains("u8") && msg.contains("String"), "{msg}");
    assert!(c.is_dead());
}

#[test]
fn throw_caught_returns_what_target_switches_back() {
    let c = Coroutine::new(|()| {
        let main = current().parent().unwrap();
        let r = catch_unwind(AssertUnwindSafe(|| main.switch::<&str, ()>("ready")));
        let p = r.unwrap_err();
        let v = *p.downcast_ref::<i32>().unwrap();
        main.switch::<i32, ()>(v * 2);
    });
    assert_eq!(c.switch::<(), &str>(()), "ready");
    let back: Box<dyn Any> = c.throw(21i32);
    assert_eq!(*back.downcast::<i32>().unwrap(), 42);
}

#[test]
fn throw_uncaught_goes_to_the_original_parent() {
    // greenlet test_throw_goes_to_original_parent, both halves.
    fn f1() -> &'static str {
        let main = greenfiber::coroutine::main_coroutine();
        match catch_unwind(AssertUnwindSafe(|| main.switch::<&str, ()>("f1 ready to catch"))) {
            Err(p) if p.is::<IndexError>() => "caught",
            _ => "normal exit",
        }
    }
    #[derive(Debug)]
    struct IndexError;
    let f2 = |()| {
        greenfiber::coroutine::main_coroutine().switch::<&str, ()>("from f2");
    };
    let g1 = Coroutine::new(|()| f1());
    let g2 = Coroutine::builder().parent(&g1).build(f2);
    let err = catch_unwind(AssertUnwindSafe(|| g2.throw(IndexError))).unwrap_err();
    assert!(err.is::<IndexError>());
    assert!(g2.is_dead() && g1.is_dead());

    let g1 = Coroutine::new(|()| f1());
    let g2 = Coroutine::builder().parent(&g1).build(f2);
    assert_eq!(g1.switch::<(), &str>(()), "f1 ready to catch");
    let res = g2.throw(IndexError);
    assert_eq!(*res.downcast::<&str>().unwrap(), "caught");
    assert!(g2.is_dead() && g1.is_dead());
}

#[test]
fn throw_into_current_raises_at_once() {
    let err = catch_unwind(|| current().throw("now")).unwrap_err();
    assert_eq!(err.downcast_ref::<&str>(), Some(&"now"));
}

#[test]
fn set_parent_refuses_cycles() {
    let a = Coroutine::new(|()| ());
    let b = Coroutine::builder().parent(&a).build(|()| ());
    let c = Coroutine::builder().parent(&b).build(|()| ());
    assert_eq!(a.set_parent(&c), Err(Error::ParentCycle));
    assert_eq!(a.set_parent(&a), Err(Error::ParentCycle));
    assert!(c.set_parent(&a).is_ok());
    assert_eq!(c.parent(), Some(a.clone()));
    assert!(current().set_parent(&a).is_err(), "main has no parent");
}

#[test]
fn parent_link_keeps_parent_alive() {
    let child = {
        let parent = Coroutine::new(|x: i32| x + 1);
        Coroutine::builder().parent(&parent).build(|x: i32| x * 2)
    };
    // The parent's only handle is the child's link; it starts when the child finishes.
    assert_eq!(child.switch::<i32, i32>(4), 9);
}

#[test]
fn finished_coroutine_frees_its_captures() {
    let token = Rc::new(());
    let t = token.clone();
    let c = Coroutine::new(move |()| {
        let _keep = &t;
    });
    assert_eq!(Rc::strong_count(&token), 2);
    c.switch::<(), ()>(());
    assert!(c.is_dead());
    assert_eq!(Rc::strong_count(&token), 1, "captures are dropped when f returns");
}

#[test]
fn siblings_and_grandchildren_switch_among_themselves() {
    let log = Rc::new(RefCell::new(Vec::<String>::new()));
    // b, a child of main, answers whoever switches a handle to it.
    let l = log.clone();
    let b = Coroutine::new(move |from: Coroutine| {
        l.borrow_mut().push("b".into());
        let again: Coroutine = from.switch(100i32);
        l.borrow_mut().push("b again".into());
        let _: () = again.switch(200i32);
    });
    let (l, b2) = (log.clone(), b.clone());
    let a = Coroutine::new(move |()| {
        l.borrow_mut().push("a".into());
        let (l2, b3) = (l.clone(), b2.clone());
        // gc: child of a, grandchild of main; switches to its parent's sibling.
        let gc = Coroutine::new(move |x: i32| {
            let y: i32 = b3.switch(current());
            l2.borrow_mut().push(format!("gc {x} {y}"));
            let z: i32 = b3.switch(current());
            x + y + z
        });
        let r: i32 = gc.switch(1);
        l.borrow_mut().push(format!("a got {r}"));
        r
    });
    let r: i32 = a.switch(());
    assert_eq!(r, 301);
    assert_eq!(*log.borrow(), ["a", "b", "gc 1 100", "b again", "a got 301"]);
    assert!(a.is_dead() && b.is_active());
}

#[test]
fn chain_of_ten_thousand_nested_coroutines() {
    fn nest(depth: u32) -> u32 {
        if depth == 0 {
            return 0;
        }
        let c = Coroutine::new(move |d: u32| nest(d - 1) + 1);
        c.switch(depth)
    }
    assert_eq!(nest(10_000), 10_000);
}

#[test]
fn a_million_ping_pong_switches_in_constant_stack() {
    let b = Coroutine::new(|mut n: u64| {
        let main = current().parent().unwrap();
        loop {
            n = main.switch(n + 1);
        }
    });
    let mut n = 0u64;
    for _ in 0..1_000_000 {
        n = b.switch(n);
    }
    assert_eq!(n, 1_000_000);
}

#[test]
fn each_thread_has_its_own_tree() {
    let ids: Vec<_> = (0..4)
        .map(|i| {
            std::thread::spawn(move || {
                let m = current();
                assert!(m.is_main());
                let c = Coroutine::new(move |x: i32| x + i);
                let r: i32 = c.switch(10);
                (m.id(), r)
            })
        })
        .map(|h| h.join().unwrap())
        .collect();
    assert_eq!(ids, [(0, 10), (0, 11), (0, 12), (0, 13)]);
}

#[test]
fn a_value_sent_to_any_type_expectation_is_boxed() {
    // A coroutine waiting in throw() accepts any type; it gets the value boxed.
    let c = Coroutine::new(|()| {
        let main = current().parent().unwrap();
        let _ = catch_unwind(AssertUnwindSafe(|| main.switch::<(), ()>(())));
        main.switch::<Vec<u8>, ()>(vec![1, 2]);
    });
    c.switch::<(), ()>(());
    let b = c.throw("wake");
    assert_eq!(*b.downcast::<Vec<u8>>().unwrap(), vec![1, 2]);
    let _ = Cell::new(0);
}

#[test]
fn greenlet_exit_thrown_at_a_dead_coroutine_comes_back_as_a_value() {
    // greenlet's test_throw.py::test_kill: a dead coroutine eats GreenletExit.
    use greenfiber::GreenletExit;
    let m = current();
    let g = Coroutine::new(move |()| {
        let () = m.switch("ok");
        let () = m.switch("fail");
    });
    let r: &str = g.switch(());
    assert_eq!(r, "ok");
    assert!(g.throw(GreenletExit).is::<GreenletExit>());
    assert!(g.is_dead());
    assert!(g.throw(GreenletExit).is::<GreenletExit>(), "eaten by the dead coroutine");
    // Any other payload still goes on to the first live ancestor, here: raised at once.
    let r = catch_unwind(AssertUnwindSafe(|| g.throw("boom")));
    assert_eq!(*r.unwrap_err().downcast::<&str>().unwrap(), "boom");
}
