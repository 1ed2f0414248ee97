//! sched/sched_switch: on-CPU time, context switches and run-queue wait.
//!
//! `current` is still the outgoing task here, so its cgroup comes from
//! `bpf_get_current_cgroup_id`. The incoming task's wait is measured now but
//! credited at its own switch-out, when it is `current` and its cgroup is
//! known without reading kernel structs.
use aya_ebpf::{
    helpers::{bpf_get_current_cgroup_id, bpf_ktime_get_ns},
    macros::tracepoint,
    programs::TracePointContext,
};

use super::tracepoint_record::Record;
use crate::{
    config::offset,
    maps::{CPU_STATE, TASK_RUNNABLE_SINCE, counters_of, track_task},
};

/// `prev_state` the kernel reports for a preempted task (TASK_REPORT_MAX,
/// stable since Linux 4.14).
const PREEMPTED: i64 = 0x100;

#[tracepoint]
pub fn sched_switch(ctx: TracePointContext) -> u32 {
    on_switch(&ctx);
    0
}

#[inline(always)]
fn on_switch(ctx: &TracePointContext) {
    let Some(cpu) = CPU_STATE.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's slot; sched_switch runs with interrupts off.
    let cpu = unsafe { &mut *cpu };
    let Some(record) = Record::read(ctx) else {
        return;
    };
    let now = unsafe { bpf_ktime_get_ns() };
    let ran_ns = if cpu.last_switch_ns != 0 && now > cpu.last_switch_ns {
        now - cpu.last_switch_ns
    } else {
        0
    };
    let waited_ns = cpu.pending_wait_ns;
    cpu.last_switch_ns = now;
    cpu.pending_wait_ns = 0;

    let prev_pid = record.u32_at(offset!(switch_prev_pid));
    if prev_pid != 0
        && let Some(counters) = counters_of(unsafe { bpf_get_current_cgroup_id() })
    {
        counters.cpu_ns += ran_ns;
        counters.runqueue_wait_ns += waited_ns;
        let state = record.i64_at(offset!(switch_prev_state));
        let still_runnable = state == 0 || state & PREEMPTED != 0;
        if still_runnable {
            counters.involuntary_switches += 1;
        } else {
            counters.voluntary_switches += 1;
        }
        let runnable_since = if still_runnable { now } else { 0 };
        match TASK_RUNNABLE_SINCE.get_ptr_mut(prev_pid) {
            // SAFETY: entries are only removed when their task exits.
            Some(since) => unsafe { *since = runnable_since },
            None => track_task(prev_pid, runnable_since),
        }
    }

    let next_pid = record.u32_at(offset!(switch_next_pid));
    if next_pid != 0
        && let Some(since) = TASK_RUNNABLE_SINCE.get_ptr_mut(next_pid)
    {
        // SAFETY: as above.
        let since = unsafe { &mut *since };
        if *since != 0 && now > *since {
            cpu.pending_wait_ns = now - *since;
        }
        *since = 0;
    }
}
