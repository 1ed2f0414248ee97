//! sched_switch (raw tracepoint): on-CPU time, context switches and
//! run-queue wait.
//!
//! A raw tracepoint gets the kernel's TP_PROTO arguments (preempt, prev,
//! next, prev_state) without the perf record a classic tracepoint fills, and
//! without a helper call to read it: this is the hottest hook of all.
//! `current` is still the outgoing task, so its cgroup comes from
//! `bpf_get_current_cgroup_id`. The incoming task's wait is measured now and
//! credited at its own switch-out (or by the per-CPU timer), when it is
//! `current` and its cgroup is known without reading kernel structs.
use aya_ebpf::{
    helpers::{bpf_get_current_cgroup_id, bpf_ktime_get_ns},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};

use crate::maps::{CPU_STATE, counters_of, mark_runnable, runtime_since_last, task_slot};

/// TASK_RUNNING: a task switched out in this state is still runnable.
const TASK_RUNNING: u32 = 0;

#[raw_tracepoint(tracepoint = "sched_switch")]
pub fn sched_switch(ctx: RawTracePointContext) -> i32 {
    // TP_PROTO(bool preempt, struct task_struct *prev, struct task_struct *next, unsigned int prev_state)
    let preempt: u64 = ctx.arg(0);
    let next: u64 = ctx.arg(2);
    let prev_state: u64 = ctx.arg(3);
    let Some(cpu) = CPU_STATE.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: this CPU's slot; sched_switch runs with interrupts off.
    let cpu = unsafe { &mut *cpu };
    let now = unsafe { bpf_ktime_get_ns() };
    let ran_ns = if cpu.last_switch_ns != 0 && now > cpu.last_switch_ns {
        now - cpu.last_switch_ns
    } else {
        0
    };
    let waited_ns = cpu.pending_wait_ns;
    cpu.last_switch_ns = now;
    cpu.pending_wait_ns = 0;

    // The idle task's cgroup is the root, never a job: no special case needed.
    if let Some(counters) = counters_of(unsafe { bpf_get_current_cgroup_id() }) {
        let prev: u64 = ctx.arg(1);
        counters.cpu_ns += runtime_since_last(prev, ran_ns);
        counters.runqueue_wait_ns += waited_ns;
        // Preempted, or yielded while runnable: the kernel's nivcsw.
        if preempt & 0xff != 0 || prev_state as u32 == TASK_RUNNING {
            counters.involuntary_switches += 1;
            mark_runnable(prev, now);
        } else {
            counters.voluntary_switches += 1;
        }
    }

    if let Some(slot) = task_slot(next)
        && slot.task == next
        && slot.runnable_since != 0
    {
        if now > slot.runnable_since {
            cpu.pending_wait_ns = now - slot.runnable_since;
        }
        slot.runnable_since = 0;
    }
    0
}
