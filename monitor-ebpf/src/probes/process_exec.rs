//! sched/sched_process_exec: successful execs in a job (`current` is the task).
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};

use crate::{atomics::atomic_add, maps::counters_of, tasks::current_job_cgroup};

#[tracepoint]
pub fn sched_process_exec(_ctx: TracePointContext) -> u32 {
    if let Some(mut counters) = current_job_cgroup().and_then(counters_of) {
        atomic_add(&mut counters.execs, 1u64);
    }
    0
}
