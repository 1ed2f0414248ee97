//! task/task_newtask: processes and threads started in a job.
//!
//! Chosen over sched_process_fork because it carries `clone_flags`, which
//! tells a new process from a new thread; sched_process_fork fires for both
//! alike and would count every OpenMP thread as a process.
use aya_ebpf::{helpers::bpf_get_current_cgroup_id, macros::tracepoint, programs::TracePointContext};

use super::tracepoint_record::Record;
use crate::{
    config::offset,
    maps::{counters_of, track_task},
};

const CLONE_THREAD: u64 = 0x0001_0000;

#[tracepoint]
pub fn task_newtask(ctx: TracePointContext) -> u32 {
    // The child is not running yet: `current` is the parent, whose cgroup
    // the child inherits.
    let Some(counters) = counters_of(unsafe { bpf_get_current_cgroup_id() }) else {
        return 0;
    };
    let Some(record) = Record::read(&ctx) else {
        return 0;
    };
    if record.u64_at(offset!(newtask_clone_flags)) & CLONE_THREAD != 0 {
        counters.threads_started += 1;
    } else {
        counters.processes_started += 1;
    }
    // Give the child a wakeup slot so its first run-queue wait is measured.
    track_task(record.u32_at(offset!(newtask_pid)), 0);
    0
}
