//! iter/task: run by the daemon at every sample (it reads the iterator
//! link), visits every task of the node and credits each job task's
//! counters since its last credit (see [`crate::tasks`]). Tasks outside
//! jobs are left after reading their cgroup id, without a map lookup.
//!
//! The output is the cgroup id (8 bytes) of every live job task visited:
//! the daemon counts a job's tasks from it, and finds its empty cgroups,
//! without reading a cgroup file.
use core::ffi::c_void;

use aya_ebpf::helpers::bpf_seq_write;

use crate::{
    maps::address_of,
    tasks::{Moment, TypedTask, sync},
};

/// `struct bpf_iter__task { struct bpf_iter_meta *meta; struct task_struct *task; }`.
#[repr(C)]
struct IterTaskContext {
    meta: *const IterMeta,
    task: *const u8,
}

/// `struct bpf_iter_meta { struct seq_file *seq; u64 session_id; u64 seq_num; }`.
#[repr(C)]
struct IterMeta {
    seq: *mut c_void,
}

#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/task")]
pub fn task_iter(ctx: *mut c_void) -> i32 {
    // SAFETY: the iterator context described above; the task is NULL once
    // past the last task.
    let ctx = unsafe { &*(ctx as *const IterTaskContext) };
    // Loaded once: a second load from the context would be "maybe NULL"
    // to the verifier again.
    // SAFETY: the context's task field.
    let task = unsafe { core::ptr::read_volatile(&ctx.task) };
    if task.is_null() {
        return 0;
    }
    // The task is a typed pointer here: its fields are plain loads.
    let Some(address) = address_of(task) else {
        return 0;
    };
    let task = TypedTask { task, address };
    if let Some(cgroup) = sync(task, Moment::Sample) {
        // SAFETY: meta and its seq_file are valid for this call.
        unsafe {
            let seq = (*ctx.meta).seq;
            bpf_seq_write(seq as *mut _, &cgroup as *const u64 as *const c_void, 8);
        }
    }
    0
}
