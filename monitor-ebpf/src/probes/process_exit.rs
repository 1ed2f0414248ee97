//! sched/sched_process_exit: counts whole-process exits in a job, and OOM
//! kills when the exiting task is a victim the OOM killer marked
//! (`current` is the exiting task).
use aya_ebpf::{
    helpers::{bpf_get_current_cgroup_id, bpf_get_current_pid_tgid},
    macros::tracepoint,
    programs::TracePointContext,
};

use crate::{
    config::offset,
    maps::{OOM_PENDING, OOM_VICTIMS, atomic_add, counters_of},
};

#[tracepoint]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    let oom_killed = take_oom_victim();
    let Some(counters) = counters_of(unsafe { bpf_get_current_cgroup_id() }) else {
        return 0;
    };
    if oom_killed {
        counters.oom_kills += 1;
    }
    let offset = offset!(exit_group_dead);
    // SAFETY: the offset comes from the tracepoint's format file.
    if let Ok(group_dead) = unsafe { ctx.read_at::<u8>(offset) }
        && group_dead != 0
    {
        counters.process_exits += 1;
    }
    0
}

/// Was the exiting task marked by the OOM killer? Forgets it if so.
#[inline(always)]
fn take_oom_victim() -> bool {
    let Some(pending) = OOM_PENDING.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: an aligned u64 in a map value; a stale read only delays or
    // adds one lookup.
    if unsafe { core::ptr::read_volatile(pending) } == 0 {
        return false;
    }
    let pid = bpf_get_current_pid_tgid() as u32;
    if OOM_VICTIMS.remove(pid).is_err() {
        return false;
    }
    atomic_add(pending, u64::MAX); // minus one
    true
}
