//! oom/mark_victim: the OOM killer chose a task. It fires in the context of
//! whoever ran out of memory, not the victim, so the victim is remembered
//! here and counted in its own job when it exits (see process_exit).
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};

use crate::{
    atomics::atomic_add,
    config::offset,
    maps::{OOM_PENDING, OOM_VICTIMS},
};

#[tracepoint]
pub fn oom_mark_victim(ctx: TracePointContext) -> u32 {
    let offset = offset!(oom_victim_pid);
    // SAFETY: the offset comes from the tracepoint's format file.
    let Ok(pid) = (unsafe { ctx.read_at::<u32>(offset) }) else {
        return 0;
    };
    if OOM_VICTIMS.insert(pid, 0, 0).is_ok()
        && let Some(pending) = OOM_PENDING.get_ptr_mut(0)
    {
        atomic_add(pending, 1u64);
    }
    0
}
