//! The classic greenlet program: two coroutines passing control and values back and forth.
//!
//! Run: `cargo run --release --example greenlet_switch`
//!
//! ```text
//! test2 helloworld
//! test1 ({"kkk": 5, "mmm": 7, "ppp": 6}, [1, 2, 3])
//! main got ()
//! ```
use std::collections::BTreeMap;

use greenfiber::Coroutine;

type Z = (BTreeMap<&'static str, i32>, Vec<i32>);

fn main() {
    // gr2 is created first so gr1 can switch to it; gr1's handle is given to gr2 afterwards.
    let gr1_slot: std::rc::Rc<std::cell::RefCell<Option<Coroutine>>> = Default::default();
    let slot = gr1_slot.clone();
    let gr2 = Coroutine::new(move |u: String| {
        println!("test2 {u}");
        let gr1 = slot.borrow().clone().unwrap();
        let map = BTreeMap::from([("kkk", 5), ("ppp", 6), ("mmm", 7)]);
        let () = gr1.switch::<Z, ()>((map, vec![1, 2, 3]));
    });
    let gr2_for_1 = gr2.clone();
    let gr1 = Coroutine::new(move |(x, y): (&str, &str)| {
        let z: Z = gr2_for_1.switch(format!("{x}{y}"));
        println!("test1 {z:?}");
    });
    *gr1_slot.borrow_mut() = Some(gr1.clone());
    let r: () = gr1.switch(("hello", "world"));
    println!("main got {r:?}");
}
