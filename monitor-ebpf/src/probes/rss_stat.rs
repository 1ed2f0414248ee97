//! kmem/rss_stat (BTF tracepoint): resident memory per job and its peak at
//! event granularity; see [`crate::memory`]. The one program left on a
//! per-fault path: a non-job mm costs a few array reads and the cgroup
//! lookup, a job mm whose batched count did not move one more load.
//!
//! A BTF tracepoint rather than a raw one: its `mm` argument is typed, so
//! the counter is a plain load at an offset the verifier checks against
//! the kernel's BTF (the offsets are load-time constants it sees as such),
//! not a helper call.
use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};

use crate::{
    config::layout,
    maps::address_of,
    memory::{adopt, find, resident_index, update},
};

#[btf_tracepoint(function = "rss_stat")]
pub fn rss_stat(ctx: BtfTracePointContext) -> i32 {
    // TP_PROTO(struct mm_struct *mm, int member)
    let mm: *const u8 = ctx.arg(0);
    let member: u64 = ctx.arg(1);
    let Some(index) = resident_index(member as u32) else {
        return 0;
    };
    let Some(mm_key) = address_of(mm) else {
        return 0;
    };
    let Some(state) = find(mm_key).or_else(|| adopt(mm_key)) else {
        return 0;
    };
    // mm->rss_stat[member].count, as get_mm_counter() reads it; one
    // constant offset per member (the verifier refuses a variable one).
    let counters = layout!(mm_rss_stat) + layout!(percpu_counter_count);
    let size = layout!(percpu_counter_size);
    // SAFETY: a typed kernel pointer and offsets from its BTF; the
    // verifier checks the loads, which cannot fault.
    let pages: i64 = unsafe {
        match index {
            0 => core::ptr::read_volatile(mm.add(counters as usize) as *const i64),
            1 => core::ptr::read_volatile(mm.add((counters + size) as usize) as *const i64),
            _ => core::ptr::read_volatile(mm.add((counters + 3 * size) as usize) as *const i64),
        }
    };
    update(state, index, pages.max(0) << layout!(page_shift));
    0
}
