//! sched_process_free (raw tracepoint): a task is freed, after it was
//! reaped and an RCU grace period passed. Its counters are final now,
//! including the CPU its own exit used after sched_process_exit (tearing
//! down a large address space takes milliseconds): credited, and the
//! task's state is dropped. The task's memory is freed after this returns.
use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};

use crate::tasks::{TaskAt, release};

#[raw_tracepoint(tracepoint = "sched_process_free")]
pub fn sched_process_free(ctx: RawTracePointContext) -> i32 {
    // TP_PROTO(struct task_struct *p)
    let task: u64 = ctx.arg(0);
    release(TaskAt(task));
    0
}
