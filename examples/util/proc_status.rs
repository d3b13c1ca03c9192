//! Reads memory figures of this process from `/proc/self/status` (shared by the examples).

/// The value of a `/proc/self/status` field given in kB (`VmRSS`, `VmHWM`, ...), in KiB.
pub fn kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
