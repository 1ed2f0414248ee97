//! A per-CPU software timer (perf cpu-clock) that credits the running task's
//! time since its switch-in, and the run-queue wait that preceded it.
//! Without it a compute-bound task that never leaves its CPU would show no
//! CPU time until it stops.
use aya_ebpf::{
    helpers::{bpf_get_current_cgroup_id, bpf_get_current_task, bpf_ktime_get_ns},
    macros::perf_event,
    programs::PerfEventContext,
};

use crate::maps::{CPU_STATE, counters_of, runtime_since_last};

#[perf_event]
pub fn cpu_flush(_ctx: PerfEventContext) -> u32 {
    let Some(cpu) = CPU_STATE.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: this CPU's slot; sched_switch runs with interrupts off, so the
    // timer cannot interleave with it.
    let cpu = unsafe { &mut *cpu };
    if cpu.last_switch_ns == 0 {
        return 0;
    }
    let now = unsafe { bpf_ktime_get_ns() };
    if now <= cpu.last_switch_ns {
        return 0;
    }
    if let Some(counters) = counters_of(unsafe { bpf_get_current_cgroup_id() }) {
        let task = unsafe { bpf_get_current_task() };
        counters.cpu_ns += runtime_since_last(task, now - cpu.last_switch_ns);
        counters.runqueue_wait_ns += cpu.pending_wait_ns;
        cpu.pending_wait_ns = 0;
    }
    cpu.last_switch_ns = now;
    0
}
