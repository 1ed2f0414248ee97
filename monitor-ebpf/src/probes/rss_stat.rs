//! kmem/rss_stat: resident memory per job, and its peak at event
//! granularity (a spike between two samples still shows).
//!
//! The event reports one mm counter's new value for an address space
//! (mm_id). With curr=1 it fires in a task of that mm, so the task's cgroup
//! tells the job; with curr=0 (reclaim, exit, remote access) the mm's last
//! known job is used. Threads share one mm, so a process counts once.
use aya_ebpf::{
    helpers::bpf_get_current_cgroup_id, macros::tracepoint, programs::TracePointContext,
};
use monitor_common::{DropReason, MmState};

use super::tracepoint_head::Head;
use crate::{
    config::offset,
    maps::{CGROUP_RSS, MM_STATE, atomic_add, count_drop, counters_at, slot_of},
};

const MM_COUNTERS: usize = 4;
const BPF_NOEXIST: u64 = 1;

#[tracepoint]
pub fn rss_stat(ctx: TracePointContext) -> u32 {
    let Some(head) = Head::read(&ctx) else {
        return 0;
    };
    // Resident counters only (MM_SWAPENTS, 2, is not resident). A match
    // rather than an index: no bounds check for the verifier to trip on.
    let member = match head.get::<i32>(offset!(rss_member)) {
        0 => 0,
        1 => 1,
        3 => 3,
        _ => return 0,
    };
    let mm_id = head.get::<u32>(offset!(rss_mm_id));
    let size = head.get::<i64>(offset!(rss_size));
    let Some(state) = state_for(mm_id, head.get::<u32>(offset!(rss_curr)) != 0) else {
        return 0;
    };
    let slot = match member {
        0 => &mut state.bytes[0],
        1 => &mut state.bytes[1],
        _ => &mut state.bytes[3],
    };
    let delta = size - *slot;
    *slot = size;
    if let Some(slot) = slot_of(state.cgroup) {
        apply(slot, delta);
    }
    if resident(state) == 0 {
        // The address space is gone (or empty): forget it.
        let _ = MM_STATE.remove(mm_id);
    }
    0
}

/// The state of `mm_id`, made or moved to the current task's job when the
/// event comes from a task of that mm.
#[inline(always)]
fn state_for(mm_id: u32, current_is_owner: bool) -> Option<&'static mut MmState> {
    // SAFETY: entries are removed only by this program.
    let known = MM_STATE.get_ptr_mut(mm_id).map(|p| unsafe { &mut *p });
    if !current_is_owner {
        return known;
    }
    let cgroup = unsafe { bpf_get_current_cgroup_id() };
    match known {
        Some(state) if state.cgroup == cgroup => Some(state),
        Some(state) => {
            // The process moved to another cgroup: its memory moves with it.
            let total = resident(state);
            if let Some(old) = slot_of(state.cgroup) {
                apply(old, -total);
            }
            if slot_of(cgroup).is_none() {
                let _ = MM_STATE.remove(mm_id);
                return None;
            }
            state.cgroup = cgroup;
            if let Some(new) = slot_of(cgroup) {
                apply(new, total);
            }
            Some(state)
        }
        None => {
            slot_of(cgroup)?;
            let fresh = MmState {
                cgroup,
                bytes: [0; MM_COUNTERS],
            };
            if MM_STATE.insert(mm_id, fresh, BPF_NOEXIST).is_err() {
                count_drop(DropReason::MmMapFull);
                return None;
            }
            MM_STATE.get_ptr_mut(mm_id).map(|p| unsafe { &mut *p })
        }
    }
}

#[inline(always)]
fn resident(state: &MmState) -> i64 {
    state.bytes[0] + state.bytes[1] + state.bytes[3]
}

/// Changes the RSS of the cgroup in `slot` by `delta` and raises this CPU's
/// view of its peak.
#[inline(always)]
fn apply(slot: u32, delta: i64) {
    let Some(counters) = counters_at(slot) else {
        return;
    };
    counters.rss_delta_bytes += delta;
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
