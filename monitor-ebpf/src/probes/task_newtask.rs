//! task_newtask (raw tracepoint): processes and threads started in a job,
//! and the new task's accounting from its first instruction.
//!
//! Chosen over sched_process_fork because it carries `clone_flags`, which
//! tells a new process from a new thread; sched_process_fork fires for both
//! alike and would count every OpenMP thread as a process. It fires when
//! the child is complete (in its final cgroup, also with
//! CLONE_INTO_CGROUP) but has not run yet.
use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};

use crate::{
    atomics::atomic_add,
    maps::counters_of,
    tasks::{
        TaskAt, counters_of_task, current_job_cgroup, forget_stale, job_cgroup, start_of, track,
    },
};

const CLONE_THREAD: u64 = 0x0001_0000;
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

#[raw_tracepoint(tracepoint = "task_newtask")]
pub fn task_newtask(ctx: RawTracePointContext) -> i32 {
    // TP_PROTO(struct task_struct *task, u64 clone_flags)
    let child: u64 = ctx.arg(0);
    let clone_flags: u64 = ctx.arg(1);
    // `current` is the parent, whose cgroup the child inherits unless it
    // was cloned into another one.
    let parent_cgroup = current_job_cgroup();
    if let Some(mut counters) = parent_cgroup.and_then(counters_of) {
        let started = if clone_flags & CLONE_THREAD != 0 {
            &mut counters.threads_started
        } else {
            &mut counters.processes_started
        };
        atomic_add(started, 1u64);
    }
    let cgroup = if clone_flags & CLONE_INTO_CGROUP != 0 {
        match job_cgroup(TaskAt(child)) {
            Some((cgroup, true)) => cgroup,
            _ => return 0,
        }
    } else {
        match parent_cgroup {
            Some(cgroup) => cgroup,
            None => return 0,
        }
    };
    if let (Some(now), Some(start)) = (counters_of_task(TaskAt(child)), start_of(TaskAt(child))) {
        // The kernel zeroed the child's counters: all it does is the job's.
        forget_stale(child, start);
        track(child, start, cgroup, now);
    }
    0
}
