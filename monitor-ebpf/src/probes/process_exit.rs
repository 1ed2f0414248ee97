//! sched/sched_process_exit: a task exits (`current` is the task). Frees its
//! wakeup slot and counts whole-process exits.
use aya_ebpf::{helpers::bpf_get_current_cgroup_id, macros::tracepoint, programs::TracePointContext};

use super::tracepoint_record::Record;
use crate::{
    config::offset,
    maps::{TASK_RUNNABLE_SINCE, counters_of},
};

#[tracepoint]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    let Some(record) = Record::read(&ctx) else {
        return 0;
    };
    // The task may have left its job before exiting: free its slot anyway.
    let _ = TASK_RUNNABLE_SINCE.remove(record.u32_at(offset!(exit_pid)));
    if record.u8_at(offset!(exit_group_dead)) != 0
        && let Some(counters) = counters_of(unsafe { bpf_get_current_cgroup_id() })
    {
        counters.process_exits += 1;
    }
    0
}
