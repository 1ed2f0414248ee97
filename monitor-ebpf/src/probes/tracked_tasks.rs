//! iter/bpf_map_elem over TASK_STATE: run by the daemon at every sample
//! in place of the walk of every task of the node ([`super::task_iter`]).
//! It visits only the tasks the programs track, the jobs' tasks, and
//! credits each one's counters since its last credit (see
//! [`crate::tasks::sync_tracked`]). A task enters TASK_STATE when it is
//! born in a job or moved into one, so this walk finds every job task,
//! except those that were in a job before the programs could see them come:
//! the daemon runs the walk of every task for those (at start, when it
//! adopts a running cgroup, when a move's thread walk was cut short).
//!
//! The output is the same as the task walk's: the cgroup id (8 bytes) of
//! every live job task visited.
use core::ffi::c_void;

use aya_ebpf::helpers::bpf_seq_write;
use monitor_common::TaskState;

use crate::tasks::{TaskAt, sync_tracked};

/// `struct bpf_iter__bpf_map_elem { meta; map; key; value; }`.
#[repr(C)]
struct MapElemContext {
    meta: *const IterMeta,
    map: *const c_void,
    key: *const u64,
    value: *mut TaskState,
}

/// `struct bpf_iter_meta { struct seq_file *seq; ... }`.
#[repr(C)]
struct IterMeta {
    seq: *mut c_void,
}

#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/bpf_map_elem")]
pub fn tracked_task_iter(ctx: *mut c_void) -> i32 {
    // SAFETY: the iterator context described above; key and value are
    // NULL once past the last element, and point into the element (the
    // map's own memory, not a copy) otherwise.
    let ctx = unsafe { &*(ctx as *const MapElemContext) };
    // Each loaded once: a second load would be "maybe NULL" again.
    let (key, value) = unsafe {
        (
            core::ptr::read_volatile(&ctx.key),
            core::ptr::read_volatile(&ctx.value),
        )
    };
    if key.is_null() || value.is_null() {
        return 0;
    }
    // SAFETY: non-NULL, sized by the map's key and value (checked when
    // the daemon makes the link).
    let (task, state) = unsafe { (*key, &mut *value) };
    if let Some(cgroup) = sync_tracked(TaskAt(task), state) {
        // SAFETY: meta and its seq_file are valid for this call.
        unsafe {
            let seq = (*ctx.meta).seq;
            bpf_seq_write(seq as *mut _, &cgroup as *const u64 as *const c_void, 8);
        }
    }
    0
}
