//! task/task_newtask: processes and threads started in a job.
//!
//! Chosen over sched_process_fork because it carries `clone_flags`, which
//! tells a new process from a new thread; sched_process_fork fires for both
//! alike and would count every OpenMP thread as a process.
use aya_ebpf::{helpers::bpf_get_current_cgroup_id, macros::tracepoint, programs::TracePointContext};

use crate::{config::offset, maps::counters_of};

const CLONE_THREAD: u64 = 0x0001_0000;

#[tracepoint]
pub fn task_newtask(ctx: TracePointContext) -> u32 {
    // The child is not running yet: `current` is the parent, whose cgroup
    // the child inherits.
    let Some(counters) = counters_of(unsafe { bpf_get_current_cgroup_id() }) else {
        return 0;
    };
    // SAFETY: the offset comes from the tracepoint's format file.
    let offset = offset!(newtask_clone_flags);
    let Ok(clone_flags) = (unsafe { ctx.read_at::<u64>(offset) }) else {
        return 0;
    };
    if clone_flags & CLONE_THREAD != 0 {
        counters.threads_started += 1;
    } else {
        counters.processes_started += 1;
    }
    0
}
