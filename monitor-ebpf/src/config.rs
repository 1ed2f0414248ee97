//! Read-only globals set by the daemon at load time. They live in `.rodata`,
//! which the kernel freezes, so the verifier treats their values as constants.
use monitor_common::{FieldOffsets, RootPrefix};

#[unsafe(no_mangle)]
pub(crate) static FIELD_OFFSETS: FieldOffsets = FieldOffsets {
    newtask_clone_flags: 0,
    exit_group_dead: 0,
    cgroup_root: 0,
    cgroup_level: 0,
    cgroup_id: 0,
    cgroup_path: 0,
    task_slot_mask: 0,
    cgroup_slot_mask: 0,
    rss_mm_id: 0,
    rss_curr: 0,
    rss_member: 0,
    rss_size: 0,
    oom_victim_pid: 0,
    bio_nr_sector: 0,
    bio_rwbs: 0,
    syscall_ret: 0,
    task_sum_exec_runtime: 0,
    _pad: 0,
};

#[unsafe(no_mangle)]
static ROOT_PREFIX: RootPrefix = RootPrefix::EMPTY;

/// One field of [`FieldOffsets`]; volatile so the compiler cannot fold the
/// zero placeholder in.
macro_rules! offset {
    ($field:ident) => {
        unsafe { core::ptr::read_volatile(&raw const crate::config::FIELD_OFFSETS.$field) as usize }
    };
}
pub(crate) use offset;

pub(crate) fn root_prefix() -> &'static RootPrefix {
    &ROOT_PREFIX
}

pub(crate) fn root_prefix_len() -> usize {
    // SAFETY: a static; volatile for the same reason as `offset!`.
    unsafe { core::ptr::read_volatile(&raw const ROOT_PREFIX.len) as usize }
}
