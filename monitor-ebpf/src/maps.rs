//! Maps shared by the programs. Sizes here are defaults; the daemon resizes
//! them at load time from its flags.
use core::{
    convert::Infallible,
    ops::{Deref, DerefMut},
};

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, PerCpuArray, RingBuf},
};
use monitor_common::{
    CgroupCounters, DROP_REASONS, DropReason, FREE_SLOT, MmState, TaskState, find_cgroup_slot,
};

use crate::{atomics::compare_exchange, config::offset};

/// Hash map flag: entries are allocated on update, not up front.
const BPF_F_NO_PREALLOC: u32 = 1;
/// Array flag: userspace may mmap the values.
const BPF_F_MMAPABLE: u32 = 1 << 10;

/// Which cgroup holds each counter slot (0: free); see
/// [`monitor_common::CGROUP_PROBES`]. Slots are claimed when a cgroup under
/// the monitored root is made (or by the daemon at start) and freed by the
/// daemon, so the hot path only reads: a miss means "not a job".
#[map]
pub static CGROUP_INDEX: Array<u64> = Array::with_max_entries(16384, 0);

/// Counters of the cgroup in the same slot of [`CGROUP_INDEX`], per CPU.
#[map]
pub static CGROUP_COUNTERS: PerCpuArray<CgroupCounters> = PerCpuArray::with_max_entries(16384, 0);

/// Whether the counters in the same slot of [`CGROUP_COUNTERS`] changed
/// since the daemon last read them (0: no). The daemon maps it into its
/// memory, clears a slot's flag and then reads the slot, and reads no slot
/// whose flag is clear: at 1,000 idle jobs, 1,000 syscalls a sample fewer.
#[map]
pub static CGROUP_CHANGED: Array<u64> = Array::with_max_entries(16384, BPF_F_MMAPABLE);

/// A per-CPU word for [`Counted`]'s barrier (a locked operation on a line
/// no other CPU writes).
#[map]
static FENCE_SCRATCH: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Current RSS of the cgroup in the same slot of [`CGROUP_INDEX`], shared by
/// all CPUs (atomic adds): the peak needs the total at the moment of each
/// change, which per-CPU copies cannot give.
#[map]
pub static CGROUP_RSS: Array<i64> = Array::with_max_entries(16384, 0);

/// Resident memory of the jobs' address spaces (see [`crate::memory`]): open
/// addressing by mm_struct pointer, an inlined array access on the
/// page-fault path where a hash map lookup costs ~35 ns.
#[map]
pub static MM_SLOTS: Array<MmState> = Array::with_max_entries(65536, 0);

/// Tasks the OOM killer chose and that have not exited yet (pid -> 0).
#[map]
pub static OOM_VICTIMS: HashMap<u32, u8> = HashMap::with_max_entries(4096, 0);

/// How many entries OOM_VICTIMS has, so exits skip the lookup when none.
#[map]
pub static OOM_PENDING: Array<u64> = Array::with_max_entries(1, 0);

/// Per-task state of the jobs' tasks (see [`crate::tasks`]), keyed by
/// task_struct pointer: made when a task is born in or moved into a job,
/// removed when the task is freed. Not preallocated: its memory follows
/// the number of job tasks, up to the daemon's `--bpf.max-tasks`.
#[map]
pub static TASK_STATE: HashMap<u64, TaskState> =
    HashMap::with_max_entries(16384, BPF_F_NO_PREALLOC);

/// The job cgroup of each socket made by a task of a v1 job (one whose
/// tasks have no v2 cgroup of their own, so the socket's v2 cgroup names no
/// job), by socket cookie: made at socket creation, removed at release.
#[map]
pub static SOCKET_JOBS: HashMap<u64, u64> = HashMap::with_max_entries(65536, BPF_F_NO_PREALLOC);

/// How many entries SOCKET_JOBS has, so packets skip its lookup when none.
#[map]
pub static SOCKET_JOBS_COUNT: Array<u64> = Array::with_max_entries(1, 0);

/// How many entries TASK_STATE has (kept by the programs: counting a hash
/// map's keys from userspace would take a syscall per key).
#[map]
pub static TASK_STATE_COUNT: Array<u64> = Array::with_max_entries(1, 0);

/// Cgroup creation and removal under the monitored root, for the daemon.
/// The daemon drains it between samples; 1 MiB holds ~12,000 records of
/// a 60-byte path: a sample of 120 ms while a site removes 17,000 cgroups
/// a second (the retention bench) overflowed 256 KiB of whole structs.
#[map]
pub static CGROUP_EVENTS: RingBuf = RingBuf::with_byte_size(1024 * 1024, 0);

/// Where a typed (BTF) kernel pointer becomes a plain number: the verifier
/// allows no arithmetic on a typed pointer (a hash, a map key), but a
/// privileged program may store one and read the number back.
#[map]
static ADDRESS_SCRATCH: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// The address a typed kernel pointer holds, as a number.
#[inline(always)]
pub fn address_of(pointer: *const u8) -> Option<u64> {
    let slot = ADDRESS_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: this CPU's slot; volatile so the store and load stay.
    unsafe {
        core::ptr::write_volatile(slot as *mut *const u8, pointer);
        Some(core::ptr::read_volatile(slot))
    }
}

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

/// `CGROUP_INDEX[slot]`, for the shared probe functions. An out-of-range
/// slot (impossible: the mask is the length minus one) reads as free, and
/// writing it fails in turn.
#[inline(always)]
pub fn cgroup_at(slot: u32) -> Result<u64, Infallible> {
    Ok(CGROUP_INDEX.get(slot).copied().unwrap_or(FREE_SLOT))
}

/// The counter slot of a cgroup, if it is counted.
#[inline(always)]
pub fn slot_of(cgroup_id: u64) -> Option<u32> {
    let mask = offset!(cgroup_slot_mask) as u32;
    let Ok(slot) = find_cgroup_slot(cgroup_id, mask, cgroup_at);
    slot
}

/// This CPU's counters in one slot, marked changed when dropped (after
/// every update made through it).
pub struct Counted {
    counters: *mut CgroupCounters,
    slot: u32,
}

impl Deref for Counted {
    type Target = CgroupCounters;

    #[inline(always)]
    fn deref(&self) -> &CgroupCounters {
        // SAFETY: this CPU's copy of the slot; the daemon zeroes it only
        // after the cgroup is gone.
        unsafe { &*self.counters }
    }
}

impl DerefMut for Counted {
    #[inline(always)]
    fn deref_mut(&mut self) -> &mut CgroupCounters {
        // SAFETY: as above. Fields that programs in interrupt context also
        // write (network) are updated atomically.
        unsafe { &mut *self.counters }
    }
}

impl Drop for Counted {
    #[inline(always)]
    fn drop(&mut self) {
        // A full barrier between the updates and the flag's load: the
        // daemon clears the flag, then reads. Without it this CPU could
        // load the flag as still set (from before the clear) while its
        // updates were not yet visible to that read, and they would wait
        // for the slot's next change to be read.
        if let Some(scratch) = FENCE_SCRATCH.get_ptr_mut(0) {
            compare_exchange(scratch, 0, 0);
        }
        if let Some(flag) = CGROUP_CHANGED.get_ptr_mut(self.slot) {
            // SAFETY: an aligned u64 in a map value; set once per read.
            unsafe {
                if core::ptr::read_volatile(flag) == 0 {
                    core::ptr::write_volatile(flag, 1);
                }
            }
        }
    }
}

/// This CPU's counters in `slot`.
#[inline(always)]
pub fn counters_at(slot: u32) -> Option<Counted> {
    CGROUP_COUNTERS
        .get_ptr_mut(slot)
        .map(|counters| Counted { counters, slot })
}

#[inline(always)]
pub fn counters_of(cgroup_id: u64) -> Option<Counted> {
    counters_at(slot_of(cgroup_id)?)
}
