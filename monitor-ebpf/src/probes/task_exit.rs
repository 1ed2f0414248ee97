//! sched_process_exit (raw tracepoint; fires for every exiting thread,
//! `current` is that thread): credits the thread's counters, so a job
//! living 5 ms is exact; counts whole-process exits, and OOM kills when
//! the thread is a victim the OOM killer marked.
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::raw_tracepoint, programs::RawTracePointContext,
};

use crate::{
    atomics::atomic_add,
    config::layout,
    maps::{OOM_PENDING, OOM_VICTIMS, counters_of},
    tasks::{TaskAt, current_job_cgroup, read, settle},
};

#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn sched_process_exit(ctx: RawTracePointContext) -> i32 {
    // TP_PROTO(struct task_struct *p[, bool group_dead]): older kernels
    // lack group_dead (the verifier drops the branch not taken, so the
    // program never reads past the arguments this kernel passes).
    let task: u64 = ctx.arg(0);
    let group_dead = if layout!(exit_group_dead_arg) != 0 {
        ctx.arg::<u64>(1) & 0xff != 0
    } else {
        last_thread(task)
    };
    settle(TaskAt(task));
    let oom_killed = take_oom_victim();
    if !oom_killed && !group_dead {
        return 0;
    }
    let Some(mut counters) = current_job_cgroup().and_then(counters_of) else {
        return 0;
    };
    if oom_killed {
        atomic_add(&mut counters.oom_kills, 1u64);
    }
    if group_dead {
        atomic_add(&mut counters.process_exits, 1u64);
    }
    0
}

/// Whether exiting `task` is its process's last thread: do_exit counted
/// it out of `signal->live` before this tracepoint. (Two threads exiting at
/// once may both see 0: the argument, where the kernel has it, is exact.)
#[inline(always)]
fn last_thread(task: u64) -> bool {
    let Some(signal) = read::<u64>(task + layout!(task_signal)) else {
        return false;
    };
    read::<i32>(signal + layout!(signal_live)) == Some(0)
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
