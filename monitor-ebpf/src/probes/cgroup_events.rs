//! cgroup/cgroup_mkdir and cgroup_rmdir on the v2 hierarchy.
//!
//! A new cgroup under the monitored root gets its counter entry right here,
//! in the kernel, so a job that lives 5 ms is counted from its first
//! instruction; the daemon hears of it through the ring buffer afterwards.
use aya_ebpf::{
    EbpfContext,
    bindings::BPF_NOEXIST,
    helpers::bpf_probe_read_kernel_str_bytes,
    macros::{map, tracepoint},
    maps::PerCpuArray,
    programs::TracePointContext,
};
use monitor_common::{
    CGROUP_PATH_MAX, CgroupCounters, CgroupEvent, CgroupEventKind, DropReason, ROOT_PREFIX_MAX,
};

use crate::{
    config::{offset, root_prefix, root_prefix_len},
    maps::{CGROUP_COUNTERS, CGROUP_EVENTS, count_drop},
};

/// The cgroup v2 hierarchy id, as in the `0::/path` line of /proc/PID/cgroup.
const DEFAULT_HIERARCHY: i32 = 0;
const EEXIST: i32 = 17;

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
    if unsafe { ctx.read_at::<i32>(root) } != Ok(DEFAULT_HIERARCHY) {
        return;
    }
    let Some(event) = EVENT_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's scratch slot.
    let event = unsafe { &mut *event };
    let fields = unsafe { (ctx.read_at::<u32>(level), ctx.read_at::<u64>(id), ctx.read_at::<u32>(path)) };
    let (Ok(level), Ok(id), Ok(data_loc)) = fields else {
        return;
    };
    event.kind = kind as u32;
    event.level = level;
    event.id = id;
    // A __data_loc field: low 16 bits offset into the record, high 16 length.
    let path_offset = (data_loc & 0xffff) as usize;
    // SAFETY: the kernel put the string at that offset of this record.
    let src = unsafe { (ctx.as_ptr() as *const u8).add(path_offset) };
    if unsafe { bpf_probe_read_kernel_str_bytes(src, &mut event.path) }.is_err() {
        return;
    }
    if !under_monitored_root(&event.path) {
        return;
    }
    if kind == CgroupEventKind::Mkdir
        && let Err(err) = CGROUP_COUNTERS.insert(event.id, CgroupCounters::default(), BPF_NOEXIST as u64)
        && err != -EEXIST
    {
        count_drop(DropReason::CgroupMapFull);
    }
    if CGROUP_EVENTS.output::<CgroupEvent>(event, 0).is_err() {
        count_drop(DropReason::RingBufferFull);
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
