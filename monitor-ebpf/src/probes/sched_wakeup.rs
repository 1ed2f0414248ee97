//! sched/sched_wakeup and sched_wakeup_new: a task of a job becomes runnable.
//! Only tasks already tracked (they ran or were forked in a job) are stamped.
use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::tracepoint, programs::TracePointContext};

use crate::{config::offset, maps::TASK_RUNNABLE_SINCE};

#[tracepoint]
pub fn sched_wakeup(ctx: TracePointContext) -> u32 {
    stamp(&ctx, offset!(wakeup_pid));
    0
}

#[tracepoint]
pub fn sched_wakeup_new(ctx: TracePointContext) -> u32 {
    stamp(&ctx, offset!(wakeup_new_pid));
    0
}

#[inline(always)]
fn stamp(ctx: &TracePointContext, pid_offset: usize) {
    // SAFETY: the offset comes from the tracepoint's format file.
    let Ok(pid) = (unsafe { ctx.read_at::<u32>(pid_offset) }) else {
        return;
    };
    if let Some(since) = TASK_RUNNABLE_SINCE.get_ptr_mut(pid) {
        // SAFETY: entries are only removed when their task exits.
        unsafe { *since = bpf_ktime_get_ns() };
    }
}
