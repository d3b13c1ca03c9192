//! Generators and ping-pong built from nothing but `switch`.
//!
//! Run: `cargo run --release --example generator`
//!
//! A producer coroutine switches each value to its parent (the consumer) and waits for the next
//! request; when it is done it returns `None`. Then two coroutines bounce a counter.
use greenfiber::{Coroutine, current};

/// A generator: an iterator over the values a producer coroutine switches to its parent.
struct Generator<T: 'static> {
    co: Coroutine,
    _t: std::marker::PhantomData<T>,
}

impl<T: 'static> Generator<T> {
    fn new(produce: impl FnOnce(&dyn Fn(T)) + 'static) -> Self {
        let co = Coroutine::new(move |()| {
            // Each value goes to whoever asked for it: `next` makes the asker the parent.
            let yield_ = |v: T| {
                let consumer = current().parent().unwrap();
                let () = consumer.switch(Some(v));
            };
            produce(&yield_);
            None::<T>
        });
        Generator { co, _t: std::marker::PhantomData }
    }
}

impl<T: 'static> Iterator for Generator<T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        if self.co.is_dead() {
            return None;
        }
        // The producer's parent is whoever asks next.
        self.co.set_parent(&current()).unwrap();
        self.co.switch::<(), Option<T>>(())
    }
}

fn main() {
    let fib = Generator::new(|yield_| {
        let (mut a, mut b) = (0u64, 1u64);
        for _ in 0..10 {
            yield_(a);
            (a, b) = (b, a + b);
        }
    });
    let values: Vec<u64> = fib.collect();
    println!("fibonacci: {values:?}");

    // Ping-pong: ping and pong switch a counter to each other until it reaches 6.
    let pong_slot: std::rc::Rc<std::cell::OnceCell<Coroutine>> = Default::default();
    let slot = pong_slot.clone();
    let ping = Coroutine::new(move |mut n: u32| {
        let pong = slot.get().unwrap().clone();
        while n < 6 {
            println!("ping {n}");
            n = pong.switch(n + 1);
        }
        n
    });
    let ping2 = ping.clone();
    let pong = Coroutine::new(move |mut n: u32| {
        loop {
            println!("pong {n}");
            n = ping2.switch(n + 1);
        }
    });
    pong_slot.set(pong).unwrap();
    let last: u32 = ping.switch(0u32);
    println!("done at {last}");
}
