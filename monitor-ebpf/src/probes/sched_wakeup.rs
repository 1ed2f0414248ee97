//! sched_wakeup and sched_wakeup_new (raw tracepoints): a task becomes
//! runnable. Every task is stamped: the wakee's cgroup is unknown here, and
//! a stamp is one inlined array store.
use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::raw_tracepoint, programs::RawTracePointContext};

use crate::maps::mark_runnable;

#[raw_tracepoint(tracepoint = "sched_wakeup")]
pub fn sched_wakeup(ctx: RawTracePointContext) -> i32 {
    // TP_PROTO(struct task_struct *p)
    mark_runnable(ctx.arg(0), unsafe { bpf_ktime_get_ns() });
    0
}

#[raw_tracepoint(tracepoint = "sched_wakeup_new")]
pub fn sched_wakeup_new(ctx: RawTracePointContext) -> i32 {
    mark_runnable(ctx.arg(0), unsafe { bpf_ktime_get_ns() });
    0
}
