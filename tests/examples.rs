//! Every example runs and prints what its header promises.
mod common;
use common::example_stdout;

#[test]
fn greenlet_switch_prints_the_classic_output() {
    let out = example_stdout("greenlet_switch", &[]);
    assert_eq!(
        out,
        "test2 helloworld\ntest1 ({\"kkk\": 5, \"mmm\": 7, \"ppp\": 6}, [1, 2, 3])\nmain got ()\n"
    );
}

#[test]
fn generator_yields_fibonacci_and_ping_pongs() {
    let out = example_stdout("generator", &[]);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("fibonacci: [0, 1, 1, 2, 3, 5, 8, 13, 21, 34]"));
    let rest: Vec<_> = lines.collect();
    assert_eq!(rest, ["ping 0", "pong 1", "ping 2", "pong 3", "ping 4", "pong 5", "done at 6"]);
}
