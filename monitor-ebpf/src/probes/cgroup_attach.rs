//! cgroup_attach_task (raw tracepoint): a process or thread was moved to
//! another cgroup (cgroup.procs or cgroup.threads written). What the moved
//! tasks counted since their last credit stays with the cgroup they left;
//! from here on they count in the new one.
//!
//! The tracepoint fires once per move, after it, with the leader; when a
//! whole process moved (`threadgroup`), its other threads are walked here
//! too (the move holds cgroup_threadgroup_rwsem, so no thread comes or
//! goes meanwhile), up to [`MAX_THREADS`]. Threads past that are synced at
//! the next sample, their usage in between credited to the cgroup they left
//! (counted as `thread_walk_truncated`). It also fires for moves in v1
//! hierarchies, which change no v2 cgroup: those are told apart per task.
use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};
use monitor_common::DropReason;

use crate::{
    config::layout,
    maps::count_drop,
    memory::move_mm,
    tasks::{Moment, TaskAt, job_cgroup, read, sync_in},
};

/// Threads of a moved process synced at the move itself. The verifier
/// walks each iteration's paths: 128 went past its million-instruction
/// budget once each sync also checked who the task is.
const MAX_THREADS: u32 = 64;

#[raw_tracepoint(tracepoint = "cgroup_attach_task")]
pub fn cgroup_attach_task(ctx: RawTracePointContext) -> i32 {
    // TP_PROTO(struct cgroup *dst_cgrp, const char *path, struct task_struct *task, bool threadgroup)
    let leader: u64 = ctx.arg(2);
    let threadgroup: u64 = ctx.arg(3);
    // Where the leader is now, and so (for a whole-process move) every
    // thread of its process.
    let Some((cgroup, in_job)) = job_cgroup(TaskAt(leader)) else {
        return 0;
    };
    let _ = sync_in(TaskAt(leader), cgroup, in_job, Moment::Attach);
    if threadgroup & 0xff != 0 {
        sync_other_threads(leader, cgroup, in_job);
        // The whole process moved: its address space too.
        move_mm(leader, cgroup);
    }
    0
}

/// Syncs the threads of `leader`'s process other than `leader`, through
/// `signal->thread_head` and each task's `thread_node`.
#[inline(always)]
fn sync_other_threads(leader: u64, cgroup: u64, in_job: bool) {
    let Some(signal) = read::<u64>(leader + layout!(task_signal)) else {
        return;
    };
    let head = signal + layout!(signal_thread_head);
    let Some(mut node) = read::<u64>(head) else {
        return;
    };
    let node_offset = layout!(task_thread_node);
    for _ in 0..MAX_THREADS {
        if node == head || node == 0 {
            return;
        }
        let task = node - node_offset;
        if task != leader {
            let _ = sync_in(TaskAt(task), cgroup, in_job, Moment::Attach);
        }
        match read::<u64>(node) {
            Some(next) => node = next,
            None => return,
        }
    }
    if node != head {
        count_drop(DropReason::ThreadWalkTruncated);
    }
}
