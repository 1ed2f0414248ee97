//! sched/sched_process_exit: counts whole-process exits in a job
//! (`current` is the exiting task).
use aya_ebpf::{helpers::bpf_get_current_cgroup_id, macros::tracepoint, programs::TracePointContext};

use crate::{config::offset, maps::counters_of};

#[tracepoint]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    let Some(counters) = counters_of(unsafe { bpf_get_current_cgroup_id() }) else {
        return 0;
    };
    let offset = offset!(exit_group_dead);
    // SAFETY: the offset comes from the tracepoint's format file.
    if let Ok(group_dead) = unsafe { ctx.read_at::<u8>(offset) }
        && group_dead != 0
    {
        counters.process_exits += 1;
    }
    0
}
