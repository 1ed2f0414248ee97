//! Maps shared by the programs. Sizes here are defaults; the daemon resizes
//! them at load time from its flags.
use aya_ebpf::{
    macros::map,
    maps::{HashMap, PerCpuArray, PerCpuHashMap, RingBuf},
};
use monitor_common::{CgroupCounters, CpuState, DROP_REASONS, DropReason};

/// Counters per monitored cgroup id. Entries are created when a cgroup under
/// the monitored root is made (or by the daemon at start), so the hot path
/// only looks up: a miss means "not a job", at the cost of one lookup.
#[map]
pub static CGROUP_COUNTERS: PerCpuHashMap<u64, CgroupCounters> =
    PerCpuHashMap::with_max_entries(16384, 0);

/// When a task of a monitored cgroup became runnable (wakeup or preemption),
/// keyed by its pid (thread id); 0 while it runs or sleeps. Only tasks that
/// have run in a monitored cgroup have an entry, so wakeups of other tasks
/// cost one failed lookup.
#[map]
pub static TASK_RUNNABLE_SINCE: HashMap<u32, u64> = HashMap::with_max_entries(65536, 0);

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

/// Make sure `pid` has a wakeup slot (cold path: fork, first switch-out).
#[inline(always)]
pub fn track_task(pid: u32, runnable_since: u64) {
    if TASK_RUNNABLE_SINCE.insert(pid, runnable_since, 0).is_err() {
        count_drop(DropReason::TaskMapFull);
    }
}
