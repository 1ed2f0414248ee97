//! cgroup/cgroup_mkdir and cgroup_rmdir on the v2 hierarchy, and on the
//! v1 hierarchy watched for resource managers' jobs.
//!
//! A new cgroup under the monitored root, or under a discovery prefix (where
//! a resource manager makes its job cgroups), gets its counter slot right
//! here, in the kernel, so a job that lives 5 ms is counted from its first
//! instruction; the daemon hears of it (and of its slot) through the ring
//! buffer afterwards, and frees the slot of a cgroup that is no job. A v1
//! cgroup's id is tagged with [`V1_TAG`].
use aya_ebpf::{
    EbpfContext,
    helpers::bpf_probe_read_kernel_str_bytes,
    macros::{map, tracepoint},
    maps::PerCpuArray,
    programs::TracePointContext,
};
use monitor_common::{
    CGROUP_EVENT_HEADER, CGROUP_PATH_MAX, CgroupEvent, CgroupEventKind, Claim,
    DISCOVERY_PREFIX_MAX, DISCOVERY_PREFIXES, DropReason, NO_SLOT, ROOT_PREFIX_MAX, V1_TAG,
    claimable_cgroup_slot,
};

use crate::{
    config::{discovery, discovery_filter, offset, root_prefix, root_prefix_len},
    maps::{CGROUP_EVENTS, CGROUP_INDEX, cgroup_at, count_drop},
};

/// The cgroup v2 hierarchy id, as in the `0::/path` line of /proc/PID/cgroup.
const DEFAULT_HIERARCHY: i32 = 0;

/// Scratch space for building an event (too big for the 512-byte stack).
#[map]
static EVENT_SCRATCH: PerCpuArray<CgroupEvent> = PerCpuArray::with_max_entries(1, 0);

#[tracepoint]
pub fn cgroup_mkdir(ctx: TracePointContext) -> u32 {
    on_cgroup_event(&ctx, CgroupEventKind::Mkdir);
    0
}

#[tracepoint]
pub fn cgroup_rmdir(ctx: TracePointContext) -> u32 {
    on_cgroup_event(&ctx, CgroupEventKind::Rmdir);
    0
}

#[inline(always)]
fn on_cgroup_event(ctx: &TracePointContext, kind: CgroupEventKind) {
    let root = offset!(cgroup_root);
    let level = offset!(cgroup_level);
    let id = offset!(cgroup_id);
    let path = offset!(cgroup_path);
    // SAFETY (all reads): offsets from the tracepoint's format file.
    let v1 = match unsafe { ctx.read_at::<i32>(root) } {
        Ok(DEFAULT_HIERARCHY) => false,
        Ok(hierarchy) if hierarchy as u32 == discovery!(v1_hierarchy) => true,
        _ => return,
    };
    let Some(event) = EVENT_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's scratch slot.
    let event = unsafe { &mut *event };
    let fields = unsafe {
        (
            ctx.read_at::<u32>(level),
            ctx.read_at::<u64>(id),
            ctx.read_at::<u32>(path),
        )
    };
    let (Ok(level), Ok(id), Ok(data_loc)) = fields else {
        return;
    };
    event.kind = kind as u32;
    event.level = level;
    event.id = if v1 { id | V1_TAG } else { id };
    event.slot = NO_SLOT;
    // A __data_loc field: low 16 bits offset into the record, high 16 length.
    let path_offset = (data_loc & 0xffff) as usize;
    // SAFETY: the kernel put the string at that offset of this record.
    let src = unsafe { (ctx.as_ptr() as *const u8).add(path_offset) };
    let Ok(path_len) =
        (unsafe { bpf_probe_read_kernel_str_bytes(src, &mut event.path) }).map(|path| path.len())
    else {
        return;
    };
    let wanted = if v1 {
        under_discovery_prefix(&event.path, 1)
    } else {
        under_monitored_root(&event.path) || under_discovery_prefix(&event.path, 0)
    };
    if !wanted {
        return;
    }
    if kind == CgroupEventKind::Mkdir {
        match claim_slot(event.id) {
            Some(slot) => event.slot = slot,
            None => count_drop(DropReason::CgroupMapFull),
        }
    }
    // Up to the path's NUL: the rest of the struct is never read.
    let size = (CGROUP_EVENT_HEADER + path_len + 1).min(size_of::<CgroupEvent>());
    // SAFETY: `size` bytes of this CPU's scratch event, plain integers.
    let record =
        unsafe { core::slice::from_raw_parts((event as *const CgroupEvent).cast::<u8>(), size) };
    if CGROUP_EVENTS.output::<[u8]>(record, 0).is_err() {
        count_drop(DropReason::RingBufferFull);
    }
}

/// Gives cgroup `id` a counter slot: the first free one it probes. No atomics
/// needed: the kernel runs cgroup_mkdir under cgroup_mutex, so two of these
/// never race, and the daemon claims slots itself only before this program
/// is attached (and for the few cgroups made while it was being attached;
/// see `monitor/src/kernel/counters.rs`). A free slot's per-CPU counters are
/// zero: the daemon zeroes them before it frees the slot.
#[inline(always)]
fn claim_slot(id: u64) -> Option<u32> {
    let mask = offset!(cgroup_slot_mask) as u32;
    let Ok(claim) = claimable_cgroup_slot(id, mask, cgroup_at);
    match claim {
        Claim::Held(slot) => Some(slot),
        Claim::Free(slot) => {
            let entry = CGROUP_INDEX.get_ptr_mut(slot)?;
            // SAFETY: an array slot; writers are serialized as said above.
            unsafe { *entry = id };
            Some(slot)
        }
        Claim::Full => None,
    }
}

/// Does `path` start with the monitored root's prefix (`/monitor.slice/`)?
#[inline(always)]
fn under_monitored_root(path: &[u8; CGROUP_PATH_MAX]) -> bool {
    let len = root_prefix_len();
    if len == 0 || len > ROOT_PREFIX_MAX || len > CGROUP_PATH_MAX {
        return false;
    }
    let prefix = root_prefix();
    for i in 0..ROOT_PREFIX_MAX {
        if i >= len {
            return true;
        }
        // Volatile: the static's compile-time contents are placeholders.
        let expected = unsafe { core::ptr::read_volatile(&raw const prefix.bytes[i]) };
        if path[i] != expected {
            return false;
        }
    }
    true
}

/// Does `path` start with one of the discovery prefixes of the v2 (`v1`
/// 0) or the watched v1 (`v1` 1) hierarchy?
#[inline(always)]
fn under_discovery_prefix(path: &[u8; CGROUP_PATH_MAX], v1: u32) -> bool {
    let count = discovery!(count) as usize;
    for p in 0..DISCOVERY_PREFIXES {
        if p >= count {
            return false;
        }
        let prefix = &discovery_filter().prefixes[p];
        // SAFETY (volatile reads): statics whose compile-time contents are
        // placeholders.
        let (its_v1, len) = unsafe {
            (
                core::ptr::read_volatile(&raw const prefix.v1),
                core::ptr::read_volatile(&raw const prefix.len) as usize,
            )
        };
        if its_v1 != v1 || len == 0 || len > DISCOVERY_PREFIX_MAX {
            continue;
        }
        let mut matched = true;
        for i in 0..DISCOVERY_PREFIX_MAX {
            if i >= len {
                break;
            }
            let expected = unsafe { core::ptr::read_volatile(&raw const prefix.bytes[i]) };
            if path[i] != expected {
                matched = false;
                break;
            }
        }
        if matched {
            return true;
        }
    }
    false
}
