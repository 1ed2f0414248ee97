//! sched/sched_process_exec: successful execs in a job (`current` is the task).
use aya_ebpf::{
    helpers::bpf_get_current_cgroup_id, macros::tracepoint, programs::TracePointContext,
};

use crate::{atomics::atomic_add, maps::counters_of};

#[tracepoint]
pub fn sched_process_exec(_ctx: TracePointContext) -> u32 {
    if let Some(counters) = counters_of(unsafe { bpf_get_current_cgroup_id() }) {
        atomic_add(&mut counters.execs, 1u64);
    }
    0
}
