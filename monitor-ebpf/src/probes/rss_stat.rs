//! kmem/rss_stat (raw tracepoint): resident memory per job and its peak at
//! event granularity; see [`crate::memory`]. The one program left on a
//! per-fault path: a non-job mm costs a few array reads and the cgroup
//! lookup, a job mm whose batched count did not move one more read.
use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};

use crate::{
    config::layout,
    memory::{adopt, find, resident_index, update},
    tasks::read,
};

#[raw_tracepoint(tracepoint = "rss_stat")]
pub fn rss_stat(ctx: RawTracePointContext) -> i32 {
    // TP_PROTO(struct mm_struct *mm, int member)
    let mm: u64 = ctx.arg(0);
    let member: u64 = ctx.arg(1);
    let Some(index) = resident_index(member as u32) else {
        return 0;
    };
    let Some(state) = find(mm).or_else(|| adopt(mm)) else {
        return 0;
    };
    // mm->rss_stat[member].count, as get_mm_counter() reads it.
    let counter = mm + layout!(mm_rss_stat) + (member & 0x3) * layout!(percpu_counter_size);
    let Some(pages) = read::<i64>(counter + layout!(percpu_counter_count)) else {
        return 0;
    };
    update(state, index, pages.max(0) << layout!(page_shift));
    0
}
