//! Comparing the daemon's figures with the kernel's own accounting: how
//! far apart they are, the bar CPU must meet, and how long to let the last
//! events settle before reading.

/// Our CPU against the kernel's own accounting of the job's cgroup: the
/// issue's bar.
pub const CPU_TOLERANCE: f64 = 0.02;

/// Samples after a workload (or one of its steps) ends before /metrics is
/// read: enough for its last switch-out, the per-CPU flush timer and the
/// per-CPU counters of its last events to have been read and summed (the
/// brief asks for at least 2).
pub const SETTLE_SAMPLES: u32 = 3;

/// How far `ours` is from `kernel`, as a fraction of `kernel`.
pub fn relative_difference(ours: f64, kernel: f64) -> f64 {
    (ours - kernel).abs() / kernel
}
