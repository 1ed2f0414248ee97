//! The benchmark's floor: an empty program whose cost per run is the price of
//! the hook itself (and of bpf_stats' own clock reads).
use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};

/// Bench only, never attached by the daemon: `cargo xtask bench` attaches it
/// to the sched_switch raw tracepoint, the same kind of hook as the daemon's
/// hottest programs, to measure the floor.
#[raw_tracepoint(tracepoint = "sched_switch")]
pub fn bench_floor(_ctx: RawTracePointContext) -> i32 {
    0
}

/// Bench only, never attached by the daemon: an iterator over every task
/// that does nothing, so `cargo xtask bench` can tell what walking the
/// node's tasks costs from what crediting the jobs' tasks adds.
#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/task")]
pub fn bench_task_iter_floor(_ctx: *mut core::ffi::c_void) -> i32 {
    0
}
