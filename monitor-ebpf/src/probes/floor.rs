//! The benchmark's floor: an empty program whose cost per run is the price of
//! the hook itself (and of bpf_stats' own clock reads).
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};

/// Bench only, never attached by the daemon: `cargo xtask bench` attaches it
/// to sched/sched_switch next to the real programs to measure the floor.
#[tracepoint]
pub fn bench_floor(_ctx: TracePointContext) -> u32 {
    0
}
