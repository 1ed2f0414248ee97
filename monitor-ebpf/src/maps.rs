//! Maps shared by the programs. Sizes here are defaults; the daemon resizes
//! them at load time from its flags.
use aya_ebpf::{
    macros::map,
    maps::{Array, PerCpuArray, PerCpuHashMap, RingBuf},
};
use monitor_common::{CgroupCounters, CpuState, DROP_REASONS, DropReason, TaskSlot, task_slot_index};

use crate::config::offset;

/// Counters per monitored cgroup id. Entries are created when a cgroup under
/// the monitored root is made (or by the daemon at start), so the hot path
/// only looks up: a miss means "not a job", at the cost of one lookup.
#[map]
pub static CGROUP_COUNTERS: PerCpuHashMap<u64, CgroupCounters> = PerCpuHashMap::with_max_entries(16384, 0);

/// Since when each task has been runnable, in direct-mapped slots (see
/// [`TaskSlot`]). Shared by all CPUs: a task is woken on one and runs on another.
#[map]
pub static TASK_SLOTS: Array<TaskSlot> = Array::with_max_entries(65536, 0);

/// Per-CPU scheduler state: when the current task came on, and its pending wait.
#[map]
pub static CPU_STATE: PerCpuArray<CpuState> = PerCpuArray::with_max_entries(1, 0);

/// Cgroup creation and removal under the monitored root, for the daemon.
#[map]
pub static CGROUP_EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// What the programs had to drop, by [`DropReason`].
#[map]
pub static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(DROP_REASONS as u32, 0);

#[inline(always)]
pub fn count_drop(reason: DropReason) {
    if let Some(slot) = DROPS.get_ptr_mut(reason as u32) {
        // SAFETY: per-CPU slot, programs on one CPU do not nest here.
        unsafe { *slot += 1 };
    }
}

#[inline(always)]
pub fn counters_of(cgroup_id: u64) -> Option<&'static mut CgroupCounters> {
    // SAFETY: per-CPU value of a map entry that is never deleted while the
    // cgroup lives; only this CPU writes it.
    CGROUP_COUNTERS.get_ptr_mut(cgroup_id).map(|p| unsafe { &mut *p })
}

#[inline(always)]
pub fn task_slot(task: u64) -> Option<&'static mut TaskSlot> {
    let mask = offset!(task_slot_mask) as u32;
    let index = task_slot_index(task, mask);
    // SAFETY: array slots always exist; concurrent writers of one slot can
    // at worst mix two tasks' values, which the reader bounds-checks.
    TASK_SLOTS.get_ptr_mut(index).map(|p| unsafe { &mut *p })
}

/// Records that `task` became runnable at `now`.
#[inline(always)]
pub fn mark_runnable(task: u64, now: u64) {
    let Some(slot) = task_slot(task) else {
        return;
    };
    if slot.task != task && slot.runnable_since != 0 {
        count_drop(DropReason::TaskSlotCollision);
    }
    slot.task = task;
    slot.runnable_since = now;
}
