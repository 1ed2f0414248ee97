//! Resident memory per job, and its peak at event granularity (a spike
//! between two samples still shows), from the kmem/rss_stat tracepoint.
//!
//! The tracepoint fires on every change of an address space's (mm's) page
//! counters, so on every page fault: it is the one hot path the monitor
//! keeps, because no kernel counter holds a job's simultaneous peak. Its
//! raw form passes the mm and which counter changed; the value is the
//! counter's global count, which moves only in per-CPU batches, so most
//! events change nothing and end after one array lookup and one read.
//!
//! The mms of jobs' processes live in MM_SLOTS, found by open addressing
//! on the mm pointer (no hash map lookup on the fault path). An mm is taken
//! in by an event from one of its own tasks in a job, follows its process
//! when it moves to another cgroup ([`move_mm`]), and leaves the table
//! when it is torn down (at exit, or the old mm of an exec): the first
//! event that lowers a count of an mm without users releases all of it,
//! since the counts the event reports are batched per CPU and need not
//! come down to zero by the end.
use aya_ebpf::helpers::bpf_get_current_task;
use monitor_common::{DropReason, MM_PROBES, MmState, hash_slot_index};

use crate::{
    atomics::{atomic_add, compare_exchange, exchange},
    config::{layout, offset},
    maps::{CGROUP_RSS, MM_SLOTS, count_drop, counters_at, slot_of},
    tasks::{current_job_cgroup, read},
};

/// The rss_stat members counted (MM_SWAPENTS, 2, is not resident), as an
/// index into [`MmState::bytes`].
#[inline(always)]
pub fn resident_index(member: u32) -> Option<usize> {
    match member {
        0 => Some(0), // MM_FILEPAGES
        1 => Some(1), // MM_ANONPAGES
        3 => Some(2), // MM_SHMEMPAGES
        _ => None,
    }
}

#[inline(always)]
fn entry(slot: u32) -> Option<&'static mut MmState> {
    // SAFETY: an array entry; its fields are written with atomics where
    // two CPUs may write them at once.
    MM_SLOTS.get_ptr_mut(slot).map(|p| unsafe { &mut *p })
}

#[inline(always)]
fn probe_slot(mm: u64, probe: u32) -> u32 {
    let mask = offset!(mm_slot_mask) as u32;
    hash_slot_index(mm, mask).wrapping_add(probe) & mask
}

/// The table entry of `mm`, if it is a job's.
#[inline(always)]
pub fn find(mm: u64) -> Option<&'static mut MmState> {
    for probe in 0..MM_PROBES {
        let state = entry(probe_slot(mm, probe))?;
        if state.mm == mm {
            return Some(state);
        }
    }
    None
}

/// Takes `mm` in when the current task is one of its own and in a job.
#[inline(always)]
pub fn adopt(mm: u64) -> Option<&'static mut MmState> {
    let cgroup = current_job_cgroup()?;
    // Only the mm's own tasks: a job task in direct reclaim or reading
    // another process's memory changes other mms.
    let task = unsafe { bpf_get_current_task() };
    if read::<u64>(task + layout!(task_mm)) != Some(mm) {
        return None;
    }
    for probe in 0..MM_PROBES {
        let state = entry(probe_slot(mm, probe))?;
        // Claim a free entry; a freed entry's bytes are zero.
        if compare_exchange(&mut state.mm, 0, mm) == 0 {
            state.cgroup = cgroup;
            return Some(state);
        }
        if state.mm == mm {
            // Taken in by a concurrent event of the same mm.
            return Some(state);
        }
    }
    count_drop(DropReason::MmMapFull);
    None
}

/// Records that counter `index` of `state`'s mm is now `bytes`, and
/// credits the change to its job.
#[inline(always)]
pub fn update(state: &mut MmState, index: usize, bytes: i64) {
    let counter = match index {
        0 => &mut state.bytes[0],
        1 => &mut state.bytes[1],
        _ => &mut state.bytes[2],
    };
    // SAFETY: an aligned i64 in a map value.
    if unsafe { core::ptr::read_volatile(counter) } == bytes {
        // The batched global count did not move: the common case.
        return;
    }
    // An exchange, so that concurrent events of one mm on several CPUs
    // credit every change exactly once, in whatever order they land.
    let delta = bytes - exchange(counter, bytes);
    if let Some(slot) = slot_of(state.cgroup) {
        apply(slot, delta);
    }
    // Empty, or being torn down (mmput dropped its last user): what is
    // left of it leaves the job now, and its entry is freed.
    if resident(state) == 0 || (delta < 0 && read::<i32>(state.mm + layout!(mm_users)) == Some(0)) {
        release(state);
    }
}

/// Takes `state`'s remaining memory out of its job and frees its entry.
#[inline(always)]
fn release(state: &mut MmState) {
    if let Some(slot) = slot_of(state.cgroup) {
        apply(slot, -resident(state));
    }
    state.bytes = [0; 3];
    state.mm = 0;
}

#[inline(always)]
fn resident(state: &MmState) -> i64 {
    state.bytes[0] + state.bytes[1] + state.bytes[2]
}

/// Changes the RSS of the cgroup in `slot` by `delta` and raises this CPU's
/// view of its peak.
#[inline(always)]
fn apply(slot: u32, delta: i64) {
    let Some(mut counters) = counters_at(slot) else {
        return;
    };
    atomic_add(&mut counters.rss_delta_bytes, delta);
    let Some(total) = CGROUP_RSS.get_ptr_mut(slot) else {
        return;
    };
    atomic_add(total, delta);
    // Read after the add: the total at some moment since this change.
    // SAFETY: an aligned i64 in a map value.
    let now = unsafe { core::ptr::read_volatile(total) };
    if now > 0 && now as u64 > counters.rss_peak_bytes {
        counters.rss_peak_bytes = now as u64;
    }
}

/// The process of `leader` moved to cgroup `to`: its memory goes with it
/// (out of the table if `to` is not a job).
#[inline(always)]
pub fn move_mm(leader: u64, to: u64) {
    let Some(mm) = read::<u64>(leader + layout!(task_mm)) else {
        return;
    };
    if mm == 0 {
        return;
    }
    let Some(state) = find(mm) else {
        return;
    };
    if state.cgroup == to {
        return;
    }
    let Some(new) = slot_of(to) else {
        release(state);
        return;
    };
    let total = resident(state);
    if let Some(old) = slot_of(state.cgroup) {
        apply(old, -total);
    }
    state.cgroup = to;
    apply(new, total);
}
