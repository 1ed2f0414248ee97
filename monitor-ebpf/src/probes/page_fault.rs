//! exceptions/page_fault_user: page faults of a job's tasks (`current`).
use aya_ebpf::{helpers::bpf_get_current_cgroup_id, macros::tracepoint, programs::TracePointContext};

use crate::maps::counters_of;

#[tracepoint]
pub fn page_fault_user(_ctx: TracePointContext) -> u32 {
    if let Some(counters) = counters_of(unsafe { bpf_get_current_cgroup_id() }) {
        counters.page_faults += 1;
    }
    0
}
