//! block/block_bio_queue: bytes a job's own tasks submit to block devices.
//! The event fires in the submitter's context: reads and direct IO are the
//! job's; buffered writes are submitted later by the flusher and are not
//! (they show in io_write_bytes, at the VFS layer, instead).
use aya_ebpf::{helpers::bpf_get_current_cgroup_id, macros::tracepoint, programs::TracePointContext};

use super::tracepoint_head::Head;
use crate::{config::offset, maps::counters_of};

const SECTOR: u64 = 512;

#[tracepoint]
pub fn block_bio_queue(ctx: TracePointContext) -> u32 {
    let Some(counters) = counters_of(unsafe { bpf_get_current_cgroup_id() }) else {
        return 0;
    };
    let Some(head) = Head::read(&ctx) else {
        return 0;
    };
    let bytes = u64::from(head.get::<u32>(offset!(bio_nr_sector))) * SECTOR;
    // rwbs: e.g. "R", "WS", "FWFS", "D" (discard): the first R or W tells.
    let rwbs = offset!(bio_rwbs);
    for i in 0..4 {
        match head.get::<u8>(rwbs + i) {
            b'R' => {
                counters.block_read_bytes += bytes;
                break;
            }
            b'W' => {
                counters.block_write_bytes += bytes;
                break;
            }
            0 => break,
            _ => {}
        }
    }
    0
}
