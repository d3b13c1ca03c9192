//! Threads that start, use the hub and exit do not each leave a coroutine stack behind (gevent's
//! test__hub_join.py: a hub in a new thread must not leak). Its own binary: it measures the
//! whole process's resident memory.

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = s.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn churn(threads: usize, job: fn()) {
    for _ in 0..threads {
        std::thread::spawn(job).join().unwrap();
    }
}

#[test]
fn threads_that_use_the_hub_and_exit_give_their_hub_stacks_back() {
    let jobs: [(&str, fn()); 3] = [
        ("sleep", || greenfiber::sleep(std::time::Duration::from_micros(10))),
        ("spawn_blocking", || assert_eq!(greenfiber::threadpool::spawn_blocking(|| 1).unwrap(), 1)),
        ("spawn and join", || greenfiber::spawn(|| ()).join()),
    ];
    for (what, job) in jobs {
        churn(100, job); // warm up: pool threads, allocator arenas, stack arenas
        let before = rss_kib();
        churn(300, job);
        let grown = rss_kib().saturating_sub(before);
        // A leaked hub stack keeps its touched pages: 4 to 8 KiB per thread, 1.3 to 2.5 MiB
        // here. What is left is under half a KiB per thread.
        assert!(grown < 300 * 2, "{what}: {grown} KiB more resident after 300 threads");
    }
}
