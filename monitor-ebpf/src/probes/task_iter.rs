//! iter/task: run by the daemon at every sample (it reads the pinned
//! iterator link), visits every task of the node and credits each job
//! task's counters since its last credit (see [`crate::tasks`]). Tasks
//! outside jobs are left after reading their cgroup id, without a map
//! lookup. Nothing is written to the iterator's output.
use core::ffi::c_void;

use crate::tasks::{Moment, sync};

/// `struct bpf_iter__task { struct bpf_iter_meta *meta; struct task_struct *task; }`:
/// the task pointer is the second word of the context.
const CTX_TASK: usize = 1;

#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/task")]
pub fn task_iter(ctx: *mut c_void) -> i32 {
    // SAFETY: the iterator context described above; NULL once past the last task.
    let task = unsafe { *(ctx as *const u64).add(CTX_TASK) };
    if task != 0 {
        sync(task, Moment::Sample);
    }
    0
}
