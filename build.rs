// `links = "greenfiber_monkey"` in Cargo.toml makes cargo refuse two copies of greenfiber in one
// binary: with the `monkey` feature both would define the same libc symbols. A `links` key needs a
// build script; this one has nothing else to do.
fn main() {}
